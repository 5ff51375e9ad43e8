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


def test_sides_take_turns_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_vs_trl's sides run at once in their own processes, but never two steps together:
    side 0's step k, side 1's step k, side 2's step k, then step k + 1."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the spawned sides import the job
    from bench_turns_job import sleeper
    from bench_vs_trl import in_turns

    steps = 4
    runs = in_turns([(sleeper, steps, 0.05), (sleeper, steps, 0.01), (sleeper, steps, 0.03)], steps)
    spans = sorted((start, end, side) for side, run in enumerate(runs) for start, end in run)
    assert [side for _, _, side in spans] == [0, 1, 2] * steps
    assert all(end <= next_start for (_, end, _), (next_start, _, _) in zip(spans, spans[1:]))


def test_a_side_that_fails_stops_the_turns_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from bench_turns_job import sleeper
    from bench_vs_trl import in_turns

    with pytest.raises(RuntimeError, match="(?s)side 1 failed.*failed at step 2"):
        in_turns([(sleeper, 4, 0.01), (sleeper, 4, 0.01, 2)], 4)


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
