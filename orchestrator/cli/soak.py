"""`orch soak ...`: start, status, stop, resume, profiles, report.

Heavy modules (numpy, APScheduler, matplotlib) are imported inside the commands, so that
`orch worker` starts fast.
"""

from __future__ import annotations

import sys

import click

from orchestrator.cli.common import home_option, json_option, print_json, queue_home_option
from orchestrator.cli.render import emit_table
from orchestrator.core.errors import UsageError
from orchestrator.core.home import Home
from orchestrator.judge.reporttext import ended, soak_clock, span

SPEED_MAX = 100_000.0
DEFAULT_BUSY_RATE = 20.0  # the skip clock's busy rate: see docs/soak.md for why


@click.group(help="Soak runs: 24h / 72h profiles, real faults, SLIs, abort rules, summary.")
def soak() -> None:
    pass


def _finish(outcome) -> None:
    click.echo(f"run {outcome.run_id}: {outcome.verdict}")
    if outcome.summary:
        click.echo(f"summary: {outcome.summary}")
    if outcome.incident:
        click.echo(f"incident: {outcome.incident}")
    sys.exit(outcome.exit_code)


@soak.command(help="Run a soak in the foreground. Exit 0 passed, 1 SLO missed (or stopped), 3 aborted, "
                   "2 bad usage.")
@click.option("--profile", "profile_spec", required=True, metavar="24h|72h|PATH.toml",
              help="A built-in profile or a TOML file.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True, max=SPEED_MAX), default=1.0,
              show_default=True, help="Soak seconds per wall second (1: a real soak; 1440: 24h in a minute).")
@click.option("--clock", "clock_mode", type=click.Choice(["constant", "skip"]), default="constant", show_default=True,
              help="constant: soak time runs --speed times the wall clock. skip: a rehearsal that runs at "
                   "--busy-rate while anything works and jumps over idle time (docs/soak.md).")
@click.option("--busy-rate", type=click.FloatRange(min=1, max=SPEED_MAX), default=None,
              help=f"Soak seconds per wall second while the run works, with --clock skip (default {DEFAULT_BUSY_RATE:g}).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (default: the profile's).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=14, show_default=True,
              help="Seed of the arrival schedule.")
@click.option("--handler", default="orchestrator.handlers:synthetic", show_default=True,
              help="Task handler as module:function.")
@click.option("--serve", is_flag=True, help="Also serve the live on-call view (`orch soak serve`) while the run lasts.")
@click.option("--serve-port", type=click.IntRange(0, 65535), default=None,
              help="Port of --serve (default 8765, or a free one when that is taken; 0 picks a free one).")
@click.option("--alert-webhook", "webhooks", multiple=True, metavar="URL",
              help="Alertmanager-style alerts from the on-call server (implies --serve; repeatable).")
@queue_home_option
def start(profile_spec, speed, clock_mode, busy_rate, workers, seed, handler, serve, serve_port, webhooks, home):
    from orchestrator.cli.serve_cmd import spawn_server, stop_spawned
    from orchestrator.core import profiles
    from orchestrator.soak.control import StartRequest
    from orchestrator.soak.control import start as start_run
    from orchestrator.web.alerts import check_urls

    source = click.get_current_context().get_parameter_source
    if clock_mode == "skip" and source("speed").name != "DEFAULT":
        raise click.UsageError("--speed is the constant clock's; with --clock skip give --busy-rate")
    if clock_mode == "constant" and busy_rate is not None:
        raise click.UsageError("--busy-rate needs --clock skip")
    profile = profiles.load(profile_spec)
    skip = clock_mode == "skip"
    req = StartRequest(profile=profile, speed=(busy_rate or DEFAULT_BUSY_RATE) if skip else speed, seed=seed,
                       workers=workers or profile.workers, handler=handler, live=sys.stdout.isatty(), skip=skip)
    server = None
    if serve or webhooks:
        server, line = spawn_server(Home.resolve(home), serve_port, check_urls(list(webhooks)))
        click.echo(line)
    try:
        outcome = start_run(Home.resolve(home), req)
    finally:
        if server is not None:
            stop_spawned(server)
    _finish(outcome)


@soak.command(help="Continue a run whose supervisor was killed: same run, no arrival lost or doubled.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (default: the profile's).")
@click.option("--handler", default="orchestrator.handlers:synthetic", show_default=True)
@queue_home_option
def resume(workers, handler, home):
    from orchestrator.soak.control import resume as resume_run

    _finish(resume_run(Home.resolve(home), workers, handler, sys.stdout.isatty()))


@soak.command(help="Stop the run in progress cleanly (its summary is still written).")
@queue_home_option
def stop(home):
    from orchestrator.soak.control import stop as stop_run

    _require_db(home)
    click.echo(stop_run(Home.resolve(home)))


@soak.command(help="The current or last run: profile, seed, speed, soak time, counts, faults so far.")
@click.option("--watch", is_flag=True, help="Repeat every --every seconds until the run ends (live on a terminal, "
                                            "one line per period otherwise).")
@click.option("--every", type=click.FloatRange(min=0.05), default=2.0, show_default=True, help="Watch period (wall s).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Watch: stop after N periods.")
@queue_home_option
@json_option
def status(watch, every, count, home, as_json):
    from orchestrator.soak.control import status as run_status

    def fetch():
        return run_status(Home.resolve(home)) if Home.resolve(home).has_db() else None

    if watch:
        from orchestrator.cli.watch import watch as watch_status

        watch_status(fetch, every, count, as_json)
        return
    doc = fetch()
    if as_json:
        print_json(doc)
        return
    if doc is None:
        click.echo("No soak run in this home.")
        return
    pace = (f"skip clock, busy rate {doc['speed']:g}" if doc.get("clock") == "skip" else f"speed {doc['speed']:g}")
    click.echo(f"run {doc['run_id']}  profile {doc['profile']}  seed {doc['seed']}  {pace}  "
               f"status {doc['status']}" + (f"  verdict {doc['verdict']}" if doc["verdict"] else ""))
    click.echo(f"soak time {soak_clock(doc['soak_t'])} of {span(doc['duration'])}   "
               f"arrivals enqueued {doc['arrivals_enqueued']}   commit {doc['commit'] or '-'}")
    if doc["ended"]:
        click.echo(f"ended {ended(doc['ended']['t'], doc['ended']['wall'])}")
    counts = doc["counts"]
    emit_table("Tasks by state", list(counts), [[str(v) for v in counts.values()]])
    faults = doc["faults"]
    if faults:
        emit_table("Faults injected so far", list(faults), [[str(v) for v in faults.values()]])
    click.echo(f"log: {doc['log']}")
    if doc["status"] == "interrupted":
        click.echo("The supervisor is gone: `orch soak resume` continues this run.")


def _require_db(home: str | None) -> None:
    from orchestrator.core.errors import Refused

    if not Home.resolve(home).has_db():
        raise Refused("no soak run in this home")


@soak.command(help="List the built-in profiles (the same in every home).")
@home_option
def profiles(home):
    from orchestrator.core import profiles as p

    rows = [[name, span(pr.duration), f"{pr.arrivals.rate:g}/min", str(pr.workers), pr.description]
            for name, pr in p.BUILTIN.items()]
    emit_table("Built-in profiles", ["name", "duration", "base rate", "workers", "description"], rows)


@soak.group(help="Show a profile.")
def profile():
    pass


@profile.command(name="show", help="Print a profile as TOML (saved and passed to --profile, it gives the same run).")
@click.argument("name")
@home_option
def profile_show(name, home):
    from orchestrator.core import profiles as p

    click.echo(p.load(name).to_toml(), nl=False)


@soak.command(hidden=True, help="The log shipper of a run (started by the supervisor).")
@click.option("--run", "run_id", required=True)
@queue_home_option
def ship(run_id, home):
    from orchestrator.soak.shipper import run_shipper

    home_ = Home.resolve(home)
    sys.exit(run_shipper(home_.db, run_id, home_.runtime / run_id))


@soak.command(hidden=True, help="The chaos agent of a run (started by the supervisor).")
@click.option("--run", "run_id", required=True)
@click.option("--socket", "sock", required=True)
@queue_home_option
def agent(run_id, sock, home):
    from pathlib import Path

    from orchestrator.faults.agent import run_agent

    if not run_id.strip():
        raise UsageError("--run must not be empty")
    home_ = Home.resolve(home)
    sys.exit(run_agent(home_.db, run_id, Path(sock), home_.runtime / run_id))


from orchestrator.cli.report_cmd import report  # noqa: E402
from orchestrator.cli.serve_cmd import serve  # noqa: E402

soak.add_command(report)
soak.add_command(serve)
