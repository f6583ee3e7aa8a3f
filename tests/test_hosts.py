"""Workers on other hosts (issue 15, docs/storage.md "Workers on other hosts"): a worker in a
network namespace of its own, which reaches the PostgreSQL server only over TCP (through a veth
pair and a relay on the host's side; the host's loopback, where the server listens, is not in its
namespace), with a home of its own (another machine's run folder), joins a running soak, is
paused past its lease and then killed mid-task, and the run's log still passes the same checks:
every task once, no effect twice, the ledger's entries one per key (the run's downstream is on
the server, shared by both hosts' workers).

Needs root and `ip netns` (CAP_NET_ADMIN): skipped with the reason where the machine refuses them."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import pytest
from click.testing import CliRunner
from test_soak import acceptance_profile, check_invariants, read_log

from orchestrator.cli.orch import orch
from orchestrator.core.clock import WALL
from orchestrator.core.skipclock import await_stopped
from orchestrator.handlers.ledger import ServerLedger
from orchestrator.queue.tasks import task_name
from orchestrator.queue.writes import Queue

pytestmark = pytest.mark.pg


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Relay(threading.Thread):
    """TCP from the namespace's side of the veth to the server on the host's loopback: each
    connection accepted at (host, port) is piped both ways to `target`."""

    def __init__(self, host: str, target: tuple[str, int]):
        super().__init__(name="relay", daemon=True)
        self.server = socket.create_server((host, 0))
        self.port = self.server.getsockname()[1]
        self.target = target
        self.ports: set[int] = set()  # the local ports of the connections to the server (its client_port)

    def run(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.ports.add(upstream.getsockname()[1])
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@dataclass
class FarHost:
    prefix: list[str]  # runs a command in the namespace
    url_for: Callable[[str], str]  # a database URL as the namespace reaches it
    server: tuple[str, int]  # where the server listens, on this namespace's loopback
    relay: Relay

    def in_transaction(self, pg_server: str) -> bool:
        """Whether a session that came through the relay has a transaction open (it may hold row
        locks, or the event counter's, that every writer would wait for)."""
        import psycopg

        with psycopg.connect(pg_server, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s) "
                               "AND xact_start IS NOT NULL", (list(self.relay.ports),)).fetchone()
        return row[0] > 0


@pytest.fixture
def far_host(pg_server):
    """A network namespace with a veth pair to this one, and a relay to the server (`FarHost`)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        pytest.skip("a network namespace needs root, ip and nsenter")
    tag = secrets.token_hex(3)
    ns, here_if, there_if = f"orch-{tag}", f"oh{tag}", f"on{tag}"
    net = f"10.213.{int(tag[:2], 16)}"
    relay = None
    try:
        try:
            _ip("netns", "add", ns)
            _ip("link", "add", here_if, "type", "veth", "peer", "name", there_if, "netns", ns)
            _ip("addr", "add", f"{net}.1/30", "dev", here_if)
            _ip("link", "set", here_if, "up")
            _ip("-n", ns, "addr", "add", f"{net}.2/30", "dev", there_if)
            _ip("-n", ns, "link", "set", there_if, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, OSError) as exc:
            pytest.skip(f"cannot make a network namespace with a veth pair here: {getattr(exc, 'stderr', exc)}")
        parts = urlsplit(pg_server)
        server = (parts.hostname, parts.port or 5432)
        relay = Relay(f"{net}.1", server)
        relay.start()
        here, there = f"@{parts.hostname}:{parts.port}/", f"@{net}.1:{relay.port}/"
        yield FarHost(["nsenter", f"--net=/run/netns/{ns}", "--"], lambda url: url.replace(here, there, 1), server,
                      relay)
    finally:
        if relay is not None:
            relay.close()
        subprocess.run(["ip", "link", "del", here_if], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


def test_a_worker_in_another_network_namespace_joins_a_soak_and_survives_pause_and_kill(
        tmp_path, orch_cmd, clean_env, children, wait_for, pg_server, pg_database, far_host, request):
    prefix, server = far_host.prefix, far_host.server
    url = pg_database()
    far_url = far_host.url_for(url)
    assert far_url != url
    # the namespace reaches the server through the relay only: the host's loopback is not there
    probe = subprocess.run([*prefix, sys.executable, "-c",
                            "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)",
                            server[0], str(server[1])], capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode != 0 and "Connection refused" in probe.stderr, probe.stderr

    home, far_home = tmp_path / "home", tmp_path / "far-home"
    profile = acceptance_profile(tmp_path, duration=6 * 3600.0)
    sup = children.start(orch_cmd("soak", "start", "--profile", str(profile), "--speed", "720", "--workers", "2",
                                  "--seed", "21", "--home", str(home), "--db", url),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())

    def run_id() -> str | None:
        status = CliRunner().invoke(orch, ["soak", "status", "--home", str(home), "--db", url, "--json"])
        doc = orjson.loads(status.output) if status.exit_code == 0 else None
        return doc["run_id"] if isinstance(doc, dict) and doc.get("status") == "running" else None

    wait_for(lambda: run_id() is not None, timeout=60, what="the run to start")
    run = run_id()

    def start_far() -> subprocess.Popen:
        with open(tmp_path / "far.err", "ab") as err:  # the far worker's lines, for a failure's message
            return children.start([*prefix, *orch_cmd("worker", "--db", far_url, "--run", run, "--home",
                                                      str(far_home), "--name", "far", "--no-reap")],
                                  stdout=subprocess.DEVNULL, stderr=err, env=clean_env())

    def far_said() -> str:
        return (tmp_path / "far.err").read_text()[-2000:]

    seen: list[dict] = []
    reader = Queue(url, WALL, create=False)
    request.addfinalizer(reader.close)

    def events() -> list[dict]:
        """The run's events so far (read on from the last one seen)."""
        seen.extend(reader.events_after(seen[-1]["seq"] if seen else 0, 1_000_000))
        return seen

    def held_by_far() -> int | None:
        """The task the far worker holds now: its last lease, with no event of the task since."""
        last = next((e for e in reversed(events()) if e["event"] == "leased" and e.get("worker") == "far"), None)
        if last is None or any(e.get("task") == last["task"] for e in seen if e["seq"] > last["seq"]):
            return None
        return last["task"]

    def redone(task: int) -> bool:
        """The task's lease expired in soak time, and another worker took the task on (unless the
        expiry ended it: its last attempt)."""
        mine = [e for e in events() if e.get("task") == task]
        expired = next((e for e in mine if e["event"] == "lease_expired"), None)
        return expired is not None and (expired["state"] != "PENDING" or any(
            e["event"] == "leased" and e.get("worker") != "far" and e["seq"] > expired["seq"] for e in mine))

    def wait_redone(task: int) -> None:
        try:
            wait_for(lambda: redone(task), timeout=60, what=f"task {task} expired and taken on by another worker")
        except AssertionError as exc:
            story = [(e["seq"], e["event"], e["state"], e.get("worker")) for e in events() if e.get("task") == task]
            raise AssertionError(f"{exc}: its events {story}") from None

    def stop_holding(proc: subprocess.Popen, other_than: int | None = None) -> int:
        """SIGSTOP the far worker at a moment it holds a lease outside a transaction (a task takes
        it milliseconds at 720x: stop, look, and let it go on if it held none or was writing: a
        pause that holds locks every writer waits for is the lock hog's fault, not this one's);
        the task it holds."""

        def stopped_holding() -> int | None:
            os.kill(proc.pid, signal.SIGSTOP)
            assert await_stopped(proc.pid, 10.0)
            task = held_by_far()
            if task not in (None, other_than) and not far_host.in_transaction(pg_server):
                row = reader.get(task)  # the task's row: the events read may lag a commit in flight
                if row.state == "IN_PROGRESS" and row.worker == "far":
                    return task
            os.kill(proc.pid, signal.SIGCONT)
            return None

        try:
            return wait_for(stopped_holding, timeout=60, interval=0.003, what="the far worker to hold a lease")
        except AssertionError as exc:
            raise AssertionError(f"{exc} (exit {proc.poll()}; the far workers said: {far_said()})") from None

    far = start_far()
    # paused past its lease mid-task: the lease expires in soak time, another worker does the task
    stalled = stop_holding(far)
    wait_redone(stalled)
    os.kill(far.pid, signal.SIGCONT)
    # killed mid-task: the same, and a new far worker goes on
    killed = stop_holding(far, other_than=stalled)
    os.kill(far.pid, signal.SIGKILL)
    far.wait(timeout=10)
    wait_redone(killed)
    restarted = events()[-1]["seq"]
    far = start_far()
    try:
        wait_for(lambda: any(e["event"] == "completed" and e.get("worker") == "far" and e["seq"] > restarted
                             for e in events()), timeout=60, what="the new far worker to finish a task")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (exit {far.poll()}; the far workers said: {far_said()})") from None
    assert sup.wait(timeout=240) in (0, 1), sup.stderr.read().decode()  # finished (an SLO may miss)
    assert far.wait(timeout=60) == 0  # the run is over: the joined worker leaves by itself
    assert f"far: soak run {run} is over: exiting" in far_said()
    header, logged = read_log(home, "accept")
    check_invariants(home, header, logged, db_file=url, joined=frozenset({"far"}))
    done_by = {e["worker"] for e in logged if e["event"] == "completed"}
    assert "far" in done_by and done_by - {"far"}  # both hosts did tasks
    expired = {e["task"] for e in logged if e["event"] == "lease_expired" and e.get("worker") == "far"}
    assert {task_name(stalled), task_name(killed)} <= expired  # the log names tasks ORCH-N
    assert not [e for e in logged if e["event"] == "abort"]  # rule 2 (a duplicate side effect) among them
    assert logged[-1]["verdict"] != "ABORTED"
    ledger = ServerLedger(url)
    try:
        keys = [e["key"] for e in ledger.entries()]
    finally:
        ledger.close()
    assert keys and len(keys) == len(set(keys))  # one entry per key, whichever host applied it
    assert not (far_home / "run" / run / "ledger.db").exists()  # the far host kept no downstream of its own
