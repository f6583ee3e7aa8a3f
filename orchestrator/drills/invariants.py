"""The invariants every drill checks afterwards, against the database and the drill's JSONL log.

Each returns one `Check` (a row of the report's invariant table) with its evidence: the task ids
and event seqs that break it. The scope is the drill's own log (from its run's first seq) and the
tasks it enqueued (keys under its prefix).
"""

from __future__ import annotations

from collections import defaultdict

from orchestrator.core.errors import UnknownTask
from orchestrator.core.model import DETAIL_MAX, ErrorClass
from orchestrator.drills.base import Check, Evidence
from orchestrator.queue.tasks import task_name

CLASSES = frozenset(e.value for e in ErrorClass)
END_STATES = ("DONE", "FAILED", "BLOCKED", "CANCELLED")
OPERATOR_EVENTS = frozenset({"cancelled", "replanned", "retried", "closed_done", "closed_failed"})


def _row(name: str, expected: str, observed: str, bad_tasks=(), bad_seqs=(), note: str = "") -> Check:
    ev = Evidence(tuple(bad_tasks), tuple(bad_seqs), note)
    return Check(name, "checked after the drill", expected, observed, not bad_tasks and not bad_seqs and not note, ev)


def no_duplicate_execution(events: list[dict], effects: dict[str, int]) -> Check:
    """At most one `completed` per key in the log; the effects table agrees (one row per key
    that completed, written by the task that completed)."""
    completed: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e["event"] == "completed":
            completed[e["key"]].append(e)
    bad = {k: v for k, v in completed.items() if len(v) > 1}
    tasks = sorted({e["task"] for v in bad.values() for e in v})
    seqs = sorted(e["seq"] for v in bad.values() for e in v)
    missing = sorted(k for k in completed if effects.get(k, 0) != 1)
    note = f"keys whose effect row is missing: {', '.join(missing[:5])}" if missing else ""
    total = sum(len(v) for v in completed.values())
    return _row("no duplicate execution", "at most one `completed` (one effect) per idempotency key",
                f"{len(completed)} keys completed, {total} `completed` events, {len(bad)} keys twice",
                tasks, seqs, note)


def nothing_lost(events: list[dict], db_states: dict[str, str], expect_settled: bool = True) -> Check:
    """Every enqueued key is one task in one state, the log's last state of each task is the
    database's, and after the drill enqueued = DONE + FAILED + BLOCKED + CANCELLED."""
    last: dict[str, dict] = {}
    enqueued: list[str] = []
    for e in events:
        if e["event"] == "enqueued":
            enqueued.append(e["task"])
        if e.get("task") and e.get("state"):
            last[e["task"]] = e
    counts = {s: 0 for s in (*END_STATES, "PENDING", "IN_PROGRESS")}
    for state in db_states.values():
        counts[state] = counts.get(state, 0) + 1
    bad_tasks, bad_seqs = [], []
    for task, state in db_states.items():
        e = last.get(task)
        if e is None or e["state"] != state:
            bad_tasks.append(task)
            if e is not None:
                bad_seqs.append(e["seq"])
    unknown = sorted(set(enqueued) - set(db_states))
    bad_tasks += unknown
    open_tasks = [t for t, s in db_states.items() if s in ("PENDING", "IN_PROGRESS")] if expect_settled else []
    bad_tasks += open_tasks
    ended = sum(counts[s] for s in END_STATES)
    if len(enqueued) != len(set(enqueued)) or (expect_settled and ended != len(set(enqueued))):
        bad_tasks.append("(count)")
    summary = " + ".join(f"{counts[s]} {s}" for s in END_STATES)
    observed = f"enqueued {len(set(enqueued))} = {summary} = {ended}"
    if open_tasks:
        observed += f"; {len(open_tasks)} still open"
    return _row("nothing lost", "enqueued = DONE + FAILED + BLOCKED + CANCELLED; log and database agree",
                observed, sorted(set(bad_tasks)), bad_seqs)


def gap_free(events: list[dict], first_seq: int, db_events: list[tuple[int, str]]) -> Check:
    """The log's seqs run from the run's first seq without a gap, and equal the event table."""
    seqs = [e["seq"] for e in events]
    missing, seen, expect = [], set(), first_seq
    for s in seqs:
        if s != expect:
            missing.extend(range(expect, s) if s > expect else [s])
        expect = max(expect, s + 1)
        seen.add(s)
    if not seqs:
        missing = [first_seq]  # no log at all: nothing can be shown to be whole
    log_pairs = [(e["seq"], e["event"]) for e in events]
    differ = sorted({s for s, _ in set(log_pairs) ^ set(db_events)})
    bad = sorted(set(missing) | set(differ))
    return _row("events gap-free", "log seqs contiguous from the run's first seq, equal to the event table",
                f"{len(seqs)} events, seq {seqs[0] if seqs else '-'}..{seqs[-1] if seqs else '-'}, "
                f"{len(missing)} missing, {len(differ)} differ from the table", (), bad)


def operator_actions_recorded(events: list[dict], actions: list[dict]) -> Check:
    """Each action the drill took is one event with its actor and notes; every operator event in
    the log names an actor."""
    from orchestrator.core.model import ACTION_EVENTS

    pool = [e for e in events if e["event"] in OPERATOR_EVENTS]
    unnamed = [e["seq"] for e in pool if not e.get("actor")]
    missing = []
    used: set[int] = set()
    for act in actions:
        match = next((e for e in pool if e["seq"] not in used and e["event"] == ACTION_EVENTS[act["action"]]
                      and e["task"] == act["task"] and e.get("actor") == act["actor"]
                      and e.get("notes") == act["notes"]), None)
        if match is None:
            missing.append(act["task"])
        else:
            used.add(match["seq"])
    return _row("every operator action recorded", "one event per action, with actor and notes",
                f"{len(actions)} actions taken, {len(used)} found in the log, {len(pool)} operator events",
                missing, unnamed)


def classes_closed(events: list[dict], db_errors: dict[str, str | None]) -> Check:
    """Every `error` in the log and the database is a class of the closed enum; raw text is only
    ever `detail`, on one line and at most 200 characters."""
    bad_seqs = [e["seq"] for e in events if e.get("error") is not None and e["error"] not in CLASSES]
    long = [e["seq"] for e in events
            if isinstance(e.get("detail"), str) and (len(e["detail"]) > DETAIL_MAX or "\n" in e["detail"])]
    bad_tasks = [t for t, err in db_errors.items() if err is not None and err not in CLASSES]
    classes = sorted({e["error"] for e in events if e.get("error")})
    return _row("no raw upstream error text used as a class", "error in the closed enum; detail <= 200 chars, one line",
                f"classes seen: {', '.join(classes) or 'none'}", bad_tasks, sorted(set(bad_seqs + long)))


def no_unsafe_hooks(hooks: list[str]) -> Check:
    return _row("no test-only unsafe hook active", "no ORCH_TEST_UNSAFE_* variable set",
                ", ".join(hooks) or "none", (), (), f"set: {', '.join(hooks)}" if hooks else "")


def abort_rules(aborts: list, expected: set[int]) -> Check:
    fired = sorted({a.rule for a in aborts})
    unexpected = [a for a in aborts if a.rule not in expected]
    tasks = sorted({t for a in unexpected for t in a.evidence})
    note = "; ".join(f"rule {a.rule} ({a.name}) at t={a.t:.0f}" for a in unexpected)
    return _row("abort rules (live SLI aggregator)",
                "none fired" if not expected else f"only rule(s) {sorted(expected)}",
                f"fired: {fired or 'none'}", tasks, (), note)


def check_all(h) -> list[Check]:
    """The invariant table of one drill run (after `Harness.finish`)."""
    events = h.log_events()
    db_states, db_errors, effects = {}, {}, {}
    for task in h.tasks:
        try:
            row = h.queue_ro.get(task)
        except UnknownTask:
            continue
        db_states[task_name(task)] = row.state.value
        db_errors[task_name(task)] = row.error
        effects[row.key] = 1 if h.queue_ro.effect_of(row.key) is not None else 0
    db_events = [(r["seq"], r["event"]) for r in h.db_events()]
    keys = {e["key"] for e in events if e["event"] == "enqueued"}
    mine = [e for e in events if e.get("key") is None or e["key"] in keys or e["key"].startswith(h.prefix)]
    return [
        no_duplicate_execution(mine, effects),
        nothing_lost([e for e in mine if e.get("task") is None or e["task"] in db_states or e["event"] == "enqueued"],
                     db_states, h.expect_settled),
        gap_free(events, h.first_seq, db_events),
        operator_actions_recorded(events, h.actions),
        classes_closed(mine, db_errors),
        abort_rules(h.abort_rules(), h.expected_aborts),
        _row("the monitor read the whole log", "no error while shipping, reading and aggregating the log",
             (h.monitor.error if h.monitor else None) or "none", (), (),
             (h.monitor.error if h.monitor else None) or ""),
        no_unsafe_hooks(h.unsafe),
    ]
