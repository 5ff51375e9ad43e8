"""The report's documents: report.html (self-contained: images inlined, no outside URL) and
report.md (the same tables, for a pull request or an issue)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from coreward_cli.report import RunSummary
from coreward_cli.report_figures import Figure, title

SUMMARY_HEADERS = [
    "run",
    "held-out before",
    "after",
    "change",
    "steps",
    "time",
    "final reward",
    "collapse warning",
]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def summary_cells(s: RunSummary) -> list[str]:
    change = (
        "-" if s.before is None or s.after is None else f"{100 * (s.after - s.before):+.1f} pts"
    )
    seconds = "-" if s.seconds is None else f"{s.seconds:.0f} s"
    reward = "-" if s.final_reward is None else f"{s.final_reward:.3f}"
    verdict = "none" if s.collapse_step is None else f"at step {s.collapse_step}"
    return [s.label, _pct(s.before), _pct(s.after), change, str(s.steps), seconds, reward, verdict]


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def diff_rows(diffs: dict[str, list[Any]]) -> list[list[str]]:
    return [[key, *(_value(v) for v in values)] for key, values in diffs.items()]


def markdown(
    summaries: list[RunSummary],
    diffs: dict[str, list[Any]],
    figures: list[Figure],
    notes: list[str],
) -> str:
    def table(headers: list[str], rows: list[list[str]]) -> list[str]:
        esc = [[c.replace("|", "\\|") for c in r] for r in rows]
        return [
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
            *("| " + " | ".join(r) + " |" for r in esc),
        ]

    lines = ["# coreward report", "", "## Runs", ""]
    lines += table(SUMMARY_HEADERS, [summary_cells(s) for s in summaries])
    lines += [
        "",
        "Held-out accuracy is greedy, mean over the run's benchmarks; "
        "final reward is the mean over the last 10% of steps; the collapse warning is the "
        "step where the label-free detector fired.",
        "",
    ]
    if diffs:
        lines += ["## Recipe differences", ""]
        lines += table(["field", *(s.label for s in summaries)], diff_rows(diffs))
        lines.append("")
    if notes:
        lines += ["## Missing", "", *(f"- {n}" for n in notes), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{title(f.metric)}]({f.png.name})" for f in figures]
        lines.append("")
    return "\n".join(lines)


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
.figs figure { margin: 0; }
.figs img { width: 560px; border: 1px solid #ddd; }
.warn { color: #a40000; font-weight: 600; }
"""


def _table_html(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="warn">{html.escape(c)}</td>'
            if c.startswith("at step")
            else f"<td>{html.escape(c)}</td>"
            for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_page(
    summaries: list[RunSummary],
    diffs: dict[str, list[Any]],
    figures: list[Figure],
    notes: list[str],
    sources: list[str],
) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>coreward report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>coreward report</h1>",
        "<p>" + ", ".join(html.escape(s) for s in sources) + "</p>",
        "<h2>Runs</h2>",
        _table_html(SUMMARY_HEADERS, [summary_cells(s) for s in summaries]),
        "<p>Held-out accuracy is greedy, mean over the run's benchmarks; final reward is the mean "
        "over the last 10% of steps. A collapse warning is the step where the label-free detector "
        "fired (reward, agreement, answer clusters, entropy, length and no-answer share; never a "
        "reference answer); the figures mark it with a dotted line and a &#9660;.</p>",
    ]
    if diffs:
        parts += [
            "<h2>Recipe differences</h2>",
            _table_html(["field", *(s.label for s in summaries)], diff_rows(diffs)),
        ]
    if notes:
        parts += ["<h2>Missing</h2><ul>", *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    if figures:
        parts.append('<h2>Figures</h2><div class="figs">')
        parts += [f"<figure>{_img(f.png, title(f.metric))}</figure>" for f in figures]
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
