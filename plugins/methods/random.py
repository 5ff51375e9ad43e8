"""`random`: a fair coin flip per response, blind to the response. A control that must not improve
the model: anything it "learns" measures noise in the training setup.

The coin is seeded by MethodOptions.seed and by how many batches this method has scored, so a run is
reproducible, and a resumed run continues the same sequence when the engine restores `state_dict()`.
"""

from __future__ import annotations

import random
from typing import Any

from coreward_plugins.batch import MethodResult, RolloutBatch
from coreward_plugins.methods.base import MethodOptions
from coreward_plugins.methods.scoring import GroupScoredMethod, ScoringContext


class RandomReward(GroupScoredMethod):
    name = "random"
    policy_views = ("original",)

    def __init__(self, options: MethodOptions | None = None) -> None:
        super().__init__(options)
        self.calls = 0  # batches scored so far
        self._rng = random.Random()

    def score(self, batch: RolloutBatch) -> MethodResult:
        # str seeds hash with SHA-512: the same on every platform and Python process
        self._rng = random.Random(f"coreward.random/{self.options.seed}/{self.calls}")
        self.calls += 1
        return super().score(batch)

    def score_group(self, ctx: ScoringContext, index: int) -> tuple[list[float], str | None]:
        return [float(self._rng.random() < 0.5) for _ in ctx.groups[index].responses], None

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
