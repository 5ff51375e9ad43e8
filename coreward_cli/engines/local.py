"""The local engine: label-free GRPO in one process, on the CPU or one GPU.

Each step: draw problems, sample every view the method asks for (the EMA teacher's views too,
after its update), score them with the method, turn rewards into group advantages, and make one
on-policy PPO-clip update (+ KL) over the policy's views. Greedy held-out accuracy is measured
before, every `eval_interval` steps and after. Checkpoints restore everything that shapes the
next step (weights, optimizer, scheduler, teacher, method state, RNG states, data position), so a
resumed CPU run ends bit for bit where an uninterrupted one does.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from transformers.utils import logging as hf_logging

from coreward_cli import runlayout
from coreward_cli.data import load_train_problems
from coreward_cli.engines import rundir
from coreward_cli.engines.checkpoint import restore_rng, rng_state, save_checkpoint
from coreward_cli.engines.collapse_watch import CollapseWatch, keep_checkpoint_as_final
from coreward_cli.engines.heldout import HeldOut
from coreward_cli.engines.logprobs import masked_row_mean, score_tokens
from coreward_cli.engines.optim import build_optimizer
from coreward_cli.engines.progress import StepProgress, final_table
from coreward_cli.engines.sampler import ProblemSampler, total_steps, usable_problems
from coreward_cli.engines.tracking import MetricsLog, read_metrics
from coreward_cli.engines.update import (
    UpdateSettings,
    ViewBatch,
    micro_slices,
    policy_update,
    reference_logprobs,
)
from coreward_cli.errors import UserError
from coreward_cli.fileutil import (
    share_like_umask,
    write_folder_atomic,
    write_json_atomic,
    write_text_atomic,
)
from coreward_cli.host_memory import keep_freed_memory
from coreward_cli.models import load_causal_lm, load_tokenizer, model_source, resolve_model
from coreward_cli.problem import Problem
from coreward_cli.prompts import Prompt, PromptStyle
from coreward_cli.recipe import Recipe, dump_recipe, recipe_to_dict
from coreward_cli.resolve import load_recipe
from coreward_cli.sampling import Sequences, sample
from coreward_plugins.advantages import group_advantages
from coreward_plugins.batch import Group, MethodResult, RolloutBatch
from coreward_plugins.methods import MethodOptions, get_method
from coreward_plugins.teacher import EmaTeacher, decay_at

# What the engine measures itself; a method reporting a metric of the same name is a bug in it.
ENGINE_METRICS = (
    "step",
    "response_length",
    "entropy",
    "kl",
    "pg_loss",
    "grad_norm",
    "lr",
    "teacher_decay",
    "step_seconds",
    "generate_seconds",
    "reward_seconds",
    "train_seconds",
)
# Label statistics every run's metrics carry (None where a method has no labels).
LABEL_METRICS = (
    "pseudo_label_accuracy",
    "agreement_share",
    "no_answer_share",
    "clusters_per_group",
)


class LocalTrainer:
    """Everything one run holds; `train()` below drives it. The recipe is resolved: read only."""

    def __init__(
        self, recipe: Recipe, run_dir: Path, console: Console, checkpoint: Path | None
    ) -> None:
        hf_logging.disable_progress_bar()  # per-load and per-save bars would drown the step bar
        self.recipe, self.run_dir, self.console = recipe, run_dir, console
        keep_freed_memory()  # every step reuses its pages: no page faults (host_memory says why)
        if recipe.engine.threads:
            torch.set_num_threads(recipe.engine.threads)
        self.device = _device(recipe.engine.device)
        self.compute_dtype = _compute_dtype(recipe.model.dtype, self.device)
        m, t = recipe.method, recipe.train
        self.method = get_method(m.name)(
            MethodOptions(
                m.match,
                tuple(m.extract_fallbacks),
                m.tie,
                m.min_votes,
                m.match_timeout_s,
                recipe.seed,
            )
        )
        self.base_path = resolve_model(recipe.model.path)
        self.tokenizer = load_tokenizer(model_source(self.base_path))
        policy_path = str(checkpoint / runlayout.POLICY) if checkpoint else self.base_path
        r = recipe.rollout
        max_tokens = r.max_prompt_tokens + r.max_new_tokens
        self.model = _load_lm(policy_path, torch.float32, self.device, max_tokens)
        self.model.requires_grad_(True)
        self.reference = None
        if t.kl_coef > 0 and t.kl_target == "initial":
            self.reference = _load_lm(self.base_path, self.compute_dtype, self.device, max_tokens)
            self.reference.requires_grad_(False)
        self.teacher = (
            EmaTeacher.from_module(self.model, device=self.device)
            if self.method.needs_teacher
            else None
        )
        self.prompt_style = PromptStyle(recipe.model.system_prompt, recipe.model.chat_template)
        views = tuple(dict.fromkeys((*self.method.policy_views, *self.method.teacher_views)))
        usable = usable_problems(recipe, load_train_problems(recipe), views, self._prompt_tokens)
        if usable.too_long:
            console.print(
                f"[dim]{usable.too_long} problems dropped: prompt longer than "
                f"rollout.max_prompt_tokens={recipe.rollout.max_prompt_tokens}[/]"
            )
        self.sampler = ProblemSampler(
            usable.problems, t.problems_per_step, recipe.data.shuffle_seed
        )
        self.total_steps = total_steps(recipe, len(usable.problems))
        self.optimizer, self.scheduler = build_optimizer(
            self.model.parameters(),
            lr=t.lr,
            betas=(t.betas[0], t.betas[1]),
            weight_decay=t.weight_decay,
            total_steps=self.total_steps,
            warmup_ratio=t.warmup_ratio,
            schedule=t.schedule,
            min_lr_ratio=t.min_lr_ratio,
        )
        self.heldout = HeldOut.from_recipe(recipe)
        self.settings = UpdateSettings(
            temperature=recipe.rollout.temperature,
            clip_ratio=t.clip_ratio,
            kl_coef=t.kl_coef,
            kl_estimator=t.kl_estimator,
            loss_agg=t.loss_agg,
            view_loss=t.view_loss,
            micro_batch_size=t.micro_batch_size,
            grad_clip=t.grad_clip,
        )

    # ------------------------------------------------------------------ prompts

    def prompt(self, problem: Problem, view: str) -> Prompt:
        question = problem.question if view == "original" else problem.rephrased
        assert question is not None  # usable_problems keeps only problems with every view
        return self.prompt_style.render(self.tokenizer, question)

    def _prompt_tokens(self, problem: Problem, view: str) -> int:
        prompt = self.prompt(problem, view)
        return len(
            self.tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens).input_ids
        )

    # ------------------------------------------------------------------ one step

    def step(self, step: int) -> dict[str, Any]:
        """One RL step, in the official order; returns its metrics line."""
        started = time.perf_counter()
        problems = self.sampler.batch(step)
        policy = self.sample_views(problems, self.method.policy_views, with_stats=True)
        decay = self.update_teacher(step)
        teacher = self.sample_teacher(problems)
        generated = time.perf_counter()
        batch = self.rollout_batch(problems, policy, teacher)
        result = self.method.score(batch)
        scored = time.perf_counter()
        views = self.view_batches(batch, result, policy)
        self.fill_reference_logprobs(views)
        train = policy_update(
            self.model, self.optimizer, self.scheduler, views, self.settings, self.autocast
        )
        done = time.perf_counter()
        timings = {
            "step_seconds": done - started,
            "generate_seconds": generated - started,
            "reward_seconds": scored - generated,
            "train_seconds": done - scored,
        }
        return self.metrics(step, result, views, train, decay, timings)

    def autocast(self) -> AbstractContextManager:
        if self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def sample_views(
        self, problems: list[Problem], views: tuple[str, ...], with_stats: bool = False
    ) -> dict[str, Sequences]:
        """n responses per problem in each view, from the model as it is now. The views share one
        decoding batch: twice the rows cost far less than twice the time on small models (issue
        16), and each view's rows come back with only its own padding. The policy's keep their
        tokens' entropy and self-certainty, so neither the update (for rows that carry no
        gradient) nor the methods that reward them run another forward for them."""
        r = self.recipe.rollout
        prompts = [self.prompt(p, view) for view in views for p in problems]
        with self.autocast():
            seqs = sample(
                self.model,
                self.tokenizer,
                prompts,
                n=r.n,
                temperature=r.temperature,
                top_p=r.top_p,
                max_new_tokens=r.max_new_tokens,
                with_stats=with_stats,
            )
        rows = len(problems) * r.n
        return {view: seqs.rows(i * rows, (i + 1) * rows) for i, view in enumerate(views)}

    def update_teacher(self, step: int) -> float | None:
        """The official order: the teacher moves toward the policy that just sampled, then samples.
        Returns the decay used (None: no teacher, or not an update step)."""
        tc = self.recipe.teacher
        if self.teacher is None:
            return None
        assert tc is not None, "resolve() gives every method with a teacher a teacher section"
        if step % tc.update_interval:
            return None
        decay = decay_at(step, self.total_steps, tc.decay_start, tc.decay_end, tc.schedule)
        self.teacher.update(self.model.named_parameters(), decay)
        return decay

    def sample_teacher(self, problems: list[Problem]) -> dict[str, Sequences]:
        if self.teacher is None:
            return {}
        with self.teacher.swapped_into(self.model):
            return self.sample_views(problems, self.method.teacher_views)

    def rollout_batch(
        self,
        problems: list[Problem],
        policy: dict[str, Sequences],
        teacher: dict[str, Sequences],
    ) -> RolloutBatch:
        """What the method sees: one group per (problem, view, source), policy groups first."""
        n = self.recipe.rollout.n
        groups = []
        for source, sampled in (("policy", policy), ("teacher", teacher)):
            for view, seqs in sampled.items():
                stats = (
                    self._token_stats(seqs)
                    if source == "policy" and self.method.needs_token_stats
                    else None
                )
                for i, p in enumerate(problems):
                    rows = slice(i * n, (i + 1) * n)
                    groups.append(
                        Group(
                            p.id,
                            view,
                            source,
                            self.prompt(p, view).text,
                            seqs.texts[rows],
                            reference=p.answer,
                            entropy=stats[0][rows] if stats else None,
                            self_certainty=stats[1][rows] if stats else None,
                        )
                    )
        return RolloutBatch(groups)

    @torch.no_grad()
    def _token_stats(self, seqs: Sequences) -> tuple[list[float], list[float]]:
        """Per response: mean token entropy and self-certainty under the current policy, as
        sampling kept them, else from a no-grad forward."""
        if seqs.entropy is not None and seqs.self_certainty is not None:
            return (
                masked_row_mean(seqs.entropy, seqs.response_mask),
                masked_row_mean(seqs.self_certainty, seqs.response_mask),
            )
        entropy: list[float] = []
        certainty: list[float] = []
        for start, stop in micro_slices(len(seqs), self.recipe.train.micro_batch_size):
            part = seqs.rows(start, stop)
            with self.autocast():
                scores = score_tokens(
                    self.model, part, self.recipe.rollout.temperature, with_stats=True
                )
            entropy += masked_row_mean(scores.entropy, part.response_mask)
            certainty += masked_row_mean(scores.self_certainty, part.response_mask)
        return entropy, certainty

    def view_batches(
        self, batch: RolloutBatch, result: MethodResult, policy: dict[str, Sequences]
    ) -> list[ViewBatch]:
        """Group-normalised advantages of each policy view's responses, in sampling order."""
        n = self.recipe.rollout.n
        advantages: dict[str, list[float]] = {view: [] for view in policy}
        for group, rewards in zip(batch.groups, result.rewards):
            if group.source != "policy":
                continue
            if len(rewards) != n:
                raise RuntimeError(
                    f"method {self.recipe.method.name} returned {len(rewards)} rewards for a group of {n}"
                )
            advantages[group.view] += group_advantages(rewards, std=self.recipe.train.advantage_std)
        return [
            ViewBatch(view, seqs, torch.tensor(advantages[view], dtype=torch.float32))
            for view, seqs in policy.items()
        ]

    def fill_reference_logprobs(self, views: list[ViewBatch]) -> None:
        """Log-probs of the KL anchor: the frozen initial model, or the policy with the teacher in."""
        if self.settings.kl_coef <= 0:
            return
        temperature = self.recipe.rollout.temperature
        if self.reference is not None:
            anchor, context = self.reference, nullcontext()
        else:
            assert self.teacher is not None  # resolve() allows kl_target: teacher only with one
            anchor, context = self.model, self.teacher.swapped_into(self.model)
        with context, self.autocast():
            for vb in views:
                vb.ref_logprobs = reference_logprobs(
                    lambda s: score_tokens(anchor, s, temperature).logprobs,
                    vb.seqs,
                    self.settings.micro_batch_size,
                )

    def metrics(
        self,
        step: int,
        result: MethodResult,
        views: list[ViewBatch],
        train: dict[str, float],
        decay: float | None,
        timings: dict[str, float],
    ) -> dict[str, Any]:
        clash = sorted(set(result.metrics) & set(ENGINE_METRICS))
        if clash:
            raise RuntimeError(
                f"method {self.recipe.method.name} reports '{clash[0]}', a metric the engine writes; rename it"
            )
        lengths = [float(v.seqs.response_mask.sum(-1).float().mean()) for v in views]
        return {
            "step": step,
            **dict.fromkeys(LABEL_METRICS),
            **{k: float(v) for k, v in result.metrics.items()},
            "response_length": sum(lengths) / len(lengths),
            "entropy": train["entropy"],
            "kl": train["kl"] if self.settings.kl_coef > 0 else None,
            "pg_loss": train["pg_loss"],
            "grad_norm": train["grad_norm"],
            "lr": train["lr"],
            "teacher_decay": decay,
            **timings,
        }

    # ------------------------------------------------------------------ saving

    def _write_model(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        share_like_umask(folder)

    def _write_teacher(self, folder: Path) -> None:
        assert self.teacher is not None
        with self.teacher.swapped_into(self.model):
            self._write_model(folder)

    def save(self, step: int, extra_state: dict[str, Any]) -> None:
        trainer_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "method": self.method.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
        }
        state = {
            "step": step,
            "total_steps": self.total_steps,
            "data_position": self.sampler.position(step + 1),
            **extra_state,
        }
        save_checkpoint(
            self.run_dir,
            step,
            write_policy=self._write_model,
            write_teacher=self._write_teacher if self.teacher is not None else None,
            trainer_state=trainer_state,
            state=state,
        )

    def restore(self, trainer_state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(trainer_state["optimizer"])
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        self.method.load_state_dict(trainer_state["method"])
        if self.teacher is not None:
            self.teacher.load_state_dict(trainer_state["teacher"])
        restore_rng(trainer_state["rng"])

    def write_final(self) -> None:
        write_folder_atomic(self.run_dir / runlayout.FINAL, self._write_model)
        if self.teacher is not None:
            write_folder_atomic(self.run_dir / runlayout.FINAL_TEACHER, self._write_teacher)


def _device(kind: str) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("engine.device: cuda was asked for but no GPU is visible; use auto or cpu")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(kind)


def _compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Weights stay fp32 (the optimizer's master copy); bf16/fp16 apply as autocast compute."""
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype == "auto":
        return (
            torch.bfloat16
            if device.type == "cuda" and torch.cuda.is_bf16_supported()
            else torch.float32
        )
    return table[dtype]


# torch's CPU SDPA (a flash-attention kernel) has a cost per call that short sequences never earn
# back: eager attention's two matmuls and softmax train the toy's 64 x 18 tokens 14 % faster (its
# SDPA backward alone was 6 ms of a 60 ms update), break even near 200 tokens and are twice as slow
# at 1,024 (issue 16). Decoding runs `lean_forward`'s own attention either way.
EAGER_ATTENTION_UP_TO = 128


def _load_lm(path: str, dtype: torch.dtype, device: torch.device, max_tokens: int):
    """The model in eval mode, with eager attention on a CPU for sequences of at most
    `EAGER_ATTENTION_UP_TO` tokens (prompt + response)."""
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    model = load_causal_lm(model_source(path), device.type, name)
    short = max_tokens <= EAGER_ATTENTION_UP_TO
    if device.type == "cpu" and short and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation("eager")
    return model.eval()  # eval mode throughout: dropout off, so sampled and trained log-probs agree


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def train(
    recipe: Recipe, run_dir: Path, resume: bool, console: Console, force: bool = False
) -> dict[str, Any]:
    """Run (or continue) a recipe in `run_dir`; returns the summary also written to RUN/summary.json."""
    run_dir = Path(run_dir)
    with rundir.locked(run_dir):
        return _train(recipe, run_dir, resume, console, force)


def _train(
    recipe: Recipe, run_dir: Path, resume: bool, console: Console, force: bool
) -> dict[str, Any]:
    if resume and not force and rundir.is_finished(run_dir):
        saved = load_recipe(run_dir / runlayout.RECIPE, warn=lambda message: None)
        rundir.check_same_recipe(recipe_to_dict(saved), recipe_to_dict(recipe))
        summary = json.loads((run_dir / runlayout.SUMMARY).read_text(encoding="utf-8"))
        console.print(
            f"{run_dir} already finished ({summary.get('steps', '?')} steps); nothing to do"
        )
        return summary
    resumable = rundir.prepare(run_dir, resume=resume, force=force)
    if resume and (run_dir / runlayout.RECIPE).is_file():
        saved = load_recipe(run_dir / runlayout.RECIPE, warn=lambda message: None)
        rundir.check_same_recipe(recipe_to_dict(saved), recipe_to_dict(recipe))
    wall_start = time.perf_counter()
    checkpoint = resumable.folder if resumable is not None else None
    trainer = LocalTrainer(recipe, run_dir, console, checkpoint)
    if resumable is not None:
        state = resumable.state
        trainer.restore(
            resumable.trainer_state
        )  # RNG states last: nothing after this may draw differently
        first, eval_before, seconds_before = (
            state["step"] + 1,
            state["eval_before"],
            state["train_seconds"],
        )
        if resumable.skipped:
            console.print(
                f"[yellow]skipped damaged checkpoints ({'; '.join(resumable.skipped)})[/]"
            )
        console.print(
            f"Resuming {run_dir} from {resumable.folder.name} (step {state['step']} of {trainer.total_steps})"
        )
    else:
        if resume:
            console.print(f"[dim]{run_dir} has no checkpoint yet: starting at step 1[/]")
        write_text_atomic(run_dir / runlayout.RECIPE, dump_recipe(recipe))
        _seed_everything(recipe.seed)
        first, eval_before, seconds_before = 1, None, 0.0
    log = MetricsLog(
        run_dir,
        resume_step=first - 1 if resumable is not None else None,
        tensorboard=recipe.logging.tensorboard,
        wandb_project=recipe.logging.wandb_project,
        config=recipe_to_dict(recipe),
    )
    past = read_metrics(run_dir) if checkpoint is not None else []
    watch = CollapseWatch(console, recipe.train.stop_on_collapse, past)
    try:
        if eval_before is None:
            eval_before = trainer.heldout.evaluate(trainer.model, trainer.tokenizer)
            log.write({"step": 0, **eval_before})
        last_eval = eval_before
        if first > trainer.total_steps:  # killed after its last checkpoint, before final/
            last_eval = trainer.heldout.evaluate(trainer.model, trainer.tokenizer)
        with StepProgress(console, trainer.total_steps, first - 1, eval_before) as progress:
            for step in range(first, trainer.total_steps + 1):
                record = trainer.step(step)
                if step % recipe.output.eval_interval == 0 or step == trainer.total_steps:
                    last_eval = trainer.heldout.evaluate(trainer.model, trainer.tokenizer)
                    record.update(last_eval)
                stop = watch.observe(record)  # adds collapse_risk
                log.write(record)
                progress.advance(record, last_eval)
                if stop:
                    break  # no checkpoint of this step: the last one before the warning stays
                if step % recipe.output.save_interval == 0 or step == trainer.total_steps:
                    spent = seconds_before + time.perf_counter() - wall_start
                    trainer.save(step, {"eval_before": eval_before, "train_seconds": spent})
    finally:
        log.close()
    if watch.stopped_at is None:
        trainer.write_final()
    else:
        keep_checkpoint_as_final(run_dir, runlayout.latest_checkpoint(run_dir), console)
    seconds = seconds_before + time.perf_counter() - wall_start
    summary = _summary(recipe, run_dir, trainer, eval_before, last_eval, seconds)
    summary.update(watch.summary())
    write_json_atomic(run_dir / runlayout.SUMMARY, summary)
    console.print(final_table(summary))
    return summary


def _summary(
    recipe: Recipe, run_dir: Path, trainer: LocalTrainer, before: dict, after: dict, seconds: float
) -> dict[str, Any]:
    steps = [r for r in read_metrics(run_dir) if r["step"] > 0]
    labelled = [
        r["pseudo_label_accuracy"] for r in steps if r.get("pseudo_label_accuracy") is not None
    ]
    tail = labelled[-max(1, len(labelled) // 10) :]
    return {
        "run_dir": str(run_dir),
        "method": recipe.method.name,
        "model": recipe.model.path,
        "steps": trainer.total_steps,
        "eval_before": before,
        "eval_after": after,
        "pseudo_label_accuracy_mean": sum(labelled) / len(labelled) if labelled else None,
        "pseudo_label_accuracy_last": sum(tail) / len(tail) if tail else None,
        "reward_mean": _mean([r["reward_mean"] for r in steps if r.get("reward_mean") is not None]),
        "seconds": round(seconds, 2),
        "seconds_per_step": round(sum(r["step_seconds"] for r in steps) / max(1, len(steps)), 4),
        "device": str(trainer.device),
        "final": str(run_dir / runlayout.FINAL),
        "final_teacher": str(run_dir / runlayout.FINAL_TEACHER)
        if trainer.teacher is not None
        else None,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
