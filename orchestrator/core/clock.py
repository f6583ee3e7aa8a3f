"""The soak clock: soak time = start + elapsed wall time x speed.

Every duration in this package is in soak seconds. Times stored in the database are soak
times on one axis: at speed 1 the soak clock is the wall clock (Unix seconds); at speed S
it starts at the run's wall start and runs S times faster. Processes of one run rebuild the
same clock from the run's record, so they all agree.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Clock:
    """A clock that runs `speed` times faster than the wall clock from `origin`."""

    origin: float = 0.0  # wall time (Unix seconds) where soak time equals wall time
    speed: float = 1.0
    skips = False  # the skip clock (core/skipclock.py) jumps over idle time; this one never does

    def now(self) -> float:
        """Current soak time (seconds on the soak axis)."""
        wall = time.time()
        return self.origin + (wall - self.origin) * self.speed

    def to_wall(self, soak_seconds: float) -> float:
        """Wall seconds that `soak_seconds` of soak time take."""
        return soak_seconds / self.speed

    def to_soak(self, wall_seconds: float) -> float:
        """Soak seconds that pass in `wall_seconds` of wall time."""
        return wall_seconds * self.speed

    def sleep(self, soak_seconds: float) -> None:
        """Sleep for `soak_seconds` of soak time."""
        if soak_seconds > 0:
            time.sleep(soak_seconds / self.speed)

    def wall_of(self, soak_time: float) -> float:
        """The wall time (Unix seconds) at which the soak clock shows `soak_time`."""
        return self.origin + (soak_time - self.origin) / self.speed


    # What the skip clock needs of the run's processes, as no-ops here: the constant clock knows
    # nothing of who is busy, so its waits stay plain (and keep their wall floors at call sites).
    def participant(self) -> nullcontext:
        return nullcontext()

    def set(self, event: threading.Event) -> None:
        event.set()

    def kick(self, *_: Any) -> None:
        pass

    def released(self) -> None:
        pass

    def freeze(self) -> None:
        pass


WALL = Clock()


def run_clock(origin: float, speed: float, skip_file: str | None):
    """The clock of a run from its record: the skip clock when the run has a clock file."""
    if skip_file:
        from orchestrator.core.skipclock import shared

        try:
            return shared(Path(skip_file))
        except OSError:  # the run's folder is gone: its record still reads, at the busy rate
            pass
    return Clock(origin, speed)


class HandClock:
    """Soak time that moves only when told to (speed 1: soak seconds are wall seconds); `sleep`
    advances it at once. For tests that must step a queue through time exactly."""

    speed = 1.0
    skips = False
    participant, set, kick, released, freeze = Clock.participant, Clock.set, Clock.kick, Clock.released, Clock.freeze

    def __init__(self, start: float = 1_000_000.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("soak time never runs backwards")
        self.t += seconds

    def to_wall(self, soak_seconds: float) -> float:
        return soak_seconds

    def to_soak(self, wall_seconds: float) -> float:
        return wall_seconds

    def wall_of(self, soak_time: float) -> float:
        return soak_time

    def sleep(self, soak_seconds: float) -> None:
        self.advance(max(soak_seconds, 0.0))


_SECOND: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last whole second `iso_utc` wrote out


def iso_utc(wall_seconds: float) -> str:
    """UTC ISO 8601 with milliseconds, as the JSONL contract writes `wall`: what
    `datetime.fromtimestamp(wall_seconds, timezone.utc).isoformat(timespec="milliseconds")` gives
    (microseconds rounded half to even, then cut to milliseconds), with `Z`. The date and time of
    day are worked out once per second (the shipper writes a few hundred lines a second)."""
    global _SECOND
    fraction, whole = math.modf(wall_seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        whole += 1.0
    elif micros < 0:
        micros += 1_000_000
        whole -= 1.0
    second = int(whole)
    cached = _SECOND
    if cached[0] != second:
        text = datetime.fromtimestamp(second, tz=timezone.utc).isoformat(timespec="seconds")[:-6]
        cached = _SECOND = (second, text)
    return f"{cached[1]}.{micros // 1000:03d}Z"


def since_start(t: float, started_soak: float) -> float:
    """A soak time as the log writes its `t`: seconds since the run start, to the millisecond."""
    return round(t - started_soak, 3)


@dataclass(frozen=True)
class RunEnd:
    """Where a run ended: its `run_finished` event's soak time (`t`, seconds since the run start)
    and wall time (`wall`, UTC ISO 8601 with ms), exactly as its log line carries them. The
    terminal view, `orch soak status` and the summary all take a run's end from this record and
    print it with `reporttext.ended` (docs/soak.md, "Where a run ends")."""

    t: float
    wall: str | None

    @classmethod
    def of_row(cls, t: float, wall: float, started_soak: float) -> RunEnd:
        """From the event's row in the database, converted as the shipper converts every row."""
        return cls(since_start(t, started_soak), iso_utc(wall))

    @classmethod
    def of_event(cls, event: dict[str, Any] | None) -> RunEnd | None:
        """From the `run_finished` line of the log (None: the log has none yet)."""
        if event is None:
            return None
        return cls(float(event.get("t") or 0.0), event.get("wall"))
