"""How much does the held-out MATH number move with the grader? exact, hendrycks (the official
validation: verl math.compute_score), normalized and math_verify on the MATH test split.

Every one of the 5,000 references is written the ways a policy writes it (`equivalent_forms` of
bench_grading: `142.0`, `1,000`, `070`, `x = 5`, `\\dfrac`, `0.5`, ...), each inside a response's last
`\\boxed{}`, and graded against the reference by `coreward eval`'s grader under each mode. Two tables:
- per form: the share of right answers each mode accepts, by how the answer is written;
- a simulated policy: right on a share of the problems (--right), writing a right answer as the
  reference is written with probability --as-written and in another equivalent form otherwise, wrong
  answers from bench_grading's `wrong_answers`. The held-out accuracy under each mode, and the move
  in points against hendrycks (what the paper's validation curves would show).

    python benchmarks/match_modes_math.py [--limit 5000] [--right 0.5] [--as-written 0.7] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grading import equivalent_forms, wrong_answers

from coreward_cli.grading import CONVENTIONS, Grader
from coreward_cli.rows import read_file

MATH_TEST = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "math" / "test.parquet"
)
MODES = ("exact", "hendrycks", "normalized", "math_verify")


def form_kind(form: str, reference: str) -> str:
    """A short name for how `form` writes `reference`."""
    if form == reference:
        return "as written"
    for kind, test in (
        ("thousands 1,000", lambda f: "," in f and f.replace(",", "").lstrip("-").isdigit()),
        ("x = v", lambda f: f.startswith("x = ")),
        ("zero-padded 070", lambda f: f.startswith("0") and f.isdigit() and len(f) > 1),
        ("trailing .0 / .", lambda f: f.endswith((".0", ".00", "."))),
        ("a/b", lambda f: "/" in f and "\\" not in f),
        ("\\dfrac", lambda f: "\\dfrac" in f),
        ("\\frac{p}{q}", lambda f: f.startswith("\\frac")),
        ("decimal", lambda f: "." in f),
        ("\\left( \\right)", lambda f: "\\left" in f),
        ("spacing", lambda f: f.replace(" ", "") == reference.replace(" ", "")),
    ):
        if test(form):
            return kind
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=5000)
    parser.add_argument("--right", type=float, default=0.5)
    parser.add_argument("--as-written", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not MATH_TEST.exists():
        sys.exit(f"{MATH_TEST} is absent: this benchmark reads the shared MATH test split")
    references = [
        r["reward_model"]["ground_truth"].strip() for r in read_file(MATH_TEST).rows[: args.limit]
    ]
    convention = CONVENTIONS["math_test"]
    graders = {m: Grader(m) for m in MODES}
    console = Console(width=120)
    started = time.perf_counter()

    accepted: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts: dict[str, int] = defaultdict(int)
    for reference in references:
        for form in equivalent_forms(reference):
            kind = form_kind(form, reference)
            counts[kind] += 1
            for mode, grader in graders.items():
                accepted[kind][mode] += grader.grade([f"\\boxed{{{form}}}"], reference, convention)[
                    1
                ][0]

    table = Table(
        title=f"right answers accepted, by how they are written ({len(references)} MATH test references)"
    )
    table.add_column("written as")
    table.add_column("answers", justify="right")
    for mode in MODES:
        table.add_column(f"{mode} %", justify="right")
    for kind in sorted(counts, key=lambda k: -counts[k]):
        table.add_row(
            kind,
            str(counts[kind]),
            *(f"{100 * accepted[kind][m] / counts[kind]:.1f}" for m in MODES),
        )
    console.print(table)

    rng = random.Random(args.seed)
    right_by_mode = dict.fromkeys(MODES, 0)
    truly_right = 0
    for reference in references:
        if rng.random() < args.right:
            truly_right += 1
            forms = equivalent_forms(reference)
            others = forms[1:]
            answer = (
                reference if rng.random() < args.as_written or not others else rng.choice(others)
            )
        else:
            answer = wrong_answers(reference, rng)[0]
        for mode, grader in graders.items():
            right_by_mode[mode] += grader.grade([f"\\boxed{{{answer}}}"], reference, convention)[1][
                0
            ]
    base = right_by_mode["hendrycks"]
    sim = Table(
        title=f"simulated policy: right on {args.right:.0%} of problems, {args.as_written:.0%} of those as written"
    )
    sim.add_column("eval_match")
    sim.add_column("held-out accuracy %", justify="right")
    sim.add_column("vs hendrycks (pts)", justify="right")
    for mode in MODES:
        sim.add_row(
            mode,
            f"{100 * right_by_mode[mode] / len(references):.2f}",
            f"{100 * (right_by_mode[mode] - base) / len(references):+.2f}",
        )
    sim.add_row("(truly right)", f"{100 * truly_right / len(references):.2f}", "")
    console.print(sim)
    console.print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
