"""Seconds per RL step of the local engine, split into generate / reward / train, on the tiny recipe.

The reward (the method's scoring: answer extraction, votes, matching) should stay a small share
of a step (target <= 2%); generation and the policy update are the real work.

    python benchmarks/bench_local_step.py                       # co_rewarding_i, 30 timed steps
    python benchmarks/bench_local_step.py --methods co_rewarding_i,co_rewarding_ii,majority_vote --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("generate_seconds", "reward_seconds", "train_seconds")


def time_method(
    recipe_path: Path, method: str, steps: int, warmup: int, sets: list[str]
) -> dict[str, float]:
    from rich.console import Console

    from coreward_cli.engines.local import LocalTrainer, _seed_everything
    from coreward_cli.resolve import load_recipe

    recipe = load_recipe(recipe_path, [f"method.name={method}", *sets])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = LocalTrainer(recipe, Path(tmp), Console(quiet=True), None)
        _seed_everything(recipe.seed)
        records = []
        for step in range(1, warmup + steps + 1):
            record = trainer.step(step)
            if step > warmup:
                records.append(record)
    out = {p: statistics.mean(r[p] for r in records) for p in PHASES}
    out["step_seconds"] = statistics.mean(r["step_seconds"] for r in records)
    out["responses"] = recipe.train.problems_per_step * recipe.rollout.n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny_cpu.yaml")
    parser.add_argument("--methods", default="co_rewarding_i")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"local engine, {args.recipe.name}: seconds per step (mean of {args.steps} after {args.warmup} warm-up), "
        f"torch threads {torch.get_num_threads()}"
    )
    for col in (
        "method",
        "step s",
        "generate s",
        "reward s",
        "train s",
        "generate %",
        "reward %",
        "train %",
        "reward <= 2%",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    started = time.perf_counter()
    for method in args.methods.split(","):
        t = time_method(args.recipe, method, args.steps, args.warmup, args.sets)
        total = t["step_seconds"]
        share = {p: t[p] / total for p in PHASES}
        table.add_row(
            method,
            f"{total:.3f}",
            f"{t['generate_seconds']:.3f}",
            f"{t['reward_seconds']:.4f}",
            f"{t['train_seconds']:.3f}",
            f"{100 * share['generate_seconds']:.1f}",
            f"{100 * share['reward_seconds']:.2f}",
            f"{100 * share['train_seconds']:.1f}",
            "yes" if share["reward_seconds"] <= 0.02 else "NO",
        )
    Console().print(table)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
