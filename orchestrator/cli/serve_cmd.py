"""`orch soak serve`: the live on-call view (docs/oncall-view.md)."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.common import queue_home_option, resolve_actor
from orchestrator.core.home import Home

DEFAULT_PORT = 8765


@click.command("serve", help="Serve the live on-call view of the home's latest run: overview, tasks, SSE, "
                             "/metrics. Binds 127.0.0.1 unless --token is given; read-only unless --allow-actions.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"TCP port (default {DEFAULT_PORT}, or a free one when that is taken; 0 picks a free one; "
                   "the URL is printed).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")
@click.option("--token", default=None, envvar="ORCH_TOKEN", help="Secret every POST must carry (or $ORCH_TOKEN).")
@click.option("--allow-actions", is_flag=True, help="Allow retry/cancel/replan/done/fail from the page (needs --token).")
@click.option("--log", "log_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Follow this JSONL log instead of the home's newest one.")
@click.option("--actor", default=None, help="Actor recorded for actions (default: $ORCH_ACTOR, else the login name).")
@click.option("--alert-webhook", "webhooks", multiple=True, metavar="URL",
              help="POST Alertmanager-style alerts here when an abort rule trips or a burn rate fires, and when "
                   "resolved (repeatable; URLs are redacted in logs).")
@queue_home_option
def serve(port, host, token, allow_actions, log_path, actor, webhooks, home):
    from orchestrator.web.alerts import check_urls
    from orchestrator.web.server import ServeConfig, check_bind
    from orchestrator.web.server import serve as run

    cfg = ServeConfig(home=Home.resolve(home), host=host, port=DEFAULT_PORT if port is None else port, token=token,
                      allow_actions=allow_actions, actor=f"web:{resolve_actor(actor)}", log=log_path,
                      alert_webhooks=check_urls(list(webhooks)), port_fallback=port is None)
    check_bind(cfg)
    run(cfg, lambda line: click.echo(line, nl=True))


def spawn_server(home: Home, port: int | None, webhooks: list[str]):
    """`orch soak start --serve`: the on-call server as its own process (so neither it nor a slow
    webhook receiver can slow the soak); returns (process, its 'serving URL' line)."""
    import subprocess
    import sys

    from orchestrator.core.errors import StoreError

    argv = [sys.executable, "-m", "orchestrator", "soak", "serve", "--home", str(home.root), *home.db_args]
    if port is not None:
        argv += ["--port", str(port)]
    for url in webhooks:
        argv += ["--alert-webhook", url]
    from orchestrator.web.server import check_port

    if port is not None:
        check_port("127.0.0.1", port)  # one line, before a process is started for a taken port
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # its stderr is the user's
    line = proc.stdout.readline().strip()
    if not line.startswith("serving "):
        proc.wait()
        proc.stdout.close()
        raise StoreError(f"the on-call server did not start (exit {proc.returncode})")
    return proc, line


def stop_spawned(proc) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
