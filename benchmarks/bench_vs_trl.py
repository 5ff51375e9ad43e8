"""coreward's local engine against TRL's GRPOTrainer on the same work, side by side, step by step.

Both sides train the toy's warm start (`builtin:tiny-arith`, the same model and tokenizer) on the same
training problems in the same order (coreward's step sampler decides; TRL gets them in that order
with its shuffling off), with the same problems per step, samples per prompt, temperature, top-p,
max new tokens, learning rate, AdamW settings, gradient clip, PPO clip, KL (beta 0 on both), loss
aggregation (token mean over the step: coreward `token-mean`, TRL `dapo`), activations kept for the
backward (TRL's default `gradient_checkpointing=True` recomputes them; the local engine never does,
so TRL runs with it off), and a majority-vote reward
(coreward's `majority_vote` method through its engine, `coreward_cli.engines.local.train`; TRL a
`reward_funcs` function that votes over each prompt's group with coreward's own extraction and vote).
Held-out greedy accuracy is measured on the toy's eval split with coreward's grader for both.

Each side runs in its own fresh process (one side's process-wide settings never reach the other),
and the sides take turns step by step: coreward's step 1, TRL's step 1, (TRL with coreward's
allocator setting's step 1,) coreward's step 2, ... with the others waiting, so a change in the
machine's speed (a shared VM's moved a side's median by 1.5x between minutes) hits every side's
same steps alike. Setup and held-out evaluations run outside the turns and are not timed.

Co-rewarding-I is run on coreward only: TRL's reward functions see one prompt's completions per group
and its sampler draws prompts independently, so "label a question by the majority of its rephrasing's
group" has no counterpart there.

    pip install -r benchmarks/requirements-trl.txt
    python benchmarks/bench_vs_trl.py                       # 50 steps x seeds 1,2,3
    python benchmarks/bench_vs_trl.py --steps 10 --seeds 1  # a short run
    python benchmarks/bench_vs_trl.py --steps 10 --seeds 1 --profile 8   # plus where the time goes
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import queue
import statistics
import subprocess
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Run:
    """One side, one seed: per-step phase seconds and held-out accuracy before/after."""

    steps: list[dict[str, float]] = field(default_factory=list)
    before: float = 0.0
    after: float = 0.0


def load(recipe_path: Path, method: str, seed: int, steps: int, sets: list[str]):
    from coreward_cli.resolve import load_recipe

    return load_recipe(
        recipe_path,
        [
            f"method.name={method}",
            f"seed={seed}",
            f"train.max_steps={steps}",
            f"output.eval_interval={steps}",
            f"output.save_interval={steps}",
            *sets,
        ],
    )


def coreward_run(recipe, turn: Turn | None = None) -> Run:
    """The real thing: `coreward run` minus the CLI (engine, checkpoints, held-out evaluations);
    with `turn`, each step waits for it (`LocalTrainer.step` times itself, so waits are not timed)."""
    from unittest import mock

    from rich.console import Console

    from coreward_cli.engines.local import LocalTrainer, train
    from coreward_cli.engines.tracking import read_metrics

    step = LocalTrainer.step

    def step_in_turn(self, number: int):
        turn.begin()
        try:
            return step(self, number)
        finally:
            turn.end()

    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(LocalTrainer, "step", step_in_turn if turn else step),
    ):
        run_dir = Path(tmp) / "run"
        summary = train(recipe, run_dir, resume=False, console=Console(quiet=True))
        records = [r for r in read_metrics(run_dir) if r["step"] > 0]
    steps = [
        {
            "step": r["step_seconds"],
            "generate": r["generate_seconds"],
            "reward": r["reward_seconds"],
            "update": r["train_seconds"],
        }
        for r in records
    ]
    return Run(
        steps, summary["eval_before"]["eval_accuracy"], summary["eval_after"]["eval_accuracy"]
    )


def step_prompts(recipe, tokenizer) -> list[str]:
    """The prompts coreward's engine draws, step by step, for the recipe's policy view."""
    from coreward_cli.data import load_train_problems
    from coreward_cli.engines.sampler import ProblemSampler, usable_problems
    from coreward_cli.prompts import PromptStyle

    style = PromptStyle(recipe.model.system_prompt, recipe.model.chat_template)

    def length(problem, view):
        prompt = style.render(tokenizer, problem.question)
        return len(tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens).input_ids)

    usable = usable_problems(recipe, load_train_problems(recipe), ("original",), length)
    sampler = ProblemSampler(
        usable.problems, recipe.train.problems_per_step, recipe.data.shuffle_seed
    )
    prompts = []
    for step in range(1, recipe.train.max_steps + 1):
        for problem in sampler.batch(step):
            prompt = style.render(tokenizer, problem.question)
            assert prompt.add_special_tokens  # TRL tokenizes plain prompts with special tokens too
            prompts.append(prompt.text)
    return prompts


def majority_reward(match: str):
    """TRL reward function: each completion scores 1 when its answer is its group's majority answer.

    TRL hands over a generation batch whose consecutive `num_generations` completions share a prompt.
    """
    from coreward_plugins.answers import AnswerMatcher, extract_answer
    from coreward_plugins.voting import majority_vote

    matcher = AnswerMatcher(match)

    def reward(prompts, completions, **_):
        rewards: list[float] = []
        start = 0
        while start < len(completions):
            stop = start + 1
            while stop < len(completions) and prompts[stop] == prompts[start]:
                stop += 1
            answers = [extract_answer(c) for c in completions[start:stop]]
            label = majority_vote(answers, matcher).label
            rewards += [
                1.0 if label is not None and matcher.equal(a, label) else 0.0 for a in answers
            ]
            start = stop
        return rewards

    reward.__name__ = "majority_vote"
    return reward


def trl_trainer(recipe, out_dir: str, prompts: list[str], turn: Turn | None = None):
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from coreward_cli.models import load_causal_lm, load_tokenizer, model_source, resolve_model

    r, t = recipe.rollout, recipe.train
    source = model_source(resolve_model(recipe.model.path))
    model = load_causal_lm(source, "cpu", "fp32")
    tokenizer = load_tokenizer(source)
    config = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=t.problems_per_step * r.n,
        gradient_accumulation_steps=1,
        num_generations=r.n,
        num_iterations=1,
        max_completion_length=r.max_new_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=0,
        learning_rate=t.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=t.weight_decay,
        adam_beta1=t.betas[0],
        adam_beta2=t.betas[1],
        adam_epsilon=1e-8,
        max_grad_norm=t.grad_clip,
        gradient_checkpointing=False,  # TRL's default recomputes activations; coreward keeps them
        beta=t.kl_coef,
        epsilon=t.clip_ratio,
        loss_type="dapo",  # token mean over the step's completions = coreward's token-mean
        scale_rewards="group",
        max_steps=t.max_steps,
        seed=recipe.seed,
        shuffle_dataset=False,  # coreward's order, already drawn by its sampler
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=t.max_steps,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=majority_reward(recipe.method.match),
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
    )
    phases: dict[str, float] = {"score": 0.0, "reward": 0.0}
    steps: list[dict[str, float]] = []

    def timed(name: str, fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - started

        return wrapper

    trainer._generate_and_score_completions = timed(
        "score", trainer._generate_and_score_completions
    )
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            phases.update(score=0.0, reward=0.0, begin=time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            total = time.perf_counter() - phases["begin"]
            generate = phases["score"] - phases["reward"]
            steps.append(
                {
                    "step": total,
                    "generate": generate,
                    "reward": phases["reward"],
                    "update": total - phases["score"],
                }
            )

    if turn is not None:

        class InTurn(TrainerCallback):  # added before StepTimer: waits happen outside its timing
            def on_step_begin(self, args, state, control, **kwargs):
                turn.begin()

        trainer.add_callback(InTurn())
    trainer.add_callback(StepTimer())
    if turn is not None:

        class HandOver(TrainerCallback):  # after StepTimer's end
            def on_step_end(self, args, state, control, **kwargs):
                turn.end()

        trainer.add_callback(HandOver())
    torch.set_num_threads(recipe.engine.threads or torch.get_num_threads())
    return trainer, tokenizer, steps


def trl_run(recipe, turn: Turn | None = None) -> Run:
    from coreward_cli.engines.heldout import HeldOut

    heldout = HeldOut.from_recipe(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        from coreward_cli.models import load_tokenizer, model_source, resolve_model

        tokenizer = load_tokenizer(model_source(resolve_model(recipe.model.path)))
        prompts = step_prompts(recipe, tokenizer)
        trainer, tokenizer, steps = trl_trainer(recipe, tmp, prompts, turn)
        before = heldout.evaluate(trainer.model, tokenizer)["eval_accuracy"]
        trainer.train()
        after = heldout.evaluate(trainer.model, tokenizer)["eval_accuracy"]
    return Run(steps, before, after)


def profile_coreward(recipe_path: Path, steps: int, sets: list[str], top: int) -> str:
    """cProfile of `steps` coreward steps (after 2 unprofiled ones), top functions by own time."""
    from rich.console import Console

    from coreward_cli.engines.local import LocalTrainer, _seed_everything

    out = io.StringIO()
    recipe = load(recipe_path, "majority_vote", 1, steps + 2, sets)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = LocalTrainer(recipe, Path(tmp), Console(quiet=True), None)
        _seed_everything(recipe.seed)
        trainer.step(1)
        trainer.step(2)
        profiler = cProfile.Profile()
        profiler.enable()
        for step in range(3, steps + 3):
            trainer.step(step)
        profiler.disable()
    _print_profile(out, "coreward majority_vote", profiler, steps, top)
    return out.getvalue()


def profile_trl(recipe_path: Path, steps: int, sets: list[str], top: int) -> str:
    """The same for TRL: `steps` steps after 2 unprofiled ones."""
    from transformers import TrainerCallback

    from coreward_cli.models import load_tokenizer, model_source, resolve_model

    out = io.StringIO()
    recipe = load(recipe_path, "majority_vote", 1, steps + 2, sets)
    tokenizer = load_tokenizer(model_source(resolve_model(recipe.model.path)))
    with tempfile.TemporaryDirectory() as tmp:
        trl, _, _ = trl_trainer(recipe, tmp, step_prompts(recipe, tokenizer))
        profiler = cProfile.Profile()

        class Switch(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == 2:
                    profiler.enable()

        trl.add_callback(Switch())
        trl.train()
        profiler.disable()
    _print_profile(out, "TRL GRPOTrainer", profiler, steps, top)
    return out.getvalue()


def _print_profile(out: io.StringIO, title: str, profiler: cProfile.Profile, steps: int, top: int):
    stats = pstats.Stats(profiler, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"\n== {title}: {steps} steps, {total / steps:.3f} s/step under the profiler ==", file=out
    )
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def coreward_job(
    recipe_path: Path, method: str, seed: int, steps: int, sets: list[str], turn: Turn | None = None
) -> Run:
    warnings.filterwarnings("ignore")
    return coreward_run(load(recipe_path, method, seed, steps, sets), turn)


def trl_job(
    recipe_path: Path,
    seed: int,
    steps: int,
    sets: list[str],
    host_memory: bool = False,
    turn: Turn | None = None,
) -> Run:
    """TRL on one seed; `host_memory` first applies the local engine's allocator setting
    (`coreward_cli.host_memory`) to this process, to show what TRL alone would gain from it."""
    from coreward_cli.engines.local import _seed_everything
    from coreward_cli.host_memory import keep_freed_memory

    warnings.filterwarnings("ignore")
    if host_memory:
        keep_freed_memory()
    _seed_everything(seed)
    return trl_run(load(recipe_path, "majority_vote", seed, steps, sets), turn)


def isolated(fn, *args):
    """fn(*args) in a fresh Python process, as a user's run is: one side's process-wide settings
    (the local engine keeps freed memory in its process, `host_memory`; thread pools; warm caches)
    never reach the other."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


class Turn:
    """Process `index` of `count` that take turns step by step: its step k runs alone, once every
    process has finished its step k - 1 and the processes before it their step k."""

    def __init__(self, index: int, count: int, steps: int, ready, done, counter) -> None:
        self.index, self.count, self.steps = index, count, steps
        self.ready, self.done, self.counter = ready, done, counter  # Barrier, Condition, Value
        self.k = 0  # this process's steps finished

    def begin(self) -> None:
        if self.k == 0:
            self.ready.wait(timeout=TURN_TIMEOUT)  # every side set up (model, held-out eval)
        self._until(self.k * self.count + self.index)

    def end(self) -> None:
        with self.done:
            self.counter.value += 1
            self.done.notify_all()
        self.k += 1
        if self.k == self.steps:  # nobody's evaluation runs beside another side's last steps
            self._until(self.steps * self.count)

    def give_up(self) -> None:
        """This side failed: the others stop waiting for it (the parent reports the failure)."""
        self.ready.abort()
        with self.done:
            self.counter.value = 2**30
            self.done.notify_all()

    def _until(self, value: int) -> None:
        with self.done:
            if not self.done.wait_for(lambda: self.counter.value >= value, TURN_TIMEOUT):
                raise TimeoutError(f"side {self.index}: no turn in {TURN_TIMEOUT} s")


TURN_TIMEOUT = 900  # seconds a side waits for the others before it gives up


def _in_turn(fn, args, turn: Turn, results) -> None:
    try:
        results.put((turn.index, fn(*args, turn=turn)))
    except BaseException:
        turn.give_up()
        results.put(
            (turn.index, RuntimeError(f"side {turn.index} failed:\n{traceback.format_exc()}"))
        )


def in_turns(jobs: list[tuple], steps: int) -> list[Run]:
    """Each (fn, *args) in its own fresh process, all at once, their `steps` steps in rotation."""
    context = multiprocessing.get_context("spawn")
    ready, done, counter = context.Barrier(len(jobs)), context.Condition(), context.Value("i", 0)
    results = context.Queue()
    processes = [
        context.Process(
            target=_in_turn,
            args=(fn, args, Turn(i, len(jobs), steps, ready, done, counter), results),
        )
        for i, (fn, *args) in enumerate(jobs)
    ]
    for process in processes:
        process.start()
    out: dict[int, Run | BaseException] = {}
    while len(out) < len(processes):
        try:
            index, value = results.get(timeout=10)
            out[index] = value
        except queue.Empty:
            for index, process in enumerate(processes):
                if index not in out and not process.is_alive():  # died without a word: a crash
                    for other in processes:
                        other.terminate()
                    raise RuntimeError(
                        f"side {index} exited with {process.exitcode}, no result"
                    ) from None
    for process in processes:
        process.join()
    for value in out.values():
        if isinstance(value, BaseException):
            raise value
    return [out[i] for i in range(len(jobs))]


def median_after(run: Run, warmup: int, phase: str) -> float:
    values = [s[phase] for s in run.steps[warmup:]] or [s[phase] for s in run.steps]
    return statistics.median(values)


def accuracy_cell(runs: list[Run]) -> str:
    before = statistics.mean(r.before for r in runs)
    after = [r.after for r in runs]
    gains = [100 * (r.after - r.before) for r in runs]
    sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
    up = sum(g > 0 for g in gains)
    return (
        f"{100 * before:.1f} -> {100 * statistics.mean(after):.1f} "
        f"({statistics.mean(gains):+.1f} ± {sd:.1f} pts, {up}/{len(runs)} up)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny_cpu.yaml")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the medians")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument(
        "--no-co-rewarding-i", action="store_true", help="skip the coreward-only row"
    )
    parser.add_argument(
        "--no-trl-host-memory",
        action="store_true",
        help="skip TRL with the local engine's allocator setting (coreward_cli.host_memory)",
    )
    parser.add_argument("--profile", type=int, default=0, help="then profile this many steps")
    parser.add_argument("--top", type=int, default=25, help="functions per profile listing")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch
    import trl
    from rich.console import Console
    from rich.table import Table

    seeds = [int(s) for s in args.seeds.split(",")]
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    runs: dict[str, list[Run]] = {"coreward": [], "trl": [], "trl_memory": [], "co_rewarding_i": []}
    rp, steps, sets = args.recipe, args.steps, args.sets
    for seed in seeds:
        jobs = [
            (coreward_job, rp, "majority_vote", seed, steps, sets),
            (trl_job, rp, seed, steps, sets),
        ]
        if not args.no_trl_host_memory:
            jobs.append((trl_job, rp, seed, steps, sets, True))
        for side, run in zip(("coreward", "trl", "trl_memory"), in_turns(jobs, steps)):
            runs[side].append(run)
        if not args.no_co_rewarding_i:
            runs["co_rewarding_i"].append(
                isolated(coreward_job, rp, "co_rewarding_i", seed, steps, sets)
            )
    load_end = os.getloadavg()[0]

    threads = load(rp, "majority_vote", seeds[0], steps, sets).engine.threads
    phases = ("step", "generate", "reward", "update")
    med = {
        side: {p: statistics.median(median_after(r, args.warmup, p) for r in rs) for p in phases}
        for side, rs in runs.items()
        if rs
    }
    table = Table(
        title=f"majority-vote GRPO on the toy, {args.steps} steps, seeds {args.seeds}: "
        f"median s/step after {args.warmup} warm-up steps (median over seeds); "
        f"torch {torch.__version__}, TRL {trl.__version__}, threads {threads}"
    )
    for col in ("", "step s", "generate s", "reward s", "update s", "held-out greedy acc %"):
        table.add_column(col, justify="left" if col in ("", "held-out greedy acc %") else "right")

    def times(m: dict[str, float]) -> list[str]:
        return [
            f"{m['step']:.3f}",
            f"{m['generate']:.3f}",
            f"{m['reward']:.4f}",
            f"{m['update']:.3f}",
        ]

    def ratios(t: dict[str, float], c: dict[str, float]) -> list[str]:
        return [f"{t[p] / c[p]:.2f}" if c[p] > 0 else "-" for p in phases]

    labels = {
        "coreward": "coreward majority_vote",
        "trl": "TRL GRPOTrainer",
        "trl_memory": "TRL, host memory kept as coreward keeps it",
    }
    for side, label in labels.items():
        if side in med:
            table.add_row(label, *times(med[side]), accuracy_cell(runs[side]))
    for side in ("trl", "trl_memory"):
        if side in med:
            table.add_row(f"{labels[side]} / coreward (x)", *ratios(med[side], med["coreward"]), "")
    if runs["co_rewarding_i"]:
        table.add_row(
            "coreward co_rewarding_i (2 views)",
            *times(med["co_rewarding_i"]),
            accuracy_cell(runs["co_rewarding_i"]),
        )
        table.add_row(
            "TRL co_rewarding_i",
            "not expressible",
            "",
            "",
            "",
            "a reward_funcs group sees only its own prompt's completions",
        )
    Console(width=200).print(table)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"load average {load_start:.2f} at start, {load_end:.2f} at end ({uptime}); "
        f"total {time.perf_counter() - started:.0f} s"
    )
    if args.profile:
        for profile in (profile_coreward, profile_trl):
            print(isolated(profile, args.recipe, args.profile, args.sets, args.top))


if __name__ == "__main__":
    main()
