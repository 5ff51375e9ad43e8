"""The collapse detector live in a local run: a `collapse_risk` metric every step, one warning
line when it fires, and with `train.stop_on_collapse` a stop that keeps the last checkpoint
written before the warning as the run's final model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from coreward_cli import runlayout
from coreward_cli.fileutil import write_folder_atomic
from coreward_plugins.collapse import CollapseDetector


class CollapseWatch:
    def __init__(
        self, console: Console, stop_on_collapse: bool, past_rows: list[dict[str, Any]]
    ) -> None:
        """`past_rows`: the metrics a resumed run already logged, replayed so that the detector
        continues exactly where it was (the replay prints nothing)."""
        self.console, self.stop_on_collapse = console, stop_on_collapse
        self.detector = CollapseDetector()
        for row in past_rows:
            if row.get("step", 0) > 0:
                self.detector.update(row)
        self.stopped_at: int | None = None

    def observe(self, record: dict[str, Any]) -> bool:
        """Add `collapse_risk` to this step's record; True when the run should stop here."""
        already = self.detector.fired_at is not None
        assessment = self.detector.update(record)
        record["collapse_risk"] = assessment.risk
        if assessment.fired and not already:
            action = (
                "stopping (train.stop_on_collapse)"
                if self.stop_on_collapse
                else ("training on; set train.stop_on_collapse: true to stop at the warning")
            )
            self.console.print(
                f"[bold yellow]collapse warning at step {assessment.step}:[/] "
                f"{'; '.join(assessment.reasons)} - {action}",
                soft_wrap=True,
            )
            if self.stop_on_collapse:
                self.stopped_at = assessment.step
                return True
        return False

    def summary(self) -> dict[str, Any]:
        return {
            "collapse_warning_step": self.detector.fired_at,
            "stopped_on_collapse": self.stopped_at,
        }


def keep_checkpoint_as_final(run_dir: Path, checkpoint: Path | None, console: Console) -> bool:
    """After a stop on collapse: final/ (and final_teacher/) become the last checkpoint's models.
    False when no checkpoint was written before the warning (then nothing is written)."""
    if checkpoint is None:
        console.print(
            "[yellow]no checkpoint was written before the collapse warning, so no final model; "
            "lower output.save_interval to keep one[/]"
        )
        return False
    for source, target in (
        (runlayout.POLICY, runlayout.FINAL),
        (runlayout.TEACHER, runlayout.FINAL_TEACHER),
    ):
        if (checkpoint / source).is_dir():
            write_folder_atomic(
                run_dir / target, lambda tmp, src=checkpoint / source: shutil.copytree(src, tmp)
            )
    console.print(
        f"final model: {checkpoint.name}, the last checkpoint before the collapse warning"
    )
    return True
