"""Scoring sampled responses token by token: log-probs (with grad for the update), entropy and
self-certainty, for any causal LM that transformers loads.

Position ids always come from the attention mask (`cumsum - 1`), as `generate` does for
left-padded prompts; without that, log-probs of a padded row disagree with what was sampled
(cpu-notes §5e).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from coreward_cli import lean_forward
from coreward_cli.decoding import forward_args, token_stats
from coreward_cli.sampling import Sequences


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
    logits = response_logits(model, seqs).float()
    if temperature > 0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    target = seqs.response_ids.to(logits.device).unsqueeze(-1)
    scores = TokenScores(logp_all.gather(-1, target).squeeze(-1))
    if with_stats:
        with torch.no_grad():
            scores.entropy, scores.self_certainty = token_stats(logp_all)
    return scores


def response_logits(model: PreTrainedModel, seqs: Sequences) -> torch.Tensor:
    """(B, R, V): at response position t, the logits that predict response token t.

    Rows sampled from one prompt (n a prompt, consecutive) share its forward: each distinct prompt
    runs once and its keys and values are repeated for its rows, whose responses then run on that
    cache. The gradient reaching the prompt is the sum over its rows, as if each row had run it:
    the same loss and gradient with a fraction of the work (on the toy, half the tokens of a
    rephrased view). Rows with no shared prompt run whole.

    Llama-family models run this through `lean_forward.response_logits` (plain tensor ops on one
    packed batch: the update 1.10-1.16x faster on the toy); every other model, autocast and
    activation checkpointing run the transformers forward with the prompt's cache.
    """
    device = next(model.parameters()).device
    r_len = seqs.response_ids.shape[1]
    firsts, owner = _distinct_prompts(seqs)
    if r_len >= 2 and lean_forward.supports(model) and not _checkpointing(model):
        firsts, owner = firsts.to(device), owner.to(device)
        return lean_forward.response_logits(
            model,
            seqs.prompt_ids.to(device)[firsts],
            seqs.prompt_mask.to(device)[firsts],
            owner,
            seqs.response_ids.to(device),
            seqs.response_mask.to(device),
        )
    mask = torch.cat([seqs.prompt_mask, seqs.response_mask], 1).to(device)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    p_len = seqs.prompt_ids.shape[1]
    cache_arg, takes_keep = forward_args(model)
    keep = (lambda k: {"logits_to_keep": k}) if takes_keep else (lambda k: {})

    def whole() -> torch.Tensor:
        ids = torch.cat([seqs.prompt_ids, seqs.response_ids], 1).to(device)
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            **keep(r_len + 1),
        ).logits
        return logits[:, -(r_len + 1) : -1]  # position t predicts token t + 1

    if len(firsts) == len(seqs) or r_len < 2 or _checkpointing(model):
        return whole()
    firsts, owner = firsts.to(device), owner.to(device)
    prompt = model(
        input_ids=seqs.prompt_ids.to(device)[firsts],
        attention_mask=mask[firsts, :p_len],
        position_ids=positions[firsts, :p_len],
        use_cache=True,
        **keep(1),
    )
    cache = getattr(prompt, cache_arg, None)
    if not hasattr(cache, "batch_select_indices"):  # a model with a cache of its own kind
        return whole()
    cache.batch_select_indices(owner)  # each row gets its prompt's keys and values
    rest = model(
        input_ids=seqs.response_ids[:, :-1].to(device),
        attention_mask=mask[:, :-1],
        position_ids=positions[:, p_len:-1],
        use_cache=True,
        **{cache_arg: cache},
    )
    return torch.cat([prompt.logits[owner, -1:], rest.logits], 1)


def _checkpointing(model: PreTrainedModel) -> bool:
    """Activation checkpointing turns the cache off, so the shared prompt cannot be passed on."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # new name, old name
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _distinct_prompts(seqs: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """The first row of each run of identical prompts, and for every row the index of its run."""
    key = torch.cat([seqs.prompt_ids, seqs.prompt_mask], 1)
    new_run = torch.ones(len(seqs), dtype=torch.bool)
    new_run[1:] = (key[1:] != key[:-1]).any(1)
    return new_run.nonzero().squeeze(1), new_run.long().cumsum(0) - 1


def masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> list[float]:
    m = mask.to(values.device, values.dtype)
    return ((values * m).sum(-1) / m.sum(-1).clamp(min=1)).tolist()
