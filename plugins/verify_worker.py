"""A math-verify worker process: reads JSON requests on stdin, writes verdicts on stdout.

Started by `coreward_plugins.verify_pool` as `python verify_worker.py`. Each request line is
`{"id": n, "gold": "...", "pred": "..."}`; each answer line is `{"id": n, "equal": bool}`. The parent
kills this process when a verdict is late (sympy cannot be interrupted inside a thread), so the worker
itself needs no timeout: math-verify runs with its signal timeouts off. Before math-verify's simplify(),
a cheap probe (`clearly_different`) settles plain expressions that take different values at a point.
It only uses the LaTeX
extraction (latex2sympy); math-verify's plain-expression extraction (sympy `parse_expr`, which evaluates
Python) is never enabled. Memory is capped, and the worker exits when its parent is gone.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
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


PROBE_POINTS = ((2, 3, 5, 7, 11, 13), (3, 7, 2, 13, 5, 11))  # positive integers: valid for real, positive
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
    if any(g.strip() == p.strip() for g in gold if isinstance(g, str) for p in pred if isinstance(p, str)):
        return False
    try:
        return _values_differ(gold_exprs[0], pred_exprs[0])
    except Exception:  # noqa: BLE001 - the probe is only a shortcut: when in doubt, ask math-verify
        return False


def _values_differ(a, b) -> bool:  # sympy expressions
    from sympy import Expr, Float, Integer, Symbol, UnevaluatedExpr
    from sympy.matrices.expressions import MatrixExpr

    for e in (a, b):
        if not isinstance(e, Expr) or isinstance(e, (Symbol, MatrixExpr)) or e.has(Float) or e.has(UnevaluatedExpr):
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


def main() -> None:
    _confine()
    logging.disable(logging.CRITICAL)  # math-verify warns about its disabled timeouts on every start
    from math_verify import LatexExtractionConfig, parse, verify

    latex_only = [LatexExtractionConfig()]

    @functools.lru_cache(maxsize=4096)
    def parsed(answer: str) -> list:
        return parse("\\boxed{" + answer + "}", extraction_config=latex_only, parsing_timeout=None)

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from sympy or math-verify must not garble the protocol

    def answer(payload: dict) -> None:
        out.write(json.dumps(payload).encode("ascii") + b"\n")
        out.flush()

    answer({"ready": True})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            gold, pred = parsed(request["gold"]), parsed(request["pred"])
            if not gold or not pred:
                equal = False
            else:
                equal = not clearly_different(gold, pred) and bool(verify(gold, pred, timeout_seconds=None))
        except Exception:  # noqa: BLE001 - RecursionError, MemoryError, sympy internals: not provably equal
            equal = False
        answer({"id": request["id"], "equal": equal})


if __name__ == "__main__":
    main()
