"""exercise_report.md: per drill, a scenario table, an invariant table, the violations with
their evidence, and the time each recovery took in soak seconds."""

from __future__ import annotations

from pathlib import Path

from orchestrator.drills.base import Check
from orchestrator.queue.runs import commit_sha


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[Check], first: str) -> list[str]:
    out = [f"| {first} | what was done | expected | observed | result |", "|---|---|---|---|---|"]
    for c in rows:
        out.append(f"| {_cell(c.scenario)} | {_cell(c.done)} | {_cell(c.expected)} | {_cell(c.observed)} | "
                   f"{'PASS' if c.passed else '**FAIL**'} |")
    return out


def write_report(root: Path, run_id: str, seed: int, results: list, total_wall: float,
                 all_limit: float | None) -> Path:
    passed = all(r.passed for r in results) and (all_limit is None or total_wall <= all_limit)
    lines = [
        f"# Drill exercise report {run_id}",
        "",
        f"**Verdict: {'PASS' if passed else 'FAIL'}** — {sum(r.passed for r in results)} of {len(results)} "
        f"drills passed; total wall time {total_wall:.1f} s"
        + (f" (limit {all_limit:g} s)" if all_limit else "") + ".",
        "",
        f"- commit: `{commit_sha() or 'unknown'}`",
        f"- seed: {seed}",
        "",
        "| drill | result | wall s | speed | home | log |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| [{r.drill.name}](#{r.drill.name}) | {'PASS' if r.passed else '**FAIL**'} | "
                     f"{r.wall:.1f} | {r.drill.speed:g} | `{r.home}` | `{r.log}` |")
    for r in results:
        lines += ["", f"## {r.drill.name}", "",
                  f"**{'PASS' if r.passed else 'FAIL'}** in {r.wall:.1f} s of wall time at speed "
                  f"{r.drill.speed:g} (soak seconds per wall second).", "",
                  f"- causes: {r.drill.causes}", f"- must hold: {r.drill.must_hold}", "",
                  "### Scenario", ""]
        lines += _table(r.scenario, "scenario")
        lines += ["", "### Invariants", ""]
        lines += _table(r.invariants, "invariant")
        bad = [c for c in r.scenario + r.invariants if not c.passed]
        lines += ["", "### Violations", ""]
        if not bad:
            lines.append("None.")
        for c in bad:
            lines.append(f"- **{_cell(c.scenario)}**: {_cell(c.observed)}"
                         + (f" — evidence: {_cell(c.evidence.text())}" if c.evidence.text() else ""))
        lines += ["", "### Recovery times (soak seconds)", ""]
        if not r.recoveries:
            lines.append("No recovery to time in this drill.")
        else:
            lines += ["| recovery | soak s |", "|---|---|"]
            lines += [f"| {_cell(x.what)} | {'did not recover' if x.soak_seconds is None else x.soak_seconds} |"
                      for x in r.recoveries]
    path = root / "exercise_report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
