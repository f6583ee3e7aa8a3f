"""`orch`: enqueue, worker, the operator's closes (done, fail), and the soak commands."""

from __future__ import annotations

import dataclasses
import os
import socket

import click

from orchestrator.cli.common import (
    Group,
    actor_option,
    json_option,
    open_queue,
    print_json,
    queue_home_option,
    require_notes,
    resolve_actor,
)
from orchestrator.cli.ops import _act
from orchestrator.core import profiles
from orchestrator.core.errors import Refused, UsageError
from orchestrator.core.home import Home
from orchestrator.core.model import QueueConfig
from orchestrator.handlers.context import load_handler
from orchestrator.queue.runs import RunStore, join
from orchestrator.queue.tasks import parse_payload
from orchestrator.queue.writes import Queue
from orchestrator.worker.loop import WorkerConfig, run_worker


@click.group(cls=Group, help="Soak-test orchestrator: queue, workers, soak runs.")
@click.version_option(package_name="soak-orchestrator", prog_name="orch")
def orch() -> None:
    pass


@orch.command(help="Enqueue one task under an idempotency key.")
@click.option("--key", required=True, help="Idempotency key (unique per task).")
@click.option("--payload", default="{}", show_default=True, help="Task payload as JSON.")
@click.option("--budget", type=float, default=None, help="Guardrail budget (> 0).")
@actor_option
@queue_home_option
@json_option
def enqueue(key, payload, budget, actor, home, as_json):
    if not key.strip():
        raise UsageError("--key must not be empty")
    body = parse_payload(payload)
    if budget is not None and not budget > 0:
        raise UsageError("--budget must be greater than 0")
    who = resolve_actor(actor)
    with open_queue(home, create=True) as queue:
        result = queue.enqueue(key, body, budget=budget, actor=who)
    name = f"ORCH-{result.task}"
    if as_json:
        print_json({"id": name, "created": result.created})
    else:
        click.echo(f"{name} {'enqueued' if result.created else 'already enqueued (duplicate_enqueue recorded)'}")


@orch.command(help="Run a worker process: lease, heartbeat, run the handler, report. "
                   "SIGTERM finishes or releases the current task and exits.")
@click.option("--handler", default="orchestrator.handlers:synthetic", show_default=True,
              help="Handler as module:function.")
@click.option("--name", default=None, help="Worker name (default: host-pid).")
@click.option("--batch", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Tasks leased at once.")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Lease TTL in soak seconds (default: the soak run's, when one is running).")
@click.option("--poll", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="Idle poll interval in soak seconds.")
@click.option("--cap", type=click.IntRange(min=1), default=None, help="Global cap on tasks in flight.")
@click.option("--reap/--no-reap", default=True, show_default=True,
              help="Also return expired leases (off when a soak supervisor reaps).")
@click.option("--idle-exit", type=click.FloatRange(min=0), default=None,
              help="Exit after this many idle soak seconds.")
@click.option("--max-tasks", type=click.IntRange(min=1), default=None, help="Exit after this many tasks.")
@click.option("--synchronous", type=click.Choice(["NORMAL", "FULL"]), default="NORMAL", show_default=True)
@click.option("--lock-socket", default=None, hidden=True, help="The soak chaos agent's socket.")
@click.option("--run", "run_id", default=None, hidden=True, help="Join this soak run: wait for its clock.")
@queue_home_option
def worker(handler, name, batch, ttl, poll, cap, reap, idle_exit, max_tasks, synchronous, lock_socket, run_id,
           home):
    load_handler(handler)  # refuse a bad handler before touching the database
    home_ = Home.resolve(home).ensure()
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    if run_id is not None and join(home_.db, run_id, name, home_.runtime / run_id) is None:
        return  # the run is over
    config = QueueConfig(lease_ttl=ttl, inflight_cap=cap, synchronous=synchronous)
    with Queue(home_.db, config=config) as probe:  # the run's clock and retry policy, if a run is on
        clock = probe.clock
        run = RunStore(probe).active()
    if run is not None and run.clock_file and not clock.skips:
        raise Refused(f"soak run {run.id} rehearses on the skip clock, whose time lives in a file on its "
                      "supervisor's machine (not found here): only a constant-clock run takes workers from "
                      "other hosts")
    if run is not None:
        profile = profiles.from_dict(run.profile)
        config = dataclasses.replace(config, retry=profile.retry.policy())
        if click.get_current_context().get_parameter_source("ttl").name == "DEFAULT":
            # the run's lease TTL (a worker joining from another host too): a shorter one would let
            # its leases expire under it at the run's speed
            ttl = profile.effective_ttl(run.speed, skip=run.clock_file is not None)
            config = dataclasses.replace(config, lease_ttl=ttl)
    joined = run_id or (run.id if run is not None else None)  # the run's folder holds its downstream
    wcfg = WorkerConfig(
        name=name, handler=handler, batch=batch, poll=poll,
        reap_every=config.lease_ttl / 2 if reap else None, idle_exit=idle_exit, max_tasks=max_tasks, lock_socket=lock_socket,
        run=joined, workdir=str(home_.runtime / joined) if joined else str(home_.runtime),
    )
    raise SystemExit(run_worker(home_.db, clock, config, wcfg))


@orch.command(help="Operator close: a PENDING, IN_PROGRESS or BLOCKED task -> DONE (no effect written).")
@click.option("--id", "task", required=True, metavar="ORCH-N", help="Task id, e.g. ORCH-12.")
@click.option("--notes", required=True, help="Why (required).")
@actor_option
@queue_home_option
@json_option
def done(task, notes, actor, home, as_json):
    _act("done", task, home, actor, require_notes(notes), as_json)


@orch.command(help="Operator close: a PENDING, IN_PROGRESS or BLOCKED task -> FAILED.")
@click.option("--id", "task", required=True, metavar="ORCH-N", help="Task id, e.g. ORCH-12.")
@click.option("--notes", required=True, help="Why (required).")
@actor_option
@queue_home_option
@json_option
def fail(task, notes, actor, home, as_json):
    _act("fail", task, home, actor, require_notes(notes), as_json)


from orchestrator.cli.soak import soak  # noqa: E402

orch.add_command(soak)

from orchestrator.cli.drill import drill  # noqa: E402

orch.add_command(drill)
