"""Does two-stage (SLL, then LL) parsing change what math-verify reads, and how much faster is it?

Parses every distinct reference answer of the data sets under ../shared/data (MATH train and test,
DAPO, OpenRS, and the benchmarks: MATH500, AIME, AMC, Minerva, OlympiadBench, GSM8K) the way the
math-verify worker does, `parse("\\boxed{" + answer + "}")` with LaTeX extraction, once with
latex2sympy's own LL prediction and once with `coreward_plugins.latex_parsing` installed, and compares
the results exactly (sympy `srepr` of every extracted item). Prints the count of answers whose parse
differs (the claim is zero), how many needed the LL second stage, and the CPU time of each way.

Both ways share ANTLR's prediction cache (the DFA), so whichever parses an answer first pays for the new
cache entries: the first way alternates from one answer to the next, and each way is timed in CPU time.

    python benchmarks/bench_sll_parsing.py [--data DIR] [--limit N] [--json]

Exit status 1 when any answer parses differently, 2 when there is nothing to compare.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coreward_plugins import latex_parsing

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def reference_answers(data: Path = DATA) -> dict[str, list[str]]:
    """Distinct reference answers per data set, in file order."""
    import pyarrow.parquet as pq

    sets: dict[str, list[str]] = {}
    for path in sorted((data / "train").glob("*/*.parquet")):
        if "rephrased" in path.name:
            continue  # the same answers as the original file, row for row
        rows = pq.read_table(path, columns=["reward_model"]).column("reward_model").to_pylist()
        sets[f"{path.parent.name}/{path.stem}"] = [str(r["ground_truth"]) for r in rows]
    for path in sorted((data / "bench").glob("*.json")):
        sets[path.stem] = [str(item["answer"]) for item in json.loads(path.read_text())]
    for path in sorted((data / "bench").glob("*.jsonl")):
        field = {"olympiadbench": "final_answer", "minerva_math": None, "gsm8k": None}.get(
            path.stem, "answer"
        )
        if field is None:
            continue  # worked solutions, not final answers
        answers = []
        for line in path.read_text().splitlines():
            value = json.loads(line)[field]
            answers += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        sets[path.stem] = answers
    seen: set[str] = set()
    distinct: dict[str, list[str]] = {}
    for name, answers in sets.items():
        distinct[name] = [
            a for a in dict.fromkeys(answers) if a.strip() and not (a in seen or seen.add(a))
        ]
    return distinct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DATA, help="a folder laid out like ../shared/data"
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="at most this many answers per data set (0: all)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # math-verify warns once per call that its own timeout is off
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 150)
    if not latex_parsing.install():
        console.print(
            "two-stage parsing is not available here (COREWARD_SLL_PARSING=0 or no latex2sympy)"
        )
        sys.exit(2)
    sets = reference_answers(args.data)
    if not any(sets.values()):
        console.print(f"no reference answers under {args.data} (train/*/*.parquet, bench/*.json*)")
        sys.exit(2)
    rows, differing = [], []
    for name, answers in sets.items():
        answers = answers[: args.limit] if args.limit else answers
        ll_s = two_stage_s = 0.0
        second_stage = 0
        for i, answer in enumerate(answers):
            both = latex_parsing.read_both_ways(
                answer, ll_first=i % 2 == 0
            )  # alternate who pays first
            ll_s, two_stage_s = ll_s + both.ll_cpu_s, two_stage_s + both.two_stage_cpu_s
            second_stage += both.second_stage
            if both.ll != both.two_stage:
                differing.append(
                    {"set": name, "answer": answer, "ll": both.ll, "two_stage": both.two_stage}
                )
        rows.append(
            {
                "set": name,
                "answers": len(answers),
                "second_stage": second_stage,
                "ll_cpu_s": ll_s,
                "two_stage_cpu_s": two_stage_s,
                "differing": sum(1 for d in differing if d["set"] == name),
            }
        )
    total = {
        k: sum(r[k] for r in rows)
        for k in ("answers", "second_stage", "ll_cpu_s", "two_stage_cpu_s")
    }
    result = {"rows": rows, "total": total, "differing": differing}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        table = Table(
            title="math-verify parse of distinct reference answers: LL vs two-stage (SLL, then LL)"
        )
        for column in (
            "data set",
            "answers",
            "LL second stage",
            "LL CPU s",
            "two-stage CPU s",
            "x",
            "differ",
        ):
            table.add_column(column, justify="left" if column == "data set" else "right")
        for r in [*rows, {"set": "all", **total, "differing": len(differing)}]:
            table.add_row(
                r["set"],
                str(r["answers"]),
                str(r["second_stage"]),
                f"{r['ll_cpu_s']:.2f}",
                f"{r['two_stage_cpu_s']:.2f}",
                f"{r['ll_cpu_s'] / max(r['two_stage_cpu_s'], 1e-9):.2f}",
                str(r["differing"]),
            )
        console.print(table)
        for d in differing[:20]:
            console.print(
                f"  {d['set']}: {d['answer']!r}\n    LL:        {d['ll']}\n    two-stage: {d['two_stage']}"
            )
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
