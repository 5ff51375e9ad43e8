"""The forwards of Llama-family models (Llama, Qwen2, SmolLM: the toy and most math policies) as
plain tensor ops: decoding over a preallocated key/value cache (`LeanCache`), and the update's
scoring of sampled responses with autograd (`response_logits`).

Why: at the toy's size a decoding step is cheap arithmetic under heavy per-call overhead. The
transformers forward walks ~15 modules a layer, rebuilds the attention mask from the full 2-D mask,
recomputes the rotary table and grows its cache by `torch.cat` at every token (issue 16's profile).
Here each layer is its projections, two norms and one attention, the cache is written in place,
the rotary table and the additive padding mask are built once per generation, and in the
one-token steps the heads of a grouped-query model read their shared keys without copies.

The arithmetic is the model's own, op for op: its weights through the `addmm` that `F.linear`
makes (called on 2-D hidden states directly, without its reshapes), its rotary and
activation modules (so a rope-scaling variant comes with them), its norm's epsilon, and torch's
SDPA as transformers' default attention. On float32 the decoding logits are bit-identical to the
transformers forward on the same rows; the update's packed products have other shapes, so its
logits and gradients match to float32 rounding (`tests/test_lean_forward.py`).

`supports` decides for both: exactly these module types, no sliding window, no attention dropout
in training mode, no autocast. Anything else (LoRA or quantized layers, other architectures, mixed
precision) keeps the transformers forward (`decoding.decode`, `engines.logprobs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

_ARCHITECTURES = {"LlamaForCausalLM", "Qwen2ForCausalLM"}
_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def supports(model: PreTrainedModel) -> bool:
    """Whether `LeanCache` computes what this model's own forward does."""
    if type(model).__name__ not in _ARCHITECTURES or type(model.lm_head) is not nn.Linear:
        return False
    config = model.config
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return False
    if getattr(config, "use_sliding_window", False):
        return False
    if model.training and getattr(config, "attention_dropout", 0.0):
        return False
    if torch.is_autocast_enabled(model.lm_head.weight.device.type):
        return False  # mixed precision keeps transformers' own casts
    return all(
        type(layer.get_submodule(name)) is nn.Linear
        for layer in model.model.layers
        for name in _LINEARS
    )


def positions(prompt_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """(P, W + max_new_tokens): each prompt token's position from its mask (pads 0), as `generate`
    numbers left-padded prompts, then the positions of the new tokens after it."""
    prompt = (prompt_mask.long().cumsum(-1) - 1).masked_fill(prompt_mask == 0, 0)
    after = prompt[:, -1:] + torch.arange(1, max_new_tokens + 1, device=prompt_mask.device)
    return torch.cat([prompt, after], 1)


class LeanCache:
    """One generation's keys and values, (layers, rows, kv heads, width + new tokens, head dim),
    with the rotary table and padding bias for every position it will hold."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt_ids: torch.Tensor,  # (P, W) left-padded
        prompt_mask: torch.Tensor,  # (P, W)
        n: int,
        max_new_tokens: int,
    ) -> None:
        self.model = model
        config = model.config
        self.layers = model.model.layers
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        self.groups = self.heads // self.kv_heads  # query heads per key/value head
        width = prompt_ids.shape[1]
        dtype = model.lm_head.weight.dtype
        device = prompt_ids.device
        total = width + max_new_tokens
        rows = prompt_ids.shape[0] * n

        self.prompt_ids, self.prompt_mask = prompt_ids, prompt_mask
        all_positions = positions(prompt_mask, max_new_tokens).repeat_interleave(n, 0)
        probe = torch.empty(0, dtype=dtype, device=device)
        self.cos, self.sin = _rope_tables(model, probe, all_positions)  # (B, 1, total, D) each
        visible = torch.ones((rows, total), dtype=torch.bool, device=device)  # all but prompt pads
        visible[:, :width] = prompt_mask.bool().repeat_interleave(n, 0)
        self.bias = _additive(visible[:, None, :], dtype)  # (B, 1, 1, total)
        shape = (len(self.layers), rows, self.kv_heads, total, self.head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.n = n
        self.length = 0  # positions written
        # each projection as (weight transposed, bias): `F.linear` on a (rows, ..., in) input makes
        # exactly this `addmm`/`mm` call after its reshapes and transpose, which at one token a row
        # cost more than the product (a toy step 1.09-1.14x faster at 1-128 rows, the same bits).
        # q, k and v are one product with their weights stacked: each output column is still the
        # same dot product over the same inputs, so the bits are the three products' (pinned by
        # tests/test_lean_forward.py), with one call instead of three
        self.projections = [
            {
                "qkv": _stacked([layer.get_submodule(name) for name in _LINEARS[:3]]),
                **{name: _transposed(layer.get_submodule(name)) for name in _LINEARS[3:]},
            }
            for layer in self.layers
        ]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished ones leave long generations)."""
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]
        self.cos, self.sin, self.bias = self.cos[rows], self.sin[rows], self.bias[rows]

    def can_select(self) -> bool:
        return True

    def prefill(self) -> torch.Tensor:
        """Run each distinct prompt once and repeat its cache n times; last-position logits (B, V)."""
        prompt_ids, prompt_mask = self.prompt_ids, self.prompt_mask
        p, w = prompt_ids.shape
        rows = slice(0, p * self.n, self.n)  # the first copy of each prompt
        causal = torch.ones((w, w), dtype=torch.bool, device=prompt_ids.device).tril()
        bias = _additive(causal & prompt_mask.bool()[:, None, :], self.bias.dtype)  # (P, 1, W, W)
        hidden = self._forward(prompt_ids, self.cos[rows, :, :w], self.sin[rows, :, :w], bias, p)
        last = hidden.view(p, w, -1)[:, -1]
        if self.n > 1:
            self.keys[:, :, :, :w] = self.keys[:, :p, :, :w].repeat_interleave(self.n, 1)
            self.values[:, :, :, :w] = self.values[:, :p, :, :w].repeat_interleave(self.n, 1)
        self.length = w
        return self._logits(last).repeat_interleave(self.n, 0)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """One new token per row held; its logits (rows, V)."""
        t = self.length
        hidden = self._forward(
            tokens[:, None],
            self.cos[:, :, t : t + 1],
            self.sin[:, :, t : t + 1],
            self.bias[..., : t + 1],
            len(tokens),
        )
        self.length = t + 1
        return self._logits(hidden)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(_rms_norm(self.model.model.norm, hidden))

    def _forward(
        self,
        ids: torch.Tensor,  # (b, s): the prompts (s = W) or one token per row (s = 1)
        cos: torch.Tensor,  # (b, 1, s, D), broadcast over heads
        sin: torch.Tensor,
        bias: torch.Tensor,  # (b, 1, s, t) or (b, 1, 1, t), additive
        b: int,  # cache rows written: 0..b
    ) -> torch.Tensor:
        """The last layer's hidden states, (b * s, hidden): rows b, positions s, flattened."""
        s = ids.shape[1]
        start, stop = self.length, self.length + s
        heads, roped = self.heads, self.heads + self.kv_heads  # q heads, then k heads, then v heads
        x = self.model.model.embed_tokens(ids.reshape(-1))  # (b * s, hidden)
        for i, layer in enumerate(self.layers):
            w = self.projections[i]
            h = _rms_norm(layer.input_layernorm, x)
            qkv = _project(h, w["qkv"]).view(b, s, roped + self.kv_heads, self.head_dim)
            qkv = qkv.transpose(1, 2)  # (b, q + k + v heads, s, D)
            qk = _rope(qkv[:, :roped], (cos, sin))  # q and k take the rotary in one go
            q = qk[:, :heads]
            self.keys[i, :b, :, start:stop] = qk[:, heads:]
            self.values[i, :b, :, start:stop] = qkv[:, roped:]
            keys, values = self.keys[i, :b, :, :stop], self.values[i, :b, :, :stop]
            out = self._attend(q, keys, values, bias)  # (b * s, H * D)
            x = x + _project(out, w["self_attn.o_proj"])
            h = _rms_norm(layer.post_attention_layernorm, x)
            gate, up = _project(h, w["mlp.gate_proj"]), _project(h, w["mlp.up_proj"])
            x = x + _project(layer.mlp.act_fn(gate) * up, w["mlp.down_proj"])
        return x

    def _attend(self, q, keys, values, bias) -> torch.Tensor:
        """Attention as transformers' SDPA path does it, grouped-query models included: one query a
        row puts a key/value head's query heads in its sequence slot; longer ones repeat keys."""
        b, _, s, d = q.shape
        if self.groups > 1 and s == 1:
            q = q.reshape(b, self.kv_heads, self.groups, d)
        else:
            keys, values = _repeat_kv(keys, self.groups), _repeat_kv(values, self.groups)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias, scale=self.scaling)
        if s == 1:
            return out.reshape(b, self.heads * d)
        return out.transpose(1, 2).reshape(b * s, self.heads * d)


def _transposed(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return linear.weight.t(), linear.bias


def _stacked(linears: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Projections of the same input as one: weights stacked by output, (in, sum of outs)."""
    weight = torch.cat([linear.weight for linear in linears]).t()
    if all(linear.bias is None for linear in linears):
        return weight, None
    biases = [
        torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device)
        if linear.bias is None
        else linear.bias
        for linear in linears
    ]
    return weight, torch.cat(biases)


def _project(x: torch.Tensor, projection: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    """(rows, in) -> (rows, out): `F.linear`'s own product for this projection."""
    weight_t, bias = projection
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm as torch's one fused op: for float32, the module's arithmetic exactly."""
    if x.dtype != torch.float32:
        return norm(x)
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def response_logits(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,  # (P, W) the distinct prompts, left-padded
    prompt_mask: torch.Tensor,  # (P, W)
    owner: torch.Tensor,  # (B,) the prompt of each row
    response_ids: torch.Tensor,  # (B, R), R >= 2
    response_mask: torch.Tensor,  # (B, R)
) -> torch.Tensor:
    """(B, R, V): at response position t the logits that predict response token t, with autograd,
    for the update. What `engines.logprobs.response_logits` gets from the transformers forward
    (each prompt run once, its keys and values shared by its rows), as plain tensor ops on one
    packed batch: the prompts' and the responses' tokens go through each projection together,
    with no cache object, mask builder or module walk between them. The same arithmetic up to
    float rounding (the packed products have other shapes): `tests/test_lean_forward.py`.

    Attention is the model's own choice: eager's two products and a float32 softmax when
    `config._attn_implementation` is "eager" (what the local engine picks for short sequences on
    a CPU), torch's SDPA otherwise.
    """
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    roped = heads + kv_heads  # q heads, then k heads, then v heads
    scaling = head_dim**-0.5
    eager = config._attn_implementation == "eager"
    p, w = prompt_ids.shape
    b, r = response_ids.shape[0], response_ids.shape[1] - 1  # the last token predicts nothing
    device, dtype = prompt_ids.device, model.lm_head.weight.dtype

    # positions from the masks, as the engine's sampling numbered them
    mask = torch.cat([prompt_mask[owner], response_mask[:, :-1]], 1)  # (B, W + r)
    prompt_pos = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
    response_pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, w:]
    probe = torch.empty(0, dtype=dtype, device=device)
    rope_p = _rope_tables(model, probe, prompt_pos)  # (P, 1, W, D) each
    rope_r = _rope_tables(model, probe, response_pos)  # (B, 1, r, D)
    # a prompt token sees its prompt's earlier tokens; a response token sees its prompt and its
    # own earlier tokens; padding is seen nowhere
    causal_p = torch.ones((w, w), dtype=torch.bool, device=device).tril()
    causal_r = torch.ones((r, w + r), dtype=torch.bool, device=device).tril(w)
    bias_p = _additive(causal_p & prompt_mask.bool()[:, None, :], dtype)  # (P, 1, W, W)
    bias_r = _additive(causal_r & mask.bool()[:, None, :], dtype)  # (B, 1, r, W + r)

    def attend(q, keys, values, bias):  # (n, H, s, D), (n, K, t, D) x 2, (n, 1, s, t)
        n, _, s, d = q.shape
        keys, values = _repeat_kv(keys, heads // kv_heads), _repeat_kv(values, heads // kv_heads)
        if eager:
            weights = torch.matmul(q, keys.transpose(2, 3)) * scaling + bias
            weights = weights.softmax(-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(weights, values)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias, scale=scaling)
        return out.transpose(1, 2).reshape(n * s, heads * d)

    split = p * w  # rows of x: the prompts' tokens, then the responses'
    ids = torch.cat([prompt_ids.reshape(-1), response_ids[:, :-1].reshape(-1)])
    x = model.model.embed_tokens(ids)  # (P*W + B*r, hidden)
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        h = _rms_norm(layer.input_layernorm, x)
        qkv = _project(h, _stacked([attention.q_proj, attention.k_proj, attention.v_proj]))
        qkv_p = qkv[:split].view(p, w, roped + kv_heads, head_dim).transpose(1, 2)
        qkv_r = qkv[split:].view(b, r, roped + kv_heads, head_dim).transpose(1, 2)
        qk_p, qk_r = _rope(qkv_p[:, :roped], rope_p), _rope(qkv_r[:, :roped], rope_r)
        keys = torch.cat([qk_p[:, heads:].index_select(0, owner), qk_r[:, heads:]], 2)
        values = torch.cat([qkv_p[:, roped:].index_select(0, owner), qkv_r[:, roped:]], 2)
        out = torch.cat(
            [
                attend(qk_p[:, :heads], qk_p[:, heads:], qkv_p[:, roped:], bias_p),
                attend(qk_r[:, :heads], keys, values, bias_r),
            ]
        )
        x = x + _project(out, _transposed(attention.o_proj))
        h = _rms_norm(layer.post_attention_layernorm, x)
        gate, up = _project(h, _transposed(mlp.gate_proj)), _project(h, _transposed(mlp.up_proj))
        x = x + _project(mlp.act_fn(gate) * up, _transposed(mlp.down_proj))
    last = x[:split].view(p, w, -1)[:, -1].index_select(0, owner)  # predicts response token 0
    hidden = torch.cat([last[:, None], x[split:].view(b, r, -1)], 1)  # (B, R, hidden)
    return model.lm_head(_rms_norm(model.model.norm, hidden))


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n, s, t) booleans -> (n, 1, s, t) attention bias: 0 where visible, the most negative value
    elsewhere, as transformers' own masks do: a row of pads then attends evenly among its pads
    instead of producing NaN."""
    bias = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return bias.masked_fill(~visible, torch.finfo(dtype).min)[:, None]


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(n, K, t, D) -> (n, K * groups, t, D): each key/value head once for each of its query heads."""
    if groups == 1:
        return x
    n, kv_heads, t, d = x.shape
    return x[:, :, None].expand(n, kv_heads, groups, t, d).reshape(n, kv_heads * groups, t, d)


def _rope_tables(model, probe, position_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, s, D) each, broadcast over heads: cos, and sin with its first half negated, since
    rotate_half(x) * sin == x.roll(D/2) * that sin: 2 ops, not 5."""
    cos, sin = model.model.rotary_emb(probe, position_ids)  # (n, s, D)
    half = sin.shape[-1] // 2
    sin = torch.cat([-sin[..., :half], sin[..., half:]], -1)
    return cos[:, None], sin[:, None]


def _rope(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The rotary embedding on (n, heads, s, D): x * cos + rotate_half(x) * sin, in 2 ops."""
    cos, sin = tables
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin
