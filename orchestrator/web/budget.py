"""The error budget of SLI-1 and its burn rates over window pairs, multiwindow burn-rate style.

The budget is the share of tasks the success SLO lets fail (1 - slo.success). A burn rate is the
failure ratio of a window divided by that budget: 1 spends the budget exactly over the run. The
window pairs and thresholds are the SRE workbook's for a 30-day SLO period (1h/5m at 14.4, 6h/30m
at 6, 3d/6h at 1), scaled to the run's planned length and rounded to whole soak minutes (at least
one): a 72h run watches 6m/1m, 36m/3m and 432m/36m. A pair fires when both windows burn at or
above the threshold and the long window holds at least `min_volume` tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.judge.sli import Aggregator

SLO_PERIOD = 30 * 86400.0
PAIRS = ((3600.0, 300.0, 14.4, "page"), (21600.0, 1800.0, 6.0, "page"), (259200.0, 21600.0, 1.0, "ticket"))


def windows(duration: float) -> list[dict[str, Any]]:
    """The window pairs of a run of `duration` soak seconds, in whole minutes."""
    scale = (duration or 86400.0) / SLO_PERIOD
    return [{"name": f"burn_{i + 1}", "long_min": max(1, round(long * scale / 60)),
             "short_min": max(1, round(short * scale / 60)), "threshold": threshold, "severity": severity}
            for i, (long, short, threshold, severity) in enumerate(PAIRS)]


def _window(done: list[int], failed: list[int], end: int, minutes: int) -> tuple[int, int]:
    lo = max(0, end - minutes)
    return sum(done[lo:end]), sum(failed[lo:end])


def error_budget(agg: Aggregator) -> dict[str, Any]:
    """Remaining budget over the run so far and each pair's burn rates at the last whole minute."""
    target = float((agg.settings.profile.get("slo") or {}).get("success") or 0.0)
    allowed = 1.0 - target
    done, failed = agg.state.counts["DONE"], agg.state.counts["FAILED"]
    total = done + failed
    remaining = None
    if allowed > 0 and total:
        remaining = 1.0 - (failed / total) / allowed
    end = int(max(agg.state.last_t, 0.0) // 60)  # the minute in progress is not judged
    done_m, failed_m = agg.state.done_m.values, agg.state.failed_m.values
    rows = []
    for w in windows(agg.settings.duration):
        burns = []
        volume = 0
        for key in ("long_min", "short_min"):
            d, f = _window(done_m, failed_m, end, w[key])
            if key == "long_min":
                volume = d + f
            burns.append((f / (d + f)) / allowed if d + f and allowed > 0 else None)
        firing = (burns[0] is not None and burns[1] is not None and volume >= agg.settings.min_volume
                  and burns[0] >= w["threshold"] and burns[1] >= w["threshold"])
        rows.append({**w, "burn_long": burns[0], "burn_short": burns[1], "volume": volume, "firing": firing})
    return {"target": target, "allowed": allowed, "failed": failed, "total": total, "remaining": remaining,
            "windows": rows}
