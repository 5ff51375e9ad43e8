"""OpenRLHF's policy actor with the EMA teacher beside it (one per DeepSpeed rank).

Ray actor classes cannot be subclassed; we subclass `PolicyModelActor.__ray_actor_class__` and wrap
the result with `ray.remote(num_gpus=1)` again (OpenRLHF's own decorator).

Teacher timeline (official Co-rewarding-II order). The update for step k+1 uses the weights that
sample step k+1's rollouts, i.e. the weights right after step k's optimizer step; we apply it at the
end of step k's `fit`, where DeepSpeed's fp32 master weights are loaded even in sleep mode. Step 1's
update would mix the base model with itself, a no-op. The teacher then samples step k+1 after
`broadcast_teacher_to_vllm`, and train_step's ordinary broadcast puts the student back.
Checkpoints: `{ckpt.path}/_teacher/{tag}/`, written with every `save_checkpoint`, pruned with
OpenRLHF's rotation of `_actor/`, read back on `--ckpt.load_enable`. The final teacher is saved as a
Hugging Face folder beside the policy: `{ckpt.output_dir}_teacher`.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import ray
import torch
from openrlhf.trainer.ray.launcher import ReferenceModelActor
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor
from openrlhf.utils.deepspeed.deepspeed_utils import (
    offload_deepspeed_states,
    reload_deepspeed_states,
)

from coreward_plugins.openrlhf.cli_args import csv_views
from coreward_plugins.openrlhf.teacher import ShadowTeacher


def teacher_dir(ckpt_path: str, tag: str) -> Path:
    return Path(ckpt_path) / "_teacher" / tag


class CorewardPolicyActor(PolicyModelActor.__ray_actor_class__):
    def init_model_from_pretrained(self, strategy, pretrain, max_steps=None, vllm_engines=None):
        super().init_model_from_pretrained(strategy, pretrain, max_steps, vllm_engines)
        args = strategy.args
        self.teacher: ShadowTeacher | None = None
        self._next_decay: float | None = None
        if not csv_views(args.coreward.teacher_views):
            return
        if args.ds.enable_sleep:
            reload_deepspeed_states(self.actor.model)
        engine = self.actor.model
        self.teacher = ShadowTeacher(
            engine.module,
            zero_stage=args.ds.zero_stage,
            release_gathered=engine.empty_partition_cache,
        )
        if args.ds.enable_sleep:
            offload_deepspeed_states(self.actor.model)
        latest = Path(args.ckpt.path) / "_actor" / "latest"
        if args.ckpt.load_enable and latest.exists():
            tag = latest.read_text().strip()
            source = teacher_dir(args.ckpt.path, tag)
            if not (source / "teacher_meta.json").exists():
                raise RuntimeError(
                    f"resume: the policy checkpoint {tag} has no teacher at {source}"
                )
            self.teacher.load(source)
            strategy.print(f"coreward: teacher restored from {source}")

    # ---- the EMA update, applied at the end of the step's fit ----
    def set_teacher_decay(self, decay: float | None) -> None:
        self._next_decay = decay

    def fit(self, kl_ctl: float = 0):
        status = super().fit(kl_ctl)
        if self.teacher is not None and self._next_decay is not None:
            self.teacher.update(self._next_decay)
            status["coreward/teacher_decay"] = self._next_decay
            self._next_decay = None
        return status

    # ---- the teacher in the live weights ----
    def broadcast_teacher_to_vllm(self) -> None:
        with self.teacher.swapped_in():
            self.trainer.broadcast_to_vllm()

    def teacher_in(self) -> None:
        self.teacher.enter_swap()

    def teacher_out(self) -> None:
        self.teacher.exit_swap()

    # ---- checkpoints and the final save ----
    def save_checkpoint(self, tag, client_states=None, metric_value=None, metric_key=None):
        super().save_checkpoint(tag, client_states, metric_value, metric_key)
        if self.teacher is None:
            return
        args = self.strategy.args
        teachers = Path(args.ckpt.path) / "_teacher"
        if torch.distributed.get_rank() == 0 and teachers.is_dir():
            # follow OpenRLHF's rotation of _actor/, before writing, so that the disk never
            # holds more teachers than kept checkpoints
            actor_dir = Path(args.ckpt.path) / "_actor"
            for old in teachers.iterdir():
                if old.is_dir() and not (actor_dir / old.name).exists():
                    shutil.rmtree(old, ignore_errors=True)
        self.teacher.save(teacher_dir(args.ckpt.path, tag))

    def save_model(self):
        super().save_model()
        if self.teacher is not None:
            args = self.strategy.args
            with self.teacher.swapped_in():
                self.strategy.save_model(
                    self.actor, self.tokenizer, args.ckpt.output_dir.rstrip("/") + "_teacher"
                )

    # ---- per-response token statistics (entropy / self-certainty methods) ----
    def token_stats(self, sequences, action_mask, attention_mask, **unused):
        """Mean token entropy and self-certainty KL(U || p) of each row's response, one row at a time
        (a row's full-vocabulary logits are large)."""
        device = torch.cuda.current_device()
        rows = []
        self.actor.eval()
        with torch.no_grad():
            for i in range(sequences.shape[0]):
                act = action_mask[i : i + 1].to(device)
                _, output = self.actor(
                    sequences[i : i + 1].to(device),
                    act,
                    attention_mask[i : i + 1].to(device),
                    return_output=True,
                    ring_attn_group=self.strategy.ring_attn_group,
                )
                logp = output["logits"][:, :-1][:, -act.shape[1] :].log_softmax(-1)
                entropy = -(logp.exp() * logp).sum(-1)
                certainty = -logp.mean(-1) - math.log(logp.shape[-1])
                mask = act.float()
                denom = mask.sum().clamp(min=1.0)
                rows.append(
                    (
                        ((entropy * mask).sum() / denom).item(),
                        ((certainty * mask).sum() / denom).item(),
                    )
                )
                del output, logp
        self.actor.train()
        return rows


class TeacherKLStandIn(ReferenceModelActor.__ray_actor_class__):
    """Takes the reference group's place when the KL anchor is the teacher: it loads no model (the
    teacher's log-probs come from the policy actors, see trainer.TeacherAsReference)."""

    def init_model_from_pretrained(self, strategy, pretrain):
        self.strategy = strategy

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "coreward: the teacher KL stand-in computes nothing; the trainer routes to the policy actors"
        )

    def empty_cache(self) -> None:
        pass


CorewardPolicyActorRemote = ray.remote(num_gpus=1)(CorewardPolicyActor)
TeacherKLStandInRemote = ray.remote(num_gpus=1)(TeacherKLStandIn)
