"""Strict equivalence on top of math-verify: its verdicts, minus the two rules that merge what differs.

`math_verify.verify` (which the worker has always called with `strict=True`) still says "equal" for
answers that differ, in two places of its comparison core, `math_verify.grader.sympy_expr_eq`:

- Equations. When the reference is not an equation, a predicted equation is read as its right side,
  whatever its left side ("we follow what the gold format is"): `7 = 11a+c` equals `11a+c`,
  `2x + z = 1` equals `1`. Its test for an assignment (`is_expr_of_only_symbols`) also takes any
  left side made of symbols (`a + b = 5` equals `5` either way round).
- Sets and ordered things. `sympy_deep_compare_set_and_tuple` sorts a tuple's elements when the
  reference is a set (`(3,1)` equals `\\{1,3\\}`), and `sympy_compare_sets` compares an open interval
  `(a,b)` with any two-element set (`(1,3)` equals `\\{1,3\\}`, both ways round).

`strict=False` (variables matched by position) and the set-relation option (`allow_set_relation_comp`)
are not involved: both stay off. Both rules apply at every depth (inside tuples and sets too), and
both depend on which answer is the reference, so a verdict asked one way round differs from the
other: votes compare answers both ways round, and the matcher caches one verdict per pair.

`strict_equal` fixes that at the same depth: while it runs, `sympy_expr_eq` is wrapped (in this
thread only; every other caller in the process gets math-verify unchanged) so that

- an equation or inequality equals something that is not one only when it names a lone variable:
  its left side is a single symbol (`x`, `a_n`, `\\theta`) or function (`f(x)`), or it is a
  chain `a < x < b` around one symbol. `x = 5` equals `5`; `7 = 11a+c` does not equal `11a+c`. An
  inequality against a set is then read as its solution set, whichever side is the reference
  (math-verify does that only when the relation is the reference): `x < 5` equals `(-\\infty, 5)`;
- a set never equals a tuple or an interval. A bare list (`1, 3`: no braces; math-verify reads it as
  a set) is compared with a tuple or interval in its written order: `1, 3` equals `(1,3)`, `3, 1`
  does not; with a set or another list it stays a set (`2, 3` equals `3, 2`, `-2, 2` equals `\\pm 2`);
- the verdict is symmetric: math-verify must say "equal" with either answer as the reference.

Everything else is math-verify's own verdict.
"""

from __future__ import annotations

import re
import threading
from typing import Any

__all__ = ["install", "is_relation", "names_variable", "strict_equal", "written_as_set"]

_MARK = "_coreward_strict"
_state = threading.local()  # .active: strict_equal is running in this thread
_SIZING = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])|\s+")
_SET_WORDS = re.compile(r"\\(?:cup|cap|setminus|emptyset|varnothing)(?![a-zA-Z])")


def is_relation(expr: Any) -> bool:
    from sympy.core.relational import Relational
    from sympy.logic.boolalg import And

    if isinstance(expr, Relational):
        return True
    args = getattr(expr, "_unsorted_args", None) or getattr(expr, "args", ())
    return isinstance(expr, And) and len(args) > 0 and all(isinstance(a, Relational) for a in args)


def _lone(expr: Any) -> bool:
    """A single variable: a symbol (`x`, `a_n`, `\\theta`) or an undefined function's value (`f(x)`)."""
    from sympy import Symbol
    from sympy.core.function import AppliedUndef

    return isinstance(expr, (Symbol, AppliedUndef))


def names_variable(relation: Any) -> bool:
    """Whether an equation or inequality states a lone variable's value: `x = 5`, `y = 2x+1`, `f(x) = x^2`,
    `x \\le 3`, `1 < x < 2` (a chain through one symbol), `x = y = 2` (a chain from one)."""
    from sympy.core.relational import Relational
    from sympy.logic.boolalg import And

    if isinstance(relation, Relational):
        return _lone(relation.lhs)
    if not isinstance(relation, And):
        return False
    parts = list(getattr(relation, "_unsorted_args", None) or relation.args)
    if not parts or not all(isinstance(p, Relational) for p in parts):
        return False
    # x = 2 + 3 = 5: math-verify keeps the first left side and the last right side
    if _lone(parts[0].lhs):
        return True
    # a < x < b: each link shares the middle symbol, the outer ends are free of symbols
    if len(parts) == 2 and parts[0].rhs == parts[1].lhs and _lone(parts[0].rhs):
        return not parts[0].lhs.free_symbols and not parts[1].rhs.free_symbols
    return False


def written_as_set(text: str) -> bool:
    """Whether an answer is written as a set (braces, or set operations), not as a bare list (`1, 3`)."""
    s = _SIZING.sub("", text)
    return s.startswith("\\{") or s.startswith("{") or bool(_SET_WORDS.search(s))


def _ordered(expr: Any) -> bool:
    from sympy import Interval, Tuple

    return isinstance(expr, (Tuple, Interval))


def _a_set(expr: Any) -> bool:
    from sympy import FiniteSet, S

    return isinstance(expr, FiniteSet) or expr is S.EmptySet


def _strict_sympy_expr_eq(original: Any) -> Any:
    def sympy_expr_eq(
        gold: Any,
        pred: Any,
        float_rounding: int,
        numeric_precision: int,
        allow_set_relation_comp: bool = False,
        strict: bool = True,
    ) -> bool:
        if getattr(_state, "active", False):
            gold_relation, pred_relation = is_relation(gold), is_relation(pred)
            if gold_relation != pred_relation:
                if not names_variable(gold if gold_relation else pred):
                    return False  # 7 = 11a+c is not 11a+c; 2x + z = 1 is not 1
                if pred_relation:  # the relation as the reference: x < 5 read as its solution set
                    gold, pred = pred, gold
            # a set inside a tuple or set (bare lists are top-level only: strict_equal orders them)
            elif (_a_set(gold) and _ordered(pred)) or (_ordered(gold) and _a_set(pred)):
                return False
        return original(
            gold, pred, float_rounding, numeric_precision, allow_set_relation_comp, strict
        )

    setattr(sympy_expr_eq, _MARK, True)
    sympy_expr_eq.original = original  # type: ignore[attr-defined]
    return sympy_expr_eq


def install() -> None:
    """Wrap math-verify's comparison core; the wrapper is inert outside `strict_equal` (idempotent)."""
    import math_verify.grader as grader

    if not getattr(grader.sympy_expr_eq, _MARK, False):
        grader.sympy_expr_eq = _strict_sympy_expr_eq(grader.sympy_expr_eq)


def _as_written(item: Any) -> Any:
    """A bare list as the tuple it was written as (math-verify keeps the written order aside)."""
    from sympy import Tuple

    return Tuple(*item._unsorted_args)


def _as_list(item: Any, text: str) -> bool:
    """A bare list that math-verify read as a set without merging any of its items (`1, 1` is not)."""
    unsorted = getattr(item, "_unsorted_args", None)
    return not written_as_set(text) and unsorted is not None and len(unsorted) == len(item.args)


def _top_level(gold: Any, gold_text: str, pred: Any, pred_text: str) -> tuple[Any, Any] | None:
    """The pair as the strict rules compare it at the top level, or None when they differ outright."""
    if _a_set(gold) and _ordered(pred):
        if not _as_list(gold, gold_text):
            return None  # \{1,3\} is not (3,1), nor the interval (1,3)
        return _as_written(gold), pred  # 1, 3 against (1,3): in written order
    if _ordered(gold) and _a_set(pred):
        if not _as_list(pred, pred_text):
            return None
        return gold, _as_written(pred)
    return gold, pred


def strict_equal(gold: list, pred: list, gold_text: str = "", pred_text: str = "") -> bool:
    """Whether two answers, as `math_verify.parse` read them, are equal under the strict rules above.

    gold_text and pred_text are the answers as written (to tell a set in braces from a bare list).
    Symmetric: the same verdict with the two answers swapped. Runs math-verify with its signal
    timeouts off: call it where something else bounds the time (the worker process).
    """
    from math_verify import verify
    from sympy import Basic
    from sympy.matrices import MatrixBase

    install()
    symbolic = (Basic, MatrixBase)
    for g in gold:
        for p in pred:
            if isinstance(g, str) or isinstance(p, str):
                if (
                    isinstance(g, str)
                    and isinstance(p, str)
                    and g.strip()
                    and g.strip() == p.strip()
                ):
                    return True
                continue
            if not (isinstance(g, symbolic) and isinstance(p, symbolic)):
                continue
            pair = _top_level(g, gold_text, p, pred_text)
            if pair is None:
                continue
            _state.active = True
            try:
                a, b = pair
                if verify(a, b, timeout_seconds=None) and verify(b, a, timeout_seconds=None):
                    return True
            finally:
                _state.active = False
    return False
