"""A standalone HTML report (metrics, confusion matrix, map, C sweep) that opens with no server."""

from __future__ import annotations

import html
from datetime import datetime, timezone

import plotly.io as pio

from .embeddings import Embeddings
from .evaluation.intervals import CROSS_VALIDATION_CAVEAT
from .evaluation.protocols import ProbeResult
from .export import result_duplicates_table
from .figures import confusion_figure, embedding_figure, sweep_figure
from .projection import Projection

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.muted { color: #666; }
"""


def _rows(cells: list[list[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)


def html_report(
    embeddings: Embeddings, result: ProbeResult, projection: Projection, title: str = "Probe report"
) -> str:
    """One self-contained HTML page; plotly.js is inlined once, so it works offline."""
    metrics = result.metrics
    headline = [
        ["accuracy", str(metrics.accuracy)],
        ["balanced accuracy", str(metrics.balanced_accuracy)],
        ["macro F1", str(metrics.macro_f1)],
    ]
    if metrics.top5_accuracy is not None:
        headline.append(["top-5 accuracy", str(metrics.top5_accuracy)])
    headline.append(["chance (majority class)", f"{metrics.chance_accuracy:.3f}"])
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
    figures = [
        confusion_figure(metrics),
        embedding_figure(projection, embeddings, result),
        sweep_figure(result.sweep),
    ]
    plots = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0))
        for i, fig in enumerate(figures)
    ]
    notes = "".join(f"<li>{html.escape(m)}</li>" for m in result.messages)
    issues = "".join(
        f"<li>{html.escape(embeddings.paths[issue.index])}: labelled"
        f" {html.escape(result.class_names[issue.given])}, looks like"
        f" {html.escape(result.class_names[issue.suggested])} (score {issue.score:.2f})</li>"
        for issue in result.label_issues
    )
    duplicates = result_duplicates_table(embeddings, result)
    duplicate_rows = "".join(
        f"<li>group {row.group}: {html.escape(str(row.path))} ({html.escape(str(row.label))})</li>"
        for row in duplicates.itertuples()
    )
    skipped = "".join(
        f"<li>{html.escape(s.path)}: {html.escape(s.reason)}</li>" for s in embeddings.skipped
    )
    protocol = result.protocol
    caveat = f" {CROSS_VALIDATION_CAVEAT}" if protocol.name == "cv" else ""
    scored = protocol.scored_sentence(len(result.evaluated))
    summary = (
        f"Encoder <code>{html.escape(embeddings.encoder_id)}</code>; {len(result.used)} images in"
        f" {len(result.class_names)} classes. Protocol: {html.escape(protocol.describe())}"
        f" ({html.escape(protocol.reason)}). {html.escape(scored)}"
        f" C = {result.chosen_c:.3g} chosen by {html.escape(result.sweep.method)}, never on"
        f" scored images. Intervals: accuracy {html.escape(metrics.accuracy.method)};"
        f" balanced accuracy {html.escape(metrics.balanced_accuracy.method)}; macro F1"
        f" {html.escape(metrics.macro_f1.method)}.{html.escape(caveat)} Created "
    )
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="muted">{summary}{created}.</p>
<table>{_rows(headline)}</table>
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{_rows(per_class)}</table>
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
{"<h2>Possible label errors</h2><ul>" + issues + "</ul>" if issues else ""}
{"<h2>Duplicates</h2><ul>" + duplicate_rows + "</ul>" if duplicate_rows else ""}
<h2>Confusion matrix</h2>{plots[0]}
<h2>Map</h2>{plots[1]}
<h2>Choosing C</h2>{plots[2]}
{"<h2>Skipped files</h2><ul>" + skipped + "</ul>" if skipped else ""}
</body></html>"""
