"""What a person watching a local run sees: a live progress bar with the key numbers, then a table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


class StepProgress:
    """A rich bar over the RL steps; its text shows reward, pseudo-label accuracy, held-out accuracy."""

    def __init__(self, console: Console, total: int, done: int, eval_now: dict[str, float]) -> None:
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[numbers]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(
            "train", total=total, completed=done, numbers=self._numbers(None, eval_now)
        )

    @staticmethod
    def _numbers(record: dict[str, Any] | None, eval_now: dict[str, float]) -> str:
        parts = []
        if record is not None:
            if record.get("reward_mean") is not None:
                parts.append(f"reward {record['reward_mean']:.2f}")
            if record.get("pseudo_label_accuracy") is not None:
                parts.append(f"label acc {_pct(record['pseudo_label_accuracy'])}")
            parts.append(f"{record['step_seconds']:.2f} s/step")
        if "eval_accuracy" in eval_now:
            parts.append(f"held-out {_pct(eval_now['eval_accuracy'])}")
        return "  ".join(parts)

    def advance(self, record: dict[str, Any], eval_now: dict[str, float]) -> None:
        self.progress.update(self.task, advance=1, numbers=self._numbers(record, eval_now))

    def __enter__(self) -> StepProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


def final_table(summary: dict[str, Any]) -> Table:
    table = Table(
        title=f"{summary['method']} on {summary['model']}: {summary['steps']} steps",
        show_header=True,
    )
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    before, after = summary["eval_before"], summary["eval_after"]
    for key in after:
        if key == "eval_accuracy" and len(after) == 2:
            continue  # one held-out set: its own row says it all
        name = (
            "held-out mean" if key == "eval_accuracy" else f"held-out {key.removeprefix('eval/')}"
        )
        b, a = before.get(key), after[key]
        change = "-" if b is None else f"{100 * (a - b):+.1f} pts"
        table.add_row(name + " (greedy)", _pct(b), _pct(a), change)
    table.add_row(
        "pseudo-label accuracy (mean / last 10%)",
        "",
        f"{_pct(summary['pseudo_label_accuracy_mean'])} / "
        f"{_pct(summary['pseudo_label_accuracy_last'])}",
        "",
    )
    table.add_row(
        "time", "", f"{summary['seconds']:.1f} s ({summary['seconds_per_step']:.2f} s/step)", ""
    )
    table.add_row("final model", "", summary["final"], "")
    return table
