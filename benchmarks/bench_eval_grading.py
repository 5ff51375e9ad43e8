"""How fast `coreward eval` grades: responses per second for each match mode.

A results file of realistic size (500 questions x 8 responses) is built from MATH500's
reference answers (../shared/data/bench/math500.json, or a synthetic stand-in where that is
absent): each response states the reference in the same or an equivalent form (\\dfrac, a
decimal, `x =`, units, spacing), a wrong answer, or no answer at all. Every mode grades the
same responses; the table shows speed and the share graded right side by side.

    python benchmarks/bench_eval_grading.py [--questions 500] [--n 8] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import random
import re
import time
from fractions import Fraction
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coreward_cli.benchdata import load_benchmark
from coreward_cli.evaluate import Record, summarize
from coreward_cli.grading import LATEX, Grader

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bench"
MODES = ["exact", "normalized", "math_verify"]


def equivalent_forms(answer: str) -> list[str]:
    """Ways a model writes the same answer."""
    forms = [answer, f" {answer} ", f"x = {answer}" if "=" not in answer else answer]
    if "\\frac" in answer:
        forms.append(answer.replace("\\frac", "\\dfrac"))
    match = re.fullmatch(r"\\frac\{(-?\d+)\}\{(\d+)\}", answer)
    if match:
        value = Fraction(int(match.group(1)), int(match.group(2)))
        forms += [f"{match.group(1)}/{match.group(2)}", f"{float(value):.6g}"]
    if re.fullmatch(r"-?\d+", answer):
        forms += [f"{answer}.0", f"{answer}\\text{{ units}}", f"{int(answer):,}"]
    return forms


def wrong_forms(answer: str, others: list[str], rng: random.Random) -> list[str]:
    wrong = [rng.choice(others)]
    if re.fullmatch(r"-?\d+", answer):
        wrong.append(str(int(answer) + rng.choice([-1, 1, 10])))
    return wrong


def build_records(references: list[str], n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    records = []
    for i, ref in enumerate(references):
        responses = []
        for _ in range(n):
            roll = rng.random()
            if roll < 0.55:
                answer = rng.choice(equivalent_forms(ref))
            elif roll < 0.9:
                answer = rng.choice(wrong_forms(ref, references, rng))
            else:
                responses.append("Let me think about this step by step... I am not sure.")
                continue
            responses.append(
                f"We compute step by step and find the result.\nThe final answer is $\\boxed{{{answer}}}$."
            )
        records.append(Record("math500", i, f"question {i}", ref, responses, [], [], [None] * n))
    return records


def synthetic_references(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = [
        lambda: str(rng.randint(0, 2000)),
        lambda: f"\\frac{{{rng.randint(1, 30)}}}{{{rng.randint(2, 40)}}}",
        lambda: f"{rng.randint(2, 9)}\\sqrt{{{rng.choice([2, 3, 5, 7])}}}",
        lambda: f"({rng.randint(-9, 9)}, {rng.randint(-9, 9)})",
        lambda: f"x^2+{rng.randint(1, 9)}x",
    ]
    return [rng.choice(kinds)() for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    console = Console(width=max(Console().width, 110))
    if (args.data_dir / "math500.json").is_file():
        references = [it.reference for it in load_benchmark("math500", args.data_dir).items][
            : args.questions
        ]
        source = f"MATH500 answers ({args.data_dir})"
    else:
        references = synthetic_references(args.questions)
        source = "synthetic answers (shared data absent)"
    base = build_records(references, args.n)
    total = sum(len(r.responses) for r in base)
    console.print(f"{len(base)} questions x {args.n} responses = {total} responses, from {source}")

    table = Table(title="coreward eval grading speed (one process)")
    for col in [
        "match",
        "grade s",
        "responses/s",
        "x exact",
        "summary s (maj@n too)",
        "graded right %",
        f"maj@{args.n} %",
    ]:
        table.add_column(col, justify="left" if col == "match" else "right")
    exact_rate = None
    for mode in MODES:
        grader = Grader(mode)
        grader.grade(
            ["\\boxed{1}"], "1", LATEX
        )  # start-up (math-verify's worker pool) outside the timing
        started = time.perf_counter()
        graded = []
        for r in base:
            answers, correct = grader.grade(r.responses, r.reference, LATEX)
            graded.append(
                Record(
                    r.benchmark,
                    r.index,
                    r.question,
                    r.reference,
                    r.responses,
                    answers,
                    correct,
                    r.n_tokens,
                )
            )
        grade_s = time.perf_counter() - started
        started = time.perf_counter()
        metrics = summarize(graded, grader)
        summary_s = time.perf_counter() - started
        rate = total / grade_s
        exact_rate = exact_rate or rate
        table.add_row(
            mode,
            f"{grade_s:.2f}",
            f"{rate:,.0f}",
            f"{rate / exact_rate:.2f}",
            f"{summary_s:.2f}",
            f"{100 * metrics[f'avg@{args.n}']:.1f}",
            f"{100 * metrics[f'maj@{args.n}']:.1f}",
        )
    console.print(table)
    console.print(
        "About 55% of responses state the reference (in some form), 35% a wrong answer, 10% none."
    )


if __name__ == "__main__":
    main()
