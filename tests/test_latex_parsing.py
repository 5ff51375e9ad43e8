"""Two-stage LaTeX parsing (SLL, then LL) reads every answer exactly as latex2sympy's LL parsing does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coreward_plugins import latex_parsing
from coreward_plugins.verify_pool import restart_shared_pool, shared_pool

ROOT = Path(__file__).resolve().parents[1]

# Answers in the shapes math-verify meets: some SLL reads alone, some (powers of a letter, sums with
# a tuple) only LL reads, some are not LaTeX at all.
ANSWERS = [
    "42",
    "-7",
    "0.125",
    "\\frac{1}{2}",
    "\\dfrac{3}{4}",
    "\\frac12",
    "2\\sqrt{3}",
    "\\frac{\\sqrt{6}}{3}",
    "3\\pi",
    "\\frac{5\\pi}{6}",
    "4 - 3i",
    "(1, -2)",
    "\\left( 2, \\frac{\\pi}{3} \\right)",
    "[0, 1)",
    "(-\\infty, 3] \\cup [5, \\infty)",
    "\\{1, 2, 3\\}",
    "1, 2",
    "x^2 + 3x - 4",
    "x^{2}",
    "\\pi^2",
    "y = 2x + 1",
    "a^2b",
    "(x - 1)(x + 2)",
    "t \\le 4",
    "\\text{Monday}",
    "-\\text{east}",
    "90^\\circ",
    "25\\%",
    "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
    "\\log_2 8",
    "\\sin x + \\cos x",
    "e^{i\\pi}",
    "3 \\pm \\sqrt{2}",
    "(2, 3) + 1",
    "\\sqrt[3]{7}",
    "1010_2",
    "\\binom{5}{2}",
    "4!",
    "\\frac{x+1}{x-1}",
    "not latex at all ))",
]


def test_two_stage_parses_like_ll_and_reparses_only_what_sll_rejects() -> None:
    results = {answer: latex_parsing.read_both_ways(answer) for answer in ANSWERS}
    assert {a: r.ll for a, r in results.items()} == {a: r.two_stage for a, r in results.items()}
    assert (
        results["x^2 + 3x - 4"].second_stage and results["\\pi^2"].second_stage
    )  # SLL rejects a letter's power
    assert (
        not results["\\frac{1}{2}"].second_stage and not results["(1, -2)"].second_stage
    )  # SLL alone reads these
    assert (
        "Pow" in results["x^{2}"].two_stage and "Rational(1, 2)" in results["\\frac12"].two_stage
    )  # really parsed


def test_install_is_idempotent_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    assert latex_parsing.install() and latex_parsing.install()
    hooked = _Latex2Sympy.create_parser
    assert hooked.single_stage.__name__ == "create_parser" and not hasattr(
        hooked.single_stage, "single_stage"
    )
    latex_parsing.uninstall()
    assert not getattr(_Latex2Sympy.create_parser, "_coreward_two_stage", False)
    monkeypatch.setenv("COREWARD_SLL_PARSING", "0")
    assert not latex_parsing.install()
    assert not getattr(_Latex2Sympy.create_parser, "_coreward_two_stage", False)
    monkeypatch.delenv("COREWARD_SLL_PARSING")
    assert latex_parsing.install()


def test_math_verify_workers_parse_in_two_stages_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        restart_shared_pool()
        assert shared_pool().verify_many([("x^2+2x", "x(x+2)")], 30.0) == [True]
        assert shared_pool().stats.parsing == "two-stage"
        monkeypatch.setenv("COREWARD_SLL_PARSING", "0")
        restart_shared_pool()
        assert shared_pool().verify_many([("x^2+2x", "x(x+2)")], 30.0) == [True]
        assert shared_pool().stats.parsing == "ll"
    finally:
        monkeypatch.delenv("COREWARD_SLL_PARSING", raising=False)
        restart_shared_pool()


def run_bench(data: Path, *args: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_sll_parsing.py"),
            "--data",
            str(data),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    return json.loads(done.stdout)


def test_real_reference_answers_parse_alike(shared_data: Path) -> None:
    result = run_bench(shared_data, "--limit", "150")
    assert result["differing"] == []
    assert result["total"]["answers"] >= 800 and result["total"]["second_stage"] >= 10


@pytest.mark.slow
def test_every_reference_answer_of_the_real_data_parses_alike(shared_data: Path) -> None:
    result = run_bench(shared_data)
    assert result["differing"] == []
    assert result["total"]["answers"] >= 8000
