"""`coreward report RUN [RUN ...]`: figures, a run comparison and collapse warnings, as
report.html (self-contained), report.md and PNG/SVG figures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
from rich.console import Console

from coreward_cli.errors import UserError


def _out_folder(out: Path | None, runs: list) -> Path:
    if out is not None:
        return out
    if len(runs) == 1:
        run = runs[0]
        return (run.path if run.path.is_dir() else run.path.parent) / "report"
    return Path("report")


def _check_out(out: Path) -> None:
    """An existing --out is replaced only when it is an earlier report (never anything else)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.html").is_file():
        raise UserError(
            f"--out {out} holds files that are not a coreward report; pass an empty or new folder"
        )


def write_report(
    specs: list[str],
    out: Path | None,
    metrics: list[str] | None,
    window: int,
    group_seeds: bool,
) -> tuple[Path, list]:
    """Read the runs, write the report folder whole (or nothing); report.html's path and the
    runs' summaries."""
    from coreward_cli.report import label_runs, load_run, recipe_differences, seed_groups, summarise
    from coreward_cli.report_figures import DEFAULT_METRICS, expand_metrics, render, title
    from coreward_cli.report_html import html_page, markdown

    runs = [load_run(spec) for spec in specs]
    label_runs(runs)
    folder = _out_folder(out, runs)
    _check_out(folder)
    panels = expand_metrics(list(metrics or DEFAULT_METRICS), runs)
    present = [m for m in panels if any(m in r.metric_names() for r in runs)]
    if metrics and not present:
        have = sorted(set().union(*(r.metric_names() for r in runs)))
        raise UserError(
            f"--metrics: none of {', '.join(metrics)} is in the runs' metrics; they have: {', '.join(have)}"
        )
    notes: list[str] = []
    for run in runs:
        if len(run.steps) < 2:
            notes.append(
                f"{run.label}: {len(run.steps)} training step(s) logged, so its lines are single "
                "points; report it again once it has run longer"
            )
    for metric in panels:
        lacking = [r.label for r in runs if metric not in r.metric_names()]
        if len(lacking) == len(runs):
            notes.append(f"{title(metric)} ({metric}): no run logged it")
        elif lacking:
            notes.append(f"{title(metric)} ({metric}): not logged by {'; '.join(lacking)}")
    groups = seed_groups(runs) if group_seeds else [[r] for r in runs]

    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        figures, _ = render(runs, present, groups, window, tmp)
        summaries = [summarise(r) for r in runs]
        diffs = recipe_differences(runs)
        sources = [str(r.path) for r in runs]
        (tmp / "report.html").write_text(
            html_page(summaries, diffs, figures, notes, sources), encoding="utf-8"
        )
        (tmp / "report.md").write_text(markdown(summaries, diffs, figures, notes), encoding="utf-8")
        if folder.exists():
            stale = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
            os.rename(folder, stale)
            shutil.rmtree(stale)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "report.html", summaries


@click.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN ...]")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (default: RUN/report for one run, ./report for several).",
)
@click.option(
    "--metrics",
    default=None,
    metavar="a,b,...",
    help="Panels to draw (metric names as in metrics.jsonl; eval/* = every benchmark). "
    "Default: reward, pseudo-label accuracy, agreement, held-out, entropy, length, no-answer, KL, "
    "lr, teacher decay.",
)
@click.option(
    "--smooth",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Trailing mean over N steps for per-step metrics (held-out curves are never smoothed).",
)
@click.option(
    "--group-seeds",
    is_flag=True,
    help="Draw runs that differ only in seed as one mean line with a ±sd band.",
)
@click.option("--open", "open_", is_flag=True, help="Open report.html in a browser.")
def report(
    runs: tuple[str, ...],
    out: Path | None,
    metrics: str | None,
    smooth: int,
    group_seeds: bool,
    open_: bool,
) -> None:
    """Figures and tables for one or more runs: RUN is a run folder of either engine or a
    metrics.jsonl. Writes report.html (self-contained, opens offline), report.md (the tables) and
    a PNG + SVG per panel; the step where the collapse detector fired is marked on every figure."""
    wanted = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    from rich.table import Table

    from coreward_cli.report_html import SUMMARY_HEADERS, summary_cells

    page, summaries = write_report(list(runs), out, wanted, smooth, group_seeds)
    table = Table(*SUMMARY_HEADERS)
    for summary in summaries:
        table.add_row(*summary_cells(summary))
    console = Console()
    console.print(table)
    console.print(f"wrote {page} (and report.md, figures)", soft_wrap=True)
    if open_:
        click.launch(str(page))
