"""OpenRLHF's single controller with the reward method in it.

`train_step` is where a step's samples are all visible. Before OpenRLHF computes anything from
them we group them per (problem, view, source), run the recipe's method (the same code the local
engine runs, on a pool of Ray actors), and overwrite every sample's reward; OpenRLHF's group_norm
advantages then normalise per prompt group, i.e. per (problem, view). After the advantages, each
view's are scaled so the loss combines the views as the recipe says (relabel.view_weights).

Also here: the LR-schedule length (steps with the paired views and drop_last, see
coreward_cli/engines/openrlhf.py), the stop after `max_steps`, the teacher's decay schedule and
its turn on the vLLM engines, the KL anchor when it is the teacher, and `coreward/*` metrics (also
appended to the run's metrics.jsonl).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ray
from openrlhf.trainer.ppo_trainer import PPOTrainer
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

from coreward_plugins.collapse import CollapseDetector
from coreward_plugins.openrlhf.cli_args import csv_views
from coreward_plugins.openrlhf.relabel import (
    build_batch,
    group_samples,
    response_text,
    scale_advantages,
    view_weights,
    write_rewards,
)
from coreward_plugins.openrlhf.reward_actors import RewardPool
from coreward_plugins.openrlhf.samples import CorewardSamplesGenerator
from coreward_plugins.teacher import decay_at


class TeacherAsReference:
    """Stands where OpenRLHF expects the reference group; its `forward` is the policy actors'
    forward with the teacher swapped in. Swap-in, forwards and swap-out run as one unit: the
    swap-out is queued even when dispatch fails, and every error of the three reaches the caller."""

    def __init__(self, actor_group: Any) -> None:
        self.group = actor_group

    def async_run_method_batch(self, method_name: str, **kwargs: Any):
        ray.get(self.group.async_run_method("teacher_in"))
        try:
            refs = self.group.async_run_method_batch(method_name=method_name, **kwargs)
            ray.wait(refs, num_returns=len(refs))  # finished, failed or not: then swap out
        finally:
            ray.get(self.group.async_run_method("teacher_out"))
        return refs  # done; a forward's error is raised where OpenRLHF gets them

    def async_run_method(self, method_name: str, *args: Any, **kwargs: Any):
        return self.group.async_run_method(method_name, *args, **kwargs)


def kl_reference(kl_target: str, reference_group: Any, actor_group: Any) -> Any:
    """What the experience maker asks for reference log-probs. OpenRLHF builds no reference group
    when the KL coefficient is 0, and then the teacher runs no pass either."""
    if kl_target == "teacher" and reference_group is not None:
        return TeacherAsReference(actor_group)
    return reference_group


def seed_prompt_order(loader: Any, seed: int) -> None:
    """Make the epochs' prompt order a function of `seed`: OpenRLHF's controller builds its
    shuffling loader without a seed, so the sampler's generator is seeded from torch's global RNG."""
    loader.sampler.generator.manual_seed(seed)


class CorewardExperienceMaker(RemoteExperienceMaker):
    """OpenRLHF's experience maker, with each view's advantages scaled after they are computed."""

    def compute_advantages_and_returns(self, experiences):
        experiences = super().compute_advantages_and_returns(experiences)
        if self.view_weights:
            scale_advantages(experiences, self.view_weights)
        return experiences


class CorewardPPOTrainer(PPOTrainer.__ray_actor_class__):
    def __init__(
        self,
        pretrain,
        strategy,
        actor_model_group,
        critic_model_group,
        reward_model_group,
        reference_model_group,
        vllm_engines,
        **generate_kwargs,
    ) -> None:
        super().__init__(
            pretrain,
            strategy,
            actor_model_group,
            critic_model_group,
            reward_model_group,
            reference_model_group,
            vllm_engines,
            **generate_kwargs,
        )
        args, cw = self.args, self.args.coreward
        self.policy_views = csv_views(cw.policy_views)
        self.teacher_views = csv_views(cw.teacher_views)
        self.samples_generator = CorewardSamplesGenerator.replacing(self.samples_generator)
        self.samples_generator.before_teacher = self._teacher_to_vllm
        problems = len(self.prompts_dataloader.dataset)
        self.rl_steps = problems // cw.problems_per_step * args.train.num_episodes
        if cw.max_steps is not None:
            self.rl_steps = min(self.rl_steps, cw.max_steps)
        if self.rl_steps < 1:
            raise ValueError(
                f"{problems} problems make no full step of {cw.problems_per_step}: nothing to train"
            )
        # one optimizer step per RL step (train.batch_size = the step's samples, max_epochs = 1)
        self.max_steps = self.rl_steps * args.train.max_epochs
        self.experience_maker = CorewardExperienceMaker(
            actor_model_group,
            critic_model_group,
            reward_model_group,
            kl_reference(cw.kl_target, reference_model_group, actor_model_group),
            self.kl_ctl,
            strategy,
            self.tokenizer,
        )
        self.experience_maker.view_weights = None
        self.rewards = RewardPool(
            cw.method, cw.method_options, cw.reward_actors, timeout_s=cw.score_timeout_s
        )
        seed_prompt_order(self.prompts_dataloader, args.train.seed)
        if cw.wandb:  # entry.prepare_args keeps the key out of args; wandb reads WANDB_API_KEY
            from openrlhf.utils.logging_utils import WandbLogger

            self.wandb_logger = WandbLogger(args)
        self.metrics_file = Path(cw.metrics_file) if cw.metrics_file else None
        self.collapse = CollapseDetector()
        self.stopped_on_collapse: int | None = None

    # ---- the teacher ----
    def _teacher_to_vllm(self) -> None:
        ray.get(self.actor_model_group.async_run_method(method_name="broadcast_teacher_to_vllm"))

    def _decay_for(self, step: int) -> float | None:
        """The EMA decay of the update before step `step` samples (1-based), or None: no update."""
        t = self.args.coreward.teacher
        if not self.teacher_views or step > self.rl_steps or step % t.update_interval:
            return None
        return decay_at(step, self.rl_steps, t.decay_start, t.decay_end, t.schedule)

    # ---- the step ----
    def _token_stats(self, groups) -> dict[int, tuple[list[float], list[float]]]:
        flat = [s for g in groups for s in g.samples]
        refs = self.actor_model_group.async_run_method_batch(
            method_name="token_stats",
            sequences=[s.sequences for s in flat],
            action_mask=[s.action_mask for s in flat],
            attention_mask=[s.attention_mask for s in flat],
        )
        rows = [row for chunk in ray.get(refs) for item in chunk for row in item]
        out, k = {}, 0
        for i, g in enumerate(groups):
            part = rows[k : k + len(g.samples)]
            k += len(g.samples)
            out[i] = ([e for e, _ in part], [c for _, c in part])
        return out

    def relabel(self, rollout_samples) -> dict[str, float]:
        n = self.args.rollout.n_samples_per_prompt
        groups = group_samples(rollout_samples, n, "policy")
        groups += group_samples(self.samples_generator.last_teacher_samples, n, "teacher")
        stats = self._token_stats(groups) if self.args.coreward.token_stats else None
        batch = build_batch(groups, lambda s: response_text(s, self.tokenizer), stats)
        t0 = time.time()
        result = self.rewards.score(batch)
        write_rewards(groups, result)
        metrics = {f"coreward/{k}": float(v) for k, v in result.metrics.items()}
        metrics["coreward/scoring_s"] = time.time() - t0
        refs = [float(s.info["coreward_reference_score"][0]) for s in rollout_samples]
        metrics["coreward/reference_accuracy_vllm"] = sum(refs) / max(len(refs), 1)
        return metrics

    def train_step(self, rollout_samples, global_step: int):
        step = global_step + 1
        metrics = self.relabel(rollout_samples)
        if len(self.policy_views) > 1:
            self.experience_maker.view_weights = view_weights(
                rollout_samples, self.args.coreward.view_loss, self.args.actor.loss_agg_mode
            )
            metrics.update(
                {
                    f"coreward/view_weight/{v}": w
                    for v, w in self.experience_maker.view_weights.items()
                }
            )
        ray.get(
            self.actor_model_group.async_run_method(
                method_name="set_teacher_decay", decay=self._decay_for(step + 1)
            )
        )
        status, next_step = super().train_step(rollout_samples, global_step)
        status.update(metrics)
        if self.teacher_views:
            status["coreward/teacher_decay_this_step"] = self._decay_for(step) or 0.0
        self._watch_collapse(step, status)
        self._log(step, status)
        if next_step >= self.rl_steps or self.stopped_on_collapse is not None:
            self.samples_generator.stop = True
        return status, next_step

    def _watch_collapse(self, step: int, status: dict[str, Any]) -> None:
        """The label-free collapse detector: a metric, one warning line, and the stop when asked."""
        fired_before = self.collapse.fired_at is not None
        assessment = self.collapse.update({**status, "step": step})
        status["coreward/collapse_risk"] = assessment.risk
        if assessment.fired and not fired_before:
            stop = bool(self.args.coreward.stop_on_collapse)
            print(
                f"collapse warning at step {step}: {'; '.join(assessment.reasons)} - "
                + ("stopping (train.stop_on_collapse)" if stop else "training on"),
                flush=True,
            )
            if stop:
                self.stopped_on_collapse = step

    def _log(self, step: int, status: dict[str, Any]) -> None:
        if self.metrics_file is None:
            return
        row = {"step": step, **{k: v for k, v in status.items() if isinstance(v, (int, float))}}
        with self.metrics_file.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def evaluate(self, global_step, **generate_kwargs):
        logs = super().evaluate(global_step, **generate_kwargs)
        self._log(global_step, {f"eval/{k}": v for k, v in logs.items()})
        return logs

    def fit(self, global_step: int = 0) -> None:
        states = self.init_checkpoint_states()
        method_state = states.get("coreward_method_state")
        if method_state is not None:
            self.rewards.load_state_dict(method_state)
        if states.get("coreward_collapse_state") is not None:
            self.collapse.load_state_dict(states["coreward_collapse_state"])
        if states.get("global_step", 0) >= self.rl_steps:
            self.samples_generator.stop = True
        super().fit(global_step)

    def save_logs_and_checkpoints(
        self, global_step: int, logs_dict=None, client_states=None
    ) -> None:
        if self.stopped_on_collapse is not None:
            return  # no checkpoint at or after a collapse warning: the one before it stays newest
        client_states = dict(client_states or {})
        client_states["coreward_method_state"] = self.rewards.state_dict()
        client_states["coreward_collapse_state"] = self.collapse.state_dict()
        super().save_logs_and_checkpoints(global_step, logs_dict, client_states)


CorewardPPOTrainerRemote = ray.remote(CorewardPPOTrainer)
