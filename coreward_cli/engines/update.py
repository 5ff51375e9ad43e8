"""One on-policy optimizer step over a step's views: PPO-clip + KL, micro-batched, clipped, stepped.

Old log-probs are the detached current ones (one update per RL step, ratio exactly 1, as the
paper's configuration). The loss of each view is aggregated over the whole view (not per
micro-batch), so the gradient does not depend on `micro_batch_size`. Rows whose advantage is 0
(with no KL term) add nothing to the gradient and stay out of the backward.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from coreward_cli.engines.logprobs import score_tokens
from coreward_cli.engines.loss import (
    KlEstimator,
    LossAgg,
    ViewNorm,
    aggregate,
    kl_penalty,
    ppo_clip,
)
from coreward_cli.sampling import Sequences


@dataclass
class ViewBatch:
    """The sequences of one view (all of its groups) and one advantage per sequence."""

    view: str
    seqs: Sequences
    advantages: torch.Tensor  # (B,)
    ref_logprobs: torch.Tensor | None = None  # (B, R), filled when a KL term is on


@dataclass(frozen=True)
class UpdateSettings:
    temperature: float
    clip_ratio: float
    kl_coef: float
    kl_estimator: KlEstimator
    loss_agg: LossAgg
    view_loss: str  # "sum" | "mean"
    micro_batch_size: int
    grad_clip: float


def micro_slices(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


@torch.no_grad()
def reference_logprobs(
    scorer: Callable[[Sequences], torch.Tensor], seqs: Sequences, micro: int
) -> torch.Tensor:
    """Reference log-probs of every response token, (B, R) on CPU, computed micro-batch by micro-batch."""
    out = torch.zeros(seqs.response_ids.shape, dtype=torch.float32)
    for start, stop in micro_slices(len(seqs), micro):
        part = seqs.rows(start, stop)
        out[start:stop, : part.response_ids.shape[1]] = scorer(part).float().cpu()
    return out


def policy_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    views: list[ViewBatch],
    settings: UpdateSettings,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> dict[str, float]:
    """Accumulate the gradient of every view's loss, clip, step. Returns loss/KL/entropy/grad-norm metrics."""
    optimizer.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    view_weight = 1.0 if settings.view_loss == "sum" else 1.0 / max(1, len(views))
    totals = {"pg_loss": 0.0, "kl": 0.0, "loss": 0.0}
    entropy_sum, token_count = 0.0, 0
    backward_ran = False
    for vb in views:
        rm = vb.seqs.response_mask
        slices = micro_slices(len(vb.seqs), settings.micro_batch_size)
        norm = ViewNorm(tokens=int(rm.sum()), sequences=len(vb.seqs), micro_batches=len(slices))
        with_kl = settings.kl_coef > 0 and vb.ref_logprobs is not None
        for start, stop in slices:
            whole = vb.seqs.rows(start, stop)
            advantages = vb.advantages[start:stop]
            # A row whose advantage is 0 adds exactly 0 to the PPO-clip gradient (both surrogate
            # terms are 0 x ratio), so without a KL term it stays out of the forward and backward.
            # Label-free rewards leave a third of the rows there (unanimous groups), and more as
            # the policy sharpens. The entropy metric still covers every row: from sampling when
            # it was kept (`sample(with_stats=True)`), else from the forwards, idle rows no-grad.
            idle = torch.zeros_like(advantages, dtype=torch.bool) if with_kl else advantages == 0
            sampled = whole.entropy is not None
            if sampled:
                entropy_sum += float((whole.entropy * whole.response_mask).sum())
                token_count += int(whole.response_mask.sum())
            elif bool(idle.any()):
                part = whole.pick(idle.nonzero().squeeze(1))
                with torch.no_grad(), autocast():
                    scores = score_tokens(model, part, settings.temperature, with_stats=True)
                entropy_sum += float((scores.entropy * part.response_mask.to(device)).sum())
                token_count += int(part.response_mask.sum())
            busy = (~idle).nonzero().squeeze(1)
            if not len(busy):
                continue
            part = whole if len(busy) == len(whole) else whole.pick(busy)
            mask = part.response_mask.to(device)
            with autocast():
                scores = score_tokens(model, part, settings.temperature, with_stats=not sampled)
            logp = scores.logprobs
            if not sampled:
                entropy_sum += float((scores.entropy * mask).sum())
                token_count += int(mask.sum())
            pg = ppo_clip(
                logp, logp.detach(), advantages[busy].to(device, logp.dtype), settings.clip_ratio
            )
            micro_tokens = int(rm[start:stop].sum())  # idle rows' tokens count in the mean
            pg_loss = aggregate(pg, mask, settings.loss_agg, norm, micro_tokens)
            loss = pg_loss
            if with_kl:  # every row of the micro-batch is busy
                ref = vb.ref_logprobs[start:stop, : mask.shape[1]].to(device)
                kl_loss = aggregate(
                    kl_penalty(logp, ref, settings.kl_estimator),
                    mask,
                    settings.loss_agg,
                    norm,
                    micro_tokens,
                )
                loss = loss + settings.kl_coef * kl_loss
                totals["kl"] += kl_loss.item() / len(views)
            (loss * view_weight).backward()
            backward_ran = True
            totals["pg_loss"] += pg_loss.item() * view_weight
            totals["loss"] += loss.item() * view_weight
    params = [p for p in model.parameters() if p.requires_grad]
    if not backward_ran:  # every advantage 0: a zero gradient, which AdamW still steps on
        for p in params:
            p.grad = torch.zeros_like(p)
    if settings.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in params if p.grad is not None])
        )
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {
        **totals,
        "entropy": entropy_sum / max(1, token_count),
        "grad_norm": float(grad_norm),
        "lr": lr,
    }
