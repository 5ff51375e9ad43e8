"""Which problems each RL step trains on: a seeded shuffle per epoch, last partial batch dropped.

The batch of a step is a pure function of (shuffle seed, step), so the data position a
checkpoint records is enough to continue exactly where a run stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreward_cli.data import Problem


@dataclass
class ProblemSampler:
    problems: list[Problem]
    per_step: int
    seed: int

    def __post_init__(self) -> None:
        self.per_step = min(self.per_step, len(self.problems))
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.problems) // self.per_step

    def position(self, step: int) -> dict[str, int]:
        """Where 1-based `step` reads: its epoch (0-based) and its offset into that epoch's order."""
        epoch, index = divmod(step - 1, self.steps_per_epoch)
        return {"epoch": epoch, "offset": index * self.per_step}

    def batch(self, step: int) -> list[Problem]:
        pos = self.position(step)
        order = self._epoch_order(pos["epoch"])
        return [self.problems[i] for i in order[pos["offset"] : pos["offset"] + self.per_step]]

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = (epoch, rng.permutation(len(self.problems)))
        return self._order[1]
