"""Drills on the soak engine itself (`orch soak start/resume` with a small profile), and on a
backlog: kill -9 of the supervisor, the log shipper stopped, arrivals above capacity."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import threading
from pathlib import Path

import orjson

from orchestrator.core import profiles
from orchestrator.core.clock import Clock
from orchestrator.drills.base import drill
from orchestrator.judge.sli import aggregate_file
from orchestrator.queue.runs import RunStore
from orchestrator.queue.writes import Queue

H = "orchestrator.drills.handlers:"
SOAK_SPEED = 720.0
RESUME = ("soak", "resume")  # how the drill recovers the run (a test swaps it to show a lossy recovery fails)


def _profile(h, duration: float, **changes) -> Path:
    base = profiles.BUILTIN["24h"]
    p = dataclasses.replace(base, name=f"drill-{h.drill.name}", duration=duration, faults=profiles.Faults(),
                            workers=3, **changes)
    path = h.folder / "profile.toml"
    path.write_text(p.to_toml())
    return path


def _start(h, profile: Path) -> subprocess.Popen:
    argv = h.orch("soak", "start", "--profile", str(profile), "--speed", repr(SOAK_SPEED), "--seed",
                  str(h.seed), "--home", str(h.home.root))
    if h.handler_hook:
        argv += ["--handler", h.handler_hook]
    h.clock = Clock(speed=SOAK_SPEED)  # the drill's waits are in the soak's seconds
    h.earlier_run = _latest(h)  # a shared home (--home) may hold earlier runs: not this drill's
    return h.spawn(argv, "soak-start")


def _latest(h):
    if not h.home.db.exists():
        return None
    with Queue(h.home.db) as queue:
        return RunStore(queue).latest()


def _run(h):
    """The run this drill started (None until it exists)."""
    run = _latest(h)
    before = getattr(h, "earlier_run", None)
    return None if run is None or (before is not None and run.id == before.id) else run


def _adopt(h, run) -> None:
    """Check the soak's log and tasks as the drill's own (after the soak ended)."""
    h.log_path = Path(run.log_path)
    h.first_seq = run.first_seq
    events = h.log_events()
    h.tasks = [int(e["task"].split("-")[1]) for e in events if e["event"] == "enqueued"]
    h.prefix = run.id
    h.soak_aborts = aggregate_file(h.log_path).aborts


def _soak_t(run) -> float:
    return run.clock.now() - run.started_soak


@drill("supervisor-restart", "kill -9 of the soak supervisor a third of the way into a run; then "
       "`orch soak resume`", "no arrival lost or enqueued twice; the gap is logged (run_resumed); the run "
       "finishes and every task ends", uses_soak=True, speed=SOAK_SPEED)
def supervisor_restart(h) -> None:
    # the abort rules are not this drill's business: a loaded machine must not abort the resumed run
    sup = _start(h, _profile(h, 3600.0, abort=profiles.Abort(stall=4 * 3600.0, log_gap=4 * 3600.0)))
    h.wait(lambda: _run(h) is not None and _run(h).next_arrival >= 40, 20 * 3600)
    run = _run(h)
    planned = orjson.loads(Path(run.log_path).read_bytes().splitlines()[0])["manifest"]["arrivals"]
    at = run.next_arrival
    h.signal(sup, signal.SIGKILL)
    code = sup.wait(10)
    killed_t = _soak_t(run)
    h.check("kill -9 the supervisor", f"SIGKILL pid {sup.pid} after {at} of {planned} arrivals",
            "it dies; the run is left `running` with its supervisor gone", f"exit {code}",
            code == -signal.SIGKILL)
    resume = h.spawn(h.orch(*RESUME, "--home", str(h.home.root)), "soak-resume")
    try:
        rc = resume.wait(25)
    except subprocess.TimeoutExpired:
        rc = None
    h.check("orch soak resume", "resume the same run", "it finishes (exit 0 PASS or 1 FAIL)", f"exit {rc}",
            rc in (0, 1))
    _adopt(h, run)
    events = h.log_events()
    arrivals = sorted(e["arrival"] for e in events if e["event"] == "enqueued")
    keys = [e["key"] for e in events if e["event"] == "enqueued"]
    lost = sorted(set(range(planned)) - set(arrivals))
    h.check("no arrival lost or doubled", f"{planned} planned arrivals", "each enqueued exactly once",
            f"{len(arrivals)} enqueued, {len(set(keys))} distinct keys, {len(lost)} lost",
            arrivals == list(range(planned)) and len(keys) == len(set(keys)), note=f"lost arrivals {lost[:10]}"
            if lost else "")
    resumed = [e for e in events if e["event"] == "run_resumed"]
    h.check("the gap is logged", "read the log", "one run_resumed with the gap in soak seconds",
            f"{len(resumed)} run_resumed; gap {resumed[0]['gap'] if resumed else '-'}",
            len(resumed) == 1 and resumed[0]["gap"] > 0, (), [e["seq"] for e in resumed])
    if resumed:
        h.recovery("supervisor killed -> run_resumed (gap)", resumed[0]["gap"])
    h.recovery("supervisor killed -> resumed run finished", events[-1]["t"] - killed_t if events else None)


@drill("log-pipeline-drop", "SIGSTOP of the soak's log shipper process (alive, shipping nothing)",
       "the abort rule for missing logs (rule 5) fires within 15 soak minutes of the last shipped line; the "
       "incident record names it; the wind-down ships the rest, gap-free", uses_soak=True, speed=SOAK_SPEED)
def log_pipeline_drop(h) -> None:
    h.expected_aborts = {5}
    h.expect_settled = False  # an aborted run stops with work in flight: each task still in one state
    sup = _start(h, _profile(h, 4 * 3600.0))
    run = h.wait(lambda: _run(h), 20 * 3600)
    pids = h.home.root / "run" / run.id / "pids.json"
    h.wait(lambda: pids.exists() and "shipper" in pids.read_text(), 3600)
    h.wait(lambda: run is not None and Path(run.log_path).exists()
           and len(Path(run.log_path).read_bytes().splitlines()) > 20, 3600)
    shipper = orjson.loads(pids.read_bytes())["shipper"]["pid"]
    _signal_pid(shipper, signal.SIGSTOP)
    h.wait(lambda: _stopped(shipper), 600)  # a write already in the kernel lands before the stop
    stopped_t = _soak_t(run)
    log = Path(run.log_path)
    size = log.stat().st_size
    last = orjson.loads(log.read_bytes().splitlines()[-1])
    with Queue(h.home.db) as queue:
        moved = h.wait(lambda: queue.last_seq() >= last["seq"] + 10, 3 * 3600)  # the database moves on
        db_seq = queue.last_seq()
    grown = log.stat().st_size - size
    h.check("stop the shipper", f"SIGSTOP pid {shipper} at t={stopped_t:.0f}",
            "the log stops growing while the database moves on",
            f"last shipped line seq {last['seq']} t={last['t']}; the database at seq {db_seq}; the log grew "
            f"{grown} bytes since", bool(moved) and db_seq > last["seq"] and grown == 0)
    with Queue(h.home.db) as queue:
        aborted = h.wait(lambda: any(r["event"] == "abort" for r in queue.events_after(run.first_seq, 100000)),
                         3 * 3600)
    _signal_pid(shipper, signal.SIGCONT)  # let it take the wind-down's SIGTERM
    try:
        rc = sup.wait(25)
    except subprocess.TimeoutExpired:
        rc = None
    _adopt(h, run)
    aborts = [e for e in h.log_events() if e["event"] == "abort"]
    rule5 = [e for e in aborts if e["rule"] == 5]
    took = rule5[0]["tripped_t"] - last["t"] if rule5 else None
    h.check("rule 5 fires", "the supervisor's live aggregator", "exit 3 (ABORTED); abort rule 5 within 15 soak "
            "minutes of the last shipped line (+2 evaluation minutes: the rule sees the log advance and go "
            "silent only at its evaluations, every soak minute; +30 s of scheduling)",
            f"exit {rc}; aborts {[e['rule'] for e in aborts]}; after {took if took is None else round(took, 1)} soak s",
            bool(aborted) and rc == 3 and bool(rule5) and took is not None and took <= 900 + 2 * 60 + 30, (),
            [e["seq"] for e in aborts])
    if took is not None:
        h.recovery("last shipped line -> rule 5 tripped", took)
    incidents = list((h.home.root / "reports" / "soak").glob(f"incident_{run.id}*.md"))
    text = incidents[0].read_text() if incidents else ""
    h.check("incident record names it", "reports/soak/incident_<run>.md", "one record naming rule 5 (log)",
            f"{len(incidents)} record(s); {'names' if 'rule 5' in text.lower() or 'log' in text.lower() else 'lacks'}"
            " the rule", len(incidents) == 1 and "5" in text and "log" in text.lower())


def _stopped(pid: int) -> bool:
    """The process is in the stopped state (`T` in /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"T"
    except (OSError, IndexError):
        return False


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    import os

    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@drill("queue-pressure", "arrivals at 30 per soak minute for 2 soak minutes against 2 workers that finish "
       "12 per minute", "the backlog grows, then drains; every task DONE; the report gives the peak backlog, "
       "the oldest waiting age and the drain time")
def queue_pressure(h) -> None:
    rng = random.Random(h.seed)
    gaps = [rng.expovariate(30 / 60) for _ in range(60)]
    for i in range(2):
        h.worker(f"w{i}", H + "synthetic")
    h.wait(lambda: len(h.events("worker_started")) >= 2, 600)
    pause = threading.Event()
    for i, gap in enumerate(gaps):
        pause.wait(h.wall(gap))
        h.enqueue(f"a{i:03d}", {"work": 10.0})
    last_arrival = h.now_t()
    settled = h.wait(h.settled, 3600)
    h.finish_log()
    pending, peak, peak_t, waits, last_end = set(), 0, 0.0, [], 0.0
    enq: dict[str, float] = {}
    for e in h.log_events():
        if e.get("task") is None or e["state"] == e["prev"]:
            continue
        if e["event"] == "enqueued":
            enq[e["task"]] = e["t"]
        if e["state"] == "PENDING":
            pending.add(e["task"])
        else:
            pending.discard(e["task"])
        if e["event"] == "leased" and e["task"] in enq and e["attempt"] == 1:
            waits.append(e["t"] - enq[e["task"]])
        if e["state"] in ("DONE", "FAILED"):
            last_end = e["t"]
        if len(pending) > peak:
            peak, peak_t = len(pending), e["t"]
    drain = last_end - (last_arrival - 0.0) if settled else None
    h.check("the backlog grows", "60 arrivals at 30/min, capacity 12/min", "peak backlog of 20 or more PENDING",
            f"peak {peak} PENDING at t={peak_t:.0f}", peak >= 20)
    h.check("then drains", "arrivals stop", "every task DONE, nothing PENDING", str(h.states()),
            bool(settled) and h.states() == {"DONE": len(h.tasks)})
    h.check("figures", "replay of the log", "peak backlog, oldest waiting age, drain time reported",
            f"peak {peak}; oldest wait {max(waits) if waits else 0:.0f} soak s; drain "
            f"{'-' if drain is None else round(drain)} soak s after the last arrival", bool(waits))
    h.recovery("last arrival -> backlog drained", drain)
    h.recovery("oldest waiting age (enqueued -> first lease)", max(waits) if waits else None)
