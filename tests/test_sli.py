"""SLI maths, abort rules and the log reader, on hand-made logs with known answers."""

from __future__ import annotations

import copy

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sli_logs import LogBuilder

from orchestrator.core.errors import LogError
from orchestrator.judge import aborts
from orchestrator.judge.sli import Abort, Aggregator, LogTail, aggregate_file, log_abort
from orchestrator.judge.state import SILENCE_WALL_FLOOR


def tasks_with_latencies(b: LogBuilder, latencies, start: float = 10.0, gap: float = 5.0) -> list[str]:
    out = []
    for i, lat in enumerate(latencies):
        t0 = start + i * gap
        out.append(b.run_task(t0, wait=lat / 2, work=lat / 2))
    return out


# --- SLI maths ------------------------------------------------------------------------------
def test_latency_percentiles_equal_numpy_with_ties():
    b = LogBuilder()
    lat = [3.0, 5.0, 5.0, 5.0, 7.0, 11.0, 13.0, 2.0, 2.0, 5.0]
    tasks_with_latencies(b, lat)
    f = b.aggregator().figures()
    expect = np.array(lat)
    assert f["sli2"]["tasks"] == 10
    for q in (50, 95, 99):
        assert f["sli2"][f"p{q}"] == pytest.approx(float(np.percentile(expect, q)), abs=1e-9)
    assert f["sli2"]["max"] == 13.0
    assert f["sli1"] == {"done": 10, "failed": 0, "success": 1.0, "manual_done": 0, "manual_failed": 0}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=0.002, max_value=900.0, allow_nan=False), min_size=1, max_size=60))
def test_p95_is_numpy_percentile_over_all_terminal_latencies(lat):
    b = LogBuilder()
    lat = [round(x, 3) for x in lat]
    tasks = tasks_with_latencies(b, lat, gap=1.0)
    agg = b.aggregator()
    # the exact latencies the log implies (t is rounded to 3 decimals in the log)
    ev = {(e["task"], e["event"]): e["t"] for e in b.events}
    expect = np.array([ev[(t, "completed")] - ev[(t, "enqueued")] for t in tasks])
    assert agg.figures()["sli2"]["p95"] == float(np.percentile(expect, 95))


def test_latency_runs_from_the_planned_arrival_and_the_arrival_lag_is_its_own_figure():
    b = LogBuilder()  # one burst window in the manifest: [1800, 2100)
    late = b.enqueue(100.0, planned=40.0)  # enqueued 60 s after it should have arrived
    b.lease(late, 101.0)
    b.complete(late, 130.0)
    by_hand = b.enqueue(200.0)  # no plan: from its enqueue
    b.lease(by_hand, 201.0)
    b.complete(by_hand, 210.0)
    in_burst = b.enqueue(1900.0, planned=1850.0)
    b.lease(in_burst, 1901.0)
    b.complete(in_burst, 1905.0)
    f = b.aggregator().figures()
    assert f["sli2"]["tasks"] == 3 and f["sli2"]["max"] == 90.0 and f["sli2"]["p50"] == 55.0
    lag = f["arrival_lag"]
    assert (lag["tasks"], lag["p50"], lag["max"]) == (2, 55.0, 60.0)
    assert lag["bursts"] == [{"start": 1800.0, "end": 2100.0, "arrivals": 1, "p95": 50.0, "max": 50.0}]


def test_arrivals_due_while_the_supervisor_was_gone_count_the_gap_in_their_latency():
    b = LogBuilder()
    b.run_task(10.0)
    b.ev(900.0, "run_resumed", gap=850.0, old_pid=4242)  # the supervisor was gone from t=50 to t=900
    missed = b.enqueue(900.5, planned=500.0)
    b.lease(missed, 901.0)
    b.complete(missed, 903.0)
    f = b.aggregator().figures()
    assert f["sli2"]["max"] == 403.0 and f["arrival_lag"]["max"] == 400.5


def test_a_planned_t_that_is_not_a_number_is_a_malformed_event():
    b = LogBuilder()
    b.enqueue(1.0, planned="soon")
    with pytest.raises(LogError, match="planned_t is not a number"):
        b.aggregator()


def test_empty_log_has_no_figures_and_fails_its_slos():
    agg = LogBuilder().aggregator()
    f = agg.figures()
    assert f["sli1"]["success"] is None and f["sli2"]["p95"] is None and f["sli3"]["rate"] is None
    assert f["moving"]["judged"] == 0 and f["series"]["p95"] == []
    # nothing was proven: every SLO is "not exercised", none passes, and the run cannot PASS
    assert [(row["pass"], row["status"], row["required"]) for row in f["slo"]] == [(None, "not exercised", True)] * 3
    assert agg.verdict() == "FAIL"
    assert agg.check(0.0) == []


def test_open_tasks_at_the_end_are_not_in_sli1_or_sli2():
    b = LogBuilder()
    tasks_with_latencies(b, [4.0, 4.0, 4.0])
    leased = b.enqueue(100.0)
    b.lease(leased, 101.0)
    b.enqueue(102.0)
    f = b.aggregator().figures()
    assert f["sli1"]["done"] == 3 and f["sli1"]["failed"] == 0
    assert f["sli2"]["tasks"] == 3
    assert f["states"]["open"] == 2 and f["states"]["PENDING"] == 1 and f["states"]["IN_PROGRESS"] == 1
    assert f["states"]["enqueued"] == 5


def test_manual_closes_count_by_state_and_are_listed():
    b = LogBuilder()
    a = b.enqueue(10.0)
    b.operator("done", a, 40.0, actor="alice", notes="incident mitigated")
    c = b.enqueue(20.0)
    b.lease(c, 21.0)
    b.operator("fail", c, 60.0, actor="bob", notes="persistent failure; action required")
    agg = b.aggregator()
    f = agg.figures()
    assert f["sli1"] == {"done": 1, "failed": 1, "success": 0.5, "manual_done": 1, "manual_failed": 1}
    assert f["sli2"]["tasks"] == 2 and f["sli2"]["max"] == 40.0 and f["sli2"]["p50"] == 35.0
    manual = [(m["event"], m["task"], m["actor"], m["notes"]) for m in f["operator"]["manual"]]
    assert manual == [("closed_done", a, "alice", "incident mitigated"),
                      ("closed_failed", c, "bob", "persistent failure; action required")]
    assert f["sli4"]["actual"] == 0 and a not in str(agg.state.completed_keys)
    assert {"class": "operator", "transient": False, "events": 1, "tasks": 0, "final": 1} in f["errors"]


def test_blocked_at_the_end_is_on_its_own_line():
    b = LogBuilder()
    tasks_with_latencies(b, [2.0, 2.0])
    g = b.enqueue(50.0)
    b.lease(g, 51.0)
    b.guardrail(g, 52.0)
    agg = b.aggregator()
    f = agg.figures()
    assert f["states"]["BLOCKED"] == 1 and f["guardrail"]["blocked_at_end"] == 1
    assert f["sli1"]["done"] == 2 and f["sli1"]["failed"] == 0 and f["sli2"]["tasks"] == 2
    assert f["guardrail"]["exceeded"] == 1 and f["guardrail"]["unresolved"] == []
    assert agg.aborts == []


def test_idempotency_skips_and_stale_rejections_are_dispatches_not_duplicates():
    b = LogBuilder()
    a = b.enqueue(10.0)
    b.lease(a, 11.0)
    b.skip(a, 12.0)
    c = b.enqueue(20.0)
    b.lease(c, 21.0)
    b.expire(c, 60.0)
    b.stale(c, 61.0, call="complete")
    b.stale(c, 62.0, call="heartbeat")
    b.lease(c, 70.0)
    b.complete(c, 72.0)
    b.dup_enqueue(c, 80.0)
    f = b.aggregator().figures()
    assert f["sli4"]["actual"] == 0
    assert f["sli4"]["breakdown"] == {"duplicate_enqueue": 1, "stale_complete": 1, "idempotency_skip": 1,
                                      "re_lease": 1}
    assert f["sli4"]["dispatches"] == 4 and f["sli4"]["ratio"] == 0.0
    assert f["sli4"]["stale_by_call"] == {"complete": 1, "heartbeat": 1}
    assert f["sli1"]["done"] == 2


def test_lease_timeout_recovery_judges_only_settled_or_stuck_tasks():
    b = LogBuilder(speed=AT_PROFILE_THRESHOLDS)
    rec = b.enqueue(10.0)  # expired, re-leased, DONE: recovered
    b.lease(rec, 11.0)
    b.expire(rec, 45.0)
    b.lease(rec, 46.0)
    b.complete(rec, 48.0)
    spent = b.enqueue(20.0)  # expired with attempts spent: FAILED by policy, recovered
    b.lease(spent, 21.0)
    b.expire(spent, 55.0, spent=True)
    manual = b.enqueue(30.0)  # expired, then closed by an operator: not recovered by policy
    b.lease(manual, 31.0)
    b.expire(manual, 65.0)
    b.operator("fail", manual, 70.0)
    stuck = b.enqueue(40.0)  # expired and never leased again for > stall (600 s): stuck
    b.lease(stuck, 41.0)
    b.expire(stuck, 75.0)
    late = b.enqueue(1000.0)  # expired shortly before the end: still recovering, not judged
    b.lease(late, 1001.0)
    b.expire(late, 1035.0)
    keep_alive = b.enqueue(1040.0)
    b.lease(keep_alive, 1041.0)
    b.complete(keep_alive, 1043.0)
    f = b.aggregator().figures()
    lr = f["lease_recovery"]
    assert (lr["expirations"], lr["tasks"], lr["done"], lr["failed"], lr["operator"], lr["stuck"],
            lr["recovering"]) == (5, 5, 1, 1, 1, 1, 1)
    assert lr["rate"] == pytest.approx(2 / 4)
    assert f["sli4"]["breakdown"]["re_lease"] == 1


def test_sli3_and_retry_storm_groups():
    b = LogBuilder()
    ok = b.enqueue(10.0)
    b.lease(ok, 11.0)
    b.retry(ok, 12.0, "network", 60.0)
    b.lease(ok, 72.0)
    b.complete(ok, 74.0)
    storm = b.enqueue(20.0)
    t = 21.0
    for attempt, error in enumerate(["timeout", "network", "timeout"], 1):
        b.lease(storm, t)
        b.retry(storm, t + 1, error, 60.0)
        t += 62
    b.lease(storm, t)
    b.fail(storm, t + 1, "timeout")
    permanent = b.enqueue(30.0)
    b.lease(permanent, 31.0)
    b.fail(permanent, 32.0, "param_error")
    f = b.aggregator().figures()
    assert f["sli3"] == {"tasks": 2, "done": 1, "failed": 1, "rate": 0.5, "still_open": 0}
    assert f["retry_storms"]["tasks"] == 1
    assert f["retry_storms"]["groups"] == [{"cause": "timeout (also network)", "tasks": 1, "examples": [storm]}]
    buckets = {r["class"]: (r["events"], r["tasks"], r["final"]) for r in f["errors"]}
    assert buckets == {"timeout": (3, 1, 1), "network": (2, 2, 0), "param_error": (1, 1, 1)}


def test_a_failed_task_retried_by_an_operator_counts_once_with_its_last_terminal_time():
    b = LogBuilder()
    a = b.enqueue(10.0)
    b.lease(a, 11.0)
    b.fail(a, 12.0, "param_error")
    assert b.aggregator().figures()["sli1"]["failed"] == 1
    b.operator("retry", a, 100.0, actor="alice", notes="fixed the parameter")
    b.lease(a, 101.0)
    b.complete(a, 105.0)
    agg = b.aggregator()
    f = agg.figures()
    assert f["sli1"]["done"] == 1 and f["sli1"]["failed"] == 0
    assert f["sli2"]["tasks"] == 1 and f["sli2"]["max"] == 95.0
    assert agg.state.reopenable == {} and agg.state.open == {}


def test_per_task_state_is_dropped_when_a_task_ends():
    b = LogBuilder()
    tasks_with_latencies(b, [2.0] * 50)
    failed = b.enqueue(400.0)
    b.lease(failed, 401.0)
    b.fail(failed, 402.0)
    agg = b.aggregator()
    assert agg.state.open == {} and list(agg.state.reopenable) == [failed]
    assert len(agg.state.completed_keys) == 50


def test_moving_success_series_and_checkpoint_windows():
    b = LogBuilder(checkpoint_every=3600.0, abort={"min_volume": 3})
    for i in range(4):  # minute 0..3: one DONE each
        b.run_task(i * 60 + 1.0, wait=1, work=1)
    bad = b.enqueue(250.0)  # minute 4: one FAILED
    b.lease(bad, 251.0)
    b.fail(bad, 252.0)
    late = b.run_task(3700.0, wait=1, work=1)  # second hour
    f = b.aggregator().figures()
    moving = dict(zip(f["series"]["moving_t"], f["series"]["moving"]))
    assert moving[60.0] is None and moving[120.0] is None  # below min_volume
    assert moving[180.0] == 1.0 and moving[300.0] == pytest.approx(4 / 5)
    assert moving[1800.0] == pytest.approx(4 / 5) and moving[1860.0] == pytest.approx(3 / 4)
    assert moving[1920.0] == pytest.approx(2 / 3) and moving[1980.0] is None  # 2 tasks left in the window
    assert (f["moving"]["lowest"], f["moving"]["lowest_t"]) == (pytest.approx(2 / 3), 1920.0)
    windows = f["checkpoints"]["windows"]
    assert [(w["arrivals"], w["done"], w["failed"]) for w in windows] == [(5, 4, 1), (1, 1, 0)]
    assert windows[0]["success"] == pytest.approx(0.8) and windows[1]["cum_success"] == pytest.approx(5 / 6)
    assert windows[0]["errors"] == {"param_error": 1} and windows[1]["partial"]
    assert late in b.tasks


def test_unknown_events_are_counted_not_fatal():
    b = LogBuilder()
    b.ev(5.0, "something_new", None)
    b.run_task(10.0)
    f = b.aggregator().figures()
    assert f["run"]["unknown_events"] == {"something_new": 1} and f["sli1"]["done"] == 1


# --- abort rules ------------------------------------------------------------------------------
def window_of(b: LogBuilder, done: int, failed: int, start: float = 10.0) -> list[str]:
    failures = []
    for i in range(done + failed):
        task = b.enqueue(start + i * 20)
        b.lease(task, start + i * 20 + 1)
        if i < failed:
            b.fail(task, start + i * 20 + 2)
            failures.append(task)
        else:
            b.complete(task, start + i * 20 + 2)
    return failures


def test_rule1_trips_when_the_window_holds_enough_tasks_below_the_line():
    b = LogBuilder()
    failures = window_of(b, done=18, failed=2)  # 90 % over 20 tasks
    b.run_task(500.0)  # crosses the next minute boundaries
    agg = b.aggregator()
    found = agg.check(500.0)
    assert [a.rule for a in found] == [1]
    abort = found[0]
    assert abort.name == "moving_success" and abort.t == 420.0
    assert abort.figures["done"] == 18 and abort.figures["failed"] == 2 and abort.figures["success"] == 0.9
    assert abort.evidence == failures
    assert agg.check(600.0) == []  # each rule trips once


@pytest.mark.parametrize("done,failed", [(19, 1), (10, 5)])  # 95 % is not below 95 %; 15 tasks < min_volume
def test_rule1_does_not_trip_at_the_line_or_below_min_volume(done, failed):
    b = LogBuilder()
    window_of(b, done=done, failed=failed)
    b.run_task(1000.0)
    agg = b.aggregator()
    assert agg.check(1000.0) == [] and agg.aborts == []


def test_rule2_trips_on_a_second_completed_for_a_key():
    b = LogBuilder()
    # a duplicate effect row forced past the guard (test-only); no side effect reported
    first = b.run_task(10.0, key="same-key", side_effect=False)
    second = b.run_task(20.0, key="same-key", side_effect=False)
    b.run_task(30.0, key="other")
    third = b.run_task(40.0, key="same-key", side_effect=False)
    agg = b.aggregator()
    found = agg.check(50.0)
    assert [(a.rule, a.name, a.evidence, a.t) for a in found] == [(2, "duplicate_execution", [second], 23.0)]
    assert agg.figures()["sli4"]["actual"] == 1 and agg.figures()["sli4"]["extra_executions"] == 2
    assert first != third


# At this speed the silence floor (SILENCE_WALL_FLOOR wall seconds = 360 soak s) is below the
# profile's stall (600 s) and log gap (900 s): those apply as written.
AT_PROFILE_THRESHOLDS = 720.0


def test_silence_rules_are_never_shorter_than_the_wall_floor_at_the_run_speed():
    assert SILENCE_WALL_FLOOR * AT_PROFILE_THRESHOLDS < 600.0
    fast = LogBuilder(speed=4320.0)  # 600 / 900 soak s would be 139 / 208 ms of wall time
    fast.run_task(10.0)
    agg = fast.aggregator()
    floor = SILENCE_WALL_FLOOR * 4320.0
    assert (agg.settings.stall, agg.settings.log_gap) == (floor, floor)
    last = fast.seq - 1
    assert agg.check(100.0, db_last_seq=last) == []
    assert agg.check(100.0 + 900.0, db_last_seq=last + 3) == []  # the log lags 900 s: not yet
    assert [(a.rule, a.figures["log_gap"]) for a in agg.check(100.0 + floor, db_last_seq=last + 3)] == [(5, floor)]
    slow = LogBuilder(speed=1.0)
    assert (slow.aggregator().settings.stall, slow.aggregator().settings.log_gap) == (600.0, 900.0)


def test_rule3_trips_on_a_stall_while_work_waits_offline_and_live():
    b = LogBuilder(speed=AT_PROFILE_THRESHOLDS)
    b.run_task(10.0)
    waiting = b.enqueue(100.0)  # last transition at t=100, nothing leases it
    agg = b.aggregator()
    assert agg.check(650.0, db_last_seq=b.seq - 1) == []
    found = agg.check(700.0, db_last_seq=b.seq - 1)
    assert [(a.rule, a.t, a.evidence) for a in found] == [(3, 700.0, [waiting])]
    # the same log replayed: the next event (a checkpoint at 800) shows the stall
    b.ev(800.0, "checkpoint", None, counts={}, in_flight=0)
    replay = b.aggregator()
    assert [(a.rule, a.t) for a in replay.check(800.0)] == [(3, 700.0)]


@pytest.mark.parametrize("after_the_gap", ["run_resumed", "worker_exited"])
def test_rule3_does_not_judge_the_gap_a_resume_reports(after_the_gap):
    """A supervisor gone longer than the stall window (its crashed worker's lease left for its
    reaper): the gap is reported by `run_resumed`, which the new supervisor writes before
    anything else. Any other event first after the gap shows the stall."""
    b = LogBuilder(speed=AT_PROFILE_THRESHOLDS)
    held = b.enqueue(100.0)
    b.lease(held, 101.0)  # its worker dies with the supervisor: nothing reaps the lease
    b.ev(5000.0, after_the_gap, None, **({"gap": 4899.0, "old_pid": 4242} if after_the_gap == "run_resumed"
                                         else {"reason": "stopped"}))
    agg = b.aggregator()
    found = [(a.rule, a.t) for a in agg.check(5000.0, db_last_seq=b.seq - 1)]
    if after_the_gap == "run_resumed":
        assert found == [] and agg.state.resumes[0]["gap"] == 4899.0
        # the stall window runs again from the resume
        assert agg.check(5599.0, db_last_seq=b.seq - 1) == []
        assert [(a.rule, a.t) for a in agg.check(5600.0, db_last_seq=b.seq - 1)] == [(3, 5600.0)]
    else:
        assert found == [(3, 701.0)]


def test_rule3_waits_for_the_log_when_the_database_is_ahead():
    b = LogBuilder(speed=AT_PROFILE_THRESHOLDS)
    b.enqueue(100.0)
    agg = b.aggregator()
    assert agg.check(900.0, db_last_seq=b.seq + 5) == []  # the log lags: rule 5's business


def test_rule3_does_not_trip_when_only_blocked_or_backoff_work_waits():
    b = LogBuilder(speed=AT_PROFILE_THRESHOLDS)
    g = b.enqueue(10.0)
    b.lease(g, 11.0)
    b.guardrail(g, 12.0)
    r = b.enqueue(20.0)
    b.lease(r, 21.0)
    b.retry(r, 22.0, "timeout", 600.0)  # due at 622
    agg = b.aggregator()
    assert agg.check(1200.0) == []  # waiting since 622: 578 s
    assert [(a.rule, a.t) for a in agg.check(1222.0)] == [(3, 1222.0)]


def test_rule4_trips_when_an_exceed_is_not_followed_by_its_block():
    b = LogBuilder()
    g = b.enqueue(10.0)
    b.lease(g, 11.0)
    b.guardrail(g, 12.0, block=False)
    b.complete(g, 13.0)
    found = b.aggregator().check(20.0)
    assert [(a.rule, a.name, a.evidence) for a in found] == [(4, "guardrail_not_blocked", [g])]
    assert found[0].figures["next_event"] == "completed"


def test_rule4_trips_on_blocked_false_and_after_the_grace():
    b = LogBuilder()
    g = b.enqueue(10.0)
    b.lease(g, 11.0)
    b.ev(12.0, "guardrail_exceeded", g, error="guardrail", spend=2.0, budget=1.0, blocked=False)
    assert [a.rule for a in b.aggregator().check(12.0)] == [4]
    b2 = LogBuilder()
    h = b2.enqueue(10.0)
    b2.lease(h, 11.0)
    b2.guardrail(h, 12.0, block=False)
    agg = b2.aggregator()
    assert agg.check(60.0, db_last_seq=b2.seq - 1) == []
    assert [(a.rule, a.t) for a in agg.check(130.0, db_last_seq=b2.seq - 1)] == [(4, 120.0)]


def test_rule5_trips_on_a_seq_gap_at_once():
    b = LogBuilder()
    b.run_task(10.0, side_effect=False)  # seqs 1-3
    b.seq += 2  # two events lost between the database and the log
    b.run_task(20.0)
    found = b.aggregator().check(25.0)
    assert [(a.rule, a.name) for a in found] == [(5, "log_missing")]
    assert found[0].figures["expected"] == 4 and found[0].figures["got"] == 6


def test_rule5_trips_when_the_log_stops_while_the_database_moves_on():
    b = LogBuilder(speed=AT_PROFILE_THRESHOLDS)
    b.run_task(10.0)
    agg = b.aggregator()
    last = b.seq - 1
    assert agg.check(100.0, db_last_seq=last) == []
    assert agg.check(900.0, db_last_seq=last + 40) == []  # 800 s of silence
    found = agg.check(1000.0, db_last_seq=last + 90)
    assert [(a.rule, a.t) for a in found] == [(5, 1000.0)]
    assert found[0].figures["behind_by"] == 90 and found[0].figures["silent_for"] == 900.0


def test_log_abort_helper_and_abort_record():
    abort = log_abort("soak.jsonl: line 7: not valid JSON", 321.0, line=7)
    assert abort == Abort(5, "log_missing", {"reason": "soak.jsonl: line 7: not valid JSON", "line": 7}, [], 321.0)
    assert abort.to_event() == {"rule": 5, "name": "log_missing", "figures": abort.figures, "evidence": []}


def healthy(b: LogBuilder, hours: float = 2.0) -> None:
    rng = np.random.default_rng(3)
    t = 5.0
    i = 0
    while t < hours * 3600:
        i += 1
        task = b.enqueue(t)
        b.lease(task, t + 0.5)
        if i % 25 == 0:
            b.retry(task, t + 1.0, "timeout", 60.0)
            b.lease(task, t + 61.0)
            b.complete(task, t + 63.0)
        elif i % 97 == 0:
            b.guardrail(task, t + 1.0)
            b.operator("replan", task, t + 601.0, actor="oncall-sim")
            b.lease(task, t + 602.0)
            b.complete(task, t + 604.0)
        else:
            b.complete(task, t + 0.5 + float(rng.uniform(1, 3)))
        if i % 50 == 0:
            b.dup_enqueue(task, t + 10.0)
        t += float(rng.exponential(12.0))
    b.events.sort(key=lambda e: e["t"])
    for seq, e in enumerate(b.events, b.header["first_seq"]):
        e["seq"] = seq
    b.seq = b.header["first_seq"] + len(b.events)


def test_no_rule_trips_on_a_healthy_run():
    b = LogBuilder()
    healthy(b)
    b.finish(7300.0)
    agg = b.aggregator()
    assert agg.check(7300.0, db_last_seq=b.seq - 1) == [] and agg.aborts == []
    assert agg.verdict() == "PASS"


def test_headline_is_the_figures_success_p95_and_faults_without_building_them():
    b = LogBuilder()
    healthy(b, hours=1.0)
    lost = b.enqueue(3700.0)
    b.lease(lost, 3701.0)
    b.fault(3702.0, "timeout", task=lost)
    b.fail(lost, 3702.0, "param_error")
    b.fault(3703.0, "persistent", task=lost)  # not counted as injected (its row has None)
    b.fault(3704.0, "worker_crash", worker="w2")
    b.enqueue(3705.0)  # still open
    agg = b.aggregator()
    f = agg.figures()
    head = agg.headline()
    assert head == {"success": f["sli1"]["success"], "p95": f["sli2"]["p95"],
                    "faults": sum(row["injected"] or 0 for row in f["faults"])}
    assert head["faults"] == 2 and 0 < head["success"] < 1


def test_live_reading_in_pieces_gives_the_offline_figures(tmp_path):
    b = LogBuilder(abort={"min_volume": 5})
    healthy(b, hours=1.0)
    window_of(b, done=4, failed=3, start=5500.0)  # alone in its window: 4/7 over >= 5 tasks
    b.run_task(6000.0)
    b.finish(6100.0)
    path = tmp_path / "soak.jsonl"
    data = b"".join(b.lines())
    rng = np.random.default_rng(7)
    cuts = sorted(set(rng.integers(1, len(data), 40).tolist())) + [len(data)]
    tail, agg, live_aborts, written = LogTail(path), None, [], 0
    path.write_bytes(b"")
    for cut in cuts:
        with open(path, "ab") as fh:
            fh.write(data[written:cut])
        written = cut
        for event in tail.read():
            if agg is None:
                agg = Aggregator(event)
            else:
                agg.feed(event)
        if agg is not None:
            live_aborts += agg.check(agg.state.last_t, db_last_seq=agg.state.last_seq)
    offline = aggregate_file(path)
    assert agg.figures() == offline.figures()
    assert [a.rule for a in live_aborts] == [1] and live_aborts == offline.check(offline.state.last_t)


# --- the log reader ---------------------------------------------------------------------------
def test_logtail_leaves_a_partial_last_line_for_the_next_read(tmp_path):
    path = tmp_path / "soak.jsonl"
    lines = LogBuilder().lines()
    path.write_bytes(lines[0] + b'{"seq": 1, "t": 1.0, "ev')
    tail = LogTail(path)
    assert [e["event"] for e in tail.read()] == ["run_started"]
    assert (tail.offset, tail.lines) == (len(lines[0]), 1) and tail.partial > 0
    with open(path, "ab") as fh:
        fh.write(b'ent": "checkpoint", "task": null}\n')
    assert tail.read() == [{"seq": 1, "t": 1.0, "event": "checkpoint", "task": None}]
    assert tail.lines == 2 and tail.partial == 0 and tail.read() == []


def test_logtail_names_a_corrupt_line_after_returning_the_good_ones(tmp_path):
    path = tmp_path / "soak.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": oops}\n{"a": 5}\n')
    tail = LogTail(path)
    assert [e["a"] for e in tail.read()] == [1, 2, 3]
    with pytest.raises(LogError, match=r"soak\.jsonl: line 4: not valid JSON"):
        tail.read()
    assert tail.lines == 3


@pytest.mark.parametrize("content,why", [(b"[1, 2]\n", "line 1: not a JSON object"), (b"\n", "line 1: empty line")])
def test_logtail_refuses_lines_that_are_not_objects(tmp_path, content, why):
    path = tmp_path / "soak.jsonl"
    path.write_bytes(content)
    with pytest.raises(LogError, match=why):
        LogTail(path).read()


def test_logtail_missing_and_shrunk_files(tmp_path):
    with pytest.raises(LogError, match="no such log file"):
        LogTail(tmp_path / "nope.jsonl").read()
    path = tmp_path / "soak.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n')
    tail = LogTail(path)
    tail.read()
    path.write_bytes(b'{"a": 1}\n')
    with pytest.raises(LogError, match="shrank"):
        tail.read()


def test_aggregate_file_errors_name_the_line(tmp_path):
    b = LogBuilder()
    b.run_task(10.0, side_effect=False)  # header + 3 lines
    lines = b.lines()
    path = tmp_path / "soak.jsonl"
    path.write_bytes(b"".join(lines)[:-5])
    with pytest.raises(LogError, match=r"line 4: truncated"):
        aggregate_file(path)
    bad = copy.deepcopy(b.events[1])
    del bad["t"]
    path.write_bytes(lines[0] + lines[1] + orjson.dumps(bad) + b"\n" + lines[3])
    with pytest.raises(LogError, match=r"line 3: event #2 \(seq 2\): malformed event"):
        aggregate_file(path)
    path.write_bytes(lines[1])
    with pytest.raises(LogError, match="line 1: the first line is not a `run_started` header"):
        aggregate_file(path)
    path.write_bytes(b"")
    with pytest.raises(LogError, match="empty log"):
        aggregate_file(path)
    path.write_bytes(b"".join(lines))
    assert aggregate_file(path, max_bytes=64).figures() == aggregate_file(path).figures()


# --- the volume guard -------------------------------------------------------------------------
def test_min_volume_binomial_figures():
    assert aborts.failures_to_trip(20, 0.95) == 2  # one failure in 20 is exactly 95 %: no trip
    assert aborts.false_abort_probability(20, 0.99, 0.95) == pytest.approx(1 - 0.99**20 - 20 * 0.01 * 0.99**19)
    assert aborts.suggest_min_volume(0.995, 0.95, alpha=0.05) == 20
    assert aborts.false_abort_probability(0, 0.9, 0.95) == 0.0


# --- no SLO passes for lack of evidence; no run passes unfinished ------------------------------
def test_a_run_that_ends_with_open_tasks_is_incomplete_and_its_slowest_tasks_stay_in_the_p95():
    b = LogBuilder("24h", faults={"worker_crash_every": 0.0, "worker_stall_every": 0.0})
    for i in range(19):
        b.run_task(10.0 + i, work=2.0)  # 19 tasks of 3 s
    stuck = b.enqueue(40.0, planned=40.0)
    b.lease(stuck, 41.0)  # never ends
    waiting = b.enqueue(50.0)
    agg = b.aggregator()
    assert agg.verdict() == "PASS"  # so far, while the run goes on
    assert agg.verdict(final=True) == "INCOMPLETE"  # what the supervisor says at the end
    b.finish(1040.0, "INCOMPLETE")
    agg = b.aggregator()
    f = agg.figures()
    assert f["verdict"] == "INCOMPLETE" and agg.verdict() == "INCOMPLETE"
    assert f["open_tasks"]["count"] == 2
    assert [(r["task"], r["state"], r["age"]) for r in f["open_tasks"]["oldest"]] == [
        (stuck, "IN_PROGRESS", 1000.0), (waiting, "PENDING", 990.0)]
    # 19 tasks of 3 s and two open ones of 1000 s and 990 s: the p95 is theirs, not 3 s
    assert f["sli2"]["tasks"] == 21 and f["sli2"]["open_counted"] == 2
    assert f["sli2"]["p95"] == float(np.percentile([3.0] * 19 + [1000.0, 990.0], 95)) > 900


def test_lease_recovery_with_no_expiry_is_not_exercised_and_blocks_pass_when_crashes_were_planned():
    planned = LogBuilder("24h")  # plans a SIGKILL every 2 h and a SIGSTOP every 3 h
    for i in range(30):
        planned.run_task(10.0 + i)
    row = next(r for r in planned.aggregator().figures()["slo"] if r["name"] == "Lease-timeout recovery")
    assert (row["pass"], row["status"], row["required"]) == (None, "not exercised", True)
    assert "although the profile planned 12 worker crashes, 8 worker stalls" in row["note"]
    assert planned.aggregator().verdict() == "FAIL"
    quiet = LogBuilder("24h", faults={"worker_crash_every": 0.0, "worker_stall_every": 0.0})
    for i in range(30):
        quiet.run_task(10.0 + i)
    row = next(r for r in quiet.aggregator().figures()["slo"] if r["name"] == "Lease-timeout recovery")
    assert (row["pass"], row["status"], row["required"]) == (None, "not exercised", False)
    assert quiet.aggregator().verdict() == "PASS"


def test_duplicates_with_no_side_effect_reported_are_not_exercised():
    b = LogBuilder("24h", faults={"worker_crash_every": 0.0})  # still plans worker stalls
    for i in range(30):
        b.run_task(10.0 + i, side_effect=False)  # a handler that reports nothing downstream
    row = next(r for r in b.aggregator().figures()["slo"] if r["name"] == "SLI-4 actual duplicate executions")
    assert (row["pass"], row["status"], row["required"]) == (None, "not exercised", True)
    assert row["note"] == "no side effect reported by the handler: not exercised"
    assert b.aggregator().verdict() == "FAIL"


def test_the_fault_table_says_why_planned_faults_were_not_injected():
    manifest = {"arrivals": 40, "faults": {"transient_kinds": {"timeout": 4}, "db_lock": 0,
                                           "duplicate_enqueue": 0, "guardrail": 0}, "bursts": []}
    b = LogBuilder("24h", manifest=manifest, faults={"worker_crash_every": 0.0, "worker_stall_every": 0.0})
    b.ev(0.5, "worker_started", None, worker="w1", pid=101, handler="myteam.handlers:call_api")
    for i in range(30):
        b.run_task(10.0 + i)
    row = next(r for r in b.aggregator().figures()["faults"] if r["kind"] == "timeout")
    assert (row["planned"], row["injected"]) == (4, 0)
    assert row["not_injected"] == ("4 of 4 planned not injected: the handler (myteam.handlers:call_api) does not "
                                   "obey planned faults; only orchestrator.handlers:synthetic does")
