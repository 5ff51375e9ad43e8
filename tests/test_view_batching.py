"""The local engine samples a step's views in one decoding batch; each view comes back as if it had
been sampled alone: its own prompts, its own padding, its rows in problem order."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest import mock

import pytest
import torch
from rich.console import Console

from coreward_cli.engines.local import LocalTrainer
from coreward_cli.resolve import load_recipe
from coreward_cli.sampling import sample

RECIPE = """
model: {{path: '{model}', chat_template: false, system_prompt: null, dtype: fp32}}
data:
  train: [{{original: 'builtin:tiny-arith'}}]
  eval: []
  max_problems: 40
method: {{name: co_rewarding_i}}
rollout: {{n: 3, temperature: 1.0, max_prompt_tokens: 64, max_new_tokens: 6}}
train: {{problems_per_step: 4, kl_coef: 0.0}}
engine: {{device: cpu, threads: 1}}
"""


def test_views_sampled_together_equal_each_view_alone(tmp_path: Path, make_toy_folder) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=make_toy_folder(seed=1)))
    trainer = LocalTrainer(load_recipe(path), tmp_path / "run", Console(quiet=True), None)
    problems = trainer.sampler.batch(1)
    greedy = lambda *args, **kw: sample(*args, **{**kw, "temperature": 0.0})  # noqa: E731
    with mock.patch("coreward_cli.engines.local.sample", greedy):  # so both ways agree exactly
        together = trainer.sample_views(problems, ("original", "rephrased"))
    assert list(together) == ["original", "rephrased"]
    for view, got in together.items():
        prompts = [trainer.prompt(p, view) for p in problems]
        alone = sample(
            trainer.model, trainer.tokenizer, prompts, n=3, temperature=0.0, top_p=1.0,
            max_new_tokens=6,
        )  # fmt: skip
        # greedy, so the same tokens; the prompt width is the view's own (no other view's padding)
        assert torch.equal(got.prompt_ids, alone.prompt_ids)
        assert torch.equal(got.prompt_mask, alone.prompt_mask)
        assert torch.equal(got.response_ids, alone.response_ids)
        assert torch.equal(got.response_mask, alone.response_mask)
        assert got.texts == alone.texts
    widths = {view: seqs.prompt_ids.shape[1] for view, seqs in together.items()}
    assert widths["original"] < widths["rephrased"]  # the shorter view is not padded to the longer


def test_token_stats_for_rewards_come_from_sampling(tmp_path: Path, make_toy_folder) -> None:
    """Self-certainty and entropy rewards read each policy response's token statistics as sampling
    kept them (no forward), and they equal a no-grad forward's."""
    path = tmp_path / "r.yaml"
    path.write_text(
        RECIPE.format(model=make_toy_folder(seed=1)).replace("co_rewarding_i", "self_certainty")
    )
    trainer = LocalTrainer(load_recipe(path), tmp_path / "run", Console(quiet=True), None)
    problems = trainer.sampler.batch(1)
    seqs = trainer.sample_views(problems, ("original",), with_stats=True)["original"]
    import coreward_cli.engines.local as local

    with mock.patch.object(local, "score_tokens", wraps=local.score_tokens) as forwards:
        kept = trainer._token_stats(seqs)
        assert forwards.call_count == 0
        forward = trainer._token_stats(dataclasses.replace(seqs, entropy=None, self_certainty=None))
        assert forwards.call_count  # without kept statistics, a forward
    for got, expected in zip(kept, forward):
        assert len(got) == len(seqs) and got == pytest.approx(expected, abs=1e-5)
