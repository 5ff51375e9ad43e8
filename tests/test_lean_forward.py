"""The lean decoding forward computes what the transformers forward computes, and declines the
models where it would not."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from coreward_cli import decoding, lean_forward
from coreward_cli.lean_forward import LeanCache
from coreward_cli.prompts import Prompt
from coreward_cli.sampling import tokenize_prompts
from coreward_cli.toy import build_model, build_tokenizer
from tests.test_sampling import SMALL, _tiny

torch.set_num_threads(1)

# left padding of different depths: the padding bias and positions matter
QUESTIONS = ["3+4=", "sum of 12 and 87?", "add 99 and 10:", "7+8="]


def _llama_with_rope_scaling():
    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return LlamaForCausalLM(LlamaConfig(**SMALL, rope_parameters=rope)).eval()


MODELS = {
    "toy": lambda: build_model(seed=5).eval(),
    "llama-gqa": lambda: _tiny("llama"),
    "qwen2-gqa": lambda: _tiny("qwen2"),
    "llama3-rope": _llama_with_rope_scaling,
}


@pytest.mark.parametrize("family", list(MODELS))
def test_logits_are_the_transformers_forwards_bit_for_bit(family: str) -> None:
    """Prefill and every cached step give the transformers forward's logits exactly, for rows
    repeated n times from left-padded prompts, fed the same tokens."""
    model = MODELS[family]()
    assert lean_forward.supports(model)
    ids, mask = tokenize_prompts(build_tokenizer(), [Prompt(q, True) for q in QUESTIONS])
    assert (mask == 0).any()
    with torch.no_grad():
        lean = LeanCache(model, ids, mask, n=3, max_new_tokens=8)
        reference = decoding._TransformersCache(model, ids, mask, n=3, max_new_tokens=8)
        got, expected = lean.prefill(), reference.prefill()
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        generator = torch.Generator().manual_seed(0)
        for _ in range(7):
            tokens = torch.randint(3, 260, (ids.shape[0] * 3,), generator=generator)
            got, expected = lean.step(tokens), reference.step(tokens)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_dropping_rows_keeps_the_others_logits() -> None:
    model = _tiny("qwen2")
    ids, mask = tokenize_prompts(build_tokenizer(), [Prompt(q, True) for q in QUESTIONS])
    keep = torch.tensor([0, 2, 3, 7, 11])
    with torch.no_grad():
        lean = LeanCache(model, ids, mask, n=3, max_new_tokens=4)
        reference = decoding._TransformersCache(model, ids, mask, n=3, max_new_tokens=4)
        lean.prefill(), reference.prefill()
        tokens = torch.arange(12) + 10
        lean.step(tokens), reference.step(tokens)
        lean.select(keep), reference.select(keep)
        torch.testing.assert_close(lean.step(tokens[keep]), reference.step(tokens[keep]))


def _replaced_projection(model):
    class Adapter(nn.Linear):  # what LoRA or a quantizer puts in a projection's place
        pass

    old = model.model.layers[0].self_attn.q_proj
    model.model.layers[0].self_attn.q_proj = Adapter(old.in_features, old.out_features)
    return model


def _sliding_window():
    config = Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    return Qwen2ForCausalLM(config).eval()


def _training_with_attention_dropout():
    return Qwen2ForCausalLM(Qwen2Config(**SMALL, attention_dropout=0.1)).train()


@pytest.mark.parametrize(
    "make",
    [
        lambda: GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=260)),
        lambda: _replaced_projection(_tiny("llama")),
        _sliding_window,
        _training_with_attention_dropout,
    ],
    ids=["other-architecture", "adapted-projection", "sliding-window", "attention-dropout"],
)
def test_models_it_does_not_reproduce_keep_the_transformers_forward(make) -> None:
    assert not lean_forward.supports(make())


def test_autocast_keeps_the_transformers_forward() -> None:
    model = build_model(seed=1).eval()
    assert lean_forward.supports(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lean_forward.supports(model)


def _scored_rows():
    """Left-padded prompts of different depths, runs of rows of one prompt of different lengths
    (3, 1, 2, 2), and responses that end (eos, then pads) at different points."""
    ids, mask = tokenize_prompts(build_tokenizer(), [Prompt(q, True) for q in QUESTIONS])
    owner = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3])
    generator = torch.Generator().manual_seed(4)
    response = torch.randint(3, 260, (len(owner), 6), generator=generator)
    lengths = torch.tensor([6, 2, 4, 6, 3, 6, 1, 5])
    response_mask = (torch.arange(6)[None] < lengths[:, None]).long()
    response = response.masked_fill(response_mask == 0, 0)
    return ids, mask, owner, response, response_mask


def _whole_row_logits(model, ids, mask, owner, response, response_mask) -> torch.Tensor:
    """The oracle: every row's prompt and response through the transformers forward in one piece,
    positions from the mask; at response position t the logits that predict token t."""
    full_mask = torch.cat([mask[owner], response_mask], 1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=torch.cat([ids[owner], response], 1),
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=False,
    ).logits
    return logits[:, ids.shape[1] - 1 : -1]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("family", list(MODELS))
def test_response_logits_and_gradient_are_the_transformers_forwards(
    family: str, attention: str
) -> None:
    """The update's packed forward: the logits of every real response token and the gradient of
    every weight equal those of each row run whole through the transformers forward, to float32
    rounding, with either attention."""
    model = MODELS[family]()
    model.set_attn_implementation(attention)
    ids, mask, owner, response, response_mask = _scored_rows()
    weights = torch.randn((*response.shape, 260), generator=torch.Generator().manual_seed(1))
    real = response_mask.bool()

    def run(forward) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = forward(model, ids, mask, owner, response, response_mask)
        (logits * weights)[real].sum().backward()
        return logits.detach()[real], [p.grad.clone() for p in model.parameters()]

    got, got_grad = run(lean_forward.response_logits)
    expected, expected_grad = run(_whole_row_logits)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
    for (name, _), a, b in zip(model.named_parameters(), got_grad, expected_grad):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-7, name


def test_scoring_takes_the_lean_forward_where_it_applies() -> None:
    from unittest import mock

    from coreward_cli.engines.logprobs import score_tokens
    from coreward_cli.sampling import Sequences

    ids, mask, owner, response, response_mask = _scored_rows()
    seqs = Sequences(ids[owner], mask[owner], response, response_mask, [""] * len(owner))
    lean = mock.patch.object(lean_forward, "response_logits", wraps=lean_forward.response_logits)
    with lean as spy:
        score_tokens(build_model(seed=1).eval(), seqs, temperature=0.7)
        assert spy.call_count == 1
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=260))
        score_tokens(model.eval(), seqs, temperature=0.7)
        assert spy.call_count == 1  # another architecture: its transformers forward
