"""What every command shares: `--home`, error mapping to exit codes, output helpers."""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from orchestrator.core.errors import EXIT_USAGE, OrchestratorError, UsageError
from orchestrator.core.home import Home
from orchestrator.core.model import QueueConfig
from orchestrator.queue.tasks import parse_task_id
from orchestrator.queue.writes import Queue


class CommandError(click.ClickException):
    """A one-line `Error: ...` with the exit code of the error that caused it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _one_line(exc: click.UsageError) -> CommandError:
    """click's usage error (usage, hint and message on four lines) as one `Error: ...` line, exit 2."""
    where = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
    return CommandError(exc.format_message().rstrip(".") + where, EXIT_USAGE)


class Group(click.Group):
    """The root group of `orch` and `ops`: every error of every command below it, the package's
    and click's usage errors alike, is one line `Error: ...` with its exit code."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OrchestratorError as exc:
            raise CommandError(str(exc), exc.exit_code) from None
        except click.UsageError as exc:
            raise _one_line(exc) from None


home_option = click.option(
    "--home", "home", default=None, metavar="DIR",
    help="Data home (default: $ORCH_HOME, else automation/orchestrator).",
)
_DB_KEY = "orchestrator.db"  # where `--db` leaves its value for `--home` (click's per-invocation meta)


def _keep_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.meta[_DB_KEY] = value


def _resolve_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> Home:
    """`--home` and `--db` (eager: already seen) as one `Home`; a bad URL is a usage error."""
    try:
        return Home.resolve(value, ctx.meta.get(_DB_KEY))
    except UsageError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def queue_home_option(fn: Callable) -> Callable:
    """`--home DIR` and `--db URL` of a command that opens the queue: the command gets `home`, a
    `Home` whose `db` is the chosen database (resolved before the command runs, so a bad URL
    writes nothing)."""
    fn = click.option("--home", "home", default=None, metavar="DIR", callback=_resolve_home,
                      help="Data home (default: $ORCH_HOME, else automation/orchestrator).")(fn)
    return click.option("--db", default=None, metavar="URL", expose_value=False, is_eager=True, callback=_keep_db,
                        help="The queue database: sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE "
                             "(default: $ORCH_DB, else db/queue.db under the home).")(fn)

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
actor_option = click.option(
    "--actor", default=None, help="Who acts (default: $ORCH_ACTOR, else the login name)."
)


def resolve_actor(actor: str | None) -> str:
    chosen = actor or os.environ.get("ORCH_ACTOR")
    if not chosen:
        try:
            chosen = getpass.getuser()
        except (KeyError, OSError):
            chosen = "operator"
    if not chosen.strip():
        raise UsageError("--actor must not be empty")
    return chosen.strip()


def require_notes(notes: str | None, option: str = "--notes") -> str:
    if notes is None or not notes.strip():
        raise UsageError(f"{option} must not be empty")
    return notes.strip()


def task_id_arg(value: str) -> int:
    return parse_task_id(value)


def open_queue(home_opt: str | Home | None, *, create: bool = False, config: QueueConfig | None = None) -> Queue:
    """Open the home's queue (on the clock of the run in progress, if any)."""
    home = Home.resolve(home_opt)
    if create and not home.db_on_server:
        home.ensure()
    queue = Queue(home.db, config=config, create=create)
    if create and home.db_on_server:  # the server answered: now the home's folders
        home.ensure()
    return queue


def print_json(doc: Any) -> None:
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def is_tty() -> bool:
    return sys.stdout.isatty()


def usage_guard(fn: Callable) -> Callable:
    """Turn a UsageError raised while parsing into exit code 2 (used on callbacks)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None

    return wrapper
