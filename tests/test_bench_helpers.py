"""The benchmarks' own pieces that decide what they compare (not their timings)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from coreward_plugins.answers import extract_answer
from coreward_plugins.batch import Group, RolloutBatch
from coreward_plugins.methods import MethodOptions, get_method

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def test_trl_reward_function_gives_the_majority_vote_methods_rewards() -> None:
    """bench_vs_trl's TRL side must reward exactly as coreward's `majority_vote` does."""
    from bench_vs_trl import majority_reward

    rng = random.Random(0)
    prompts, completions, groups = [], [], []
    for k in range(12):
        prompt = f"{k}+{k}="
        texts = [
            rng.choice(
                [f"\\boxed{{{2 * k}}}", f"\\boxed{{{2 * k + 1}}}", "no answer", "\\boxed{7}"]
            )
            for _ in range(8)
        ]
        prompts += [prompt] * 8
        completions += texts
        groups.append(Group(str(k), "original", "policy", prompt, texts))
    expected = get_method("majority_vote")(MethodOptions(match="exact")).score(RolloutBatch(groups))
    got = majority_reward("exact")(prompts=prompts, completions=completions)
    assert got == [r for rewards in expected.rewards for r in rewards]
    assert 0 < sum(got) < len(got)


def test_reward_step_is_paper_scale_with_the_generators_answers(shared_data: Path) -> None:
    from bench_reward_step import build_step, load_pairs, load_reasoning

    pairs, reasoning = load_pairs(shared_data / "train"), load_reasoning(shared_data / "train")
    batch, chars = build_step(pairs, reasoning, seed=3)
    assert len(batch.groups) == 256
    assert all(len(g.responses) == 8 for g in batch.groups)
    original, rephrased = batch.groups[:128], batch.groups[128:]
    assert [g.problem_id for g in original] == [g.problem_id for g in rephrased]
    assert all(a.reference == b.reference for a, b in zip(original, rephrased))
    # the published rephrasings (2 of the 7,500 are the original word for word)
    assert sum(a.prompt != b.prompt for a, b in zip(original, rephrased)) >= 120
    assert {g.view for g in original} == {"original"} and {g.view for g in rephrased} == {
        "rephrased"
    }
    responses = [r for g in batch.groups for r in g.responses]
    assert chars / len(responses) > 1000  # long chains of thought, not bare answers
    answers = [extract_answer(r) for r in responses]
    assert 0 < answers.count(None) < len(answers) // 10  # now and then a response with no answer
    # the final boxed answer is the generator's, not something in the reasoning text
    assert all(r.endswith(f"\\boxed{{{a}}}$.") for r, a in zip(responses, answers) if a is not None)
