"""`coreward export` of DeepSpeed ZeRO-2/ZeRO-3 checkpoints (OpenRLHF's ckpt.path layout), on CPU.

Two gloo ranks train the toy model a few steps and save with DeepSpeed's own save_checkpoint
(tests/export_zero_worker.py); the export merges the partitions with deepspeed's zero_to_fp32 and
must reproduce the model the ranks trained, logit for logit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from coreward_cli import toy
from coreward_cli.main import cli

pytest.importorskip("deepspeed")

WORKER = Path(__file__).with_name("export_zero_worker.py")
WORLD = 2


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def train_with_zero(stage: int, base: Path, out: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(rank),
                str(WORLD),
                port,
                str(stage),
                str(base),
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for rank in range(WORLD)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]


def logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 40, 41, 43, 17, 60, 61, 9]])).logits


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_checkpoint_export_matches_the_trained_model(stage: int, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    base = tmp_path / "base"
    toy.build_model(seed=0).save_pretrained(base)
    toy.build_tokenizer().save_pretrained(base)
    trained = tmp_path / "trained"
    train_with_zero(stage, base, trained)
    ranks = sorted(
        p.name for p in (trained / "ckpt" / "_actor" / "global_step3").glob("*optim_states.pt")
    )
    assert len(ranks) == WORLD, ranks  # each rank saved its own optimizer partition

    out = tmp_path / "export"
    if stage == 2:  # a bare OpenRLHF ckpt.path: config and tokenizer from --base
        args = [str(trained / "ckpt"), "--base", str(base), "--out", str(out), "--json"]
    else:  # a coreward openrlhf run directory: RUN/recipe.yaml, RUN/model (HF save), RUN/ckpt
        run = trained
        (run / "recipe.yaml").write_text(
            "engine:\n  kind: openrlhf\nmodel:\n  path: builtin:tiny-arith\n", encoding="utf-8"
        )
        args = [str(run), "--step", "3", "--out", str(out), "--json"]
    result = CliRunner().invoke(cli, ["export", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (
        report["ok"]
        and report["max_abs_diff"] <= 1e-5
        and "DeepSpeed global_step3" in report["source"]
    )

    exported, reference, initial = logits(out), logits(trained / "model"), logits(base)
    assert (exported - reference).abs().max().item() <= 1e-5  # the model the ranks trained ...
    assert (exported - initial).abs().max().item() > 1e-2  # ... not the base it started from
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| Steps | 3 |" in card
