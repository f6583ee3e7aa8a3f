"""The CLIs end to end: exact messages, exit codes (0 ok, 1 runtime, 2 usage, 3 unknown id,
4 refused), no tracebacks, zero writes on every refusal; and the runbook lines run verbatim as
real processes from the repository root."""

from __future__ import annotations

import getpass
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from orchestrator.cli.ops import ops
from orchestrator.cli.orch import orch
from orchestrator.queue.writes import Queue

CLIS = {"ops": ops, "orch": orch}


def invoke(argv: list[str], env: dict | None = None):
    """Run `ops ...` or `orch ...` in-process; never a traceback."""
    result = CliRunner().invoke(CLIS[argv[0]], argv[1:], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def at(home: Path, argv: list[str]) -> list[str]:
    """`argv` on `home`, as actor alice where the command takes an actor (status does not)."""
    actor = [] if argv[:2] == ["ops", "status"] else ["--actor", "alice"]
    return [*argv, "--home", str(home), *actor]


@pytest.fixture
def seeded(home, db_path):
    """A home with ORCH-1 (PENDING) and ORCH-2 (DONE)."""
    with Queue(db_path) as queue:
        queue.enqueue("first", {"work": 1})
        queue.enqueue("second", {"work": 2})
        queue.operate("done", 2, actor="setup", notes="closed")
    return home


# --- happy paths ----------------------------------------------------------------------------

def test_enqueue_then_duplicate_then_conflict(home, db_path, dump):
    h = ["--home", str(home), "--actor", "alice"]
    r = invoke(["orch", "enqueue", "--key", "k", "--payload", '{"work": 1}', *h])
    assert (r.exit_code, r.stdout, r.stderr) == (0, "ORCH-1 enqueued\n", "")
    r = invoke(["orch", "enqueue", "--key", "k", "--payload", '{ "work" : 1 }', *h])
    assert (r.exit_code, r.stdout) == (0, "ORCH-1 already enqueued (duplicate_enqueue recorded)\n")
    r = invoke(["orch", "enqueue", "--key", "k", "--payload", '{"work": 1}', "--json", *h])
    assert r.exit_code == 0 and orjson.loads(r.stdout) == {"id": "ORCH-1", "created": False}
    before = dump(db_path)
    r = invoke(["orch", "enqueue", "--key", "k", "--payload", '{"work": 2}', *h])
    assert (r.exit_code, r.stdout, r.stderr) == (4, "", "Error: key 'k' is already ORCH-1 with another payload; refused\n")
    assert dump(db_path) == before
    with Queue(db_path) as queue:
        assert [(e["event"], e["actor"]) for e in queue.history(1)] == [
            ("enqueued", "alice"), ("duplicate_enqueue", "alice"), ("duplicate_enqueue", "alice")]


def test_operator_sequence_with_exact_messages(seeded, db_path):
    h = ["--home", str(seeded), "--actor", "kim"]
    steps = [
        (["ops", "cancel", "--id", "ORCH-1"], "ORCH-1: cancel by kim -> CANCELLED\n"),
        (["ops", "replan", "--id", "ORCH-1", "--notes", "split workload", "--budget", "3.5"],
         "ORCH-1: plan recorded by kim (still CANCELLED); run `ops retry --id ORCH-1` to run it\n"),
        (["ops", "retry", "--id", "ORCH-1", "--notes", "plan ready"], "ORCH-1: retry by kim -> PENDING\n"),
        (["orch", "fail", "--id", "ORCH-1", "--notes", "gave up"], "ORCH-1: fail by kim -> FAILED\n"),
    ]
    for argv, out in steps:
        r = invoke([*argv, *h])
        assert (r.exit_code, r.stdout, r.stderr) == (0, out, ""), argv
    with Queue(db_path) as queue:
        task = queue.get(1)
        assert (task.state.value, task.plan, task.budget, task.error, task.detail) == (
            "FAILED", "split workload", 3.5, "operator", "gave up")
        ops_events = [(e["event"], e["actor"], e["notes"]) for e in queue.history(1) if e["actor"] == "kim"]
    assert ops_events == [("cancelled", "kim", None), ("replanned", "kim", "split workload"),
                          ("retried", "kim", "plan ready"), ("closed_failed", "kim", "gave up")]
    r = invoke(["ops", "retry", "--id", "ORCH-1", "--json", *h])
    doc = orjson.loads(r.stdout)
    assert r.exit_code == 0 and (doc["id"], doc["state"], doc["attempt"], doc["plan"]) == (
        "ORCH-1", "PENDING", 0, "split workload")


def test_actor_comes_from_the_environment(seeded):
    r = invoke(["ops", "cancel", "--id", "ORCH-1", "--home", str(seeded)], env={"ORCH_ACTOR": "oncall-sim"})
    assert (r.exit_code, r.stdout) == (0, "ORCH-1: cancel by oncall-sim -> CANCELLED\n")


def test_home_option_wins_over_the_environment(seeded, tmp_path):
    other = tmp_path / "other-home"
    r = invoke(["ops", "status", "--json", "--home", str(seeded)], env={"ORCH_HOME": str(other)})
    assert r.exit_code == 0 and orjson.loads(r.stdout)["total"] == 2
    r = invoke(["ops", "status"], env={"ORCH_HOME": str(other)})
    assert (r.exit_code, r.stdout) == (0, f"No queue yet at {other / 'db' / 'queue.db'}.\n")
    assert not other.exists()  # status never writes, not even a directory


def test_status_reads_and_never_writes(seeded, db_path, dump):
    before = dump(db_path)
    r = invoke(["ops", "status", "--home", str(seeded)])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[:3] == ["Tasks by state:",
                         "  PENDING  IN_PROGRESS  DONE  FAILED  BLOCKED  CANCELLED  total",
                         "  1        0            1     0       0        0          2"]
    assert lines[3].startswith("effects: 0   oldest PENDING age: ") and lines[3].endswith("last seq: 3")
    assert "Recent operator actions:" in lines and any(" closed_done " in line and "setup" in line for line in lines)
    doc = orjson.loads(invoke(["ops", "status", "--json", "--home", str(seeded)]).stdout)
    assert doc["counts"]["PENDING"] == 1 and doc["counts"]["DONE"] == 1 and doc["last_seq"] == 3
    one = orjson.loads(invoke(["ops", "status", "--id", "ORCH-2", "--json", "--home", str(seeded)]).stdout)
    assert one["task"]["state"] == "DONE" and [e["event"] for e in one["events"]] == ["enqueued", "closed_done"]
    r = invoke(["ops", "status", "--id", "ORCH-2", "--home", str(seeded)])
    assert r.exit_code == 0 and r.stdout.startswith("ORCH-2  key=second  state=DONE  attempt=0/4  epoch=0")
    assert dump(db_path) == before


def sidecars(db_path: Path) -> set[str]:
    """Files beside the database other than SQLite's own -wal/-shm."""
    return {p.name for p in db_path.parent.iterdir() if not p.name.endswith(("-wal", "-shm"))}


def test_reads_create_no_file(seeded, db_path):
    for extra in db_path.parent.iterdir():
        if extra != db_path and not extra.name.endswith(("-wal", "-shm")):
            extra.unlink()  # e.g. the writers' lock file left by the seeding writes
    assert sidecars(db_path) == {"queue.db"}
    for argv in (["ops", "status"], ["ops", "status", "--json"], ["ops", "status", "--id", "ORCH-1"],
                 ["ops", "retry", "--state", "FAILED", "--dry-run"]):
        assert invoke(at(seeded, argv)).exit_code == 0, argv
    assert sidecars(db_path) == {"queue.db"}


def test_an_unusable_writers_lock_file_is_a_one_line_error(seeded, db_path, dump):
    writers = db_path.with_name(db_path.name + "-writers")  # the kernel lock writers queue on
    if writers.exists():
        writers.unlink()
    writers.mkdir()
    before = dump(db_path)
    assert invoke(at(seeded, ["ops", "status"])).exit_code == 0  # reading needs no lock
    r = invoke(at(seeded, ["ops", "cancel", "--id", "ORCH-1"]))
    assert (r.exit_code, r.stdout, r.stderr) == (
        1, "", f"Error: cannot open the writers' lock file {writers}: Is a directory\n")
    assert dump(db_path) == before


def test_bulk_retry_previews_then_retries_exactly_those(home, db_path, dump):
    with Queue(db_path) as queue:
        queue.enqueue_many([("t1", {}), ("t2", {}), ("t3", {}), ("t4", {})], max_attempts=1)
        leases = {lease.key: lease for lease in queue.lease("w1", limit=4)}
        queue.fail(leases["t1"].task, leases["t1"].epoch, "w1", "timeout")
        queue.fail(leases["t2"].task, leases["t2"].epoch, "w1", "param_error")
        queue.fail(leases["t3"].task, leases["t3"].epoch, "w1", "timeout")
        queue.operate("cancel", leases["t4"].task, actor="setup")
    h = ["--home", str(home), "--actor", "alice"]
    before = dump(db_path)
    r = invoke(["ops", "retry", "--state", "FAILED", "--error-class", "timeout", "--dry-run", *h])
    assert (r.exit_code, r.stdout) == (0, "Would retry: 2 task(s): ORCH-1, ORCH-3\n")
    r = invoke(["ops", "retry", "--state", "FAILED", "--error-class", "timeout", "--dry-run", "--json", *h])
    assert r.exit_code == 0 and orjson.loads(r.stdout) == {"would_retry": 2, "first": ["ORCH-1", "ORCH-3"]}
    assert dump(db_path) == before

    r = invoke(["ops", "retry", "--state", "FAILED", "--error-class", "timeout", "--notes", "upstream back", *h])
    assert (r.exit_code, r.stdout) == (0, "Retried by alice: 2 task(s): ORCH-1, ORCH-3\n")
    with Queue(db_path) as queue:
        assert [queue.get(i).state.value for i in (1, 2, 3, 4)] == ["PENDING", "FAILED", "PENDING", "CANCELLED"]
        retried = [e for e in map(dict, queue.events_after(before["events"][-1][0]))]
        assert [(e["event"], e["task"], e["actor"], e["notes"]) for e in retried] == [
            ("retried", 1, "alice", "upstream back"), ("retried", 3, "alice", "upstream back")]
    r = invoke(["ops", "retry", "--state", "CANCELLED", *h])
    assert (r.exit_code, r.stdout) == (0, "Retried by alice: 1 task(s): ORCH-4\n")


# --- refusals: exact message, exit code, zero writes -----------------------------------------

USAGE = [
    (["ops", "cancel", "--id", "12"], "Error: malformed task id '12' (expected ORCH-<n>, e.g. ORCH-12)\n"),
    (["ops", "status", "--id", "ORCH-01"], "Error: malformed task id 'ORCH-01' (expected ORCH-<n>, e.g. ORCH-12)\n"),
    (["orch", "done", "--id", "orch-1", "--notes", "x"],
     "Error: malformed task id 'orch-1' (expected ORCH-<n>, e.g. ORCH-12)\n"),
    (["ops", "replan", "--id", "ORCH-1"], "Error: Missing option '--notes'; see 'ops replan --help'\n"),
    (["orch", "done", "--id", "ORCH-1"], "Error: Missing option '--notes'; see 'orch done --help'\n"),
    (["orch", "fail", "--id", "ORCH-1"], "Error: Missing option '--notes'; see 'orch fail --help'\n"),
    (["ops", "replan", "--id", "ORCH-1", "--notes", "   "], "Error: --notes must not be empty\n"),
    (["orch", "fail", "--id", "ORCH-1", "--notes", ""], "Error: --notes must not be empty\n"),
    (["ops", "replan", "--id", "ORCH-1", "--notes", "x", "--budget", "0"], "Error: --budget must be greater than 0\n"),
    (["orch", "enqueue", "--key", "new", "--budget", "-1"], "Error: --budget must be greater than 0\n"),
    (["orch", "enqueue", "--key", " "], "Error: --key must not be empty\n"),
    (["orch", "enqueue", "--key", "new", "--payload", '{"budget": "lots"}'],
     "Error: budget of 'new' must be a number greater than 0, got 'lots'\n"),
    (["ops", "retry"], "Error: give --id ORCH-N, or --state FAILED|CANCELLED for a bulk retry\n"),
    (["ops", "retry", "--id", "ORCH-1", "--dry-run"],
     "Error: --id cannot be combined with --state, --error-class or --dry-run\n"),
]


@pytest.mark.parametrize("argv,message", USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_usage_errors_exit_2_without_a_write(argv, message, seeded, db_path, dump):
    before = dump(db_path)
    r = invoke(at(seeded, argv))
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == message  # one line, nothing else
    assert dump(db_path) == before


@pytest.mark.parametrize("argv", [
    ["orch", "enqueue", "--key", "new", "--payload", "{bad"],
    ["orch", "enqueue", "--key", "new", "--payload", '{"a": 1,}'],
    ["ops", "retry", "--state", "DONE"],
    ["ops", "retry", "--state", "FAILED", "--error-class", "oops"],
    ["ops", "replan", "--id", "ORCH-1", "--notes", "x", "--budget", "lots"],
])
def test_bad_values_exit_2_without_a_write(argv, seeded, db_path, dump):
    before = dump(db_path)
    r = invoke(at(seeded, argv))
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\nError: ") + r.stderr.startswith("Error: ") == 1
    if "--payload" in argv:
        assert r.stderr.startswith("Error: payload is not valid JSON: ") and r.stderr.count("\n") == 1
    assert dump(db_path) == before


@pytest.mark.parametrize("argv", [
    ["ops", "cancel", "--id", "ORCH-99"],
    ["ops", "replan", "--id", "ORCH-99", "--notes", "x"],
    ["ops", "retry", "--id", "ORCH-99"],
    ["ops", "status", "--id", "ORCH-99"],
    ["orch", "done", "--id", "ORCH-99", "--notes", "x"],
    ["orch", "fail", "--id", "ORCH-99", "--notes", "x"],
])
def test_unknown_ids_exit_3_without_a_write(argv, seeded, db_path, dump):
    before = dump(db_path)
    r = invoke(at(seeded, argv))
    assert (r.exit_code, r.stdout, r.stderr) == (3, "", "Error: no task ORCH-99\n")
    assert dump(db_path) == before


REFUSED = [
    (["ops", "cancel", "--id", "ORCH-2"], "Error: ORCH-2 is DONE; cancel is allowed from PENDING, IN_PROGRESS, BLOCKED\n"),
    (["ops", "retry", "--id", "ORCH-1"], "Error: ORCH-1 is PENDING; retry is allowed from FAILED, CANCELLED\n"),
    (["ops", "replan", "--id", "ORCH-1", "--notes", "x"],
     "Error: ORCH-1 is PENDING; replan is allowed from FAILED, BLOCKED, CANCELLED\n"),
    (["orch", "done", "--id", "ORCH-2", "--notes", "x"],
     "Error: ORCH-2 is DONE; done is allowed from PENDING, IN_PROGRESS, BLOCKED\n"),
    (["orch", "fail", "--id", "ORCH-2", "--notes", "x"],
     "Error: ORCH-2 is DONE; fail is allowed from PENDING, IN_PROGRESS, BLOCKED\n"),
    (["orch", "enqueue", "--key", "first", "--payload", '{"work": 9}'],
     "Error: key 'first' is already ORCH-1 with another payload; refused\n"),
]


@pytest.mark.parametrize("argv,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refusals_exit_4_without_a_write(argv, message, seeded, db_path, dump):
    before = dump(db_path)
    r = invoke(at(seeded, argv))
    assert (r.exit_code, r.stdout, r.stderr) == (4, "", message)
    assert dump(db_path) == before


RUNTIME_ARGVS = [
    ["ops", "status"],
    ["ops", "status", "--id", "ORCH-1"],
    ["ops", "cancel", "--id", "ORCH-1"],
    ["ops", "retry", "--state", "FAILED", "--dry-run"],
    ["orch", "done", "--id", "ORCH-1", "--notes", "x"],
    ["orch", "enqueue", "--key", "k"],
]


@pytest.mark.parametrize("argv", RUNTIME_ARGVS, ids=" ".join)
def test_not_a_sqlite_file_exits_1_untouched(argv, home, db_path):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"these are somebody's notes, not a database\n" * 50)
    before = sorted(p.name for p in db_path.parent.iterdir())
    r = invoke(at(home, argv))
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", f"Error: not a SQLite database: {db_path}\n")
    assert db_path.read_bytes() == b"these are somebody's notes, not a database\n" * 50
    assert sorted(p.name for p in db_path.parent.iterdir()) == before


@pytest.mark.parametrize("argv", RUNTIME_ARGVS, ids=" ".join)
def test_foreign_schema_exits_1_untouched(argv, home, db_path):
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.commit()
    conn.close()
    before = db_path.read_bytes()
    r = invoke(at(home, argv))
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", f"Error: foreign schema in {db_path} (tables: invoices)\n")
    assert db_path.read_bytes() == before


def test_home_that_cannot_be_written_exits_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    home = blocker / "home"
    r = invoke(["orch", "enqueue", "--key", "k", "--home", str(home)])
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", f"Error: home is not writable: {home} (Not a directory)\n")
    r = invoke(["ops", "cancel", "--id", "ORCH-1", "--home", str(home), "--actor", "a"])
    assert (r.exit_code, r.stderr) == (1, f"Error: no queue database at {home / 'db' / 'queue.db'}\n")
    assert blocker.read_text() == "not a directory"


# --- the runbook, verbatim, as real processes -------------------------------------------------

def runbook(repo: Path, home: Path, line: str, clean_env) -> subprocess.CompletedProcess:
    """Run a runbook line (`python3 automation/orchestrator/...`) from the repo root, with this
    interpreter standing in for python3."""
    import shlex

    argv = shlex.split(line)
    assert argv[0] == "python3"
    return subprocess.run([sys.executable, *argv[1:]], cwd=repo, env=clean_env(ORCH_HOME=str(home)),
                          capture_output=True, text=True, timeout=120)


def test_runbook_lines_run_verbatim(repo, tmp_path, clean_env):
    home = tmp_path / "oncall-home"
    actor = getpass.getuser()
    for key in ("incident-1", "incident-2"):
        done = runbook(repo, home, f"python3 automation/orchestrator/orch.py enqueue --key {key}", clean_env)
        assert done.returncode == 0, done.stderr

    lines = [
        ("python3 automation/orchestrator/ops.py status", None),
        ("python3 automation/orchestrator/ops.py cancel --id ORCH-1", f"ORCH-1: cancel by {actor} -> CANCELLED\n"),
        ('python3 automation/orchestrator/ops.py replan --id ORCH-1 --notes "DB lock hotspot, split workload"',
         f"ORCH-1: plan recorded by {actor} (still CANCELLED); run `ops retry --id ORCH-1` to run it\n"),
        ("python3 automation/orchestrator/ops.py retry --id ORCH-1", f"ORCH-1: retry by {actor} -> PENDING\n"),
        ('python3 automation/orchestrator/orch.py done --id ORCH-1 --notes "incident mitigated"',
         f"ORCH-1: done by {actor} -> DONE\n"),
        ('python3 automation/orchestrator/orch.py fail --id ORCH-2 --notes "persistent failure; action required"',
         f"ORCH-2: fail by {actor} -> FAILED\n"),
    ]
    for line, expected in lines:
        done = runbook(repo, home, line, clean_env)
        assert (done.returncode, done.stderr) == (0, ""), line
        if expected is None:
            assert done.stdout.startswith("Tasks by state:\n")
            assert "  2        0            0     0       0        0          2\n" in done.stdout
        else:
            assert done.stdout == expected, line

    with Queue(home / "db" / "queue.db") as queue:
        operator = [(e["event"], e["prev"], e["state"], e["actor"], e["notes"])
                    for e in queue.history(1) if e["actor"] == actor and e["event"] != "enqueued"]
        assert operator == [
            ("cancelled", "PENDING", "CANCELLED", actor, None),
            ("replanned", "CANCELLED", "CANCELLED", actor, "DB lock hotspot, split workload"),
            ("retried", "CANCELLED", "PENDING", actor, None),
            ("closed_done", "PENDING", "DONE", actor, "incident mitigated"),
        ]
        assert queue.effect_of("incident-1") is None  # a manual close writes no effect
        second = queue.get(2)
        assert (second.state.value, second.error, second.detail) == (
            "FAILED", "operator", "persistent failure; action required")
        assert [e["event"] for e in queue.history(2)][-1] == "closed_failed"
        assert queue.get(1).plan == "DB lock hotspot, split workload"

    # a refused runbook step: its own exit code, one line, no traceback
    again = runbook(repo, home, "python3 automation/orchestrator/ops.py cancel --id ORCH-1", clean_env)
    assert (again.returncode, again.stdout, again.stderr) == (
        4, "", "Error: ORCH-1 is DONE; cancel is allowed from PENDING, IN_PROGRESS, BLOCKED\n")
    status = runbook(repo, home, "python3 automation/orchestrator/ops.py status", clean_env)
    assert status.returncode == 0 and "Recent operator actions:" in status.stdout
    assert "incident mitigated" in status.stdout and "closed_failed" in status.stdout


def test_status_of_one_task_shows_each_events_detail(seeded, db_path):
    with Queue(db_path) as queue:
        lease = queue.lease("w1")[0]
        queue.fail(lease.task, lease.epoch, "w1", "server_error", "HTTP 503: upstream said no capacity in eu-1")
    r = invoke(at(seeded, ["ops", "status", "--id", "ORCH-1"]))
    assert r.exit_code == 0
    assert "detail" in r.stdout.splitlines()[2]
    row = next(line for line in r.stdout.splitlines() if "retry_scheduled" in line)
    assert "HTTP 503: upstream said no capacity in eu-1" in row


def test_status_ages_are_never_negative(tmp_path):
    """A row written after the status read its clock (or a clock a little behind the writer's)
    is age 0, not minus something."""
    from orchestrator.core.clock import Clock

    db = tmp_path / "q.db"
    with Queue(db, Clock(origin=0.0, speed=1.0)) as writer:
        writer.enqueue("late", {})
        writer.lease("w1")
        writer.enqueue("later", {})
    behind = Clock(origin=-3600.0 * 24 * 365, speed=0.5)  # soak time a long way behind the writer's
    with Queue(db, behind) as reader:
        status = reader.status()
    assert status["oldest_pending_age"] == 0.0
    assert [w["heartbeat_age"] for w in status["in_flight"]] == [0.0]
