"""Atomic, checksummed checkpoints of the local engine, and the RNG states that make a resumed run
bit-for-bit.

Layout: `coreward_cli.runlayout` (checkpoints/step-N/{policy/, teacher/, trainer_state.pt,
state.json, checksums.json} and checkpoints/latest). A checkpoint is written into a hidden
temporary folder and renamed into place only once every file is there; `latest` is replaced
atomically after that. A crash at any point leaves the previous checkpoint complete and `latest`
naming it. checksums.json (written last) holds the sha256 of every other file; a checkpoint is
used only when they all match. trainer_state.pt holds tensors and plain containers only and is
read with `weights_only=True`: a planted pickle cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coreward_cli.errors import UserError, one_line
from coreward_cli.fileutil import share_like_umask, write_json_atomic, write_text_atomic
from coreward_cli.runlayout import (
    CHECKPOINTS,
    CHECKSUMS,
    LATEST,
    POLICY,
    STATE_JSON,
    TEACHER,
    TRAINER_STATE,
    checkpoint_name,
    checkpoint_names,
)


def rng_state() -> dict[str, Any]:
    """Tensors and plain containers only (numpy's key array as a list), so `weights_only` loads it."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
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
    share_like_umask(tmp)
    write_json_atomic(tmp / CHECKSUMS, file_digests(tmp))
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but checksums.json, by POSIX path relative to it."""
    return {
        p.relative_to(folder).as_posix(): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != CHECKSUMS
    }


def checksum_problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint's files (None: every file is there and matches)."""
    try:
        recorded = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{CHECKSUMS} missing (incomplete, or written by an older coreward)"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return f"{CHECKSUMS} unreadable ({one_line(e)})"
    if not isinstance(recorded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()
    ):
        return f"{CHECKSUMS} is not a mapping of file names to sha256 digests"
    try:
        present = file_digests(folder)
    except OSError as e:
        return f"a file is unreadable ({one_line(e)})"
    for name in sorted(set(recorded) | set(present)):
        if name not in present:
            return f"{name} missing"
        if name not in recorded:
            return f"{name} is not in {CHECKSUMS}"
        if present[name] != recorded[name]:
            return f"{name} differs from its checksum (damaged)"
    return None


class CheckpointDamaged(Exception):
    """A checkpoint that does not verify or load; the message says which file and why."""


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer_state, state) of a checkpoint folder, after its checksums verified."""
    problem = checksum_problem(folder)
    if problem is not None:
        raise CheckpointDamaged(problem)
    try:
        trainer_state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to unpickle is a damaged or foreign file, never code run
        raise CheckpointDamaged(
            f"{TRAINER_STATE} does not load as plain tensors ({one_line(e)})"
        ) from e
    try:
        state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointDamaged(f"{STATE_JSON} unreadable ({one_line(e)})") from e
    keys = ("optimizer", "scheduler", "rng", "method", "teacher")
    if not isinstance(trainer_state, dict) or not all(k in trainer_state for k in keys):
        raise CheckpointDamaged(f"{TRAINER_STATE} lacks one of {', '.join(keys)}")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointDamaged(f"{STATE_JSON} has no step number")
    return trainer_state, state


@dataclass
class Resumable:
    folder: Path
    trainer_state: dict[str, Any]
    state: dict[str, Any]
    skipped: list[str]  # 'step-000006: policy/model.safetensors differs ...', newest first


def newest_resumable(run_dir: Path) -> Resumable | None:
    """The newest checkpoint that verifies and loads (None: the run has no checkpoint folder).

    Raises UserError when checkpoints exist but none verifies: a run never starts over silently.
    """
    names = list(reversed(checkpoint_names(run_dir)))
    skipped: list[str] = []
    for name in names:
        folder = run_dir / CHECKPOINTS / name
        try:
            trainer_state, state = load_checkpoint(folder)
        except CheckpointDamaged as e:
            skipped.append(f"{name}: {e}")
            continue
        return Resumable(folder, trainer_state, state, skipped)
    if skipped:
        raise UserError(
            f"{run_dir}: no checkpoint verifies ({'; '.join(skipped[:3])}); "
            "restore the files, or start over with --force"
        )
    return None
