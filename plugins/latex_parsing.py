"""Two-stage ANTLR parsing for latex2sympy: fast SLL prediction first, full LL only when SLL fails.

math-verify reads LaTeX with latex2sympy, whose ANTLR parser predicts in full-context LL mode. Its
grammar is not SLL, so almost every answer hits a prediction that needs the full context, and the
runtime does not cache full-context predictions: each parse of a new answer re-walks the grammar,
which is most of math-verify's cost on answers it has not seen.

ANTLR's remedy is two-stage parsing. In SLL mode the parser returns the same parse tree that LL
mode would, or it reports a syntax error (ANTLR's documented contract for `PredictionMode.SLL`);
only then is the answer parsed again in LL mode. latex2sympy's error listener raises on the first
syntax error, so a failed SLL attempt ends at once and the second stage sees a fresh parser. Results
are unchanged; `tests/test_latex_parsing.py` checks that on thousands of real answers.

`install()` hooks latex2sympy's parser factory in this process (the math-verify worker calls it at
start-up). Set `COREWARD_SLL_PARSING=0` to keep latex2sympy's own single-stage LL parsing.
`read_both_ways()` parses one answer both ways, for the equivalence checks in tests and benchmarks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MARK = "_coreward_two_stage"
second_stage_runs = 0  # answers parsed again in LL mode in this process (for benchmarks and tests)


class _TwoStageParser:
    """Stands in for a PSParser: `math()` tries SLL prediction, then LL on a fresh parser."""

    def __init__(self, make_parser: Callable[[], Any]) -> None:
        self._make_parser = make_parser

    def math(self) -> Any:
        from antlr4.atn.PredictionMode import PredictionMode

        parser = self._make_parser()
        parser._interp.predictionMode = PredictionMode.SLL
        try:
            return parser.math()
        except Exception:
            global second_stage_runs
            second_stage_runs += 1
            return self._make_parser().math()


def install() -> bool:
    """Make latex2sympy parse in two stages in this process; False when disabled or not applicable."""
    if os.environ.get("COREWARD_SLL_PARSING", "1") == "0":
        return False
    try:
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
    except ImportError:
        return False
    single_stage = getattr(_Latex2Sympy, "create_parser", None)
    if single_stage is None:  # a latex2sympy without the factory: leave it alone
        return False
    if getattr(single_stage, _MARK, False):
        return True

    def create_parser(self: Any, latex_str: str) -> _TwoStageParser:
        return _TwoStageParser(lambda: single_stage(self, latex_str))

    setattr(create_parser, _MARK, True)
    create_parser.single_stage = single_stage  # type: ignore[attr-defined]
    _Latex2Sympy.create_parser = create_parser
    return True


def uninstall() -> None:
    """Restore latex2sympy's own single-stage parsing (for comparisons)."""
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    current = _Latex2Sympy.create_parser
    if getattr(current, _MARK, False):
        _Latex2Sympy.create_parser = current.single_stage  # type: ignore[attr-defined]


@dataclass(frozen=True)
class BothWays:
    """One answer as math-verify reads it with latex2sympy's LL parsing and with two-stage parsing."""

    ll: str  # the parse as comparable text: each extracted item's sympy srepr, or the string itself
    two_stage: str
    second_stage: bool  # whether the two-stage parse needed its LL stage
    ll_cpu_s: float
    two_stage_cpu_s: float


def read_both_ways(answer: str, ll_first: bool = True) -> BothWays:
    """Parse `\\boxed{answer}` as the math-verify worker does, both ways (for checks and benchmarks).

    Both ways share ANTLR's prediction cache, so whichever reads an answer first pays for new cache
    entries: `ll_first` picks the order. Leaves two-stage parsing installed.
    """
    import math_verify.parser as mv_parser
    from math_verify import LatexExtractionConfig, parse
    from sympy import srepr

    def read() -> tuple[str, float]:
        mv_parser.parse_latex_cached.cache_clear()  # math-verify's 20-entry cache would hide the parser
        start = time.process_time()
        result = parse(
            "\\boxed{" + answer + "}",
            extraction_config=[LatexExtractionConfig()],
            parsing_timeout=None,
        )
        seconds = time.process_time() - start
        return repr([item if isinstance(item, str) else srepr(item) for item in result]), seconds

    def read_ll() -> tuple[str, float]:
        uninstall()
        try:
            return read()
        finally:
            install()

    if not install():
        raise RuntimeError(
            "two-stage parsing is off (COREWARD_SLL_PARSING=0) or latex2sympy has no parser factory"
        )
    before = second_stage_runs
    if ll_first:
        (ll, ll_s), (two_stage, two_stage_s) = read_ll(), read()
    else:
        (two_stage, two_stage_s), (ll, ll_s) = read(), read_ll()
    return BothWays(ll, two_stage, second_stage_runs > before, ll_s, two_stage_s)
