"""Label-free methods never read reference answers in training: garbage references, same weights.

The references of every training problem are replaced by garbage; a short run of each label-free
method must end with exactly the same weights (only the metrics may differ). `gt`, which does read
them, is the control that shows the swap reaches the training data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from coreward_cli.engines import local
from coreward_cli.resolve import load_recipe

torch.set_num_threads(2)

RECIPE = """
model: {{path: 'builtin:tiny-arith', chat_template: false, system_prompt: null, dtype: fp32}}
data:
  train: [{{original: 'builtin:tiny-arith'}}]
  eval: []
method: {{name: {method}}}
rollout: {{n: 4, temperature: 1.0, max_prompt_tokens: 32, max_new_tokens: 12}}
train: {{problems_per_step: 4, lr: 1.0e-3, warmup_ratio: 0.0, schedule: constant, max_steps: 2, kl_coef: 0.01, micro_batch_size: 64}}
engine: {{device: cpu, threads: 2}}
output: {{dir: 'runs/{{recipe}}', save_interval: 10, eval_interval: 10}}
seed: 11
"""

# One label-free method per code path of the reward (each run trains twice, so not all seven):
# labels from the policy's own votes (co_rewarding_i, which also reads the rephrased view; majority_vote
# is its one-view case), labels from the EMA teacher's votes (co_rewarding_ii; iii only adds the
# rephrased view), token statistics (self_certainty; entropy comes from the same pass), and random.
LABEL_FREE = ["co_rewarding_i", "co_rewarding_ii", "self_certainty", "random"]


def final_weights(
    tmp_path: Path, method: str, garble: bool, monkeypatch
) -> dict[str, torch.Tensor]:
    recipe_path = tmp_path / f"{method}.yaml"
    recipe_path.write_text(RECIPE.format(method=method))
    real = local.load_train_problems  # what the trainer calls
    if garble:
        monkeypatch.setattr(
            local,
            "load_train_problems",
            lambda r: [
                dataclasses.replace(p, answer=f"garbage-{i % 3}") for i, p in enumerate(real(r))
            ],
        )
    out = tmp_path / f"{method}-{'garbled' if garble else 'true'}"
    local.train(load_recipe(recipe_path), out, False, Console(quiet=True))
    monkeypatch.setattr(local, "load_train_problems", real)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    # the comparison means something only if the policy answered and got a real policy gradient
    assert min(r["no_answer_share"] for r in steps) < 0.5, steps
    if not (garble and method == "gt"):  # gt on garbage references has nothing to learn from
        assert max(abs(r["pg_loss"]) + r["grad_norm"] for r in steps) > 1e-4, steps
    return load_file(out / "final" / "model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", LABEL_FREE)
def test_label_free_training_ignores_references(tmp_path, monkeypatch, method):
    true = final_weights(tmp_path, method, garble=False, monkeypatch=monkeypatch)
    garbled = final_weights(tmp_path, method, garble=True, monkeypatch=monkeypatch)
    assert _same(true, garbled), f"{method} training changed when the references changed"


def test_gt_control_does_read_references(tmp_path, monkeypatch):
    true = final_weights(tmp_path, "gt", garble=False, monkeypatch=monkeypatch)
    garbled = final_weights(tmp_path, "gt", garble=True, monkeypatch=monkeypatch)
    assert not _same(true, garbled)
