"""Small bar charts of the last hour, drawn on the server as SVG (no script, styled by the console's CSS)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, TOP = 280, 64, 12  # the drawing area; TOP keeps room for the scale's label


def minute_bars(label: str, values: Sequence[int], *, unit: str = "per minute") -> Markup:
    """Return an SVG bar chart of ``values`` (one a minute, oldest first), with a hover title per bar."""
    n = max(len(values), 1)
    peak = max(values, default=0)
    step = WIDTH / n
    bars = []
    for i, value in enumerate(values):
        height = 0.0 if peak == 0 else (HEIGHT - TOP) * value / peak
        ago = n - 1 - i
        when = "this minute" if ago == 0 else f"{ago} min ago"
        bars.append(
            f'<rect class="bar" x="{i * step:.1f}" y="{HEIGHT - height:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{max(height, 0.0):.1f}"><title>{value} {escape(unit)}, {when}</title></rect>'
        )
    total = sum(values)
    summary = f"{label}: {total} in the last hour, at most {peak} {unit}"
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(summary)}"><title>{escape(summary)}</title>'
        f'<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>'
        f'<text class="scale" x="2" y="10">{peak}</text>{"".join(bars)}</svg>'
    )
