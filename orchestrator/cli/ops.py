"""`ops`: what an on-call engineer runs: status, cancel, replan, retry."""

from __future__ import annotations

from pathlib import Path

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
    task_id_arg,
)
from orchestrator.cli.render import render_history, render_status, render_tasks
from orchestrator.core.errors import UnknownTask, UsageError
from orchestrator.core.home import Home
from orchestrator.core.model import ErrorClass, State
from orchestrator.queue.tasks import task_name

id_option = click.option("--id", "task", required=True, metavar="ORCH-N", help="Task id, e.g. ORCH-12.")
notes_option = click.option("--notes", default=None, help="Why: kept with the event.")


@click.group(cls=Group, help="On-call operations on the soak queue.")
@click.version_option(package_name="soak-orchestrator", prog_name="ops")
def ops() -> None:
    pass


@ops.command(help="Counts per state, oldest PENDING age, leases, errors, recent operator actions. Never writes.")
@click.option("--id", "task", default=None, metavar="ORCH-N", help="Show one task's whole history.")
@queue_home_option
@json_option
def status(task: str | None, home: str | None, as_json: bool) -> None:
    task_id = task_id_arg(task) if task is not None else None
    if not Home.resolve(home).has_db():
        if task_id is not None:
            raise UnknownTask(f"no task {task} (no queue at {Home.resolve(home).db_shown})")
        doc = {"home": str(Home.resolve(home).root), "queue": None}
        print_json(doc) if as_json else click.echo(f"No queue yet at {Home.resolve(home).db_shown}.")
        return
    with open_queue(home) as queue:
        if task_id is not None:
            doc = {"task": _task_doc(queue.get(task_id)), "events": queue.history(task_id)}
            print_json(doc) if as_json else render_history(doc, queue.clock)
            return
        doc = queue.status()
        print_json(doc) if as_json else render_status(doc, queue.clock)


def _task_doc(task) -> dict:
    return {
        "id": task.name, "key": task.key, "state": task.state.value, "attempt": task.attempt,
        "max_attempts": task.max_attempts, "epoch": task.epoch, "worker": task.worker,
        "budget": task.budget, "error": task.error, "detail": task.detail, "plan": task.plan,
        "payload": task.payload,
    }


def _act(action: str, task: str, home: str | None, actor: str | None, notes: str | None,
         as_json: bool, budget: float | None = None) -> None:
    task_id = task_id_arg(task)
    who = resolve_actor(actor)
    with open_queue(home) as queue:
        before = queue.get(task_id).state
        after = queue.operate(action, task_id, actor=who, notes=notes, budget=budget)
    if as_json:
        print_json(_task_doc(after))
    elif action == "replan" and after.state == before:  # CANCELLED / FAILED: the plan waits for retry
        click.echo(f"{after.name}: plan recorded by {who} (still {after.state.value}); "
                   f"run `ops retry --id {after.name}` to run it")
    else:
        click.echo(f"{after.name}: {action} by {who} -> {after.state.value}")


@ops.command(help="Isolate a task: PENDING, IN_PROGRESS or BLOCKED -> CANCELLED (fences any lease).")
@id_option
@notes_option
@actor_option
@queue_home_option
@json_option
def cancel(task, notes, actor, home, as_json):
    _act("cancel", task, home, actor, notes, as_json)


@ops.command(help="Record a new plan (notes, budget). Releases a BLOCKED task to PENDING; on a "
                  "CANCELLED or FAILED task it records the plan and `ops retry` runs it.")
@id_option
@click.option("--notes", required=True, help="Cause and action (required).")
@click.option("--budget", type=float, default=None, help="New guardrail budget (> 0).")
@actor_option
@queue_home_option
@json_option
def replan(task, notes, budget, actor, home, as_json):
    notes = require_notes(notes)
    if budget is not None and not budget > 0:
        raise UsageError("--budget must be greater than 0")
    _act("replan", task, home, actor, notes, as_json, budget)


@ops.command(help="Run a FAILED or CANCELLED task again (fresh attempts). One by --id, or in bulk "
                  "by --state/--error-class, previewed with --dry-run.")
@click.option("--id", "task", default=None, metavar="ORCH-N", help="Task id, e.g. ORCH-12.")
@click.option("--state", "state", type=click.Choice(["FAILED", "CANCELLED"]), default=None,
              help="Bulk: every task in this state.")
@click.option("--error-class", "error_class", type=click.Choice([e.value for e in ErrorClass]),
              default=None, help="Bulk: only tasks whose last error has this class.")
@click.option("--dry-run", is_flag=True, help="Bulk: show what would be retried; write nothing.")
@notes_option
@actor_option
@queue_home_option
@json_option
def retry(task, state, error_class, dry_run, notes, actor, home, as_json):
    if task is not None:
        if state or error_class or dry_run:
            raise UsageError("--id cannot be combined with --state, --error-class or --dry-run")
        _act("retry", task, home, actor, notes, as_json)
        return
    if state is None:
        raise UsageError("give --id ORCH-N, or --state FAILED|CANCELLED for a bulk retry")
    who = resolve_actor(actor)
    with open_queue(home) as queue:
        ids = queue.select_ids(State(state), error_class)
        if dry_run:
            doc = {"would_retry": len(ids), "first": [task_name(i) for i in ids[:10]]}
            print_json(doc) if as_json else render_tasks("Would retry", ids)
            return
        done = queue.operate_many("retry", ids, actor=who, notes=notes)
    if as_json:
        print_json({"retried": len(done), "first": [t.name for t in done[:10]]})
    else:
        render_tasks(f"Retried by {who}", [t.id for t in done])


@ops.command(help="Write a tar.gz for an incident: versions, run record and profile, last log lines, "
                  "integrity check and counts, metrics, incident records, the run's processes. Secrets redacted.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Where to write it (default: <home>/reports/diagnose_<time>.tar.gz).")
@click.option("--lines", type=click.IntRange(1, 1_000_000), default=200, show_default=True,
              help="Last log lines to include.")
@queue_home_option
def diagnose(out, lines, home):
    from orchestrator.web.diagnose import write_bundle

    click.echo(str(write_bundle(Home.resolve(home), out, lines)))
