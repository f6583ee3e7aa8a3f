"""The SLI aggregator: the judge's three parts put together for a reader of one run's log.

`Fold` reads the JSONL contract (docs/jsonl.md) event by event into a `RunState` in bounded
memory; `Rules` judge the five abort rules on that state (docs/sli.md); `figures` turns it into
the summary's figures. The same code judges a live run (the supervisor feeds it the lines
`LogTail` returns and calls `check` every soak minute) and an old log (`aggregate_file`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from orchestrator.core.errors import LogError
from orchestrator.judge import figures as fig
from orchestrator.judge.aborts import Abort, log_abort
from orchestrator.judge.fold import Fold
from orchestrator.judge.logread import CHUNK, LogTail
from orchestrator.judge.rules import Rules, rule_states
from orchestrator.judge.state import RunState, Settings

__all__ = ["Abort", "Aggregator", "LogTail", "aggregate_file", "log_abort"]


class Aggregator:
    """Feed it the events of one run, in log order; read `figures()`; ask `check()` for aborts.

    `settings` (from the header) and `state` (what the fold has counted) are plain records that
    readers such as the on-call view may read; only the fold writes the state."""

    def __init__(self, header: dict[str, Any]):
        self.settings = Settings.from_header(header)
        self.rules = Rules(self.settings)
        self.fold = Fold(self.settings, self.rules)
        self.state: RunState = self.fold.state

    @property
    def run_id(self) -> str:
        return self.settings.run_id

    def feed(self, event: dict[str, Any]) -> None:
        self.fold.feed_many((event,))

    def feed_many(self, events: Iterable[dict[str, Any]]) -> None:
        self.fold.feed_many(events)

    def check(self, now_t: float, db_last_seq: int | None = None,
              arrivals_due: float | None = None) -> list[Abort]:
        """Evaluate the rules at soak time `now_t` (seconds since the run start); return the
        aborts tripped since the last call (each rule trips once). `db_last_seq` is the
        database's newest seq: when the log is behind it, the log cannot speak for the queue.
        `arrivals_due` (live runs) is the soak time since which arrivals are due but not yet
        enqueued: work that waits although the log cannot show it (a locked database)."""
        s, rules = self.state, self.rules
        log_seq = s.last_seq if s.last_seq is not None else (self.settings.first_seq or 1) - 1
        behind = db_last_seq is not None and db_last_seq > log_seq
        rules.note_log(s, now_t)
        if not s.closing:
            if not behind:
                if now_t >= s.next_minute:
                    self.fold.cross(now_t)
                if now_t - s.last_transition_t >= self.settings.stall:
                    rules.stall(s, now_t, arrivals_due)
            else:
                rules.log_silence(s, now_t, db_last_seq, log_seq)
        return rules.take_fresh()

    @property
    def aborts(self) -> list[Abort]:
        """Every abort, one per rule: as this aggregator tripped it (the time the condition was
        met), else as the log records it (the time the `abort` event was written)."""
        seen = dict(self.rules.tripped)
        for abort in self.state.log_aborts:
            seen.setdefault(abort.rule, abort)
        return sorted(seen.values(), key=lambda a: (a.t, a.rule))

    def figures(self) -> dict[str, Any]:
        """Everything the summary needs, as plain JSON-able values (docs/sli.md, "Figures")."""
        return fig.build(self.settings, self.state, self.aborts, set(self.rules.tripped))

    def headline(self) -> dict[str, Any]:
        """`success`, `p95` and `faults` (injected) of `figures()`, cheaply (the progress view)."""
        return fig.headline(self.state)

    def rule_states(self) -> list[dict[str, Any]]:
        """Each abort rule: ok, armed or tripped, with a tripped rule's time, figures and evidence."""
        return rule_states(self.settings, self.state, self.aborts)

    def progress(self) -> dict[str, Any]:
        """What the supervisor's terminal view shows, cheaply: `headline()`, the SLO rows and the
        rule states (the latency sample is sorted once for both)."""
        lat = fig.latency_sample(self.state)
        head = fig.headline(self.state, lat)
        return {**head, "slo": fig.slo_table(self.settings, self.state, lat, head), "rules": self.rule_states()}

    def slo_table(self) -> list[dict[str, Any]]:
        """One row per SLO of the profile: name, target, measured, pass."""
        return fig.slo_table(self.settings, self.state)

    def verdict(self, aborted: bool = False, final: bool = False) -> str:
        """ABORTED, STOPPED, INCOMPLETE, FAIL or PASS (docs/sli.md, "Verdict"). `final`: the run
        has reached its end (its `run_finished` is about to be written)."""
        return fig.verdict(self.settings, self.state, self.aborts, aborted, final=final)


def aggregate_file(path: str | Path, max_bytes: int = CHUNK) -> Aggregator:
    """Read a whole log (header and every event) offline; errors name the line."""
    tail = LogTail(path)
    agg: Aggregator | None = None
    while True:
        events = tail.read(max_bytes)
        if not events:
            if tail.partial:
                raise tail.truncated_error()
            break
        first_line = tail.lines - len(events) + 1
        if agg is None:
            try:
                agg = Aggregator(events[0])
            except LogError as exc:
                raise LogError(f"{tail.path}: line 1: {exc}") from None
            events = events[1:]
            first_line += 1
        done_before = agg.state.events
        try:
            agg.feed_many(events)
        except LogError as exc:
            line = first_line + (agg.state.events - done_before) - 1
            raise LogError(f"{tail.path}: line {line}: {exc}") from None
    if agg is None:
        raise LogError(f"{tail.path}: empty log (no run_started line)")
    return agg
