"""Log-probs of sampled responses: padding-invariant, equal to what `generate` sampled from; the loss math."""

from __future__ import annotations

import copy
import dataclasses
import math
from unittest import mock

import pytest
import torch

from coreward_cli.engines.logprobs import _distinct_prompts, score_tokens
from coreward_cli.engines.loss import ViewNorm, aggregate, kl_penalty, ppo_clip
from coreward_cli.engines.optim import build_optimizer, lr_multiplier
from coreward_cli.engines.update import UpdateSettings, ViewBatch, micro_slices, policy_update
from coreward_cli.prompts import Prompt
from coreward_cli.sampling import Sequences, concat, response_mask_for, sample
from coreward_cli.toy import build_model, build_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    model = build_model(seed=3)
    model.eval()
    return model, build_tokenizer()


def _sample(model, tok, prompts, n=2, seed=0, **kw) -> Sequences:
    torch.manual_seed(seed)
    return sample(
        model,
        tok,
        [Prompt(p, add_special_tokens=True) for p in prompts],
        n=n,
        temperature=kw.get("temperature", 1.0),
        top_p=1.0,
        max_new_tokens=kw.get("max_new_tokens", 10),
        with_stats=kw.get("with_stats", False),
    )


def test_logprobs_same_alone_and_in_left_padded_batch(toy):
    model, tok = toy
    alone = _sample(model, tok, ["3+4="], n=1, seed=1)
    others = _sample(model, tok, ["sum of 12 and 87?", "add 99 and 10:"], n=1, seed=2)
    batch = concat(
        [others, alone], tok.pad_token_id
    )  # "3+4=" now carries many pad tokens on the left
    assert batch.prompt_mask[-1].sum() < batch.prompt_mask.shape[1]
    with torch.no_grad():
        lp_alone = score_tokens(model, alone, temperature=0.7).logprobs[0]
        lp_batch = score_tokens(model, batch, temperature=0.7).logprobs[-1]
    r = int(alone.response_mask[0].sum())
    torch.testing.assert_close(lp_batch[:r], lp_alone[:r], rtol=0, atol=1e-5)


def test_logprobs_equal_generate_scores(toy):
    """score_tokens at temperature T = log_softmax(generate's raw logits / T) of the sampled tokens."""
    model, tok = toy
    enc = tok(["12+5=", "sum of 1 and 2?"], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(
        **enc,
        do_sample=True,
        temperature=0.6,
        top_k=0,
        max_new_tokens=6,
        min_new_tokens=6,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
    )
    response = out.sequences[:, enc["input_ids"].shape[1] :]
    expected = torch.stack([torch.log_softmax(lg.float() / 0.6, -1) for lg in out.logits], 1)
    expected = expected.gather(-1, response.unsqueeze(-1)).squeeze(-1)
    seqs = Sequences(
        enc["input_ids"], enc["attention_mask"], response, torch.ones_like(response), ["", ""]
    )
    with torch.no_grad():
        got = score_tokens(model, seqs, temperature=0.6).logprobs
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", ["toy", "llama-gqa"])
def test_a_shared_prompt_runs_once_with_the_same_scores_and_gradient(family: str, toy) -> None:
    """Rows of one prompt share its forward (its cache repeated per row): the log-probs, entropy
    and the gradient equal those of every row run whole, to float32 rounding. This is the path of
    the models `lean_forward` does not run (tests/test_lean_forward.py covers the lean one)."""
    from tests.test_sampling import _tiny

    model = copy.deepcopy(toy[0]) if family == "toy" else _tiny("llama")
    seqs = _sample(model, toy[1], ["3+4=", "sum of 12 and 87?", "7+8="], n=4, seed=3)
    assert len(_distinct_prompts(seqs)[0]) == 3
    forwards = []
    model.register_forward_pre_hook(
        lambda m, a, kw: forwards.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )

    def scored(shared: bool):
        model.zero_grad()
        forwards.clear()
        split = _distinct_prompts if shared else lambda s: (torch.arange(len(s)),) * 2
        with (
            mock.patch("coreward_cli.engines.logprobs._distinct_prompts", split),
            mock.patch("coreward_cli.lean_forward.supports", lambda model: False),
        ):
            scores = score_tokens(model, seqs, temperature=0.7, with_stats=True)
        (scores.logprobs * seqs.response_mask).sum().backward()
        return scores, [p.grad.clone() for p in model.parameters()], list(forwards)

    whole, whole_grad, whole_calls = scored(shared=False)
    shared, shared_grad, shared_calls = scored(shared=True)
    assert whole_calls == [(12, seqs.prompt_ids.shape[1] + seqs.response_ids.shape[1])]
    assert shared_calls[0] == (3, seqs.prompt_ids.shape[1])  # each prompt once
    assert shared_calls[1] == (12, seqs.response_ids.shape[1] - 1)  # then the responses
    m = seqs.response_mask.bool()
    for name in ("logprobs", "entropy", "self_certainty"):
        torch.testing.assert_close(
            getattr(shared, name)[m], getattr(whole, name)[m], rtol=0, atol=2e-5
        )
    for got, expected in zip(shared_grad, whole_grad):
        assert (got - expected).norm() <= 1e-4 * expected.norm() + 1e-7


def test_distinct_prompts_follow_runs_of_rows() -> None:
    ids = torch.tensor([[0, 5], [0, 5], [6, 7], [0, 5]])
    seqs = Sequences(ids, (ids > 0).long(), ids, ids, [""] * 4)
    firsts, owner = _distinct_prompts(seqs)
    assert firsts.tolist() == [0, 2, 3] and owner.tolist() == [0, 0, 1, 2]


def test_response_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 7, 2, 0], [5, 6, 7, 8, 9]])
    assert response_mask_for(ids, [2]).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
    ]


def test_generate_layout_and_texts(toy):
    model, tok = toy
    seqs = _sample(model, tok, ["1+1=", "sum of 40 and 41?"], n=3, seed=5)
    assert len(seqs) == 6 and len(seqs.texts) == 6
    assert seqs.prompt_mask[:3, 0].sum() == 0  # the short prompt is left-padded
    for row, text in zip(range(6), seqs.texts):
        kept = seqs.response_ids[row][seqs.response_mask[row].bool()]
        assert tok.decode(kept, skip_special_tokens=True) == text


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -2.0, -40.0])
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), logp - ref)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), 0.5 * (logp - ref) ** 2)
    k3 = kl_penalty(logp, ref, "k3")
    assert k3[1] == 0 and k3[0] == pytest.approx(torch.exp(torch.tensor(-0.5)).item() + 0.5 - 1)
    assert k3[2] == 10.0  # clamped like verl's low_var_kl


def test_ppo_clip_ratio_one_gives_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([2.0])
    loss = ppo_clip(logp, logp.detach(), adv, 0.2).sum()
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.0, -2.0]]))
    # off-policy: positive advantage and ratio beyond 1 + eps is clipped (no gradient)
    logp2 = torch.tensor([[0.0]], requires_grad=True)
    ppo_clip(logp2, torch.tensor([[-1.0]]), torch.tensor([1.0]), 0.2).sum().backward()
    assert logp2.grad.item() == 0.0


def test_aggregate_modes():
    values = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate(values, mask, "token-mean", ViewNorm(3, 2)).item() == pytest.approx(2.0)
    assert aggregate(values, mask, "seq-mean-token-mean", ViewNorm(3, 2)).item() == pytest.approx(
        2.0
    )
    values2 = torch.tensor([[1.0, 3.0, 5.0], [2.0, 0.0, 0.0]])
    assert aggregate(
        values2, torch.tensor([[1, 1, 1], [1, 0, 0]]), "seq-mean-token-mean", ViewNorm(4, 2)
    ).item() == pytest.approx(2.5)
    # verl: micro-batches [1, 3, 5] (mean 3) and [2] (mean 2), each / 2 micro-batches -> 2.5,
    # where the view's token mean is 11 / 4
    rows = values2, torch.tensor([[1, 1, 1], [1, 0, 0]])
    micro = [
        aggregate(v[None], m[None], "micro-token-mean", ViewNorm(4, 2, 2)) for v, m in zip(*rows)
    ]
    assert sum(micro).item() == pytest.approx(2.5)
    assert aggregate(*rows, "token-mean", ViewNorm(4, 2)).item() == pytest.approx(2.75)
    assert aggregate(*rows, "micro-token-mean", ViewNorm(4, 2, 1)).item() == pytest.approx(2.75)


def verl_cosine(step: int, total: int, warmup_ratio: float, min_ratio: float = 0.0) -> float:
    """verl's get_cosine_schedule_with_warmup (LambdaLR factor of 0-based optimizer step `step`),
    written out from its source: warmup = int(ratio * total), factor step / warmup, then a
    half cosine (num_cycles 0.5) from 1 down to min_ratio."""
    warmup = int(warmup_ratio * total)
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * 2 * 0.5 * progress))


def test_lr_of_the_first_steps_is_verls():
    """The paper run: 174 steps, 10 % warmup -> 17 warmup steps, the first update at lr 0."""
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(
        model.parameters(),
        lr=3e-6,
        betas=(0.9, 0.999),
        weight_decay=0.01,
        total_steps=174,
        warmup_ratio=0.1,
        schedule="cosine",
        min_lr_ratio=0.0,
    )
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([3e-6 * verl_cosine(s, 174, 0.1) for s in range(20)], abs=1e-18)
    assert seen[0] == 0.0 and seen[17] == pytest.approx(3e-6)


def test_lr_schedule_shapes():
    assert lr_multiplier(0, 100, 10, "cosine", 0.0) == 0.0
    assert lr_multiplier(9, 100, 10, "cosine", 0.0) == pytest.approx(0.9)
    assert lr_multiplier(10, 100, 10, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_multiplier(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(55, 100, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(80, 100, 10, "constant", 0.0) == 1.0


def test_micro_batching_does_not_change_the_update(toy):
    model, tok = toy
    seqs = _sample(model, tok, ["1+1=", "sum of 40 and 41?", "33+44="], n=4, seed=7)
    adv = torch.randn(len(seqs), generator=torch.Generator().manual_seed(0))
    ref = torch.randn(seqs.response_ids.shape, generator=torch.Generator().manual_seed(1)) * 0.1 - 3

    def step(micro: int):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        s = UpdateSettings(
            temperature=0.7,
            clip_ratio=0.2,
            kl_coef=0.1,
            kl_estimator="k3",
            loss_agg="token-mean",
            view_loss="sum",
            micro_batch_size=micro,
            grad_clip=0.0,
        )
        metrics = policy_update(m, opt, sched, [ViewBatch("original", seqs, adv, ref)], s)
        return m, metrics

    whole, m_whole = step(64)
    parts, m_parts = step(5)
    assert m_whole["grad_norm"] > 0
    assert m_whole["grad_norm"] == pytest.approx(m_parts["grad_norm"], rel=1e-4)
    for (name, a), (_, b) in zip(whole.named_parameters(), parts.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def _every_row_update(model, seqs, adv, s: UpdateSettings) -> float:
    """The update as it ran before rows with advantage 0 were left out of the backward: every row
    of every micro-batch in the grad forward. SGD at lr 1; returns the entropy metric."""
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    slices = micro_slices(len(seqs), s.micro_batch_size)
    norm = ViewNorm(int(seqs.response_mask.sum()), len(seqs), len(slices))
    entropy, tokens = 0.0, 0
    for start, stop in slices:
        part = seqs.rows(start, stop)
        scores = score_tokens(model, part, s.temperature, with_stats=True)
        pg = ppo_clip(scores.logprobs, scores.logprobs.detach(), adv[start:stop], s.clip_ratio)
        aggregate(pg, part.response_mask, s.loss_agg, norm).backward()
        entropy += float((scores.entropy * part.response_mask).sum())
        tokens += int(part.response_mask.sum())
    opt.step()
    return entropy / tokens


@pytest.mark.parametrize("entropy_from", ["sampling", "forwards"])
@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "micro-token-mean"])
def test_rows_with_advantage_zero_skip_the_backward_and_change_nothing(
    loss_agg: str, entropy_from: str, toy
) -> None:
    """A row with advantage 0 adds nothing to the gradient: it stays out of the forward and the
    backward, and the step equals one over every row. The entropy metric still covers it: from
    sampling, or (sequences sampled without it) from a no-grad forward of the idle rows."""
    model, tok = toy
    prompts = ["1+1=", "sum of 40 and 41?", "33+44="]
    seqs = _sample(model, tok, prompts, n=4, seed=5, temperature=0.7, with_stats=True)
    if entropy_from == "forwards":
        seqs = dataclasses.replace(seqs, entropy=None, self_certainty=None)
    adv = torch.tensor([0.5, -1.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 1.5, -1.0])
    s = UpdateSettings(
        temperature=0.7,
        clip_ratio=0.2,
        kl_coef=0.0,
        kl_estimator="k3",
        loss_agg=loss_agg,
        view_loss="sum",
        micro_batch_size=5,  # micro-token-mean's denominators count the left-out rows' tokens
        grad_clip=0.0,
    )
    expected = copy.deepcopy(model).train()
    expected_entropy = _every_row_update(expected, seqs, adv, s)

    got = copy.deepcopy(model).train()
    scored = []  # (builds a graph, rows) of each scoring forward

    def spy(model, part, *args, **kwargs):
        scored.append((torch.is_grad_enabled(), len(part)))
        return score_tokens(model, part, *args, **kwargs)

    opt = torch.optim.SGD(got.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    with mock.patch("coreward_cli.engines.update.score_tokens", spy):
        metrics = policy_update(got, opt, sched, [ViewBatch("original", seqs, adv)], s)

    # micro-batches of 5: rows 0-4 keep 0, 1, 3; rows 5-9 keep 8; rows 10-11 keep both
    assert [rows for graph, rows in scored if graph] == [3, 1, 2]
    # idle: rows 2 and 4, then 5-7 and 9
    idle_forwards = [rows for graph, rows in scored if not graph]
    assert idle_forwards == ([] if entropy_from == "sampling" else [2, 4])
    assert metrics["entropy"] == pytest.approx(expected_entropy, rel=1e-5)
    for (name, a), (_, b) in zip(got.named_parameters(), expected.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    moved = sum(
        float((a - b).abs().sum().detach()) for a, b in zip(got.parameters(), model.parameters())
    )
    assert moved > 0


@pytest.mark.parametrize("family", ["toy", "llama-gqa"])
def test_the_stats_kept_at_sampling_are_the_ones_the_update_scores(family: str, toy) -> None:
    """`sample(with_stats=True)` keeps each token's entropy and self-certainty under the
    distribution it was drawn from at that temperature: what `score_tokens` computes from the
    whole sequences. Row selections and concatenation carry them along."""
    from tests.test_sampling import _tiny

    model = toy[0] if family == "toy" else _tiny("llama")
    prompts = ["3+4=", "sum of 12 and 87?", "7+8="]
    seqs = _sample(model, toy[1], prompts, n=3, seed=2, temperature=0.7, with_stats=True)
    with torch.no_grad():
        scored = score_tokens(model, seqs, 0.7, with_stats=True)
    m = seqs.response_mask.bool()
    part = concat([seqs.rows(0, 3), seqs.pick(torch.tensor([5, 4]))], pad=0)
    r = part.response_ids.shape[1]
    for name in ("entropy", "self_certainty"):
        kept = getattr(seqs, name)
        assert kept is not None and kept.shape == seqs.response_ids.shape
        assert float(getattr(scored, name)[m].min()) > 0
        torch.testing.assert_close(kept[m], getattr(scored, name)[m], rtol=0, atol=1e-5)
        torch.testing.assert_close(getattr(part, name)[:3], getattr(seqs.rows(0, 3), name))
        torch.testing.assert_close(getattr(part, name)[3:, : kept.shape[1]], kept[[5, 4], :r])


def test_a_step_with_every_advantage_zero_still_steps_the_optimizer(toy) -> None:
    """All rows idle: no backward runs, yet the gradient is zeros (not absent), so AdamW applies its
    weight decay and momentum as it did when every row ran."""
    model, tok = toy
    seqs = _sample(model, tok, ["1+1=", "33+44="], n=2, seed=5)
    s = UpdateSettings(0.7, 0.2, 0.0, "k3", "token-mean", "sum", 64, 1.0)
    got = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(got.parameters(), lr=0.1, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    metrics = policy_update(got, opt, sched, [ViewBatch("original", seqs, torch.zeros(4))], s)
    assert metrics["grad_norm"] == 0.0 and metrics["entropy"] > 0
    for a, b in zip(got.parameters(), model.parameters()):
        torch.testing.assert_close(a, b * (1 - 0.1 * 0.5))
