"""Drills on how tasks end: poison tasks, every call timing out, partial success, error chaos."""

from __future__ import annotations

import random
from collections import Counter

from orchestrator.core.model import DETAIL_MAX
from orchestrator.drills.base import drill
from orchestrator.drills.handlers import EXPECTED_CLASS, UPSTREAM
from orchestrator.queue.tasks import task_name

H = "orchestrator.drills.handlers:"
TTL = 120.0  # soak seconds: 1 s of wall time at speed 120
ATTEMPTS = 3


def _workers(h, n: int, handler: str) -> None:
    for i in range(n):
        h.worker(f"w{i}", H + handler, ttl=TTL)


@drill("poison-task", "one task whose every attempt fails (HTTP 502), among 20 healthy ones",
       "it stops at max attempts and ends FAILED; the others keep flowing to DONE; the retry-storm "
       "grouping names it", speed=120.0)
def poison_task(h) -> None:
    healthy = h.enqueue_many([(f"ok-{i}", {"work": 5.0}) for i in range(20)], max_attempts=ATTEMPTS)
    poison = h.enqueue("poison", {"work": 5.0, "fail": "server_error"}, max_attempts=ATTEMPTS)
    _workers(h, 3, "outcome")
    h.wait(h.settled, 3000)
    failed = h.events("failed", poison)
    retries = h.events("retry_scheduled", poison)
    ok = (h.state(poison) == "FAILED" and len(failed) == 1 and failed[0]["attempt"] == ATTEMPTS
          and len(retries) == ATTEMPTS - 1)
    h.check("poison stops at max attempts", f"{ATTEMPTS} attempts allowed", f"FAILED at attempt {ATTEMPTS}, "
            f"{ATTEMPTS - 1} retries", f"{h.state(poison)}; attempt {failed[0]['attempt'] if failed else '-'}; "
            f"{len(retries)} retries", ok, [poison], [e["seq"] for e in failed + retries])
    states = Counter(h.state(t) for t in healthy)
    h.check("others keep flowing", "20 healthy tasks beside it", "all DONE", str(dict(states)),
            states["DONE"] == 20, [t for t in healthy if h.state(t) != "DONE"])
    h.finish_log()
    storms = h.figures()["retry_storms"]["groups"]
    named = [g for g in storms if task_name(poison) in g["examples"]]
    others = [t for g in storms for t in g["examples"] if t != task_name(poison)]
    h.check("retry-storm grouping names it", "SLI aggregator over the drill's log",
            "one storm group (server_error) naming the poison task, and only it",
            "; ".join(f"{g['cause']}: {g['tasks']} ({', '.join(g['examples'])})" for g in storms) or "no group",
            len(named) == 1 and named[0]["cause"].startswith("server_error") and not others, [poison, *others])


@drill("timeout-all", "every handler call times out (TimeoutError)",
       "every task ends FAILED with class `timeout` after its attempts; nothing stays IN_PROGRESS; "
       "nothing hangs", speed=120.0)
def timeout_all(h) -> None:
    tasks = h.enqueue_many([(f"t{i}", {"work": 10.0}) for i in range(12)], max_attempts=ATTEMPTS)
    _workers(h, 3, "always_timeout")
    settled = h.wait(h.settled, 3000)
    h.check("nothing hangs", "12 tasks, 3 workers", "no task PENDING or IN_PROGRESS within 50 soak minutes",
            str(h.states()), bool(settled), [t for t in tasks if h.state(t) in ("PENDING", "IN_PROGRESS")])
    bad, seqs = [], []
    for t in tasks:
        failed = h.events("failed", t)
        attempts = [e["error"] for e in h.events("retry_scheduled", t)] + [e["error"] for e in failed]
        row = h.queue.get(t)
        if not (row.state.value == "FAILED" and row.error == "timeout" and attempts == ["timeout"] * ATTEMPTS):
            bad.append(t)
            seqs += [e["seq"] for e in failed]
    h.check("every task FAILED as timeout", f"{ATTEMPTS} attempts each",
            f"FAILED, class timeout, {ATTEMPTS} timeout attempts per task",
            f"{len(tasks) - len(bad)} of {len(tasks)} as expected", not bad, bad, seqs)


@drill("partial-success", "100 tasks of which 63 succeed; the 37 others fail (bad parameters, unknown errors)",
       "exactly 63 DONE and 37 FAILED, and the per-class counts add up", speed=120.0)
def partial_success(h) -> None:
    rng = random.Random(h.seed)
    good = set(rng.sample(range(100), 63))
    plan = {i: None if i in good else rng.choice(("param_error", "unknown")) for i in range(100)}
    tasks = h.enqueue_many([(f"t{i:03d}", {"work": 2.0, "fail": plan[i]}) for i in range(100)],
                           max_attempts=ATTEMPTS)
    _workers(h, 4, "outcome")
    h.wait(h.settled, 3000)
    states = Counter(h.state(t) for t in tasks)
    h.check("63 of 100 succeed", "100 tasks, 63 planned to succeed", "63 DONE, 37 FAILED",
            f"{states['DONE']} DONE, {states['FAILED']} FAILED, {sum(states.values())} in all",
            states["DONE"] == 63 and states["FAILED"] == 37 and len(tasks) == 100,
            [t for i, t in enumerate(tasks) if (h.state(t) == "DONE") != (plan[i] is None)])
    planned = Counter(v for v in plan.values() if v)
    db = Counter(h.queue.get(t).error for t in tasks if h.state(t) == "FAILED")
    h.finish_log()
    final = {row["class"]: row["final"] for row in h.figures()["errors"] if row["final"]}
    ok = dict(db) == dict(planned) == final and sum(db.values()) == 37
    h.check("per-class counts add up", "FAILED tasks by class: plan, database, SLI error buckets",
            "the three agree and sum to 37", f"plan {dict(planned)}; database {dict(db)}; buckets {final}", ok,
            [t for i, t in enumerate(tasks) if plan[i] and h.queue.get(t).error != plan[i]])


@drill("error-chaos", "the handler raises a random mix of upstream-style errors with long, multi-line "
       "messages (HTTP 400/429/502/504, connection reset, socket timeout, KeyError, unknown)",
       "each maps to its class of the closed enum; no class is raw text; the detail is kept, shortened "
       "to one line of at most 200 characters", speed=120.0)
def error_chaos(h) -> None:
    rng = random.Random(h.seed)
    kinds = sorted(UPSTREAM)
    plan = [kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds) for i in range(40)]
    tasks = h.enqueue_many([(f"t{i:02d}", {"work": 2.0, "kind": k}) for i, k in enumerate(plan)], max_attempts=1)
    _workers(h, 3, "chaos")
    h.wait(h.settled, 3000)
    wrong, seen = [], Counter()
    for t, kind in zip(tasks, plan):
        row = h.queue.get(t)
        seen[(kind, row.error)] += 1
        if row.state.value != "FAILED" or row.error != EXPECTED_CLASS[kind]:
            wrong.append(t)
    h.check("each error maps to its class", f"{len(tasks)} tasks, {len(kinds)} kinds of error",
            "; ".join(f"{k} -> {EXPECTED_CLASS[k]}" for k in kinds),
            "; ".join(f"{k} -> {c} x{n}" for (k, c), n in sorted(seen.items(), key=str)), not wrong, wrong,
            [e["seq"] for t in wrong for e in h.events("failed", t)])
    bad_detail = [e for t in tasks for e in h.events("failed", t)
                  if not e.get("detail") or len(e["detail"]) > DETAIL_MAX or "\n" in e["detail"]]
    h.check("detail kept, shortened", "the raw message of each failure", "non-empty, one line, <= 200 chars",
            f"{len(tasks) - len(bad_detail)} of {len(tasks)} details well-formed", not bad_detail,
            [e["task"] for e in bad_detail], [e["seq"] for e in bad_detail])
