"""The built-in HTTP handler against a local upstream (a stdlib server on 127.0.0.1): the call it
makes, the side effect it reports, and the classes its failures get."""

from __future__ import annotations

import http.server
import subprocess
import threading

import orjson
import pytest

from orchestrator.core.clock import WALL
from orchestrator.core.model import ErrorClass, classify
from orchestrator.handlers.context import TaskContext
from orchestrator.handlers.http import request
from orchestrator.queue.writes import Queue


@pytest.fixture
def upstream():
    """POST /pay applies once per Idempotency-Key (201), then answers 409; /down answers 503."""
    seen: list[dict] = []
    keys: set[str] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get("Idempotency-Key")
            seen.append({"path": self.path, "key": key, "attempt": self.headers.get("X-Orch-Attempt"),
                         "body": orjson.loads(body) if body else None})
            if self.path == "/down":
                self.send_response(503)
            elif key in keys:
                self.send_response(409)
            else:
                keys.add(key)
                self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def context(payload: dict, reported: list, key: str = "order-1") -> TaskContext:
    return TaskContext(task="ORCH-1", key=key, payload=payload, attempt=1, epoch=1, budget=None, clock=WALL,
                       on_side_effect=lambda applied, downstream, detail: reported.append((applied, detail)))


def test_a_call_sends_the_idempotency_key_and_reports_the_side_effect(upstream):
    base, seen = upstream
    reported: list = []
    assert request(context({"url": f"{base}/pay", "amount": 5}, reported)) == {"task": "ORCH-1", "status": 201}
    assert request(context({"url": f"{base}/pay", "amount": 5}, reported))["deduplicated"] is True
    assert [(s["key"], s["attempt"], s["body"]) for s in seen] == [("order-1", "1", {"url": f"{base}/pay",
                                                                                      "amount": 5})] * 2
    assert reported == [(True, "HTTP 201"), (False, "409: the downstream had the key already")]


def test_a_5xx_is_a_server_error_and_a_dead_upstream_is_network(upstream):
    base, _seen = upstream
    with pytest.raises(Exception) as down:
        request(context({"url": f"{base}/down"}, []))
    assert classify(down.value) is ErrorClass.SERVER_ERROR
    with pytest.raises(Exception) as dead:
        request(context({"url": "http://127.0.0.1:9/", "timeout": 2}, []))
    assert classify(dead.value) is ErrorClass.NETWORK
    with pytest.raises(Exception) as none:
        request(context({}, []))
    assert classify(none.value) is ErrorClass.PARAM_ERROR


def test_a_worker_runs_it_with_the_url_from_the_environment(tmp_path, upstream, orch_cmd, clean_env):
    base, seen = upstream
    home = tmp_path / "home"
    subprocess.run(orch_cmd("enqueue", "--key", "invoice-9", "--payload", '{"amount": 3}', "--home", str(home)),
                   check=True, capture_output=True, timeout=60, env=clean_env())
    done = subprocess.run(orch_cmd("worker", "--handler", "orchestrator.handlers.http:request", "--idle-exit", "1",
                                   "--poll", "0.2", "--home", str(home)), capture_output=True, text=True, timeout=60,
                          env=clean_env(ORCH_HTTP_URL=f"{base}/pay"))
    assert done.returncode == 0, done.stderr
    assert [s["key"] for s in seen] == ["invoice-9"]
    with Queue(home / "db" / "queue.db") as queue:
        events = [e["event"] for e in queue.history(1)]
    assert events[-3:] == ["leased", "side_effect_applied", "completed"]
