"""The layout of a run directory, the one place that names its files.

Local engine:  RUN/recipe.yaml, metrics.jsonl, summary.json, tensorboard/, eval/,
               checkpoints/step-000010/{policy/, teacher/, trainer_state.pt, state.json,
               checksums.json},
               checkpoints/latest (text: the newest complete checkpoint's name),
               final/, final_teacher/ (Hugging Face folders).
OpenRLHF engine: RUN/recipe.yaml, metrics.jsonl, model/ (its HF save), ckpt/, data/.
`run`, `eval` and `export` all read it through this module.
"""

from __future__ import annotations

from pathlib import Path

RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
TENSORBOARD = "tensorboard"
EVAL = "eval"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
FINAL = "final"
FINAL_TEACHER = "final_teacher"
POLICY = "policy"  # a checkpoint's model folders
TEACHER = "teacher"
TRAINER_STATE = "trainer_state.pt"
STATE_JSON = "state.json"
CHECKSUMS = "checksums.json"  # written last (sha256 of every other file): without it, incomplete
LOCK = ".lock"  # flock'd by the run that writes the folder; holds its pid
OPENRLHF_MODEL = "model"  # the OpenRLHF engine's Hugging Face save

# Everything the local engine writes; --force removes exactly these and nothing else the folder may hold.
RUN_ARTIFACTS = (RECIPE, METRICS, SUMMARY, CHECKPOINTS, FINAL, FINAL_TEACHER, TENSORBOARD, EVAL)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / checkpoint_name(step)


def checkpoint_names(run_dir: Path) -> list[str]:
    """The step folders present, oldest first (complete or not)."""
    root = run_dir / CHECKPOINTS
    return sorted(p.name for p in root.glob("step-*")) if root.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names, if it is complete (its checksums.json is there); else None."""
    pointer = run_dir / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    folder = run_dir / CHECKPOINTS / name
    return folder if name and (folder / CHECKSUMS).is_file() else None


def is_run_dir(path: Path) -> bool:
    """A coreward run directory of either engine: the resolved recipe and something it produced."""
    return (path / RECIPE).is_file() and any(
        (path / sub).exists() for sub in (FINAL, CHECKPOINTS, OPENRLHF_MODEL, METRICS)
    )


def holds_run(run_dir: Path) -> bool:
    """The local engine has written here (a rerun would overwrite it)."""
    return any((run_dir / name).exists() for name in (METRICS, CHECKPOINTS, FINAL, SUMMARY))
