"""The run directory: the lock every engine holds while it writes one, and the local engine's start,
refuse, start over or resume (layout: `runlayout`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coreward_cli.engines.checkpoint import Resumable, newest_resumable, remove_partial
from coreward_cli.engines.tracking import read_metrics
from coreward_cli.errors import UserError, one_line
from coreward_cli.runlayout import FINAL, LOCK, RECIPE, RUN_ARTIFACTS, SUMMARY, holds_run


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on RUN/.lock while a run writes the folder. The kernel drops it when
    the holder dies, so a lock left by a killed run never blocks the next one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file; pass another --out DIR")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(
            f"--out {run_dir}: cannot write there ({one_line(e)}); pick a writable folder"
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise UserError(
                f"{run_dir} is in use by another coreward run (pid {holder}); wait for it to end, "
                "or write elsewhere with --out DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def describe(run_dir: Path) -> str:
    """'finished, 200 steps' / 'stopped at step 40' (what a rerun would overwrite)."""
    if (run_dir / SUMMARY).is_file():
        summary = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
        return f"a finished run of {summary.get('steps', '?')} steps"
    records = read_metrics(run_dir)
    return f"a run stopped at step {records[-1]['step']}" if records else "an earlier run"


def is_finished(run_dir: Path) -> bool:
    """A run that wrote its final model and its summary (the summary is written last)."""
    return (run_dir / SUMMARY).is_file() and (run_dir / FINAL).is_dir()


def prepare(run_dir: Path, *, resume: bool, force: bool) -> Resumable | None:
    """Make `run_dir` ready. Returns the checkpoint to resume from (None: start at step 1).

    --resume uses the newest checkpoint that verifies; when checkpoints exist but none does, it
    stops (UserError) rather than starting over.

    Without --resume or --force an existing run is never touched: the user gets one line saying
    how to continue it or start over.
    """
    if resume and force:
        raise UserError(
            "--resume and --force contradict each other: --resume continues the run, --force starts it over"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file; pass another --out DIR")
    if holds_run(run_dir):
        if force:
            for name in RUN_ARTIFACTS:
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif not resume:
            raise UserError(
                f"{run_dir} already holds {describe(run_dir)}; continue it with --resume, "
                "start over with --force, or write elsewhere with --out DIR"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        return None
    remove_partial(run_dir)
    return newest_resumable(run_dir)


def check_same_recipe(saved: dict[str, Any], given: dict[str, Any], path: str = "") -> None:
    """--resume must continue the run it names: every training field must match the saved recipe.

    engine (device, threads) and logging may differ; output.save_interval/eval_interval too.
    """
    free = {"engine", "logging", "output.dir", "output.save_interval", "output.eval_interval"}
    for key in sorted(set(saved) | set(given)):
        where = f"{path}.{key}" if path else key
        if where in free:
            continue
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            check_same_recipe(a, b, where)
        elif a != b:
            raise UserError(
                f"--resume: {where} is {b!r} here but {a!r} in the run's {RECIPE}; "
                "resume with the same recipe, or start a new run with --out DIR"
            )
