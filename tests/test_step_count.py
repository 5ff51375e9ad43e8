"""`coreward run --dry-run` and the trainer count a run's problems and steps with one function, so
the plan shows the steps the run takes, also when prompts are dropped for length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from coreward_cli.engines.local import LocalTrainer
from coreward_cli.main import cli
from coreward_cli.resolve import load_recipe

RECIPE = """
model: {{path: '{model}', chat_template: false, system_prompt: null, dtype: fp32}}
data:
  train: [{{original: 'builtin:tiny-arith'}}]
  eval: []
  max_problems: 300
method: {{name: {method}}}
rollout: {{n: 2, temperature: 1.0, max_prompt_tokens: {max_prompt}, max_new_tokens: 4}}
train: {{problems_per_step: 16, epochs: 2, kl_coef: 0.0}}
engine: {{device: cpu, threads: 1}}
"""


@pytest.fixture(scope="module")
def toy_folder(make_toy_folder) -> str:
    return make_toy_folder(seed=0)


@pytest.mark.parametrize(
    ("method", "max_prompt", "dropped"),
    [
        ("majority_vote", 64, False),  # nothing dropped: every original prompt fits
        (
            "co_rewarding_i",
            14,
            True,
        ),  # "sum of 0 and 12?" (16 bytes) is over, "add 5 and 0:" is not
    ],
)
def test_dry_run_counts_what_the_trainer_trains(
    tmp_path: Path, toy_folder: str, method: str, max_prompt: int, dropped: bool
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=toy_folder, method=method, max_prompt=max_prompt))
    result = CliRunner().invoke(
        cli, ["run", str(path), "--dry-run", "--json", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    trainer = LocalTrainer(load_recipe(path), tmp_path / "run", Console(quiet=True), None)
    assert plan["training_problems"] == len(trainer.sampler.problems)
    assert plan["steps"] == trainer.total_steps
    assert (plan["training_problems"] < 300) is dropped
    assert plan["steps"] == 2 * (plan["training_problems"] // 16)
