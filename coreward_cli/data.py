"""Training problems from the published dataset layouts, with their rephrasings paired."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One training problem: its question in two views, and its reference for metrics only."""

    id: str
    question: str
    rephrased: str | None = None
    answer: str | None = None  # never read by label-free rewards; metrics (pseudo-label accuracy) only
