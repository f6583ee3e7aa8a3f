"""Failure drills (issue 6): `orch drill all` passes, and each drill, with the property it guards
broken on purpose, reports FAIL with the right evidence (so no drill passes by checking nothing).

Breaks are real: a handler that misbehaves (tests/drill_breakers.py, loaded through the test-only
ORCH_TEST_UNSAFE_DRILL_HANDLER), workers whose queue config has the fence off (tests/unfenced_worker.py,
started by the harness in this process), a rogue worker that ignores the cap, a refusal that writes."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from orchestrator.cli.orch import orch
from orchestrator.drills import base, catalog, invariants
from orchestrator.drills.operator import CASES, Case, fail_closed
from orchestrator.drills.runner import run_drills
from orchestrator.drills.workers import concurrency_cap

pytestmark = pytest.mark.xdist_group("soak")
TESTS_DIR = Path(__file__).resolve().parent
ALL = ["worker-crash", "worker-stall", "cancel-midrun", "concurrency-cap", "poison-task", "timeout-all",
       "partial-success", "error-chaos", "idempotency-under-fire", "duplicate-side-effect", "guardrail-replan",
       "db-lock-storm",
       "fail-closed", "operator-runbook", "supervisor-restart", "log-pipeline-drop", "queue-pressure"]


def env(clean_env, **extra: str) -> dict[str, str]:
    return clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
                     **extra)


def report_of(home: Path) -> str:
    reports = sorted((home / "reports" / "drills").glob("*/exercise_report.md"))
    assert len(reports) == 1, reports
    return reports[0].read_text()


def failing(report: str) -> dict[str, str]:
    """The report's violations: scenario -> the line (observed and evidence)."""
    out = {}
    for line in report.split("### Violations", 1)[1].splitlines():
        m = re.match(r"- \*\*(.+?)\*\*: (.*)", line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


def run_drill(orch_cmd, clean_env, tmp_path: Path, name: str, **hooks: str) -> tuple[int, str, dict[str, str]]:
    home = tmp_path / "home"
    proc = subprocess.run(orch_cmd("drill", "run", name, "--home", str(home)), capture_output=True, text=True,
                          timeout=120, env=env(clean_env, **hooks))
    assert "Traceback" not in proc.stderr, proc.stderr
    report = report_of(home)
    return proc.returncode, report, failing(report)


# --- the whole set ---------------------------------------------------------------------------
@pytest.mark.timeout(420)
def test_drill_all_passes_within_five_minutes(tmp_path, orch_cmd, clean_env):
    home = tmp_path / "home"
    proc = subprocess.run(orch_cmd("drill", "all", "--home", str(home)), capture_output=True, text=True,
                          timeout=360, env=clean_env())
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    report = report_of(home)
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n" + "\n".join(failing(report).values())
    assert [line.split(":")[0] for line in proc.stdout.splitlines()[:-1]] == ALL
    assert "**Verdict: PASS**" in report and "**FAIL**" not in report
    for name in ALL:
        assert f"## {name}" in report
    for title in ("no duplicate execution", "nothing lost", "events gap-free", "every operator action recorded",
                  "no raw upstream error text used as a class"):
        assert report.count(f"| {title} |") == len(ALL)
    seconds = float(re.search(r"total wall time ([0-9.]+) s", report).group(1))
    assert seconds <= 300


def test_drill_list_names_every_drill_and_what_it_causes():
    out = CliRunner().invoke(orch, ["drill", "list"])
    assert out.exit_code == 0
    names = [line for line in out.output.splitlines() if not line.startswith(" ")]
    assert names == ALL
    assert out.output.count("causes:") == out.output.count("must hold:") == len(ALL)


def test_unknown_drill_is_a_usage_error(tmp_path):
    out = CliRunner().invoke(orch, ["drill", "run", "no-such", "--home", str(tmp_path / "h")])
    assert out.exit_code == 2 and out.output.startswith("Error: no drill 'no-such'")
    assert not (tmp_path / "h").exists()


def test_a_drill_runs_in_a_fresh_home_under_the_report_folder(tmp_path, orch_cmd, clean_env):
    proc = subprocess.run(orch_cmd("drill", "run", "guardrail-replan"), capture_output=True, text=True, timeout=120,
                          env=clean_env(ORCH_HOME=str(tmp_path / "h")), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = next((tmp_path / "h" / "reports" / "drills").iterdir())
    assert (run / "exercise_report.md").exists()
    assert (run / "guardrail-replan" / "home" / "db" / "queue.db").exists()
    assert (run / "guardrail-replan" / "events.jsonl").exists()
    assert not (tmp_path / "h" / "db" / "queue.db").exists()  # the home's own queue untouched


# --- each drill, broken ----------------------------------------------------------------------
BROKEN_HANDLER = [
    ("worker-crash", "drill_breakers:slow_every_attempt", "task recovered", "ORCH-1"),
    ("cancel-midrun", "drill_breakers:ignores_cancel", "worker stops", "late completion"),
    ("poison-task", "drill_breakers:fail_everything", "others keep flowing", "{'FAILED': 20}"),
    ("timeout-all", "orchestrator.handlers:synthetic", "every task FAILED as timeout", "0 of 12"),
    ("partial-success", "drill_breakers:unknown_retry_succeeds", "63 of 100 succeed", "FAILED"),
    ("error-chaos", "drill_breakers:misclassify", "each error maps to its class", "-> unknown"),
    ("idempotency-under-fire", "drill_breakers:journal_twice", "one effect", "2 journal lines"),
    ("guardrail-replan", "leaky_handler:leaky", "blocked at the guardrail", "blocked: [False]"),
    ("db-lock-storm", "drill_breakers:swallow_lock", "work backs off as db_lock", "0 db_lock retries"),
    ("queue-pressure", "drill_breakers:fail_everything", "then drains", "FAILED"),
]


@pytest.mark.parametrize("name, handler, scenario, evidence", BROKEN_HANDLER, ids=[b[0] for b in BROKEN_HANDLER])
def test_a_drill_with_a_misbehaving_handler_reports_fail(tmp_path, orch_cmd, clean_env, name, handler, scenario,
                                                         evidence):
    code, report, bad = run_drill(orch_cmd, clean_env, tmp_path, name, ORCH_TEST_UNSAFE_DRILL_HANDLER=handler)
    assert code == 1, report
    assert scenario in bad, bad
    assert evidence in bad[scenario], bad[scenario]
    assert "ORCH_TEST_UNSAFE_DRILL_HANDLER" in bad["no test-only unsafe hook active"]


@pytest.fixture
def unfenced_workers(monkeypatch):
    """The drill's workers run with the epoch fence off (tests/unfenced_worker.py): injected here
    through the harness, since no switch of the product turns the fence off."""
    from orchestrator.drills.harness import Harness

    real = Harness.spawn

    def spawn(self, argv, name, env=None):
        if argv[1:4] == ["-m", "orchestrator", "worker"]:
            argv = [argv[0], str(TESTS_DIR / "unfenced_worker.py"), *argv[3:]]
        return real(self, argv, name, env)

    monkeypatch.setattr(Harness, "spawn", spawn)


def test_worker_stall_without_fencing_reports_the_late_completion(tmp_path, unfenced_workers):
    results, path = run_drills([catalog.get("worker-stall")], str(tmp_path / "home"), 14)
    assert not results[0].passed
    row = failing(path.read_text())["late completion rejected"]
    assert "by w1 (epoch 1)" in row and "stale_rejected" not in row.split("—")[0]
    assert re.search(r"evidence: tasks ORCH-1; seqs \d+", row)


def test_cancel_midrun_without_fencing_reports_the_effect_of_a_cancelled_task(tmp_path, unfenced_workers):
    results, path = run_drills([catalog.get("cancel-midrun")], str(tmp_path / "home"), 14)
    assert not results[0].passed
    bad = failing(path.read_text())
    assert bad["ends CANCELLED, no effect"].startswith("DONE, an effect")
    assert re.search(r"seqs \d+", bad["ends CANCELLED, no effect"])


def test_the_old_fence_switch_reaches_no_process(tmp_path, orch_cmd, clean_env, monkeypatch):
    """ORCH_TEST_UNSAFE_NO_FENCING=1 once turned the fence off in `orch worker` and `ops`; it is
    gone: a worker started with it set still fences, and the drill catches nothing wrong."""
    from orchestrator.core.model import QueueConfig

    monkeypatch.setenv("ORCH_TEST_UNSAFE_NO_FENCING", "1")
    assert QueueConfig().fencing is True  # what `ops` and `orch worker` build
    code, report, bad = run_drill(orch_cmd, clean_env, tmp_path, "worker-stall", ORCH_TEST_UNSAFE_NO_FENCING="1")
    assert "late completion rejected" not in bad
    home = tmp_path / "home"
    started = [orjson.loads(line) for line in next((home / "reports" / "drills").glob("*/worker-stall/events.jsonl"))
               .read_bytes().splitlines()[1:]]
    started = [e for e in started if e["event"] == "worker_started"]
    assert started and all(e["fencing"] is True for e in started)
    assert bad == {"no test-only unsafe hook active": bad.get("no test-only unsafe hook active")}


def test_concurrency_cap_reports_a_rogue_worker_that_ignores_the_cap(tmp_path, monkeypatch):
    drill = catalog.get("concurrency-cap")
    monkeypatch.setitem(base.REGISTRY, "concurrency-cap",
                        dataclasses.replace(drill, run=lambda h: concurrency_cap(h, rogue=True)))
    results, path = run_drills([base.REGISTRY["concurrency-cap"]], str(tmp_path / "home"), 14)
    assert not results[0].passed
    row = failing(path.read_text())["cap never exceeded"]
    assert re.match(r"peak [4-9] in flight; [1-9]\d* events over the cap — evidence: seqs \d+", row), row


def test_fail_closed_reports_a_refusal_that_writes(tmp_path, monkeypatch):
    writes = Case("a refusal that is not one", ("enqueue", "--key", "fresh-key"), 4, "refused")
    drill = catalog.get("fail-closed")
    monkeypatch.setitem(base.REGISTRY, "fail-closed",
                        dataclasses.replace(drill, run=lambda h: fail_closed(h, CASES[:2] + (writes,))))
    results, path = run_drills([base.REGISTRY["fail-closed"]], str(tmp_path / "home"), 14)
    assert not results[0].passed
    bad = failing(path.read_text())
    assert bad["a refusal that is not one"].startswith("exit 0: ") and "database CHANGED" in bad["a refusal that is not one"]
    assert "payload not JSON" not in bad


def test_log_pipeline_drop_reports_a_rule_that_never_fires(tmp_path, monkeypatch):
    from orchestrator.core import profiles
    from orchestrator.drills import soakdrills

    real = soakdrills._profile
    monkeypatch.setattr(soakdrills, "_profile", lambda h, duration, **kw: real(
        h, 3600.0, abort=profiles.Abort(log_gap=10 * 86400.0)))
    results, path = run_drills([catalog.get("log-pipeline-drop")], str(tmp_path / "home"), 14)
    assert not results[0].passed
    bad = failing(path.read_text())
    assert "rule 5 fires" in bad and "aborts []" in bad["rule 5 fires"]
    assert "incident record names it" in bad


def test_duplicate_side_effect_reports_a_downstream_that_dedupes_as_no_duplicate(tmp_path, monkeypatch):
    from orchestrator.drills import safety

    real = safety._stalled_side_effect
    # the drill's downstream dedupes after all: nothing lands twice, rule 2 stays quiet, the drill says so
    monkeypatch.setattr(safety, "_stalled_side_effect", lambda h, handler: real(h, "ledgered"))
    results, path = run_drills([catalog.get("duplicate-side-effect")], str(tmp_path / "home"), 14)
    assert not results[0].passed
    bad = failing(path.read_text())
    assert bad["applied twice downstream"].startswith("1 entries, epochs [2]; 1 side_effect_applied")
    assert bad["rule 2 fires"].startswith("0 rule-2 aborts")


def test_log_pipeline_drop_measures_that_the_log_stops_growing(tmp_path, monkeypatch):
    from orchestrator.drills import soakdrills

    real_signal, real = soakdrills._signal_pid, soakdrills._profile
    # the shipper is never stopped (SIGSTOP not sent): the log goes on growing and the drill says so
    monkeypatch.setattr(soakdrills, "_signal_pid",
                        lambda pid, sig: None if sig == signal.SIGSTOP else real_signal(pid, sig))
    monkeypatch.setattr(soakdrills, "_stopped", lambda pid: True)
    monkeypatch.setattr(soakdrills, "_profile", lambda h, duration, **kw: real(h, 3600.0))
    results, path = run_drills([catalog.get("log-pipeline-drop")], str(tmp_path / "home"), 14)
    assert not results[0].passed
    row = failing(path.read_text())["stop the shipper"]
    assert re.search(r"the log grew [1-9]\d* bytes since", row), row


# --- the invariant checks on hand-made logs ----------------------------------------------------
def ev(seq, event, task="ORCH-1", key="k1", state=None, prev=None, **extra):
    return {"seq": seq, "event": event, "task": task, "key": key, "state": state, "prev": prev, **extra}


def test_invariants_name_their_evidence():
    events = [ev(1, "enqueued", state="PENDING"), ev(2, "leased", state="IN_PROGRESS", prev="PENDING"),
              ev(3, "completed", state="DONE", prev="IN_PROGRESS"), ev(5, "completed", state="DONE", prev="DONE"),
              ev(6, "failed", task="ORCH-2", key="k2", state="FAILED", prev="IN_PROGRESS",
                 error="HTTP 503: Service Unavailable", detail="x" * 300),
              ev(7, "cancelled", task="ORCH-2", key="k2", state="CANCELLED", prev="FAILED", actor=None)]
    dup = invariants.no_duplicate_execution(events, {"k1": 1})
    assert not dup.passed and dup.evidence.tasks == ("ORCH-1",) and dup.evidence.seqs == (3, 5)
    gaps = invariants.gap_free(events, 1, [(e["seq"], e["event"]) for e in events])
    assert not gaps.passed and gaps.evidence.seqs == (4,)
    lost = invariants.nothing_lost(events, {"ORCH-1": "DONE", "ORCH-3": "PENDING"})
    assert not lost.passed and "ORCH-3" in lost.evidence.tasks
    raw = invariants.classes_closed(events, {"ORCH-2": "HTTP 503: Service Unavailable"})
    assert not raw.passed and raw.evidence.seqs == (6,) and raw.evidence.tasks == ("ORCH-2",)
    ops = invariants.operator_actions_recorded(events, [{"action": "retry", "task": "ORCH-2", "actor": "me",
                                                         "notes": None}])
    assert not ops.passed and ops.evidence.tasks == ("ORCH-2",) and ops.evidence.seqs == (7,)
    assert not invariants.no_unsafe_hooks(["ORCH_TEST_UNSAFE_NO_FENCING"]).passed


def test_supervisor_restart_reports_arrivals_lost_by_a_recovery_that_does_not_resume(tmp_path, monkeypatch):
    from orchestrator.drills import soakdrills

    monkeypatch.setattr(soakdrills, "RESUME", ("soak", "stop"))  # closes the run: later arrivals never come
    results, path = run_drills([catalog.get("supervisor-restart")], str(tmp_path / "home"), 14)
    assert not results[0].passed
    bad = failing(path.read_text())
    row = bad["no arrival lost or doubled"]
    assert re.search(r"\d+ enqueued, \d+ distinct keys, [1-9]\d* lost — evidence: lost arrivals \[\d+", row), row


def test_operator_runbook_reports_a_refused_step(tmp_path, orch_cmd, clean_env):
    # the tasks end before the on-call acts: `ops.py cancel` is refused (exit 4) and the drill says so
    code, report, bad = run_drill(orch_cmd, clean_env, tmp_path, "operator-runbook",
                                  ORCH_TEST_UNSAFE_DRILL_HANDLER="drill_breakers:instant")
    assert code == 1
    assert bad["cancel"].startswith("exit 4: Error: ORCH-1 is DONE") and "0 `cancelled`" in bad["cancel"]
