"""Server-side SVG charts (no script, no external resource): line charts with threshold lines and
shaded bands, and stacked areas. Series longer than `MAX_POINTS` are downsampled by bucket means,
so a 72-hour run draws the same few hundred points as a 1-hour one."""

from __future__ import annotations

from html import escape
from typing import Iterable, Sequence

MAX_POINTS = 480
PALETTE = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b")
W, H = 900, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 26, 30


def downsample(xs: Sequence[float], ys: Sequence[float | None], limit: int = MAX_POINTS
               ) -> tuple[list[float], list[float | None]]:
    """Bucket means (None values skipped; an all-None bucket stays None) down to `limit` points."""
    n = len(xs)
    if n <= limit:
        return list(xs), list(ys)
    step = -(-n // limit)
    out_x, out_y = [], []
    for i in range(0, n, step):
        chunk = [y for y in ys[i:i + step] if y is not None]
        out_x.append(xs[i])
        out_y.append(sum(chunk) / len(chunk) if chunk else None)
    return out_x, out_y


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    for step in (mag * m for m in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10)):
        if step > 0 and (hi - lo) / step <= n:
            break
    first = (lo // step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 2) if lo <= first + k * step <= hi]


class Frame:
    """The plotting area: maps (x, y) data to SVG pixels."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float):
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)


def _axes(f: Frame, title: str, y_label: str, x_label: str) -> list[str]:
    out = [f'<text x="{LEFT}" y="16" class="ct">{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="pa"/>']
    for y in _ticks(f.y0, f.y1):
        py = f.py(y)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" class="gr"/>'
                   f'<text x="{LEFT - 4}" y="{py + 4:.1f}" class="tk" text-anchor="end">{_fmt(y)}</text>')
    for x in _ticks(f.x0, f.x1, 8):
        px = f.px(x)
        out.append(f'<text x="{px:.1f}" y="{H - BOTTOM + 14}" class="tk" text-anchor="middle">{_fmt(x)}</text>')
    out.append(f'<text x="{W - RIGHT}" y="{H - 4}" class="tk" text-anchor="end">{escape(x_label)}</text>')
    out.append(f'<text x="12" y="{TOP + (H - TOP - BOTTOM) / 2:.0f}" class="tk" text-anchor="middle" '
               f'transform="rotate(-90 12 {TOP + (H - TOP - BOTTOM) / 2:.0f})">{escape(y_label)}</text>')
    return out


def _path(f: Frame, xs: Sequence[float], ys: Sequence[float | None]) -> str:
    parts, pen = [], "M"
    for x, y in zip(xs, ys):
        if y is None:
            pen = "M"
            continue
        parts.append(f"{pen}{f.px(x):.1f},{f.py(y):.1f}")
        pen = "L"
    return " ".join(parts)


def _legend(items: Iterable[tuple[str, str]]) -> list[str]:
    out, x = [], W - RIGHT - 8
    for label, color in reversed(list(items)):
        width = 7 * len(label) + 18
        x -= width
        out.append(f'<rect x="{x:.0f}" y="8" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14:.0f}" y="17" class="tk">{escape(label)}</text>')
    return out


def line_chart(title: str, xs: Sequence[float], series: Sequence[tuple[str, Sequence[float | None]]], *,
               y_label: str = "", x_label: str = "soak hours", hlines: Sequence[tuple[float, str]] = (),
               bands: Sequence[tuple[float, float]] = (), y_min: float | None = None,
               y_max: float | None = None, chart_id: str = "", colors: Sequence[str] = PALETTE,
               data: dict[str, str] | None = None) -> str:
    """A line chart; `hlines` are dashed red threshold lines, `bands` shaded x ranges. `colors`
    go to the series in order; `data` become `data-*` attributes of the `<svg>`."""
    drawn = [(label, *downsample(xs, ys)) for label, ys in series]
    values = [y for _, _, ys in drawn for y in ys if y is not None] + [v for v, _ in hlines]
    lo = y_min if y_min is not None else min(values + [0.0])
    hi = y_max if y_max is not None else max(values + [1.0]) * 1.05
    f = Frame(xs[0] if len(xs) else 0.0, xs[-1] if len(xs) else 1.0, lo, hi)
    out = _axes(f, title, y_label, x_label)
    for a, b in bands:
        x0, x1 = max(f.px(a), LEFT), min(f.px(b), W - RIGHT)
        if x1 > x0:
            out.append(f'<rect x="{x0:.1f}" y="{TOP}" width="{x1 - x0:.1f}" height="{H - TOP - BOTTOM}" class="bd"/>')
    for value, label in hlines:
        y = f.py(value)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="th"/>'
                   f'<text x="{LEFT + 4}" y="{y - 3:.1f}" class="tk th-t">{escape(label)}</text>')
    legend = []
    for i, (label, dx, dy) in enumerate(drawn):
        color = colors[i % len(colors)]
        out.append(f'<path d="{_path(f, dx, dy)}" fill="none" stroke="{color}" stroke-width="1.3"/>')
        legend.append((label, color))
    return _svg(out + _legend(legend), title, chart_id, data)


def stacked_chart(title: str, xs: Sequence[float], series: Sequence[tuple[str, Sequence[float]]], *,
                  y_label: str = "tasks", x_label: str = "soak hours", chart_id: str = "") -> str:
    """Stacked areas (e.g. backlog by state)."""
    drawn = [(label, downsample(xs, ys)[1]) for label, ys in series]
    dx = downsample(xs, [0.0] * len(xs))[0]
    tops = [0.0] * len(dx)
    layers = []
    for label, ys in drawn:
        lower = list(tops)
        tops = [t + (y or 0.0) for t, y in zip(tops, ys)]
        layers.append((label, lower, list(tops)))
    f = Frame(dx[0] if dx else 0.0, dx[-1] if dx else 1.0, 0.0, max(tops + [1.0]) * 1.05)
    out = _axes(f, title, y_label, x_label)
    legend = []
    for i, (label, lower, upper) in enumerate(layers):
        color = PALETTE[i % len(PALETTE)]
        if dx:
            pts = [f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in zip(dx, upper)]
            pts += [f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in zip(reversed(dx), reversed(lower))]
            out.append(f'<polygon points="{" ".join(pts)}" fill="{color}" fill-opacity="0.75"/>')
        legend.append((label, color))
    return _svg(out + _legend(legend), title, chart_id)


def _svg(parts: list[str], title: str, chart_id: str, data: dict[str, str] | None = None) -> str:
    ident = f' id="{escape(chart_id)}"' if chart_id else ""
    ident += "".join(f' data-{name}="{escape(str(value))}"' for name, value in (data or {}).items())
    return (f'<svg{ident} viewBox="0 0 {W} {H}" role="img" '
            f'aria-label="{escape(title)}" class="chart">' + "".join(parts) + "</svg>")


CSS = """
svg.chart{width:100%;max-width:900px;height:auto;background:#fff;border:1px solid #ddd;margin:6px 0}
svg .ct{font:bold 12px sans-serif} svg .tk{font:10px sans-serif;fill:#444}
svg .pa{fill:none;stroke:#bbb} svg .gr{stroke:#eee} svg .bd{fill:#ff7f0e;fill-opacity:.18}
svg .th{stroke:#d62728;stroke-dasharray:5 3} svg .th-t{fill:#d62728}
"""
