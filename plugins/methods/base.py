"""What every reward method is: which views it needs sampled, and how it scores them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from coreward_plugins.answers import Fallback, MatchMode
from coreward_plugins.batch import MethodResult, RolloutBatch, View


@dataclass(frozen=True)
class MethodOptions:
    """The recipe's `method:` section as plain data (the plugins never import the recipe)."""

    match: MatchMode = "exact"
    extract_fallbacks: tuple[Fallback, ...] = ()  # when there is no \boxed{} (answers.FALLBACKS)
    tie: Literal["first", "none"] = (
        "first"  # "first": first-counted answer wins (paper); "none": no label
    )
    min_votes: int = (
        1  # a label needs at least this many agreeing answers, else the group gets zeros
    )
    match_timeout_s: float = 5.0
    seed: int = 0  # for methods with randomness (the `random` control)


class Method(ABC):
    """A reward method. Engines ask which views to sample, then call `score` once per step."""

    name: ClassVar[str]
    policy_views: ClassVar[tuple[View, ...]] = (
        "original",
    )  # views the policy samples and trains on
    teacher_views: ClassVar[
        tuple[View, ...]
    ] = ()  # views the EMA teacher samples (never trained on)
    needs_token_stats: ClassVar[bool] = False  # engine fills Group.entropy / Group.self_certainty
    needs_teacher: ClassVar[bool] = False

    def __init__(self, options: MethodOptions | None = None) -> None:
        self.options = options or MethodOptions()

    @abstractmethod
    def score(self, batch: RolloutBatch) -> MethodResult:
        """Rewards for every policy group of the batch (teacher groups get [])."""

    def state_dict(self) -> dict[str, Any]:
        """State that must survive a resume (the engine checkpoints it); most methods have none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `state_dict` gave."""
