"""Static SVG line charts on a shared time axis, for the HTML report.

No JavaScript and no external file: colours come from CSS classes the page defines (so dark mode
and print are the page's business), fault windows are shaded bands, events are marked lines, and
every time bin carries a native tooltip (``<title>``) with its values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 960, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 16, 26, 30


@dataclass(frozen=True)
class Band:
    """A shaded time window (a fault)."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Mark:
    """A moment (a service event)."""

    t: float
    label: str
    kind: str  # a CSS class suffix: the event's family


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per time bin; None draws a gap
    css: str  # colour class, s0..s5
    dashed: bool = False


def nice_step(span: float, ticks: int) -> float:
    """A round tick step (1, 2 or 5 × 10^k) giving about ``ticks`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / max(1, ticks)
    power = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def line_chart(
    *,
    title: str,
    unit: str,
    series: Sequence[Series],
    resolution: float,
    x_max: float,
    bands: Sequence[Band] = (),
    marks: Sequence[Mark] = (),
    y_max: float | None = None,
    ident: str = "",
) -> str:
    """One chart. Bin ``i`` of every series covers ``[i·resolution, (i+1)·resolution)`` and is
    drawn at its middle."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    x_max = max(x_max, resolution)
    values = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    top = y_max if y_max is not None else max(values, default=0.0)
    step_y = nice_step(top, 4) if top > 0 else 1.0
    top = max(step_y, math.ceil(top / step_y) * step_y)

    def x(t: float) -> float:
        return _LEFT + min(max(t, 0.0), x_max) / x_max * plot_w

    def y(v: float) -> float:
        return _TOP + plot_h - min(max(v, 0.0), top) / top * plot_h

    out = [
        f'<svg class="chart" id="{escape(ident)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text class="title" x="{_LEFT}" y="16">{escape(title)}</text>',
    ]
    for band in bands:
        x0, x1 = x(band.start), x(band.end)
        out.append(
            f'<g class="band"><rect x="{x0:.1f}" y="{_TOP}" width="{max(x1 - x0, 2):.1f}" '
            f'height="{plot_h}"><title>{escape(band.label)}</title></rect>'
            f'<text x="{x0 + 3:.1f}" y="{_TOP + 11}">{escape(band.label)}</text></g>'
        )
    tick = 0.0
    while tick <= top + 1e-9:
        out.append(
            f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y(tick):.1f}" '
            f'y2="{y(tick):.1f}"/><text class="tick" x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{_fmt(tick)}</text>'
        )
        tick += step_y
    step_x = nice_step(x_max, 10)
    tick = 0.0
    while tick <= x_max + 1e-9:
        out.append(
            f'<text class="tick" x="{x(tick):.1f}" y="{HEIGHT - _BOTTOM + 16}" '
            f'text-anchor="middle">{_fmt(tick)}s</text>'
        )
        tick += step_x
    out.append(
        f'<text class="tick" x="{_LEFT - 6}" y="{_TOP - 6}" text-anchor="end">{escape(unit)}</text>'
    )
    for s in series:
        path: list[str] = []
        pen_up = True
        for i, v in enumerate(s.values):
            if v is None or not math.isfinite(v):
                pen_up = True
                continue
            px, py = x((i + 0.5) * resolution), y(v)
            path.append(f"{'M' if pen_up else 'L'}{px:.1f},{py:.1f}")
            pen_up = False
        if path:
            dash = ' stroke-dasharray="5 3"' if s.dashed else ""
            out.append(f'<path class="line {s.css}"{dash} d="{" ".join(path)}"/>')
    for mark in marks:
        mx = x(mark.t)
        out.append(
            f'<g class="mark {escape(mark.kind)}"><line x1="{mx:.1f}" x2="{mx:.1f}" y1="{_TOP}" '
            f'y2="{_TOP + plot_h}"/><circle cx="{mx:.1f}" cy="{_TOP + 3}" r="3"/>'
            f"<title>{mark.t:.2f}s {escape(mark.label)}</title></g>"
        )
    bins = max((len(s.values) for s in series), default=0)
    for i in range(bins):
        parts = [
            f"{s.name} {_fmt(v)}"
            for s in series
            if i < len(s.values) and (v := s.values[i]) is not None and math.isfinite(v)
        ]
        if not parts:
            continue
        x0, x1 = x(i * resolution), x((i + 1) * resolution)
        label = f"{i * resolution:g}–{(i + 1) * resolution:g}s: " + ", ".join(parts) + f" {unit}"
        out.append(
            f'<rect class="hover" x="{x0:.1f}" y="{_TOP}" width="{x1 - x0:.1f}" '
            f'height="{plot_h}"><title>{escape(label)}</title></rect>'
        )
    out.append(
        f'<line class="axis" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{_TOP + plot_h}" '
        f'y2="{_TOP + plot_h}"/></svg>'
    )
    legend = "".join(
        f'<span class="key"><i class="{s.css}{" dashed" if s.dashed else ""}"></i>'
        f"{escape(s.name)}</span>"
        for s in series
    )
    return f"<figure>{''.join(out)}<figcaption>{legend}</figcaption></figure>"
