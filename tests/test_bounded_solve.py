"""Equation solving in the math-verify worker: memoized, and stopped after a CPU budget."""

from __future__ import annotations

import threading

import pytest

from coreward_plugins.answers import AnswerMatcher
from coreward_plugins.bounded_solve import SolveOutOfBudget, bounded


class Counting:
    """A stand-in for sympy's solve: counts its calls; `spin` keeps it busy until stopped."""

    def __init__(self, spin: bool = False) -> None:
        self.calls = 0
        self.spin = spin

    def __call__(self, equation, symbols):
        self.calls += 1
        while self.spin:
            pass
        return [{s: equation} for s in sorted(symbols)]


def test_a_solve_past_its_cpu_budget_is_stopped_and_remembered() -> None:
    spinning = Counting(spin=True)
    solve = bounded(spinning, budget_s=0.05)
    with pytest.raises(SolveOutOfBudget):
        solve("tan(t) - 2*t", {"t"})
    with pytest.raises(SolveOutOfBudget):  # remembered: not tried again
        solve("tan(t) - 2*t", {"t"})
    assert spinning.calls == 1
    assert isinstance(SolveOutOfBudget("x"), NotImplementedError)  # math-verify catches Exception


def test_results_are_memoized_per_equation_and_symbols() -> None:
    counting = Counting()
    solve = bounded(counting)
    first = solve("x - 2", {"x"})
    assert solve("x - 2", {"x"}) == first == [{"x": "x - 2"}]
    first.append("changed by a caller")
    assert solve("x - 2", {"x"}) == [{"x": "x - 2"}]  # each call gets its own list
    assert counting.calls == 1
    solve("x - 2", {"y"})
    solve("x - 3", {"x"})
    assert counting.calls == 3


def test_off_the_main_thread_solving_is_memoized_without_a_timer() -> None:
    counting = Counting()
    solve = bounded(counting, budget_s=0.05)
    results: list = []
    worker = threading.Thread(target=lambda: results.extend([solve("x", {"x"}), solve("x", {"x"})]))
    worker.start()
    worker.join()
    assert results == [[{"x": "x"}], [{"x": "x"}]]
    assert counting.calls == 1


def test_the_worker_gives_equations_a_prompt_verdict() -> None:
    pytest.importorskip("math_verify")
    # sympy's unbounded solve runs for tens of seconds on these: the deadline would stop it (a timeout);
    # with the budget each equation costs at most 0.5 s of CPU, well inside the deadline even when loaded
    matcher = AnswerMatcher("math_verify", timeout_s=10)
    # tan(t) = 3t has no closed-form solution: sympy's solve used to search until the deadline
    assert not matcher.equal(r"\tan \theta = 3\theta", r"-\tan \theta = 2\theta")
    assert not matcher.equal(r"\tan \theta = 2\theta + 1", r"\tan \theta = 2\theta")
    # equations that only solving shows equal still are
    assert matcher.equal("2y = 4x + 2", "y = 2x + 1")
    assert matcher.equal("3x + 3y = 9", "x + y = 3")
    assert not matcher.equal("2y = 4x + 2", "y = 2x + 2")
    assert matcher.stats.timeouts == 0
