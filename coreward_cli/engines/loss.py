"""The policy loss: PPO-clip on group advantages, plus an optional KL penalty, aggregated per view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

KlEstimator = Literal["k1", "k2", "k3"]
LossAgg = Literal["token-mean", "seq-mean-token-mean", "micro-token-mean"]


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KlEstimator) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from sampled tokens (Schulman's k1/k2/k3).

    k3 is verl's `low_var_kl`: exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10].
    """
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    kl = -log_ratio
    return (kl.exp() - kl - 1).clamp(-10.0, 10.0)


def ppo_clip(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_ratio: float
) -> torch.Tensor:
    """Per-token clipped surrogate loss; advantages are per sequence (B,) broadcast over tokens."""
    ratio = (logp - old_logp).exp()
    adv = advantages.unsqueeze(-1)
    return torch.maximum(-adv * ratio, -adv * ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio))


@dataclass(frozen=True)
class ViewNorm:
    """Totals over a whole view, so that micro-batches add up to the same loss as one big batch."""

    tokens: int
    sequences: int
    micro_batches: int = 1


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: LossAgg,
    norm: ViewNorm,
    micro_tokens: int | None = None,
) -> torch.Tensor:
    """This micro-batch's share of the view's aggregated loss.

    token-mean: sum over all response tokens of the view / the view's token count.
    seq-mean-token-mean: mean over the view's sequences of each sequence's token mean.
    micro-token-mean: verl's token-mean as the official code runs it: each micro-batch's own token
      mean, divided by the number of micro-batches (gradient accumulation), so the result depends
      on train.micro_batch_size. `micro_tokens` is the micro-batch's token count when some of its
      rows (with nothing to add) are left out of `values`; by default, `mask`'s.
    """
    m = mask.to(values.dtype)
    if mode == "token-mean":
        return (values * m).sum() / max(norm.tokens, 1)
    if mode == "micro-token-mean":
        tokens = m.sum().clamp(min=1) if micro_tokens is None else max(micro_tokens, 1)
        return (values * m).sum() / tokens / max(norm.micro_batches, 1)
    per_seq = (values * m).sum(-1) / m.sum(-1).clamp(min=1)
    return per_seq.sum() / max(norm.sequences, 1)
