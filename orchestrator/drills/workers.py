"""Drills on worker processes: SIGKILL, SIGSTOP past the lease, cancel mid-run, the global cap."""

from __future__ import annotations

import signal

from orchestrator.drills.base import drill

H = "orchestrator.drills.handlers:"


def _first(events: list[dict], **match) -> dict | None:
    return next((e for e in events if all(e.get(k) == v for k, v in match.items())), None)


@drill("worker-crash", "SIGKILL of a worker process in the middle of a task",
       "the task comes back through lease expiry (missing heartbeat detected within 2 soak minutes), "
       "ends DONE once; the other tasks keep flowing")
def worker_crash(h) -> None:
    victim = h.enqueue("victim", {"first": 3600.0, "work": 10.0})
    w1 = h.worker("w1", H + "slow_first")
    leased = h.wait(lambda: h.leased_by("w1", victim), 300)
    if not h.check("crash mid-task", "w1 leased the task", "w1 holds the lease", str(leased and "leased"),
                   bool(leased), [victim]):
        return
    t_kill = h.now_t()
    h.signal(w1, signal.SIGKILL)
    code = w1.wait(5)
    h.check("crash mid-task", f"SIGKILL pid {w1.pid} at t={t_kill:.0f}", "the process dies with -9",
            f"exit {code}", code == -signal.SIGKILL, [victim], [leased["seq"]])
    others = [h.enqueue(f"other-{i}", {"work": 10.0}) for i in range(6)]
    h.worker("w2", H + "slow_first")
    expired = h.wait(lambda: _first(h.events("lease_expired", victim), worker="w1"), 240)
    took = None if not expired else expired["t"] - h.run.started_soak - t_kill
    h.recovery("SIGKILL -> lease_expired (missing heartbeat detected)", took)
    h.check("missing heartbeat detected", "the harness reaper every 5 soak s", "lease_expired within 120 soak s",
            "not detected" if took is None else f"after {took:.1f} soak s", took is not None and took <= 120,
            [victim], [expired["seq"]] if expired else [])
    h.wait(h.settled, 600)
    done = h.events("completed", victim)
    released = h.events("leased", victim)
    observed = f"{h.state(victim)}; {len(done)} completed; leased by {[e['worker'] for e in released]}"
    ok = h.state(victim) == "DONE" and len(done) == 1 and done[0]["worker"] != "w1"
    h.check("task recovered", "w2 takes the task after the expiry", "DONE once, by another worker, new epoch",
            observed, ok, [victim], [e["seq"] for e in done])
    if done:
        h.recovery("SIGKILL -> task DONE", done[0]["t"] - h.run.started_soak - t_kill)
    states = [h.state(t) for t in others]
    h.check("others keep flowing", "6 more tasks enqueued after the crash", "all DONE",
            f"{states.count('DONE')} of 6 DONE", states.count("DONE") == 6, [t for t, s in zip(others, states)
                                                                             if s != "DONE"])


@drill("worker-stall", "SIGSTOP of a worker past its lease TTL, then SIGCONT",
       "the lease expires, another worker finishes the task; the stalled worker's late completion is "
       "rejected (stale_rejected); one effect only")
def worker_stall(h) -> None:
    task = h.enqueue("stalled", {"work": 30.0})
    w1 = h.worker("w1", H + "uninterruptible")
    leased = h.wait(lambda: h.leased_by("w1", task), 300)
    if not h.check("stall past the TTL", "w1 leased the task", "w1 holds the lease", str(bool(leased)),
                   bool(leased), [task]):
        return
    stopped = h.stop_outside_a_write(w1)
    if not h.check("stall past the TTL", "SIGSTOP w1 outside a write transaction", "stopped",
                   "stopped" if stopped else "could not", stopped):
        return
    t_stop = h.now_t()
    h.worker("w2", H + "uninterruptible")
    done = h.wait(lambda: h.events("completed", task), 600)
    expired = _first(h.events("lease_expired", task), worker="w1")
    h.check("lease expired while stopped", f"w1 stopped at t={t_stop:.0f}", "lease_expired of w1's lease",
            "expired" if expired else "no expiry", bool(expired), [task], [expired["seq"]] if expired else [])
    if expired:
        h.recovery("SIGSTOP -> lease_expired", expired["t"] - h.run.started_soak - t_stop)
    h.signal(w1, signal.SIGCONT)
    late = h.wait(lambda: _first(h.events("stale_rejected", task), worker="w1", call="complete")
                  or _first(h.events("idempotency_skip", task), worker="w1")
                  or _first(h.events("completed", task), worker="w1"), 300)
    ok = bool(late) and late["event"] == "stale_rejected" and late["stale_epoch"] == leased["epoch"]
    h.check("late completion rejected", "SIGCONT w1: its handler returns and it reports",
            f"stale_rejected (call complete, stale_epoch {leased['epoch']})",
            "nothing" if not late else f"{late['event']} by w1 (epoch {late.get('stale_epoch', late['epoch'])})",
            ok, [task], [late["seq"]] if late else [])
    h.wait(h.settled, 300)
    done = h.events("completed", task)
    effect = h.queue.effect_of(h.key("stalled"))
    ok = len(done) == 1 and effect is not None and effect["worker"] != "w1"
    h.check("one effect", "after both workers reported", "one completed, by w2, one effect row",
            f"{len(done)} completed by {[e['worker'] for e in done]}; effect by "
            f"{effect['worker'] if effect else None} (epoch {effect['epoch'] if effect else None})",
            ok, [task], [e["seq"] for e in done])
    if done:
        h.recovery("SIGSTOP -> task DONE by another worker", done[0]["t"] - h.run.started_soak - t_stop)


@drill("cancel-midrun", "ops cancel of IN_PROGRESS tasks: one cooperative handler, one blocking call",
       "the cooperative worker notices (refused heartbeat), stops and moves on; the blocking one's later "
       "completion is rejected; both end CANCELLED with no effect")
def cancel_midrun(h) -> None:
    a = h.enqueue("coop", {"work": 3600.0})
    wa = h.worker("wa", H + "synthetic", "--max-tasks", "2")
    if not h.wait(lambda: h.leased_by("wa", a), 300):
        h.check("cancel a cooperative task", "wait for the lease", "leased", "never leased", False, [a])
        return
    t0 = h.now_t()
    h.operate("cancel", a, notes="drill: cancel mid-run")
    noticed = h.wait(lambda: _first(h.events("stale_rejected", a), call="heartbeat"), 120)
    took = noticed["t"] - h.run.started_soak - t0 if noticed else None
    h.recovery("cancel -> worker noticed (refused heartbeat)", took)
    h.check("worker notices", "ops cancel while the handler works", "a refused heartbeat within 60 soak s",
            "not noticed" if took is None else f"after {took:.1f} soak s", took is not None and took <= 60,
            [a], [noticed["seq"]] if noticed else [])
    c = h.enqueue("next", {"work": 1.0})
    moved = h.wait(lambda: h.leased_by("wa", c), 120)
    stale_complete = _first(h.events("stale_rejected", a), call="complete")
    h.check("worker stops", "a next task enqueued", "wa leases it; no completion attempt for the cancelled task",
            f"next task {'leased' if moved else 'not leased'} by wa; "
            f"{'a' if stale_complete else 'no'} late completion", bool(moved) and not stale_complete,
            [a], [stale_complete["seq"]] if stale_complete else [])
    h.wait(lambda: wa.poll() is not None, 120)

    b = h.enqueue("blocking", {"work": 60.0})
    h.worker("wb", H + "uninterruptible")
    if not h.wait(lambda: h.leased_by("wb", b), 300):
        h.check("cancel a blocking call", "wait for the lease", "leased", "never leased", False, [b])
        return
    h.operate("cancel", b, notes="drill: cancel a blocking call")
    late = h.wait(lambda: _first(h.events("stale_rejected", b), call="complete")
                  or next(iter(h.events("completed", b)), None), 300)
    h.check("late completion rejected", "the blocking handler returns after the cancel",
            "stale_rejected (call complete)", late["event"] if late else "nothing",
            bool(late) and late["event"] == "stale_rejected", [b], [late["seq"]] if late else [])
    for name, task in (("coop", a), ("blocking", b)):
        effect = h.queue.effect_of(h.key(name))
        h.check("ends CANCELLED, no effect", f"task {name}", "CANCELLED, no effect row",
                f"{h.state(task)}, {'an' if effect else 'no'} effect", h.state(task) == "CANCELLED" and not effect,
                [task], [e["seq"] for e in h.events("completed", task)])
    h.wait(h.settled, 120)


@drill("concurrency-cap", "six workers with a global cap of 3 tasks in flight, 30 tasks at once",
       "at no instant of the log are more than 3 tasks IN_PROGRESS, and the cap is reached")
def concurrency_cap(h, rogue: bool = False) -> None:
    """`rogue` is the drill's break test: a worker that ignores the cap leases 5 tasks before the
    capped ones start, so the replay below must see more than 3 in flight."""
    cap = 3
    tasks = h.enqueue_many([(f"t{i}", {"work": 20.0}) for i in range(30)])
    if rogue:
        h.worker("rogue", H + "synthetic", "--batch", "5")
        h.wait(lambda: h.leased_by("rogue"), 60, floor_wall=60)
    for i in range(6):
        h.worker(f"w{i}", H + "synthetic", "--cap", str(cap))
    settled = h.wait(h.settled, 1200)
    h.check("drain under the cap", "30 tasks, 6 workers", "all DONE", str(h.states()), bool(settled), tasks)
    h.finish_log()
    in_flight, peak, worst = set(), 0, []
    for e in h.log_events():
        if e.get("task") is None or e["state"] == e["prev"]:
            continue
        if e["state"] == "IN_PROGRESS":
            in_flight.add(e["task"])
        else:
            in_flight.discard(e["task"])
        if len(in_flight) > cap:
            worst.append(e["seq"])
        peak = max(peak, len(in_flight))
    h.check("cap never exceeded", "replay every transition of the log", f"at most {cap} in flight at every seq",
            f"peak {peak} in flight; {len(worst)} events over the cap", not worst and peak == cap, (), worst)
