"""Majority vote over answer clusters: the official rule under exact matching, clusters under the others."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from coreward_plugins.answers import AnswerMatcher
from coreward_plugins.voting import Vote, majority_vote

EXACT = AnswerMatcher("exact")
NORMALIZED = AnswerMatcher("normalized")


def official_vote(answers: list[str | None]) -> str:
    """The published Co-rewarding rule, written out for comparison: drop None/blank, Counter's first most common."""
    kept = [a for a in answers if a is not None and str(a).strip() != ""]
    return Counter(kept).most_common(1)[0][0] if kept else ""


def test_empties_excluded() -> None:
    vote = majority_vote([None, "", "  ", "7", None, "7", "3"], EXACT)
    assert vote.label == "7"
    assert (vote.count, vote.valid, vote.clusters) == (2, 3, 2)
    assert vote.share == pytest.approx(2 / 3)
    assert vote.assignment == (None, None, None, 0, None, 0, 1)
    assert vote.sizes == (2, 1) and vote.representatives == ("7", "3")


def test_all_empty_gives_no_label() -> None:
    for answers in ([], [None, None], ["", " \n"]):
        vote = majority_vote(answers, EXACT)
        assert vote == Vote(None, 0, 0, 0, 0.0, tuple([None] * len(answers)), (), ())


def test_ties_go_to_the_first_counted() -> None:
    assert majority_vote(["5", "3", "3", "5"], EXACT).label == "5"
    assert majority_vote(["3", "5", "5", "3"], EXACT).label == "3"
    assert majority_vote([None, "3", "5"], EXACT).label == "3"
    tied = majority_vote(["5", "3", "3", "5"], EXACT, tie="none")
    assert tied.label is None and tied.count == 2 and tied.share == 0.5
    assert majority_vote(["5", "3", "3"], EXACT, tie="none").label == "3"
    with pytest.raises(ValueError):
        majority_vote(["1"], EXACT, tie="random")  # type: ignore[arg-type]


def test_min_votes() -> None:
    answers = ["4", "4", "1", "2", None]
    assert majority_vote(answers, EXACT, min_votes=2).label == "4"
    vote = majority_vote(answers, EXACT, min_votes=3)
    assert vote.label is None and vote.count == 2 and vote.valid == 4


def test_exact_vote_is_the_official_vote() -> None:
    rng = random.Random(0)
    pool = ["1", "2", "\\frac12", "0.5", " 2", "", "  ", None]
    for _ in range(2000):
        answers = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
        assert (majority_vote(answers, EXACT).label or "") == official_vote(answers)


@pytest.mark.parametrize("mode", ["normalized", "math_verify"])
def test_equivalent_forms_vote_together(mode: str) -> None:
    answers = ["\\frac12", "3", "\\frac{1}{2}", "3", "\\dfrac{1}{2}", "0.5", None, "3"]
    vote = majority_vote(answers, AnswerMatcher(mode))
    assert vote.label == "\\frac12"  # the cluster's first-seen member, as written
    assert (vote.count, vote.valid, vote.clusters) == (4, 7, 2)
    assert majority_vote(answers, EXACT).label == "3"  # the paper's exact strings split the halves


def test_math_verify_merges_keys_that_only_algebra_equates() -> None:
    matcher = AnswerMatcher("math_verify")
    answers = ["x(x+2)", "x^2+2x", "x^2 + 2x", "(x+1)^2 - 1", "x^2", "x^2"]
    vote = majority_vote(answers, matcher)
    assert vote.label == "x(x+2)" and vote.count == 4 and vote.clusters == 2
    assert vote.assignment == (0, 0, 0, 0, 1, 1)
    # "x^2+2x" and "x^2 + 2x" share a key: one comparison serves both; "x^2" is compared once to one cluster
    assert matcher.stats.verify_calls <= 3


def test_comparisons_grow_with_distinct_answers_not_answers() -> None:
    class Counting:
        keys_decide = False

        def __init__(self) -> None:
            self.calls = 0

        def key(self, answer: str) -> str:
            return answer

        def equal(self, a: str | None, b: str | None) -> bool:
            self.calls += 1
            return a == b

    matcher = Counting()
    vote = majority_vote(["1", "2", "3"] * 100, matcher)
    assert vote.clusters == 3 and vote.count == 100
    assert matcher.calls == 3  # "2" vs 1 rep, "3" vs 2 reps; repeats are found by key


def test_math_verify_vote_asks_the_pool_once_per_new_answer() -> None:
    from coreward_plugins.verify_pool import shared_pool

    matcher = AnswerMatcher("math_verify", timeout_s=20)
    pool = shared_pool()
    before_calls, before_pairs = pool.stats.calls, matcher.stats.verify_calls
    # four keys: the first opens a cluster, each later one is compared with every representative
    vote = majority_vote(["p^2", r"\sqrt{5}", "a+b", "p p", "b+a"], matcher)
    assert vote.assignment == (0, 1, 2, 0, 2)
    assert pool.stats.calls - before_calls == 4  # one round trip per new key, however many pairs
    assert matcher.stats.verify_calls - before_pairs == 1 + 2 + 1 + 3
