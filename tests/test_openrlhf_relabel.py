"""The controller hook on OpenRLHF's own sample objects, against the method called directly.

Samples are built by OpenRLHF's `SamplesGenerator._process_response_into_experience` from token ids
(what a vLLM actor returns), advantages by OpenRLHF's `RemoteExperienceMaker`, losses by its
`PolicyLoss`; the rewards must be exactly those of `method.score` on the same response texts, as the
local engine calls it. `flash_attn`/`vllm` come from the test-only stubs in tests/stubs.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("openrlhf")
pytestmark = pytest.mark.usefixtures("openrlhf_import_stubs")

from coreward_plugins.advantages import group_advantages  # noqa: E402
from coreward_plugins.batch import Group, RolloutBatch  # noqa: E402
from coreward_plugins.methods import MethodOptions, get_method  # noqa: E402
from coreward_plugins.openrlhf import relabel  # noqa: E402
from coreward_plugins.openrlhf.reward_actors import RewardPool, shard_by_problem  # noqa: E402
from coreward_plugins.openrlhf.reward_func import reward_func  # noqa: E402
from coreward_plugins.openrlhf.rows import Label  # noqa: E402

N = 4
# problem -> view -> the n responses; the views disagree so that cross-view labels differ from self-votes
RESPONSES = {
    "p1": {
        "original": ["so \\boxed{5}", "\\boxed{5}", "it is \\boxed{7}", "no answer"],
        "rephrased": ["\\boxed{7}", "\\boxed{7}", "\\boxed{5}", "\\boxed{7}"],
    },
    "p2": {
        "original": ["\\boxed{10}", "\\boxed{12}", "\\boxed{12}", "\\boxed{10}"],
        "rephrased": ["\\boxed{12}", "x", "\\boxed{12}", "\\boxed{3}"],
    },
    "p3": {
        "original": ["\\boxed{1}", "\\boxed{1}", "\\boxed{1}", "\\boxed{1}"],
        "rephrased": ["\\boxed{2}", "\\boxed{2}", "\\boxed{1}", "\\boxed{2}"],
    },
}
TEACHER = {
    "p1": ["\\boxed{7}", "\\boxed{5}", "\\boxed{5}", "\\boxed{9}"],
    "p2": ["\\boxed{12}", "\\boxed{12}", "\\boxed{12}", "\\boxed{10}"],
    "p3": ["\\boxed{2}", "\\boxed{1}", "\\boxed{2}", "\\boxed{2}"],
}
REFERENCE = {"p1": "5", "p2": "12", "p3": "1"}


@pytest.fixture(scope="module")
def tokenizer():
    from coreward_cli.toy import build_tokenizer

    return build_tokenizer()


def prompt_of(pid: str, view: str) -> str:
    return f"Q[{pid}/{view}]: what is it?\nA:"


def make_sample(tokenizer, pid: str, view: str, text: str):
    """One Experience, built the way OpenRLHF builds it from a vLLM actor's response."""
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    prompt = prompt_of(pid, view)
    label = Label(id=pid, view=view, reference=REFERENCE[pid]).encode()
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    response_ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    out = reward_func([prompt + text], [prompt], [label])  # what the vLLM actor attaches
    response = {
        "observation_tokens": prompt_ids + response_ids,
        "action_ranges": [(len(prompt_ids), len(prompt_ids) + len(response_ids))],
        "reward": out["rewards"][0].item(),
        "scores": out["scores"][0].item(),
        "extra_logs": out["extra_logs"],
        "rollout_log_probs": None,
        "truncated": False,
        "prompt": prompt,
        "label": label,
    }
    return SamplesGenerator._process_response_into_experience(None, response, max_len=256)


def step_samples(tokenizer, views=("original", "rephrased")):
    return [
        make_sample(tokenizer, pid, view, text)
        for pid in RESPONSES
        for view in views
        for text in RESPONSES[pid][view]
    ]


def teacher_samples(tokenizer):
    return [
        make_sample(tokenizer, pid, "original", text) for pid in TEACHER for text in TEACHER[pid]
    ]


def direct_batch(views, with_teacher: bool) -> RolloutBatch:
    """The batch as the local engine hands it to a method: plain texts."""
    groups = [
        Group(pid, view, "policy", prompt_of(pid, view), RESPONSES[pid][view], REFERENCE[pid])
        for pid in RESPONSES
        for view in views
    ]
    if with_teacher:
        groups += [
            Group(
                pid, "original", "teacher", prompt_of(pid, "original"), TEACHER[pid], REFERENCE[pid]
            )
            for pid in TEACHER
        ]
    return RolloutBatch(groups)


CASES = [
    ("co_rewarding_i", ("original", "rephrased"), False),
    ("majority_vote", ("original",), False),
    ("gt", ("original",), False),
    ("co_rewarding_ii", ("original",), True),
]


@pytest.mark.parametrize(("method", "views", "with_teacher"), CASES, ids=[c[0] for c in CASES])
def test_hook_rewards_equal_the_method_called_directly(
    tokenizer, method, views, with_teacher
) -> None:
    samples = step_samples(tokenizer, views)
    groups = relabel.group_samples(samples, N, "policy")
    if with_teacher:
        groups += relabel.group_samples(teacher_samples(tokenizer), N, "teacher")
    batch = relabel.build_batch(groups, lambda s: relabel.response_text(s, tokenizer))
    result = RewardPool(method, json.dumps({"match": "exact"}), size=1).score(batch)
    relabel.write_rewards(groups, result)

    expected = get_method(method)(MethodOptions(match="exact")).score(
        direct_batch(views, with_teacher)
    )
    got = [[s.rewards.item() for s in g.samples] for g in groups if g.source == "policy"]
    want = [
        r
        for g, r in zip(direct_batch(views, with_teacher).groups, expected.rewards)
        if g.source == "policy"
    ]
    assert got == want
    assert any(any(r) for r in got) and not all(all(r) for r in got)  # the case discriminates
    for s in samples:  # what OpenRLHF reads for advantages and logs
        assert s.scores.item() == s.rewards.item() == s.info["reward"].item()
    if (
        method == "co_rewarding_i"
    ):  # p1's originals are labelled by the rephrased majority (7), not their own (5)
        assert [s.rewards.item() for s in groups[0].samples] == [0.0, 0.0, 1.0, 0.0]
    # the vLLM-side reference score is kept for monitoring: p1 original answers 5, 5, 7, none vs reference 5
    assert [s.info["coreward_reference_score"].item() for s in groups[0].samples] == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]


def _openrlhf_advantages(samples, estimator: str):
    """OpenRLHF's own advantage code on the relabelled samples (KL zero, as with the KL in the loss)."""
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController

    args = SimpleNamespace(
        rollout=SimpleNamespace(n_samples_per_prompt=N, micro_batch_size=3),
        train=SimpleNamespace(dynamic_batch_enable=False),
        algo=SimpleNamespace(
            advantage=SimpleNamespace(estimator=estimator, gamma=1.0, no_std_norm=False)
        ),
        reward=SimpleNamespace(
            clip_range=(-10, 10), overlong_buffer_len=None, stop_properly_penalty_coef=None
        ),
    )
    maker = RemoteExperienceMaker.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args, maker.advantage_estimator = (
        SimpleNamespace(args=args),
        args,
        estimator,
    )
    maker.kl_ctl = FixedKLController(0.0)
    maker.tokenizer = SimpleNamespace(pad_token_id=0)
    experiences = maker.split_rollout_samples(samples)
    for e in experiences:
        e.kl = torch.zeros(e.action_mask.shape)
    return maker.compute_advantages_and_returns(experiences)


def test_openrlhf_advantages_are_group_normalised_per_problem_and_view(tokenizer) -> None:
    samples = step_samples(tokenizer)
    groups = relabel.group_samples(samples, N, "policy")
    batch = relabel.build_batch(groups, lambda s: relabel.response_text(s, tokenizer))
    relabel.write_rewards(groups, RewardPool("co_rewarding_i", "{}", size=1).score(batch))
    experiences = _openrlhf_advantages(samples, "group_norm")
    per_sample = {}
    for e in experiences:
        for row, idx in enumerate(e.index):
            per_sample[idx] = e.advantages[row][e.action_mask[row].bool()]
    for g_index, g in enumerate(groups):
        want = group_advantages([s.rewards.item() for s in g.samples])
        for k, w in enumerate(want):
            adv = per_sample[g_index * N + k]
            assert torch.allclose(
                adv, torch.full_like(adv, w), atol=1e-5
            )  # eps 1e-9 (OpenRLHF) vs 1e-6 (verl)


@pytest.mark.parametrize(
    ("mode", "loss_agg"),
    [("sum", "token-mean"), ("mean", "token-mean"), ("sum", "seq-mean-token-mean")],
)
def test_view_weights_turn_one_mean_into_the_recipes_view_combination(
    tokenizer, mode, loss_agg
) -> None:
    """OpenRLHF's loss over the concatenated step with scaled advantages == the per-view losses combined."""
    from openrlhf.models import PolicyLoss

    torch.manual_seed(0)
    samples = step_samples(tokenizer)
    weights = relabel.view_weights(samples, mode, loss_agg)
    width = max(s.action_mask.shape[1] for s in samples)
    mask = torch.zeros(len(samples), width)
    for i, s in enumerate(samples):
        mask[i, : s.action_mask.shape[1]] = s.action_mask[0].float()
    adv = torch.randn(len(samples), 1).expand(-1, width).clone()
    logp, old = torch.randn(len(samples), width) * 0.1, torch.randn(len(samples), width) * 0.1
    views = [json.loads(s.labels[0])["view"] for s in samples]
    loss_fn = PolicyLoss(0.2, 0.2, dual_clip=3.0, token_level_loss=loss_agg == "token-mean")

    def loss(rows, advantages):
        m = mask[rows]
        return loss_fn(
            logp[rows],
            old[rows],
            advantages,
            action_mask=m,
            batch_num_tokens=m.sum(),
            global_batch_size=torch.tensor(float(len(rows))),
        )[0]

    scale = torch.tensor([weights[v] for v in views]).reshape(-1, 1)
    combined = loss(list(range(len(samples))), adv * scale)
    per_view = [
        loss(
            [i for i, v in enumerate(views) if v == view],
            adv[[i for i, v in enumerate(views) if v == view]],
        )
        for view in ("original", "rephrased")
    ]
    want = sum(per_view) if mode == "sum" else sum(per_view) / 2
    assert torch.allclose(combined, want, atol=1e-6), (combined, want)
    if (
        loss_agg == "token-mean"
    ):  # the views' token counts differ here, so the weights are not trivially 2
        assert weights["original"] != weights["rephrased"]


def test_scale_advantages_on_micro_batched_experiences(tokenizer) -> None:
    samples = step_samples(tokenizer)
    groups = relabel.group_samples(samples, N, "policy")
    batch = relabel.build_batch(groups, lambda s: relabel.response_text(s, tokenizer))
    relabel.write_rewards(groups, RewardPool("co_rewarding_i", "{}", size=1).score(batch))
    experiences = _openrlhf_advantages(samples, "group_norm")
    before = [e.advantages.clone() for e in experiences]
    weights = {"original": 2.5, "rephrased": 0.5}
    relabel.scale_advantages(experiences, weights)
    for e, b in zip(experiences, before):
        for row, lab in enumerate(e.labels):
            assert torch.equal(e.advantages[row], b[row] * weights[json.loads(lab)["view"]])


def test_groups_must_be_contiguous(tokenizer) -> None:
    samples = step_samples(tokenizer, ("original",))
    samples[1], samples[N] = samples[N], samples[1]
    with pytest.raises(ValueError, match="contiguous"):
        relabel.group_samples(samples, N, "policy")


def test_shards_keep_problems_whole() -> None:
    batch = direct_batch(("original", "rephrased"), True)
    shards = shard_by_problem(batch, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(batch.groups)))
    for shard in shards:
        pids = {batch.groups[i].problem_id for i in shard}
        assert all(
            batch.groups[i].problem_id in pids
            for i in range(len(batch.groups))
            if batch.groups[i].problem_id in pids
        )
        other = [i for s in shards if s is not shard for i in s]
        assert not pids & {batch.groups[i].problem_id for i in other}


@pytest.mark.slow
def test_ray_reward_pool_gives_the_methods_rewards() -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for method, views, teacher in CASES:
            batch = direct_batch(views, teacher)
            pool = RewardPool(method, json.dumps({"match": "exact"}), size=2, num_cpus=0.5)
            assert pool.actors, "two Ray actors should score"
            expected = get_method(method)(MethodOptions(match="exact")).score(batch)
            got = pool.score(batch)
            assert got.rewards == expected.rewards
            assert got.pseudo_labels == expected.pseudo_labels
            assert set(got.metrics) == set(expected.metrics)
    finally:
        ray.shutdown()


def test_reward_func_is_thread_safe_and_never_raises(monkeypatch) -> None:
    monkeypatch.setenv("COREWARD_MATCH", "math_verify")
    import coreward_plugins.openrlhf.reward_func as rf

    monkeypatch.setattr(rf, "_matcher", None)
    label = Label(id="x", reference="\\frac{1}{2}").encode()
    cases = [
        ("P:", "P: so \\boxed{0.5}", 1.0),
        ("P:", "P: \\boxed{\\frac12}", 1.0),
        ("P:", "P: \\boxed{3}", 0.0),
        ("P:", "P: nothing", 0.0),
    ]
    results: list[tuple[float, float]] = []
    lock = threading.Lock()

    def worker() -> None:
        for prompt, query, want in cases:
            got = rf.reward_func([query], [prompt], [label])["rewards"][0].item()
            with lock:
                results.append((got, want))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 6 * len(cases)
    assert all(got == want for got, want in results)
    # garbage in: a score of 0, no exception (OpenRLHF would swallow it and fail later)
    for bad_label in ["not json", None, 17, json.dumps({"no": "id"})]:
        assert rf.reward_func(["q"], ["p"], [bad_label])["rewards"].tolist() == [0.0]
    no_reference = Label(id="y").encode()
    assert rf.reward_func(["P: \\boxed{1}"], ["P:"], [no_reference])["scores"].tolist() == [0.0]
