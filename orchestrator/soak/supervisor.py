"""The soak supervisor: runs one soak from its record in the database.

APScheduler jobs (on the soak clock) enqueue the arrivals that are due, reap expired leases,
play the scripted on-call, write 6-hourly checkpoints, inject worker crashes and stalls, watch
the processes, and evaluate the abort rules from the JSONL log. The main thread shows progress
and winds the run down on the end, an abort, or a stop signal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from orchestrator.core.clock import RunEnd
from orchestrator.core.errors import DbLockError, IllegalTransition, LogError
from orchestrator.core.heap import keep_freed_memory
from orchestrator.core.home import Home
from orchestrator.core.model import QueueConfig
from orchestrator.core.profiles import Profile
from orchestrator.core.skipclock import SHIP, SkipClock
from orchestrator.faults import schedule
from orchestrator.faults.client import ask, kill
from orchestrator.faults.schedule import LOOK_AGAIN, Entry, WorkerFaults
from orchestrator.judge.aborts import RULE_NAMES
from orchestrator.judge.report import write_incident, write_summary
from orchestrator.judge.sli import Aggregator, LogTail, log_abort
from orchestrator.queue.probe import install
from orchestrator.queue.runs import Run, RunStore
from orchestrator.queue.tasks import task_name
from orchestrator.queue.writes import Queue
from orchestrator.soak import arrivals
from orchestrator.soak.arrivals import Plan
from orchestrator.soak.pool import Pool, PoolConfig
from orchestrator.soak.progress import Progress
from orchestrator.soak.skipjobs import Job, SkipJobs, every, never
from orchestrator.soak.shipper import Shipper, header_line, link_latest, write_header

# soak seconds an evaluation on the skip clock waits for the shipper to write the events committed
# before it (a real shipper writes every soak second); one gone or stalled holds it no longer
LOG_WAIT = 1.0
EXIT_CODES = {"PASS": 0, "FAIL": 1, "INCOMPLETE": 1, "STOPPED": 1, "ABORTED": 3}


@dataclass(frozen=True)
class SoakOptions:
    workers: int
    handler: str = "orchestrator.handlers:synthetic"
    batch: int = 1
    live: bool = False  # rich live view (a terminal) instead of plain lines


@dataclass(frozen=True)
class Outcome:
    run_id: str
    verdict: str
    exit_code: int
    summary: Path | None
    incident: Path | None


class Supervisor:
    def __init__(self, home: Home, run: Run, profile: Profile, plan: Plan, options: SoakOptions,
                 manifest: dict | None = None):
        keep_freed_memory()
        self.home = home
        self.manifest = manifest if manifest is not None else arrivals.manifest(profile, plan, run.seed)
        self.run_rec = run
        self.profile = profile
        self.plan = plan
        self.options = options
        self.clock = run.clock
        self.ttl = profile.effective_ttl(run.speed, skip=run.clock_file is not None)
        self.config = QueueConfig(retry=profile.retry.policy(), lease_ttl=self.ttl,
                                  inflight_cap=profile.inflight_cap or None)
        self.local = threading.local()
        self.queue = self._queue()
        self.store = RunStore(self.queue)
        self.folder = home.runtime / run.id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pool = Pool(PoolConfig(
            home=home.root, run_id=run.id, workers=options.workers, handler=options.handler, ttl=self.ttl,
            poll=0.5, batch=options.batch, inflight_cap=profile.inflight_cap or None,
            lock_socket=self.folder / "agent.sock", folder=self.folder, db_args=tuple(home.db_args),
        ))
        self.cursor = run.next_arrival
        self.dup_cursor = run.next_dup
        self.stopping = threading.Event()
        self.stop_reason = ""
        self.lock_failures = 0
        self.aborts: list = []
        self.unrecorded: list = []
        self.agg_lock = threading.Lock()
        self.tail = LogTail(Path(run.log_path))
        self.agg: Aggregator | None = None
        # every planned fault, in one schedule; the worker faults go on after those the run's
        # events say happened (a resumed run neither repeats nor skips one)
        self.schedule = schedule.build(profile, plan, self.ttl)
        self.worker_faults = WorkerFaults(self.schedule, self.queue.faults_since(run.first_seq))

    # --- plumbing -----------------------------------------------------------------------
    def _queue(self) -> Queue:
        """One connection per thread (APScheduler's executors and the main thread)."""
        queue = getattr(self.local, "queue", None)
        if queue is None:
            queue = self.local.queue = Queue(self.home.db, self.clock, self.config)
        return queue

    def now_t(self) -> float:
        return self.clock.now() - self.run_rec.started_soak

    def snapshot(self) -> dict[str, Any]:
        """The figures the progress view shows; once the log holds `run_finished`, with the run's
        end (`RunEnd`, from that line) instead of the clock."""
        counts = self._queue().counts()
        with self.agg_lock:
            view = self.agg.progress() if self.agg is not None else {}
            end = RunEnd.of_event(self.agg.state.finished) if self.agg is not None else None
        if not view:  # before the log's first line: the rules as the judge states them with no event
            view = {"slo": [], "rules": [{"rule": r, "name": n, "state": "ok"} for r, n in RULE_NAMES.items()]}
        return {
            "run_id": self.run_rec.id, "profile": self.profile.name, "speed": self.run_rec.speed,
            "clock": self.run_rec.clock_mode,
            "soak_t": end.t if end else self.now_t(),
            "duration": self.profile.duration,
            "arrivals": self.cursor,
            "planned": len(self.plan),
            "counts": counts,
            "success": view.get("success"),
            "p95": view.get("p95"),
            "faults": view.get("faults", 0),
            "slo": view["slo"],
            "rules": view["rules"],
            "end": end,
        }

    def _every(self, soak_seconds: float, wall_floor: float) -> float:
        return max(self.clock.to_wall(soak_seconds), wall_floor)

    # --- jobs ---------------------------------------------------------------------------
    def job_arrivals(self) -> None:
        now_t = self.now_t()
        plan, run_id, planned = self.plan, self.run_rec.id, self.schedule.duplicates
        end = int(plan.times.searchsorted(now_t, side="right"))
        dup_end = int(planned.t.searchsorted(now_t, side="right"))
        # A duplicate waits until its arrival was enqueued by an earlier tick: in the same tick the
        # agent's concurrent copy could win the race and the arrival itself be logged the duplicate.
        ready = self.dup_cursor
        while ready < dup_end and int(planned.arrival[ready]) < self.cursor:
            ready += 1
        dup_end = ready
        if end == self.cursor and dup_end == self.dup_cursor:
            return
        # every copy of an arrival carries its planned time: latency runs from it (docs/jsonl.md)
        items = [(arrivals.arrival_key(run_id, i), arrivals.payload(self.profile, plan, i),
                  {"arrival": i, "planned_t": plan.planned_t(i)}) for i in range(self.cursor, end)]
        dups = [int(planned.arrival[m]) for m in range(self.dup_cursor, dup_end)]
        dups = [i for i in dups if i < end]
        concurrent = [int(planned.arrival[m]) for m in range(self.dup_cursor, dup_end) if planned.concurrent[m]]
        items += [(arrivals.arrival_key(run_id, i), arrivals.payload(self.profile, plan, i),
                   {"arrival": i, "planned_t": plan.planned_t(i), "duplicate": True}) for i in dups]
        answers: dict[int, str | None] = {}  # what the agent answered to each concurrent copy
        racers = [threading.Thread(target=self._agent_enqueue, args=(i, answers), daemon=True)
                  for i in concurrent if i < end]
        for racer in racers:
            racer.start()
        queue = self._queue()
        results = queue.enqueue_many(items, also=self.store.cursor_update(run_id, end, dup_end))
        for racer in racers:
            racer.join(self._every(60, 2.0))
        for i, result in zip(dups, results[len(results) - len(dups):]):
            data = {"kind": "duplicate_enqueue", "target": task_name(result.task), "concurrent": False}
            if i in concurrent:  # planned from two processes: say what the second one did
                answer = answers.get(i)
                data["concurrent"] = bool(answer and answer.startswith("ok "))
                data["agent"] = answer or "no answer"
            queue.record("fault_injected", task=result.task, key=arrivals.arrival_key(run_id, i), data=data)
        self.cursor, self.dup_cursor = end, dup_end

    def _agent_enqueue(self, i: int, answers: dict[int, str | None]) -> None:
        doc = {"key": arrivals.arrival_key(self.run_rec.id, i),
               "payload": arrivals.payload(self.profile, self.plan, i),
               "data": {"arrival": i, "planned_t": self.plan.planned_t(i), "duplicate": True, "from": "agent"}}
        answers[i] = ask(self.pool.config.lock_socket, "enqueue " + orjson.dumps(doc).decode(), self._every(60, 2.0))

    def job_reap(self) -> None:
        self._queue().reap()

    def job_oncall(self) -> None:
        oncall = self.profile.oncall
        if not oncall.replan_after:
            return
        queue = self._queue()
        for row in queue.blocked_since(self.clock.now() - oncall.replan_after):
            budget = (row["budget"] or 1.0) * oncall.budget_factor
            try:
                queue.operate("replan", row["id"], actor="oncall-sim", budget=budget,
                              notes=f"scripted on-call: guardrail block reviewed, budget raised to {budget:g}")
            except IllegalTransition:
                continue  # an operator acted first

    def job_checkpoint(self) -> None:
        queue = self._queue()
        status = queue.status(recent=0)
        queue.record("checkpoint", data={
            "hour": round(self.now_t() / 3600, 2), "counts": status["counts"], "errors": status["errors"],
            "in_flight": sum(w["tasks"] for w in status["in_flight"]),
            "oldest_pending_age": status["oldest_pending_age"], "expired_leases": status["expired_leases"],
            "lock_retries": queue.write.lock_retries,
        })

    def job_chaos(self) -> None:
        """Cause the worker faults of the schedule that are due; one that finds no busy worker
        stays due and is tried at the next look (LOOK_AGAIN soak seconds on)."""
        for entry in self.worker_faults.due(self.now_t()):
            if self._hit(entry):
                self.worker_faults.happened(entry)

    def _hit(self, entry: Entry) -> bool:
        """Signal a worker that holds a lease right now (mid-task): SIGKILL for a crash, SIGSTOP
        for a stall; False when none does."""
        kind = entry.kind
        sig = signal.SIGSTOP if kind == schedule.WORKER_STALL else signal.SIGKILL
        queue = self._queue()
        for row in queue.busiest_workers():
            proc = self.pool.by_name(row["worker"])
            if proc is None or proc.pid in self.pool.stopped or proc.popen.poll() is not None:
                continue
            queue.record("fault_injected", worker=proc.name, data={"kind": kind, "target": proc.pid})
            send = self.clock.signal if self.clock.skips else kill  # skip clock: never inside its lock
            self.pool.signal(proc, sig, send)
            if sig == signal.SIGSTOP:
                # SIGCONT from a timer, not from a job: the stopped worker may hold the write lock
                # that every job is waiting for.
                self._wake_later(proc, entry.stall)
            return True
        return False

    def _wake_later(self, proc, soak_seconds: float) -> None:
        """SIGCONT `proc` after `soak_seconds`, from a timer thread (on the skip clock a
        participant that waits on the clock, so the clock may jump to the wake-up)."""
        if not self.clock.skips:
            wake = threading.Timer(self.clock.to_wall(soak_seconds), self.pool.signal, args=(proc, signal.SIGCONT))
            wake.daemon = True
            wake.start()
            return
        ready = threading.Event()

        def wake() -> None:
            with self.clock.participant():
                ready.set()
                self.clock.wait(None, soak_seconds)
                self.pool.signal(proc, signal.SIGCONT)

        threading.Thread(target=wake, name=f"sigcont-{proc.pid}", daemon=True).start()
        ready.wait(5.0)  # a participant before this job goes on: the clock cannot skip the wake-up

    def job_watch(self) -> None:
        if self.stopping.is_set():
            return
        for proc, code in self.pool.dead():
            new = self.pool.respawn(proc)
            self._queue().record("worker_restarted", worker=proc.name, data={
                "role": proc.role, "pid": new.pid, "old_pid": proc.pid, "returncode": code})

    def job_evaluate(self) -> None:
        now_t = self.now_t()
        db_seq = None
        if self.clock.skips:  # the shipper ships beside the run: wait for the events committed so far
            db_seq = self._queue().last_seq()
            self.clock.await_log(db_seq, LOG_WAIT)
        try:
            events = self.tail.read()
        except LogError as exc:
            self._abort([log_abort(str(exc), now_t)])
            return
        with self.agg_lock:
            try:
                self._feed(events)
            except LogError as exc:  # a line that breaks the contract: the log cannot be trusted
                self._abort([log_abort(str(exc), now_t)])
                return
            if self.agg is None:
                return
            cursor = self.cursor
            due = float(self.plan.times[cursor]) if cursor < len(self.plan) else None
            found = self.agg.check(now_t, self._queue().last_seq() if db_seq is None else db_seq,
                                   arrivals_due=due if due is not None and due <= now_t else None)
        if found:
            self._abort(found)

    def _abort(self, found: list) -> None:
        self.aborts.extend(found)
        self.unrecorded.extend(found)
        self.stop_reason = "abort"
        self.stopping.set()
        self._record_aborts()

    def _record_aborts(self) -> None:
        """Write the `abort` events not written yet (a locked database may defer them to the
        wind-down, where this is called again)."""
        queue = self._queue()
        while self.unrecorded:
            abort = self.unrecorded[0]
            queue.record("abort", data={"rule": abort.rule, "name": abort.name, "figures": abort.figures,
                                        "evidence": list(abort.evidence), "tripped_t": abort.t})
            self.unrecorded.pop(0)

    # --- the run ------------------------------------------------------------------------
    def _guarded(self, job):
        """A job that meets a database locked past the bound skips this tick (counted); the next
        tick does its work. Anything else is a bug and propagates (APScheduler logs it)."""
        def run() -> None:
            try:
                job()
            except DbLockError:
                self.lock_failures += 1
        run.__name__ = job.__name__
        return run

    def skip_jobs(self) -> SkipJobs:
        """The same jobs on the skip clock: due at soak times the clock can jump to (the next
        arrival, the next worker fault), the reaper when the clock says a lease expired, the rest
        on their soak periods."""
        start = self.clock.now()
        plan, started = self.plan, self.run_rec.started_soak

        def next_arrival(now: float) -> float:
            times = [float(plan.times[self.cursor])] if self.cursor < len(plan) else []
            if self.dup_cursor < len(self.schedule.duplicates.t):
                times.append(float(self.schedule.duplicates.t[self.dup_cursor]))
            return started + min(times) if times else float("inf")

        def next_fault(now: float) -> float:
            """The schedule's next worker fault (a due one that found no busy worker: a look
            LOOK_AGAIN on, as the interval job's)."""
            return started + self.worker_faults.next_after(now - started)

        jobs = [
            Job("arrivals", self._guarded(self.job_arrivals), next_arrival),
            Job("reaper", self._guarded(self.job_reap), never, on_expiry=True),
            # the evaluation below reads the log: the shipper starts on it now, beside the on-call job
            Job("ship", lambda: self.clock.kick(topic=SHIP), every(60.0, start)),
            Job("oncall", self._guarded(self.job_oncall), every(60.0, start)),
            Job("checkpoint", self._guarded(self.job_checkpoint), every(self.profile.checkpoint_every, start)),
            Job("chaos", self._guarded(self.job_chaos), next_fault),
            Job("evaluate", self._guarded(self.job_evaluate), every(60.0, start)),
        ]
        return SkipJobs(self.clock, jobs, self.stopping, self._drained_now)

    def _drained_now(self) -> bool:
        """The skip jobs' end check: the run drained, so stop before the clock jumps on."""
        drained = self.drained()
        if drained or self.now_t() > self.drain_limit():
            self.stop_reason = self.stop_reason or ("finished" if drained else "drain limit")
            self.clock.freeze()
            self.stopping.set()
            return True
        return False

    def scheduler(self) -> BackgroundScheduler:
        # A tick that finds the previous one still running is skipped on purpose (the next tick
        # enqueues everything due): not worth a warning line each time.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1), "eval": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        every = self._every
        sched.add_job(self._guarded(self.job_arrivals), "interval", seconds=every(1.0, 0.004), id="arrivals")
        sched.add_job(self._guarded(self.job_reap), "interval", seconds=every(self.ttl / 4, 0.005), id="reaper")
        sched.add_job(self._guarded(self.job_oncall), "interval", seconds=every(60.0, 0.01), id="oncall")
        sched.add_job(self._guarded(self.job_checkpoint), "interval", seconds=every(self.profile.checkpoint_every, 0.05),
                      id="checkpoint")
        sched.add_job(self._guarded(self.job_chaos), "interval", seconds=every(LOOK_AGAIN, 0.02), id="chaos")
        sched.add_job(self._guarded(self.job_watch), "interval", seconds=0.05, id="watch")
        sched.add_job(self._guarded(self.job_evaluate), "interval", seconds=every(60.0, 0.02), id="evaluate", executor="eval")
        return sched

    def drained(self) -> bool:
        if self.cursor < len(self.plan) or self.now_t() < self.profile.duration:
            return False
        queue = self._queue()
        if queue.count_open() > 0:
            return False
        return not (self.profile.oncall.replan_after and queue.status(recent=0)["counts"]["BLOCKED"])

    def drain_limit(self) -> float:
        retry = self.profile.retry
        return (self.profile.duration + sum(retry.backoff) * 1.5 + self.profile.oncall.replan_after
                + 20 * self.ttl + 600)

    def install_signals(self) -> None:
        def on_signal(signum, _frame):
            self.stop_reason = self.stop_reason or f"signal {signal.Signals(signum).name}"
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def start_clock(self) -> None:
        """A new run: once the pool is ready, write the log's first line and start the soak
        clock (t = 0), so no arrival waits for a worker that is still starting."""
        late = self.pool.wait_ready()
        if late:
            print(f"warning: not ready after 60 s: {', '.join(late)}", file=sys.stderr, flush=True)
        origin = time.time()
        if self.run_rec.clock_file:
            SkipClock.create(self.run_rec.clock_file, origin, self.run_rec.speed)
        path = Path(self.run_rec.log_path)
        provisional = dataclasses.replace(self.run_rec, origin=origin, started_wall=origin, started_soak=origin)
        write_header(path, header_line(provisional, self.manifest, self.options.workers))
        link_latest(path, self.profile.name)
        self.run_rec = self.store.go(self.run_rec.id, origin)
        self.clock = self.run_rec.clock
        install(self.clock, self.home.db)
        self._queue().use_clock(self.clock)

    def run(self) -> Outcome:
        self.store.set_supervisor(self.run_rec.id, os.getpid())
        self.pool.start()
        if self.run_rec.status == "starting":
            self.start_clock()
        install(self.clock, self.home.db)
        if self.clock.skips:
            self.clock.thaw()  # a resumed run whose supervisor died winding down had frozen it
        sched = self.skip_jobs() if self.clock.skips else self.scheduler()
        sched.start()
        progress = Progress(self.snapshot, self.now_t, live=self.options.live)
        with progress:  # its last frame is drawn after the wind-down: it shows the run's end
            try:
                while not self.stopping.wait(0.05):
                    progress.tick()
                    if self.clock.skips:
                        self._guarded(self.job_watch)()  # a wall-time look: the skip jobs wait in soak time
                        if not sched.is_alive() and not self.stopping.is_set():
                            # its thread died (its error is on stderr): nothing would enqueue or jump again
                            self.stop_reason = self.stop_reason or "the skip clock's job loop ended"
                            break
                    if self.drained():
                        self.stop_reason = "finished"
                        break
                    if self.now_t() > self.drain_limit():
                        self.stop_reason = "drain limit"
                        break
            finally:
                self.clock.freeze()  # the skip clock: no jump past the end while the run winds down
                sched.shutdown(wait=True)
                self.pool.stop(("worker", "agent"))
            progress.winding_down()
            return self.wind_down()

    def wind_down(self) -> Outcome:
        queue = self._queue()
        self.pool.stop(("shipper",))
        self._record_aborts()
        reason = self.stop_reason
        if reason not in ("finished", "abort", "drain limit"):
            queue.record("run_stopped", data={"reason": reason or "stopped"})
        self._ship_rest()
        with self.agg_lock:
            verdict = self.agg.verdict(aborted=bool(self.aborts), final=True) if self.agg else "STOPPED"
        if reason not in ("finished", "abort", "drain limit"):
            verdict = "STOPPED" if verdict != "ABORTED" else verdict
        queue.record("run_finished", data={"verdict": verdict, "reason": reason})
        status = {"ABORTED": "aborted", "STOPPED": "stopped"}.get(verdict, "finished")
        self.store.end(self.run_rec.id, status, verdict)
        self._ship_rest()
        incident = None
        if self.aborts:
            incident = write_incident(self.aborts[0], self.agg, self.home.soak_reports)
        summary = write_summary(self.agg, self.home.soak_reports, log_path=Path(self.run_rec.log_path),
                                incidents=[incident] if incident else [])
        return Outcome(self.run_rec.id, verdict, EXIT_CODES.get(verdict, 1), summary, incident)

    def _ship_rest(self) -> None:
        """Ship what the shipper process left, in this process, then feed the aggregator."""
        shipper = Shipper(self._queue(), self.store.get(self.run_rec.id))
        with open(self.run_rec.log_path, "ab") as fh:
            while shipper.ship_once(fh):
                pass
            shipper.sync(fh)
        events = self.tail.read()
        with self.agg_lock:
            self._feed(events)

    def _feed(self, events: list[dict]) -> None:
        for event in events:
            if self.agg is None:
                self.agg = Aggregator(event)
            else:
                self.agg.feed(event)
