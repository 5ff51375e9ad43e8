"""Sampling responses and scoring them token by token, for any causal LM that transformers loads.

Layout used everywhere in the local engine: prompts left-padded to one width, responses
right-padded after their end-of-sequence token. Position ids always come from the attention
mask (`cumsum - 1`), as `generate` does for left-padded prompts; without that, log-probs of a
padded row disagree with what `generate` sampled (cpu-notes §5e).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Sequences:
    """A batch of prompts and sampled responses, row-aligned."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, R) right-padded
    response_mask: torch.Tensor  # (B, R) 1 up to and including the first end-of-sequence token
    texts: list[str]  # decoded responses, special tokens removed

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def rows(self, start: int, stop: int) -> Sequences:
        """Rows [start, stop), with columns that are padding in every kept row trimmed away."""
        pm, rm = self.prompt_mask[start:stop], self.response_mask[start:stop]
        p_keep = int(pm.any(0).nonzero()[0]) if pm.any() else pm.shape[1]
        r_len = int(rm.any(0).nonzero()[-1]) + 1 if rm.any() else 0
        return Sequences(
            self.prompt_ids[start:stop, p_keep:],
            pm[:, p_keep:],
            self.response_ids[start:stop, :r_len],
            rm[:, :r_len],
            self.texts[start:stop],
        )


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    chat_template: bool,
    system_prompt: str | None,
) -> str:
    """The text the model is asked: chat-templated, or the system prompt and question as plain text."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            from coreward_cli.errors import UserError

            raise UserError(
                "model.chat_template: the tokenizer has no chat template; set model.chat_template: false"
            )
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": question}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system_prompt}\n{question}" if system_prompt else question


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], chat_template: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer.padding_side = "left"
    enc = tokenizer(
        prompts, return_tensors="pt", padding=True, add_special_tokens=not chat_template
    )
    return enc["input_ids"], enc["attention_mask"]


def response_mask_for(response_ids: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """1 on every token up to and including the first end-of-sequence token (all, if none)."""
    is_eos = (
        torch.isin(response_ids, torch.tensor(eos, dtype=response_ids.dtype))
        if eos
        else torch.zeros_like(response_ids, dtype=torch.bool)
    )
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first eos
    return (~after_eos).long()


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    chat_template: bool,
    chunk: int = 256,
) -> Sequences:
    """`n` responses per prompt (prompt-major: prompt i owns rows i*n .. i*n+n-1).

    temperature 0 means greedy. Sampling draws from torch's global generator, so a run is
    reproducible from the RNG states the checkpoint restores.
    """
    device = next(model.parameters()).device
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    greedy = temperature <= 0
    config = GenerationConfig(
        do_sample=not greedy,
        temperature=None if greedy else temperature,
        top_p=None if greedy else top_p,
        top_k=None if greedy else 0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad,
        eos_token_id=eos or None,
    )
    per_call = max(1, chunk // n)
    parts: list[Sequences] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), per_call):
            ids, mask = tokenize_prompts(
                tokenizer, prompts[start : start + per_call], chat_template
            )
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
            response = out[:, ids.shape[1] :].cpu()
            rmask = response_mask_for(response, eos)
            texts = tokenizer.batch_decode(
                [r[m.bool()] for r, m in zip(response, rmask)], skip_special_tokens=True
            )
            parts.append(
                Sequences(
                    ids.repeat_interleave(n, 0),
                    mask.repeat_interleave(n, 0),
                    response,
                    rmask,
                    texts,
                )
            )
    finally:
        model.train(was_training)
    return concat(parts, pad)


def concat(parts: list[Sequences], pad: int) -> Sequences:
    """Stack batches of different widths: prompts padded on the left, responses on the right."""
    p_width = max(s.prompt_ids.shape[1] for s in parts)
    r_width = max(s.response_ids.shape[1] for s in parts)

    def pad_to(t: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
        fill = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype)
        return torch.cat([fill, t] if left else [t, fill], dim=1)

    return Sequences(
        torch.cat([pad_to(s.prompt_ids, p_width, pad, True) for s in parts]),
        torch.cat([pad_to(s.prompt_mask, p_width, 0, True) for s in parts]),
        torch.cat([pad_to(s.response_ids, r_width, pad, False) for s in parts]),
        torch.cat([pad_to(s.response_mask, r_width, 0, False) for s in parts]),
        [t for s in parts for t in s.texts],
    )


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
