"""Where a run's numbers go: RUN/metrics.jsonl (a line per step), TensorBoard and W&B when asked."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from coreward_cli.errors import UserError
from coreward_cli.fileutil import write_text_atomic
from coreward_cli.runlayout import METRICS, TENSORBOARD


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends one JSON line per step; on resume, first drops the lines past the checkpoint."""

    def __init__(
        self,
        run_dir: Path,
        *,
        resume_step: int | None,
        tensorboard: bool,
        wandb_project: str | None,
        config: dict[str, Any],
    ) -> None:
        self.path = run_dir / METRICS
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            kept = [r for r in read_metrics(run_dir) if r["step"] <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise UserError(
                    "logging.tensorboard: needs `pip install tensorboard`; or set logging.tensorboard: false"
                ) from exc
            self._tb = SummaryWriter(
                str(run_dir / TENSORBOARD), purge_step=resume_step + 1 if resume_step else None
            )
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as exc:
                raise UserError(
                    "logging.wandb_project: needs `pip install wandb`; or set logging.wandb_project: null"
                ) from exc
            self._wandb = wandb.init(
                project=wandb_project, name=run_dir.name, config=config, resume="allow"
            )

    def write(self, record: dict[str, Any]) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        step = record["step"]
        numbers = {
            k: v
            for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and v is not None
        }
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
