"""A busy port for the on-call server: one `Error:` line naming it when the port was asked for,
a free port when it was only the default (two served soaks on one host do not collide)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from orchestrator.core.home import Home
from orchestrator.web.server import ServeConfig, make_server


@pytest.fixture
def held_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_on_a_port_in_use_is_one_error_line(tmp_path, orch_cmd, clean_env, held_port):
    done = subprocess.run(orch_cmd("soak", "serve", "--port", str(held_port), "--home", str(tmp_path / "h")),
                          capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"Error: port {held_port} on 127.0.0.1 is already in use (another "
                                        "`orch soak serve`?): pass --port 0 to pick a free one"]


def test_soak_start_serve_on_a_port_in_use_is_one_error_line_and_starts_no_run(tmp_path, orch_cmd, clean_env,
                                                                               held_port):
    home = tmp_path / "h"
    done = subprocess.run(orch_cmd("soak", "start", "--profile", "24h", "--serve", "--serve-port", str(held_port),
                                   "--home", str(home)), capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"Error: port {held_port} on 127.0.0.1 is already in use (another "
                                        "`orch soak serve`?): pass --port 0 to pick a free one"]
    assert not (home / "db" / "queue.db").exists()


def test_the_default_port_taken_means_a_free_one(tmp_path, held_port):
    server = make_server(ServeConfig(home=Home.resolve(str(tmp_path / "h")), port=held_port, port_fallback=True))
    try:
        assert server.server_address[1] not in (held_port, 0)
        assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.monitor.stop()
        server.server_close()
