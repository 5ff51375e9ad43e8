"""A side for tests/test_bench_helpers.py's check of bench_vs_trl's turns (not a test module):
`steps` steps of `seconds` each, every step inside its turn; returns each step's wall-clock span."""

from __future__ import annotations

import time


def sleeper(steps: int, seconds: float, fail_at: int = -1, *, turn) -> list[tuple[float, float]]:
    spans = []
    for k in range(steps):
        turn.begin()
        try:
            if k == fail_at:
                raise ValueError(f"failed at step {k}")
            started = time.time()
            time.sleep(seconds)
            spans.append((started, time.time()))
        finally:
            turn.end()
    return spans
