"""The terminal views of issue 16. The abort rules' states: one function in the judge for every
view that shows them.
"""

from __future__ import annotations

from sli_logs import LogBuilder

from orchestrator.core.home import Home
from orchestrator.judge.rules import RULE_STATES
from orchestrator.judge.sli import aggregate_file
from orchestrator.web.monitor import Monitor


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
