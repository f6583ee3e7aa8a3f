"""`orch soak report`: the summary of a run from its JSONL log alone (no database).

Exit codes: 0 PASS; 1 FAIL (an SLO missed or not exercised), INCOMPLETE, STOPPED, or a log without `run_finished`
(a run still going or whose supervisor died: not a pass); 3 ABORTED; 2 the log is missing,
truncated or corrupt (the message names the line). Writing the report can fail with 1.
"""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.common import CommandError, home_option
from orchestrator.core.errors import EXIT_USAGE, LogError, OrchestratorError
from orchestrator.core.home import Home

EXIT_BY_VERDICT = {"PASS": 0, "FAIL": 1, "INCOMPLETE": 1, "STOPPED": 1, "ABORTED": 3}


def newest_log(home: Home) -> Path:
    """The newest run log `logs/soak/soak_*.jsonl` under the home (symlinks resolved)."""
    folder = home.logs
    candidates = {p.resolve() for p in folder.glob("soak_*.jsonl") if p.exists()} if folder.is_dir() else set()
    if not candidates:
        raise LogError(f"no soak log in {folder} (soak_*.jsonl); pass --log PATH")
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.name))


@click.command("report", help="Write soak_summary.md (and its charts) from a run's JSONL log alone; "
                              "print its path and the verdict. Exit 0 PASS, 1 FAIL/INCOMPLETE/STOPPED or no run_finished, "
                              "3 ABORTED, 2 bad log.")
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="The run's JSONL log (default: the newest logs/soak/soak_*.jsonl under the home).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="PATH",
              help="Folder for the summary and charts (default: the home's reports/soak).")
@home_option
def report(log_path: Path | None, out_dir: Path | None, home: str | None) -> None:
    from orchestrator.judge.incident import incident_path
    from orchestrator.judge.report import write_incident, write_summary
    from orchestrator.judge.sli import aggregate_file

    home_ = Home.resolve(home)
    try:
        log = log_path if log_path is not None else newest_log(home_)
        agg = aggregate_file(log)
    except LogError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    target = out_dir if out_dir is not None else home_.soak_reports
    try:
        incidents = []
        aborts = agg.aborts
        if aborts:
            existing = incident_path(Path(target), agg.run_id)
            incidents.append(existing if existing.exists() else write_incident(aborts[0], agg, Path(target)))
        summary = write_summary(agg, Path(target), log_path=Path(log), incidents=incidents)
    except OrchestratorError as exc:
        raise CommandError(str(exc), exc.exit_code) from None
    verdict = agg.verdict(aborted=False)
    shown = verdict if agg.state.complete else f"{verdict} (log incomplete: no run_finished)"
    click.echo(f"summary: {summary}")
    click.echo(f"verdict: {shown}")
    code = EXIT_BY_VERDICT[verdict]
    if not agg.state.complete and code == 0:
        code = 1
    click.get_current_context().exit(code)
