"""The reward of one Co-rewarding-I step at paper scale: 2 views x 128 prompts x 8 responses = 2,048.

Builds steps from the shared data: real MATH training questions and their published rephrasings
(`../shared/data/train/math/train_{original,rephrased}.parquet`), each answered by 8 long
chain-of-thought responses per view. The final answers come from `bench_grading`'s generator (the
reference in equivalent notations, nearby wrong answers, now and then no answer, every sixth problem
a pair only algebra equates), built from each problem's MATH reference; the reasoning before them is
real worked-solution text (the OpenRS `solution` column, `\\boxed` removed) cut to a drawn length of
hundreds to thousands of tokens. A response without an answer is one cut off at its length limit.

Then, for every match mode the project has (`typing.get_args(MatchMode)`), it times what a step pays
for its reward: answer extraction, the majority votes of all 256 groups, the cross-view rewards and
the step's metrics, i.e. `co_rewarding_i`'s `score(batch)`:
- in process: a fresh method (cold verdict cache) on a fresh step, as the local engine runs it;
- through the Ray scoring actors of the OpenRLHF engine (`coreward_plugins.openrlhf.reward_actors`),
  `--actors` of them, after one warm-up step (actors started, math-verify workers warm).
With `--before`, math_verify runs once more in process with sympy's equation solving as shipped
(`COREWARD_BOUNDED_SOLVE=0`: no CPU budget, no memo), the behaviour before the budget.

    python benchmarks/bench_reward_step.py [--reps 5] [--actors 2] [--seed 0] [--no-ray] [--before]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import time
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_grading import build_groups, cpu_seconds  # noqa: E402  the same answer mixes as bench_grading

from coreward_plugins.answers import MatchMode, extract_answer  # noqa: E402
from coreward_plugins.batch import Group, RolloutBatch  # noqa: E402
from coreward_plugins.methods import MethodOptions, get_method  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "train"
PROBLEMS, RESPONSES, METHOD = 128, 8, "co_rewarding_i"
CHARS_PER_TOKEN = 3.5  # LaTeX-heavy English with a Qwen-style tokenizer, roughly
GOAL_S = {"math_verify": 5.0}  # every other mode: 1 s


def _question(row) -> str:
    return next(m["content"] for m in row["prompt"] if m["role"] == "user")


def load_pairs(data: Path) -> list[tuple[str, str, str]]:
    """(original question, rephrased question, reference) of every MATH training problem."""
    import pandas as pd

    original = pd.read_parquet(data / "math" / "train_original.parquet")
    rephrased = pd.read_parquet(data / "math" / "train_rephrased.parquet")
    return [
        (_question(o), _question(r), str(o["reward_model"]["ground_truth"]))
        for (_, o), (_, r) in zip(original.iterrows(), rephrased.iterrows(), strict=True)
    ]


def load_reasoning(data: Path) -> list[str]:
    """Worked solutions to cut reasoning from, without their own boxed answers."""
    import pandas as pd

    solutions = pd.read_parquet(data / "openrs" / "train_original.parquet")["solution"]
    return [
        s.replace("\\boxed", "\\mathbf").replace("\\fbox", "\\mathbf")
        for s in solutions
        if isinstance(s, str) and len(s) >= 400
    ]


def response(question: str, answer: str | None, reasoning: list[str], rng: random.Random) -> str:
    """A chain of thought of a drawn length (median ~700 tokens, 150 to 6,000), ending in `answer`."""
    tokens = min(6000, max(150, int(rng.lognormvariate(6.55, 0.8))))
    want = int(tokens * CHARS_PER_TOKEN)
    parts = [f"Let's think step by step. We are asked: {question}\n\n"]
    size = len(parts[0])
    while size < want:
        chunk = rng.choice(reasoning)
        start = rng.randrange(max(1, len(chunk) - 200))
        piece = chunk[start : start + want - size]
        parts.append(piece + "\n\n")
        size += len(piece) + 2
    text = "".join(parts)
    if answer is None:  # cut off at the length limit, mid-thought
        return text
    return text + f"Therefore, the final answer is $\\boxed{{{answer}}}$."


def build_step(
    pairs: list[tuple[str, str, str]], reasoning: list[str], seed: int
) -> tuple[RolloutBatch, int]:
    """One step's batch (original groups, then rephrased ones) and its total characters."""
    rng = random.Random(seed)
    chosen = rng.sample(pairs, PROBLEMS)
    references = [ref for _, _, ref in chosen]
    groups: list[Group] = []
    for view, index in (("original", 0), ("rephrased", 1)):
        answers, _ = build_groups(references, PROBLEMS, rng)
        for k, (problem, group_answers) in enumerate(zip(chosen, answers, strict=True)):
            question = problem[index]
            groups.append(
                Group(
                    problem_id=f"p{k}",
                    view=view,  # type: ignore[arg-type]
                    source="policy",
                    prompt=question,
                    responses=[response(question, a, reasoning, rng) for a in group_answers],
                    reference=problem[2],
                )
            )
    chars = sum(len(r) for g in groups for r in g.responses)
    return RolloutBatch(groups), chars


def options(mode: str) -> MethodOptions:
    return MethodOptions(match=mode)  # type: ignore[arg-type]


def time_in_process(mode: str, steps: list[RolloutBatch]) -> dict[str, float]:
    """Median over steps of: extraction alone, and the method's whole score(batch) (fresh each step),
    in wall and CPU seconds (this process plus the math-verify workers); and the slowest step's wall."""
    extract_s, score_s, cpu_s = [], [], []
    for batch in steps:
        started = time.perf_counter()
        for g in batch.groups:
            for r in g.responses:
                extract_answer(r)
        extract_s.append(time.perf_counter() - started)
        method = get_method(METHOD)(options(mode))
        started, cpu = time.perf_counter(), cpu_seconds()
        method.score(batch)
        score_s.append(time.perf_counter() - started)
        cpu_s.append(cpu_seconds() - cpu)
    return {
        "extract": statistics.median(extract_s),
        "score": statistics.median(score_s),
        "cpu": statistics.median(cpu_s),
        "worst": max(score_s),
    }


def time_ray(
    mode: str, warm: RolloutBatch, steps: list[RolloutBatch], actors: int
) -> tuple[float, float]:
    from coreward_plugins.openrlhf.reward_actors import RewardPool

    options_json = json.dumps(dataclasses.asdict(options(mode)))
    pool = RewardPool(METHOD, options_json, size=actors, num_cpus=2 / actors)
    expected = get_method(METHOD)(options(mode)).score(warm)
    got = pool.score(warm)  # also starts each actor's math-verify workers
    if got.rewards != expected.rewards:
        raise SystemExit(f"{mode}: the Ray actors' rewards differ from the method's")
    seconds = []
    for batch in steps:
        started = time.perf_counter()
        pool.score(batch)
        seconds.append(time.perf_counter() - started)
    import ray

    for actor in pool.actors:
        ray.kill(actor)
    return statistics.median(seconds), max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--reps", type=int, default=5, help="timed steps per mode (each new)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument(
        "--before", action="store_true", help="add math_verify with sympy's solve as shipped"
    )
    args = parser.parse_args()
    if not (args.data / "math" / "train_original.parquet").is_file():
        raise SystemExit(f"{args.data}/math/train_original.parquet is missing: pass --data")

    from rich.console import Console
    from rich.table import Table

    from coreward_plugins.verify_pool import restart_shared_pool, shared_pool

    started = time.perf_counter()
    pairs, reasoning = load_pairs(args.data), load_reasoning(args.data)
    built = [build_step(pairs, reasoning, args.seed + k) for k in range(args.reps + 1)]
    warm, steps = built[0][0], [b for b, _ in built[1:]]
    chars = statistics.mean(c for _, c in built)
    responses = sum(len(g.responses) for g in warm.groups)
    print(
        f"{responses} responses a step ({len(warm.groups)} groups), {chars / responses:,.0f} characters "
        f"(~{chars / responses / CHARS_PER_TOKEN:,.0f} tokens) each on average; built in "
        f"{time.perf_counter() - started:.0f} s"
    )
    get_method(METHOD)(options("math_verify")).score(warm)  # starts the math-verify workers
    shared_pool().wait_warm()

    ray_note = None
    if not args.no_ray:
        try:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        except ImportError:
            ray_note = "ray is not installed: the Ray column is skipped (pip install ray)"
    else:
        ray_note = "--no-ray: the Ray column is skipped"

    modes = typing.get_args(MatchMode)
    table = Table(
        title=f"{METHOD} reward of one step, {responses} responses: median (and slowest) of "
        f"{args.reps} steps, seconds"
    )
    for col in (
        "match",
        "extract (in process)",
        "score (in process)",
        "slowest step",
        "score CPU s (in process)",
        "score (Ray)",
        "slowest step (Ray)",
        "goal",
        "met",
    ):
        table.add_column(col, justify="left" if col == "match" else "right")
    rows = [(mode, mode) for mode in modes]
    if args.before:
        rows.append(("math_verify", "math_verify, solve unbounded (before)"))
    for mode, label in rows:
        before = label != mode
        if before:
            os.environ["COREWARD_BOUNDED_SOLVE"] = "0"
            restart_shared_pool()
            get_method(METHOD)(options(mode)).score(warm)
            shared_pool().wait_warm()
        local = time_in_process(mode, steps)
        remote = None if ray_note or before else time_ray(mode, warm, steps, args.actors)
        goal = GOAL_S.get(mode, 1.0)
        worst = max(local["worst"], remote[1] if remote else 0.0)
        table.add_row(
            label,
            f"{local['extract']:.3f}",
            f"{local['score']:.3f}",
            f"{local['worst']:.3f}",
            f"{local['cpu']:.3f}",
            "-" if remote is None else f"{remote[0]:.3f}",
            "-" if remote is None else f"{remote[1]:.3f}",
            f"<= {goal:g}",
            "yes" if worst <= goal else "NO",
        )
    Console(width=160).print(table)
    if ray_note:
        print(ray_note)
    else:
        print(f"Ray: {args.actors} scoring actors on a 2-CPU Ray instance, after one warm-up step")
        import ray

        ray.shutdown()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"cores {os.cpu_count()}; {uptime}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
