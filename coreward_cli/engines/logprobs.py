"""Scoring sampled responses token by token: log-probs (with grad for the update), entropy and
self-certainty, for any causal LM that transformers loads.

Position ids always come from the attention mask (`cumsum - 1`), as `generate` does for
left-padded prompts; without that, log-probs of a padded row disagree with what was sampled
(cpu-notes §5e).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from coreward_cli.sampling import Sequences


def _accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@dataclass
class TokenScores:
    logprobs: torch.Tensor  # (B, R) log p(response token) at the sampling temperature
    entropy: torch.Tensor | None = None  # (B, R) token entropy
    self_certainty: torch.Tensor | None = None  # (B, R) KL(uniform || p)


def score_tokens(
    model: PreTrainedModel, seqs: Sequences, temperature: float, with_stats: bool = False
) -> TokenScores:
    """Log-probs of the response tokens (with grad if enabled), from logits / temperature.

    Dividing by the sampling temperature (as verl and OpenRLHF do) makes these the log-probs of
    the distribution the responses were actually drawn from.
    """
    device = next(model.parameters()).device
    r_len = seqs.response_ids.shape[1]
    ids = torch.cat([seqs.prompt_ids, seqs.response_ids], 1).to(device)
    mask = torch.cat([seqs.prompt_mask, seqs.response_mask], 1).to(device)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    kwargs = {"logits_to_keep": r_len + 1} if _accepts_logits_to_keep(model) else {}
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **kwargs
    ).logits
    logits = logits[:, -(r_len + 1) : -1].float()  # position t predicts token t+1
    if temperature > 0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    target = seqs.response_ids.to(device).unsqueeze(-1)
    scores = TokenScores(logp_all.gather(-1, target).squeeze(-1))
    if with_stats:
        with torch.no_grad():
            probs = logp_all.exp()
            scores.entropy = -(probs * logp_all).sum(-1)
            scores.self_certainty = -logp_all.mean(-1) - math.log(logp_all.shape[-1])
    return scores


def masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> list[float]:
    m = mask.to(values.device, values.dtype)
    return ((values * m).sum(-1) / m.sum(-1).clamp(min=1)).tolist()
