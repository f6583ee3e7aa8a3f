"""The terminal views of issue 16. The abort rules' states: one function in the judge for every
view that shows them. One end time of a run, its `run_finished` event, in every view.
"""

from __future__ import annotations

import time

import orjson
from click.testing import CliRunner
from sli_logs import LogBuilder

from orchestrator.cli.orch import orch
from orchestrator.core import profiles
from orchestrator.core.clock import Clock, HandClock, RunEnd
from orchestrator.core.home import Home
from orchestrator.judge.report import render_summary
from orchestrator.judge.reporttext import ended
from orchestrator.judge.rules import RULE_STATES
from orchestrator.judge.sli import aggregate_file
from orchestrator.queue.runs import RunStore
from orchestrator.queue.writes import Queue
from orchestrator.soak.control import status
from orchestrator.soak.shipper import event_line
from orchestrator.web.monitor import Monitor


def healthy(n: int = 40) -> LogBuilder:
    b = LogBuilder("24h")
    for i in range(n):
        b.run_task(10.0 + 20.0 * i)
    return b


# --- the rule states: one function for every view ----------------------------------------------
def test_rule_states_follow_the_documented_rules():
    b = LogBuilder("24h")
    for i in range(5):
        b.run_task(10.0 + 20.0 * i)
    agg = b.aggregator()
    agg.check(200.0)
    states = {r["rule"]: r["state"] for r in agg.rule_states()}
    assert states == {1: "ok", 2: "armed", 3: "ok", 4: "armed", 5: "armed"}  # 5 tasks < min_volume 20; nothing waits
    for i in range(20):
        b.run_task(200.0 + 10.0 * i)
    b.enqueue(500.0)
    agg = b.aggregator()
    agg.check(600.0)
    assert {r["rule"]: r["state"] for r in agg.rule_states()} == dict.fromkeys(range(1, 6), "armed")
    b.finish(700.0)
    agg = b.aggregator()
    assert {r["state"] for r in agg.rule_states()} == {"ok"}  # the run is over and none fired
    assert all(r["state"] in RULE_STATES for r in agg.rule_states())


def test_the_web_view_takes_its_rule_states_from_the_judge(tmp_path):
    b = LogBuilder("24h")
    b.run_task(10.0, key="same-key", side_effect=False)
    b.run_task(20.0, key="same-key", side_effect=False)
    for i in range(25):
        b.run_task(100.0 + 10.0 * i)
    b.enqueue(400.0)
    b.run_task(500.0)
    path = b.write(tmp_path / "home" / "logs" / "soak" / "soak_24h_r.jsonl")
    monitor = Monitor(Home.resolve(str(tmp_path / "home")), log=path, snapshot_every=0.0)
    monitor.poll_once()
    web = monitor.current()["rules"]
    assert web == aggregate_file(path).rule_states()
    assert [r["state"] for r in web] == ["armed", "tripped", "armed", "armed", "armed"]


# --- one end of a run -------------------------------------------------------------------------
def test_status_reads_the_end_the_log_line_of_run_finished_carries(tmp_path):
    """`orch soak status` and the log (so the summary) take a run's end from its `run_finished`
    event, not from when the run's record was closed."""
    home = Home.resolve(str(tmp_path / "home"))
    home.ensure()
    origin = time.time()
    with Queue(home.db, Clock(origin, 1440.0)) as queue:
        store = RunStore(queue)
        store.create("r1", profiles.BUILTIN["24h"].to_dict(), 14, 1440.0, origin, home.logs / "soak_24h_r1.jsonl",
                     None)
        run = store.go("r1", origin)
        # `run_finished` at soak 0:10:00 (a hand clock); the record is closed now, a moment of wall
        # time after the start (which, at 1440x, the old reading took for the end)
        with Queue(home.db, HandClock(origin + 600.0)) as writer:
            writer.record("run_finished", data={"verdict": "STOPPED", "reason": "test"})
        row = queue.events_after(run.first_seq - 1)[-1]
        line = orjson.loads(event_line(row, run.started_soak))
        store.end("r1", "stopped", "STOPPED")
    assert line["event"] == "run_finished" and line["t"] == 600.0
    doc = status(home)
    assert doc["ended"] == {"t": line["t"], "wall": line["wall"]} and doc["soak_t"] == line["t"]
    result = CliRunner().invoke(orch, ["soak", "status", "--home", str(home.root)])
    assert f"ended {ended(line['t'], line['wall'])}\n" in result.output, result.output
    assert RunEnd.of_event(line) == RunEnd(line["t"], line["wall"])


def test_the_summary_ends_at_run_finished_even_when_a_line_follows_it():
    b = healthy(5)
    b.finish(700.0)
    b.ev(705.0, "worker_exited", worker="w1")  # a late line after the end (counted, not the end)
    f = b.aggregator().figures()
    assert f["run"]["ended"] == {"t": 700.0, "wall": b.wall(700.0)}
    assert (f["run"]["end_t"], f["run"]["end_wall"]) == (700.0, b.wall(700.0))
    text = render_summary(f)
    assert f"| ended | soak 0:11:40, wall {b.wall(700.0).replace('T', ' ').replace('Z', ' UTC')} (" in text
    assert "| soak time | 0:00:00 -> 0:11:40 of 24:00:00 planned |" in text
    assert render_summary(healthy(5).aggregator().figures()).count("| log ends | soak 0:01:33, wall ") == 1
