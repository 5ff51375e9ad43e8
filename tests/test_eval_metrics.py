"""pass@k, maj@n and the summary metrics against hand-computed values."""

from __future__ import annotations

import pytest

from coreward_cli.evaluate import Record, ks_for, pass_at_k, summarize
from coreward_cli.grading import CONVENTIONS, LATEX, Grader


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (8, 2, 4, 1 - 15 / 70),  # 1 - C(6,4)/C(8,4)
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (8, 3, 1, 3 / 8),  # pass@1 is the plain mean
        (8, 0, 8, 0.0),
        (8, 1, 8, 1.0),
        (8, 6, 4, 1.0),  # fewer than k wrong samples: every k-subset holds a right one
    ],
)
def test_pass_at_k_matches_hand_computed_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 8)


def test_ks_are_powers_of_two_up_to_n() -> None:
    assert ks_for(1) == [1]
    assert ks_for(8) == [1, 2, 4, 8]
    assert ks_for(12) == [1, 2, 4, 8]


def _record(grader: Grader, responses: list[str], reference: str, convention=LATEX) -> Record:
    answers, correct = grader.grade(responses, reference, convention)
    return Record("b", 0, "q", reference, responses, answers, correct, [10] * len(responses))


def box(x: str) -> str:
    return f"so the answer is \\boxed{{{x}}}."


def test_summary_metrics_match_hand_computed_values() -> None:
    grader = Grader("math_verify")
    records = [
        _record(
            grader, [box("5"), box("5"), box("3"), "no idea"], "5"
        ),  # 2 right, majority 5: right
        _record(
            grader, [box("2"), box("7"), box("7"), "still thinking"], "2"
        ),  # 1 right, majority 7: wrong
        # 1/2 and 0.5 are one cluster under math_verify (2 votes), tied with 3 (2 votes): the first counted wins
        _record(grader, [box("1/2"), box("0.5"), box("3"), box("3")], "\\frac{1}{2}"),
    ]
    assert [sum(r.correct) for r in records] == [2, 1, 2]
    m = summarize(records, grader)
    assert m["questions"] == 3 and m["n"] == 4
    assert m["avg@4"] == pytest.approx(5 / 12)
    assert m["pass@1"] == pytest.approx(5 / 12)
    assert m["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 5 / 6) / 3)
    assert m["pass@4"] == pytest.approx(1.0)
    assert m["maj@4"] == pytest.approx(2 / 3)
    assert m["no_answer"] == pytest.approx(2 / 12)
    assert m["mean_tokens"] == pytest.approx(10)


def test_majority_depends_on_the_matcher() -> None:
    """Under exact matching 1/2 and 0.5 split their votes, so 3 wins the vote."""
    exact = Grader("exact")
    record = _record(exact, [box("1/2"), box("0.5"), box("3"), box("3"), box("3")], "1/2")
    assert record.correct == [True, False, False, False, False]
    assert summarize([record], exact)["maj@5"] == 0.0
    verify = Grader("math_verify")
    record = _record(verify, [box("1/2"), box("0.5"), box("0.5"), box("3"), box("3")], "1/2")
    assert summarize([record], verify)["maj@5"] == 1.0


def test_numeric_conventions_grade_padded_and_decimal_forms() -> None:
    grader = Grader("exact")
    aime = CONVENTIONS["aime25"]
    answers, correct = grader.grade([box("070"), box("70"), box("71")], aime.canonical("070"), aime)
    assert answers == ["70", "70", "71"] and correct == [True, True, False]
    gsm = CONVENTIONS["gsm8k"]
    answers, correct = grader.grade(
        ["... #### 1,234", box("1234"), box("1,234.00")], gsm.canonical("1,234"), gsm
    )
    assert correct == [True, True, True]
