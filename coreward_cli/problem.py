"""A training problem, and the name of the built-in task: the leaf every data path shares."""

from __future__ import annotations

from dataclasses import dataclass

BUILTIN = "builtin:tiny-arith"  # the built-in tiny model and its arithmetic task (coreward_cli.toy)


@dataclass(frozen=True)
class Problem:
    """One training problem: its question in two views, and its reference for metrics only."""

    id: str
    question: str
    rephrased: str | None = None
    answer: str | None = None  # never read by label-free rewards; metrics (pseudo-label accuracy)
