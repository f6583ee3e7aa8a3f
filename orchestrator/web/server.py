"""`orch soak serve`: the live on-call view over stdlib `ThreadingHTTPServer`.

Routes: `/` overview, `/tasks` tasks page (both rendered here with their figures), `/static/*`
their scripts and style sheet, `/parts/*` the pages' parts for the scripts' updates, `/events`
SSE, `/metrics` Prometheus text, `/api/overview`, `/api/points`, `/api/tasks`, `/api/tasks/ORCH-N`,
`POST /api/actions`.
Binds 127.0.0.1 unless a token is given; read-only unless actions are allowed; every POST needs
the token (`Authorization: Bearer T` or `X-Orch-Token: T`), compared in constant time.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from orchestrator.core.errors import OrchestratorError, StoreError, UsageError
from orchestrator.core.home import Home
from orchestrator.queue import search as taskquery
from orchestrator.queue.runs import RunStore
from orchestrator.queue.tasks import parse_task_id
from orchestrator.queue.writes import Queue
from orchestrator.web import actions, metrics, overview, pages, sse, taskpage
from orchestrator.web.alerts import Alerter
from orchestrator.web.monitor import Monitor

STATUS_BY_EXIT = {1: 500, 2: 400, 3: 404, 4: 409}


@dataclass
class ServeConfig:
    home: Home
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    allow_actions: bool = False
    actor: str = "web"
    log: Path | None = None
    alert_webhooks: list[str] = field(default_factory=list)
    port_fallback: bool = False  # the port was not asked for: when it is taken, take a free one


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(cfg: ServeConfig) -> None:
    if not is_loopback(cfg.host) and not cfg.token:
        raise UsageError(f"refusing to bind {cfg.host} without --token (only 127.0.0.1 is served without one)")
    if cfg.allow_actions and not cfg.token:
        raise UsageError("--allow-actions needs --token (every POST must carry it)")


def port_in_use(host: str, port: int) -> StoreError:
    return StoreError(f"port {port} on {host} is already in use (another `orch soak serve`?): "
                      "pass --port 0 to pick a free one")


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken, before a server process is started for it."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise port_in_use(host, port) from None
            raise StoreError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class OnCallServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, cfg: ServeConfig, monitor: Monitor):
        check_bind(cfg)
        self.cfg = cfg
        self.monitor = monitor
        self.closing = threading.Event()
        try:
            super().__init__((cfg.host, cfg.port), Handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise StoreError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from None
            if not cfg.port_fallback:
                raise port_in_use(cfg.host, cfg.port) from None
            super().__init__((cfg.host, 0), Handler)  # the default port is taken: a free one (printed)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def open_queue(self) -> tuple[Queue, float]:
        """A queue connection for one request (and the latest run's soak origin)."""
        if not self.cfg.home.has_db():
            raise StoreError(f"no queue database at {self.cfg.home.db_shown}")
        queue = Queue(self.cfg.home.db, create=False)
        run = RunStore(queue).latest()
        origin = run.started_soak if run is not None else 0.0
        if run is not None:
            queue.use_clock(run.clock)
        return queue, origin

    def queue_status(self) -> dict[str, Any] | None:
        try:
            queue, _ = self.open_queue()
        except StoreError:
            return None
        with queue:
            return queue.status(recent=0)

    def shutdown(self) -> None:
        self.closing.set()
        with self.monitor.cond:
            self.monitor.cond.notify_all()
        super().shutdown()


class Handler(BaseHTTPRequestHandler):
    server: OnCallServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: no per-request lines, no tokens in logs
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # --- plumbing ---------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, doc: Any, code: int = 200) -> None:
        self._send(code, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), "application/json")

    def _error(self, code: int, message: str) -> None:
        self._json({"error": message}, code)

    def _html(self, text: str, code: int = 200) -> None:
        self._send(code, text.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": pages.CSP})

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except OrchestratorError as exc:
            self._error(STATUS_BY_EXIT.get(exc.exit_code, 500), str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- GET --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query))
        path = url.path
        routes = {"/": self._overview_page, "/tasks": self._tasks_page, "/events": self._events,
                  "/metrics": self._metrics, "/api/overview": self._overview, "/api/points": self._points,
                  "/api/tasks": self._tasks, "/parts/overview": self._overview_parts,
                  "/parts/leases": self._lease_parts, "/parts/tasks": self._task_parts,
                  "/parts/timeline": self._timeline_part, "/healthz": lambda p: self._json({"ok": True})}
        if path in routes:
            self._guarded(routes[path], params)
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        elif path.startswith("/api/tasks/"):
            self._guarded(self._timeline, path.rsplit("/", 1)[1])
        else:
            self._error(404, f"no such page {path}")

    do_HEAD = do_GET

    def _static(self, name: str) -> None:
        body = pages.static_file(name)
        if body is None:
            self._error(404, f"no such file /static/{name}")
            return
        self._send(200, body, pages.STATIC[name])

    # --- pages and their parts: the figures rendered here, in the first response ---------------
    def _overview_page(self, params) -> None:
        snap, points = self.server.monitor.view()
        self._html(pages.overview_page(snap, points, self.server.monitor.error, self.server.queue_status()))

    def _overview_parts(self, params) -> None:
        snap, points = self.server.monitor.view()
        self._json({"seq": snap["last_seq"] if snap else None,
                    "parts": overview.figure_parts(snap, points, self.server.monitor.error)})

    def _lease_parts(self, params) -> None:
        self._json({"parts": overview.lease_parts(self.server.queue_status())})

    def _tasks_page(self, params) -> None:
        docs, nxt, shown, error, code = [], None, None, None, 200
        try:
            docs, nxt = self._search(params)
            if params.get("id"):
                shown = self._task_doc(params["id"])
        except OrchestratorError as exc:
            error, code = str(exc), STATUS_BY_EXIT.get(exc.exit_code, 500)
        self._html(pages.tasks_page(params, docs, nxt, shown, error, self.server.cfg.allow_actions), code)

    def _task_parts(self, params) -> None:
        docs, nxt = self._search(params)
        self._json({"head": taskpage.RESULT_HEAD, "rows": taskpage.rows(docs), "more": taskpage.more(params, nxt),
                    "next": nxt})

    def _timeline_part(self, params) -> None:
        self._json({"timeline": taskpage.timeline(self._task_doc(params.get("id") or ""))})

    def _overview(self, params) -> None:
        mon = self.server.monitor
        self._json({"tiles": mon.current(), "status": self.server.queue_status(), "error": mon.error,
                    "points": len(mon.points)})

    def _points(self, params) -> None:
        after = sse.parse_last_id(None, params.get("after"))
        self._json({"points": self.server.monitor.points_after(after), "generation": self.server.monitor.generation})

    def _metrics(self, params) -> None:
        body = metrics.render(self.server.monitor.current(), self.server.queue_status())
        self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def _events(self, params) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        last = sse.parse_last_id(self.headers.get("Last-Event-ID"), params.get("after"))

        def write(data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()

        try:
            sse.stream(self.server.monitor, write, last, self.server.closing.is_set)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _search(self, params) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the tasks search: the tasks as documents, and the next page's `before`."""
        queue, origin = self.server.open_queue()
        with queue:
            flt = taskquery.TaskFilter.parse(params, origin)
            before = params.get("before")
            try:
                before_id = parse_task_id(before) if before else None
                limit = int(params.get("limit") or 50)
            except ValueError:
                raise UsageError("limit must be a whole number") from None
            rows, nxt = taskquery.search(queue, flt, before_id, limit)
            return [taskquery.row_doc(r, origin) for r in rows], (taskquery.task_name(nxt) if nxt else None)

    def _task_doc(self, name: str) -> dict[str, Any]:
        queue, origin = self.server.open_queue()
        with queue:
            return taskquery.timeline(queue, parse_task_id(name), origin)

    def _tasks(self, params) -> None:
        docs, nxt = self._search(params)
        self._json({"tasks": docs, "next": nxt})

    def _timeline(self, name: str) -> None:
        self._json(self._task_doc(name))

    # --- POST -------------------------------------------------------------------------------
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 20)) if length else b""
        cfg = self.server.cfg
        given = self.headers.get("X-Orch-Token") or ""
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            given = given or auth[7:]
        if not cfg.token or not hmac.compare_digest(given.encode(), cfg.token.encode()):
            self._error(HTTPStatus.FORBIDDEN, "refused: a POST needs the server's token")
            return
        if not cfg.allow_actions:
            self._error(HTTPStatus.FORBIDDEN, "refused: actions are off (start the server with --allow-actions)")
            return
        if urlsplit(self.path).path != "/api/actions":
            self._error(404, f"no such endpoint {self.path}")
            return
        try:
            body = orjson.loads(raw or b"null")
        except orjson.JSONDecodeError:
            self._error(400, "the request body is not JSON")
            return
        self._guarded(self._act, body)

    def _act(self, body: Any) -> None:
        queue, origin = self.server.open_queue()
        with queue:
            actor = body.get("actor") if isinstance(body, dict) and body.get("actor") else self.server.cfg.actor
            self._json(actions.act(queue, body, str(actor), origin))


def make_server(cfg: ServeConfig) -> OnCallServer:
    monitor = Monitor(cfg.home, log=cfg.log)
    server = OnCallServer(cfg, monitor)
    server.alerter = None
    if cfg.alert_webhooks:
        server.alerter = Alerter(cfg.alert_webhooks, external_url=server.url)
        monitor.on_snapshot = server.alerter.observe
    monitor.start()
    return server


__all__ = ["ServeConfig", "OnCallServer", "make_server", "check_bind", "serve"]


def serve(cfg: ServeConfig, echo) -> None:
    """Serve until SIGTERM / SIGINT; `echo` prints the URL (port 0 picks a free port)."""
    import signal

    server = make_server(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
    thread.start()
    echo(f"serving {server.url} (home {cfg.home.root}; {'actions on' if cfg.allow_actions else 'read-only'})")
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.monitor.stop()
        server.server_close()
        if server.alerter is not None:
            server.monitor.snapshot_every = 0.0  # a last read: alerts reflect the log as it ends
            try:
                server.monitor.poll_once()
            except OrchestratorError:
                pass
            server.alerter.close()
        echo("stopped")
