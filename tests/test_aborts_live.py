"""Each abort rule fired by causing its condition for real in a running soak, and none on a
healthy run. Runs are short custom profiles at speed 720 (a soak minute is 83 ms of wall time)."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest

from orchestrator.core import profiles

pytestmark = pytest.mark.xdist_group("soak")
TESTS_DIR = Path(__file__).resolve().parent
SPEED = "720"


def quiet_profile(tmp_path: Path, name: str, **changes) -> Path:
    """Profile A's load for 4 soak hours with no faults, default abort thresholds."""
    base = profiles.BUILTIN["24h"]
    faults = changes.pop("faults", profiles.Faults())
    duration = changes.pop("duration", 4 * 3600.0)
    p = dataclasses.replace(base, name=name, duration=duration, faults=faults, **changes)
    path = tmp_path / f"{name}.toml"
    path.write_text(p.to_toml())
    return path


def start(children, orch_cmd, clean_env, home: Path, profile: Path, *extra: str, speed: str = SPEED) -> subprocess.Popen:
    env = clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    return children.start(orch_cmd("soak", "start", "--profile", str(profile), "--speed", speed, "--seed", "3",
                                   "--home", str(home), *extra),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out + err


def log_events(home: Path, name: str) -> list[dict]:
    return [orjson.loads(x) for x in (home / "logs" / "soak" / f"soak_{name}.jsonl").read_bytes().splitlines()[1:]]


def assert_aborted_by(home: Path, name: str, code: int, output: str, rule: int, rule_name: str) -> dict:
    assert code == 3, output
    events = log_events(home, name)
    aborts = [e for e in events if e["event"] == "abort"]
    assert aborts and aborts[0]["rule"] == rule, aborts
    assert events[-1]["event"] == "run_finished" and events[-1]["verdict"] == "ABORTED"
    incidents = list((home / "reports" / "soak").glob("incident_*.md"))
    assert len(incidents) == 1
    text = incidents[0].read_text()
    assert rule_name in text and "KST" in text
    summary = (home / "reports" / "soak" / "soak_summary.md").read_text()
    assert "ABORTED" in summary
    return aborts[0]


def db_rows(home: Path, sql: str, *args) -> list[tuple]:
    db = home / "db" / "queue.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []


def test_a_healthy_run_trips_no_rule(tmp_path, children, orch_cmd, clean_env):
    home = tmp_path / "home"
    # slower than the others (a soak minute is 167 ms): a loaded CI machine must not look like a stall
    profile = quiet_profile(tmp_path, "healthy", duration=2 * 3600.0)
    code, output = finish(start(children, orch_cmd, clean_env, home, profile, speed="360"))
    assert code in (0, 1), output  # finished; not aborted
    events = log_events(home, "healthy")
    assert not [e for e in events if e["event"] == "abort"]
    assert events[-1]["verdict"] in ("PASS", "FAIL")
    assert not list((home / "reports" / "soak").glob("incident_*.md"))


def test_rule_1_moving_success_below_95(tmp_path, children, orch_cmd, clean_env):
    home = tmp_path / "home"
    profile = quiet_profile(tmp_path, "lowsuccess", faults=profiles.Faults(persistent=0.3,
                                                                           transient_kinds=("timeout",)),
                            retry=profiles.Retry(backoff=(5.0,), max_attempts=2))
    code, output = finish(start(children, orch_cmd, clean_env, home, profile))
    abort = assert_aborted_by(home, "lowsuccess", code, output, 1, "moving success")
    assert abort["figures"]["success"] < 0.95 and abort["evidence"]


def test_rule_2_a_duplicate_execution_forced_past_the_guard(tmp_path, children, orch_cmd, clean_env, wait_for):
    home = tmp_path / "home"
    proc = start(children, orch_cmd, clean_env, home, quiet_profile(tmp_path, "dup"))
    done = wait_for(lambda: db_rows(home, "SELECT id, key FROM tasks WHERE state = 'DONE' LIMIT 1"), 60,
                    "a DONE task")
    task_id, key = done[0]
    # Test-only sabotage, bypassing the state machine: forget the effect and reopen the task, so
    # a worker runs it again and commits a second `completed` for the same key.
    with sqlite3.connect(home / "db" / "queue.db", timeout=10) as conn:
        conn.execute("DELETE FROM effects WHERE key = ?", (key,))
        conn.execute("UPDATE tasks SET state = 'PENDING', worker = NULL, lease_until = NULL, due_at = 0 "
                     "WHERE id = ?", (task_id,))
    code, output = finish(proc)
    abort = assert_aborted_by(home, "dup", code, output, 2, "duplicate execution")
    assert abort["evidence"] == [f"ORCH-{task_id}"]


def test_rule_3_no_transition_while_a_second_process_holds_the_write_lock(tmp_path, children, orch_cmd,
                                                                          clean_env, wait_for):
    home = tmp_path / "home"
    proc = start(children, orch_cmd, clean_env, home, quiet_profile(tmp_path, "stall", work_mean=20.0))
    wait_for(lambda: db_rows(home, "SELECT 1 FROM tasks WHERE state = 'DONE' LIMIT 1"), 60, "work flowing")
    # work is waiting: a task in progress whose completion the lock will hold up
    wait_for(lambda: db_rows(home, "SELECT 1 FROM tasks WHERE state = 'IN_PROGRESS' LIMIT 1"), 60, "a task in progress")
    # A real second process holds the write lock for 15 soak minutes (1.25 s of wall time).
    hog = children.start([os.sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('held', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('ROLLBACK')\n"), str(home / "db" / "queue.db"), str(900 / float(SPEED))],
        stdout=subprocess.PIPE, text=True)
    assert hog.stdout.readline().strip() == "held"
    code, output = finish(proc)
    assert hog.wait(timeout=30) == 0
    abort = assert_aborted_by(home, "stall", code, output, 3, "no state transition")
    assert abort["figures"]["stall"] == 600.0


def test_rule_4_a_guardrail_exceed_that_was_not_blocked(tmp_path, children, orch_cmd, clean_env):
    home = tmp_path / "home"
    profile = quiet_profile(tmp_path, "leak", faults=profiles.Faults(guardrail=0.05))
    code, output = finish(start(children, orch_cmd, clean_env, home, profile, "--handler", "leaky_handler:leaky"))
    abort = assert_aborted_by(home, "leak", code, output, 4, "guardrail")
    events = log_events(home, "leak")
    task = abort["evidence"][0]
    exceeded = [e for e in events if e["event"] == "guardrail_exceeded" and e["task"] == task]
    assert exceeded and exceeded[0]["blocked"] is False and exceeded[0]["spend"] > exceeded[0]["budget"]


def test_rule_5_the_log_shipper_stopped(tmp_path, children, orch_cmd, clean_env, wait_for):
    home = tmp_path / "home"
    proc = start(children, orch_cmd, clean_env, home, quiet_profile(tmp_path, "nolog"))
    pids = wait_for(lambda: next(iter((home / "run").glob("*/pids.json")), None), 60, "the pool's pid file")
    wait_for(lambda: "shipper" in pids.read_text(), 30, "the shipper")
    shipper = orjson.loads(pids.read_bytes())["shipper"]["pid"]
    wait_for(lambda: db_rows(home, "SELECT 1 FROM tasks WHERE state = 'DONE' LIMIT 1"), 60, "work flowing")
    os.kill(shipper, signal.SIGSTOP)  # the shipper is alive but ships nothing
    code, output = finish(proc)
    abort = assert_aborted_by(home, "nolog", code, output, 5, "log")
    assert abort["figures"]["silent_for"] >= 900.0
    # the wind-down shipped what the stopped shipper left: the log is whole and gap-free
    seqs = [e["seq"] for e in log_events(home, "nolog")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
