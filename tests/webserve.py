"""Helpers for the on-call view's tests: start `orch soak serve` as a real process on
127.0.0.1:0 and talk to it over real sockets (http.client), SSE included."""

from __future__ import annotations

import http.client
import queue as queue_mod
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import orjson


@dataclass
class Served:
    proc: subprocess.Popen
    url: str

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlsplit(self.url)
        return u.hostname, u.port

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                timeout: float = 30) -> tuple[int, bytes, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(*self.host_port, timeout=timeout)
        try:
            data = orjson.dumps(body) if body is not None and not isinstance(body, bytes) else body
            conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read(), resp
        finally:
            conn.close()

    def get_json(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body)
        return orjson.loads(body)

    def post(self, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
        headers = {"X-Orch-Token": token} if token is not None else {}
        status, raw, _ = self.request("POST", path, body, headers)
        return status, orjson.loads(raw)


def start_server(children, orch_cmd, clean_env, home, *extra: str, timeout: float = 60) -> Served:
    proc = children.start(orch_cmd("soak", "serve", "--port", "0", "--home", str(home), *extra),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), text=True)
    lines: queue_mod.Queue = queue_mod.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=timeout)
    except queue_mod.Empty:
        raise AssertionError("the server printed no URL") from None
    assert first.startswith("serving http://127.0.0.1:"), first
    return Served(proc, first.split()[1])


def stop_server(served: Served) -> str:
    served.proc.terminate()
    _, err = served.proc.communicate(timeout=30)
    assert served.proc.returncode == 0, err
    return err


class SSEClient:
    """Reads an SSE stream on its own thread; `events` fills as frames arrive."""

    def __init__(self, served: Served, last_id: int | None = None):
        self.conn = http.client.HTTPConnection(*served.host_port, timeout=60)
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        self.conn.request("GET", "/events", headers=headers)
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200 and self.resp.getheader("Content-Type") == "text/event-stream"
        self.events: list[dict] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        cur: dict = {}
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if not line:
                    if "data" in cur:
                        with self.lock:
                            self.events.append({"id": cur.get("id"), "event": cur.get("event", "message"),
                                                "data": orjson.loads(cur["data"])})
                    cur = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    cur[name] = value[1:] if value.startswith(" ") else value
        except (OSError, ValueError, http.client.HTTPException):
            pass

    def points(self) -> list[dict]:
        with self.lock:
            return [e for e in self.events if e["event"] == "point"]

    def tiles(self) -> dict | None:
        with self.lock:
            found = [e["data"] for e in self.events if e["event"] == "tiles"]
        return found[-1] if found else None

    def close(self) -> None:
        try:
            self.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()


def deadline_wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    tick = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        tick.wait(0.02)


VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()

    def find(self, ident: str) -> Node:
        found = [n for n in self.walk() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]

    def all(self, tag: str, **attrs: str) -> list[Node]:
        """Descendants (and self) with this tag and these attribute values (`data_x` is `data-x`)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.walk() if n.tag == tag and all(n.attrs.get(k) == v for k, v in want.items())]


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def path_points(d: str) -> int:
    """How many points an SVG path's `d` draws (each M or L is one)."""
    return len(re.findall(r"[ML]-?[0-9.]+,-?[0-9.]+", d))
