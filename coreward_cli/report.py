"""`coreward report`: read runs of either engine into one shape, and summarise and compare them.

A run is a run folder (`RUN/metrics.jsonl`, with `recipe.yaml` and `summary.json` beside it when
the run wrote them) or a `metrics.jsonl` file. Both engines' metric names are mapped onto the local
engine's (`coreward/agreement_share` -> `agreement_share`, `eval/eval_math500_pass1` ->
`eval/math500`, ...), so one figure can hold runs of both. The collapse detector is replayed on
every run's label-free metrics, so runs trained before it existed get a verdict too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coreward_cli.errors import UserError
from coreward_plugins.collapse import CollapseDetector

METRICS = "metrics.jsonl"

# OpenRLHF's names (and our controller's `coreward/` prefix) -> the local engine's
RENAMES = {
    "entropy_loss": "entropy",
    "actor_lr": "lr",
    "rollout/response_length_mean": "response_length",
    "coreward/teacher_decay_this_step": "teacher_decay",
}
OPENRLHF_EVAL = re.compile(r"^eval/eval_(.+)_pass1$")


@dataclass
class Run:
    path: Path  # the run folder, or the metrics file when given alone
    rows: list[dict[str, Any]]  # one per step, sorted, local-engine metric names
    recipe: dict[str, Any] = field(default_factory=dict)  # resolved recipe, dotted keys
    summary: dict[str, Any] = field(default_factory=dict)
    collapse_step: int | None = None  # the step the detector fired, if it did
    label: str = ""

    @property
    def method(self) -> str:
        folder = self.path.parent if self.path.is_file() else self.path
        return str(self.recipe.get("method.name") or self.summary.get("method") or folder.name)

    @property
    def seed(self) -> Any:
        return self.recipe.get("seed")

    @property
    def steps(self) -> list[int]:
        return [r["step"] for r in self.rows if r["step"] > 0]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) where `key` has a finite number."""
        xs, ys = [], []
        for r in self.rows:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                xs.append(r["step"])
                ys.append(float(v))
        return xs, ys

    def metric_names(self) -> set[str]:
        return {k for r in self.rows for k, v in r.items() if k != "step" and _is_number(v)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """One metrics line under the local engine's names."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        match = OPENRLHF_EVAL.match(key)
        if match:
            key = f"eval/{match.group(1)}"
        elif key in RENAMES:
            key = RENAMES[key]
        elif key.startswith("coreward/"):
            key = key.removeprefix("coreward/")
        out.setdefault(key, value)
    return out


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every line of a metrics file, merged per step (OpenRLHF writes its evaluations apart)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: cannot read it ({exc.__class__.__name__}); pass a readable metrics.jsonl"
        ) from None
    by_step: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(
                f"{path}:{number}: not a JSON line; a metrics.jsonl holds one JSON object per step "
                "(a run cut off mid-write: delete the broken last line)"
            ) from None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise UserError(
                f'{path}:{number}: no integer "step" in this line; is this a coreward metrics.jsonl?'
            )
        by_step.setdefault(step, {"step": step}).update(normalise(row))
    if not by_step:
        raise UserError(f"{path}: no metrics in it yet; report a run once it has logged a step")
    rows = [by_step[s] for s in sorted(by_step)]
    for r in rows:  # the mean over benchmarks, where the engine did not write it (OpenRLHF)
        if "eval_accuracy" not in r:
            evals = [v for k, v in r.items() if k.startswith("eval/") and _is_number(v)]
            if evals:
                r["eval_accuracy"] = sum(evals) / len(evals)
    return rows


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _read_yaml_or_json(path: Path, loader) -> dict[str, Any]:
    try:
        data = loader(path.read_text(encoding="utf-8"))
    except Exception as exc:  # yaml and json raise many kinds; any of them is a broken file
        raise UserError(
            f"{path}: cannot be read ({exc.__class__.__name__}); fix or remove it"
        ) from None
    return data if isinstance(data, dict) else {}


def load_run(spec: str | Path) -> Run:
    """A run folder or a metrics.jsonl; UserError naming the path when it is neither."""
    path = Path(spec)
    if path.is_dir():
        metrics, folder = path / METRICS, path
    elif path.is_file():
        metrics, folder = path, path.parent
    else:
        raise UserError(f"{path}: no such run folder or metrics file")
    if not metrics.is_file():
        raise UserError(
            f"{path}: not a run folder (no {METRICS}); pass a folder `coreward run` wrote, "
            f"or its {METRICS}"
        )
    rows = read_rows(metrics)
    recipe: dict[str, Any] = {}
    if (folder / "recipe.yaml").is_file():
        recipe = _flatten(_read_yaml_or_json(folder / "recipe.yaml", yaml.safe_load))
    summary: dict[str, Any] = {}
    if (folder / "summary.json").is_file():
        summary = _read_yaml_or_json(folder / "summary.json", json.loads)
    run = Run(path=folder if path.is_dir() else path, rows=rows, recipe=recipe, summary=summary)
    run.collapse_step = detect(run)
    return run


def detect(run: Run) -> int | None:
    """The step where the collapse detector fires on this run's label-free metrics, or None."""
    detector = CollapseDetector()
    for row in run.rows:
        if row["step"] > 0 and detector.update(row).fired:
            return detector.fired_at
    return None


# ---------------------------------------------------------------- comparing runs

# Fields that say where and how a run ran, not what it trained: never a "difference" between runs.
NOT_TRAINING = ("output.", "engine.", "logging.")


def training_fields(run: Run) -> dict[str, Any]:
    return {k: v for k, v in run.recipe.items() if not k.startswith(NOT_TRAINING)}


def recipe_differences(runs: list[Run]) -> dict[str, list[Any]]:
    """Recipe fields whose values differ between the runs: field -> one value per run (None where
    a run's recipe lacks the field: written before it existed, so it ran with the default)."""
    fields = [training_fields(r) for r in runs]
    keys = sorted({k for f in fields for k in f})
    diffs: dict[str, list[Any]] = {}
    for key in keys:
        values = [f.get(key) for f in fields]
        present = {json.dumps(f[key], sort_keys=True, default=str) for f in fields if key in f}
        if len(present) > 1:
            diffs[key] = values
    return diffs


def label_runs(runs: list[Run]) -> None:
    """Legend names: method, seed, and the other recipe fields that differ between the runs."""
    diffs = recipe_differences(runs)
    for i, run in enumerate(runs):
        parts = [run.method]
        if run.seed is not None:
            parts.append(f"seed {run.seed}")
        for key, values in diffs.items():
            if key not in ("method.name", "seed"):
                parts.append(f"{key.split('.')[-1]}={values[i]}")
        run.label = ", ".join(parts)
    seen: dict[str, int] = {}
    for run in runs:  # identical labels (same recipe twice): tell them apart by folder
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            run.label += f" ({run.path.name})"


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs whose recipes differ in the seed alone, together (in first-seen order)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        fields = {k: v for k, v in training_fields(run).items() if k != "seed"}
        key = json.dumps(fields, sort_keys=True, default=str)
        groups.setdefault(key if run.recipe else str(run.path), []).append(run)
    return list(groups.values())


@dataclass
class RunSummary:
    label: str
    steps: int
    before: float | None  # held-out accuracy at step 0 (or its first evaluation)
    after: float | None  # at its last evaluation
    seconds: float | None
    final_reward: float | None  # mean reward over the last 10% of steps
    collapse_step: int | None


def summarise(run: Run) -> RunSummary:
    xs, acc = run.series("eval_accuracy")
    _, rewards = run.series("reward_mean")
    tail = rewards[-max(1, len(rewards) // 10) :] if rewards else []
    seconds = run.summary.get("seconds")
    if seconds is None:
        _, step_seconds = run.series("step_seconds")
        seconds = sum(step_seconds) if step_seconds else None
    return RunSummary(
        label=run.label,
        steps=max(run.steps, default=0),
        before=acc[0] if acc else None,
        after=acc[-1] if len(acc) > 1 else None,
        seconds=seconds,
        final_reward=sum(tail) / len(tail) if tail else None,
        collapse_step=run.collapse_step,
    )
