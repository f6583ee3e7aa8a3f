"""Follows the latest run's JSONL log (LogTail) into an Aggregator, and keeps what the live view
shows: one point per soak minute crossed (capped: past `MAX_POINTS` every other point is
dropped, so memory stays flat however long the run) and a snapshot of the current figures.

Each point carries the log `seq` of the last event fed before it: the SSE event id. Points are
in `seq` order, so "every point after id N" is a bisect.
"""

from __future__ import annotations

import bisect
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.core.errors import LogError, OrchestratorError
from orchestrator.core.home import Home
from orchestrator.judge.logread import CHUNK, LogTail
from orchestrator.judge.sli import Aggregator
from orchestrator.web.budget import error_budget

MAX_POINTS = 5000  # 72 h is 4320 soak minutes
STATES = ("PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED", "CANCELLED")


class Monitor:
    """One per server. `poll_once` is the whole step; `start` runs it on a thread."""

    def __init__(self, home: Home, *, log: Path | None = None, poll: float = 0.2, max_points: int = MAX_POINTS,
                 snapshot_every: float = 0.5, on_snapshot=None):
        self.home = home
        self.on_snapshot = on_snapshot  # called with each new snapshot (None when the run is replaced)
        self.fixed_log = log
        self.poll = poll
        self.max_points = max_points
        self.snapshot_every = snapshot_every
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.generation = 0
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._reset(None)

    def _reset(self, path: Path | None) -> None:
        self.log_path = path
        self.tail = LogTail(path) if path else None
        self.agg: Aggregator | None = None
        self.points: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        self.minute = 0
        self.snapshot: dict[str, Any] | None = None
        self._snap_at = 0.0
        self._dirty = False
        self._alerted: dict[str, Any] | None = None
        self.generation += 1

    # --- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except OrchestratorError as exc:
                with self.cond:
                    self.error = str(exc)
            self.stopping.wait(self.poll)

    def current_log(self) -> Path | None:
        if self.fixed_log is not None:
            return self.fixed_log
        folder = self.home.logs
        if not folder.is_dir():
            return None
        found = {p.resolve() for p in folder.glob("soak_*.jsonl") if p.exists()}
        return max(found, key=lambda p: (p.stat().st_mtime, p.name)) if found else None

    def poll_once(self) -> bool:
        """Read what the log gained; returns True when something changed."""
        path = self.current_log()
        if path != self.log_path:
            with self.cond:
                self._reset(path)
                self.cond.notify_all()
            if self.on_snapshot is not None:
                self.on_snapshot(None)
        if self.tail is None:
            return False
        try:
            events = self.tail.read(CHUNK)
        except LogError as exc:
            with self.cond:
                self.error = str(exc)
            return False
        changed = bool(events)
        rebuilt = False
        with self.cond:
            if events and self.agg is None:
                self.agg = Aggregator(events[0])
                events = events[1:]
            if events:
                self._feed(events)
            now = time.monotonic()
            if (self._dirty or changed) and now - self._snap_at >= self.snapshot_every and self.agg is not None:
                self.snapshot = self._snapshot()
                self._snap_at = now
                self._dirty = False
                rebuilt = True
            elif changed:
                self._dirty = True
            if changed:
                self.error = None
            if changed or rebuilt:
                self.cond.notify_all()
            snap = self.snapshot
        if self.on_snapshot is not None and snap is not None and snap is not self._alerted:
            self._alerted = snap  # a snapshot built by a request thread is observed here too
            self.on_snapshot(snap)
        return changed

    def _feed(self, events: list[dict[str, Any]]) -> None:
        agg = self.agg
        batch: list[dict[str, Any]] = []
        for ev in events:
            m = int(max(float(ev.get("t") or 0.0), 0.0) // 60)
            if m > self.minute:
                agg.feed_many(batch)
                batch = []
                self._point(m)
                self.minute = m
            batch.append(ev)
        agg.feed_many(batch)
        if agg.state.finished is not None:
            self._point(self.minute + 1, final=True)

    def _point(self, minute: int, final: bool = False) -> None:
        agg = self.agg
        seq = agg.state.last_seq
        if seq is None or (self.seqs and seq <= self.seqs[-1]):
            return
        w = agg.settings.window_minutes
        lo = max(0, minute - w)
        d = sum(agg.state.done_m.values[lo:minute])
        f = sum(agg.state.failed_m.values[lo:minute])
        point = {"seq": seq, "t": agg.state.last_t if final else minute * 60.0, "wall": agg.state.last_wall,
                 "counts": [agg.state.counts[s] for s in STATES], "enqueued": agg.state.enqueued,
                 "moving": round(d / (d + f), 5) if d + f >= agg.settings.min_volume else None}
        self.points.append(point)
        self.seqs.append(seq)
        if len(self.points) > self.max_points:  # thin the older half: memory stays flat
            keep = self.points[: len(self.points) // 2 : 2] + self.points[len(self.points) // 2:]
            self.points = keep
            self.seqs = [p["seq"] for p in keep]

    # --- reads (callers hold no lock) ---------------------------------------------------------
    def points_after(self, seq: int | None) -> list[dict[str, Any]]:
        with self.cond:
            return self.points_after_locked(seq)

    def points_after_locked(self, seq: int | None) -> list[dict[str, Any]]:
        start = 0 if seq is None else bisect.bisect_right(self.seqs, seq)
        return self.points[start:]

    def current(self) -> dict[str, Any] | None:
        with self.cond:
            return self._current_locked()

    def view(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The current figures and the points of the same moment (what a page draws)."""
        with self.cond:
            return self._current_locked(), list(self.points)

    def _current_locked(self) -> dict[str, Any] | None:
        if self.agg is not None and (self.snapshot is None or self._dirty):
            self.snapshot = self._snapshot()
            self._snap_at = time.monotonic()
            self._dirty = False
        return self.snapshot

    def _snapshot(self) -> dict[str, Any]:
        agg = self.agg
        f = agg.figures()
        live = not agg.state.closing and agg.state.finished is None
        last = next((p["moving"] for p in reversed(self.points)), None) if self.points else None
        rules = agg.rule_states()
        run = f["run"]
        slo = {row["name"]: row for row in f["slo"]}
        return {
            "run_id": run["run_id"], "profile": run["profile_name"], "speed": run["speed"], "clock": run["clock"],
            "seed": run["seed"],
            "log": str(self.log_path), "live": live, "complete": run["complete"],
            "verdict": f["verdict"], "soak_t": agg.state.last_t, "duration": run["duration"], "wall": run["end_wall"],
            "started_at": run["started_at"], "last_seq": agg.state.last_seq, "events": agg.state.events,
            "states": {s: agg.state.counts[s] for s in STATES}, "enqueued": agg.state.enqueued,
            "sli": {"success": f["sli1"]["success"], "p95": f["sli2"]["p95"], "p50": f["sli2"]["p50"],
                    "transient_recovery": f["sli3"]["rate"], "actual_duplicates": f["sli4"]["actual"],
                    "dispatches": f["sli4"]["dispatches"], "lease_recovery": f["lease_recovery"]["rate"]},
            "slo": list(slo.values()), "rules": rules,
            "moving": {"last": last, "threshold": agg.settings.moving_success, "min_volume": agg.settings.min_volume,
                       "window": agg.settings.window_minutes * 60.0},
            "faults": [{"kind": r["kind"], "planned": r["planned"], "injected": r["injected"],
                        "observed": r["observed"], "observed_what": r["observed_what"]} for r in f["faults"]],
            "lease": {"expirations": f["lease_recovery"]["expirations"],
                      "stale": sum(f["sli4"]["stale_by_call"].values()),
                      "stale_by_call": f["sli4"]["stale_by_call"]},
            "budget": error_budget(agg),
        }
