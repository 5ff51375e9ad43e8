"""The step's rollouts: each problem in every view the method trains on, sampled side by side.

OpenRLHF's dataloader yields one prompt at a time in shuffled order, so an original question and its
rephrasing would rarely meet in one step. We draw `problems_per_step` problems and dispatch each
in all of the method's policy views in one go (the rephrased prompt is rendered from the label with
OpenRLHF's own template code), then wait for the results in dispatch order: every group of n is
contiguous and a problem's views sit next to each other. Methods with a teacher then get the
teacher's rollouts on the teacher views (the trainer swaps the teacher into vLLM first, through the
`before_teacher` callback); those are kept aside, never trained on.

A step never uses a partial batch: when the dataloader runs out with fewer than `problems_per_step`
problems left, they are dropped (verl's drop_last), and the epoch ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
import torch
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator, _collect_prompt_batch
from openrlhf.trainer.ray.vllm_engine import batch_vllm_engine_call

from coreward_plugins.openrlhf.cli_args import csv_views
from coreward_plugins.openrlhf.rows import decode_label, render


class CorewardSamplesGenerator(SamplesGenerator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cw = self.args.coreward
        self.problems_per_step = cw.problems_per_step
        self.policy_views = csv_views(cw.policy_views)
        self.teacher_views = csv_views(cw.teacher_views)
        self.before_teacher: Callable[[], None] | None = None
        self.stop = False  # set by the trainer when max_steps is reached
        self.last_teacher_samples: list[Any] = []
        self._iter = None

    @classmethod
    def replacing(cls, base: SamplesGenerator) -> CorewardSamplesGenerator:
        return cls(
            strategy=base.strategy,
            prompts_dataloader=base.prompts_dataloader,
            eval_dataloader=base.eval_dataloader,
            tokenizer=base.tokenizer,
            vllm_engines=base.vllm_engines,
        )

    def _view_prompt(self, prompt: str, label: Any, view: str) -> str:
        if view == "original":
            return prompt
        rephrased = decode_label(label).rephrased
        if rephrased is None:
            raise ValueError(
                f"problem {decode_label(label).id} has no rephrased question, which the method needs"
            )
        template = (
            self.tokenizer.apply_chat_template if self.args.data.apply_chat_template else None
        )
        return render(rephrased, template, self.args.data.input_template)

    def _sample(
        self, prompts: list[str], labels: list[Any], views: tuple[str, ...], **kw: Any
    ) -> list[Any]:
        """n samples for every (problem, view), groups in dispatch order."""
        out_prompts, out_labels = [], []
        for prompt, label in zip(prompts, labels):
            for view in views:
                out_prompts.append(self._view_prompt(prompt, label, view))
                out_labels.append(decode_label(label).as_view(view).encode())
        refs = self._dispatch_prompts_to_vllm(
            out_prompts, out_labels, images=[None] * len(out_prompts), **kw
        )
        samples = []
        for responses in ray.get(refs):  # in dispatch order
            samples.extend(self._process_response_into_experience(r, **kw) for r in responses)
        return samples

    @torch.no_grad()
    def generate_samples(self, **generate_kwargs: Any):
        """(policy samples, filter pass rate, problems consumed, exhausted), as OpenRLHF expects."""
        if self.stop:
            return [], None, 0, True
        if self._iter is None:
            self._iter = iter(self.prompts_dataloader)
        prompts, labels, _, exhausted = _collect_prompt_batch(self._iter, self.problems_per_step)
        if exhausted:
            self._iter = None
        if len(prompts) < self.problems_per_step:
            return [], None, len(prompts), True
        if self.args.vllm.enable_sleep:
            batch_vllm_engine_call(self.vllm_engines, "wake_up")
        try:
            policy = self._sample(prompts, labels, self.policy_views, **generate_kwargs)
            self.last_teacher_samples = []
            if self.teacher_views:
                if self.before_teacher is not None:
                    self.before_teacher()
                self.last_teacher_samples = self._sample(
                    prompts, labels, self.teacher_views, **generate_kwargs
                )
        finally:
            if self.args.vllm.enable_sleep:
                batch_vllm_engine_call(self.vllm_engines, "sleep")
        return policy, None, len(prompts), exhausted
