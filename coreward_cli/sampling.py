"""Sampling n responses per prompt with transformers: the one path for training, eval, the toy
and rephrasing.

Layout: prompts left-padded to one width, responses right-padded after their end-of-sequence
token. Sampling draws from torch's global generator, so a run is reproducible from the RNG
states a checkpoint restores (and a caller that wants a fixed draw seeds it first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from coreward_cli import decoding
from coreward_cli.prompts import Prompt


@dataclass
class Sequences:
    """A batch of prompts and sampled responses, row-aligned."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, R) right-padded
    response_mask: torch.Tensor  # (B, R) 1 up to and including the first end-of-sequence token
    texts: list[str]  # decoded responses, special tokens removed
    # (B, R) each response token's entropy and self-certainty under the sampling policy, when
    # sampling kept them (`sample(with_stats=True)`)
    entropy: torch.Tensor | None = None
    self_certainty: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def rows(self, start: int, stop: int) -> Sequences:
        """Rows [start, stop), with columns that are padding in every kept row trimmed away."""
        return self._trimmed(slice(start, stop), self.texts[start:stop])

    def pick(self, rows: torch.Tensor) -> Sequences:
        """These rows (indices, in order), trimmed like `rows`."""
        return self._trimmed(rows, [self.texts[i] for i in rows.tolist()])

    def _trimmed(self, rows: slice | torch.Tensor, texts: list[str]) -> Sequences:
        pm, rm = self.prompt_mask[rows], self.response_mask[rows]
        p_keep = int(pm.any(0).nonzero()[0]) if pm.any() else pm.shape[1]
        r_len = int(rm.any(0).nonzero()[-1]) + 1 if rm.any() else 0
        return Sequences(
            self.prompt_ids[rows][:, p_keep:],
            pm[:, p_keep:],
            self.response_ids[rows][:, :r_len],
            rm[:, :r_len],
            texts,
            *(
                None if t is None else t[rows][:, :r_len]
                for t in (self.entropy, self.self_certainty)
            ),
        )


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
    tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask of prompts of one kind (all plain or all templated)."""
    special = {p.add_special_tokens for p in prompts}
    if len(special) != 1:
        raise ValueError("a batch mixes plain and chat-templated prompts")
    tokenizer.padding_side = "left"
    enc = tokenizer(
        [p.text for p in prompts],
        return_tensors="pt",
        padding=True,
        add_special_tokens=special.pop(),
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
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    chunk: int = 256,
    with_stats: bool = False,
) -> Sequences:
    """`n` responses per prompt (prompt-major: prompt i owns rows i*n .. i*n+n-1), at most
    `chunk` sequences per batch. Temperature 0 means greedy.

    The tokens are those `model.generate` gives for the same settings and RNG state; the loop is
    `decoding.decode`, or `generate` itself for a model `decoding.supports` rules out.
    `with_stats` keeps each token's entropy and self-certainty (`Sequences.entropy`,
    `.self_certainty`) where the loop runs."""
    device = next(model.parameters()).device
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    fast = decoding.supports(model)
    per_call = max(1, chunk // n)
    parts: list[Sequences] = []
    was_training = model.training
    if was_training:  # the engine keeps its models in eval mode: walking every module costs ~0.6 ms
        model.eval()
    try:
        for start in range(0, len(prompts), per_call):
            ids, mask = tokenize_prompts(tokenizer, prompts[start : start + per_call])
            ids, mask = ids.to(device), mask.to(device)
            stats = None
            if fast:
                response, stats = decoding.decode(
                    model,
                    ids,
                    mask,
                    n=n,
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_new_tokens,
                    eos=eos,
                    pad=pad,
                    with_stats=with_stats,
                )
            else:
                config = decoding.generate_config(temperature, top_p, max_new_tokens, n, eos, pad)
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
                response = out[:, ids.shape[1] :]
            response = response.cpu()
            ids, mask = ids.cpu(), mask.cpu()
            rmask = response_mask_for(response, eos)
            lengths = rmask.sum(-1).tolist()  # rmask is 1 on a prefix of each row
            texts = tokenizer.batch_decode(
                [r[:k] for r, k in zip(response.tolist(), lengths)], skip_special_tokens=True
            )
            parts.append(
                Sequences(
                    ids.repeat_interleave(n, 0),
                    mask.repeat_interleave(n, 0),
                    response,
                    rmask,
                    texts,
                    *((None, None) if stats is None else (t.float().cpu() for t in stats)),
                )
            )
    finally:
        if was_training:
            model.train()
    return concat(parts, pad)


def concat(parts: list[Sequences], pad: int) -> Sequences:
    """Stack batches of different widths: prompts padded on the left, responses on the right."""
    p_width = max(s.prompt_ids.shape[1] for s in parts)
    r_width = max(s.response_ids.shape[1] for s in parts)

    def pad_to(t: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
        fill = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype)
        return torch.cat([fill, t] if left else [t, fill], dim=1)

    def stat(name: str) -> torch.Tensor | None:
        if any(getattr(s, name) is None for s in parts):
            return None
        return torch.cat([pad_to(getattr(s, name), r_width, 0, False) for s in parts])

    return Sequences(
        torch.cat([pad_to(s.prompt_ids, p_width, pad, True) for s in parts]),
        torch.cat([pad_to(s.prompt_mask, p_width, 0, True) for s in parts]),
        torch.cat([pad_to(s.response_ids, r_width, pad, False) for s in parts]),
        torch.cat([pad_to(s.response_mask, r_width, 0, False) for s in parts]),
        [t for s in parts for t in s.texts],
        stat("entropy"),
        stat("self_certainty"),
    )
