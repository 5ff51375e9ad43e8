"""A hand-checked table of (prediction, reference) verdicts for the answer matcher.

Every row was decided by hand first; the math_verify column is the mathematically right verdict (and
math-verify, behind our keys, guards and strict rules, reaches it), the normalized column is what the
cheap key alone decides (False where equality needs algebra). The issue 17 rows are pairs that
math-verify's own comparison or our keys used to merge. Both directions are checked, since votes compare answers
both ways round.
"""

from __future__ import annotations

import json

import pytest

from coreward_plugins.answers import AnswerMatcher

# (prediction, reference, math_verify verdict, normalized verdict, note)
TABLE = [
    # fractions
    (r"\frac12", r"\frac{1}{2}", True, True, "fraction shorthand"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}", True, True, "dfrac"),
    (r"\tfrac{3}{4}", "0.75", True, True, "tfrac vs decimal"),
    ("1/2", r"\frac{1}{2}", True, True, "slash fraction"),
    (r"-\frac{1}{2}", r"\frac{-1}{2}", True, True, "sign placement"),
    (r"\frac{2}{4}", r"\frac{1}{2}", True, True, "unreduced fraction"),
    (r"\frac{1}{3}", "0.33", False, False, "rounded decimal is not 1/3"),
    (r"\frac{1}{2}", r"\frac{1}{3}", False, False, "different fractions"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}2", True, True, "braces of sqrt and frac"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True, False, "rationalised denominator"),
    # decimals and integers
    ("0.5", ".5", True, True, "leading dot"),
    ("142.0", "142", True, True, "AMC float answer"),
    ("27.0", "27", True, True, "AMC23 float answer"),
    ("3.00", "3", True, True, "trailing zeros"),
    ("3.5", "3.50", True, True, "decimal trailing zero"),
    ("3.14", r"\pi", False, False, "pi is not 3.14"),
    ("-7", "7", False, False, "sign matters"),
    ("+7", "7", True, True, "explicit plus"),
    ("12", "21", False, False, "different integers"),
    # AIME zero padding
    ("070", "70", True, True, "AIME zero padding"),
    ("007", "7", True, True, "AIME zero padding, two zeros"),
    ("070", "700", False, False, "padding is not a trailing zero"),
    # GSM8K thousands
    ("1,000", "1000", True, True, "thousands separator"),
    ("1,234,567", "1234567", True, True, "two separators"),
    (r"1{,}000", "1000", True, True, "LaTeX thousands separator"),
    (r"\$1,000", "1000", True, True, "dollars and thousands"),
    ("12", "1,2", False, False, "a list is not twelve"),
    ("1,2", "12", False, False, "a list is not twelve, reversed"),
    # percents
    (r"50\%", "50", True, True, "percent sign"),
    ("50%", "50", True, True, "bare percent sign"),
    (r"12.5\%", "12.5", True, True, "decimal percent"),
    # degrees
    (r"30^\circ", "30", True, True, "degrees"),
    (r"30^{\circ}", r"30^\circ", True, True, "degrees, braced"),
    (r"45^\circ", "30", False, False, "different angles"),
    # units and text
    (r"5\text{ cm}", "5", True, True, "unit in text"),
    (r"10 \text{ square units}", "10", True, True, "square units"),
    (r"\$18.00", "18", True, True, "money"),
    (r"\text{east}", "east", True, True, "text answer"),
    (r"\text{(A)}", "(A)", True, True, "multiple choice letter in text"),
    (r"\textbf{yes}", r"\text{yes}", True, True, "bold text"),
    (r"\text{Monday}", r"\text{Tuesday}", False, False, "different words"),
    (r"\mathrm{even}", r"\text{even}", True, True, "mathrm wrapper"),
    # intervals
    ("(1,2)", "[1,2]", False, False, "open vs closed interval"),
    ("[1,2)", "[1,2]", False, False, "half-open vs closed"),
    (r"(-\infty, 0]", r"(-\infty,0]", True, True, "spacing in interval"),
    (r"\left(1, 2\right)", "(1,2)", True, True, "left/right"),
    (r"(-\infty,-1)\cup(1,\infty)", r"(-\infty,-1) \cup (1,\infty)", True, True, "union spacing"),
    (r"[0,1]\cup[2,3]", r"[2,3]\cup[0,1]", True, False, "union order"),
    # tuples and points
    ("(0.5, 2)", r"\left(\frac{1}{2}, 2\right)", True, True, "point with mixed notation"),
    ("(2,3)", "(3,2)", False, False, "ordered pair order matters"),
    ("(1,2,3)", "(1,2)", False, False, "tuple length"),
    # sets and multiple answers
    (r"\{1,2\}", r"\{2,1\}", True, False, "set order"),
    ("2, 3", "3, 2", True, False, "list of solutions, any order"),
    ("-2, 2", r"\pm 2", True, False, "plus-minus"),
    ("1, 2", "1, 3", False, False, "different solution lists"),
    (r"x=2, y=3", "(2,3)", True, False, "named solutions vs tuple"),
    # equations and prefixes
    ("x=5", "5", True, True, "variable prefix"),
    ("y = 2x+3", "2x+3", True, True, "line equation prefix"),
    ("y=2x+3", "y=3+2x", True, False, "equation, reordered"),
    ("x=5", "6", False, False, "wrong value with prefix"),
    # expressions
    ("x^2+2x", "x(x+2)", True, False, "factored form"),
    (r"2\sqrt{2}", r"\sqrt{8}", True, False, "simplified radical"),
    (r"\sqrt{2}", r"\sqrt2", True, True, "sqrt shorthand"),
    ("x^{2}", "x^2", True, True, "single-character exponent braces"),
    (r"\pi/2", r"\frac{\pi}{2}", True, False, "pi over two"),
    (r"2\pi", r"\pi", False, False, "different multiples of pi"),
    ("a+b", "b+a", True, False, "commutativity"),
    ("x+1", "x-1", False, False, "different expressions"),
    (r"\frac{6}{8}", "0.75", True, True, "unreduced fraction vs decimal"),
    (r"\sqrt{12}", r"2\sqrt{3}", True, False, "radical simplification"),
    # matrices
    (
        r"\begin{pmatrix}1\\2\end{pmatrix}",
        r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
        True,
        True,
        "matrix spacing",
    ),
    (
        r"\begin{pmatrix}1&0\\0&1\end{pmatrix}",
        r"\begin{pmatrix}1&0\\0&2\end{pmatrix}",
        False,
        False,
        "other matrix",
    ),
    (
        r"\begin{pmatrix}0.5\\1\end{pmatrix}",
        r"\begin{pmatrix}\frac12\\1\end{pmatrix}",
        True,
        False,
        "matrix notation",
    ),
    # issue 17: what math-verify's own rules (or our keys) merged, and what must stay merged
    ("7 = 11a+c", "11a+c", False, False, "an equation is not its right side (7 is no variable)"),
    ("a +3z = 0", "0", False, False, "a sum on the left is no variable"),
    ("2x + z = 1", "1", False, False, "2x + z on the left is no variable"),
    ("a + b = 5", "5", False, False, "a sum of symbols on the left is no variable"),
    (r"\pi = 3", "3", False, False, "pi on the left is no variable"),
    ("y = 2x+1", "2x+1", True, True, "a lone variable on the left"),
    ("f(x) = x^2", "x^2", True, False, "a function name on the left"),
    ("(3,1)", r"\{1,3\}", False, False, "an ordered pair is not a set"),
    ("(3,1)", "{1,3}", False, False, "an ordered pair is not a set, plain braces"),
    ("(1,3)", r"\{1,3\}", False, False, "an open interval is not a set"),
    ("(1,3)", "1, 3", True, False, "a bare list as the pair, in order"),
    ("(3,1)", "1, 3", False, False, "a bare list in another order"),
    ("x < 5", r"(-\infty, 5)", True, False, "an inequality as its solution set"),
    ("32349", "32, 349", False, False, "comma and space: a list, not a thousands separator"),
    ("100", "1,00", False, False, "two digits after the comma: not a thousands separator"),
    ("23", "2 3", False, False, "digits apart are two numbers"),
    # trailing period, spacing
    ("5.", "5", True, True, "trailing period"),
    (r"\! 4 \,", "4", True, True, "TeX spacing commands"),
    ("  17  ", "17", True, True, "surrounding whitespace"),
]


@pytest.fixture(scope="module")
def math_verify() -> AnswerMatcher:
    return AnswerMatcher("math_verify", timeout_s=10.0)


@pytest.fixture(scope="module")
def normalized() -> AnswerMatcher:
    return AnswerMatcher("normalized")


@pytest.mark.parametrize(
    ("prediction", "reference", "verdict", "by_key", "note"), TABLE, ids=[r[4] for r in TABLE]
)
def test_math_verify_verdict(
    math_verify: AnswerMatcher, prediction, reference, verdict, by_key, note
) -> None:
    assert math_verify.equal(prediction, reference) is verdict
    assert math_verify.equal(reference, prediction) is verdict


@pytest.mark.parametrize(
    ("prediction", "reference", "verdict", "by_key", "note"), TABLE, ids=[r[4] for r in TABLE]
)
def test_normalized_verdict(
    normalized: AnswerMatcher, prediction, reference, verdict, by_key, note
) -> None:
    assert normalized.equal(prediction, reference) is by_key
    assert (normalized.key(prediction) == normalized.key(reference)) is by_key
    if by_key:
        assert verdict, "a key must never merge answers that are different"


def test_exact_is_raw_string_equality() -> None:
    exact = AnswerMatcher("exact")
    assert not any(exact.equal(p, r) for p, r, *_ in TABLE)
    assert exact.equal(r"\frac{1}{2}", r"\frac{1}{2}") and exact.equal(" 7 ", " 7 ")
    assert not exact.equal("7", " 7") and not exact.equal("", "") and not exact.equal(" ", " ")


def test_published_benchmark_answers_match_their_plain_forms(
    shared_data, math_verify: AnswerMatcher
) -> None:
    """AIME's zero-padded and AMC's float answers equal the integers a model writes."""
    aime = json.loads((shared_data / "bench" / "aime25.json").read_text())
    amc = json.loads((shared_data / "bench" / "amc.json").read_text())
    padded = [item["answer"] for item in aime if item["answer"].startswith("0")]
    floats = [item["answer"] for item in amc if item["answer"].endswith(".0")]
    assert padded and floats
    for answer in padded + floats:
        plain = str(int(float(answer)))
        assert math_verify.equal(plain, answer) and math_verify.key(plain) == math_verify.key(
            answer
        )
        assert not math_verify.equal(str(int(plain) + 1), answer)
    gsm = [
        json.loads(line)
        for line in (shared_data / "bench" / "gsm8k.jsonl").read_text().splitlines()
    ]
    with_separator = [
        row["answer"].split("####")[-1].strip()
        for row in gsm
        if "," in row["answer"].split("####")[-1]
    ]
    assert with_separator  # GSM8K writes thousands as "114,200"
    for answer in with_separator:
        assert math_verify.equal(answer.replace(",", ""), answer)
