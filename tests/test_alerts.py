"""Alertmanager-style webhooks from `orch soak serve --alert-webhook`: a local receiver on
127.0.0.1 gets exact firing and resolved payloads, once each; a receiver that is down only
costs a redacted log line."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from sli_logs import LogBuilder
from test_report import aborted_log
from test_web import write_lines
from webserve import deadline_wait, start_server, stop_server

from orchestrator.web.alerts import redact


class Receiver:
    def __init__(self):
        got = self.got = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((self.path, orjson.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/abc123"

    def messages(self, status=None, alertname=None):
        return [doc for _, doc in list(self.got) if (status is None or doc["status"] == status)
                and (alertname is None or doc["alerts"][0]["labels"]["alertname"] == alertname)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    (h / "logs" / "soak").mkdir(parents=True)
    return h


def spike_log() -> tuple[LogBuilder, int]:
    """10 tasks a soak minute; minutes 10-15 fail 6 in 10. Returns the builder and the line count
    up to the middle of minute 16 (the spike is then in every burn window)."""
    b = LogBuilder()
    cut = None
    for m in range(40):
        if m == 17:
            cut = len(b.events) + 1  # + the header
        for k in range(10):
            t = m * 60.0 + k * 5 + 1
            task = b.enqueue(t)
            b.lease(task, t + 0.5)
            if 10 <= m <= 15 and k < 6:
                b.fail(task, t + 1, "param_error")
            else:
                b.complete(task, t + 1)
    return b, cut


def test_firing_then_resolved_once_each(children, orch_cmd, clean_env, home, receiver):
    b, cut = spike_log()
    log = home / "logs" / "soak" / "soak_72h.jsonl"
    write_lines(log, b.lines()[:cut], "wb")
    served = start_server(children, orch_cmd, clean_env, home, "--alert-webhook", receiver.url)
    try:
        deadline_wait(lambda: len(receiver.messages("firing")) >= 4, 30, "four alerts firing")
        firing = receiver.messages("firing")
        names = sorted((d["alerts"][0]["labels"]["alertname"], d["alerts"][0]["labels"].get("pair") or
                        d["alerts"][0]["labels"]["rule"]) for d in firing)
        assert names == [("SoakAbortRuleTripped", "1"), ("SoakErrorBudgetBurn", "burn_1"),
                         ("SoakErrorBudgetBurn", "burn_2"), ("SoakErrorBudgetBurn", "burn_3")]
        doc = receiver.messages("firing", "SoakAbortRuleTripped")[0]
        assert doc["version"] == "4" and doc["receiver"] == "orch-soak" and doc["externalURL"] == served.url
        assert doc["groupLabels"] == {"alertname": "SoakAbortRuleTripped"}
        alert = doc["alerts"][0]
        assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["rule_name"] == "moving_success"
        assert "ORCH-" in alert["annotations"]["evidence"]
        b.finish(40 * 60.0 + 5)
        write_lines(log, b.lines()[cut:])
        deadline_wait(lambda: len(receiver.messages("resolved")) >= 2, 30, "two alerts resolved")
        deadline_wait(lambda: served.get_json("/api/overview")["tiles"]["complete"], 30, "the end of the log")
        status, _, _ = served.request("GET", "/api/overview")  # one more snapshot read: nothing new to send
    finally:
        stop_server(served)
    resolved = receiver.messages("resolved")
    assert sorted(d["alerts"][0]["labels"]["pair"] for d in resolved) == ["burn_1", "burn_2"]
    by_fp = {d["alerts"][0]["fingerprint"]: d for d in firing}
    for doc in resolved:
        alert = doc["alerts"][0]
        assert alert["fingerprint"] in by_fp and alert["endsAt"] > alert["startsAt"]
    assert len(receiver.got) == 6 and {p for p, _ in receiver.got} == {"/hook/abc123"}  # deduplicated


def test_a_receiver_that_is_down_is_only_logged_redacted(children, orch_cmd, clean_env, home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:pw@127.0.0.1:{port}/hooks/SECRETXYZ?token=abc"
    assert redact(url) == f"http://127.0.0.1:{port}/…"
    aborted_log().write(home / "logs" / "soak" / "soak_72h.jsonl")
    served = start_server(children, orch_cmd, clean_env, home, "--alert-webhook", url)
    try:
        tiles = deadline_wait(lambda: served.get_json("/api/overview")["tiles"], 30, "tiles")
        assert tiles["verdict"] == "ABORTED" and served.request("GET", "/metrics")[0] == 200
    finally:
        err = stop_server(served)
    assert f"alerts: delivery to http://127.0.0.1:{port}/… failed after 3 attempts" in err
    assert "SECRETXYZ" not in err and "pw" not in err and "token=abc" not in err


def test_a_bad_webhook_url_is_a_usage_error(orch_cmd, clean_env, home):
    import subprocess

    done = subprocess.run(orch_cmd("soak", "serve", "--home", str(home), "--alert-webhook", "ftp://x/secret"),
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("Error: ") and "secret" not in done.stderr
