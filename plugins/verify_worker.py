"""A math-verify worker process: reads JSON requests on stdin, writes verdicts on stdout.

Started by `coreward_plugins.verify_pool` as `python verify_worker.py`. Each request line is
`{"id": n, "gold": "...", "pred": "..."}`; each answer line is `{"id": n, "equal": bool}`. The parent
kills this process when a verdict is late (sympy cannot be interrupted inside a thread), so the worker
itself needs no timeout: math-verify runs with its signal timeouts off. It only uses the LaTeX
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
            equal = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
        except Exception:  # RecursionError, MemoryError, sympy internals: not provably equal
            equal = False
        answer({"id": request["id"], "equal": equal})


if __name__ == "__main__":
    main()
