"""The local engine: label-free GRPO in one process, on the CPU or one GPU.

Each step: draw problems, sample every view the method asks for (the EMA teacher's views too,
after its update), score them with the method, turn rewards into group advantages, and make one
on-policy PPO-clip update (+ KL) over the policy's views. Greedy held-out accuracy is measured
before, every `eval_interval` steps and after. Checkpoints restore everything that shapes the
next step (weights, optimizer, scheduler, teacher, method state, RNG states, data position), so a
resumed CPU run ends bit for bit where an uninterrupted one does.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from coreward_cli.data import Problem
from coreward_cli.engines import rundir
from coreward_cli.engines.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from coreward_cli.engines.heldout import HeldOut
from coreward_cli.engines.optim import build_optimizer
from coreward_cli.engines.progress import StepProgress, final_table
from coreward_cli.engines.rollout import Sequences, generate, masked_row_mean, score_tokens
from coreward_cli.engines.sampler import ProblemSampler
from coreward_cli.engines.tracking import MetricsLog
from coreward_cli.engines.update import (
    UpdateSettings,
    ViewBatch,
    micro_slices,
    policy_update,
    reference_logprobs,
)
from coreward_cli.errors import UserError
from coreward_cli.recipe import Recipe, TeacherConfig

TIMING_KEYS = ("step_seconds", "generate_seconds", "reward_seconds", "train_seconds")


@dataclass
class StepRollouts:
    groups: list  # coreward_plugins.batch.Group, policy groups first then teacher groups
    policy: dict[str, Sequences] = field(
        default_factory=dict
    )  # view -> sequences (problem-major, n per problem)


class LocalTrainer:
    """Everything one run holds; `train()` below drives it."""

    def __init__(
        self, recipe: Recipe, run_dir: Path, console: Console, checkpoint: Path | None
    ) -> None:
        from transformers.utils import logging as hf_logging

        from coreward_plugins.methods import MethodOptions, get_method

        hf_logging.disable_progress_bar()  # per-load and per-save bars would drown the step bar
        self.recipe, self.run_dir, self.console = recipe, run_dir, console
        if recipe.engine.threads:
            torch.set_num_threads(recipe.engine.threads)
        self.device = _device(recipe.engine.device)
        self.compute_dtype = _compute_dtype(recipe.model.dtype, self.device)
        try:
            method_cls = get_method(recipe.method.name)
        except ValueError as exc:
            raise UserError(f"method.name: {exc}") from None
        m = recipe.method
        self.method = method_cls(
            MethodOptions(
                m.match,
                tuple(m.extract_fallbacks),
                m.tie,
                m.min_votes,
                m.match_timeout_s,
                recipe.seed,
            )
        )
        t = recipe.train
        if t.kl_coef > 0 and t.kl_target == "teacher" and not self.method.needs_teacher:
            raise UserError(
                f"train.kl_target: teacher needs a method with a teacher (co_rewarding_ii/iii), not {m.name}; use initial"
            )
        self.teacher_cfg = recipe.teacher or TeacherConfig()

        from coreward_cli.models import load_tokenizer, model_source, resolve_model

        self.base_path = resolve_model(recipe.model.path)
        self.tokenizer = load_tokenizer(model_source(self.base_path))
        self.model = _load_lm(
            str(checkpoint / "policy") if checkpoint else self.base_path, torch.float32, self.device
        )
        self.model.requires_grad_(True)
        self.reference = None
        if t.kl_coef > 0 and t.kl_target == "initial":
            self.reference = _load_lm(
                self.base_path, self.compute_dtype, self.device
            ).requires_grad_(False)
        self.teacher = None
        if self.method.needs_teacher:
            from coreward_plugins.teacher import EmaTeacher

            self.teacher = EmaTeacher.from_module(self.model, device=self.device)

        from coreward_cli.evaluate import PromptStyle

        self.prompt_style = PromptStyle(recipe.model.system_prompt, recipe.model.chat_template)
        self.views = tuple(dict.fromkeys((*self.method.policy_views, *self.method.teacher_views)))
        self.problems = self._training_problems()
        self.sampler = ProblemSampler(self.problems, t.problems_per_step, recipe.data.shuffle_seed)
        self.total_steps = t.max_steps or t.epochs * self.sampler.steps_per_epoch
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

    # ------------------------------------------------------------------ data

    def prompt(self, problem: Problem, view: str) -> tuple[str, bool]:
        question = problem.question if view == "original" else problem.rephrased
        text, needs_special = self.prompt_style.render(self.tokenizer, question)
        return text, not needs_special

    def _training_problems(self) -> list[Problem]:
        from coreward_cli.data import load_train_problems

        problems = load_train_problems(self.recipe)
        if self.recipe.data.max_problems is not None:
            problems = problems[: self.recipe.data.max_problems]
        if "rephrased" in self.views:
            lacking = sum(p.rephrased is None for p in problems)
            if lacking == len(problems):
                raise UserError(
                    f"method {self.recipe.method.name} trains on rephrased questions, but data.train has none; "
                    "set data.train[].rephrased or data.rephrased_key"
                )
            problems = [p for p in problems if p.rephrased is not None]
        limit = self.recipe.rollout.max_prompt_tokens
        kept = [p for p in problems if all(self._prompt_tokens(p, v) <= limit for v in self.views)]
        if len(kept) < len(problems):
            self.console.print(
                f"[dim]{len(problems) - len(kept)} problems dropped: prompt longer than rollout.max_prompt_tokens={limit}[/]"
            )
        if len(kept) < self.recipe.train.problems_per_step:
            raise UserError(
                f"train.problems_per_step is {self.recipe.train.problems_per_step} but only {len(kept)} training problems "
                "are usable; lower it or add data"
            )
        return kept

    def _prompt_tokens(self, problem: Problem, view: str) -> int:
        text, chat = self.prompt(problem, view)
        return len(self.tokenizer(text, add_special_tokens=not chat).input_ids)

    # ------------------------------------------------------------------ one step

    def autocast(self):
        if self.compute_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def _sample(self, problems: list[Problem], view: str, n: int) -> Sequences:
        rendered = [self.prompt(p, view) for p in problems]
        r = self.recipe.rollout
        with self.autocast():
            return generate(
                self.model,
                self.tokenizer,
                [text for text, _ in rendered],
                n=n,
                temperature=r.temperature,
                top_p=r.top_p,
                max_new_tokens=r.max_new_tokens,
                chat_template=rendered[0][1],
            )

    def rollouts(self, step: int, problems: list[Problem]) -> tuple[StepRollouts, float | None]:
        from coreward_plugins.batch import Group

        n = self.recipe.rollout.n
        out = StepRollouts(groups=[])
        for view in self.method.policy_views:
            seqs = self._sample(problems, view, n)
            out.policy[view] = seqs
            if self.method.needs_token_stats:
                entropy, certainty = self._token_stats(seqs)
            for i, p in enumerate(problems):
                rows = slice(i * n, (i + 1) * n)
                out.groups.append(
                    Group(
                        p.id,
                        view,
                        "policy",
                        self.prompt(p, view)[0],
                        seqs.texts[rows],
                        reference=p.answer,
                        entropy=entropy[rows] if self.method.needs_token_stats else None,
                        self_certainty=certainty[rows] if self.method.needs_token_stats else None,
                    )
                )
        decay = None
        if self.teacher is not None:
            # The official order: the teacher moves toward the policy that just sampled, then samples.
            if step % self.teacher_cfg.update_interval == 0:
                from coreward_plugins.teacher import decay_at

                tc = self.teacher_cfg
                decay = decay_at(step, self.total_steps, tc.decay_start, tc.decay_end, tc.schedule)
                self.teacher.update(self.model.named_parameters(), decay)
            with self.teacher.swapped_into(self.model):
                for view in self.method.teacher_views:
                    seqs = self._sample(problems, view, n)
                    for i, p in enumerate(problems):
                        out.groups.append(
                            Group(
                                p.id,
                                view,
                                "teacher",
                                self.prompt(p, view)[0],
                                seqs.texts[i * n : (i + 1) * n],
                                reference=p.answer,
                            )
                        )
        return out, decay

    @torch.no_grad()
    def _token_stats(self, seqs: Sequences) -> tuple[list[float], list[float]]:
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

    def _reference_scorer(self):
        temperature = self.recipe.rollout.temperature
        if self.reference is not None:
            return nullcontext(), lambda s: score_tokens(self.reference, s, temperature).logprobs
        return self.teacher.swapped_into(
            self.model
        ), lambda s: score_tokens(self.model, s, temperature).logprobs

    def step(self, step: int) -> dict[str, Any]:
        from coreward_plugins.advantages import group_advantages
        from coreward_plugins.batch import RolloutBatch

        started = time.perf_counter()
        problems = self.sampler.batch(step)
        rolled, decay = self.rollouts(step, problems)
        generated = time.perf_counter()
        result = self.method.score(RolloutBatch(rolled.groups))
        scored = time.perf_counter()

        n = self.recipe.rollout.n
        advantages: dict[str, list[float]] = {view: [] for view in rolled.policy}
        rewards: list[float] = []
        for group, group_rewards in zip(rolled.groups, result.rewards):
            if group.source == "policy":
                if len(group_rewards) != n:
                    raise RuntimeError(
                        f"method {self.recipe.method.name} returned {len(group_rewards)} rewards for a group of {n}"
                    )
                advantages[group.view] += group_advantages(
                    group_rewards, std=self.recipe.train.advantage_std
                )
                rewards += group_rewards
        views = [
            ViewBatch(view, seqs, torch.tensor(advantages[view], dtype=torch.float32))
            for view, seqs in rolled.policy.items()
        ]
        if self.settings.kl_coef > 0:
            context, scorer = self._reference_scorer()
            with context, self.autocast():
                for vb in views:
                    vb.ref_logprobs = reference_logprobs(
                        scorer, vb.seqs, self.settings.micro_batch_size
                    )
        train = policy_update(
            self.model, self.optimizer, self.scheduler, views, self.settings, self.autocast
        )
        done = time.perf_counter()

        lengths = [float(v.seqs.response_mask.sum(-1).float().mean()) for v in views]
        record: dict[str, Any] = {
            "step": step,
            "reward_mean": sum(rewards) / max(1, len(rewards)),
            "pseudo_label_accuracy": None,
            "agreement_share": None,
            "no_answer_share": None,
            "clusters_per_group": None,
            **{k: float(v) for k, v in result.metrics.items()},
            "response_length": sum(lengths) / len(lengths),
            "entropy": train["entropy"],
            "kl": train["kl"] if self.settings.kl_coef > 0 else None,
            "pg_loss": train["pg_loss"],
            "grad_norm": train["grad_norm"],
            "lr": train["lr"],
            "teacher_decay": decay,
            "step_seconds": done - started,
            "generate_seconds": generated - started,
            "reward_seconds": scored - generated,
            "train_seconds": done - scored,
        }
        return record

    # ------------------------------------------------------------------ saving

    def _write_model(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def _write_teacher(self, folder: Path) -> None:
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
        rundir.write_folder_atomic(self.run_dir / rundir.FINAL, self._write_model)
        if self.teacher is not None:
            rundir.write_folder_atomic(self.run_dir / rundir.FINAL_TEACHER, self._write_teacher)


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


def _load_lm(path: str, dtype: torch.dtype, device: torch.device):
    from coreward_cli.models import load_causal_lm, model_source

    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    model = load_causal_lm(model_source(path), device.type, name)
    return model.eval()  # eval mode throughout: dropout off, so sampled and trained log-probs agree


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def train(
    recipe: Recipe, run_dir: Path, resume: bool, console: Console, force: bool = False
) -> dict[str, Any]:
    """Run (or continue) a recipe in `run_dir`; returns the summary also written to RUN/summary.json."""
    from coreward_cli.recipe import dump_recipe, recipe_to_dict

    run_dir = Path(run_dir)
    checkpoint = rundir.prepare(run_dir, resume=resume, force=force)
    if resume and (run_dir / rundir.RECIPE).is_file():
        from coreward_cli.recipe import load_recipe

        saved = load_recipe(run_dir / rundir.RECIPE, warn=lambda message: None)
        rundir.check_same_recipe(recipe_to_dict(saved), recipe_to_dict(recipe))
    wall_start = time.perf_counter()
    trainer = LocalTrainer(recipe, run_dir, console, checkpoint)
    if checkpoint is not None:
        trainer_state, state = load_checkpoint(checkpoint)
        trainer.restore(trainer_state)  # RNG states last: nothing after this may draw differently
        first, eval_before, seconds_before = (
            state["step"] + 1,
            state["eval_before"],
            state["train_seconds"],
        )
        console.print(
            f"Resuming {run_dir} from {checkpoint.name} (step {state['step']} of {trainer.total_steps})"
        )
    else:
        if resume:
            console.print(f"[dim]{run_dir} has no checkpoint yet: starting at step 1[/]")
        (run_dir / rundir.RECIPE).write_text(dump_recipe(recipe), encoding="utf-8")
        _seed_everything(recipe.seed)
        first, eval_before, seconds_before = 1, None, 0.0
    log = MetricsLog(
        run_dir,
        resume_step=first - 1 if checkpoint is not None else None,
        tensorboard=recipe.logging.tensorboard,
        wandb_project=recipe.logging.wandb_project,
        config=recipe_to_dict(recipe),
    )
    from coreward_cli.engines.collapse_watch import CollapseWatch, keep_checkpoint_as_final
    from coreward_cli.engines.tracking import read_metrics

    past = read_metrics(run_dir) if checkpoint is not None else []
    watch = CollapseWatch(console, recipe.train.stop_on_collapse, past)
    try:
        if eval_before is None:
            eval_before = trainer.heldout.evaluate(trainer.model, trainer.tokenizer)
            log.write({"step": 0, **eval_before})
        last_eval = eval_before
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
        from coreward_cli.engines.checkpoint import latest_checkpoint

        keep_checkpoint_as_final(run_dir, latest_checkpoint(run_dir), console)
    seconds = seconds_before + time.perf_counter() - wall_start
    summary = _summary(recipe, run_dir, trainer, eval_before, last_eval, seconds)
    summary.update(watch.summary())
    rundir.write_json_atomic(run_dir / rundir.SUMMARY, summary)
    console.print(final_table(summary))
    return summary


def _summary(
    recipe: Recipe, run_dir: Path, trainer: LocalTrainer, before: dict, after: dict, seconds: float
) -> dict[str, Any]:
    from coreward_cli.engines.tracking import read_metrics

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
        "reward_mean": sum(r["reward_mean"] for r in steps) / max(1, len(steps)),
        "seconds": round(seconds, 2),
        "seconds_per_step": round(sum(r["step_seconds"] for r in steps) / max(1, len(steps)), 4),
        "device": str(trainer.device),
        "final": str(run_dir / rundir.FINAL),
        "final_teacher": str(run_dir / rundir.FINAL_TEACHER)
        if trainer.teacher is not None
        else None,
    }
