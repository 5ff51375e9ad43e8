"""A math-verify worker process: reads JSON requests on stdin, writes verdicts on stdout.

Started by `coreward_plugins.verify_pool` as `python verify_worker.py`. Each request line is
`{"id": n, "pairs": [[gold, pred], ...], "first": bool}`; the worker answers one line per pair, in order,
`{"id": n, "i": k, "equal": bool}`, and with "first" stops after the first equal pair, so a vote's new
answer goes against every cluster representative in one round trip. `{"id": n, "warm": true}` is
answered `{"id": n, "warm": true}` once the warm-up (below) is done. Parsed answers are cached (LRU).
LaTeX is parsed in two stages (`coreward_plugins.latex_parsing`); the first line the worker writes,
`{"ready": true, "parsing": "two-stage"}`, says so ("ll" with COREWARD_SLL_PARSING=0).

Verdicts are math-verify's, made strict and symmetric by `coreward_plugins.strict_compare` (an
equation equals a bare expression only when it names a lone variable; a set never equals a tuple or
an interval; either answer may be the reference).

The parent kills this process when a verdict is late (sympy cannot be interrupted inside a thread), so
the worker itself needs no timeout: math-verify runs with its signal timeouts off. Before math-verify's
simplify(), a cheap probe (`clearly_different`) settles plain expressions that take different values at
a point, and equations are solved under a CPU budget, memoized (`coreward_plugins.bounded_solve`). Only
the LaTeX extraction (latex2sympy) is used; math-verify's plain-expression extraction
(sympy `parse_expr` on the whole answer, which evaluates Python) is never enabled. Memory is capped, and
the worker exits when its parent is gone.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time

MEMORY_CAP_BYTES = 3 * 1024**3


def _confine() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    parent = os.getppid()

    def watch_parent() -> None:  # exit when orphaned, even in the middle of a long sympy call
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()


PROBE_POINTS = (
    (2, 3, 5, 7, 11, 13),
    (3, 7, 2, 13, 5, 11),
)  # positive integers: valid for real, positive
# and integer symbols alike


def clearly_different(gold: list, pred: list) -> bool:
    """True when the two parsed answers are plain expressions that take different values at a probe point.

    For such pairs math-verify can only answer False (its string, numeric and simplify checks all need
    a zero difference), but its simplify() may take a long time to find that out. Sets, tuples,
    relations, matrices, bare symbols, floats (compared rounded) and percentages are left to math-verify.
    """
    gold_exprs = [g for g in gold if not isinstance(g, str)]
    pred_exprs = [p for p in pred if not isinstance(p, str)]
    if len(gold_exprs) != 1 or len(pred_exprs) != 1:
        return False
    if any(
        g.strip() == p.strip()
        for g in gold
        if isinstance(g, str)
        for p in pred
        if isinstance(p, str)
    ):
        return False
    try:
        return _values_differ(gold_exprs[0], pred_exprs[0])
    except Exception:
        return False


def _values_differ(a, b) -> bool:  # sympy expressions
    from sympy import Expr, Float, Integer, Symbol, UnevaluatedExpr
    from sympy.matrices.expressions import MatrixExpr

    for e in (a, b):
        if (
            not isinstance(e, Expr)
            or isinstance(e, (Symbol, MatrixExpr))
            or e.has(Float)
            or e.has(UnevaluatedExpr)
        ):
            return False
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    for point in PROBE_POINTS:
        values = {s: Integer(point[i % len(point)]) for i, s in enumerate(symbols)}
        va, vb = a.xreplace(values).evalf(30), b.xreplace(values).evalf(30)
        if not (va.is_number and vb.is_number) or va.has(Symbol) or vb.has(Symbol):
            return False
        difference, scale = abs(va - vb), max(Integer(1), abs(va), abs(vb))
        if not (difference.is_comparable and scale.is_comparable):
            return False
        if difference > scale * 1e-9:
            return True
    return False


# Answers in the shapes models write (none taken from any benchmark), parsed and compared while the worker
# is idle. latex2sympy's ANTLR parser caches its prediction automaton per process: the first parse of a
# new shape of answer walks the full grammar (tens to hundreds of ms), later ones reuse it (a few ms).
# sympy and mpmath also load parts of themselves on first use. Warming them up front, between requests,
# keeps those one-time costs out of the first real comparisons.
WARM_UP_ANSWERS = (
    "7",
    "-12",
    "3.25",
    "\\frac{5}{9}",
    "-\\dfrac{7}{4}",
    "\\sqrt{6}",
    "4\\sqrt{5}",
    "\\frac{\\sqrt{7}}{3}",
    "\\frac{3}{\\sqrt{11}}",
    "2\\pi",
    "\\frac{3\\pi}{4}",
    "\\pi/6",
    "5 + 2i",
    "-3 - 4i",
    "(2, -5)",
    "\\left( 6, \\frac{\\pi}{5} \\right)",
    "(1, 4, -2)",
    "[3, 8)",
    "(-\\infty, 4]",
    "(-3, 2) \\cup (5, \\infty)",
    "\\{3, 4\\}",
    "y^3 - 4y + 2",
    "3t(t-1)",
    "(y+2)^3",
    "m + n",
    "2a - b",
    "y = 3x - 2",
    "k \\le 5",
    "1011_2",
    "\\text{Monday}",
    "45^\\circ",
    "12\\%",
    "\\begin{pmatrix} 2 \\\\ -1 \\end{pmatrix}",
    "\\log_3 9",
    "\\sin 30^\\circ",
    "e^{2}",
    "4, 6, 9",
    "\\infty",
    "2 \\pm \\sqrt{3}",
    "3 \\cdot 5",
    "\\frac{a+b}{2}",
    "x^{2} + y^{2} = 9",
    "\\sqrt[3]{4}",
    "\\dfrac{\\sqrt{3}}{2}",
    "6!",
    "\\binom{6}{2}",
)
WARM_UP_PAIRS = (  # comparisons that take sympy's simplify, set, interval, tuple and probe paths
    ("3t(t-1)", "3t^2-3t"),
    ("\\frac{3}{\\sqrt{11}}", "\\frac{3\\sqrt{11}}{11}"),
    ("\\{3, 4\\}", "\\{4, 3\\}"),
    ("[3, 8)", "[3, 8]"),
    ("(2, -5)", "(2, 5)"),
    ("5 + 2i", "2i + 5"),
    ("y^3 - 4y + 2", "y^3 - 4y + 3"),
    ("\\frac{3\\pi}{4}", "135^\\circ"),
    ("4\\sqrt{5}", "\\sqrt{80}"),
    ("m + n", "n + m"),
    (
        "y^2 + 5y",
        "y(y + 5)",
    ),  # sympy's simplify(), which imports sympy.physics on first use (~0.2 s)
)


def compare(gold: list, pred: list, gold_text: str = "", pred_text: str = "") -> bool:
    """The strict verdict (`coreward_plugins.strict_compare`) on two parsed answers, after the value
    probe; gold_text and pred_text are the answers as written. Symmetric in gold and pred."""
    from coreward_plugins.strict_compare import strict_equal

    if not gold or not pred:
        return False
    return not clearly_different(gold, pred) and strict_equal(gold, pred, gold_text, pred_text)


class _Requests:
    """Request lines from stdin, with a non-blocking check for a pending request."""

    def __init__(self) -> None:
        self._buffer = b""

    def pending(self) -> bool:
        import select

        return b"\n" in self._buffer or bool(select.select([0], [], [], 0)[0])

    def next(self) -> bytes | None:
        while b"\n" not in self._buffer:
            chunk = os.read(0, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


def main() -> None:
    _confine()
    logging.disable(
        logging.CRITICAL
    )  # math-verify warns about its disabled timeouts on every start
    from math_verify import LatexExtractionConfig, parse

    from coreward_plugins import bounded_solve, strict_compare
    from coreward_plugins.latex_parsing import install

    parsing = "two-stage" if install() else "ll"
    strict_compare.install()
    if os.environ.get("COREWARD_BOUNDED_SOLVE", "1") != "0":  # "0": sympy's solve as shipped
        bounded_solve.install()  # a transcendental equation no longer holds the worker to its deadline
    latex_only = [LatexExtractionConfig()]

    @functools.lru_cache(maxsize=4096)
    def parsed(answer: str) -> list:
        return parse("\\boxed{" + answer + "}", extraction_config=latex_only, parsing_timeout=None)

    def judge(gold: str, pred: str) -> bool:
        try:
            return compare(parsed(gold), parsed(pred), gold, pred)
        except Exception:
            return False

    warm_up = [functools.partial(parsed, a) for a in WARM_UP_ANSWERS]
    warm_up += [functools.partial(judge, g, p) for g, p in WARM_UP_PAIRS]
    warm_up.reverse()  # popped from the end
    if os.environ.get("COREWARD_VERIFY_WARM_UP", "1") == "0":
        warm_up.clear()

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from sympy or math-verify must not garble the protocol

    def answer(payload: dict) -> None:
        out.write(json.dumps(payload).encode("ascii") + b"\n")
        out.flush()

    answer({"ready": True, "parsing": parsing})
    requests = _Requests()
    while True:
        if warm_up and not requests.pending():  # one small step at a time, only while idle
            try:
                warm_up.pop()()
            except Exception:
                pass
            continue
        line = requests.next()
        if line is None:
            return
        request = json.loads(line)
        if request.get("warm"):  # finish warming up, then say so
            while warm_up:
                try:
                    warm_up.pop()()
                except Exception:
                    pass
            answer({"id": request["id"], "warm": True})
            continue
        # {"id": n, "pairs": [[gold, pred], ...], "first": bool}: one verdict line per pair, in order,
        # stopping after the first equal pair when "first" is set
        for i, (gold, pred) in enumerate(request["pairs"]):
            equal = judge(gold, pred)
            answer({"id": request["id"], "i": i, "equal": equal})
            if equal and request.get("first"):
                break


if __name__ == "__main__":
    main()
