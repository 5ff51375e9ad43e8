"""Group-normalised advantages: one scalar per response, broadcast over its tokens by the engine.

GRPO (the official Co-rewarding code, verl's `grpo` outcome advantage run per prompt):
    A_i = (r_i - mean(r)) / (std(r) + eps),  std = the unbiased sample std (torch.std), eps = 1e-6
Dr. GRPO (`std="none"`): A_i = r_i - mean(r), no division.

A group whose rewards are all equal gets zeros (std 0, numerator 0): it contributes only the KL term.
A group of one response gets zeros. (verl substitutes mean 0 / std 1 there, which would hand the raw
reward over as an advantage; with no other sample there is no baseline to compare against, so we
give it none. The paper's runs never have groups of one: n = 8.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

AdvantageStd = Literal["unbiased", "none"]


def group_advantages(
    rewards: Sequence[float], std: AdvantageStd = "unbiased", eps: float = 1e-6
) -> list[float]:
    """Advantages of one group's responses (the n responses to one prompt), in the same order."""
    if std not in ("unbiased", "none"):
        raise ValueError(f"advantage std must be 'unbiased' or 'none', not {std!r}")
    n = len(rewards)
    if n == 0:
        return []
    if n == 1:
        return [0.0]
    values = [float(r) for r in rewards]
    mean = math.fsum(values) / n
    centred = [r - mean for r in values]
    if std == "none":
        return centred
    sample_std = math.sqrt(math.fsum(c * c for c in centred) / (n - 1))
    return [c / (sample_std + eps) for c in centred]
