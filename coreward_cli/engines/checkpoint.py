"""Atomic checkpoints of the local engine, and the RNG states that make a resumed run bit-for-bit.

Layout: `coreward_cli.runlayout` (checkpoints/step-N/{policy/, teacher/, trainer_state.pt,
state.json} and checkpoints/latest). A checkpoint is written into a hidden temporary folder and renamed into place only once every
file is there; `latest` is replaced atomically after that. A crash at any point leaves the
previous checkpoint complete and `latest` naming it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coreward_cli.fileutil import write_text_atomic
from coreward_cli.runlayout import (
    CHECKPOINTS,
    LATEST,
    POLICY,
    STATE_JSON,
    TEACHER,
    TRAINER_STATE,
    checkpoint_name,
)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    write_policy: Callable[[Path], None],
    write_teacher: Callable[[Path], None] | None,
    trainer_state: dict[str, Any],
    state: dict[str, Any],
) -> Path:
    """Write checkpoint `step` completely, then make it the latest. Returns its folder."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_policy(tmp / POLICY)
    if write_teacher is not None:
        write_teacher(tmp / TEACHER)
    torch.save(trainer_state, tmp / TRAINER_STATE)
    (tmp / STATE_JSON).write_text(json.dumps(state, indent=2), encoding="utf-8")
    final = root / name
    if final.exists():  # a rerun after a crash past this step: replace the stale copy
        stale = root / f".stale-{name}-{os.getpid()}"
        os.rename(final, stale)
        shutil.rmtree(stale)
    os.rename(tmp, final)
    write_text_atomic(root / LATEST, name)
    return final


def remove_partial(run_dir: Path) -> None:
    """Drop half-written checkpoint folders a crash left behind."""
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for leftover in list(root.glob(".tmp-*")) + list(root.glob(".stale-*")):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(
                missing_ok=True
            )


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer_state, state) of a checkpoint folder."""
    trainer_state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=False)
    state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    return trainer_state, state
