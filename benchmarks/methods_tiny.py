"""Held-out greedy accuracy before -> after for every reward method on the tiny recipe, over seeds.

Every method gets the same budget (the recipe's steps, problems per step and samples per prompt);
only `method.name` (and a variant's own overrides) change. Runs go through `coreward run`, as a
user would, several at a time when --jobs > 1 (with --pin each gets its own pair of cores).

    python benchmarks/methods_tiny.py --seeds 1,2,3 --jobs 1
    python benchmarks/methods_tiny.py --methods co_rewarding_i,'lr5e-5=co_rewarding_i;train.lr=5e-5' --jobs 4 --pin

A method spec is a method name, or `LABEL=METHOD;field=value;field=value` for a variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = (
    "gt,majority_vote,co_rewarding_i,co_rewarding_ii,co_rewarding_iii,self_certainty,entropy,random"
)


@dataclass(frozen=True)
class Variant:
    label: str
    method: str
    overrides: tuple[str, ...]


def parse_variant(spec: str) -> Variant:
    head, *overrides = spec.split(";")
    label, _, method = head.partition("=")
    return Variant(label, method or label, tuple(o for o in overrides if o))


def run_one(
    recipe: Path, variant: Variant, seed: int, out: Path, sets: list[str], slots: Queue, pin: bool
) -> dict:
    folder = out / f"{variant.label}-seed{seed}"
    cmd = [
        sys.executable,
        "-m",
        "coreward_cli.main",
        "run",
        str(recipe),
        "--out",
        str(folder),
        "--force",
        "--json",
        "--set",
        f"method.name={variant.method}",
        "--set",
        f"seed={seed}",
    ]
    for item in (*sets, *variant.overrides):
        cmd += ["--set", item]
    slot = slots.get()
    try:
        if pin:
            cmd = ["taskset", "-c", f"{2 * slot},{2 * slot + 1}", *cmd]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - started
    finally:
        slots.put(slot)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        print(f"FAILED {variant.label} seed {seed}:\n{tail}", file=sys.stderr, flush=True)
        return {"label": variant.label, "seed": seed, "failed": True}
    summary = json.loads(proc.stdout)
    before = summary["eval_before"]["eval_accuracy"]
    after = summary["eval_after"]["eval_accuracy"]
    print(
        f"{variant.label:>28} seed {seed}: {100 * before:.1f}% -> {100 * after:.1f}%  ({wall:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    rows = [
        json.loads(line)
        for line in (folder / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return {
        "label": variant.label,
        "method": variant.method,
        "seed": seed,
        "before": before,
        "after": after,
        "wall_s": wall,
        "pseudo_label_accuracy": summary.get("pseudo_label_accuracy_mean"),
        "s_per_step": summary["seconds_per_step"],
        "eval_curve": {r["step"]: r["eval_accuracy"] for r in rows if "eval_accuracy" in r},
        "pseudo_label_curve": {
            r["step"]: r.get("pseudo_label_accuracy") for r in rows if r["step"] > 0
        },
    }


def at_step(run: dict, step: int | None) -> dict:
    """The run as if it had stopped at `step` (read off its curves); None: at its end."""
    if step is None:
        return run
    curve = {int(k): v for k, v in run["eval_curve"].items()}
    if step not in curve:
        raise SystemExit(
            f"--at {step}: {run['label']} seed {run['seed']} has no held-out evaluation at that step"
        )
    labels = [v for k, v in run["pseudo_label_curve"].items() if int(k) <= step and v is not None]
    return {
        **run,
        "after": curve[step],
        "pseudo_label_accuracy": sum(labels) / len(labels) if labels else None,
    }


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def table_rows(
    results: list[dict], variants: list[Variant], step: int | None = None
) -> list[list[str]]:
    rows = []
    for v in variants:
        runs = [at_step(r, step) for r in results if r["label"] == v.label and not r.get("failed")]
        failed = sum(1 for r in results if r["label"] == v.label and r.get("failed"))
        gains = [r["after"] - r["before"] for r in runs]
        labels = [
            r["pseudo_label_accuracy"] for r in runs if r["pseudo_label_accuracy"] is not None
        ]
        rows.append(
            [
                v.label + (f" ({'; '.join(v.overrides)})" if v.overrides else ""),
                _mean_sd([r["before"] for r in runs]),
                _mean_sd([r["after"] for r in runs]),
                _mean_sd(gains),
                f"{sum(g > 0 for g in gains)}/{len(runs)}"
                + (f" ({failed} failed)" if failed else ""),
                _mean_sd(labels) if labels else "-",
                f"{statistics.mean(r['s_per_step'] for r in runs):.2f}" if runs else "-",
            ]
        )
    return rows


HEADERS = [
    "method",
    "held-out before %",
    "after %",
    "change (pts)",
    "seeds up",
    "pseudo-label acc %",
    "s/step",
]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny_cpu.yaml")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method specs")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument(
        "--pin", action="store_true", help="give run slot k the cores 2k and 2k+1 (taskset)"
    )
    parser.add_argument(
        "--first-slot", type=int, default=0, help="with --pin: the first core pair to use"
    )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], help="recipe override for every run"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "methods_tiny")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument(
        "--at",
        default="",
        help="also tabulate held-out accuracy at these steps (comma-separated; "
        "each must be an evaluation step of the runs)",
    )
    args = parser.parse_args()

    variants = [parse_variant(s) for s in args.methods.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",")]
    slots: Queue = Queue()
    for k in range(args.jobs):
        slots.put(args.first_slot + k)
    started = time.perf_counter()
    results: list[dict] = []

    def record(
        future,
    ) -> None:  # written after every run, so a cut-short sweep still leaves its numbers
        results.append(future.result())
        if args.json:
            args.json.write_text(
                json.dumps({"runs": results, "seeds": seeds, "sets": args.sets}, indent=2)
            )

    with ThreadPoolExecutor(args.jobs) as pool:
        for v in variants:
            for s in seeds:
                pool.submit(
                    run_one, args.recipe, v, s, args.out, args.sets, slots, args.pin
                ).add_done_callback(record)
    from rich.console import Console
    from rich.table import Table

    elapsed = time.perf_counter() - started
    for step in [int(a) for a in args.at.split(",") if a] + [None]:
        rows = table_rows(results, variants, step)
        where = "at the end" if step is None else f"after step {step}"
        table = Table(
            title=f"{args.recipe.name}: greedy held-out accuracy {where}, seeds {args.seeds} ({elapsed:.0f} s)"
        )
        for h in HEADERS:
            table.add_column(h, justify="left" if h == "method" else "right")
        for r in rows:
            table.add_row(*r)
        Console().print(table)
        print(f"\n{where}:\n" + markdown(rows))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
