"""Which problems a run trains on, and which each RL step draws: a seeded shuffle per epoch,
last partial batch dropped.

`usable_problems` and `total_steps` are shared by the trainer and `coreward run --dry-run`, so
the plan's step count is the one the run takes. The batch of a step is a pure function of
(shuffle seed, step), so the data position a checkpoint records is enough to continue exactly
where a run stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from coreward_cli.errors import UserError
from coreward_cli.problem import Problem
from coreward_cli.recipe import Recipe


@dataclass(frozen=True)
class Usable:
    problems: list[Problem]
    too_long: int  # dropped: a view's prompt is longer than rollout.max_prompt_tokens


def usable_problems(
    recipe: Recipe,
    problems: list[Problem],
    views: Sequence[str],
    prompt_tokens: Callable[[Problem, str], int] | None,
) -> Usable:
    """The problems a run can train on: every view it samples present, every prompt short enough.

    `prompt_tokens(problem, view)`: the prompt's length in tokens (None: lengths not checked).
    """
    if "rephrased" in views:
        if all(p.rephrased is None for p in problems):
            raise UserError(
                f"method {recipe.method.name} trains on rephrased questions, but data.train has none; "
                "set data.train[].rephrased or data.rephrased_key"
            )
        problems = [p for p in problems if p.rephrased is not None]
    kept = problems
    if prompt_tokens is not None:
        limit = recipe.rollout.max_prompt_tokens
        kept = [p for p in problems if all(prompt_tokens(p, v) <= limit for v in views)]
    if len(kept) < recipe.train.problems_per_step:
        raise UserError(
            f"train.problems_per_step is {recipe.train.problems_per_step} but only {len(kept)} training problems "
            "are usable; lower it or add data"
        )
    return Usable(kept, len(problems) - len(kept))


def total_steps(recipe: Recipe, usable: int) -> int:
    """RL steps of a run over `usable` problems: train.max_steps, else epochs x full batches."""
    t = recipe.train
    return t.max_steps or t.epochs * (usable // min(t.problems_per_step, usable))


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
