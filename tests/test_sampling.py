"""`sample()`'s own decoding loop gives what transformers' `generate` gives: the same greedy tokens;
with `generate`'s draw (`torch.multinomial`) in place of `decoding.draw`, the same sampled tokens
and RNG state for a seed, the same eos/pad layout and widths, by chunk. `draw` itself samples each
row's distribution exactly (its own tests below)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.generation.logits_process import TopPLogitsWarper

from coreward_cli import decoding, lean_forward
from coreward_cli.lean_forward import LeanCache
from coreward_cli.prompts import Prompt
from coreward_cli.sampling import eos_ids, sample, tokenize_prompts
from coreward_cli.toy import build_model, build_tokenizer

torch.set_num_threads(1)

QUESTIONS = ["3+4=", "sum of 12 and 87?", "add 99 and 10:", "50+50=", "7+8="]
SMALL = dict(
    vocab_size=260,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, as the real families use
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def _tiny(family: str, seed: int = 0):
    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config_cls(**SMALL))
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    return model.eval()


def _boost_eos(model, amount: float) -> None:
    """Make the end-of-sequence token likely, so rows finish at different steps."""
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[2] = head[2] + amount * head[4:].mean(0) / head[4:].mean(0).norm()


MODELS = {
    "toy": lambda: build_model(seed=5).eval(),
    "llama": lambda: _tiny("llama"),
    "qwen2": lambda: _tiny("qwen2"),
}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _prompts(questions=QUESTIONS) -> list[Prompt]:
    return [Prompt(q, add_special_tokens=True) for q in questions]


def _via_generate(**kw):
    """`sample()` as it was: on `model.generate`."""
    with mock.patch.object(decoding, "supports", return_value=False):
        return sample(**kw)


def _seeded(fn, seed: int, **kw):
    torch.manual_seed(seed)
    out = fn(**kw)
    return out, torch.get_rng_state()


@pytest.fixture
def generate_draw():
    """The loop drawing as `generate` does, so `generate` is an oracle for every sampled token."""

    def multinomial(probs: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(probs, num_samples=1).squeeze(1)

    with mock.patch.object(decoding, "draw", multinomial):
        yield


@pytest.mark.parametrize("family", list(MODELS))
def test_greedy_equals_generate_token_for_token(family: str, tok) -> None:
    model = MODELS[family]()
    prompts = _prompts()
    ids, mask = tokenize_prompts(tok, prompts)
    config = decoding.generate_config(0.0, 1.0, 10, 1, eos_ids(model, tok), tok.pad_token_id)
    expected = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    got = sample(model, tok, prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=10)
    assert torch.equal(got.response_ids, expected[:, ids.shape[1] :])
    assert torch.equal(got.prompt_ids, ids) and torch.equal(got.prompt_mask, mask)


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize(
    "settings",
    [
        dict(n=4, temperature=0.6, top_p=1.0),
        dict(n=3, temperature=1.0, top_p=0.9),
        dict(n=1, temperature=1.3, top_p=0.95),
    ],
)
def test_sampled_equals_generate_for_a_seed(
    family: str, settings: dict, tok, generate_draw
) -> None:
    """Same tokens and the same global RNG state afterwards: the draws are `generate`'s, in order."""
    model = MODELS[family]()
    kw = dict(model=model, tokenizer=tok, prompts=_prompts(), max_new_tokens=9, **settings)
    before, rng_before = _seeded(_via_generate, 11, **kw)
    now, rng_now = _seeded(sample, 11, **kw)
    assert torch.equal(now.response_ids, before.response_ids)
    assert torch.equal(now.response_mask, before.response_mask)
    assert torch.equal(now.prompt_ids, before.prompt_ids)
    assert now.texts == before.texts
    assert torch.equal(rng_now, rng_before)


@pytest.mark.parametrize("forward", ["lean", "transformers"])
@pytest.mark.parametrize("limit", [40, decoding.COMPACT_FROM + 16])
def test_finished_rows_are_padded_and_width_is_the_steps_run(
    limit: int, forward: str, tok, generate_draw
) -> None:
    model = build_model(seed=2).eval() if limit < decoding.COMPACT_FROM else _tiny("qwen2", 2)
    _boost_eos(model, 6.0 if limit < decoding.COMPACT_FROM else 3.0)  # rows end at different steps
    kw = dict(model=model, tokenizer=tok, prompts=_prompts(), n=4, temperature=1.0, top_p=1.0)
    before, _ = _seeded(_via_generate, 3, max_new_tokens=limit, **kw)
    dropped = []
    cache_kind = LeanCache if forward == "lean" else decoding._TransformersCache
    select = cache_kind.select

    def spy(cache, rows):
        dropped.append(len(rows))
        select(cache, rows)

    with (
        mock.patch.object(cache_kind, "select", spy),
        mock.patch.object(lean_forward, "supports", return_value=forward == "lean"),
    ):
        now, rng_now = _seeded(sample, 3, max_new_tokens=limit, **kw)
    # in long generations finished rows leave the batch; the tokens stay generate's
    assert bool(dropped) == (limit >= decoding.COMPACT_FROM)
    lengths = now.response_mask.sum(1)
    assert lengths.min() < lengths.max()  # rows end at different steps
    assert now.response_ids.shape == before.response_ids.shape
    assert now.response_ids.shape[1] == int(lengths.max())
    assert torch.equal(now.response_ids, before.response_ids)
    for row, length in zip(now.response_ids, lengths.tolist()):
        if length < limit:
            assert row[length - 1] == 2  # the end-of-sequence token closes the response...
            assert (row[length:] == tok.pad_token_id).all()  # ...and only padding follows
    # the same RNG state as `generate` leaves: no draw after the last row finished
    _, rng_before = _seeded(_via_generate, 3, max_new_tokens=limit, **kw)
    assert torch.equal(rng_now, rng_before)


def test_chunks_give_the_same_rows_as_one_batch(tok, generate_draw) -> None:
    """Greedy rows do not depend on how prompts are split into calls; sampled ones equal
    `generate` called with the same chunks."""
    model = build_model(seed=4).eval()
    kw = dict(model=model, tokenizer=tok, prompts=_prompts(), max_new_tokens=8, top_p=1.0)
    whole = sample(n=1, temperature=0.0, **kw)
    chunked = sample(n=1, temperature=0.0, chunk=2, **kw)  # 2 prompts per call
    assert chunked.texts == whole.texts
    assert torch.equal(chunked.response_mask.sum(1), whole.response_mask.sum(1))
    before, _ = _seeded(_via_generate, 5, n=3, temperature=0.8, chunk=6, **kw)
    now, _ = _seeded(sample, 5, n=3, temperature=0.8, chunk=6, **kw)
    assert torch.equal(now.response_ids, before.response_ids) and now.texts == before.texts


def test_a_model_with_its_own_logits_processing_keeps_generate(tok) -> None:
    """A repetition penalty in the model's generation config is applied, as `generate` applies it."""
    model = build_model(seed=6).eval()
    assert decoding.supports(model)
    model.generation_config.repetition_penalty = 5.0
    assert not decoding.supports(model)
    prompts = _prompts()
    ids, mask = tokenize_prompts(tok, prompts)
    config = decoding.generate_config(0.0, 1.0, 10, 1, [2], tok.pad_token_id)
    expected = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    with mock.patch.object(decoding, "decode", side_effect=AssertionError("not for this model")):
        got = sample(model, tok, prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=10)
    assert torch.equal(got.response_ids, expected[:, ids.shape[1] :])


def test_draw_samples_each_row_from_its_distribution() -> None:
    """Frequencies over 200k draws match each row's probabilities (within 5 standard errors),
    tokens of probability 0 (what top-p cuts) never come up, and rows do not mix."""
    rows = torch.tensor(
        [
            [0.0, 0.5, 0.0, 0.3, 0.2, 0.0],  # zeros at the start, the middle and the end
            [0.9, 0.0, 0.0, 0.0, 0.0, 0.1],
            [1e-3, 0.0, 0.999, 0.0, 0.0, 0.0],  # a rare token keeps its chance
        ]
    )
    draws = 200_000
    torch.manual_seed(0)
    tokens = decoding.draw(rows.repeat_interleave(draws, 0)).view(3, draws)
    counts = torch.stack([torch.bincount(t, minlength=6) for t in tokens]).double()
    assert (counts[rows == 0] == 0).all()
    expected = rows.double() * draws
    sigma = (expected * (1 - rows.double())).sqrt()
    assert ((counts - expected).abs() <= 5 * sigma + 1e-9).all(), counts


def test_draw_is_reproducible_from_the_generator_state() -> None:
    probs = torch.softmax(torch.randn(8, 50, generator=torch.Generator().manual_seed(1)), -1)
    torch.manual_seed(7)
    first = decoding.draw(probs)
    state = torch.get_rng_state()
    torch.manual_seed(7)
    assert torch.equal(decoding.draw(probs), first)
    assert torch.equal(torch.get_rng_state(), state)  # it consumed the same numbers
    assert not torch.equal(decoding.draw(probs), decoding.draw(probs))  # and moves it on


def test_draw_at_the_top_of_the_uniform_range_lands_on_a_token_with_mass() -> None:
    """A uniform number that rounds up to the row's total must not fall past the last token with
    mass onto a cut one (searchsorted would return it, or the vocabulary size)."""
    probs = torch.tensor([[0.25, 0.75, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    with mock.patch.object(torch, "rand", lambda shape, **kw: torch.ones(shape, **kw)):
        assert decoding.draw(probs).tolist() == [1, 3]
    with mock.patch.object(torch, "rand", lambda shape, **kw: torch.zeros(shape, **kw)):
        assert decoding.draw(probs).tolist() == [0, 3]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_draw_refuses_probabilities_that_are_not_finite(bad: float) -> None:
    probs = torch.tensor([[0.5, 0.5], [bad, 0.5]])
    with pytest.raises(ValueError, match="inf or nan"):
        decoding.draw(probs)


@pytest.mark.parametrize("top_p", [0.0, 0.5, 0.9, 0.95, 0.99])
def test_top_p_keeps_the_tokens_generate_keeps(top_p: float) -> None:
    """`TopP` against transformers' `TopPLogitsWarper` on peaked and flat rows (nuclei of 1 to
    thousands of tokens, so the top-k widens up to the whole vocabulary): the same logits kept,
    the rest -inf. A token may differ only where the mass above it is within float rounding of
    top_p, as both compute it in float32 from opposite ends."""
    g = torch.Generator().manual_seed(1)
    differing = 0
    for vocab in (7, 260, 5000):
        for scale in (0.3, 1.0, 3.0, 10.0):
            scores = torch.randn(6, vocab, generator=g) * scale
            ours = decoding.TopP(top_p, first=16)(None, scores.clone())
            theirs = TopPLogitsWarper(top_p)(None, scores.clone())
            kept = torch.isfinite(ours)
            assert torch.equal(ours[kept], scores[kept])  # kept logits pass through untouched
            assert kept.sum(-1).min() >= 1
            diff = kept != torch.isfinite(theirs)
            for row, token in diff.nonzero().tolist():
                probs = scores[row].double().softmax(-1)
                above = probs[probs > probs[token]].sum()
                assert abs(float(above) - top_p) < 1e-5, (vocab, scale, row, token)
            differing += int(diff.sum())
    assert differing <= 2  # boundary cases are rare; a wrong rule differs by hundreds


def test_top_p_widens_until_every_rows_cut_is_inside() -> None:
    """One flat row among peaked ones: the top-k grows for it, and the peaked rows' cuts stay."""
    peaked = torch.tensor([12.0, 11.0] + [0.0] * 998)
    flat = -torch.arange(1000.0) * 1e-3  # near-uniform, no ties (their order is arbitrary)
    scores = torch.stack([peaked, flat])
    out = decoding.TopP(0.9, first=4)(None, scores.clone())
    assert torch.isfinite(out[0]).sum() == 2  # 0.73 + 0.27 of the mass in the top two
    assert torch.isfinite(out[1]).sum() > 800  # 90 % of a near-uniform row
    assert torch.equal(torch.isfinite(out), torch.isfinite(TopPLogitsWarper(0.9)(None, scores)))
