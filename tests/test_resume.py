"""Resuming continues bit for bit; a checkpoint write that fails halfway leaves the previous one whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from coreward_cli import runlayout
from coreward_cli.engines import checkpoint as ckpt
from coreward_cli.engines import local
from coreward_cli.resolve import load_recipe

torch.set_num_threads(2)

RECIPE = """
model: {{path: '{model}', chat_template: false, system_prompt: null, dtype: fp32}}
data:
  train: [{{original: 'builtin:tiny-arith'}}]
  eval: [arithmetic]
  eval_limit: 32
method: {{name: {method}}}
rollout: {{n: 4, temperature: 0.8, max_prompt_tokens: 32, max_new_tokens: 8}}
train: {{problems_per_step: 4, lr: 1.0e-4, warmup_ratio: 0.3, schedule: cosine, max_steps: {steps}, kl_coef: {kl}, kl_target: {kl_target}, micro_batch_size: 6}}
engine: {{device: cpu, threads: 2}}
output: {{dir: 'runs/{{recipe}}', save_interval: 2, eval_interval: 3}}
seed: 5
"""

TIMING = {"step_seconds", "generate_seconds", "reward_seconds", "train_seconds"}


@pytest.fixture(scope="module")
def toy_folder(make_toy_folder) -> str:
    return make_toy_folder(seed=2)


def write_recipe(
    folder: Path,
    model: str,
    method: str = "random",
    steps: int = 6,
    kl: float = 0.01,
    kl_target: str = "initial",
) -> Path:
    """`random` rewards give every step a real gradient even from an untrained model."""
    path = folder / f"{method}.yaml"
    path.write_text(
        RECIPE.format(model=model, method=method, steps=steps, kl=kl, kl_target=kl_target)
    )
    return path


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    assert metrics(a) == metrics(b)
    for folder in ("final", "final_teacher"):
        if (a / folder).exists() or (b / folder).exists():
            wa, wb = (
                load_file(a / folder / "model.safetensors"),
                load_file(b / folder / "model.safetensors"),
            )
            assert wa.keys() == wb.keys()
            for key in wa:
                assert torch.equal(wa[key], wb[key]), f"{folder}: {key}"


def train(recipe: Path, out: Path, resume: bool = False) -> dict:
    return local.train(load_recipe(recipe), out, resume, Console(quiet=True))


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, toy_folder):
    recipe = write_recipe(tmp_path, toy_folder, steps=8)
    whole = tmp_path / "whole"
    train(recipe, whole)

    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "coreward_cli.main", "run", str(recipe), "--out", str(cut)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "80"},
    )
    deadline = time.time() + 240
    try:
        # wait until a checkpoint exists and the run is busy with the step after it, then kill it hard
        while time.time() < deadline and proc.poll() is None:
            latest = runlayout.latest_checkpoint(cut)
            if latest is not None and latest.name == "step-000004":
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed; lengthen it"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (cut / "final").exists()
    train(recipe, cut, resume=True)
    assert_same_run(whole, cut)


@pytest.mark.parametrize(
    "method,kl_target", [("co_rewarding_ii", "teacher"), ("random", "initial")]
)
def test_interrupted_then_resumed_equals_uninterrupted(
    tmp_path, monkeypatch, toy_folder, method, kl_target
):
    """Teacher EMA state and method state (the random control's coin) survive a resume too."""
    recipe = write_recipe(
        tmp_path, toy_folder, method=method, steps=5, kl=0.01, kl_target=kl_target
    )
    whole = tmp_path / "whole"
    train(recipe, whole)

    cut = tmp_path / "cut"
    real_step = local.LocalTrainer.step

    def crash_at_three(self, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(self, step)

    monkeypatch.setattr(local.LocalTrainer, "step", crash_at_three)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, cut)
    monkeypatch.setattr(local.LocalTrainer, "step", real_step)
    assert runlayout.latest_checkpoint(cut).name == "step-000002"
    train(recipe, cut, resume=True)
    assert_same_run(whole, cut)


def test_failed_checkpoint_write_keeps_previous_one(tmp_path, monkeypatch, toy_folder):
    recipe = write_recipe(tmp_path, toy_folder, steps=4, kl=0.0)
    out = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fail(obj, path, *args, **kwargs):
        calls["n"] += 1
        if (
            calls["n"] == 2
        ):  # the second checkpoint (step 4): policy already written, then the disk "fails"
            real_save(obj, path, *args, **kwargs)
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        train(recipe, out)
    monkeypatch.setattr(ckpt.torch, "save", real_save)

    latest = runlayout.latest_checkpoint(out)
    assert latest is not None and latest.name == "step-000002"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert not (out / "checkpoints" / "step-000004").exists()
    trainer_state, state = ckpt.load_checkpoint(latest)
    assert state["step"] == 2 and "optimizer" in trainer_state
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(latest / "policy")

    train(recipe, out, resume=True)  # picks up from step 2 and clears the half-written folder
    assert runlayout.latest_checkpoint(out).name == "step-000004"
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_resume_refuses_a_changed_recipe(tmp_path, toy_folder):
    recipe = write_recipe(tmp_path, toy_folder, steps=2, kl=0.0)
    out = tmp_path / "run"
    train(recipe, out)
    from coreward_cli.errors import UserError

    changed = load_recipe(recipe, ["train.lr=0.5"])
    with pytest.raises(UserError, match="train.lr"):
        local.train(changed, out, True, Console(quiet=True))
