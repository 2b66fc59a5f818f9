"""A standalone HTML report (metrics, confusion matrix, map, C sweep) that opens with no server."""

from __future__ import annotations

import html
from datetime import datetime, timezone

import plotly.io as pio

from .embed import Embeddings
from .evaluation.protocols import ProbeResult
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
    skipped = "".join(
        f"<li>{html.escape(s.path)}: {html.escape(s.reason)}</li>" for s in embeddings.skipped
    )
    summary = (
        f"Encoder <code>{html.escape(embeddings.encoder_id)}</code>; {len(result.used)} images in"
        f" {len(result.class_names)} classes ({len(result.split.train)} train,"
        f" {len(result.split.test)} held-out test); C = {result.chosen_c:.3g} chosen by"
        f" {html.escape(result.sweep.method)} on training data only. Intervals: 95% bootstrap"
        " over the test set. Created "
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
<h2>Confusion matrix</h2>{plots[0]}
<h2>Map</h2>{plots[1]}
<h2>Choosing C</h2>{plots[2]}
{"<h2>Skipped files</h2><ul>" + skipped + "</ul>" if skipped else ""}
</body></html>"""
