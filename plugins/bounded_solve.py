"""Equation solving inside math-verify's comparison, with a CPU budget and a memo (worker processes).

When two equations differ in form, math-verify's last check (`sympy_solve_and_compare`) solves both
with sympy's `solve` and compares the solutions. On most answers that takes milliseconds (median 3 ms
over the 581 equation and inequality references of the shared MATH/OpenRS data), but on a
transcendental equation (`\\tan \\theta = 2\\theta`, `f(x) = \\tan(ax)`) sympy searches for minutes, so
every comparison with such an answer ran into the worker's deadline: "not equal" after the whole
`match_timeout_s`, and a killed and restarted worker. One such problem cost a Co-rewarding-I step of
2,048 responses 8 deadlines (about 45 s).

`install()` replaces the `solve` that math-verify's grader calls with one that
- memoizes results per (equation, symbols): a pair asks for both solutions, and the strict rules ask
  math-verify both ways round, so each answer used to be solved four times per comparison;
- stops a solve after `SOLVE_CPU_BUDGET_S` of CPU time (a profiling timer: the same on a loaded and a
  quiet machine) and remembers that equation as unsolved. Math-verify treats a solve that raises as
  "not shown equal", as it treats a solve that finds different solutions.

The only verdicts this changes are those of equations whose solve needs more than the budget (20 of
those 581 references take over 0.5 s, 4 never finish): they are "not equal" unless math-verify's
earlier checks (same difference of sides, flipped sides) show them equal, where they used to be
whatever sympy found before the deadline. The timer runs only in the main thread of a process that
has `signal.setitimer` (the worker); anywhere else solving is memoized but unbounded.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SOLVE_CPU_BUDGET_S", "SolveOutOfBudget", "bounded", "install"]

SOLVE_CPU_BUDGET_S = 0.5
_MEMO_LIMIT = 4096
_MARK = "_coreward_bounded"


class SolveOutOfBudget(NotImplementedError):
    """sympy did not solve this equation within the CPU budget (now or on an earlier call)."""


class _Expired(BaseException):
    """Raised by the timer inside sympy; a BaseException so that sympy's `except Exception` lets it out."""


_armed = threading.local()


def _on_timer(*_: Any) -> None:  # a signal handler: (signum, frame)
    if getattr(_armed, "on", False):
        raise _Expired


def _can_time() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _run_with_budget(call: Callable[[], Any], budget_s: float) -> Any:
    """call(), or raise SolveOutOfBudget once it has used budget_s of this process's CPU time."""
    previous = signal.signal(signal.SIGPROF, _on_timer)
    try:
        try:
            try:
                _armed.on = True
                signal.setitimer(signal.ITIMER_PROF, budget_s)  # one shot
                return call()
            finally:
                _armed.on = False  # a shot landing before this line is caught just below
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _Expired:
            raise SolveOutOfBudget(f"no solution within {budget_s:g} s of CPU") from None
    finally:
        signal.signal(signal.SIGPROF, previous)


def _key(args: tuple, kwargs: dict) -> Any:
    parts = tuple(frozenset(a) if isinstance(a, (set, frozenset)) else a for a in args)
    key = (parts, tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def bounded(solve: Callable[..., Any], budget_s: float = SOLVE_CPU_BUDGET_S) -> Callable[..., Any]:
    """`solve`, memoized per arguments and stopped after `budget_s` of CPU time where a timer can run."""
    memo: dict[Any, Any] = {}
    unsolved = object()

    def bounded_solve(*args: Any, **kwargs: Any) -> Any:
        key = _key(args, kwargs)
        if key is not None and key in memo:
            found = memo[key]
            if found is unsolved:
                raise SolveOutOfBudget("no solution within the budget (remembered)")
            return list(found)
        try:
            if _can_time():
                result = _run_with_budget(lambda: solve(*args, **kwargs), budget_s)
            else:
                result = solve(*args, **kwargs)
        except SolveOutOfBudget:
            if key is not None:
                _remember(memo, key, unsolved)
            raise
        if key is not None and isinstance(result, list):
            _remember(memo, key, tuple(result))
        return result

    setattr(bounded_solve, _MARK, True)
    bounded_solve.memo = memo  # type: ignore[attr-defined]
    return bounded_solve


def _remember(memo: dict, key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def install(budget_s: float = SOLVE_CPU_BUDGET_S) -> None:
    """Make math-verify's grader solve equations through `bounded` (idempotent)."""
    import math_verify.grader as grader

    if not getattr(grader.solve, _MARK, False):
        grader.solve = bounded(grader.solve, budget_s)
