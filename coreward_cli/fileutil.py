"""Writing files so that a reader (or a crash) never sees half of one: write beside, then rename."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_folder_atomic(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling folder, then swap it in place of `target` (replacing an old one)."""
    tmp = _sibling(target, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
        if target.exists():
            stale = _sibling(target, "stale")
            os.rename(target, stale)
            shutil.rmtree(stale)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` fills a sibling file that then replaces `path` (for writers that want a path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def complete_lines(path: Path) -> list[str]:
    """The complete lines of an append-only log, blank ones included (so a line's number is its
    place in the file); a torn last line (a kill mid-write) is cut off the file."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(raw))
    return raw.decode("utf-8").splitlines()


def share_like_umask(folder: Path) -> None:
    """safetensors files come out 0600 (written through a private temp file); model folders get the
    user's usual file mode instead, like every other file."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)
