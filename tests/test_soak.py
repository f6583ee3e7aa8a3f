"""The soak engine: arrival maths, profiles, a whole accelerated 24h run, kill -9 and resume."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from orchestrator.cli.orch import orch
from orchestrator.core import profiles
from orchestrator.core.clock import WALL
from orchestrator.core.errors import ProfileError
from orchestrator.faults import schedule
from orchestrator.judge.reporttext import secs
from orchestrator.judge.sli import aggregate_file
from orchestrator.queue.runs import RunStore
from orchestrator.queue.writes import Queue
from orchestrator.soak import arrivals

pytestmark = pytest.mark.xdist_group("soak")

ALL_FAULT_KINDS = {"timeout", "network", "db_lock", "duplicate_enqueue", "guardrail", "worker_crash",
                   "worker_stall"}


# --- arrival maths -----------------------------------------------------------------------
def test_same_profile_and_seed_give_the_same_schedule_byte_for_byte():
    p = profiles.BUILTIN["72h"]
    a, b = arrivals.plan(p, 7), arrivals.plan(p, 7)
    assert a.digest() == b.digest()
    assert a.times.tobytes() == b.times.tobytes()
    assert arrivals.manifest(p, a, 7) == arrivals.manifest(p, b, 7)
    assert arrivals.plan(p, 8).digest() != a.digest()


def test_arrival_rates_and_burst_windows_within_statistical_bounds():
    p = profiles.BUILTIN["24h"]
    windows = arrivals.burst_windows(p)
    assert windows[0] == (600.0, 780.0) and len(windows) == 96  # every 15 min, 3 min long
    burst_time = sum(b - a for a, b in windows)
    base_time = p.duration - burst_time
    base_counts, burst_counts = [], []
    for seed in range(40):
        plan = arrivals.plan(p, seed)
        t = plan.times
        assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < p.duration
        in_burst = np.zeros(len(t), dtype=bool)
        for a, b in windows:
            in_burst |= (t >= a) & (t < b)
        burst_counts.append(in_burst.sum())
        base_counts.append((~in_burst).sum())
    # Poisson: mean = rate x time; 40 seeds -> the mean's standard error is sqrt(mean/40)
    for counts, rate, span in ((base_counts, 2.0, base_time), (burst_counts, 8.0, burst_time)):
        expected = rate / 60 * span
        assert abs(np.mean(counts) - expected) < 4 * np.sqrt(expected / 40), (np.mean(counts), expected)
        assert np.var(counts) == pytest.approx(expected, rel=0.6)  # dispersion of a Poisson count


def test_planned_fault_shares_follow_the_profile():
    p = profiles.BUILTIN["72h"]
    plan = arrivals.plan(p, 3)
    n = len(plan)
    for code, share in ((arrivals.TRANSIENT, 0.10), (arrivals.DB_LOCK, 0.02), (arrivals.GUARDRAIL, 0.01)):
        k = np.count_nonzero(plan.fault == code)
        assert abs(k - share * n) < 5 * np.sqrt(n * share * (1 - share))
    assert abs(len(plan.dup_of) - 0.01 * n) < 5 * np.sqrt(n * 0.01)
    assert np.all(plan.dup_times >= plan.times[plan.dup_of])  # a duplicate follows its original
    payload = arrivals.payload(p, plan, int(np.flatnonzero(plan.fault == arrivals.GUARDRAIL)[0]))
    assert payload["spend"] > payload["budget"]


# --- profiles ----------------------------------------------------------------------------
def test_profile_show_prints_toml_that_gives_the_same_profile(tmp_path):
    for name in profiles.BUILTIN:
        out = CliRunner().invoke(orch, ["soak", "profile", "show", name])
        assert out.exit_code == 0, out.output
        path = tmp_path / f"{name}.toml"
        path.write_text(out.output)
        assert profiles.load(str(path)) == profiles.BUILTIN[name]


def _profile_text(**changes) -> str:
    data = profiles.BUILTIN["24h"].to_dict()
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    import tomli_w

    return tomli_w.dumps(data)


@pytest.mark.parametrize("changes, named", [
    ({"faults__trasient": 0.1}, "faults.trasient"),
    ({"duration": "a day"}, "duration"),
    ({"workers": 0}, "workers"),
    ({"faults__transient": 1.5}, "faults.transient"),
    ({"retry__backoff": [60, -1]}, "retry.backoff"),
    ({"arrivals__rate": -2}, "arrivals.rate"),
    ({"slo__success": 0}, "slo.success"),
])
def test_bad_profiles_are_refused_naming_the_key_before_anything_starts(tmp_path, changes, named):
    path = tmp_path / "bad.toml"
    path.write_text(_profile_text(**changes))
    with pytest.raises(ProfileError, match=named.replace(".", r"\.").replace("[", r"\[")):
        profiles.load(str(path))
    home = tmp_path / "home"
    out = CliRunner().invoke(orch, ["soak", "start", "--profile", str(path), "--speed", "1000",
                                    "--home", str(home)])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("Error: ") and named in out.output and "Traceback" not in out.output
    assert not home.exists()  # nothing started, nothing written


@pytest.mark.parametrize("args, message", [
    (["--profile", "96h"], "no profile '96h'"),
    (["--profile", "24h", "--speed", "0"], "--speed"),
    (["--profile", "24h", "--workers", "0"], "--workers"),
    (["--profile", "24h", "--handler", "nosuchmodule:fn"], "cannot import handler module"),
    (["--profile", "24h", "--clock", "skip", "--speed", "60"], "with --clock skip give --busy-rate"),
    (["--profile", "24h", "--busy-rate", "20"], "--busy-rate needs --clock skip"),
    (["--profile", "24h", "--clock", "skip", "--busy-rate", "0.5"], "--busy-rate"),
    (["--profile", "24h", "--clock", "sundial"], "--clock"),
])
def test_bad_start_options_are_refused_with_exit_2_and_no_write(tmp_path, args, message):
    home = tmp_path / "home"
    out = CliRunner().invoke(orch, ["soak", "start", *args, "--home", str(home)])
    assert out.exit_code == 2, out.output
    assert message in out.output
    assert not (home / "db" / "queue.db").exists()


def test_not_toml_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("name = [unclosed")
    with pytest.raises(ProfileError, match="not valid TOML"):
        profiles.load(str(path))


# --- whole runs --------------------------------------------------------------------------
def acceptance_profile(tmp_path: Path, *, duration: float = 86400.0) -> Path:
    """Profile A's load with every fault kind of both profiles on, abort thresholds loose (this
    test checks the invariants; the abort rules have tests of their own)."""
    base = profiles.BUILTIN["24h"]
    p = dataclasses.replace(
        base, name="accept", duration=duration,
        faults=dataclasses.replace(profiles.BUILTIN["72h"].faults, transient=0.05, worker_crash_every=7200.0,
                                   worker_stall_every=10800.0),
        abort=profiles.Abort(window=1800.0, moving_success=0.5, min_volume=20, stall=7200.0, log_gap=14400.0),
        oncall=profiles.Oncall(replan_after=600.0, budget_factor=2.0),
    )
    path = tmp_path / "accept.toml"
    path.write_text(p.to_toml())
    return path


def soak_running(home: Path) -> bool:
    """Whether `orch soak status` says the home's run is running (false before the run exists)."""
    status = CliRunner().invoke(orch, ["soak", "status", "--home", str(home), "--json"])
    doc = orjson.loads(status.output) if status.exit_code == 0 else None  # null before the run exists
    return isinstance(doc, dict) and doc.get("status") == "running"


def read_log(home: Path, profile: str) -> tuple[dict, list[dict]]:
    lines = (home / "logs" / "soak" / f"soak_{profile}.jsonl").read_bytes().splitlines()
    return orjson.loads(lines[0]), [orjson.loads(x) for x in lines[1:]]


def check_invariants(home: Path, header: dict, events: list[dict], db_file: Path | str | None = None,
                     joined: frozenset[str] = frozenset()) -> None:
    """The run's log against its database, read through the storage interface (any backend).
    `joined`: workers that joined from another host; each leaves when it sees the run is over,
    and its `worker_exited` may follow the log's end (`run_finished`) in the database."""
    with Queue(db_file or home / "db" / "queue.db", WALL, create=False) as queue:
        states = queue.store.counts_by_state()
        n_effects = queue.store.count_effects()
        rows = queue.events_after(header["first_seq"] - 1, 10_000_000)
    table = [(r["seq"], r["event"]) for r in rows[:len(events)]]
    after = [(r["event"], r["worker"], orjson.loads(r["data"] or "{}").get("reason")) for r in rows[len(events):]]
    assert all(event == "worker_exited" and worker in joined and reason == "run_over"
               for event, worker, reason in after), after
    planned = header["manifest"]["arrivals"]
    # every arrival enqueued once
    enqueued = [e for e in events if e["event"] == "enqueued"]
    keys = [e["key"] for e in enqueued]
    assert len(keys) == len(set(keys)) == planned
    assert sorted(e["arrival"] for e in enqueued) == list(range(planned))
    # every task terminal (BLOCKED ones were replanned by the scripted on-call)
    assert set(states) <= {"DONE", "FAILED"}, states
    assert sum(states.values()) == planned
    # no key with two `completed`; one effect per DONE task that completed
    completed = [e["key"] for e in events if e["event"] == "completed"]
    assert len(completed) == len(set(completed))
    assert n_effects == len(completed)
    # the JSONL is gap-free and equal to the event table
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(header["first_seq"], header["first_seq"] + len(seqs)))
    assert [(e["seq"], e["event"]) for e in events] == table
    assert events[-1]["event"] == "run_finished"
    # every arrival's `enqueued` carries its planned time, from the seeded plan
    plan = arrivals.plan(profiles.from_dict(header["profile"]), header["seed"])
    assert all(e["planned_t"] == round(float(plan.times[e["arrival"]]), 3) for e in enqueued)
    # SLI-2 recomputed from the JSONL alone: planned arrival -> last transition into DONE or FAILED
    start = {e["task"]: e["planned_t"] if e["planned_t"] is not None else e["t"] for e in enqueued}
    end = {e["task"]: e["t"] for e in events
           if e.get("state") in ("DONE", "FAILED") and e["state"] != e["prev"]}
    p95 = float(np.percentile([end[task] - start[task] for task in end], 95))
    figures = aggregate_file(home / "logs" / "soak" / "soak_accept.jsonl").figures()
    assert figures["sli2"]["p95"] == pytest.approx(p95, abs=1e-9)
    summary = (home / "reports" / "soak" / "soak_summary.md").read_text()
    assert f"**p95 {secs(p95)}**" in summary


def check_faults_follow_the_schedule(header: dict, events: list[dict], *, all_worker_faults: bool = False) -> None:
    """Every injected fault is one of the run's schedule, at or after its soak time; worker
    faults happen in the schedule's order, none twice (`all_worker_faults`: and none skipped)."""
    profile = profiles.from_dict(header["profile"])
    sched = schedule.build(profile, arrivals.plan(profile, header["seed"]))
    assert header["manifest"]["faults"] == sched.summary()
    faults = [e for e in events if e["event"] == "fault_injected"]
    for kind in schedule.WORKER_KINDS:
        planned = sched.times(kind)
        injected = [e["t"] for e in faults if e["kind"] == kind]
        assert 0 < len(injected) <= len(planned), (kind, injected, planned)
        assert all(t >= round(float(when), 3) for t, when in zip(injected, planned)), (kind, injected, planned)
        if all_worker_faults:
            assert len(injected) == len(planned), (kind, injected, planned)
    arrival_of = {e["task"]: e["arrival"] for e in events if e["event"] == "enqueued"}
    task_faults = {e.arrival: e for e in sched if e.kind in schedule.FAULT_NAMES.values()}
    dups = Counter(e.arrival for e in sched if e.kind == schedule.DUPLICATE)
    concurrent = {e.arrival for e in sched if e.concurrent}
    for e in faults:
        if e["kind"] in schedule.WORKER_KINDS:
            continue
        arrival = arrival_of[e["task"]]
        if e["kind"] == schedule.DUPLICATE:  # the supervisor's record of each planned duplicate, once
            dups[arrival] -= 1
            assert dups[arrival] >= 0, arrival
            assert ("agent" in e) == (arrival in concurrent)
            continue
        entry = task_faults[arrival]  # a task's fault: the one planned into its arrival, at an attempt
        assert e["kind"] == (entry.error if entry.kind in ("transient", "persistent") else entry.kind), (e, entry)
        assert e["t"] >= round(entry.t, 3)
        assert entry.attempts is None or e["attempt"] in entry.attempts or e["kind"] == "db_lock", (e, entry)


CLOCKS = {"constant": ("--speed", "2880"), "skip": ("--clock", "skip")}


def check_acceptance_log(home: Path, db_file: str | None = None) -> tuple[dict, list[dict]]:
    """The acceptance run's log (on either backend): the invariants, every fault as the schedule
    planned it, every fault kind observed, and the events each fault must leave."""
    header, events = read_log(home, "accept")
    check_invariants(home, header, events, db_file=db_file)
    check_faults_follow_the_schedule(header, events)
    kinds = {e["kind"] for e in events if e["event"] == "fault_injected"}
    assert ALL_FAULT_KINDS <= kinds, ALL_FAULT_KINDS - kinds
    names = {e["event"] for e in events}
    assert {"lease_expired", "stale_rejected", "duplicate_enqueue", "blocked", "replanned",
            "worker_restarted", "checkpoint", "retry_scheduled"} <= names
    # the observed errors of the planned faults
    assert {"timeout", "network", "db_lock"} <= {e["error"] for e in events if e["event"] == "retry_scheduled"}
    return header, events


@pytest.mark.parametrize("clock", CLOCKS)
def test_a_whole_24h_profile_at_high_speed(tmp_path, orch_cmd, clean_env, clock):
    home = tmp_path / "home"
    proc = subprocess.run(orch_cmd("soak", "start", "--profile", str(acceptance_profile(tmp_path)),
                                   *CLOCKS[clock], "--seed", "5", "--home", str(home)),
                          capture_output=True, text=True, timeout=240, env=clean_env())
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # finished (an SLO may miss on a loaded box)
    assert "Traceback" not in proc.stderr
    header, events = check_acceptance_log(home)
    assert (home / "reports" / "soak" / "soak_summary.md").exists()
    assert header["clock"] == clock
    if clock == "skip":  # stalled workers' leases expired in soak time and their late calls were fenced
        stalls = [e for e in events if e["event"] == "fault_injected" and e["kind"] == "worker_stall"]
        assert stalls and any(e["event"] == "stale_rejected" for e in events)


@pytest.mark.pg
def test_a_24h_rehearsal_on_postgresql(tmp_path, orch_cmd, clean_env, pg_database):
    """The acceptance run on the skip clock with `--db postgresql://…`: the supervisor, its workers,
    the shipper and the chaos agent (whose db_lock fault is a session holding the tasks table in
    EXCLUSIVE mode) all on the server; the log passes the same checks as SQLite's."""
    home, url = tmp_path / "home", pg_database()
    proc = subprocess.run(orch_cmd("soak", "start", "--profile", str(acceptance_profile(tmp_path)),
                                   "--clock", "skip", "--seed", "5", "--home", str(home), "--db", url),
                          capture_output=True, text=True, timeout=280, env=clean_env())
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # finished (an SLO may miss on a loaded box)
    assert "Traceback" not in proc.stderr
    assert not (home / "db").exists()  # nothing on this machine's disk but the logs and reports
    header, _ = check_acceptance_log(home, db_file=url)
    assert header["clock"] == "skip"
    with Queue(url, WALL, create=False) as queue:
        assert queue.store.integrity_check() == ["ok"]


def test_a_run_on_a_db_url_keeps_every_process_on_that_database(tmp_path, orch_cmd, clean_env):
    """`--db`: the supervisor, its workers, the shipper and the chaos agent all use the named file;
    the home's own db/queue.db is never made."""
    home, db = tmp_path / "home", tmp_path / "elsewhere" / "queue.db"
    proc = subprocess.run(orch_cmd("soak", "start", "--profile", str(acceptance_profile(tmp_path, duration=3 * 3600.0)),
                                   "--clock", "skip", "--seed", "6", "--home", str(home), "--db", f"sqlite:///{db}"),
                          capture_output=True, text=True, timeout=240, env=clean_env())
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # finished (an SLO may miss on a loaded box)
    assert db.exists() and not (home / "db" / "queue.db").exists()
    header, events = read_log(home, "accept")
    check_invariants(home, header, events, db_file=db)
    assert {"worker_started", "leased", "completed", "fault_injected"} <= {e["event"] for e in events}


def test_a_worker_that_joins_a_running_soak_takes_its_lease_ttl(tmp_path, orch_cmd, clean_env, children,
                                                                wait_for):
    """An extra `orch worker` (from another host, on a server database) works under the run's lease
    TTL, floored at the run's speed, not its own default: a shorter one would expire under it."""
    home = tmp_path / "home"
    children.start(orch_cmd("soak", "start", "--profile", str(acceptance_profile(tmp_path)), "--speed", "1440",
                            "--seed", "3", "--home", str(home)),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())

    try:
        wait_for(lambda: soak_running(home), timeout=60, what="the run to start")
        extra = subprocess.run(orch_cmd("worker", "--home", str(home), "--name", "extra", "--max-tasks", "1",
                                        "--idle-exit", "3600"), capture_output=True, text=True, timeout=60,
                               env=clean_env())
        assert extra.returncode == 0, extra.stderr
        first = extra.stderr.splitlines()[0]
        assert first.endswith("lease TTL 72 soak s"), first  # 50 ms of wall time at 1440x, above the profile's 30 s
    finally:  # stopped as an operator would: a killed supervisor would leave its pool behind
        assert CliRunner().invoke(orch, ["soak", "stop", "--home", str(home)]).exit_code == 0


def test_a_worker_from_another_host_is_refused_by_a_skip_clock_run(tmp_path):
    """A skip-clock run's time is a file on its supervisor's machine: a worker that cannot map it
    (another host) would run on a wrong clock, so it is refused with one line."""
    home = tmp_path / "home"
    with Queue(home / "db" / "queue.db", WALL) as queue:
        store = RunStore(queue)
        store.create("r1", profiles.BUILTIN["24h"].to_dict(), 1, 20.0, 1.0e9, home / "logs" / "r1.jsonl", None,
                     clock_file=tmp_path / "elsewhere" / "clock.bin")  # not on this machine
        store.go("r1", 1.0e9)
        before = queue.store.dump()
    result = CliRunner().invoke(orch, ["worker", "--home", str(home), "--name", "far", "--max-tasks", "1"])
    assert result.exit_code == 4, result.output
    assert result.output.startswith("Error: soak run r1 rehearses on the skip clock") and "Traceback" not in result.output
    with Queue(home / "db" / "queue.db", WALL) as queue:
        assert queue.store.dump() == before  # nothing written


@pytest.mark.parametrize("clock", ["constant", "skip"])
def test_supervisor_kill_9_then_resume_loses_and_doubles_no_arrival(tmp_path, orch_cmd, clean_env, children,
                                                                    wait_for, clock):
    home = tmp_path / "home"
    profile = acceptance_profile(tmp_path, duration=6 * 3600.0)
    mode = ("--speed", "720") if clock == "constant" else ("--clock", "skip", "--busy-rate", "5")
    sup = children.start(orch_cmd("soak", "start", "--profile", str(profile), *mode, "--seed", "9",
                                  "--home", str(home)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    db_path = home / "db" / "queue.db"

    def enqueued() -> int:
        if not db_path.exists():
            return 0
        try:
            with sqlite3.connect(db_path) as db:
                return db.execute("SELECT count(*) FROM tasks").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    def worker_crashes() -> int:
        try:
            with sqlite3.connect(db_path) as db:
                return db.execute("SELECT count(*) FROM events WHERE event = 'fault_injected' "
                                  "AND json_extract(data, '$.kind') = 'worker_crash'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    # after the first worker crash (soak 1 h): a resumed supervisor must not cause it again
    wait_for(lambda: enqueued() > 150 and worker_crashes() > 0, timeout=60, what="a third of the arrivals")
    sup.send_signal(signal.SIGKILL)
    sup.wait(timeout=10)
    if clock == "constant":  # gone longer than the stall window (7200 soak s, about 10 wall s at 720x)
        def gone_for() -> float:  # soak seconds since the dead supervisor's run wrote its last event
            with Queue(db_path, WALL, create=False) as queue:
                return RunStore(queue).current().clock.now() - queue.last_event_t()

        stall = profiles.load(str(profile)).abort.stall
        wait_for(lambda: gone_for() > stall, timeout=60, what="a gap longer than the stall window")
    status = CliRunner().invoke(orch, ["soak", "status", "--home", str(home), "--json"])
    assert orjson.loads(status.output)["status"] == "interrupted"
    again = CliRunner().invoke(orch, ["soak", "start", "--profile", "24h", "--home", str(home)])
    assert again.exit_code == 4 and "orch soak resume" in again.output
    proc = subprocess.run(orch_cmd("soak", "resume", "--home", str(home)), capture_output=True, text=True,
                          timeout=240, env=clean_env())
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    header, events = read_log(home, "accept")
    check_invariants(home, header, events)
    check_faults_follow_the_schedule(header, events, all_worker_faults=True)  # none repeated, none skipped
    resumed = [e for e in events if e["event"] == "run_resumed"]
    assert len(resumed) == 1 and resumed[0]["gap"] > 0
    if clock == "constant":  # the gap is reported, not judged as a stall (the old workers' exits follow it)
        assert resumed[0]["gap"] > header["profile"]["abort"]["stall"]
        assert not [e for e in events if e["event"] == "abort"], [e for e in events if e["event"] == "abort"]
    # duplicates are only the planned ones (from the plan, possibly twice when concurrent)
    dup_events = [e for e in events if e["event"] == "duplicate_enqueue"]
    assert all(e.get("duplicate") for e in dup_events)
    summary = (home / "reports" / "soak" / "soak_summary.md").read_text()
    assert "resum" in summary.lower()


def test_a_worker_that_joined_a_skip_clock_run_leaves_by_itself_when_the_run_is_over(tmp_path, orch_cmd, clean_env,
                                                                                    children, wait_for):
    """An operator's extra `orch worker` on the run's host takes part in the skip clock; once the run
    winds down no jump wakes it again, so it must look at the run's status on its own and leave."""
    home = tmp_path / "home"
    profile = acceptance_profile(tmp_path, duration=12 * 3600.0)
    sup = children.start(orch_cmd("soak", "start", "--profile", str(profile), "--clock", "skip", "--busy-rate", "5",
                                  "--seed", "3", "--home", str(home)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), text=True)
    wait_for(lambda: soak_running(home), timeout=60, what="the run to start")
    extra = children.start(orch_cmd("worker", "--name", "extra", "--home", str(home)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(), text=True)
    out, err = sup.communicate(timeout=240)
    assert sup.returncode in (0, 1) and "Traceback" not in err, out + err
    wait_for(lambda: extra.poll() is not None, timeout=30, what="the extra worker to leave")
    _, extra_err = extra.communicate()
    assert extra.returncode == 0 and "is over: exiting" in extra_err, extra_err
    header, events = read_log(home, "accept")
    assert sum(e["event"] == "worker_started" and e["worker"] == "extra" for e in events) == 1  # it took part, once
    check_invariants(home, header, events, joined=frozenset({"extra"}))


@pytest.mark.parametrize("how", ["SIGTERM", "orch soak stop"])
def test_a_stopped_run_ends_cleanly_and_still_writes_its_summary(tmp_path, orch_cmd, clean_env, children, wait_for,
                                                                 how):
    home = tmp_path / "home"
    profile = acceptance_profile(tmp_path, duration=24 * 3600.0)
    sup = children.start(orch_cmd("soak", "start", "--profile", str(profile), "--speed", "360", "--seed", "2",
                                  "--home", str(home)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), text=True)
    db_path = home / "db" / "queue.db"

    def done_tasks() -> int:
        try:
            with sqlite3.connect(db_path) as db:
                return db.execute("SELECT count(*) FROM tasks WHERE state = 'DONE'").fetchone()[0]
        except sqlite3.Error:
            return 0

    wait_for(lambda: db_path.exists() and done_tasks() > 20, timeout=60, what="work flowing")
    if how == "SIGTERM":
        sup.send_signal(signal.SIGTERM)
    else:
        out = CliRunner().invoke(orch, ["soak", "stop", "--home", str(home)])
        assert out.exit_code == 0 and "stopped run" in out.output, out.output
    out, err = sup.communicate(timeout=120)
    assert sup.returncode == 1, out + err  # STOPPED is not a pass
    assert "STOPPED" in out and "Traceback" not in err
    header, events = read_log(home, "accept")
    names = [e["event"] for e in events]
    assert "run_stopped" in names and events[-1]["event"] == "run_finished"
    assert events[-1]["verdict"] == "STOPPED"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(header["first_seq"], header["first_seq"] + len(seqs)))  # flushed, gap-free
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM tasks WHERE state = 'IN_PROGRESS'").fetchone()[0] == 0
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "stopped"
    # arrivals stopped: nothing was enqueued after the stop
    stop_seq = next(e["seq"] for e in events if e["event"] == "run_stopped")
    assert not [e for e in events if e["event"] == "enqueued" and e["seq"] > stop_seq]
    assert "STOPPED" in (home / "reports" / "soak" / "soak_summary.md").read_text()
    status = CliRunner().invoke(orch, ["soak", "status", "--home", str(home), "--json"])
    assert orjson.loads(status.output)["status"] == "stopped"
