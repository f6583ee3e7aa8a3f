"""Running drills: one drill in its home, a set of drills in one report folder.

Where things go (`orch drill run NAME`, `orch drill all`):
  <home>/reports/drills/<run>/exercise_report.md   the report (scenario and invariant tables)
  <home>/reports/drills/<run>/<drill>/              the drill's data: events.jsonl, process output,
                                                     and, without --home, the drill's own fresh
                                                     home (`home/`: its queue.db, logs, reports)
With `--home DIR` the drills run in DIR itself (its queue.db) and report under DIR.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.core.home import Home
from orchestrator.core.model import describe
from orchestrator.drills.base import Check, Drill, Evidence, Recovery
from orchestrator.drills.harness import Harness
from orchestrator.drills.invariants import check_all
from orchestrator.drills.report import write_report

DRILL_WALL_LIMIT = 30.0  # wall seconds a drill may take
ALL_WALL_LIMIT = 300.0


@dataclass
class DrillResult:
    drill: Drill
    seed: int
    home: Path
    log: Path | None
    scenario: list[Check] = field(default_factory=list)
    invariants: list[Check] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    wall: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.scenario) and all(c.passed for c in self.scenario + self.invariants)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def run_one(drill: Drill, report_home: Home, folder: Path, seed: int, run_id: str,
            home: Home | None) -> DrillResult:
    """Run `drill` (in `home`, else a fresh home under `folder`) and check it."""
    started = time.monotonic()
    work_home = home or Home(folder / "home")
    h = Harness(drill, work_home, folder, seed, run_id, own_run=not drill.uses_soak)
    result = DrillResult(drill, seed, work_home.root, h.log_path)
    try:
        try:
            drill.run(h)
        except Exception as exc:  # a drill that breaks is a FAIL with the reason, never a traceback
            h.check("the drill ran to its end", "the scenario", "no error", describe(exc), False)
        finally:
            h.finish()
        result.wall = time.monotonic() - started
        result.scenario = list(h.checks)
        result.scenario.append(Check(
            "time limit", "the whole drill", f"at most {DRILL_WALL_LIMIT:g} s of wall time",
            f"{result.wall:.1f} s", result.wall <= DRILL_WALL_LIMIT, Evidence()))
        try:
            result.invariants = check_all(h)
        except Exception as exc:  # a report is written whatever happens; this is its FAIL row
            result.invariants = [Check("invariants checked", "after the drill", "the checks run", describe(exc),
                                       False, Evidence())]
        result.recoveries = list(h.recoveries)
        result.log = h.log_path
    finally:
        h.close()
    return result


def run_drills(drills: list[Drill], home_opt: str | None, seed: int) -> tuple[list[DrillResult], Path]:
    """Run the drills one after another; write one exercise_report.md. Returns the results and
    the report's path."""
    report_home = Home.resolve(home_opt).ensure()
    run_id = new_run_id()
    root = report_home.drill_reports / run_id
    root.mkdir(parents=True, exist_ok=True)
    shared = report_home if home_opt else None
    started = time.monotonic()
    results = [run_one(d, report_home, root / d.name, seed, run_id, shared) for d in drills]
    total = time.monotonic() - started
    path = write_report(root, run_id, seed, results, total, ALL_WALL_LIMIT if len(drills) > 1 else None)
    return results, path
