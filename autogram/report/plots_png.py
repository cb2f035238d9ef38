"""PNG copies of the plotly figures, drawn with matplotlib: no browser needed.

kaleido (plotly's PNG export) drives a Chromium, which cluster head nodes rarely have; the
figures autogram builds use four trace types (scatter, bar, 3-D scatter, parallel
coordinates), drawn here from the figure's own data, titles and axis settings (log axes
included). The HTML copies stay interactive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WIDTH_IN = 9.0  # at 100 dpi: 900 px, the width MLflow's artifact viewer shows without scrolling
SYMBOLS = {"diamond": "D", "circle": "o", "square": "s"}


def _colour(value: Any, default: str = "#1f77b4") -> Any:
    if isinstance(value, str) and value.startswith("rgba("):
        r, g, b, a = (float(x) for x in value[5:-1].split(","))
        return (r / 255, g / 255, b / 255, a)
    return value if isinstance(value, str) else default


def _axis_key(ref: str, kind: str) -> str:
    return f"{kind}axis" + ref[1:]  # "x2" -> "xaxis2", "x" -> "xaxis"


def _scatter(ax: Any, trace: Any) -> None:
    marker = trace.marker or {}
    mode = trace.mode or "markers"
    colour = _colour(marker.color) if marker.color is not None else None
    if "lines" in mode:
        shape = trace.line.shape if trace.line is not None else None
        ax.plot(list(trace.x), list(trace.y), drawstyle="steps-post" if shape == "hv" else "default", color=colour)
    if "markers" in mode:
        size = (marker.size or 6) ** 2 / 2
        symbol = SYMBOLS.get(marker.symbol or "circle", "o")
        ax.scatter(
            list(trace.x), list(trace.y), s=size, c=[colour] if colour else None, marker=symbol, label=trace.name
        )
    if "text" in mode and trace.text is not None:
        for x, y, text in zip(trace.x, trace.y, trace.text, strict=True):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)


def _bars(ax: Any, traces: list[Any]) -> None:
    categories = list(dict.fromkeys(c for t in traces for c in t.x))
    width = 0.8 / max(len(traces), 1)
    for i, trace in enumerate(traces):
        heights = dict(zip(trace.x, trace.y, strict=True))
        xs = [k + (i - (len(traces) - 1) / 2) * width for k in range(len(categories))]
        colour = _colour(trace.marker.color) if trace.marker and trace.marker.color else None
        ax.bar(xs, [heights.get(c, 0.0) for c in categories], width, label=trace.name, color=colour)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=7)


def _parcoords(fig_mpl: Any, trace: Any) -> None:
    """Each dimension scaled to its range, one line per trial coloured as in the HTML; a
    dimension with tick values (a log axis) is labelled at those ticks, others at min and max."""
    import matplotlib.pyplot as plt

    ax = fig_mpl.add_subplot(1, 1, 1)
    dims = list(trace.dimensions)
    colours = list(trace.line.color) if trace.line and trace.line.color is not None else None
    cmap = plt.get_cmap("viridis")
    lo_c, hi_c = (min(colours), max(colours)) if colours else (0, 1)
    scaled = []
    for k, dim in enumerate(dims):
        values = [float(v) for v in dim.values]
        low, high = min(values), max(values)
        if dim.tickvals:
            low, high = min(low, *dim.tickvals), max(high, *dim.tickvals)
        span = high - low

        def at(v: float, low: float = low, span: float = span) -> float:
            return (v - low) / span if span > 0 else 0.5

        scaled.append([at(v) for v in values])
        ticks = (
            list(zip(dim.tickvals, dim.ticktext, strict=True))
            if dim.tickvals
            else [(low, f"{low:.3g}"), (high, f"{high:.3g}")]
        )
        for value, text in ticks:
            ax.annotate(text, (k, at(value)), xytext=(3, 0), textcoords="offset points", va="center", fontsize=6)
    for row in range(len(scaled[0]) if scaled else 0):
        colour = cmap((colours[row] - lo_c) / (hi_c - lo_c) if colours and hi_c > lo_c else 0.5)
        ax.plot(range(len(dims)), [s[row] for s in scaled], color=colour, alpha=0.7, linewidth=1)
    ax.set_xticks(range(len(dims)), [d.label for d in dims], rotation=30, ha="right", fontsize=7)
    ax.set_yticks([])
    for k in range(len(dims)):
        ax.axvline(k, color="grey", linewidth=0.5)


def to_png(figure: Any, path: Path) -> None:
    """Draw ``figure`` (a plotly Figure built by :mod:`autogram.report.plots`) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = figure.layout
    traces = list(figure.data)
    refs = sorted({t.xaxis or "x" for t in traces if t.type in ("scatter", "bar")}, key=lambda r: (len(r), r))
    height = 4.0 if len(refs) <= 1 else 3.4
    fig_mpl = plt.figure(figsize=(WIDTH_IN, height), dpi=100)
    if any(t.type == "parcoords" for t in traces):
        _parcoords(fig_mpl, next(t for t in traces if t.type == "parcoords"))
    elif any(t.type == "scatter3d" for t in traces):
        ax = fig_mpl.add_subplot(1, 1, 1, projection="3d")
        for trace in traces:
            marker = trace.marker or {}
            colour = _colour(marker.color) if marker.color is not None else None
            ax.scatter(list(trace.x), list(trace.y), list(trace.z), c=[colour] if colour else None, label=trace.name)
        ax.set_xlabel(layout.scene.xaxis.title.text or "")
        ax.set_ylabel(layout.scene.yaxis.title.text or "")
        ax.set_zlabel(layout.scene.zaxis.title.text or "")
    else:
        subplot_titles = [a.text for a in (layout.annotations or []) if a.showarrow is False and a.xref == "paper"]
        for k, ref in enumerate(refs or ["x"], start=1):
            ax = fig_mpl.add_subplot(1, max(len(refs), 1), k)
            mine = [t for t in traces if (t.xaxis or "x") == ref]
            bars = [t for t in mine if t.type == "bar"]
            if bars:
                _bars(ax, bars)
            for trace in (t for t in mine if t.type == "scatter"):
                _scatter(ax, trace)
            xaxis, yaxis = layout[_axis_key(ref, "x")], layout[_axis_key(ref.replace("x", "y"), "y")]
            ax.set_xlabel((xaxis.title.text if xaxis and xaxis.title else None) or "", fontsize=8)
            ax.set_ylabel((yaxis.title.text if yaxis and yaxis.title else None) or "", fontsize=8)
            if len(refs) > 1 and k - 1 < len(subplot_titles):
                ax.set_title(subplot_titles[k - 1], fontsize=9)
            ax.tick_params(labelsize=7)
        if not traces:
            for note in layout.annotations or []:
                fig_mpl.text(0.5, 0.5, note.text, ha="center", va="center")
    handles = [ax.get_legend_handles_labels() for ax in fig_mpl.axes]
    if any(h for h, _ in handles):
        fig_mpl.axes[0].legend(fontsize=7, loc="best")
    title = layout.title.text if layout.title else None
    if title:
        fig_mpl.suptitle(title, fontsize=10)
    fig_mpl.tight_layout()
    fig_mpl.savefig(path)
    plt.close(fig_mpl)
