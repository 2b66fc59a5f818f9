"""Plotly figures: confusion matrix, embedding map, C-sweep validation curve, few-shot curve."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .embeddings import Embeddings
from .evaluation.fewshot import FewShotCurve
from .evaluation.metrics import Metrics
from .evaluation.protocols import ProbeResult
from .probe import SweepResult
from .projection import Projection
from .wording import percent

COLOR_BY = ("true", "predicted", "correct")
COLOR_TITLES = {
    "true": "coloured by true class",
    "predicted": "coloured by predicted class",
    "correct": "coloured by whether the probe was right",
}
LEGEND_TITLES = {"true": "true class", "predicted": "predicted class", "correct": "prediction"}
THREE_D_EYE = {"x": 1.6, "y": 1.6, "z": 1.1}
NOT_SCORED = "train (not scored)"
DISAGREEMENT_MARKER = {"symbol": "circle-open", "color": "black", "line": {"width": 2}}
# One qualitative colour per class, by its position in the class list, set on the figure
# itself: a standalone file then draws what the app draws (Streamlit's own template only holds
# placeholder colours, #000001 …, that its front end replaces). D3's category10, then
# Alphabet's colours without its two palest; beyond 34 classes the colours repeat.
CLASS_COLOURS = (
    *px.colors.qualitative.D3,
    *(c for c in px.colors.qualitative.Alphabet if c not in ("#F7E1A0", "#E2E2E2")),
)


def class_colours(class_names: Sequence[str]) -> dict[str, str]:
    """Each class's colour, the same in every figure of a study."""
    return {name: CLASS_COLOURS[i % len(CLASS_COLOURS)] for i, name in enumerate(class_names)}


def confusion_figure(metrics: Metrics, normalize: bool = False) -> go.Figure:
    """Heatmap, true classes as rows; ``normalize`` shows each row as fractions of that class."""
    counts = metrics.confusion.astype(float)
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    values = fractions if normalize else counts
    names = metrics.class_names
    text = [[f"{v:.2f}" if normalize else f"{int(v)}" for v in row] for row in values]
    rows, cols = np.indices(counts.shape)
    customdata = np.dstack([rows, cols, counts, fractions])
    hovertemplate = (
        "true: %{y}<br>predicted: %{x}<br>images: %{customdata[2]:.0f}"
        " (%{customdata[3]:.0%} of the true class)<extra></extra>"
    )
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            customdata=customdata,
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalize else max(1.0, float(counts.max())),
            hovertemplate=hovertemplate,
        )
    )
    # Heatmaps cannot be clicked-to-select in Plotly; an invisible marker per cell can,
    # so a click on a cell arrives as a selected point carrying (true, predicted).
    figure.add_trace(
        go.Scatter(
            x=[names[c] for c in cols.ravel()],
            y=[names[r] for r in rows.ravel()],
            customdata=customdata.reshape(-1, 4),
            mode="markers",
            marker={
                "symbol": "square",
                "size": max(8, min(60, 360 // max(len(names), 1))),
                "color": "rgba(0,0,0,0)",
            },
            hovertemplate=hovertemplate,
            showlegend=False,
            name="cells",
        )
    )
    # Every class named on both axes (a category axis may otherwise thin its labels), and the
    # margins grown to fit the names wherever the figure is drawn (automargin).
    ticks = {"tickmode": "array", "tickvals": list(names), "ticktext": list(names)}
    figure.update_layout(
        title="Confusion matrix (every evaluated image)"
        + (", row-normalised" if normalize else ""),
        xaxis={
            "title": "predicted class",
            "side": "bottom",
            "tickangle": -30,
            "automargin": True,
            **ticks,
        },
        yaxis={"title": "true class", "autorange": "reversed", "automargin": True, **ticks},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return figure


def map_frame(
    projection: Projection, embeddings: Embeddings, result: ProbeResult | None = None
) -> pd.DataFrame:
    """One row per image: coordinates, path, true/predicted class, split or fold, correctness."""
    frame = pd.DataFrame(projection.coords, columns=["x", "y", "z"][: projection.n_components])
    frame["index"] = np.arange(len(embeddings))
    frame["path"] = embeddings.paths
    frame["true"] = [embeddings.class_names[i] for i in embeddings.labels]
    frame["predicted"] = NOT_SCORED
    frame["correct"] = NOT_SCORED
    frame["split"] = "excluded"
    if result is not None:
        frame.loc[result.train, "split"] = "train"
        evaluated = result.evaluated
        frame.loc[evaluated, "split"] = [
            "test" if fold == "test" else f"fold {fold}" for fold in result.folds
        ]
        frame.loc[evaluated, "predicted"] = [result.class_names[i] for i in result.predictions]
        frame.loc[evaluated, "correct"] = np.where(
            result.predictions == result.labels, "correct", "wrong"
        )
    return frame


def embedding_figure(
    projection: Projection,
    embeddings: Embeddings,
    result: ProbeResult | None = None,
    color_by: str = "true",
) -> go.Figure:
    """Scatter of the projection; each point carries (path, index) in ``customdata``."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_BY)}")
    frame = map_frame(projection, embeddings, result)
    common = {
        "color": color_by,
        "custom_data": ["path", "index"],
        "hover_data": {"path": True, "true": True, "predicted": True, "split": True}
        | dict.fromkeys(["x", "y", "z"][: projection.n_components], False),
        "category_orders": {
            "true": embeddings.class_names,
            "predicted": [*embeddings.class_names, NOT_SCORED],
            "correct": ["correct", "wrong", NOT_SCORED],
        },
        "color_discrete_map": {
            **class_colours(embeddings.class_names),
            NOT_SCORED: "lightgrey",
            "correct": "#2ca02c",
            "wrong": "#d62728",
        },
    }
    label = f"{projection.method.upper()} of normalised embeddings, {COLOR_TITLES[color_by]}"
    if projection.n_components == 3:
        figure = px.scatter_3d(frame, x="x", y="y", z="z", **common)
        figure.update_traces(marker={"size": 3})
        # Plotly's default eye (1.25, 1.25, 1.25) cuts off the cube's lower tick labels.
        figure.update_layout(scene={"camera": {"eye": THREE_D_EYE}, "aspectmode": "cube"})
    else:
        figure = px.scatter(frame, x="x", y="y", **common)
        figure.update_traces(marker={"size": 7, "opacity": 0.85})
        figure.update_xaxes(showticklabels=False, title=None)
        figure.update_yaxes(showticklabels=False, title=None, scaleanchor="x")
    figure.update_layout(title=label, legend_title_text=LEGEND_TITLES[color_by], margin={"t": 50})
    return figure


def add_disagreement_layer(
    figure: go.Figure, projection: Projection, embeddings: Embeddings, indices
) -> None:
    """Ring the given points in a trace of their own (same customdata as the others)."""
    indices = [int(i) for i in indices]
    coords = projection.coords[indices]
    common = {
        "mode": "markers",
        "name": f"neighbourhood differs on the map ({len(indices)})",
        "customdata": [[embeddings.paths[i], i] for i in indices],
        "hovertemplate": "%{customdata[0]}<br>map neighbourhood differs<extra></extra>",
    }
    if projection.n_components == 3:
        trace = go.Scatter3d(
            x=coords[:, 0],
            y=coords[:, 1],
            z=coords[:, 2],
            marker={**DISAGREEMENT_MARKER, "size": 6},
            **common,
        )
    else:
        trace = go.Scatter(
            x=coords[:, 0], y=coords[:, 1], marker={**DISAGREEMENT_MARKER, "size": 13}, **common
        )
    figure.add_trace(trace)


def sweep_figure(sweep: SweepResult) -> go.Figure:
    """What C was chosen from, against C (log axis), the chosen C marked.

    Under a log-loss rule that is the mean validation log loss (with its standard error under
    the one-standard-error rule, and the bar: the lowest loss plus its standard error), with
    validation accuracy on a second axis; otherwise validation accuracy.
    """
    losses = list(sweep.log_losses)
    by_loss = (
        sweep.rule in ("one-standard-error", "log-loss")
        and len(losses) == len(sweep.c_values)
        and not all(math.isnan(v) for v in losses)
    )
    if by_loss:
        bar = sweep.one_standard_error_bar
        y, name = losses, "validation log loss"
        error = {"type": "data", "array": list(sweep.log_loss_se)} if bar is not None else None
        hover = "C = %{x:.3g}<br>validation log loss = %{y:.3f}<extra></extra>"
    else:
        y, name, error = list(sweep.scores), "validation accuracy", None
        hover = "C = %{x:.3g}<br>validation accuracy = %{y:.3f}<extra></extra>"
    figure = go.Figure(
        go.Scatter(
            x=sweep.c_values,
            y=y,
            mode="lines+markers",
            name=name,
            error_y=error,
            hovertemplate=hover,
        )
    )
    chosen_value = y[sweep.c_values.index(sweep.chosen_c)]
    # A trace rather than add_vline: shapes and annotations misplace on log axes.
    figure.add_trace(
        go.Scatter(
            x=[sweep.chosen_c, sweep.chosen_c],
            y=[0, chosen_value],
            mode="lines+markers+text",
            name=f"chosen C = {sweep.chosen_c:.3g}",
            line={"dash": "dash", "color": "firebrick"},
            marker={"size": [0, 12], "color": "firebrick"},
            text=["", f"chosen C = {sweep.chosen_c:.3g}"],
            textposition="top center",
            hoverinfo="skip",
        )
    )
    if by_loss:
        if bar is not None:
            figure.add_trace(
                go.Scatter(
                    x=[sweep.c_values[0], sweep.c_values[-1]],
                    y=[bar, bar],
                    mode="lines",
                    name="lowest loss + 1 SE: the smallest C below wins",
                    line={"dash": "dot", "color": "grey"},
                    hovertemplate=f"lowest log loss + 1 SE = {bar:.3f}<extra></extra>",
                )
            )
        figure.add_trace(
            go.Scatter(
                x=sweep.c_values,
                y=sweep.scores,
                mode="lines",
                name="validation accuracy (right axis)",
                line={"color": "lightgrey"},
                yaxis="y2",
                hovertemplate="C = %{x:.3g}<br>validation accuracy = %{y:.3f}<extra></extra>",
            )
        )
        top = max(1.0, float(np.nanmax([*losses, bar if bar is not None else 0.0])) * 1.1)
        yaxis = {"title": "validation log loss (lower is better)", "range": [0, top]}
        figure.update_layout(
            yaxis2={
                "title": "validation accuracy",
                "range": [0, 1.02],
                "tickvals": [0, 0.25, 0.5, 0.75, 1],
                "tickformat": ".0%",
                "overlaying": "y",
                "side": "right",
                "showgrid": False,
            }
        )
    else:
        yaxis = {"title": "validation accuracy", "range": [0, 1.02]}
    figure.update_layout(
        title=f"Choosing C<br><sup>{sweep.described}; never the test set</sup>",
        xaxis={"title": "C (inverse regularisation strength)", "type": "log"},
        yaxis=yaxis,
        legend={"orientation": "h", "y": -0.3},
        margin={"t": 60},
    )
    return figure


def fewshot_figure(
    curves: Sequence[FewShotCurve], zero_shot: dict[str, float] | None = None
) -> go.Figure:
    """Accuracy against images per class (log axis): a line and 95% band per encoder, and
    a dashed horizontal line per zero-shot accuracy (keyed by encoder name)."""
    palette = px.colors.qualitative.Plotly
    names = [curve.encoder for curve in curves]
    names += [name for name in zero_shot or {} if name not in names]
    colour = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    all_k = [point.k for curve in curves for point in curve.points] or [1]
    figure = go.Figure()
    for curve in curves:
        if not curve.points:
            continue
        ks = [p.k for p in curve.points]
        figure.add_trace(
            go.Scatter(
                x=ks + ks[::-1],
                y=[p.high for p in curve.points] + [p.low for p in curve.points][::-1],
                fill="toself",
                fillcolor=colour[curve.encoder],
                opacity=0.2,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=curve.encoder,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=ks,
                y=[p.accuracy for p in curve.points],
                mode="lines+markers",
                name=curve.encoder,
                line={"color": colour[curve.encoder]},
                legendgroup=curve.encoder,
                customdata=[[p.low, p.high, p.draws] for p in curve.points],
                hovertemplate=(
                    "k = %{x} images per class<br>accuracy = %{y:.3f}"
                    " (%{customdata[0]:.3f}-%{customdata[1]:.3f} over %{customdata[2]} draws)"
                    "<extra>%{fullData.name}</extra>"
                ),
            )
        )
    for name, accuracy in (zero_shot or {}).items():
        # A trace rather than add_hline, so that it has a legend entry of its own.
        figure.add_trace(
            go.Scatter(
                x=[min(all_k), max(all_k)],
                y=[accuracy, accuracy],
                mode="lines",
                name=f"{name} zero-shot ({accuracy:.3f})",
                line={"dash": "dash", "color": colour[name]},
                hovertemplate=f"{name} zero-shot accuracy = {accuracy:.3f}<extra></extra>",
            )
        )
    figure.update_layout(
        title="Few-shot curve: accuracy with k training images per class",
        xaxis={"title": "images per class (k)", "type": "log", "tickvals": sorted(set(all_k))},
        yaxis={"title": "accuracy", "range": [0, 1.02]},
        margin={"t": 60},
    )
    return figure


def prediction_figure(class_names: Sequence[str], probabilities: Sequence[float]) -> go.Figure:
    """One image's class probabilities as horizontal bars in class order, each labelled with
    its value; the predicted class in a stronger colour."""
    probabilities = [float(p) for p in probabilities]
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    figure = go.Figure(
        go.Bar(
            x=probabilities,
            y=list(class_names),
            orientation="h",
            text=[percent(p) for p in probabilities],
            textposition="outside",
            cliponaxis=False,
            marker_color=["#1f77b4" if i == best else "#aec7e8" for i in range(len(probabilities))],
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    figure.update_layout(
        height=60 + 28 * len(probabilities),
        margin={"l": 0, "r": 56, "t": 10, "b": 0},
        xaxis={"range": [0, 1], "tickformat": ".0%", "title": None},
        yaxis={"autorange": "reversed", "title": None},
        showlegend=False,
    )
    return figure
