"""A real short `coreward run` of the tiny recipe, exported, and reloaded by plain transformers.

The reload happens in a fresh interpreter that never imports coreward: the exported folder must
stand on its own and give the same greedy answers as the run's final model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from coreward_cli import toy
from coreward_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]

GREEDY = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)
    folders, prompts = sys.argv[1:-1], json.loads(sys.argv[-1])
    answers = {}
    for folder in folders:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        ids = [tokenizer(p, return_tensors="pt").input_ids for p in prompts]
        outs = [model.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id) for x in ids]
        answers[folder] = [tokenizer.decode(o[0, x.shape[1]:], skip_special_tokens=True) for o, x in zip(outs, ids)]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("coreward", "coreward_cli", "coreward_plugins"))
    print(json.dumps({"answers": answers, "coreward_modules": loaded}))
""")


@pytest.mark.slow
def test_tiny_run_exports_to_a_folder_plain_transformers_reproduces(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    # The recipe's own model is the cached warm start (built once, minutes on a busy machine); a fresh
    # toy model in the same architecture keeps this test independent of that cache.
    base = tmp_path / "base"
    toy.build_model(seed=0).save_pretrained(base)
    toy.build_tokenizer().save_pretrained(base)
    run = tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(
        cli,
        [
            "run",
            str(ROOT / "recipes" / "tiny_cpu.yaml"),
            "--out",
            str(run),
            "--set",
            f"model.path={base}",
            "--set",
            "train.max_steps=2",
            "--set",
            "train.lr=1e-3",
            "--set",
            "output.save_interval=1",
            "--set",
            "output.eval_interval=2",
            "--set",
            "data.eval_limit=16",
        ],
        catch_exceptions=False,
    )
    assert trained.exit_code == 0, trained.output
    assert (run / "final").is_dir() and (run / "checkpoints" / "step-000001" / "policy").is_dir()

    out, step1 = tmp_path / "export", tmp_path / "export-step1"
    for args in ([str(run), "--out", str(out)], [str(run), "--step", "1", "--out", str(step1)]):
        result = runner.invoke(cli, ["export", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "OK: reloaded" in result.stdout

    prompts = [toy.prompt_of(p, "original") for p in toy.problems("eval")[:12]]
    done = subprocess.run(
        [sys.executable, "-c", GREEDY, str(run / "final"), str(out), json.dumps(prompts)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["coreward_modules"] == []
    answers = report["answers"]
    assert answers[str(out)] == answers[str(run / "final")]
    trained_weights = load_file(str(out / "model.safetensors"))
    initial_weights = load_file(str(base / "model.safetensors"))
    assert any(not torch.equal(trained_weights[k], initial_weights[k]) for k in initial_weights), (
        "RL moved the weights"
    )

    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| Steps | 2 |" in card and "`co_rewarding_i`" in card
    assert (
        "```yaml\n" + (run / "recipe.yaml").read_text(encoding="utf-8").rstrip() + "\n```" in card
    )
    assert (
        "apply_chat_template" not in card
    )  # the toy has no chat template: the snippet prompts plainly
    step1_card = (step1 / "README.md").read_text(encoding="utf-8")
    assert "| Steps | 1 |" in step1_card
