"""OpenRLHF samples <-> the method's plain `RolloutBatch`, and the method's rewards written back.

A step's samples are single-sample `Experience` objects; each prompt's n samples are contiguous
(OpenRLHF's advantage code reshapes rewards to (-1, n) and relies on it). A group is one such run:
same problem id and view (from the sample's label), sampled by the policy or by the teacher.

Writing back sets, per sample, `rewards` and `scores` (what the advantages use) and
`info["reward"]` (what OpenRLHF logs), and keeps the per-sample reference score the vLLM actor
computed in `info["coreward_reference_score"]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from coreward_plugins.batch import Group, MethodResult, RolloutBatch
from coreward_plugins.openrlhf.rows import decode_label

Decode = Callable[[Any], str]  # one sample -> its response text


@dataclass
class SampleGroup:
    problem_id: str
    view: str
    source: str
    samples: list[Any]  # Experience objects, in rollout order


def response_text(sample: Any, tokenizer: Any) -> str:
    """The response of a single-sample Experience (its action mask is shifted by one token)."""
    tokens = sample.sequences[0, 1:][sample.action_mask[0].bool()]
    return tokenizer.decode(tokens.tolist(), skip_special_tokens=True)


def group_samples(samples: Sequence[Any], n: int, source: str) -> list[SampleGroup]:
    """Consecutive runs of n samples sharing (problem id, view); raises if OpenRLHF's layout broke."""
    if len(samples) % n:
        raise ValueError(f"{len(samples)} samples do not split into groups of n={n}")
    groups = []
    for start in range(0, len(samples), n):
        chunk = list(samples[start : start + n])
        labels = [decode_label(s.labels[0]) for s in chunk]
        keys = {(lab.id, lab.view) for lab in labels}
        if len(keys) != 1:
            raise ValueError(
                f"samples {start}..{start + n - 1} mix prompts {sorted(keys)}: groups must be contiguous"
            )
        groups.append(SampleGroup(labels[0].id, labels[0].view, source, chunk))
    return groups


def build_batch(
    groups: Sequence[SampleGroup],
    decode: Decode,
    token_stats: dict[int, tuple[list[float], list[float]]] | None = None,
) -> RolloutBatch:
    """The method's view of the step. `token_stats[i]` = (entropy, self_certainty) of group i."""
    out = []
    for i, g in enumerate(groups):
        label = decode_label(g.samples[0].labels[0])
        stats = (token_stats or {}).get(i)
        out.append(
            Group(
                problem_id=g.problem_id,
                view=g.view,  # type: ignore[arg-type]
                source=g.source,  # type: ignore[arg-type]
                prompt=g.samples[0].prompts[0],
                responses=[decode(s) for s in g.samples],
                reference=label.reference,
                entropy=stats[0] if stats else None,
                self_certainty=stats[1] if stats else None,
            )
        )
    return RolloutBatch(out)


def write_rewards(groups: Sequence[SampleGroup], result: MethodResult) -> None:
    """Overwrite each policy sample's reward with the method's (teacher groups are left alone)."""
    if len(result.rewards) != len(groups):
        raise ValueError(
            f"method returned {len(result.rewards)} reward lists for {len(groups)} groups"
        )
    for g, rewards in zip(groups, result.rewards):
        if g.source != "policy":
            continue
        if len(rewards) != len(g.samples):
            raise ValueError(
                f"method returned {len(rewards)} rewards for {len(g.samples)} samples of {g.problem_id}"
            )
        for sample, r in zip(g.samples, rewards):
            reference = sample.info.get(
                "coreward_reference_score",
                sample.rewards if sample.rewards is not None else torch.zeros(1),
            )
            value = torch.tensor([float(r)], dtype=torch.float32)
            sample.rewards = value
            sample.scores = value.clone()
            sample.info["reward"] = value.clone()
            sample.info["score"] = value.clone()
            sample.info["coreward_reference_score"] = torch.as_tensor(
                reference, dtype=torch.float32
            ).reshape(1)


def view_weights(samples: Sequence[Any], mode: str, loss_agg: str) -> dict[str, float]:
    """Per-view advantage scale that turns OpenRLHF's one mean over the step into the recipe's
    combination of per-view means.

    OpenRLHF's actor loss (one optimizer window = the whole step) is sum(l_t) / T over all T action
    tokens (token-mean) or sum over sequences of their token-means / N (seq-mean-token-mean). The
    recipe wants sum_v L_v ("sum", the paper) or mean_v L_v, where L_v is the same mean over view v
    alone. Scaling view v's advantages by T / T_v (or N / N_v) makes the policy-gradient term exactly
    sum_v L_v, since the clipped surrogate is linear in a positive advantage scale; "mean" divides by
    the number of views."""
    counts: dict[str, float] = {}
    for s in samples:
        view = decode_label(s.labels[0]).view
        amount = float(s.action_mask.sum()) if loss_agg == "token-mean" else 1.0
        counts[view] = counts.get(view, 0.0) + amount
    total = sum(counts.values())
    if len(counts) < 2 or total == 0:
        return {v: 1.0 for v in counts}
    divisor = 1.0 if mode == "sum" else float(len(counts))
    return {v: (total / c / divisor if c > 0 else 0.0) for v, c in counts.items()}


def scale_advantages(experiences: Sequence[Any], weights: dict[str, float]) -> None:
    """Multiply each row's advantages by its view's weight (rows of micro-batched Experiences)."""
    for exp in experiences:
        row_w = torch.tensor(
            [weights[decode_label(lab).view] for lab in exp.labels], dtype=exp.advantages.dtype
        )
        exp.advantages = exp.advantages * row_w.reshape(-1, *([1] * (exp.advantages.dim() - 1)))
