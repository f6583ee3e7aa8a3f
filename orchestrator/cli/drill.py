"""`orch drill ...`: list the failure drills, run one, run them all (docs/drills.md)."""

from __future__ import annotations

import os
import sys

import click

from orchestrator.cli.common import home_option, json_option, print_json

seed_option = click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=14, show_default=True,
                           help="Seed of the drills' choices.")


@click.group(help="Failure drills: each causes one failure for real and checks the invariants. "
                  "Exit 0 every check passed, 1 a check failed, 2 bad usage.")
def drill() -> None:
    pass


@drill.command("list", help="Name, what each drill causes, what must hold (the same in every home).")
@json_option
@home_option
def list_(as_json: bool, home: str | None) -> None:
    from orchestrator.drills.catalog import all_drills

    rows = [{"name": d.name, "causes": d.causes, "must_hold": d.must_hold} for d in all_drills()]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']}\n  causes:    {row['causes']}\n  must hold: {row['must_hold']}")


def _run(names: list[str], home: str | None, seed: int) -> None:
    from orchestrator.core.home import DB_ENV
    from orchestrator.drills.catalog import get
    from orchestrator.drills.runner import run_drills

    # A drill uses its own home's db/queue.db: $ORCH_DB is neither read nor passed to the
    # processes it starts (its workers, a soak it runs), which would otherwise open that database.
    os.environ.pop(DB_ENV, None)

    drills = [get(n) for n in names]
    results, report = run_drills(drills, home, seed)
    for r in results:
        click.echo(f"{r.drill.name}: {'PASS' if r.passed else 'FAIL'} ({r.wall:.1f} s)")
    click.echo(f"report: {report}")
    sys.exit(0 if all(r.passed for r in results) and _within(results, len(drills)) else 1)


def _within(results, n: int) -> bool:
    from orchestrator.drills.runner import ALL_WALL_LIMIT

    return n == 1 or sum(r.wall for r in results) <= ALL_WALL_LIMIT


@drill.command(help="Run one drill in its own fresh home (or in --home DIR); writes "
                    "reports/drills/<run>/exercise_report.md under the home.")
@click.argument("name")
@seed_option
@home_option
def run(name: str, seed: int, home: str | None) -> None:
    _run([name], home, seed)


@drill.command("all", help="Run every drill, one after another, into one report (at most 5 minutes).")
@seed_option
@home_option
def all_(seed: int, home: str | None) -> None:
    from orchestrator.drills.catalog import all_drills

    _run([d.name for d in all_drills()], home, seed)
