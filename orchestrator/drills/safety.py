"""Drills on the guards: idempotency under concurrent enqueues, the guardrail and its replan,
a storm of write-lock holds by a second process, and commands that must fail closed."""

from __future__ import annotations

import signal
import subprocess
import sys

import orjson

from orchestrator.drills.base import drill
from orchestrator.handlers.ledger import Ledger
from orchestrator.judge.incident import write_incident
from orchestrator.queue.tasks import task_name

H = "orchestrator.drills.handlers:"
OPS = "import sys; from orchestrator.cli.ops import ops; ops(prog_name='ops')"


def _cli(h, *args: str, ops: bool = False, timeout: float = 30.0) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", OPS, *args] if ops else h.orch(*args)
    return subprocess.run(argv + ["--home", str(h.home.root)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@drill("idempotency-under-fire", "one key enqueued 3 times in sequence and 10 times at once from separate "
       "processes while its task runs; then the key with another payload",
       "one task, one handler effect, one effect row; the rest recorded as duplicate_enqueue; the other "
       "payload refused (exit 4) with no write")
def idempotency_under_fire(h) -> None:
    journal = h.folder / "journal.txt"
    key = h.key("order-1")
    body = orjson.dumps({"work": 30.0, "journal": str(journal)}).decode()
    outs = [_cli(h, "enqueue", "--key", key, "--payload", body, "--json") for _ in range(3)]
    h.worker("w1", H + "journaled")
    racers = [subprocess.Popen(h.orch("enqueue", "--key", key, "--payload", body, "--json", "--home",
                                      str(h.home.root)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(10)]
    for p in racers:
        out, err = p.communicate(timeout=60)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    ids = {orjson.loads(o.stdout)["id"] for o in outs if o.returncode == 0}
    codes = [o.returncode for o in outs]
    task = int(next(iter(ids)).split("-")[1]) if len(ids) == 1 else None
    h.check("one task", "13 enqueues of one key (3 in sequence, 10 at once)", "all exit 0 and name one task",
            f"exit codes {sorted(set(codes))}; tasks {sorted(ids)}", codes == [0] * 13 and task is not None,
            sorted(ids))
    if task is None:
        return
    h.tasks.append(task)
    dups = h.events("duplicate_enqueue", task)
    created = h.events("enqueued", task)
    h.check("the rest recorded as duplicates", "count the events of the key", "1 enqueued, 12 duplicate_enqueue",
            f"{len(created)} enqueued, {len(dups)} duplicate_enqueue", len(created) == 1 and len(dups) == 12,
            [task], [e["seq"] for e in created])
    h.wait(h.settled, 600)
    done = h.events("completed", task)
    lines = journal.read_text().splitlines() if journal.exists() else []
    effect = h.queue.effect_of(key)
    h.check("one effect", "the worker ran the task", "one completed, one effect row, one journal line",
            f"{len(done)} completed, {'one' if effect else 'no'} effect row, {len(lines)} journal lines",
            len(done) == 1 and effect is not None and len(lines) == 1, [task], [e["seq"] for e in done],
            note="; ".join(lines[:3]))
    before = h.db_digest()
    other = _cli(h, "enqueue", "--key", key, "--payload", '{"work": 1}')
    after = h.db_digest()
    h.check("other payload refused", "the same key with another payload",
            "exit 4, one line `Error: ...another payload...`, database unchanged",
            f"exit {other.returncode}: {other.stderr.strip()[:120]}; database "
            f"{'unchanged' if before == after else 'CHANGED'}",
            other.returncode == 4 and "another payload" in other.stderr and before == after, [task])
    got = _stalled_side_effect(h, "ledgered")
    if got is None:
        return
    stalled, _key, entries, effects = got
    h.tasks.append(stalled)
    kinds = sorted(e["event"] for e in effects)
    h.check("the downstream stops the duplicate", "read the run's ledger.db and the side-effect events",
            "one entry of the key; one side_effect_applied, one side_effect_deduped (s1's stale attempt)",
            f"{len(entries)} entries; {kinds}",
            len(entries) == 1 and kinds == ["side_effect_applied", "side_effect_deduped"], [stalled],
            [e["seq"] for e in effects])
    with h.monitor.lock:
        sli4 = h.monitor.agg.figures()["sli4"]
    h.check("SLI-4 counts it as stopped", "the drill's aggregator", "0 actual duplicate executions, 1 stopped",
            f"{sli4['actual']} actual, {sli4['stopped']} stopped", sli4["actual"] == 0 and sli4["stopped"] == 1,
            [stalled])


def _stalled_side_effect(h, handler: str):
    """A worker stalls (SIGSTOP) past its lease in the middle of a task; another takes the task
    over, applies the side effect and completes; the first one wakes (SIGCONT), finishes its work
    and applies the side effect again. Returns (task, key, the ledger's entries of the key, the
    side-effect events of the task), or None when the scenario could not be set up."""
    h.stop_procs()  # the drill's earlier workers run other handlers
    task = h.enqueue("order-stalled", {"work": 30.0})
    key = h.key("order-stalled")
    s1 = h.worker("s1", H + handler)
    leased = h.wait(lambda: h.leased_by("s1", task), 300)
    if not h.check("stalled worker", "s1 leased the task", "s1 holds the lease", str(bool(leased)), bool(leased),
                   [task]):
        return None
    stopped = h.stop_outside_a_write(s1)
    if not h.check("stalled worker", "SIGSTOP s1 outside a write transaction", "stopped",
                   "stopped" if stopped else "could not", stopped):
        return None
    h.worker("s2", H + handler)
    done = h.wait(lambda: h.events("completed", task), 600)
    h.signal(s1, signal.SIGCONT)
    woke = h.wait(lambda: [e for e in h.events(None, task) if e["worker"] == "s1"
                           and e["event"] in ("side_effect_applied", "side_effect_deduped")], 300)
    h.check("stalled worker", "s2 takes the task over and completes; SIGCONT s1",
            "s1 wakes and performs its side effect (stale: its lease expired)",
            f"{len(done or [])} completed; s1 reported {[e['event'] for e in woke or []]}", bool(done and woke), [task])
    h.wait(lambda: h.events("stale_rejected", task), 300)
    h.finish_log()
    with_run = h.home.runtime / h.run.id / "ledger.db"
    ledger = Ledger(with_run)
    try:
        entries = ledger.entries(key)
    finally:
        ledger.close()
    effects = [e for e in h.events(None, task) if e["event"] in ("side_effect_applied", "side_effect_deduped")]
    return task, key, entries, effects


@drill("duplicate-side-effect", "the stalled-worker scenario against a downstream that does not dedupe by "
       "key: a worker stopped past its lease wakes and applies its side effect after the new holder did",
       "the side effect lands twice in the ledger and abort rule 2 fires live with the key and both side "
       "effects; the incident record names them")
def duplicate_side_effect(h) -> None:
    h.expected_aborts = {2}
    got = _stalled_side_effect(h, "ledgered_no_dedupe")
    if got is None:
        return
    task, key, entries, effects = got
    h.tasks.append(task)
    applied = [e for e in effects if e["event"] == "side_effect_applied"]
    h.check("applied twice downstream", "read the run's ledger.db", "two entries of the key, epochs 1 and 2",
            f"{len(entries)} entries, epochs {[e['epoch'] for e in entries]}; {len(applied)} side_effect_applied",
            len(entries) == 2 and sorted(e["epoch"] for e in entries) == [1, 2] and len(applied) == 2, [task],
            [e["seq"] for e in applied])
    aborts = [a for a in h.abort_rules() if a.rule == 2]
    fig = aborts[0].figures if aborts else {}
    both = sorted((fig.get("first") or {}, fig.get("second") or {}), key=lambda a: a.get("epoch") or 0)
    h.check("rule 2 fires", "the drill's live aggregator", "abort rule 2 naming the key and both side effects",
            f"{len(aborts)} rule-2 aborts; key {fig.get('key')}; epochs {[a.get('epoch') for a in both]} by "
            f"{[a.get('worker') for a in both]}",
            bool(aborts) and fig.get("key") == key and [a.get("epoch") for a in both] == [1, 2], [task],
            [a.get("seq") for a in both if a.get("seq")])
    if aborts:
        with h.monitor.lock:
            record = write_incident(aborts[0], h.monitor.agg, h.folder)
        text = record.read_text()
        h.check("incident record", f"{record.name}", "names rule 2, the key and both side effects",
                f"{'names' if key in text else 'lacks'} the key; {text.count('epoch ')} epochs named",
                key in text and "epoch 1 by worker s1" in text and "epoch 2 by worker s2" in text, [task])


@drill("guardrail-replan", "a task planned to spend 8 against a budget of 5",
       "it ends BLOCKED without spending (no completion); `ops replan --budget 10 --notes` runs it again; it "
       "ends DONE; the replan is in the log with actor and notes")
def guardrail_replan(h) -> None:
    task = h.enqueue("costly", {"work": 5.0, "spend": 8.0}, budget=5.0)
    h.worker("w1", H + "synthetic")
    h.wait(lambda: h.state(task) not in ("PENDING", "IN_PROGRESS"), 600)
    exceeded = h.events("guardrail_exceeded", task)
    blocked = h.events("blocked", task)
    ok = (h.state(task) == "BLOCKED" and len(blocked) == 1 and exceeded and all(e["blocked"] for e in exceeded)
          and not h.events("completed", task))
    h.check("blocked at the guardrail", "spend 8 > budget 5", "BLOCKED; guardrail_exceeded (blocked: true); "
            "no completion", f"{h.state(task)}; {len(exceeded)} exceeded "
            f"(blocked: {[e['blocked'] for e in exceeded]}); {len(h.events('completed', task))} completed",
            bool(ok), [task], [e["seq"] for e in exceeded + blocked + h.events("completed", task)])
    if h.state(task) != "BLOCKED":
        return
    t0 = h.now_t()
    notes = "drill: budget reviewed, raised to 10"
    out = _cli(h, "replan", "--id", task_name(task), "--notes", notes, "--budget", "10", "--actor",
               "drill-oncall", ops=True)
    h.actions.append({"action": "replan", "task": task_name(task), "actor": "drill-oncall", "notes": notes})
    h.check("ops replan", "`ops replan --budget 10 --notes ...` (a real process)", "exit 0, BLOCKED -> PENDING",
            f"exit {out.returncode}: {out.stdout.strip() or out.stderr.strip()}", out.returncode == 0, [task])
    h.wait(h.settled, 600)
    done = h.events("completed", task)
    replanned = h.events("replanned", task)
    ok = (h.state(task) == "DONE" and len(done) == 1 and len(replanned) == 1
          and replanned[0]["actor"] == "drill-oncall" and replanned[0]["notes"] == notes
          and replanned[0].get("budget") == 10.0)
    h.check("runs again and ends DONE", "after the replan", "DONE once; replanned with actor, notes, budget 10",
            f"{h.state(task)}; {len(done)} completed; replanned by "
            f"{[(e['actor'], e.get('budget')) for e in replanned]}", ok, [task],
            [e["seq"] for e in replanned + done])
    if done:
        h.recovery("ops replan -> DONE", done[0]["t"] - h.run.started_soak - t0)


@drill("db-lock-storm", "a second process holds the write lock past the busy timeout again and again (6 x 30 "
       "soak s), then once for 12 soak minutes while work waits",
       "work backs off as db_lock and nothing is lost; the stall rule (no transition 10 soak minutes) stays "
       "quiet through the storm and fires during the long hold", speed=240.0, abort={"stall": 600.0})
def db_lock_storm(h) -> None:
    h.expected_aborts = {3}
    tasks = h.enqueue_many([(f"t{i:02d}", {"work": 20.0}) for i in range(48)], max_attempts=5)
    for i in range(3):
        h.worker(f"w{i}", H + "probing", ttl=240.0)
    h.wait(lambda: h.events("completed"), 600)
    hog = h.spawn([sys.executable, "-m", "orchestrator.drills.lockhog", str(h.home.db),
                   *(["30", "15"] * 6)], "lockhog-storm")
    storm_start = h.now_t()
    hog.wait(60)
    storm_end = h.now_t()
    h.check("the storm happened", "6 holds of 30 soak s by a second process", "the hog exits 0 after 6 holds",
            f"exit {hog.returncode}; {_holds(h, 'lockhog-storm')} holds", hog.returncode == 0
            and _holds(h, "lockhog-storm") == 6)
    h.wait(h.settled, 3000)
    lock_retries = [e for e in h.events("retry_scheduled") if e["error"] == "db_lock"]
    states = {t: h.state(t) for t in tasks}
    h.check("work backs off as db_lock", "tasks write once with the busy timeout only (probing handler)",
            "retry_scheduled with class db_lock; every task DONE",
            f"{len(lock_retries)} db_lock retries; {sum(s == 'DONE' for s in states.values())} of {len(tasks)} DONE",
            bool(lock_retries) and all(s == "DONE" for s in states.values()),
            [t for t, s in states.items() if s != "DONE"], [e["seq"] for e in lock_retries[:5]])
    h.finish_log()
    early = [a for a in h.abort_rules() if a.rule == 3]
    h.check("no stall during the storm", f"storm from t={storm_start:.0f} to t={storm_end:.0f}",
            "the stall rule quiet", "fired at " + ", ".join(f"t={a.t:.0f}" for a in early) if early else "quiet",
            not early)
    waiting = h.enqueue("waiting", {"work": 3600.0})  # in progress through the whole hold
    h.wait(lambda: h.state(waiting) == "IN_PROGRESS", 600)
    hog = h.spawn([sys.executable, "-m", "orchestrator.drills.lockhog", str(h.home.db), "720", "0"], "lockhog-long")
    h.wait(lambda: (h.folder / "lockhog-long.out").exists() and "held" in (h.folder / "lockhog-long.out").read_text(),
           600)
    hold_start = h.now_t()
    hog.wait(60)
    hold_end = h.now_t()
    h.wait(lambda: [a for a in h.abort_rules() if a.rule == 3], 300)
    late = [a for a in h.abort_rules() if a.rule == 3]
    last = late[0].figures.get("last_transition_t") if late else None
    ok = bool(late) and last is not None and late[0].t - last >= 600 - 0.01 and late[0].t <= hold_end + 60
    h.check("stall rule fires in the long hold", f"a 720 soak s hold, t={hold_start:.0f}..{hold_end:.0f}",
            "rule 3 trips once no transition happened for 600 soak s, before the hold ends",
            f"rule 3 at t={late[0].t:.0f}, last transition t={last}" if late else "did not fire", ok,
            list(late[0].evidence) if late else [])
    if late:
        h.recovery("long hold start -> stall rule tripped", late[0].t - hold_start)
    h.operate("cancel", waiting, notes="drill: the task that waited through the hold")
    after = h.enqueue("after-the-hold", {"work": 10.0})
    h.wait(h.settled, 3000)
    h.check("work flows after the hold", "a task enqueued after the hold", "DONE", h.state(after),
            h.state(after) == "DONE", [after])


def _holds(h, name: str) -> int:
    path = h.folder / f"{name}.out"
    return sum(1 for line in path.read_text().splitlines() if line.startswith("released")) if path.exists() else 0
