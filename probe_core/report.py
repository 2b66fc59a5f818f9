"""A standalone HTML report (metrics, confusion matrix, map, C sweep) that opens with no server.

plotly.js is inlined once, so the file opens offline and fetches nothing. The figures are the
app's own (``probe_core.figures``: class colours and axis labels are set on the figures), drawn
with plotly's ``plotly_white`` template: a figure built inside the app carries Streamlit's
template, whose placeholder colours only Streamlit's front end replaces.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone

import plotly.graph_objects as go
import plotly.io as pio

from .embeddings import Embeddings
from .evaluation.intervals import CROSS_VALIDATION_CAVEAT, INTERVAL_HELP, Estimate
from .evaluation.protocols import ProbeResult
from .export import result_duplicates_table
from .figures import confusion_figure, embedding_figure, sweep_figure
from .projection import Projection
from .wording import plural

REPORT_TEMPLATE = "plotly_white"
CONFUSION_HEIGHT_PER_CLASS = 36  # pixels per row, so that every class name fits its row

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222;
       padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.muted { color: #666; }
td.text, th.text { text-align: left; }
.protocol { background: #eef5ff; border-left: 4px solid #1f77b4; padding: 0.6rem 1rem; }
.metrics { display: flex; flex-wrap: wrap; gap: 1rem; margin: 1rem 0; }
.metric { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; min-width: 12rem; }
.metric .value { font-size: 1.8rem; font-weight: 600; }
.metric .name { color: #444; }
"""


def _rows(cells: list[list[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)


def _items(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"


def _metric_card(name: str, estimate: Estimate, field: str) -> str:
    return (
        f'<div class="metric" title="{html.escape(INTERVAL_HELP[field])}">'
        f'<div class="name">{html.escape(name)}</div>'
        f'<div class="value">{estimate.value:.1%}</div>'
        f'<div class="muted">95% CI {estimate.low:.1%} to {estimate.high:.1%}</div></div>'
    )


def _plot(figure: go.Figure, first: bool) -> str:
    figure.update_layout(template=REPORT_TEMPLATE)
    return pio.to_html(figure, full_html=False, include_plotlyjs=first)


def html_report(
    embeddings: Embeddings, result: ProbeResult, projection: Projection, title: str = "Probe report"
) -> str:
    """One self-contained HTML page; plotly.js is inlined once, so it works offline."""
    metrics = result.metrics
    names = result.class_names
    shown = [
        ("Accuracy", metrics.accuracy, "accuracy"),
        ("Balanced accuracy", metrics.balanced_accuracy, "balanced_accuracy"),
        ("Macro F1", metrics.macro_f1, "macro_f1"),
    ]
    if metrics.top5_accuracy is not None:
        shown.append(("Top-5 accuracy", metrics.top5_accuracy, "top5_accuracy"))
    cards = "".join(_metric_card(name, estimate, field) for name, estimate, field in shown)
    intervals = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{e.value:.3f}</td><td>{e.low:.3f}</td>"
        f'<td>{e.high:.3f}</td><td class="text">{html.escape(e.method)}</td></tr>'
        for name, e, _ in shown
    )
    per_class = [
        [
            html.escape(c.name),
            f"{c.precision:.3f}",
            f"{c.recall:.3f}",
            f"{c.f1:.3f}",
            str(c.support),
        ]
        for c in metrics.per_class
    ]
    confusion = confusion_figure(metrics)
    confusion.update_layout(height=max(450, 160 + CONFUSION_HEIGHT_PER_CLASS * len(names)))
    figures = [
        confusion,
        embedding_figure(projection, embeddings, result),
        sweep_figure(result.sweep),
    ]
    plots = [_plot(figure, first=i == 0) for i, figure in enumerate(figures)]
    paths = embeddings.paths
    issues = [
        f"{html.escape(paths[issue.index])}: {html.escape(issue.sentence(names))}"
        for issue in result.label_issues
    ]
    unsure = [
        f"{html.escape(paths[item.index])}: {html.escape(item.sentence(names))}"
        for item in result.low_confidence_labels
    ]
    labels_section = ""
    if issues or unsure:
        labels_section = "<h2>Possible label errors</h2>"
        if issues:
            labels_section += (
                f"<p>{len(issues)} flagged images look more like another class than their"
                " folder's (cleanlab, confident learning, on out-of-sample probabilities),"
                f" most suspicious first.</p>{_items(issues)}"
            )
        if unsure:
            labels_section += (
                "<h3>Low confidence in its own label</h3>"
                f"<p>{len(unsure)} more flagged images whose folder's class is still the most"
                " likely, only with a low probability; the runner-up is the next most likely"
                f" class.</p>{_items(unsure)}"
            )
    duplicates = result_duplicates_table(embeddings, result)
    duplicate_rows = [
        f"group {row.group}: {html.escape(str(row.path))} ({html.escape(str(row.label))})"
        for row in duplicates.itertuples()
    ]
    skipped = [f"{html.escape(s.path)}: {html.escape(s.reason)}" for s in embeddings.skipped]
    notes = [html.escape(message) for message in result.messages]
    protocol = result.protocol
    described = protocol.describe()
    caveat = f" {CROSS_VALIDATION_CAVEAT}" if protocol.name == "cv" else ""
    scored = protocol.scored_sentence(len(result.evaluated))
    banner = (
        f"<strong>{html.escape(described[0].upper() + described[1:])}</strong>:"
        f" {html.escape(protocol.reason)}. {html.escape(scored)}"
    )
    summary = (
        f"Encoder <code>{html.escape(embeddings.encoder_id)}</code>;"
        f" {plural(len(result.used), 'image')} in {plural(len(names), 'class')};"
        f" {len(result.evaluated)} scored; chance (majority class)"
        f" {metrics.chance_accuracy:.1%}. C = {result.chosen_c:.3g} for the exported probe,"
        f" chosen by {html.escape(result.sweep.described)}, never on scored images."
    )
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="muted">{summary} Created {created}.</p>
<p class="protocol">{banner}</p>
<div class="metrics">{cards}</div>
<table><tr><th>metric</th><th>value</th><th>95% CI low</th><th>95% CI high</th>
<th class="text">interval</th></tr>{intervals}</table>
<p class="muted">What the intervals mean: {html.escape(INTERVAL_HELP["accuracy"])}{
        html.escape(caveat)
    }</p>
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{_rows(per_class)}</table>
{"<h2>Notes</h2>" + _items(notes) if notes else ""}
<h2>Confusion matrix</h2>{plots[0]}
<h2>Map</h2>{plots[1]}
{labels_section}
<h2>Choosing C</h2>{plots[2]}
{"<h2>Duplicates</h2>" + _items(duplicate_rows) if duplicate_rows else ""}
{"<h2>Skipped files</h2>" + _items(skipped) if skipped else ""}
</body></html>"""
