"""Answer extraction (the official last-boxed rule and fallbacks) and the three comparison modes."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from coreward_plugins.answers import AnswerMatcher, extract_answer, normalize_answer
from coreward_plugins.verify_pool import PoolBusy, VerifyPool

HALF_FORMS = [r"\frac12", r"\frac{1}{2}", r"\dfrac{1}{2}", "0.5"]
# A pair that passes the input guard but keeps sympy busy for seconds: only the deadline stops it.
SLOW_PAIR = ("(x+y+z+w)^{60} + 0.5", "(x-y+z-w)^{60} + 0.5")  # simplify() takes tens of seconds


# --- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"so \boxed{3} then \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),  # the last box wins
        (r"\boxed{\left\{1, \{2\}\right\}}", r"\left\{1, \{2\}\right\}"),  # balanced braces
        (r"$\boxed{x^{2}}$ done", "x^{2}"),
        (r"The answer is $\boxed 5$. Yes", "5"),  # verl's "\boxed " form: up to the next $
        (r"\boxed 42", "42"),
        (
            r"$\boxed 3$ then \boxed{5}",
            "3",
        ),  # verl quirk, kept: any "\boxed " wins over a later \boxed{}
        (r"\fbox{7} and later \boxed{8}", "8"),
        (r"\boxed{ 7 }", " 7 "),  # raw content: exact mode compares it as written
        (r"\boxed{\text{(B)}}", r"\text{(B)}"),
    ],
)
def test_extract_last_boxed(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "text",
    [
        "no box here 42",
        r"\boxed{1 + ",
        r"\boxed{}",
        r"\boxed{   }",
        r"\boxed$",
        "",
        r"\boxed" + "\n{5}",
        r"\fbox{7}",  # the official code: a lone \fbox{} is no answer (remove_boxed rejects it)
        r"so $\fbox{\frac{1}{2}}$.",
    ],
)
def test_extract_nothing(text: str) -> None:
    assert extract_answer(text) is None


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"\fbox{7}", "7"),
        (r"\fbox{1} then \fbox{\frac{1}{2}}", r"\frac{1}{2}"),  # the last one, braces balanced
        (r"\fbox{3} and \boxed{4}", "4"),  # a \boxed{} answer always comes first
        (r"\fbox{", None),
        (r"\fbox 7", None),
    ],
)
def test_fbox_is_a_named_fallback(text: str, answer: str | None) -> None:
    assert extract_answer(text, ["fbox"]) == answer


def test_extract_none_and_bytes() -> None:
    assert extract_answer(None) is None
    assert extract_answer(rb"\boxed{4}\xff") == "4"  # type: ignore[arg-type]


def test_fallbacks_in_order_and_only_without_a_box() -> None:
    text = "we get 12 apples. The answer is $3.5$.\n#### 1,000"
    assert extract_answer(text) is None
    assert extract_answer(text, ["gsm8k"]) == "1,000"
    assert extract_answer(text, ["answer_is", "gsm8k"]) == "3.5"
    assert extract_answer("x = 3, y = 1,234.", ["last_number"]) == "1234"
    assert extract_answer("points 3,4", ["last_number"]) == "4"
    assert extract_answer(r"The final answer is: **\frac{1}{2}**", ["answer_is"]) == r"\frac{1}{2}"
    assert extract_answer(r"\boxed{9} and the answer is 8", ["answer_is"]) == "9"
    assert extract_answer("no numbers", ["gsm8k", "answer_is", "last_number"]) is None
    with pytest.raises(ValueError, match="unknown answer fallback"):
        extract_answer("x", ["regex"])


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        (r"\frac12", "1/2"),
        ("0.50", "1/2"),
        ("142.0", "142"),
        ("070", "70"),
        ("1,000", "1000"),
        ("(1,2)", "(1,2)"),
        ("1,2", "1,2"),
        (r"\left( 0.5, 2.0 \right)", "(1/2,2)"),
        (r"5\text{ cm}^2", "5"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"90^\circ", "90"),
        (r"x = \dfrac{3}{4}", "3/4"),
        (r"\$1{,}250.", "1250"),
        (r"\sqrt2 + \frac{\sqrt3}2", r"\sqrt{2}+\frac{\sqrt{3}}{2}"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
        (r"f \circ g", r"f\circg"),
        ("-0", "0"),
        ("32, 349", "32,349"),  # a comma and a space: a list, no thousands separator
        ("1,00", "1,00"),  # two digits after the comma: no thousands separator
        (r"10,\!000", "10000"),  # MATH's thousands
        ("2 3", "2 3"),  # two numbers, not 23
        (r"1.5\;3", "1.5 3"),
        (r"\dfrac 3 8", "3/8"),  # TeX skips spaces before a macro argument
        (r"\theta = 30^\circ", "30"),
        (r"\pi = 3", r"\pi=3"),  # pi is no variable
        ("7 = 11a+c", "7=11a+c"),
    ],
)
def test_normalize_answer(answer: str, key: str) -> None:
    assert normalize_answer(answer) == key


def test_keys_of_long_answers_are_raw() -> None:
    long = "1," * 5000
    assert normalize_answer(long) == long.strip()


# --- matcher ------------------------------------------------------------------------------------


def test_half_forms_cluster_under_normalized_and_math_verify_not_exact() -> None:
    for mode, distinct in (("exact", 4), ("normalized", 1), ("math_verify", 1)):
        matcher = AnswerMatcher(mode)
        assert len({matcher.key(a) for a in HALF_FORMS}) == distinct
        assert all(
            matcher.equal(a, b) == (distinct == 1 or a == b) for a in HALF_FORMS for b in HALF_FORMS
        )


def test_blank_and_missing_answers_never_equal() -> None:
    for mode in ("exact", "normalized", "math_verify"):
        matcher = AnswerMatcher(mode)
        assert not matcher.equal(None, None)
        assert not matcher.equal("", "")
        assert not matcher.equal("  ", "  ")
        assert not matcher.equal("3", None)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown match mode"):
        AnswerMatcher("fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        AnswerMatcher("exact", timeout_s=0)


def test_math_verify_keys_first_then_cache() -> None:
    matcher = AnswerMatcher("math_verify")
    assert matcher.equal(r"\frac{1}{2}", "0.5")
    assert not matcher.equal("3", "4")
    assert matcher.stats.verify_calls == 0 and matcher.stats.decided_by_key == 2
    assert matcher.equal("x^2+2x", "x(x+2)")
    assert matcher.equal("x(x+2)", "x^2+2x")  # the other way round: answered from the cache
    assert (matcher.stats.verify_calls, matcher.stats.cache_hits) == (1, 1)
    # Same keys, other texts: asked again. Keys merge forms that math-verify reads apart (`5\%` is 5 to
    # a key, 1/20 to math-verify), so a cached verdict never passes from one text to another.
    assert matcher.equal("x^{2}+2x", "x (x+2)")
    assert (matcher.stats.verify_calls, matcher.stats.cache_hits) == (2, 1)


def test_math_verify_off_the_main_thread() -> None:
    """math-verify's own timeout raises ValueError off the main thread; ours must not."""
    matcher = AnswerMatcher("math_verify")
    pairs = [
        ("x^2+2x", "x(x+2)"),
        ("(1,2)", "[1,2]"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        ("a+b", "b+a"),
    ] * 3
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(lambda p: matcher.equal(*p), pairs))
    assert verdicts == [True, False, True, True] * 3


def test_deadline_kills_a_stuck_comparison_and_the_pool_recovers() -> None:
    patient = AnswerMatcher("math_verify", timeout_s=30)
    assert patient.equal("x^2+2x", "x(x+2)")  # the pool is warm
    matcher = AnswerMatcher("math_verify", timeout_s=0.5)
    start = time.monotonic()
    assert not matcher.equal(*SLOW_PAIR)
    elapsed = time.monotonic() - start
    assert elapsed < 0.5 + 1.0, elapsed
    assert matcher.stats.timeouts == 1
    start = time.monotonic()
    assert not matcher.equal(*SLOW_PAIR)  # a timed-out pair is cached as "not equal"
    assert time.monotonic() - start < 0.1
    assert patient.equal(r"\sqrt{12}", r"2\sqrt{3}")  # a fresh worker took over


def test_pool_bounds_every_call() -> None:
    pool = VerifyPool(max_workers=1, startup_timeout_s=20)
    try:
        assert pool.verify("x(x+2)", "x^2+2x", timeout_s=20) is True

        def stuck(_: int) -> str:
            start = time.monotonic()
            try:
                outcome = (
                    "late"
                    if pool.verify(SLOW_PAIR[1], SLOW_PAIR[0], timeout_s=0.4) is None
                    else "verdict"
                )
            except PoolBusy:
                outcome = "busy"
            assert time.monotonic() - start < pool.max_call_s(0.4)
            return outcome

        with ThreadPoolExecutor(3) as threads:
            outcomes = list(threads.map(stuck, range(3)))
        assert "verdict" not in outcomes and "late" in outcomes
        assert pool.stats.timeouts + pool.stats.busy == 3
        assert pool.verify("1", "1", timeout_s=20) is True
    finally:
        pool.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_math_verify_in_daemonic_worker_processes(method: str) -> None:
    matcher = AnswerMatcher("math_verify", timeout_s=20)
    assert matcher.equal("y^2", "y y")  # the parent has a pool of its own before forking
    with multiprocessing.get_context(method).Pool(2) as pool:  # pool workers are daemonic
        assert pool.starmap(matcher.equal, [("x^2+2x", "x(x+2)"), ("(1,2)", "[1,2]")]) == [
            True,
            False,
        ]


def test_matcher_pickles() -> None:
    matcher = AnswerMatcher("math_verify", timeout_s=3)
    matcher.equal("x^2+2x", "x(x+2)")
    clone = pickle.loads(pickle.dumps(matcher))
    assert (clone.mode, clone.timeout_s, clone.stats.equal_calls) == ("math_verify", 3.0, 0)
    assert clone.equal("x^2+2x", "x(x+2)")


def test_probe_settles_plain_expressions_that_differ_and_leaves_the_rest() -> None:
    from math_verify import LatexExtractionConfig, parse

    from coreward_plugins.verify_worker import clearly_different

    def parsed(answer: str) -> list:
        return parse(
            "\\boxed{" + answer + "}",
            extraction_config=[LatexExtractionConfig()],
            parsing_timeout=None,
        )

    differ = [("x^2+2x", "x^2+3x"), (r"\sqrt{3}", "x(x+2)"), ("p-q", "-p-q"), ("6-5i", "6+5i")]
    differ += [
        ("(x+y+z+w)^{60}", "(x-y+z-w)^{60}")
    ]  # settled in ms, where simplify() takes tens of seconds
    unsure = [
        ("x^2+2x", "x(x+2)"),
        (r"\sin^2 x + \cos^2 x", "1"),
        ("1/3", "0.333333"),
        (r"50\%", "0.5"),
    ]
    unsure += [
        ("(1,2)", "(1,3)"),
        ("x", "y"),
    ]  # intervals and bare symbols are math-verify's to judge
    assert all(clearly_different(parsed(b), parsed(a)) for a, b in differ)
    assert not any(clearly_different(parsed(b), parsed(a)) for a, b in unsure)


# --- batched comparisons and the warm worker --------------------------------------------------


def test_first_equal_agrees_with_equal_one_by_one() -> None:
    batched, single = (
        AnswerMatcher("math_verify", timeout_s=20),
        AnswerMatcher("math_verify", timeout_s=20),
    )
    candidates = ["x^2", r"\sqrt{3}", "x(x+2)", "x^2+2x", None, "", "7"]
    for answer in ["x^2+2x", r"\sqrt{3}", "y", "7.0", None, r"\frac{14}{2}"]:
        expected = next((i for i, c in enumerate(candidates) if single.equal(answer, c)), None)
        assert batched.first_equal(answer, candidates) == expected, answer
    assert (
        batched.first_equal("x^2+2x", candidates) == 2
    )  # the first equal one, not a later equal one
    assert batched.first_equal("x", []) is None
    for mode in ("exact", "normalized"):
        matcher = AnswerMatcher(mode)
        assert matcher.first_equal("0.5", ["1", r"\frac12", "0.5"]) == (2 if mode == "exact" else 1)


def test_first_equal_sends_every_undecided_pair_in_one_round_trip() -> None:
    pool = VerifyPool(max_workers=1, startup_timeout_s=30)
    try:
        pairs = [
            ("x^2", "x(x+2)"),
            (r"\sqrt{3}", "x(x+2)"),
            ("x^2+2x", "x(x+2)"),
            ("2x+x^2", "x(x+2)"),
        ]
        verdicts = pool.verify_many(pairs, timeout_s=20, first=True)
        assert verdicts == [False, False, True]  # stops at the first equal pair
        assert pool.stats.calls == 1 and pool.stats.timeouts == 0
        assert pool.verify_many(pairs, timeout_s=20) == [False, False, True, True]
    finally:
        pool.close()


def test_a_late_pair_in_a_batch_gets_none_and_the_rest_go_to_a_fresh_worker() -> None:
    pool = VerifyPool(max_workers=1, startup_timeout_s=30)
    try:
        assert pool.verify("1", "1", timeout_s=20) is True  # started
        pairs = [("x+1", "1+x + 1"), SLOW_PAIR, ("a+b", "b+a")]
        start = time.monotonic()
        verdicts = pool.verify_many(pairs, timeout_s=1.0)
        elapsed = time.monotonic() - start
        assert verdicts == [False, None, True]
        assert pool.stats.timeouts == 1 and pool.stats.restarts == 1
        assert elapsed < 1.0 + pool.max_call_s(1.0) + 1.0, elapsed  # the late pair, then a restart
    finally:
        pool.close()


def test_worker_warm_up_finishes_and_does_not_block_requests() -> None:
    pool = VerifyPool(max_workers=1, startup_timeout_s=30)
    try:
        assert (
            pool.verify(r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}", timeout_s=20) is True
        )  # mid warm-up
        assert pool.wait_warm(timeout_s=120)
        assert pool.verify("(1,2)", "[1,2]", timeout_s=20) is False
    finally:
        pool.close()


def test_worker_without_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREWARD_VERIFY_WARM_UP", "0")  # the worker inherits it
    pool = VerifyPool(max_workers=1, startup_timeout_s=30)
    try:
        assert pool.wait_warm(timeout_s=30)  # nothing to warm: answered at once
        assert pool.verify_many([("x+1", "1+x"), ("(1,2)", "[1,2]")], timeout_s=20) == [True, False]
    finally:
        pool.close()


def test_strict_rules_leave_math_verify_alone_outside_them() -> None:
    """strict_compare wraps math-verify's comparison core only while strict_equal runs, in its thread."""
    from math_verify import LatexExtractionConfig, parse, verify

    from coreward_plugins import strict_compare

    def parsed(answer: str) -> list:
        return parse(
            "\\boxed{" + answer + "}",
            extraction_config=[LatexExtractionConfig()],
            parsing_timeout=None,
        )

    strict_compare.install()
    strict_compare.install()  # idempotent
    equation, rhs = parsed("7 = 11a+c"), parsed("11a+c")
    pair, pair_set = parsed("(3,1)"), parsed("\\{1,3\\}")
    assert verify(rhs, equation, timeout_seconds=None)  # math-verify's own verdict, unchanged
    assert verify(pair_set, pair, timeout_seconds=None)
    assert not strict_compare.strict_equal(rhs, equation, "11a+c", "7 = 11a+c")
    assert not strict_compare.strict_equal(pair_set, pair, "\\{1,3\\}", "(3,1)")
    assert strict_compare.strict_equal(parsed("5"), parsed("x = 5"), "5", "x = 5")
    assert strict_compare.strict_equal(parsed("(1,3)"), parsed("1, 3"), "(1,3)", "1, 3")
    assert not strict_compare.strict_equal(parsed("(3,1)"), parsed("1, 3"), "(3,1)", "1, 3")
    assert verify(rhs, equation, timeout_seconds=None)  # and still unchanged afterwards
    assert strict_compare.written_as_set(
        "\\left\\{1, 3\\right\\}"
    ) and strict_compare.written_as_set("{1,3}")
    assert not strict_compare.written_as_set("1, 3")
