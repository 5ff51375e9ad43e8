"""The local engine end to end through `coreward run`: artifacts, refusal, other model shapes, accuracy."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from coreward_cli.main import cli

torch.set_num_threads(2)

SHORT = """
model: {{path: '{model}', chat_template: false, system_prompt: null, dtype: fp32}}
data:
  train: [{{original: 'builtin:tiny-arith'}}]
  eval: [arithmetic]
  eval_limit: 48
method: {{name: {method}}}
rollout: {{n: 4, temperature: 0.6, max_prompt_tokens: 32, max_new_tokens: 8}}
train: {{problems_per_step: 4, lr: 3.0e-5, warmup_ratio: 0.0, schedule: constant, max_steps: {steps}, kl_coef: {kl}, micro_batch_size: 64}}
engine: {{device: cpu, threads: 2}}
output: {{dir: 'runs/{{recipe}}', save_interval: 2, eval_interval: 2}}
logging: {{tensorboard: {tb}}}
seed: 3
"""


@pytest.fixture(scope="module")
def toy_folder(make_toy_folder) -> str:
    return make_toy_folder(seed=1)


def write_recipe(
    folder: Path,
    model: str,
    method: str = "co_rewarding_i",
    steps: int = 3,
    kl: float = 0.0,
    tb: bool = False,
    name: str = "short",
) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        SHORT.format(model=model, method=method, steps=steps, kl=kl, tb=str(tb).lower())
    )
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)


def test_cli_run_writes_every_artifact(tmp_path, toy_folder):
    recipe = write_recipe(tmp_path, toy_folder, steps=3, kl=0.005, tb=True)
    out = tmp_path / "run"
    result = invoke(str(recipe), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert set(summary["eval_before"]) == {"eval/arithmetic", "eval_accuracy"}
    assert (out / "recipe.yaml").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    step1 = records[1]
    # the untrained model writes no \boxed{} answer: co_rewarding_i's metrics say so (the record starts
    # them at None), and there is no label to judge nor vote to agree with
    assert (step1["no_answer_share"], step1["label_rate"], step1["reward_mean"]) == (1.0, 0.0, 0.0)
    assert step1["clusters_per_group"] == 0.0 and step1["reference_accuracy"] == 0.0
    assert step1["pseudo_label_accuracy"] is None and step1["agreement_share"] is None
    assert step1["response_length"] > 0 and step1["entropy"] > 0 and step1["step_seconds"] > 0
    assert step1["kl"] == pytest.approx(0.0, abs=1e-6)  # kl_coef > 0; step 1 is still the reference
    assert step1["lr"] == pytest.approx(3.0e-5)  # constant schedule, no warmup
    assert step1["teacher_decay"] is None  # co_rewarding_i has no teacher
    assert "eval_accuracy" in records[2] and "eval_accuracy" not in records[1]
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-000003"
    for step in ("step-000002", "step-000003"):
        for part in (
            "policy/config.json",
            "policy/model.safetensors",
            "trainer_state.pt",
            "state.json",
        ):
            assert (ckpts / step / part).is_file(), f"{step}/{part}"
    assert not (ckpts / "step-000002" / "teacher").exists()  # co_rewarding_i has no teacher
    state = json.loads((ckpts / "step-000002" / "state.json").read_text())
    assert state["step"] == 2 and state["data_position"] == {"epoch": 0, "offset": 8}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert tok("12+3=").input_ids and model.config.vocab_size == 260

    again = invoke(str(recipe), "--out", str(out))  # a second run never overwrites silently
    assert again.exit_code == 2
    assert (
        "--resume" in again.output
        and "--force" in again.output
        and len(again.output.strip().splitlines()) == 1
    )


def test_force_starts_over_and_dry_run_runs_nothing(tmp_path, toy_folder):
    recipe = write_recipe(tmp_path, toy_folder, steps=1)
    out = tmp_path / "run"
    assert invoke(str(recipe), "--out", str(out)).exit_code == 0
    (out / "keep.txt").write_text("mine")
    dry = invoke(str(recipe), "--out", str(out), "--dry-run", "--json")
    plan = json.loads(dry.stdout)["plan"]
    assert plan["action"].startswith("refuse") and plan["policy_views"] == ["original", "rephrased"]
    assert plan["samples_per_step"] == 4 * 4 * 2
    assert (
        invoke(str(recipe), "--out", str(out), "--force", "--set", "train.max_steps=2").exit_code
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert (out / "keep.txt").read_text() == "mine"  # --force removes only what a run writes


def test_teacher_method_writes_teacher_folders(tmp_path, toy_folder):
    recipe = write_recipe(tmp_path, toy_folder, method="co_rewarding_ii", steps=2, kl=0.001)
    out = tmp_path / "run"
    result = invoke(str(recipe), "--out", str(out), "--set", "train.kl_target=teacher")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[1]["teacher_decay"] == pytest.approx(0.99)
    assert (out / "checkpoints" / "step-000002" / "teacher" / "model.safetensors").is_file()
    assert (out / "final_teacher" / "model.safetensors").is_file()
    from safetensors.torch import load_file

    policy = load_file(out / "final" / "model.safetensors")
    teacher = load_file(out / "final_teacher" / "model.safetensors")
    moved = [k for k in policy if not torch.equal(policy[k], teacher[k])]
    assert moved  # the teacher trails the policy


@pytest.mark.parametrize("shape", ["llama", "gpt2"])
def test_a_differently_shaped_model_trains_from_a_folder(tmp_path, shape):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from coreward_cli.toy import build_tokenizer

    tok = build_tokenizer()
    if shape == "llama":
        config = LlamaConfig(
            vocab_size=260,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(
            vocab_size=260,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        model = GPT2LMHeadModel(config)
    folder = tmp_path / shape
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    recipe = write_recipe(tmp_path, str(folder), method="random", steps=2, kl=0.01)
    out = tmp_path / "run"
    result = invoke(str(recipe), "--out", str(out))
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    before = load_file(folder / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["grad_norm"] > 0


@pytest.mark.slow
def test_tiny_recipe_raises_held_out_accuracy_on_three_seeds(tmp_path):
    """The must-show: co_rewarding_i lifts greedy held-out accuracy by >= 8 points on average, every seed up."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny_cpu.yaml"
    gains = []
    for seed in (1, 2, 3):
        out = tmp_path / f"seed{seed}"
        result = invoke(str(recipe), "--out", str(out), "--set", f"seed={seed}", "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        gains.append(
            summary["eval_after"]["eval_accuracy"] - summary["eval_before"]["eval_accuracy"]
        )
    assert min(gains) > 0, gains
    assert statistics.mean(gains) >= 0.08, gains


def test_short_sequences_train_with_eager_attention_on_a_cpu(make_toy_folder) -> None:
    """Eager attention up to EAGER_ATTENTION_UP_TO tokens on a CPU, the model's own (SDPA) past it."""
    from coreward_cli.engines.local import EAGER_ATTENTION_UP_TO, _load_lm

    cpu, path = torch.device("cpu"), make_toy_folder(seed=1)
    short = _load_lm(path, torch.float32, cpu, EAGER_ATTENTION_UP_TO)
    long = _load_lm(path, torch.float32, cpu, EAGER_ATTENTION_UP_TO + 1)
    assert short.config._attn_implementation == "eager"
    assert long.config._attn_implementation == "sdpa"
