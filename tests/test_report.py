"""soak_summary.md, the incident record and `orch soak report` (CliRunner, exact exit codes)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from sli_logs import LogBuilder

from orchestrator.cli.report_cmd import report
from orchestrator.judge.figures import wall_at
from orchestrator.judge.report import write_incident, write_summary
from orchestrator.judge.sli import Aggregator, LogTail, aggregate_file

RUN = "r20261123T184500-s14-ab12"


def rich_log(run_id: str = RUN, finish: str | None = "PASS") -> LogBuilder:
    """A healthy run with a bit of everything the summary reports."""
    b = LogBuilder(run_id=run_id)
    b.ev(0.5, "worker_started", None, worker="w1", pid=101, handler="orchestrator.handlers:synthetic")
    for i in range(40):
        b.run_task(10.0 + i * 30, wait=1.0, work=2.0 + i % 3)
    storm = b.enqueue(1300.0)
    t = 1301.0
    for error in ("network", "network", "network"):
        b.lease(storm, t)
        b.fault(t + 0.5, "network", task=storm)
        b.retry(storm, t + 1, error, 60.0)
        t += 62.0
    b.lease(storm, t)
    b.fail(storm, t + 1, "network")
    manual = b.enqueue(1400.0)
    b.lease(manual, 1401.0)
    b.operator("done", manual, 1450.0, actor="alice", notes="incident mitigated")
    blocked = b.enqueue(1500.0)
    b.lease(blocked, 1501.0)
    b.guardrail(blocked, 1502.0)
    b.dup_enqueue(blocked, 1503.0)
    b.ev(1510.0, "fault_injected", None, worker="w1", kind="worker_crash", target=101)
    crashed = b.enqueue(1520.0)
    b.lease(crashed, 1521.0)
    b.expire(crashed, 1555.0)
    b.ev(1556.0, "worker_restarted", None, worker="w1", pid=102, old_pid=101, returncode=-9)
    b.lease(crashed, 1557.0, worker="w2")
    b.complete(crashed, 1559.0)
    b.ev(1600.0, "run_resumed", None, gap=42.5, old_pid=99)
    b.ev(1700.0, "checkpoint", None, counts={"DONE": 42}, in_flight=1, lock_retries=3)
    for i in range(10):
        b.run_task(1800.0 + i * 20)
    if finish:
        b.finish(2100.0, finish)
    return b


def test_summary_holds_the_figures(tmp_path):
    b = rich_log()
    log = b.write(tmp_path / "soak_72h.jsonl")
    agg = aggregate_file(log)
    f = agg.figures()
    path = write_summary(agg, tmp_path / "out", log_path=log)
    text = path.read_text()
    assert path == tmp_path / "out" / f"soak_summary_{RUN}.md"
    assert (tmp_path / "out" / "soak_summary.md").read_text() == text
    assert f["verdict"] == "PASS" and "## Verdict: **PASS**" in text
    for needle in (f"`{RUN}`", "`e144a4e0c0ffee00000000000000000000000000`", "| seed | 14 |", "| speed | 4320x",
                   "| workers | 4 |", "2026-11-23 18:45:00.000 UTC (2026-11-24 03:45:00 KST)",
                   "0:00:00 -> 0:35:00 of 72:00:00 planned", "abort.min_volume = 20"):
        assert needle in text, needle
    s1, s2 = f["sli1"], f["sli2"]
    assert f"{s1['success'] * 100:.2f} % = {s1['done']:,} DONE / {s1['done'] + s1['failed']:,} DONE+FAILED" in text
    assert f"**p95 {s2['p95']:,.1f} s**" in text and f"p99 {s2['p99']:,.1f} s" in text
    assert f"| >= 97.0 % | {s1['success'] * 100:.2f} % ({s1['done']:,}/{s1['done'] + s1['failed']:,}) | pass |" in text
    assert "**0 actual duplicate executions**" in text and "1 duplicate enqueues" in text
    assert "1 re-leases after expiry" in text
    assert "**BLOCKED at the end: 1**" in text
    storm = f["retry_storms"]["groups"][0]
    assert storm["cause"] == "network" and f"| network | 1 | {storm['examples'][0]} |" in text
    assert "| manual DONE | ORCH-42 | IN_PROGRESS | alice | incident mitigated |" in text
    assert "| worker_crash | 24 | 1 (23 of 24 planned not injected: no worker held a lease when one was due) | 1 leases expired under a killed worker | 1 DONE, 0 FAILED, 1 workers restarted |" in text
    assert "| 42.5 s | 99 |" in text  # the resume gap
    assert "| 0:00:00-0:35:00 (partial) | 54 | 52 | 1 | 98.11 % |" in text  # the checkpoint window
    assert "No abort rule tripped." in text
    for name in ("arrivals", "moving_success", "latency", "backlog"):
        png = tmp_path / "out" / f"soak_{RUN}_{name}.png"
        assert png.stat().st_size > 1000 and f"]({png.name})" in text


def test_earlier_run_summaries_are_kept(tmp_path):
    out = tmp_path / "out"
    first = write_summary(rich_log("run-one").aggregator(), out)
    second = write_summary(rich_log("run-two").aggregator(), out)
    assert first.exists() and second.exists() and first != second
    assert (out / "soak_summary.md").read_text() == second.read_text()
    assert "run-one" in first.read_text()


def aborted_log(run_id: str = RUN) -> LogBuilder:
    b = LogBuilder(run_id=run_id)
    b.run_task(10.0, key="same", side_effect=False)  # a second effect row forced past the guard
    b.run_task(20.0, key="same", side_effect=False)
    agg = b.aggregator()
    abort = agg.check(30.0)[0]
    b.ev(30.0, "abort", None, **abort.to_event())
    b.ev(31.0, "run_stopped", None, reason="abort")
    b.ev(32.0, "worker_exited", None, worker="w1", pid=5, reason="stop", tasks=2)
    b.finish(33.0, "ABORTED")
    return b


def side_effect_twice_log() -> LogBuilder:
    """A worker stalled past its lease wakes and applies its side effect after the new holder did,
    to a downstream that does not dedupe: rule 2 trips on the second `side_effect_applied`."""
    b = LogBuilder()
    task = b.enqueue(10.0, key="order-7", planned=10.0)
    b.lease(task, 11.0, worker="w1")
    b.expire(task, 100.0)
    b.lease(task, 101.0, worker="w2")
    b.complete(task, 110.0)  # w2 applied it (epoch 2) and completed
    b.side_effect(task, 115.0, worker="w1", epoch=1)  # w1 wakes: epoch 1 applies it again
    b.stale(task, 115.5, worker="w1")
    return b


def test_rule2_and_the_incident_name_the_key_and_both_side_effects(tmp_path):
    agg = side_effect_twice_log().aggregator()
    found = agg.check(120.0)
    assert [(a.rule, a.t, a.evidence) for a in found] == [(2, 115.0, ["ORCH-1"])]
    fig = found[0].figures
    assert (fig["key"], fig["via"]) == ("order-7", "side_effect")
    assert (fig["first"]["epoch"], fig["first"]["worker"], fig["second"]["epoch"], fig["second"]["worker"]) == (
        2, "w2", 1, "w1")
    f = agg.figures()
    assert (f["sli4"]["actual"], f["sli4"]["side_effects"], f["sli4"]["stopped"]) == (1, 2, 0)
    text = write_incident(found[0], agg, tmp_path).read_text()
    assert "Key `order-7` had its side effect applied downstream twice" in text
    assert "first: ORCH-1 epoch 2 by worker w2 at soak 0:01:50" in text
    assert "second: ORCH-1 epoch 1 by worker w1 at soak 0:01:55" in text


def test_a_deduped_side_effect_is_a_duplicate_stopped_not_an_execution(tmp_path):
    b = LogBuilder()
    task = b.enqueue(10.0, key="order-8", planned=10.0)
    b.lease(task, 11.0, worker="w1")
    b.expire(task, 100.0)
    b.lease(task, 101.0, worker="w2")
    b.complete(task, 110.0)
    b.side_effect(task, 115.0, applied=False, worker="w1", epoch=1)  # the downstream refused it by key
    b.stale(task, 115.5, worker="w1")
    agg = b.aggregator()
    assert agg.check(120.0) == []
    f = agg.figures()
    assert (f["sli4"]["actual"], f["sli4"]["side_effects"], f["sli4"]["stopped"]) == (0, 1, 1)
    assert "**1 duplicates stopped**" in write_summary(agg, tmp_path).read_text()


def test_incident_record(tmp_path):
    agg = aborted_log().aggregator()
    abort = agg.aborts[0]
    path = write_incident(abort, agg, tmp_path)
    text = path.read_text()
    assert path.name == f"incident_{RUN}.md"
    assert wall_at(agg.settings.header, abort.t) == "2026-11-23T18:45:00.005Z"
    for needle in ("aborted by rule 2 (actual duplicate execution)", "**Time (KST)**: 2026-11-24 03:45:00 KST",
                   "SLI-4 actual duplicate executions", "| key | same |", "Evidence tasks: `ORCH-2`",
                   "## Mitigation taken", "1 `worker_exited`", "**to be confirmed**", "## Prevention actions",
                   "- [ ] "):
        assert needle in text, needle


# --- the command ------------------------------------------------------------------------------
def run_report(*args: str):
    return CliRunner().invoke(report, list(args))


def test_report_pass_exits_0_and_prints_path_and_verdict(tmp_path):
    log = rich_log().write(tmp_path / "soak.jsonl")
    out = tmp_path / "out"
    result = run_report("--log", str(log), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.output == f"summary: {out / f'soak_summary_{RUN}.md'}\nverdict: PASS\n"


def test_report_fail_exits_1_when_an_slo_is_missed(tmp_path):
    b = LogBuilder()
    for i in range(30):
        b.run_task(10.0 + i * 10, wait=100.0, work=100.0)  # 200 s each: p95 > 120 s
    b.finish(600.0, "FAIL")
    result = run_report("--log", str(b.write(tmp_path / "soak.jsonl")), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and result.output.endswith("verdict: FAIL\n")
    assert "| SLI-2 p95 arrival->terminal (soak s) | <= 120 s | 200.0 s (30 tasks) | **FAIL** |" in \
        (tmp_path / "out" / "soak_summary.md").read_text()


def test_report_aborted_exits_3_and_writes_the_incident(tmp_path):
    out = tmp_path / "out"
    result = run_report("--log", str(aborted_log().write(tmp_path / "soak.jsonl")), "--out", str(out))
    assert result.exit_code == 3 and result.output.endswith("verdict: ABORTED\n")
    text = (out / "soak_summary.md").read_text()
    assert f"[incident_{RUN}.md](incident_{RUN}.md)" in text and (out / f"incident_{RUN}.md").exists()
    assert "recorded in the log and confirmed on replay" in text


def test_report_stopped_and_incomplete_logs_exit_1(tmp_path):
    b = rich_log(finish=None)
    b.ev(2050.0, "run_stopped", None, reason="signal SIGTERM")
    b.finish(2051.0, "STOPPED")
    result = run_report("--log", str(b.write(tmp_path / "stopped.jsonl")), "--out", str(tmp_path / "a"))
    assert result.exit_code == 1 and result.output.endswith("verdict: STOPPED\n")
    result = run_report("--log", str(rich_log(finish=None).write(tmp_path / "live.jsonl")), "--out",
                        str(tmp_path / "b"))
    assert result.exit_code == 1 and result.output.endswith("verdict: PASS (log incomplete: no run_finished)\n")


def test_report_bad_logs_exit_2_with_one_line_naming_the_line(tmp_path):
    lines = rich_log().lines()
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_bytes(b"".join(lines[:2]) + b'{"seq": 2, "t": \n' + b"".join(lines[3:]))
    result = run_report("--log", str(corrupt), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output == f"Error: {corrupt}: line 3: not valid JSON (unexpected end of data)\n"
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(b"".join(lines)[:-10])
    result = run_report("--log", str(truncated), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.output.startswith(f"Error: {truncated}: line {len(lines)}: truncated")
    result = run_report("--log", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out"))
    assert (result.exit_code, result.output) == (2, f"Error: {tmp_path / 'missing.jsonl'}: no such log file\n")
    assert not (tmp_path / "out").exists()


def test_report_defaults_to_the_newest_log_and_the_homes_reports(tmp_path):
    home = tmp_path / "home"
    logs = home / "logs" / "soak"
    old = rich_log("run-old").write(logs / "soak_72h_run-old.jsonl")
    new = rich_log("run-new").write(logs / "soak_72h_run-new.jsonl")
    os.utime(old, (1_000_000, 1_000_000))
    (logs / "soak_72h.jsonl").symlink_to(new.name)
    result = run_report("--home", str(home))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"summary: {home / 'reports' / 'soak' / 'soak_summary_run-new.md'}"
    empty = tmp_path / "empty"
    result = run_report("--home", str(empty))
    assert (result.exit_code, result.output) == (2, f"Error: no soak log in {empty / 'logs' / 'soak'} "
                                                    "(soak_*.jsonl); pass --log PATH\n")


def test_report_from_the_log_equals_the_live_summary(tmp_path):
    b = rich_log()
    log = b.write(tmp_path / "soak.jsonl")
    tail = LogTail(log)
    first = tail.read(max_bytes=700)  # a live reader sees the log in pieces
    live = Aggregator(first[0])
    live.feed_many(first[1:])
    while True:
        events = tail.read(max_bytes=700)
        if not events:
            break
        live.feed_many(events)
        live.check(live.state.last_t, db_last_seq=live.state.last_seq)
    live_text = write_summary(live, tmp_path / "live", log_path=log).read_text()
    result = run_report("--log", str(log), "--out", str(tmp_path / "offline"))
    assert result.exit_code == 0
    assert (tmp_path / "offline" / "soak_summary.md").read_text() == live_text


@pytest.mark.parametrize("rule_log", ["aborted"])
def test_summary_lists_aborts_with_their_evidence(tmp_path, rule_log):
    agg = aborted_log().aggregator()
    text = write_summary(agg, tmp_path, incidents=[tmp_path / f"incident_{RUN}.md"]).read_text()
    assert "## Verdict: **ABORTED**" in text
    assert "**Rule 2 `duplicate_execution`**" in text and "Evidence: ORCH-2." in text
    assert "Note: the run itself recorded" not in text
