"""The token loop behind `sampling.sample`: one prefill per distinct prompt, then one cached
forward per new token, with `generate`'s sampling rules.

Why not `model.generate`: it prefills each prompt once per returned sequence, keeps running the
forward on rows that have finished, and per step rebuilds the attention mask and positions (a
`torch.cat` each) and re-checks its generation settings. This loop does the rest the same way:
- the prompt is prefilled once and its cache repeated `n` times (`generate` computes n copies);
- Llama-family models (Llama, Qwen2, SmolLM) run `lean_forward.LeanCache`: their own weights as
  plain tensor ops on a preallocated cache, bit-identical logits with a fraction of the per-token
  overhead; any other model runs its transformers forward (`_TransformersCache`);
- in long generations (`COMPACT_FROM`), rows that have finished leave the forward batch;
- each step's scores are the last position's logits in float32, warped by transformers' own
  `TemperatureLogitsWarper` and by `TopP`, `TopPLogitsWarper`'s rule without its sort of the
  whole vocabulary (top-k off); their softmax is sampled by `draw`, one uniform number a row
  (finished rows included) from torch's global generator, where `generate` runs
  `torch.multinomial`'s race of one exponential per vocabulary entry: the same distribution at a
  fraction of the cost, different tokens for a seed. Greedy is the argmax;
- a finished row gets the pad token, and the loop ends when every row has finished or after
  `max_new_tokens` steps.

The arithmetic per row is the same, but a matmul over fewer rows (the deduplicated prefill, a
compacted batch) may round differently in the last bits, as the math library picks kernels by
shape: a token can differ from `generate`'s only where two candidates tie to about 1e-6. With
n = 1 and short generations the shapes, and so the bits, are `generate`'s.

`supports` says when this holds. A model whose own generation config adds logits processing
(repetition penalty, suppressed tokens, ...) keeps `model.generate`, which applies those too.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel
from transformers.generation.logits_process import LogitsProcessor, TemperatureLogitsWarper

from coreward_cli import lean_forward
from coreward_cli.lean_forward import LeanCache

# generation-config entries that change nothing this loop does differently from `generate`
_NEUTRAL = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "max_length",
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "num_beams",
    "num_return_sequences",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
}


# From this many new tokens on, rows that have finished leave the batch once a quarter of those
# still computed have (their cache rows dropped). Short generations (the toy's 12 tokens) gain
# nothing from it and keep every forward at the full batch size.
COMPACT_FROM = 64


def supports(model: PreTrainedModel) -> bool:
    """Whether `decode` gives what `model.generate` would: a decoder-only model with no logits
    processing of its own in its generation config."""
    if getattr(model.config, "is_encoder_decoder", False):
        return False
    own = getattr(model, "generation_config", None)
    if own is None:
        return True
    return all(key in _NEUTRAL for key in own.to_diff_dict())


class TopP(LogitsProcessor):
    """`generate`'s top-p rule (`TopPLogitsWarper`, at least one token kept), found from the most
    likely tokens down instead of by sorting the whole vocabulary.

    A token is kept when the probability of the tokens ranked above it is under `top_p`; the
    warper states it from the other end (the cumulative probability of it and every token below
    is over 1 - top_p): the same set, up to float rounding at the threshold and the order of exact
    ties. The warper sorts every row: 81 ms a step for 32 rows of SmolLM2's 49k vocabulary on this
    CPU. A language model's nucleus is a handful of tokens (SmolLM2 at T 0.8, top-p 0.95: median 2,
    at most 174), so this takes the `first` most likely and widens (x8, then the whole vocabulary)
    only while some row's nucleus is longer: 4.4 ms there (`bench_generation.py`).
    """

    def __init__(self, top_p: float, first: int = 64) -> None:
        self.top_p, self.first = top_p, first

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.softmax(-1)  # (B, V)
        vocab = probs.shape[-1]
        k = min(self.first, vocab)
        while True:
            top, index = probs.topk(k, dim=-1)  # (B, k), most likely first
            reached = top.cumsum(-1)  # (B, k): the mass of each token and the tokens above it
            if k == vocab or bool((reached[:, -1] >= self.top_p).all()):
                break  # every row's cut lies in the top k: the tokens below it all go
            k = 8 * k if 8 * k <= vocab // 8 else vocab  # a near-full top-k costs a sort anyway
        above = F.pad(reached[:, :-1], (1, 0))  # (B, k): the mass of the tokens above each
        keep = above < self.top_p
        keep[:, 0] = True
        kept = scores.gather(-1, index).masked_fill(~keep, -float("inf"))
        return torch.full_like(scores, -float("inf")).scatter_(-1, index, kept)


def warpers(temperature: float, top_p: float) -> list[LogitsProcessor]:
    """What `generate` applies for do_sample with this temperature and top-p, and top-k off, in
    its order. Applied one by one: `LogitsProcessorList` inspects each one's signature at every
    call, ~80 us a step on a CPU (a fifth of the toy's sampling bookkeeping)."""
    out: list[LogitsProcessor] = []
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        out.append(TopP(top_p))
    return out


def forward_args(model: PreTrainedModel) -> tuple[str, bool]:
    """The name of the model's cache argument (transformers 5 renamed `past_key_values` to
    `cache`) and whether its forward takes `logits_to_keep`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values", "logits_to_keep" in params


def token_stats(logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V) log-probabilities -> (...) the distribution's entropy and self-certainty,
    KL(uniform || p) = -mean(log p) - log V."""
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return entropy, -logprobs.mean(-1) - math.log(logprobs.shape[-1])


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token a row of `probs` (B, V), token i with chance probs[i] / (row sum), from torch's
    generator for the device: the row's cumulative distribution inverted at one uniform number.

    `torch.multinomial` (what `generate` calls) runs a race of one exponential draw per vocabulary
    entry: 17k of them a step for the toy's 64 rows, 786k for SmolLM2's 16, at ~26 ns each on a
    CPU. One number a row plus a cumulative sum draws from the same distribution 3.5x (the toy) to
    30x (SmolLM2) cheaper (`bench_generation.py`). The sum runs in float64 (float32 on MPS, which
    has none): a token's chance is off its probability by at most ~V x 1e-16, and a token of
    probability 0 (cut by top-p) is never drawn.
    """
    wide = torch.float32 if probs.device.type == "mps" else torch.float64
    cdf = probs.to(wide).cumsum_(-1)  # (B, V), summed where it was cast: one allocation, not two
    total = cdf[:, -1:]  # (B, 1), 1 up to rounding
    if not bool(torch.isfinite(total).all()):
        raise ValueError("sampling probabilities contain inf or nan (the model's logits do)")
    u = torch.rand(total.shape, dtype=wide, device=probs.device) * total
    # kept strictly below the total, so the token found has mass: cdf rises past u at it
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


class _TransformersCache:
    """The model's own forward and cache behind `LeanCache`'s interface, for every other model.
    The mask and positions are preallocated and sliced per step, never concatenated."""

    def __init__(self, model, prompt_ids, prompt_mask, n: int, max_new_tokens: int) -> None:
        self.model = model
        self.cache_key, takes_keep = forward_args(model)
        # only the last position's logits, as `generate` asks for them
        self.keep = {"logits_to_keep": 1} if takes_keep else {}
        self.prompt_ids, self.prompt_mask, self.n = prompt_ids, prompt_mask, n
        self.width = prompt_ids.shape[1]
        all_positions = lean_forward.positions(prompt_mask, max_new_tokens)
        self.positions = all_positions[:, : self.width]
        self.next_positions = all_positions[:, self.width :].repeat_interleave(n, 0)
        self.mask = prompt_mask.new_ones((prompt_ids.shape[0] * n, self.width + max_new_tokens))
        self.mask[:, : self.width] = prompt_mask.repeat_interleave(n, 0)
        self.cache = None
        self.length = 0

    def can_select(self) -> bool:
        return hasattr(self.cache, "batch_select_indices")

    def prefill(self) -> torch.Tensor:
        out = self.model(
            input_ids=self.prompt_ids,
            attention_mask=self.prompt_mask,
            position_ids=self.positions,
            use_cache=True,
            **self.keep,
        )
        self.cache = getattr(out, self.cache_key)
        logits = out.logits[:, -1]
        if self.n > 1:
            self.cache.batch_repeat_interleave(self.n)
            logits = logits.repeat_interleave(self.n, 0)
        self.length = self.width
        return logits

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask, self.next_positions = self.mask[rows], self.next_positions[rows]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.length += 1
        t = self.length - self.width
        return self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask[:, : self.length],
            position_ids=self.next_positions[:, t - 1 : t],
            use_cache=True,
            **self.keep,
            **{self.cache_key: self.cache},
        ).logits[:, -1]


@torch.no_grad()
def decode(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    eos: list[int],
    pad: int,
    with_stats: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Response ids (rows prompt-major, n per prompt; width = steps run) for left-padded prompts
    already on the model's device, and with `with_stats` each token's `token_stats` (entropy,
    self-certainty; same width) under the model's distribution at this temperature: what
    `score_tokens` would compute from the finished rows. Temperature <= 0 is greedy."""
    device = prompt_ids.device
    greedy = temperature <= 0
    warp = warpers(temperature, top_p) if not greedy else []
    batch = prompt_ids.shape[0] * n
    width = prompt_ids.shape[1]
    kind = LeanCache if lean_forward.supports(model) else _TransformersCache
    cache = kind(model, prompt_ids, prompt_mask, n, max_new_tokens)
    logits = cache.prefill()

    # the whole sequence, written in place: the warpers read a slice, never a concatenation
    seq = torch.empty((batch, width + max_new_tokens), dtype=prompt_ids.dtype, device=device)
    seq[:, :width] = prompt_ids.repeat_interleave(n, 0)
    eos_t = torch.tensor(eos, dtype=seq.dtype, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    rows = torch.arange(batch, device=device)  # the batch rows the cache still holds
    compact = max_new_tokens >= COMPACT_FROM and cache.can_select()
    stats = []
    steps = 0
    while True:
        scores = logits.to(torch.float32)
        if with_stats:
            scaled = scores / temperature if temperature > 0 else scores
            stats.append(token_stats(torch.log_softmax(scaled, dim=-1)))
        for warper in warp:
            scores = warper(seq[:, : width + steps], scores)
        if greedy:
            tokens = scores.argmax(-1)
        else:
            tokens = draw(torch.softmax(scores, dim=-1))
        tokens = torch.where(unfinished, tokens, pad)
        seq[:, width + steps] = tokens
        steps += 1
        if eos:
            unfinished &= ~torch.isin(tokens, eos_t)
        alive = int(unfinished.sum())
        if steps == max_new_tokens or not alive:
            break
        if compact and alive <= len(rows) * 3 // 4:
            held = unfinished[rows].nonzero().squeeze(1)
            cache.select(held)
            rows = rows[held]
        if len(rows) == batch:
            logits = cache.step(tokens)
        else:  # finished rows still take their draw (then pad): a row's draws do not depend on others
            step_logits = cache.step(tokens[rows])
            logits = step_logits.new_zeros((batch, step_logits.shape[-1]))
            logits[rows] = step_logits
    if not with_stats:
        return seq[:, width : width + steps], None
    entropy, certainty = (torch.stack(kind, 1) for kind in zip(*stats))
    return seq[:, width : width + steps], (entropy, certainty)


def generate_config(
    temperature: float, top_p: float, max_new_tokens: int, n: int, eos: list[int], pad: int
) -> GenerationConfig:
    """The `model.generate` settings with the same meaning, for models `decode` does not support."""
    greedy = temperature <= 0
    return GenerationConfig(
        do_sample=not greedy,
        temperature=None if greedy else temperature,
        top_p=None if greedy else top_p,
        top_k=None if greedy else 0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad,
        eos_token_id=eos or None,
    )
