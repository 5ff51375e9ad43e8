"""The report's figures: one panel per metric over steps, a line per run (or per seed group, mean
± sd), and a mark where the collapse detector fired. matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from coreward_cli.report import Run

# The default panels, in order; `eval/*` expands to one panel per held-out benchmark.
DEFAULT_METRICS = (
    "reward_mean",
    "pseudo_label_accuracy",
    "agreement_share",
    "eval/*",
    "entropy",
    "response_length",
    "no_answer_share",
    "kl",
    "lr",
    "teacher_decay",
)
TITLES = {
    "reward_mean": "reward (mean)",
    "pseudo_label_accuracy": "pseudo-label accuracy (vs references, metric only)",
    "agreement_share": "agreement share (majority / voters)",
    "eval_accuracy": "held-out accuracy (mean over benchmarks)",
    "entropy": "entropy (policy, per token)",
    "response_length": "response length (tokens)",
    "no_answer_share": "no-answer share",
    "clusters_per_group": "answer clusters per group",
    "kl": "KL to the anchor",
    "lr": "learning rate",
    "teacher_decay": "teacher EMA decay",
    "collapse_risk": "collapse risk (detector)",
}


def title(metric: str) -> str:
    if metric.startswith("eval/"):
        return f"held-out accuracy: {metric.removeprefix('eval/')} (greedy)"
    return TITLES.get(metric, metric)


def expand_metrics(requested: list[str], runs: list[Run]) -> list[str]:
    """The panels to draw: `eval/*` becomes every benchmark any run evaluated (and their mean when
    there are several)."""
    present = set().union(*(r.metric_names() for r in runs))
    out: list[str] = []
    for metric in requested:
        if metric == "eval/*":
            benches = sorted(m for m in present if m.startswith("eval/"))
            out += benches
            if len(benches) > 1:
                out.append("eval_accuracy")
        elif metric not in out:
            out.append(metric)
    return out


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` points (1: unchanged)."""
    if window <= 1:
        return values
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


@dataclass
class Line:
    label: str
    steps: list[int]
    mean: list[float]
    sd: list[float] | None  # None: a single run
    collapse_steps: list[int]


def lines_for(metric: str, groups: list[list[Run]], window: int) -> list[Line]:
    """A line per group of runs that logged `metric` (a group of one is one run)."""
    lines = []
    for group in groups:
        series = [r.series(metric) for r in group]
        series = [(xs, ys) for xs, ys in series if xs]
        if not series:
            continue
        fires = [r.collapse_step for r in group if r.collapse_step is not None]
        if metric.startswith("eval") or metric == "lr" or metric == "teacher_decay":
            window_here = 1  # few points, or a schedule: nothing to smooth
        else:
            window_here = window
        if len(series) == 1:
            xs, ys = series[0]
            lines.append(Line(group[0].label, xs, smooth(ys, window_here), None, fires))
            continue
        common = sorted(set.intersection(*(set(xs) for xs, _ in series)))
        per_run = []
        for xs, ys in series:
            at = dict(zip(xs, smooth(ys, window_here)))
            per_run.append([at[s] for s in common])
        mean = [statistics.mean(col) for col in zip(*per_run)]
        sd = [statistics.stdev(col) for col in zip(*per_run)]
        lines.append(Line(group_label(group), common, mean, sd, fires))
    return lines


def group_label(group: list[Run]) -> str:
    if len(group) == 1:
        return group[0].label
    base = ", ".join(p for p in group[0].label.split(", ") if not p.startswith("seed "))
    return f"{base} ({len(group)} seeds, mean ± sd)"


def draw_panel(ax, metric: str, lines: list[Line], colors: list) -> None:
    for line, color in zip(lines, colors):
        ax.plot(line.steps, line.mean, color=color, lw=1.4, label=line.label)
        if line.sd is not None:
            lo = [m - s for m, s in zip(line.mean, line.sd)]
            hi = [m + s for m, s in zip(line.mean, line.sd)]
            ax.fill_between(line.steps, lo, hi, color=color, alpha=0.18, lw=0)
        for step in line.collapse_steps:
            ax.axvline(step, color=color, ls=":", lw=1.2)
            ax.plot(
                [step],
                [1.0],
                marker="v",
                color=color,
                ms=6,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
    ax.set_title(title(metric), fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if metric.startswith("eval") or metric.endswith(("_share", "_accuracy")):
        ax.yaxis.set_major_formatter(_percent())


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0)


def palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


@dataclass
class Figure:
    metric: str
    png: Path
    svg: Path


def render(
    runs: list[Run], metrics: list[str], groups: list[list[Run]], window: int, folder: Path
) -> tuple[list[Figure], Path | None]:
    """One PNG + SVG per panel with data, and an overview of all panels (overview.png/.svg).

    Returns the figures written and the overview (None when no panel has data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = palette(len(groups))
    drawn: list[tuple[str, list[Line]]] = []
    for metric in metrics:
        lines = lines_for(metric, groups, window)
        if lines:
            color_of = {group_label(g): c for g, c in zip(groups, colors)}
            drawn.append((metric, lines))
            fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
            draw_panel(ax, metric, lines, [color_of[line.label] for line in lines])
            ax.legend(fontsize=7, loc="best")
            fig.tight_layout()
            stem = "fig-" + metric.replace("/", "-")
            fig.savefig(folder / f"{stem}.png")
            fig.savefig(folder / f"{stem}.svg")
            plt.close(fig)
    figures = [
        Figure(
            m, folder / f"fig-{m.replace('/', '-')}.png", folder / f"fig-{m.replace('/', '-')}.svg"
        )
        for m, _ in drawn
    ]
    if not drawn:
        return figures, None
    cols = min(3, len(drawn))
    rows = math.ceil(len(drawn) / cols)
    legend_rows = math.ceil(len(groups) / 3)
    height = 2.9 * rows + 0.25 * legend_rows + 0.2
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height), dpi=100, squeeze=False)
    color_of = {group_label(g): c for g, c in zip(groups, colors)}
    for ax, (metric, lines) in zip(axes.flat, drawn):
        draw_panel(ax, metric, lines, [color_of[line.label] for line in lines])
    for ax in list(axes.flat)[len(drawn) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=color_of[group_label(g)], lw=2) for g in groups]
    labels = [group_label(g) for g in groups]
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(groups)), fontsize=8)
    fig.tight_layout(rect=(0, (0.25 * legend_rows + 0.15) / height, 1, 1))
    fig.savefig(folder / "overview.png")
    fig.savefig(folder / "overview.svg")
    plt.close(fig)
    return figures, folder / "overview.png"
