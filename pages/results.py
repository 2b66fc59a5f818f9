"""Results: metrics with intervals, per-class table, C sweep, clickable confusion, mistakes."""

from __future__ import annotations

from pathlib import PurePath

import pandas as pd
import streamlit as st

from pages import shared
from probe_core.export import predictions_table
from probe_core.figures import confusion_figure, sweep_figure


def headline(current: shared.Study) -> None:
    metrics = current.result.metrics
    shown = [
        ("Accuracy", metrics.accuracy),
        ("Balanced accuracy", metrics.balanced_accuracy),
        ("Macro F1", metrics.macro_f1),
    ]
    if metrics.top5_accuracy is not None:
        shown.append(("Top-5 accuracy", metrics.top5_accuracy))
    for column, (label, estimate) in zip(st.columns(len(shown)), shown, strict=True):
        column.metric(
            label,
            f"{estimate.value:.1%}",
            help="95% bootstrap interval over the held-out test images",
        )
        column.caption(f"95% CI {estimate.low:.1%} to {estimate.high:.1%}")
    result = current.result
    st.caption(
        f"{len(result.split.test)} held-out test images, {len(result.split.train)} train ·"
        f" chance (majority class) {metrics.chance_accuracy:.1%} · C = {result.chosen_c:.3g}"
        f" chosen by {result.sweep.method} on training data only · encoder"
        f" `{current.embeddings.encoder_id}`"
    )
    for message in result.messages:
        st.warning(message)


def image_grid(current: shared.Study, rows: pd.DataFrame, caption, columns: int = 6) -> None:
    """Thumbnails of the given prediction rows, with a caption per image."""
    index_of = {path: i for i, path in enumerate(current.embeddings.paths)}
    thumbs = shared.thumbnails_for(current, [index_of[p] for p in rows["path"]])
    grid = st.columns(columns)
    for position, (_, row) in enumerate(rows.iterrows()):
        with grid[position % columns]:
            uri = thumbs.get(index_of[row["path"]])
            if uri:
                st.image(uri, width=96)
            st.caption(caption(row))


def confusion(current: shared.Study, table: pd.DataFrame) -> None:
    metrics = current.result.metrics
    normalised = st.toggle("Row-normalised", key="confusion_normalised")
    event = st.plotly_chart(
        confusion_figure(metrics, normalize=normalised),
        key="confusion",
        on_select="rerun",
        selection_mode="points",
        width="stretch",
    )
    names = metrics.class_names
    points = event.selection.points if event else []
    if points:
        clicked = (points[0]["y"], points[0]["x"])
        if clicked != st.session_state.get("confusion_clicked"):
            st.session_state.confusion_clicked = clicked
            st.session_state.cell_true, st.session_state.cell_predicted = clicked
    left, right = st.columns(2)
    true_name = left.selectbox("True class", names, key="cell_true")
    predicted_name = right.selectbox("Predicted class", names, key="cell_predicted")
    cell = table[(table["true"] == true_name) & (table["predicted"] == predicted_name)]
    images = "image" if len(cell) == 1 else "images"
    st.markdown(f"**{true_name} → {predicted_name}**: {len(cell)} held-out {images}")
    image_grid(
        current,
        cell.sort_values("confidence", ascending=False),
        lambda row: f"{PurePath(row['path']).name} · p={row[f'p({predicted_name})']:.2f}",
    )


current = shared.require_results()
if current is not None:
    st.title("Results")
    headline(current)
    table = predictions_table(current.embeddings, current.result)
    matrix, sweep = st.columns([3, 2])
    with matrix:
        st.subheader("Confusion matrix")
        st.caption("Click a cell to see its images.")
        confusion(current, table)
    with sweep:
        st.subheader("Choosing C")
        st.plotly_chart(sweep_figure(current.result.sweep), width="stretch")
        st.subheader("Per class")
        st.dataframe(
            pd.DataFrame([vars(c) for c in current.result.metrics.per_class]).round(3),
            hide_index=True,
            width="stretch",
        )
    st.subheader("Most confident mistakes")
    mistakes = table[~table["correct"]].nlargest(12, "confidence")
    if mistakes.empty:
        st.write("No mistakes on the held-out images.")
    else:
        image_grid(
            current,
            mistakes,
            lambda row: f"{row['true']} → {row['predicted']} ({row['confidence']:.2f})",
        )
