"""Formatting shared by the soak summary and the incident record: shares, seconds, clock
times in UTC and KST, markdown tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

KST = timezone(timedelta(hours=9), "KST")


def pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f} %"


def secs(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f} s"


def num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def soak_clock(t: float | None) -> str:
    """Soak seconds as `h:mm:ss` (hours may pass 24)."""
    if t is None:
        return "-"
    whole = int(round(t))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def span(seconds: float | None) -> str:
    """A length of soak time in its own unit: `72h`, `1.5h`, `10m`, `45s` (a sub-hour profile is not
    `0.17h`, nor `0h`)."""
    if seconds is None:
        return "-"
    s = float(seconds)
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if s >= size:
            return f"{round(s / size, 2):g}{unit}"
    return f"{round(s, 2):g}s"


def parse_wall(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def utc(text: str | None) -> str:
    stamp = parse_wall(text)
    return "-" if stamp is None else stamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def pace(run: dict[str, Any], planned: float | None = None) -> str:
    """How the run's soak clock ran: `1440x`, or the skip clock and its busy rate."""
    speed = run.get("speed")
    if not speed:
        return "-"
    if run.get("clock") == "skip":
        return f"skip clock: {speed:g}x while busy, idle time skipped"
    return f"{speed:g}x" + (f" ({planned / speed / 60:,.1f} wall minutes planned)" if planned else "")


def ended(t: float, wall: str | None) -> str:
    """A run's end (`core.clock.RunEnd`) as the terminal view, `orch soak status` and the summary
    all print it: its soak time since the start and its UTC wall time."""
    return f"soak {soak_clock(t)}, wall {utc(wall)}"


def end_row(run: dict[str, Any]) -> tuple[str, str]:
    """The summary's row for the end: where the run ended (`ended`, with KST), or where the log
    stops when it has no `run_finished` yet."""
    end = run.get("ended")
    if end is None:
        return "log ends", f"soak {soak_clock(run['end_t'])}, wall {both(run['end_wall'])}"
    return "ended", f"{ended(end['t'], end['wall'])} ({kst(end['wall'])})"


def kst(text: str | None) -> str:
    stamp = parse_wall(text)
    return "-" if stamp is None else stamp.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S KST")


def both(text: str | None) -> str:
    """A clock time for a person: UTC and KST."""
    return "-" if parse_wall(text) is None else f"{utc(text)} ({kst(text)})"


def cell(value: Any) -> str:
    text = num(value) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\n", " ")


def table(columns: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def target_text(row: dict[str, Any]) -> str:
    value, name = row["target"], row["name"].lower()
    if "success" in name or "recovery" in name:
        return f"{row['op']} {pct(value, 1)}"
    if "p95" in name:
        return f"{row['op']} {value:g} s"
    return f"{row['op']} {value}"


def measured_text(row: dict[str, Any]) -> str:
    value = row["measured"]
    if value is None:
        return f"n/a ({row['note']})"
    name = row["name"].lower()
    if "success" in name or "recovery" in name:
        return f"{pct(value)} ({row['note']})"
    if "p95" in name:
        return f"{value:,.1f} s ({row['note']})"
    return f"{value} ({row['note']})"


VERDICT_TEXT = {
    "PASS": "every SLO met and no abort rule tripped",
    "FAIL": "the run ended, but at least one SLO was missed or not exercised although the profile planned "
            "what feeds it (see the SLO table)",
    "INCOMPLETE": "the run reached its end with tasks still PENDING or IN_PROGRESS: it is not a pass "
                  "(see Open tasks at the end)",
    "ABORTED": "an abort rule tripped and the soak was stopped (see Aborts and incidents)",
    "STOPPED": "the run was stopped before it drained: it proves nothing either way",
}


def slo_result(row: dict[str, Any]) -> str:
    """The result cell of an SLO row: pass, FAIL, or not exercised (and whether that blocks a PASS)."""
    if row["pass"] is None:
        return "**not exercised** (blocks PASS)" if row.get("required") else "not exercised"
    return "pass" if row["pass"] else "**FAIL**"


def missed_slos(f: dict[str, Any]) -> list[str]:
    """The SLO rows that keep the run from passing: missed, or required and not exercised."""
    return [row["name"] + (" (not exercised)" if row["pass"] is None else "") for row in f["slo"]
            if row["pass"] is False or (row["pass"] is None and row.get("required"))]
