"""Group advantages: GRPO (unbiased std, as torch.std) and Dr. GRPO (no std)."""

from __future__ import annotations

import math

import pytest
import torch

from coreward_plugins.advantages import group_advantages


def test_grpo_matches_hand_values() -> None:
    # rewards 1,0,0,0: mean 0.25, unbiased var = (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5
    adv = group_advantages([1.0, 0.0, 0.0, 0.0])
    assert adv == pytest.approx(
        [0.75 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6)],
        abs=1e-12,
    )
    assert sum(adv) == pytest.approx(0.0, abs=1e-12)


def test_grpo_matches_torch_std() -> None:
    torch.manual_seed(0)
    for n in (2, 3, 8, 16):
        rewards = torch.randn(n, dtype=torch.float64)
        expected = (rewards - rewards.mean()) / (torch.std(rewards) + 1e-6)  # torch.std is unbiased
        assert group_advantages(rewards.tolist()) == pytest.approx(expected.tolist(), abs=1e-12)


def test_binary_group_of_eight() -> None:
    rewards = [1, 1, 1, 0, 0, 0, 0, 0]
    mean = 3 / 8
    std = math.sqrt((3 * (5 / 8) ** 2 + 5 * (3 / 8) ** 2) / 7)
    assert group_advantages(rewards) == pytest.approx(
        [(r - mean) / (std + 1e-6) for r in rewards], abs=1e-12
    )


def test_dr_grpo_is_centred_only() -> None:
    assert group_advantages([1.0, 0.0, 0.0, 1.0, 1.0], std="none") == pytest.approx(
        [0.4, -0.6, -0.6, 0.4, 0.4]
    )


def test_eps_is_used() -> None:
    adv = group_advantages([1.0, 0.0], eps=0.5)
    std = math.sqrt(0.5)  # unbiased: (0.25 + 0.25) / 1
    assert adv == pytest.approx([0.5 / (std + 0.5), -0.5 / (std + 0.5)])


def test_degenerate_groups() -> None:
    assert group_advantages([1.0, 1.0, 1.0]) == [
        0.0,
        0.0,
        0.0,
    ]  # no signal: only the KL term remains
    assert group_advantages([0.0] * 8, std="none") == [0.0] * 8
    assert group_advantages([1.0]) == [0.0]
    assert group_advantages([0.7], std="none") == [0.0]
    assert group_advantages([]) == []


def test_bad_std_mode() -> None:
    with pytest.raises(ValueError, match="unbiased"):
        group_advantages([1.0, 0.0], std="biased")  # type: ignore[arg-type]
