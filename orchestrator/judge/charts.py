"""The summary's PNG charts, drawn with matplotlib's Agg canvas (no pyplot, no global state).

Four charts, x axis in soak hours: arrivals and completions (burst windows shaded), the 30-min
moving success with the abort line, p50/p95 latency with the SLO line, backlog by state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SIZE = (10, 3.4)
DPI = 90


def _axes(title: str, ylabel: str):
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel("soak hours")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _per(values: list[int], minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum per-minute counts into `minutes`-minute bins; x in hours at the bin start."""
    arr = np.asarray(values, dtype=float)
    if len(arr) == 0:
        return np.zeros(0), np.zeros(0)
    pad = (-len(arr)) % minutes
    arr = np.concatenate([arr, np.zeros(pad)]).reshape(-1, minutes).sum(axis=1)
    return np.arange(len(arr)) * minutes / 60.0, arr / minutes


def arrivals_chart(fig_data: dict[str, Any], path: Path) -> Path:
    series = fig_data["series"]
    span_min = len(series["arrivals"])
    step = 5 if span_min > 600 else 1
    fig, ax = _axes(f"Arrivals and completions per soak minute ({step}-min means); bursts shaded", "tasks / min")
    for start, end in (fig_data["manifest"].get("bursts") or []):
        ax.axvspan(start / 3600.0, end / 3600.0, color="tab:orange", alpha=0.3, lw=0)
    x, arrivals = _per(series["arrivals"], step)
    _, done = _per(series["done"], step)
    _, failed = _per(series["failed"], step)
    ax.plot(x, arrivals, lw=0.8, label="arrivals (enqueued)")
    ax.plot(x, done, lw=0.8, label="completions (DONE)")
    if failed.any():
        ax.plot(x, failed, lw=0.8, color="tab:red", label="FAILED")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def moving_chart(fig_data: dict[str, Any], path: Path) -> Path:
    series, moving = fig_data["series"], fig_data["moving"]
    fig, ax = _axes(f"{moving['window'] / 60:g}-min moving success (shown when the window holds "
                    f">= {moving['min_volume']} tasks)", "success %")
    x = np.asarray(series["moving_t"], dtype=float) / 3600.0
    y = np.array([np.nan if v is None else v * 100 for v in series["moving"]], dtype=float)
    ax.plot(x, y, lw=0.9, label="moving success")
    ax.axhline(moving["threshold"] * 100, color="tab:red", ls="--", lw=1,
               label=f"abort line {moving['threshold'] * 100:g} %")
    finite = y[np.isfinite(y)]
    low = min(finite.min() if len(finite) else 100.0, moving["threshold"] * 100)
    ax.set_ylim(max(0.0, low - 2), 100.5)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def latency_chart(fig_data: dict[str, Any], path: Path) -> Path:
    series = fig_data["series"]
    bucket = series["latency_bucket"]
    fig, ax = _axes(f"Latency arrival->terminal, p50 and p95 per {bucket / 60:g} soak minutes", "soak seconds")
    x = (np.asarray(series["latency_t"], dtype=float) + bucket / 2) / 3600.0
    ax.plot(x, series["p50"], lw=0.9, label="p50")
    ax.plot(x, series["p95"], lw=0.9, label="p95")
    target = (fig_data["run"]["profile"].get("slo") or {}).get("p95")
    if target:
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"SLO p95 {target:g} s")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def backlog_chart(fig_data: dict[str, Any], path: Path) -> Path:
    backlog = fig_data["series"]["backlog"]
    fig, ax = _axes("Backlog by state at each soak minute", "tasks")
    x = np.arange(len(backlog["PENDING"])) / 60.0
    ax.stackplot(x, backlog["PENDING"], backlog["IN_PROGRESS"], backlog["BLOCKED"],
                 labels=["PENDING", "IN_PROGRESS", "BLOCKED"], alpha=0.8)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


CHARTS = {
    "arrivals": ("Arrivals and completions", arrivals_chart),
    "moving_success": ("30-min moving success", moving_chart),
    "latency": ("p50 / p95 latency", latency_chart),
    "backlog": ("Backlog by state", backlog_chart),
}


def draw_all(fig_data: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, Path]:
    """Draw every chart as `<prefix>_<name>.png` in out_dir; returns name -> path."""
    return {name: draw(fig_data, out_dir / f"{prefix}_{name}.png") for name, (_, draw) in CHARTS.items()}
