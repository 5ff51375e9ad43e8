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
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
        except Exception:  # noqa: BLE001 - a syntax error under SLL: maybe the input, maybe SLL's weakness
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
