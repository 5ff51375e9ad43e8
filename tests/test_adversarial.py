"""Hostile answers through extraction, keys, comparison (all modes) and votes, also from threads.

Every call must come back within its limit, nothing may crash, and nothing in an answer may ever run:
the payloads below try to create a sentinel file through Python, the shell and TeX.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from coreward_plugins.answers import FALLBACKS, AnswerMatcher, extract_answer
from coreward_plugins.voting import majority_vote

TIMEOUT_S = 1.0  # math_verify deadline per comparison in this test
CHEAP_LIMIT_S = (
    1.0  # extraction and keys: plain string work, far below this (CPU seconds of the thread)
)
MODES = ("exact", "hendrycks", "normalized", "math_verify")
REFERENCES = ("42", r"\frac{x+1}{2}", "(1,2)")
# Harmless-looking answers that pass the input guard yet keep sympy busy for tens of seconds:
# only the worker deadline stops them.
STUCK = ["(x+y+z+w)^{60} + 0.5", "(x-y+z-w)^{60} + 0.5"]


def payloads(sentinel: str) -> list[str]:
    """Attempts to execute something, in every language an answer could be mistaken for."""
    touch = f"touch {sentinel}"
    return [
        f"__import__('os').system('{touch}')",
        f'__import__("os").system("{touch}")',
        f"eval(\"__import__('os').system('{touch}')\")",
        f"exec(\"open('{sentinel}','w').write('x')\")",
        f"open('{sentinel}', 'w').write('pwned')",
        f"(lambda: __import__('subprocess').run(['touch', '{sentinel}']))()",
        "().__class__.__bases__[0].__subclasses__()",
        f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0]('{touch}', shell=True)",
        f"import os; os.system('{touch}')",
        f"Symbol('x').__class__.__init__.__globals__['__builtins__']['exec']('import os; os.system(\"{touch}\")')",
        f"$({touch})",
        f"`{touch}`",
        f"; {touch}",
        f"| {touch}",
        f"&& {touch} && rm -rf ~/nothing",
        f"\\input{{{sentinel}}}",
        f"\\include{{{sentinel}}}",
        f"\\write18{{{touch}}}",
        f"\\immediate\\write18{{{touch}}}",
        f"\\openout1={sentinel} \\write1{{x}} \\closeout1",
        "\\def\\x{\\x\\x}\\x",
        "\\newcommand{\\a}{\\a}\\a",
        "\\csname relax\\endcsname",
        "\\catcode`\\{=12",
        f"\\usepackage{{{sentinel}}}",
        f"\\directlua{{os.execute('{touch}')}}",
        f"{{{{ ''.__class__.__mro__[1].__subclasses__() }}}} {touch}",
        f"${{{touch}}}",
    ]


def monsters() -> list[str]:
    """Answers built to hang, exhaust or confuse a parser."""
    out = []
    for n in (50, 500, 3000, 10000):
        out += [
            "{" * n + "1" + "}" * n,
            "(" * n + "1" + ")" * n,
            "\\frac{" * n + "1",
            "\\sqrt{" * n + "2" + "}" * n,
        ]
        out += ["{" * n, "}" * n, "\\left(" * n, "[" * n + "]", "\\boxed{" * n + "7" + "}" * n]
        out += ["x^{" * n + "2" + "}" * n]
    out += [
        "10^{10^{10^{10}}}",
        "2^{2^{2^{2^{2^{2}}}}}",
        "9^9^9^9",
        "10^{100000}",
        "10^{10^{10}}+1",
        "(10^{10})^{10^{10}}",
        "10**10**10",
        "2**(2**100)",
        "e^{e^{e^{e^{100}}}}",
        "\\exp(\\exp(\\exp(100)))",
        "x^{99999999999}",
        "1000000!",
        "(10^6)!",
        "100000!!",
        "12345678!",
        "(1000000)!",
        "\\Gamma(10^{6})",
        "\\binom{1000000}{500000}",
        "\\prod_{k=1}^{1000000} k",
        "\\sum_{n=1}^{10^{9}} n^{n}",
        "\\int_0^{10^{9}} e^{x^2} dx",
        "\\lim_{x\\to\\infty} x^{x^{x}}",
        "\\sin(10^{100})",
        "99999999999999999999" * 300,
        "1e999999",
        "1e-999999",
        "0." + "0" * 5000 + "1",
        "9" * 5000,
        "-" + "9" * 5000 + ".5",
        "1" * 100_000,
        "1," * 50_000,
        "a+" * 50_000 + "a",
        "x" * 100_000,
        "\\frac" * 20_000,
        "\\text{" * 20_000,
        "the answer is " * 7000,
        "\\boxed{" + "x" * 100_000 + "}",
        "$" * 50_000,
        "\\" * 10_000,
        "%" * 10_000,
        "^" * 10_000,
        "!" * 10_000,
        "\\begin{pmatrix}" + "1&" * 3000 + "1\\end{pmatrix}",
        "\\begin{pmatrix}" + "1\\\\" * 3000 + "\\end{pmatrix}",
        "\\frac{1}{0}",
        "0/0",
        "\\frac{0}{0}",
        "1/0",
        "\\infty - \\infty",
        "\\log(0)",
        "\\sqrt{-1}",
        "nan",
        "NaN",
        "inf",
        "\\frac{1}{2",
        "}{",
        "\\left(",
        "\\right)",
        "{{{",
        "}}}",
        "\\boxed{",
        "\\frac{}{}",
        "\\sqrt[",
        "^_^",
        "",
        "   ",
        "\x00",
        "\x00" * 1000,
        "\ud800",
        "\udfff1",
        "a\udc80b",
        b"\xff\xfe\x80abc".decode("utf-8", "surrogateescape"),
        "\u202e42\u202c",
        "4\u200b2",
        "\ufeff42",
        "٣",
        "４２",
        "\u2212 5",
        "🙂" * 1000,
        "\u0301" * 5000,
        "\\text{" + "a" * 999 + "}",
        "x" + "=" * 5000,
        "=" * 10,
        "1,000," * 2000,
        "(" + "1," * 5000 + "1)",
        "\\{" * 2000,
        "\\left\\{" + "1," * 3000 + "\\right\\}",
        "\\mathrm{" * 3000,
        "\\sqrt" * 5000 + "2",
    ]
    return out


def adversarial_answers(sentinel: str) -> list[str]:
    base = payloads(sentinel) + monsters()
    variants = [
        lambda a: a,
        lambda a: f"\\boxed{{{a}}}",
        lambda a: f"\\text{{{a}}}",
        lambda a: f"x = {a}",
        lambda a: f"{a}\\%",
        lambda a: f"${a}$",
        lambda a: f"{a}^\\circ",
        lambda a: f"\\frac{{{a}}}{{2}}",
        lambda a: f"({a}, {a})",
    ]
    seen: dict[str, None] = {}
    for variant in variants:
        for answer in base:
            seen.setdefault(variant(answer), None)
    return list(seen) + STUCK


def _timed(limit: float, fn, *args, clock=time.thread_time):
    """`fn(*args)` and its time, which must stay under `limit`. Plain string work is timed in the
    calling thread's CPU seconds, which a loaded machine does not inflate; a call that waits on a
    math-verify worker is timed on the wall clock (pass clock=time.monotonic)."""
    start = clock()
    result = fn(*args)
    elapsed = clock() - start
    assert elapsed <= limit, (
        f"{getattr(fn, '__name__', fn)} took {elapsed:.2f}s > {limit}s on {str(args)[:120]!r}"
    )
    return result, elapsed


def run_everything(answer: str, index: int, matchers: dict[str, AnswerMatcher]) -> float:
    """One hostile answer through every entry point; returns the slowest single call."""
    slowest = 0.0
    for text in (
        answer,
        f"Let me think.\n\\boxed{{{answer}}}\nThe answer is {answer}.",
        f"#### {answer}",
    ):
        extracted, t = _timed(CHEAP_LIMIT_S, extract_answer, text, FALLBACKS)
        assert extracted is None or isinstance(extracted, str)
        slowest = max(slowest, t)
    reference = REFERENCES[index % len(REFERENCES)]
    for mode, matcher in matchers.items():
        key, t = _timed(CHEAP_LIMIT_S, matcher.key, answer)
        assert isinstance(key, str)
        limit = matcher.max_call_s + 0.5 if mode == "math_verify" else CHEAP_LIMIT_S
        clock = time.monotonic if mode == "math_verify" else time.thread_time
        verdict, t2 = _timed(limit, matcher.equal, answer, reference, clock=clock)
        same, t3 = _timed(limit, matcher.equal, answer, answer, clock=clock)
        assert isinstance(verdict, bool) and same == bool(answer.strip())
        slowest = max(slowest, t, t2, t3)
    return slowest


def vote_everything(group: list[str], matchers: dict[str, AnswerMatcher]) -> None:
    for mode, matcher in matchers.items():
        calls_before = matcher.stats.equal_calls
        clock = time.monotonic if mode == "math_verify" else time.thread_time
        start = clock()
        vote = majority_vote(group + [None, ""], matcher)
        elapsed = clock() - start
        per_call = matcher.max_call_s + 0.5 if mode == "math_verify" else CHEAP_LIMIT_S
        assert elapsed <= CHEAP_LIMIT_S + per_call * (matcher.stats.equal_calls - calls_before)
        assert vote.valid == sum(1 for a in group if a.strip()) and 0.0 <= vote.share <= 1.0
        assert vote.label is None or vote.label in group


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@pytest.fixture
def global_sentinel() -> Path:
    path = Path("/tmp/pwned")
    existed = path.exists()
    yield path
    if not existed:
        assert not path.exists(), "an answer payload created /tmp/pwned"


def fresh_matchers() -> dict[str, AnswerMatcher]:
    return {mode: AnswerMatcher(mode, timeout_s=TIMEOUT_S) for mode in MODES}


def test_hostile_answers_from_threads(sentinel: Path, global_sentinel: Path) -> None:
    answers = adversarial_answers(str(sentinel)) + payloads(str(global_sentinel))
    matchers = fresh_matchers()
    with ThreadPoolExecutor(max_workers=4) as pool:
        slowest = max(
            pool.map(lambda item: run_everything(item[1], item[0], matchers), enumerate(answers))
        )
        groups = [answers[start : start + 8] for start in range(0, len(answers), 8)]
        list(pool.map(lambda group: vote_everything(group, matchers), groups))
    assert not sentinel.exists()
    stats = matchers["math_verify"].stats
    print(
        f"\n{len(answers)} answers from threads, slowest call {slowest:.2f}s, math_verify {stats}"
    )
    assert stats.guarded > 0  # the guard turned answers away before sympy
    assert stats.verify_calls > 0  # and others did reach math-verify, inside the worker
    assert stats.timeouts >= 1  # the stuck ones were cut off at the deadline


def test_bytes_and_non_strings_do_not_crash() -> None:
    for mode in MODES:
        matcher = AnswerMatcher(mode, timeout_s=TIMEOUT_S)
        assert isinstance(matcher.key(b"\xff\xfe12"), str)  # type: ignore[arg-type]
        assert matcher.equal(b"12", "12")  # type: ignore[arg-type]
        assert not matcher.equal(12, "13")  # type: ignore[arg-type]
    assert extract_answer(b"\\boxed{\xff}") == "\ufffd"  # type: ignore[arg-type]
    vote = majority_vote([b"1", 2, "3"], AnswerMatcher("exact"))  # type: ignore[list-item]
    assert (vote.label, vote.valid, vote.assignment) == ("3", 1, (None, None, 0))  # only str votes
