"""Differential property test: `normalized` and `math_verify` never call "equal" what math-verify keeps apart.

Pairs of answers come from a grammar of the forms models write: integers with thousands separators
(and look-alikes that are lists: `32, 349`), decimals, zero padding, fractions, roots, powers,
expressions, equations with a lone variable or something else on the left, inequalities, tuples,
sets, intervals, bare lists, words and numbers with units. Each pair is drawn from one topic (forms
of the same value next to near misses) or from two.

The reference is math-verify itself, unchanged and in this process: `verify(parse(b), parse(a))`
and `verify(parse(a), parse(b))` must both hold ("strictly equal": votes compare answers both ways
round, and math-verify's own rules are not symmetric). Two properties:

1. Soundness. When `normalized` or `math_verify` says "equal", the pair is strictly equal, or it is
   an intended improvement: after the rewrites of `IMPROVEMENTS` (each with its reason) math-verify
   agrees.
2. Strictness only where intended. When the pair is strictly equal and `math_verify` says
   "different", one of the rules in `TIGHTENINGS` applies (an equation whose left side is not a
   lone variable, a set against a tuple or interval, a bare list against a tuple in another order).

The worker's verdict is also checked to be the same with either answer as the reference.

Budget: COREWARD_FUZZ_EXAMPLES pairs (default 150, derandomized so CI sees the same pairs). A long
run, with every finding collected in a JSON report instead of stopping at the first:

    COREWARD_FUZZ_EXAMPLES=20000 COREWARD_FUZZ_REPORT=fuzz.json \\
        python -m pytest -q tests/test_equivalence_fuzz.py -p no:cacheprovider

That long run, 2026-11-30 (31.5 min on a shared 2-core machine): 20,000 examples, 12,136 distinct
pairs, 5,307 of them strictly equal; `normalized` said "equal" 3,043 times and `math_verify` 5,308
times; no violation, and the worker's verdict never depended on which answer was the reference.
Intended improvements used: sentence full stop 78, percent sign 40, text wrapper 25, solution set
either way round 19 (math_verify only), lone variable named 14, spacing around operators 9.
`math_verify` said "different" where math-verify says "equal" both ways round 183 times: a set
against a tuple or interval 113, an equation that names no lone variable 70. The same search with
1,000 examples against the code before issue 17 found 28 violations in 769 distinct pairs: equations
read as their right side (`2x + z = \\frac12\\pi` = `\\pi/2`; `7=2x+x^2` against `\\{2x+x^2\\}`,
equal one way round only), tuples against sets (`(-12,1)` = `{1,-12}`), spaced commas
(`1, 000` = `1000 meters`) and split digits (`7 0` = `70\\%`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coreward_plugins.answers import AnswerMatcher
from coreward_plugins.verify_pool import shared_pool

EXAMPLES = int(os.environ.get("COREWARD_FUZZ_EXAMPLES", "150"))
REPORT = os.environ.get("COREWARD_FUZZ_REPORT", "")
LONG_RUN = "COREWARD_FUZZ_EXAMPLES" in os.environ


# --- the grammar ----------------------------------------------------------------------------------

VARIABLES = ["x", "y", "a_n", "\\theta", "f(x)"]  # left sides that name a lone variable
NOT_VARIABLES = ["7", "2x", "a +3z", "2x + z", "x + y", "\\pi", "a + b"]  # left sides that do not
WORDS = ["east", "west", "yes", "no", "Monday"]
UNITS = ["\\text{ cm}", " cm", " meters", "\\text{ square units}", " hours", "\\mbox{ inches}"]


def int_forms(n: int) -> list[str]:
    """Ways to write the integer n, and look-alikes that are something else (lists, products)."""
    s = str(n)
    forms = [s, f"{s}.0", f"{s}.00", f"{s}.", f"x = {s}", f"x={s}", f"\\theta = {s}", f"{{{s}}}"]
    forms += [f"\\${s}" if n >= 0 else s, f"{s}\\%", f"{s}%", f"{s}^\\circ", f"{s}^{{\\circ}}"]
    forms += [s + unit for unit in UNITS] + [f"\\text{{{s}}}", f"\\! {s} \\,"]
    if n > 0:
        forms += [f"+{s}", f"{n:03d}" if n < 100 else f"0{s}"]
    if abs(n) >= 1000:
        grouped = f"{n:,}"
        forms += [grouped, grouped.replace(",", "{,}"), grouped.replace(",", ",\\!")]
        forms += [grouped.replace(",", ", "), grouped.replace(",", " , ")]  # a list, not a number
        forms += [grouped.replace(",", "\\,"), grouped.replace(",", " ")]  # spacing, not a comma
        digits = s.lstrip("-")
        forms += [
            f"{'-' if n < 0 else ''}{digits[:-2]},{digits[-2:]}"
        ]  # two digits after the comma
        forms += [f"{'-' if n < 0 else ''}{digits[:-4]},{digits[-4:]}"] if len(digits) > 4 else []
    if 10 <= abs(n) < 100:
        forms += [f"{s[:-1]} {s[-1]}", f"{s[:-1]}\\;{s[-1]}"]  # two digits apart: two numbers
    return forms


def fraction_forms(value: Fraction) -> list[str]:
    p, q = value.numerator, value.denominator
    if q == 1:
        return int_forms(p)
    a, sign = abs(p), "-" if p < 0 else ""
    forms = [f"{sign}\\frac{{{a}}}{{{q}}}", f"\\frac{{{p}}}{{{q}}}", f"{sign}\\dfrac{{{a}}}{{{q}}}"]
    forms += [f"{sign}\\tfrac{{{a}}}{{{q}}}", f"{p}/{q}", f"{sign}\\frac{{{2 * a}}}{{{2 * q}}}"]
    forms += [f"x = {sign}\\frac{{{a}}}{{{q}}}", f"{sign}\\frac{{{a}}}{{{q}}}\\text{{ cm}}"]
    if a < 10 and q < 10:
        forms += [f"{sign}\\frac{a}{q}", f"{sign}\\frac {a} {q}"]
    decimal = float(value)
    if Fraction(repr(decimal)) == value:
        text = repr(decimal)
        forms += [text, text + "0", text.replace("0.", ".", 1) if abs(decimal) < 1 else text]
    else:
        forms += [f"{decimal:.2f}", f"{decimal:.6f}", f"{decimal:.3f}"]  # rounded: not the value
    return forms


def root_forms(k: int, n: int) -> list[str]:
    forms = [f"{k}\\sqrt{{{n}}}", f"{k}\\sqrt {n}", f"\\sqrt{{{k * k * n}}}", f"{k} \\sqrt{{{n}}}"]
    forms += [f"\\sqrt{{{n}}}\\cdot {k}", f"\\frac{{{k * n}}}{{\\sqrt{{{n}}}}}"]
    forms += [f"{k + 1}\\sqrt{{{n}}}", f"\\sqrt{{{k * n}}}", f"{k}\\sqrt{{{n + 1}}}"]  # near misses
    return forms if k > 1 else forms + [f"\\sqrt{{{n}}}", f"\\sqrt {n}"]


def power_forms(b: int, e: int) -> list[str]:
    forms = [f"{b}^{{{e}}}", f"{b}^{e}" if e < 10 else f"{b}^{{{e}}}", str(b**e), f"{b**e:,}"]
    return forms + [f"{b}^{{{e + 1}}}", str(b * e), f"{e}^{{{b}}}", f"x^{{{e}}}", f"x^{e}"]


EXPRESSIONS = [  # families of one expression, each with near misses at the end
    ["x^2+2x", "x(x+2)", "2x+x^2", "x^{2}+2x", "x^2 + 2 x", "x^2+3x", "x(x-2)", "x^2"],
    ["a+b", "b+a", "a + b", "a-b", "ab", "2a"],
    ["2m", "2 m", "m", "2", "m2", "m^2", "2\\cdot m"],
    ["2x+1", "1+2x", "2x + 1", "2(x+1)", "2x-1", "x+1"],
    ["11a+c", "c+11a", "11a + c", "11(a+c)", "11a"],
    ["\\pi/2", "\\frac{\\pi}{2}", "\\frac12\\pi", "2\\pi", "\\pi", "\\frac{\\pi}{3}", "90^\\circ"],
    [
        "\\frac{\\sqrt{2}}{2}",
        "\\frac{1}{\\sqrt{2}}",
        "\\frac{\\sqrt2}2",
        "\\sqrt{2}",
        "\\frac{1}{2}",
    ],
    ["6-5i", "6 - 5i", "-5i+6", "6+5i", "5i-6"],
]


@st.composite
def numbers(draw: st.DrawFn) -> Fraction:
    return draw(
        st.one_of(
            st.sampled_from([0, 1, 2, 3, 5, 7, 12, 70, 142, 1000, 32349, 1234567, -3, -12]).map(
                Fraction
            ),
            st.builds(
                Fraction,
                st.integers(-9, 12),
                st.sampled_from([2, 3, 4, 5, 8]),
            ),
        )
    )


def simple(value: Fraction) -> str:
    """A plain rendering of a number, for the elements of tuples, sets and lists."""
    p, q = value.numerator, value.denominator
    if q == 1:
        return str(p)
    return f"{'-' if p < 0 else ''}\\frac{{{abs(p)}}}{{{q}}}"


def element_forms(value: Fraction) -> list[str]:
    forms = [simple(value)]
    if value.denominator != 1 and Fraction(repr(float(value))) == value:
        forms.append(repr(float(value)))
    if value.denominator == 1:
        forms.append(f"{value.numerator}.0")
    return forms


@st.composite
def topic_number(draw: st.DrawFn) -> list[str]:
    value = draw(numbers())
    near = draw(st.sampled_from([value + 1, value - 1, -value, 2 * value, value / 10]))
    return fraction_forms(value) + [draw(st.sampled_from(fraction_forms(near)))]


@st.composite
def topic_root(draw: st.DrawFn) -> list[str]:
    return root_forms(draw(st.integers(1, 4)), draw(st.sampled_from([2, 3, 5, 7])))


@st.composite
def topic_power(draw: st.DrawFn) -> list[str]:
    return power_forms(draw(st.sampled_from([2, 3, 10])), draw(st.integers(2, 12)))


@st.composite
def topic_expression(draw: st.DrawFn) -> list[str]:
    return draw(st.sampled_from(EXPRESSIONS))


@st.composite
def topic_equation(draw: st.DrawFn) -> list[str]:
    """An equation or inequality next to its right side, its left side, and a set it might name."""
    family = draw(st.sampled_from(EXPRESSIONS))
    rhs = draw(st.one_of(st.sampled_from(family[:3]), numbers().map(simple)))
    lhs = draw(st.sampled_from(VARIABLES + NOT_VARIABLES))
    other = draw(st.sampled_from(VARIABLES + NOT_VARIABLES))
    forms = [f"{lhs} = {rhs}", f"{lhs}={rhs}", rhs, lhs, f"{other} = {rhs}", f"{rhs} = {lhs}"]
    forms += [f"\\{{{rhs}\\}}", f"({rhs})", f"{lhs} = {rhs} = {rhs}"]
    n = draw(st.integers(-5, 9))
    op, interval = draw(
        st.sampled_from(
            [
                ("<", f"(-\\infty, {n})"),
                ("\\le", f"(-\\infty, {n}]"),
                (">", f"({n}, \\infty)"),
                ("\\geq", f"[{n}, \\infty)"),
            ]
        )
    )
    var = draw(st.sampled_from(["x", "2x", "x + y", "t"]))
    forms += [f"{var} {op} {n}", interval, str(n), f"{var} = {n}", f"{n - 1} < {var} < {n}"]
    return forms + [f"({n - 1}, {n})", f"\\{{x \\mid x {op} {n}\\}}"]


@st.composite
def topic_container(draw: st.DrawFn) -> list[str]:
    """The same few numbers as a tuple, a set, an interval and a bare list, in either order."""
    a, b = draw(numbers()), draw(numbers())
    c = draw(numbers())
    fa, fb = draw(st.sampled_from(element_forms(a))), draw(st.sampled_from(element_forms(b)))
    sa, sb, sc = simple(a), simple(b), simple(c)
    forms = [f"({fa}, {fb})", f"({sb},{sa})", f"\\left({fa}, {fb}\\right)", f"({sa}, {sb}, {sc})"]
    forms += [
        f"\\{{{fa}, {fb}\\}}",
        f"\\{{{sb},{sa}\\}}",
        f"{{{sa},{sb}}}",
        f"\\left\\{{{sa}, {sb}\\right\\}}",
    ]
    forms += [f"[{sa}, {sb}]", f"({sa}, {sb}]", f"[{sa}, {sb})", f"(-\\infty, {sa})"]
    forms += [f"{fa}, {fb}", f"{sb}, {sa}", f"{sa},{sb}", f"x={sa}, y={sb}", f"y={sb}, x={sa}"]
    forms += [f"\\pm {sa}", f"-{sa}, {sa}" if not sa.startswith("-") else f"{sa}, {sa[1:]}"]
    forms += [f"\\{{({sa}, {sb})\\}}", f"[{sa},{sb}]\\cup[{sc},{sc}]"]
    return forms


@st.composite
def topic_text(draw: st.DrawFn) -> list[str]:
    word = draw(st.sampled_from(WORDS))
    other = draw(st.sampled_from(WORDS))
    n = draw(st.sampled_from([5, 12, 3.5]))
    unit = draw(st.sampled_from(UNITS))
    forms = [
        f"\\text{{{word}}}",
        word,
        f"\\textbf{{{word}}}",
        f"\\mathrm{{{word}}}",
        f"\\text{{{other}}}",
    ]
    forms += [f"{n}{unit}", str(n), f"{n}\\text{{ {word}}}", f"\\text{{{n} {word}}}", f"{n} {word}"]
    return forms + [f"\\text{{({word[0].upper()})}}", f"({word[0].upper()})", f"{n}m", f"{n} g"]


TOPICS = [
    topic_number(),
    topic_root(),
    topic_power(),
    topic_expression(),
    topic_equation(),
    topic_container(),
    topic_text(),
]


@st.composite
def answer_pairs(draw: st.DrawFn) -> tuple[str, str]:
    first = draw(st.one_of(TOPICS))
    second = first if draw(st.integers(0, 3)) else draw(st.one_of(TOPICS))  # mostly one topic
    a, b = draw(st.sampled_from(first)), draw(st.sampled_from(second))
    if a.strip() == b.strip():
        b = draw(st.sampled_from(second))
    return a, b


# --- the reference: math-verify, unchanged, both ways round -----------------------------------------


@cache
def mv_parse(answer: str) -> tuple:
    from math_verify import LatexExtractionConfig, parse

    return tuple(
        parse(
            "\\boxed{" + answer + "}",
            extraction_config=[LatexExtractionConfig()],
            parsing_timeout=10,
        )
    )


@cache
def mv_verify(gold: str, pred: str) -> bool:
    from math_verify import verify

    return bool(verify(list(mv_parse(gold)), list(mv_parse(pred)), timeout_seconds=10))


def strictly_equal(a: str, b: str) -> bool:
    """math-verify says "equal" with either answer as the reference."""
    return mv_verify(b, a) and mv_verify(a, b)


# --- what we mean to differ from it ------------------------------------------------------------------


@dataclass(frozen=True)
class Improvement:
    """An intended "equal" that math-verify does not give, and why.

    A rewrite improvement maps both answers to what math-verify should have been asked (a percent
    sign dropped, a text wrapper taken off); the pair is allowed when math-verify, both ways round,
    agrees on the rewritten pair. Rewrites apply one after the other, cumulatively.
    """

    name: str
    reason: str
    rewrite: Callable[[str], str] | None = None


def _sub(pattern: str, repl: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)
    return lambda s: compiled.sub(repl, s)


SOLUTION_SET = "solution set, either way round"
IMPROVEMENTS = [
    Improvement(
        "percent sign",
        "`50\\%` is 50 with a percent sign: answers to 'what percent' write either way; math-verify "
        "reads it as 1/2",
        _sub(r"\\?%", ""),
    ),
    Improvement(
        "sentence full stop",
        "`9.` is 9 at the end of a sentence; math-verify reads no value from it, only the string '9.'",
        _sub(r"^(\s*[+-]?[0-9]+)\.\s*$", r"\1"),
    ),
    Improvement(
        "text wrapper",
        "`\\text{5 no}` and `5 no` are the same words; math-verify reads letters outside `\\text` as a "
        "product of symbols, and text inside it otherwise",
        _sub(r"\\(?:text|textbf|textit|textrm|mathrm|mbox)\{([^{}]*)\}", r"\1"),
    ),
    Improvement(
        "spacing around operators",
        "`11a + c` is `11a+c`; math-verify's unit stripping reads `11a + c` as 11 (spacing between two "
        "digits is not dropped: `2 3` is two numbers)",
        _sub(r"\s*([+=-])\s*", r"\1"),
    ),
    Improvement(
        "lone variable named",
        "`x = 5` and `y = 5` both give 5, as each equals `5` (the issue keeps `x = 5` = `5`); keys "
        "drop the name, math-verify compares two assignments by their variables",
        _sub(
            r"^\s*(?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?|\\(?:alpha|beta|gamma|theta|lambda|mu|phi|omega))"
            r"\s*=\s*(?=[^=]*$)",
            "",
        ),
    ),
    Improvement(
        SOLUTION_SET,
        "`0 < t < 1` and `(0, 1)`: an inequality that names a lone variable is its solution set. "
        "math-verify reads it so only when the inequality is the reference; a vote has no reference",
    ),
]


def _names_a_variable_against_a_set(relation: str, other: str) -> bool:
    from sympy import Set

    from coreward_plugins.strict_compare import is_relation, names_variable

    rel = [x for x in mv_parse(relation) if not isinstance(x, str)]
    oth = [x for x in mv_parse(other) if not isinstance(x, str)]
    return (
        any(is_relation(r) and names_variable(r) for r in rel)
        and any(isinstance(o, Set) for o in oth)
        and mv_verify(relation, other)  # math-verify's verdict with the relation as the reference
    )


def _rewritten_equal(a: str, b: str, names: list[str]) -> bool:
    for improvement in IMPROVEMENTS:
        if improvement.name in names and improvement.rewrite is not None:
            a, b = improvement.rewrite(a), improvement.rewrite(b)
    if a.strip() and b.strip() and strictly_equal(a, b):
        return True
    if SOLUTION_SET in names:
        return _names_a_variable_against_a_set(a, b) or _names_a_variable_against_a_set(b, a)
    return False


def improved(a: str, b: str) -> list[str]:
    """The improvements that make math-verify agree with "equal" on (a, b), none of them superfluous;
    [] when they do not."""
    names = [i.name for i in IMPROVEMENTS]
    if not _rewritten_equal(a, b, names):
        return []
    for name in list(names):  # keep only the improvements the verdict needs
        if _rewritten_equal(a, b, [n for n in names if n != name]):
            names.remove(name)
    return names


def _walk(expr: object):
    yield expr
    for arg in getattr(expr, "args", ()) or ():
        yield from _walk(arg)


def tightenings(a: str, b: str) -> list[str]:
    """The strict rules (`coreward_plugins.strict_compare`) behind a "different" where math-verify,
    both ways round, says "equal"."""
    from sympy import Interval, Tuple
    from sympy.sets.sets import FiniteSet

    from coreward_plugins.strict_compare import is_relation, names_variable, written_as_set

    found = []
    parsed = [[x for x in mv_parse(s) if not isinstance(x, str)] for s in (a, b)]
    nodes = [[node for x in items for node in _walk(x)] for items in parsed]
    relations = [[n for n in ns if is_relation(n)] for ns in nodes]
    if any(not names_variable(r) for rs in relations for r in rs) and not all(relations):
        found.append(TIGHTENINGS[0])
    sets = [any(isinstance(n, FiniteSet) for n in ns) for ns in nodes]
    ordered = [any(isinstance(n, (Tuple, Interval)) for n in ns) for ns in nodes]
    if (sets[0] and ordered[1]) or (sets[1] and ordered[0]):
        found.append(TIGHTENINGS[1] if written_as_set(a) or written_as_set(b) else TIGHTENINGS[2])
    return found


TIGHTENINGS = [
    "an equation or inequality that names no lone variable, against something that is not one",
    "a set against a tuple or an interval",
    "a bare list against a tuple or an interval, in another order or with repeats",
]


# --- the property ------------------------------------------------------------------------------------

STATS: Counter = Counter()
SEEN: set[tuple[str, str]] = set()
FINDINGS: dict[str, list] = {"violations": [], "improvements": [], "tightenings": []}


@pytest.fixture(scope="module")
def matchers() -> dict[str, AnswerMatcher]:
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    return {
        "normalized": AnswerMatcher("normalized"),
        "math_verify": AnswerMatcher("math_verify", timeout_s=30.0),
    }


def _record(kind: str, entry: dict) -> None:
    if len(FINDINGS[kind]) < 200:
        FINDINGS[kind].append(entry)


def check_pair(a: str, b: str, matchers: dict[str, AnswerMatcher], collect: bool) -> None:
    STATS["pairs"] += 1
    SEEN.add((a, b) if a < b else (b, a))
    strict = strictly_equal(a, b)
    STATS["strictly equal"] += strict
    problems = []
    for mode, matcher in matchers.items():
        ours = matcher.equal(a, b)
        STATS[f"{mode} equal"] += ours
        if ours and not strict:
            used = improved(a, b)
            if used:
                STATS[f"{mode}: improvement"] += 1
                STATS.update(f"{mode}: improvement: {name}" for name in used)
                _record("improvements", {"mode": mode, "pair": [a, b], "by": used})
            else:
                problems.append(f"{mode} says equal, math-verify (both ways round) does not")
        if mode == "math_verify" and strict and not ours:
            rules = tightenings(a, b)
            if rules:
                STATS["math_verify: tightening"] += 1
                STATS.update(f"math_verify: tightening: {rule}" for rule in rules)
                _record("tightenings", {"pair": [a, b], "by": rules})
            else:
                problems.append("math_verify says different, math-verify (both ways round) equal")
    forward, backward = shared_pool().verify_many([(b, a), (a, b)], timeout_s=30.0)
    if forward is not None and backward is not None and forward != backward:
        problems.append(f"worker verdict depends on the reference: {forward} / {backward}")
    if problems:
        entry = {
            "pair": [a, b],
            "problems": problems,
            "math_verify_both_ways": [mv_verify(b, a), mv_verify(a, b)],
        }
        if not collect:
            raise AssertionError(json.dumps(entry, ensure_ascii=False))
        _record("violations", entry)
        STATS["violations"] += 1


def test_equivalence_never_merges_what_math_verify_keeps_apart(matchers) -> None:
    collect = bool(REPORT)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not LONG_RUN,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(answer_pairs())
    def run(pair: tuple[str, str]) -> None:
        check_pair(*pair, matchers, collect)

    started = time.monotonic()
    run()
    if REPORT:
        STATS["distinct pairs"] = len(SEEN)
        STATS["seconds"] = round(time.monotonic() - started)
        summary = {
            "stats": dict(STATS),
            **FINDINGS,
            "improvement_reasons": {i.name: i.reason for i in IMPROVEMENTS},
        }
        with open(REPORT, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=1, ensure_ascii=False)
    assert not FINDINGS["violations"], FINDINGS["violations"][:5]
    assert STATS["pairs"] >= min(EXAMPLES, 50)


def test_the_issue_table_is_what_the_fuzzer_checks(matchers) -> None:
    """The regression pairs of issue 17 through the same property (both modes say different)."""
    for a, b in [
        ("7 = 11a+c", "11a+c"),
        ("a +3z = 0", "0"),
        ("2x + z = 1", "1"),
        ("(3,1)", "\\{1,3\\}"),
        ("(3,1)", "{1,3}"),
        ("32349", "32, 349"),
    ]:
        check_pair(a, b, matchers, collect=False)
        check_pair(b, a, matchers, collect=False)
        assert not any(m.equal(a, b) or m.equal(b, a) for m in matchers.values())
