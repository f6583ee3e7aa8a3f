"""The on-call view against a real accelerated soak: the server follows the run live, its points
and tiles end equal to the log's figures, `soak_report.html` is written with the summary, and
`orch soak status --watch` prints one line per period until the run ends."""

from __future__ import annotations

import re
import subprocess

import pytest
from test_aborts_live import finish, quiet_profile, start
from webserve import SSEClient, deadline_wait, start_server, stop_server

from orchestrator.judge.sli import aggregate_file

pytestmark = pytest.mark.xdist_group("soak")


def test_serve_and_watch_follow_a_live_soak(tmp_path, children, orch_cmd, clean_env):
    home = tmp_path / "home"
    profile = quiet_profile(tmp_path, "live4h")
    soak = start(children, orch_cmd, clean_env, home, profile)
    deadline_wait(lambda: (home / "db" / "queue.db").exists() and list((home / "logs" / "soak").glob("soak_*.jsonl")),
                  60, "the run's log")
    served = start_server(children, orch_cmd, clean_env, home)
    watch = children.start(orch_cmd("soak", "status", "--watch", "--every", "0.3", "--home", str(home)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), text=True)
    try:
        client = SSEClient(served)
        mid = deadline_wait(lambda: (lambda t: t if t and t["live"] and len(client.points()) > 10 else None)(
            client.tiles()), 60, "live tiles mid-run")
        assert mid["soak_t"] < 4 * 3600 and {r["state"] for r in mid["rules"]} <= {"armed", "ok"}
        status, _, _ = served.request("GET", "/metrics")
        assert status == 200
        code, output = finish(soak)
        assert code == 0, output
        final = deadline_wait(lambda: (lambda t: t if t and t["complete"] else None)(
            served.get_json("/api/overview")["tiles"]), 60, "the end of the run")
        deadline_wait(lambda: client.points() and client.points()[-1]["data"]["seq"] == final["last_seq"], 30, "points")
        seqs = [int(e["id"]) for e in client.points()]
        assert seqs == sorted(set(seqs)) and seqs == [p["seq"] for p in served.get_json("/api/points")["points"]]
        client.close()
    finally:
        stop_server(served)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) >= 2 and all(re.match(r"\d\d:\d\d:\d\d run \S+ (running|finished)", x) for x in lines), out
    assert "finished verdict PASS" in lines[-1]
    log = next(p for p in (home / "logs" / "soak").glob("soak_live4h_*.jsonl"))
    f = aggregate_file(log).figures()
    assert final["verdict"] == f["verdict"] == "PASS" and final["sli"]["success"] == f["sli1"]["success"]
    assert final["states"]["DONE"] == f["states"]["DONE"]
    report = (home / "reports" / "soak" / "soak_report.html").read_text()
    assert f"{f['sli1']['success'] * 100:.2f} %" in report and "<script" not in report


def test_start_with_serve_and_a_dead_webhook_still_passes(tmp_path, children, orch_cmd, clean_env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    home = tmp_path / "home"
    profile = quiet_profile(tmp_path, "served")
    soak = start(children, orch_cmd, clean_env, home, profile, "--serve", "--serve-port", "0",
                 "--alert-webhook", f"http://127.0.0.1:{dead}/hook/SECRET")
    code, output = finish(soak)
    assert code == 0 and "PASS" in output, output
    line = next(x for x in output.splitlines() if x.startswith("serving http://127.0.0.1:"))
    port = int(line.split()[1].rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as s:  # the server went with the run
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert "SECRET" not in output
    assert (home / "reports" / "soak" / "soak_report.html").exists()


def test_a_real_abort_alerts_once_and_a_dead_receiver_changes_nothing(tmp_path, children, orch_cmd, clean_env):
    import socket

    from test_aborts_live import assert_aborted_by
    from test_alerts import Receiver

    from orchestrator.core import profiles

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    receiver = Receiver()
    try:
        home = tmp_path / "home"
        profile = quiet_profile(tmp_path, "lowsuccess", faults=profiles.Faults(persistent=0.3,
                                                                               transient_kinds=("timeout",)),
                                retry=profiles.Retry(backoff=(5.0,), max_attempts=2))
        code, output = finish(start(children, orch_cmd, clean_env, home, profile, "--serve-port", "0",
                                    "--alert-webhook", receiver.url,
                                    "--alert-webhook", f"http://127.0.0.1:{dead}/hook/SECRET"))
        assert_aborted_by(home, "lowsuccess", code, output, 1, "moving success")  # as without webhooks
    finally:
        receiver.close()
    rule_alerts = [d for d in receiver.messages("firing", "SoakAbortRuleTripped")]
    assert [d["alerts"][0]["labels"]["rule"] for d in rule_alerts] == ["1"]  # once, deduplicated
    assert f"alerts: delivery to http://127.0.0.1:{dead}/… failed after 3 attempts" in output
    assert "SECRET" not in output
