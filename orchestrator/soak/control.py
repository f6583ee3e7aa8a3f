"""Starting, resuming and stopping a soak run (what `orch soak ...` calls)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core import profiles
from orchestrator.core.clock import WALL, Clock, since_start
from orchestrator.core.errors import Refused
from orchestrator.core.home import Home
from orchestrator.core.profiles import Profile
from orchestrator.handlers.context import load_handler
from orchestrator.queue.runs import Run, RunStore, new_run_id, pid_alive
from orchestrator.queue.writes import Queue
from orchestrator.soak import arrivals
from orchestrator.soak.pool import leftovers, stop_leftovers
from orchestrator.soak.supervisor import Outcome, SoakOptions, Supervisor


@dataclass(frozen=True)
class StartRequest:
    profile: Profile
    speed: float
    seed: int
    workers: int
    handler: str
    live: bool
    skip: bool = False  # the skip clock (speed is then its busy rate)


def start(home: Home, req: StartRequest) -> Outcome:
    load_handler(req.handler)
    home.ensure()
    with Queue(home.db, WALL) as queue:
        store = RunStore(queue)
        _refuse_if_active(store)
        plan = arrivals.plan(req.profile, req.seed)
        manifest = arrivals.manifest(req.profile, plan, req.seed)
        run_id = new_run_id(req.seed)
        log_path = home.logs / f"soak_{req.profile.name}_{run_id}.jsonl"
        # `starting`: the clock's origin is set when the pool is ready (Supervisor.run)
        run = store.create(run_id, req.profile.to_dict(), req.seed, req.speed, time.time(), log_path,
                           req.profile.inflight_cap or None,
                           clock_file=home.runtime / run_id / "clock.bin" if req.skip else None)
    sup = Supervisor(home, run, req.profile, plan, SoakOptions(workers=req.workers, handler=req.handler,
                                                               live=req.live), manifest=manifest)
    sup.install_signals()
    return sup.run()


def _refuse_if_active(store: RunStore) -> None:
    active = store.current()
    if active is None:
        return
    if pid_alive(active.supervisor_pid):
        raise Refused(f"soak run {active.id} is in progress (supervisor PID {active.supervisor_pid}); "
                      "`orch soak stop` ends it")
    raise Refused(f"soak run {active.id} was interrupted (its supervisor is gone); "
                  "`orch soak resume` continues it, `orch soak stop` closes it")


def _interrupted(home: Home) -> tuple[Run, Profile]:
    with Queue(home.db, WALL, create=False) as queue:
        run = RunStore(queue).current()
    if run is None:
        raise Refused("no soak run to resume in this home")
    if pid_alive(run.supervisor_pid):
        raise Refused(f"soak run {run.id} still has its supervisor (PID {run.supervisor_pid})")
    return run, profiles.from_dict(run.profile)


def _take_over(home: Home, run: Run, profile: Profile, workers: int, handler: str, live: bool,
               event: str) -> Supervisor:
    old = leftovers(home.runtime / run.id)
    try:
        sup = Supervisor(home, run, profile, arrivals.plan(profile, run.seed),
                         SoakOptions(workers=workers, handler=handler, live=live))
        if run.status != "starting":  # (one that died before its clock started: the new supervisor starts it)
            # the take-over is the first event after the gap, before the old workers' exits: the
            # gap runs from the old supervisor's last event, and is reported, not judged as a stall
            queue = sup.queue  # the connection of this thread, as `_queue()` gives it
            last = queue.last_event_t()
            gap = round(sup.clock.now() - last, 3) if last is not None else None
            queue.record(event, data={"gap": gap, "old_pid": run.supervisor_pid})
    finally:
        stop_leftovers(old)
    return sup


def resume(home: Home, workers: int | None, handler: str, live: bool) -> Outcome:
    run, profile = _interrupted(home)
    sup = _take_over(home, run, profile, workers or profile.workers, handler, live, "run_resumed")
    sup.install_signals()
    return sup.run()


def stop(home: Home, wall_timeout: float = 120.0) -> str:
    """Stop the run in progress: SIGTERM its supervisor, or close an interrupted run here."""
    with Queue(home.db, WALL, create=False) as queue:
        store = RunStore(queue)
        run = store.current()
        if run is None:
            raise Refused("no soak run in progress in this home")
        if pid_alive(run.supervisor_pid):
            os.kill(run.supervisor_pid, signal.SIGTERM)
            deadline = time.monotonic() + wall_timeout
            while store.get(run.id).status in ("starting", "running"):
                if time.monotonic() > deadline:
                    raise Refused(f"supervisor PID {run.supervisor_pid} did not stop within {wall_timeout:g}s")
                time.sleep(0.1)
            return f"stopped run {run.id} (verdict {store.get(run.id).verdict})"
    if run.status == "starting":  # its supervisor died before the clock started: nothing ran
        stop_leftovers(leftovers(home.runtime / run.id))
        with Queue(home.db, WALL) as queue:
            RunStore(queue).end(run.id, "stopped", "STOPPED")
        return f"closed run {run.id}, which never started (verdict STOPPED)"
    profile = profiles.from_dict(run.profile)
    sup = _take_over(home, run, profile, 0, "orchestrator.handlers:synthetic", False, "run_resumed")
    sup.stop_reason = "stopped by operator (supervisor was gone)"
    outcome = sup.wind_down()
    return f"closed interrupted run {run.id} (verdict {outcome.verdict}); summary {outcome.summary}"


def status(home: Home) -> dict | None:
    with Queue(home.db, WALL, create=False) as queue:
        run = RunStore(queue).latest()
        if run is None:
            return None
        clock: Clock = run.clock
        alive = pid_alive(run.supervisor_pid)
        live = run.status in ("starting", "running")
        state = run.status if (not live or alive) else "interrupted"
        # a run that is over ended at its `run_finished` event (one that closed before its clock
        # started has none: it ran for no soak time)
        end = None if live else RunStore(queue).end_of(run)
        soak_t = since_start(clock.now(), run.started_soak) if live else (end.t if end else 0.0)
        doc = queue.status(recent=5)
        return {
            "run_id": run.id, "profile": run.profile_name, "seed": run.seed, "speed": run.speed,
            "clock": run.clock_mode,
            "status": state, "verdict": run.verdict, "supervisor_pid": run.supervisor_pid if alive else None,
            "soak_t": soak_t, "duration": run.profile.get("duration"),
            "ended": None if end is None else {"t": end.t, "wall": end.wall},
            "arrivals_enqueued": run.next_arrival, "commit": run.commit_sha, "log": run.log_path,
            "counts": doc["counts"], "oldest_pending_age": doc["oldest_pending_age"],
            "expired_leases": doc["expired_leases"], "faults": queue.faults_since(run.first_seq),
        }


def log_for(home: Home) -> Path | None:
    with Queue(home.db, WALL, create=False) as queue:
        run = RunStore(queue).latest()
    return None if run is None else Path(run.log_path)
