"""Trade-off plots of a search, as plotly figures built from ``front.json`` and the study.

Every function returns a ``plotly.graph_objects.Figure``; :func:`save_figures` writes it
as a self-contained HTML file (plotly.js embedded, so it opens offline and inside the
MLflow UI) and as a PNG drawn with matplotlib (:mod:`autogram.report.plots_png`, no browser).
"""

from __future__ import annotations

import logging
import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from autogram.config.pairs import pair_count, selected_pairs
from autogram.report.pareto import hypervolume

log = logging.getLogger("autogram")
GREY, FRONT = "rgba(150,150,150,0.55)", "#d62728"


def _ok(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in document["trials"] if t["status"] == "ok"]


def _label(trial: dict[str, Any]) -> str:
    return f"trial {trial['number']}" + (f" ({trial['baseline']})" if trial.get("baseline") else "")


BASELINE = "#1f77b4"


def _groups(document: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """(legend name, trials, marker) for dominated trials, the front, and the baselines (their
    own diamond marker and name, on the front or not)."""
    ok = _ok(document)
    searched = [t for t in ok if not t.get("baseline")]
    return [
        ("dominated", [t for t in searched if not t["pareto"]], {"color": GREY, "size": 7}),
        ("Pareto front", [t for t in searched if t["pareto"]], {"color": FRONT, "size": 9}),
        ("baselines", [t for t in ok if t.get("baseline")], {"color": BASELINE, "size": 11, "symbol": "diamond"}),
    ]


def front_3d(document: dict[str, Any]) -> Any:
    """The first three objectives in 3-D: Pareto trials in colour, dominated ones grey."""
    import plotly.graph_objects as go

    names = [o["name"] for o in document["objectives"]][:3]
    fig = go.Figure()
    for title, trials, marker in _groups(document):
        fig.add_trace(
            go.Scatter3d(
                x=[t["values"][names[0]] for t in trials],
                y=[t["values"][names[1]] for t in trials],
                z=[t["values"][names[2]] for t in trials],
                mode="markers+text" if title == "baselines" else "markers",
                name=title,
                marker={**marker, "size": marker["size"] - 3},
                text=[t["baseline"] if title == "baselines" else _label(t) for t in trials],
            )
        )
    fig.update_layout(
        title=f"{document['name']}: Pareto front",
        scene={"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]},
    )
    return fig


def front_2d(document: dict[str, Any]) -> Any:
    """Every pair of objectives side by side; dominated trials (in all objectives) greyed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [o["name"] for o in document["objectives"]]
    pairs = list(combinations(names, 2))
    fig = make_subplots(rows=1, cols=len(pairs), subplot_titles=[f"{a} vs {b}" for a, b in pairs])
    for col, (a, b) in enumerate(pairs, start=1):
        for title, trials, marker in _groups(document):
            fig.add_trace(
                go.Scatter(
                    x=[t["values"][a] for t in trials],
                    y=[t["values"][b] for t in trials],
                    mode="markers+text" if title == "baselines" else "markers",
                    marker=marker,
                    name=title,
                    showlegend=col == 1,
                    text=[t["baseline"] if title == "baselines" else _label(t) for t in trials],
                    textposition="top center",
                    hovertext=[_label(t) for t in trials],
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=a, row=1, col=col)
        fig.update_yaxes(title_text=b, row=1, col=col)
    # 900 px: what MLflow's artifact viewer shows without cutting off the last panel.
    fig.update_layout(title=f"{document['name']}: 2-D projections", width=900, height=380, margin={"l": 50, "r": 20})
    return fig


def _numeric_params(trial: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in trial["params"].items():
        if key.startswith(("pair:", "map:", "use_")):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    for key, value in trial["params"].items():
        if key.startswith("use_") and value is False:
            out.setdefault(key.removeprefix("use_"), 0.0)  # a switched-off term has weight 0
    out["pairs"] = float(pair_count(trial["params"]) or 0)
    return out


def _log_dimension(label: str, values: list[float]) -> dict[str, Any]:
    """A parcoords axis on a log scale (plotly has none): log10 of the values, ticks at the
    decades labelled with the real values, a switched-off 0 one decade below, as "off"."""
    positive = [v for v in values if v > 0]
    if not positive:
        return {"label": label, "values": values}
    low, high = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    off = low - 1
    logged = [math.log10(v) if v > 0 else off for v in values]
    tickvals = list(range(low, high + 1))
    ticktext = [f"{10.0**t:g}" for t in tickvals]
    if any(v <= 0 for v in values):
        tickvals, ticktext = [off, *tickvals], ["off", *ticktext]
    return {"label": f"{label} (log)", "values": logged, "tickvals": tickvals, "ticktext": ticktext}


def log_scale_params(study: Any) -> set[str]:
    """The parameters the study searched on a log scale (from its trials' distributions)."""
    names: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        names.update(k for k, d in trial.distributions.items() if getattr(d, "log", False))
    return names


def parallel_coordinates(document: dict[str, Any], log_params: set[str] | None = None) -> Any:
    """Searched parameters (switched-off weights as 0) and objectives of every ok trial;
    parameters searched on a log scale (``log_params``) get log axes."""
    import plotly.graph_objects as go

    trials = _ok(document)
    params = [_numeric_params(t) for t in trials]
    keys = sorted({k for p in params for k in p})
    names = [o["name"] for o in document["objectives"]]
    dimensions = [
        _log_dimension(k, [p.get(k, 0.0) for p in params])
        if k in (log_params or set())
        else {"label": k, "values": [p.get(k, 0.0) for p in params]}
        for k in keys
    ]
    dimensions += _mapping_dimensions(trials)
    dimensions += [{"label": n, "values": [t["values"][n] for t in trials]} for n in names]
    colour = [t["values"][names[0]] for t in trials]
    fig = go.Figure(
        go.Parcoords(line={"color": colour, "colorscale": "Viridis", "showscale": True}, dimensions=dimensions)
    )
    fig.update_layout(title=f"{document['name']}: parameters to objectives (colour: {names[0]})")
    return fig


def _mapping_dimensions(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One categorical axis per mapped student tap (``pairs: all``): ``off``, then each teacher
    tap a trial chose, in name order, as ticks (plotly's parcoords takes numbers only)."""
    keys = sorted({k for t in trials for k in t["params"] if k.startswith("map:")})
    out = []
    for key in keys:
        chosen = sorted({str(t["params"][key]) for t in trials if key in t["params"]} - {"off"})
        labels = ["off", *chosen]
        out.append(
            {
                "label": key.removeprefix("map:"),
                "values": [labels.index(str(t["params"].get(key, "off"))) for t in trials],
                "tickvals": list(range(len(labels))),
                "ticktext": labels,
            }
        )
    return out


def pair_selection(document: dict[str, Any], candidates: list[str]) -> Any:
    """How often each tap pair is selected by trials on the front vs off it (Gram on only)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for on_front, colour, title in ((True, FRONT, "on the front"), (False, GREY, "off the front")):
        trials = [t for t in _ok(document) if t["pareto"] == on_front and pair_count(t["params"]) is not None]
        chosen = [set(selected_pairs(t["params"], candidates)) for t in trials]
        share = [float(np.mean([c in picked for picked in chosen])) if trials else 0.0 for c in candidates]
        fig.add_trace(go.Bar(x=candidates, y=share, name=f"{title} ({len(trials)} trials)", marker_color=colour))
    fig.update_layout(
        title=f"{document['name']}: how often each tap pair is selected",
        yaxis_title="share of trials with the pair on",
        barmode="group",
    )
    return fig


def importances(study: Any, document: dict[str, Any]) -> Any:
    """Per-objective parameter importances (Optuna's fANOVA) over the ok trials."""
    import optuna
    import plotly.graph_objects as go

    ok_numbers = {t["number"] for t in _ok(document)}
    trials = [t for t in study.get_trials(deepcopy=False) if t.number in ok_numbers]
    fig = go.Figure()
    names = [o["name"] for o in document["objectives"]]
    subset = optuna.create_study(directions=[o["direction"] for o in document["objectives"]])
    subset.add_trials(trials)
    for index, name in enumerate(names):
        try:
            scores = optuna.importance.get_param_importances(
                subset,
                target=lambda t, i=index: t.values[i],
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            )
        except (ValueError, RuntimeError) as exc:  # too few trials, or no parameter shared by all
            log.info("importances for %s skipped: %s", name, exc)
            continue
        fig.add_trace(go.Bar(x=list(scores), y=list(scores.values()), name=name))
    if not fig.data:
        fig.add_annotation(text="not enough completed trials to estimate importances", showarrow=False)
    fig.update_layout(
        title=f"{document['name']}: parameter importance per objective",
        barmode="group",
        yaxis_title="importance (fANOVA)",
    )
    return fig


def hypervolume_history(study: Any, document: dict[str, Any]) -> tuple[Any, list[float]]:
    """Hypervolume of the ok trials after each completed trial, in completion order."""
    import plotly.graph_objects as go

    names = [o["name"] for o in document["objectives"]]
    directions = [o["direction"] for o in document["objectives"]]
    status = {t["number"]: t for t in document["trials"]}
    finished = sorted(
        (
            t
            for t in study.get_trials(deepcopy=False)
            if t.datetime_complete is not None and not t.user_attrs.get("redrawn")
        ),
        key=lambda t: t.datetime_complete,
    )
    rows: list[list[float]] = []
    history = []
    for trial in finished:
        entry = status.get(trial.number)
        if entry is not None and entry["status"] == "ok":
            rows.append([entry["values"][n] for n in names])
        history.append(hypervolume(rows, directions, document["reference_point"]) if rows else 0.0)
    fig = go.Figure(
        go.Scatter(x=list(range(1, len(history) + 1)), y=history, mode="lines+markers", line={"shape": "hv"})
    )
    fig.update_layout(
        title=f"{document['name']}: hypervolume after each finished trial",
        xaxis_title="finished trials",
        yaxis_title="hypervolume",
    )
    return fig, history


def save_figures(figures: dict[str, Any], directory: Path, png: bool = True) -> list[Path]:
    """Write ``<name>.html`` (plotly.js embedded, interactive) and ``<name>.png`` (matplotlib)
    for each figure; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in figures.items():
        fig.write_html(directory / f"{stem}.html", include_plotlyjs=True, full_html=True)
        written.append(directory / f"{stem}.html")
    if png:  # drawn with matplotlib: no browser needed (kaleido would need a Chromium)
        from autogram.report.plots_png import to_png

        for stem, fig in figures.items():
            try:
                to_png(fig, directory / f"{stem}.png")
                written.append(directory / f"{stem}.png")
            except Exception as exc:  # one odd figure must not cost the others, nor the HTML
                log.warning("PNG of %s skipped (%s); its HTML is written", stem, exc)
    return written
