"""Charts drawn on the server as SVG: no script, no third-party asset, nothing to
download, and the strict CSP holds (presentation attributes, no inline style).
They scale to the width of a phone (viewBox, width 100%), carry a title and a
text description for screen readers, and every page shows the same figures as a
table beneath them."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 360, 220
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 26, 34
COLOURS = ("#6a1b5a", "#e08a00", "#1565c0")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _short(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0f}%"
    if value >= 100_000:
        return f"{value / 100_000:.1f}L"  # lakh: how Indian treasurers read amounts
    if value >= 1000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}"


def _frame(title: str, description: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>" + "".join(body) + "</svg>")


def _axes(top: float, unit: str) -> list[str]:
    parts = []
    plot_h = HEIGHT - TOP - BOTTOM
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd" '
                     f'stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#444">{escape(_short(value, unit))}</text>')
    return parts


def _legend(series: Sequence[str]) -> list[str]:
    parts, x = [], LEFT
    for i, name in enumerate(series):
        parts.append(f'<rect x="{x}" y="6" width="11" height="11" fill="{COLOURS[i % len(COLOURS)]}"/>')
        parts.append(f'<text x="{x + 15}" y="16" font-size="12" fill="#222">{escape(name)}</text>')
        x += 22 + 7 * len(name)
    return parts


def _month_label(month: str) -> str:
    return month[5:7] + "/" + month[2:4]


def bar_chart(*, title: str, months: Sequence[str], series: dict[str, Sequence[float]], unit: str = "") -> Markup:
    """Grouped bars: one group per month, one bar per series (values in rupees, or % with unit="%")."""
    names = list(series)
    top = _nice_max(max([v for values in series.values() for v in values] + [0]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(months), 1)
    bar = max(min(slot * 0.8 / max(len(names), 1), 24), 1)
    body = _axes(top, unit) + _legend(names)
    every = max(1, len(months) // 8)  # no more than about eight month labels on a phone
    for i, month in enumerate(months):
        x0 = LEFT + i * slot + (slot - bar * len(names)) / 2
        for j, name in enumerate(names):
            value = max(series[name][i], 0)
            h = plot_h * value / top
            body.append(f'<rect x="{x0 + j * bar:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" '
                        f'height="{h:.1f}" fill="{COLOURS[j % len(COLOURS)]}"><title>{escape(name)} '
                        f'{escape(month)}: {escape(_short(value, unit) if unit == "%" else f"{value:,.2f}")}'
                        f'</title></rect>')
        if i % every == 0:
            body.append(f'<text x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 15}" font-size="11" '
                        f'text-anchor="middle" fill="#444">{escape(_month_label(month))}</text>')
    body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#444"/>')
    description = "; ".join(
        f"{month}: " + ", ".join(f"{name} {series[name][i]:,.2f}" for name in names) for i, month in enumerate(months))
    return _frame(title, description, body)


def line_chart(*, title: str, months: Sequence[str], values: Sequence[float | None], name: str,
               unit: str = "%") -> Markup:
    """One line over the months (gaps where a value is None), e.g. the collection rate."""
    top = max(_nice_max(max([v for v in values if v is not None] + [0])), 100 if unit == "%" else 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(months), 1)
    body = _axes(top, unit) + _legend([name])
    points = []
    every = max(1, len(months) // 8)
    for i, (month, value) in enumerate(zip(months, values)):
        x = LEFT + i * slot + slot / 2
        if value is not None:
            y = TOP + plot_h - plot_h * min(value, top) / top
            points.append(f"{x:.1f},{y:.1f}")
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{COLOURS[0]}"><title>{escape(month)}: '
                        f'{escape(_short(value, unit))}</title></circle>')
        if i % every == 0:
            body.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 15}" font-size="11" text-anchor="middle" '
                        f'fill="#444">{escape(_month_label(month))}</text>')
    if len(points) > 1:
        body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{COLOURS[0]}" stroke-width="2"/>')
    body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#444"/>')
    description = "; ".join(f"{m}: {'-' if v is None else _short(v, unit)}" for m, v in zip(months, values))
    return _frame(title, description, body)
