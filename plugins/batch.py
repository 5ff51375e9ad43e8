"""The plain data a method sees: a step's rollouts grouped by (problem, view, source)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

View = Literal["original", "rephrased"]
Source = Literal["policy", "teacher"]


@dataclass
class Group:
    """The n responses sampled for one prompt (one problem seen through one view)."""

    problem_id: str
    view: View  # which wording of the problem was the prompt
    source: Source  # who sampled: the policy being trained, or the EMA teacher (never trained on)
    prompt: str
    responses: list[str]
    reference: str | None = None  # read only for metrics (pseudo-label accuracy), never for rewards
    # Per-response token statistics, filled by the engine when the method asks for them
    # (Method.needs_token_stats): mean token entropy and mean self-certainty KL(U || p).
    entropy: list[float] | None = None
    self_certainty: list[float] | None = None


@dataclass
class RolloutBatch:
    groups: list[Group]


@dataclass
class MethodResult:
    """One reward list per group of the batch (same order); teacher groups get []."""

    rewards: list[list[float]]
    pseudo_labels: list[
        str | None
    ]  # per group; None where the method has no label (or it is empty)
    metrics: dict[str, float] = field(default_factory=dict)
