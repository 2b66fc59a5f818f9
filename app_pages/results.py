"""Results: metrics with intervals, per-class table, C sweep, clickable confusion, mistakes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from probe_core.evaluation.duplicates import summary as duplicates_summary
from probe_core.evaluation.intervals import CROSS_VALIDATION_CAVEAT, interval_help
from probe_core.export import (
    predictions_table,
    result_duplicates_table,
    result_label_issues_table,
    result_low_confidence_table,
)
from probe_core.figures import confusion_figure, sweep_figure
from probe_core.wording import caption_text, file_name_caption, plural
from studio import shared
from studio.why import why_button, why_panel


def headline(current: shared.Session) -> None:
    result = current.result
    metrics = result.metrics
    cross_validated = result.protocol.name == "cv"
    shown = [
        ("Accuracy", "accuracy", metrics.accuracy),
        ("Balanced accuracy", "balanced_accuracy", metrics.balanced_accuracy),
        ("Macro F1", "macro_f1", metrics.macro_f1),
    ]
    if metrics.top5_accuracy is not None:
        shown.append(("Top-5 accuracy", "top5_accuracy", metrics.top5_accuracy))
    for column, (label, field, estimate) in zip(st.columns(len(shown)), shown, strict=True):
        column.metric(
            label,
            f"{estimate.value:.1%}",
            help=interval_help(field, cross_validated=cross_validated),
        )
        column.caption(f"95% CI {estimate.low:.1%} to {estimate.high:.1%}")
    protocol = result.protocol
    described = protocol.describe()
    st.info(
        f"**{described[0].upper() + described[1:]}**: {protocol.reason}."
        f" {protocol.scored_sentence(len(result.evaluated))}",
        icon=":material/verified:",
    )
    spread = ""
    if result.repeat_accuracies:
        low, high = min(result.repeat_accuracies), max(result.repeat_accuracies)
        spread = (
            f" · accuracy over {len(result.repeat_accuracies)} fold seeds {low:.1%} to {high:.1%}"
        )
    st.caption(
        f"{plural(len(result.evaluated), 'image')} scored · chance (majority class)"
        f" {metrics.chance_accuracy:.1%} · exported probe: C = {result.chosen_c:.3g} chosen by"
        f" {result.sweep.described} · encoder `{current.embeddings.encoder_id}`{spread}"
    )
    if current.path_choice is not None and not current.precomputed:
        st.caption(f"Execution path {current.path_choice.describe()}")
    if cross_validated:
        st.caption(CROSS_VALIDATION_CAVEAT)
    warning = st.session_state.pop("run_warning", None)
    if warning:
        st.warning(warning)
    for message in result.messages:
        st.warning(message)


def image_grid(
    current: shared.Session, rows: pd.DataFrame, caption, columns: int = 6, why: str = ""
) -> None:
    """Thumbnails of the given rows (each with a ``path``), with a caption per image (Markdown
    in which file and class names went through ``caption_text``); with ``why`` (a place name)
    a "Why?" button under each, and the explanation of the one clicked under the grid."""
    index_of = {path: i for i, path in enumerate(current.embeddings.paths)}
    thumbs = shared.thumbnails_for(current, [index_of[p] for p in rows["path"]])
    grid = st.columns(columns)
    for position, (_, row) in enumerate(rows.iterrows()):
        with grid[position % columns]:
            uri = thumbs.get(index_of[row["path"]])
            if uri:
                st.image(uri, width=96)
            st.caption(caption(row), unsafe_allow_html=True)  # names escaped by caption_text
            if why:
                why_button(why, index_of[row["path"]])
    if why:
        why_panel(current, why)


def confusion(current: shared.Session, table: pd.DataFrame) -> None:
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
    st.markdown(
        f"**{caption_text(true_name)} → {caption_text(predicted_name)}**:"
        f" {len(cell)} scored {'image' if len(cell) == 1 else 'images'}"
    )
    predicted = caption_text(predicted_name)
    image_grid(
        current,
        cell.sort_values("confidence", ascending=False),
        lambda row: (
            f"{file_name_caption(row['path'])}  \n"
            f"p({predicted}) = {row[f'p({predicted_name})']:.2f}"
        ),
        why="confusion",
    )


def label_issues(current: shared.Session) -> None:
    st.subheader("Possible label errors")
    result, paths = current.result, current.embeddings.paths
    names = result.class_names
    table = result_label_issues_table(current.embeddings, result)
    unsure = result_low_confidence_table(current.embeddings, result)
    if table.empty and unsure.empty:
        st.write("cleanlab found no image whose label looks wrong.")
        return
    if table.empty:
        st.write("No image looks more like another class than like its folder's.")
    else:
        st.caption(
            f"{plural(len(table), 'image')} whose out-of-sample probabilities favour another"
            " class than their folder's (cleanlab, confident learning), most suspicious first:"
            " worth a look."
        )
        issues = {paths[issue.index]: issue for issue in result.label_issues}
        image_grid(
            current,
            table.head(18),
            lambda row: (
                f"{file_name_caption(row['path'])}  \n"
                f"{caption_text(issues[row['path']].sentence(names))}"
            ),
            why="label_issues",
        )
        st.download_button(
            "Download label_issues.csv",
            table.to_csv(index=False),
            file_name=f"{current.file_stem()}_label_issues.csv",
            mime="text/csv",
            key="download_label_issues",
        )
    if not unsure.empty:
        st.markdown("**Low confidence in its own label**")
        flagged_images = "flagged image" if len(unsure) == 1 else "flagged images"
        st.caption(
            f"{len(unsure)} more {flagged_images} whose folder's class is still the most likely,"
            " only with a low probability; the runner-up is the next most likely class."
        )
        flagged = {paths[item.index]: item for item in result.low_confidence_labels}
        image_grid(
            current,
            unsure.head(12),
            lambda row: (
                f"{file_name_caption(row['path'])}  \n"
                f"{caption_text(flagged[row['path']].sentence(names))}"
            ),
            why="low_confidence",
        )
        st.download_button(
            "Download low_confidence_labels.csv",
            unsure.to_csv(index=False),
            file_name=f"{current.file_stem()}_low_confidence_labels.csv",
            mime="text/csv",
            key="download_low_confidence_labels",
        )


def duplicates(current: shared.Session) -> None:
    found = current.result.duplicates
    if found is None or not found.groups:
        return
    st.subheader("Duplicates")
    st.caption(
        f"{duplicates_summary(found)}. Identical files or embeddings with cosine ≥"
        f" {found.threshold:g}: each group is kept on one side of every split, so a copy"
        " cannot inflate accuracy."
    )
    table = result_duplicates_table(current.embeddings, current.result)
    kinds = {group.id: group for group in found.groups}
    for group_id, rows in list(table.groupby("group", sort=False))[:12]:
        group = kinds[group_id]
        tags = [
            "identical files" if group.identical_bytes else "near-identical",
            *(["label conflict"] if group.label_conflict else []),
            *(["leaks across train/test"] if group.leak else []),
        ]
        st.markdown(f"**Group {group_id}** · {' · '.join(tags)}")
        image_grid(
            current,
            rows,
            lambda row: f"{file_name_caption(row['path'])}  \n{caption_text(row['label'])}",
        )
    st.download_button(
        "Download duplicates.csv",
        table.to_csv(index=False),
        file_name=f"{current.file_stem()}_duplicates.csv",
        mime="text/csv",
        key="download_duplicates",
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
        st.write("No mistakes among the scored images.")
    else:
        image_grid(
            current,
            mistakes,
            lambda row: (
                f"{file_name_caption(row['path'])}  \n"
                f"{caption_text(row['true'])} → {caption_text(row['predicted'])}"
                f" · p({caption_text(row['predicted'])}) = {row['confidence']:.2f}"
            ),
            why="mistakes",
        )
    label_issues(current)
    duplicates(current)
