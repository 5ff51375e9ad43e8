"""`coreward export`: run directories and HF folders -> a self-checked Hugging Face folder.

The run directories here are written by the tests themselves in the local engine's layout
(BRIEF: RUN/recipe.yaml, final/, final_teacher/, checkpoints/step-00000N/{policy,teacher}/,
summary.json, eval/); tests/test_export_run.py exports a real `coreward run`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from coreward_cli import export as export_module
from coreward_cli import toy
from coreward_cli.engines.checkpoint import file_digests
from coreward_cli.main import cli
from coreward_cli.recipe import dump_recipe
from coreward_cli.resolve import load_recipe

ROOT = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
PROMPTS = ["12+34=", "7+58=", "90+9="]

torch.set_num_threads(2)


def save_tiny(folder: Path, seed: int) -> Path:
    """The toy's 1 M-param Qwen2 with its byte-level tokenizer, plus a chat template to carry over."""
    tokenizer = toy.build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    toy.build_model(seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_local_run(root: Path, method: str = "co_rewarding_ii", eval_results: bool = True) -> Path:
    """A finished local-engine run: final (seed 0), final_teacher (seed 1), a step-2 checkpoint (seeds 2, 3)."""
    run = root / "run"
    run.mkdir(parents=True)
    recipe = load_recipe(
        ROOT / "recipes" / "tiny_cpu.yaml", [f"method.name={method}", "train.max_steps=4"]
    )
    (run / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    (run / "summary.json").write_text(json.dumps({"steps": 4}), encoding="utf-8")
    save_tiny(run / "final", seed=0)
    save_tiny(run / "final_teacher", seed=1)
    save_tiny(run / "checkpoints" / "step-000002" / "policy", seed=2)
    save_tiny(run / "checkpoints" / "step-000002" / "teacher", seed=3)
    (run / "checkpoints" / "step-000002" / "checksums.json").write_text(
        json.dumps(file_digests(run / "checkpoints" / "step-000002")), encoding="utf-8"
    )
    (run / "checkpoints" / "latest").write_text("step-000002", encoding="utf-8")
    if eval_results:
        from coreward_cli.evaluate import write_reports

        metrics = {
            "questions": 500,
            "n": 1,
            "avg@1": 0.712,
            "maj@1": 0.712,
            "no_answer": 0.004,
            "mean_tokens": 4.0,
        }
        results = {
            "model": str(run),
            "resolved_model": str(run / "final"),
            "match": "exact",
            "benchmarks": {"arithmetic": metrics},
            "overall": metrics,
        }
        (run / "eval").mkdir()
        write_reports(run / "eval", results)
    return run


def invoke(*args: str):
    return CliRunner().invoke(cli, ["export", *args], catch_exceptions=False)


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def same_tensors(a: Path, b: Path) -> bool:
    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_local_run(tmp_path)


# ------------------------------------------------------------------ the export itself


GREEDY_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)
    folder, prompts = sys.argv[1], json.loads(sys.argv[2])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    outs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outs.append(tokenizer.decode(out[0, ids.shape[1]:]))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("coreward", "coreward_cli", "coreward_plugins"))
    print(json.dumps({"outputs": outs, "coreward_modules": loaded, "chat_template": tokenizer.chat_template}))
""")


def greedy(folder: Path, prompts: list[str]) -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    outs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(
            ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        outs.append(tokenizer.decode(out[0, ids.shape[1] :]))
    return outs


def reload_in_plain_transformers(folder: Path, prompts: list[str]) -> dict:
    """Greedy outputs of `folder` in a fresh interpreter that never imports coreward."""
    done = subprocess.run(
        [sys.executable, "-c", GREEDY_SCRIPT, str(folder), json.dumps(prompts)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["coreward_modules"] == [], "the reload must not need coreward"
    return report


def test_run_final_exports_and_reloads_without_coreward(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = invoke(str(run), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (
        "OK: reloaded" in result.stdout
        and "max |logit difference| vs the source 0 " in result.stdout
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= names
    assert same_tensors(out, run / "final")
    umask = os.umask(0)
    os.umask(umask)
    assert (
        out / "model.safetensors"
    ).stat().st_mode & 0o777 == 0o666 & ~umask  # shareable, not 0600
    report = reload_in_plain_transformers(out, PROMPTS)
    assert report["outputs"] == greedy(run / "final", PROMPTS)
    assert report["chat_template"] == CHAT_TEMPLATE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")], (
        "no temp folder left behind"
    )


def test_step_and_teacher_pick_the_right_weights(run: Path, tmp_path: Path) -> None:
    cases = {
        ("--teacher",): run / "final_teacher",
        ("--step", "2"): run / "checkpoints" / "step-000002" / "policy",
        ("--step", "2", "--teacher"): run / "checkpoints" / "step-000002" / "teacher",
    }
    for i, (flags, expected) in enumerate(cases.items()):
        out = tmp_path / f"out{i}"
        result = invoke(str(run), "--out", str(out), *flags)
        assert result.exit_code == 0, result.output
        assert same_tensors(out, expected), flags
        assert not same_tensors(out, run / "final") or expected == run / "final"
    card = (tmp_path / "out1" / "README.md").read_text(encoding="utf-8")
    assert "| Steps | 2 |" in card and "policy at step 2" in card


def test_bf16_sharded_export_reloads(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    result = invoke(
        str(run), "--out", str(out), "--dtype", "bf16", "--max-shard-size", "500KB", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["dtype"] == "bf16"
    assert (
        0 < report["max_abs_diff"] <= report["tolerance"]
    )  # bf16 rounding shows, within its tolerance
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (out / "model.safetensors.index.json").is_file()
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_hf_folder_source(tmp_path: Path) -> None:
    """OpenRLHF's --ckpt.output_dir is a plain HF folder: exported as is, with a shorter card."""
    source = save_tiny(tmp_path / "openrlhf_output", seed=5)
    out = tmp_path / "out"
    result = invoke(str(source), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert same_tensors(out, source)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Recipe" not in card and "## Evaluation" not in card and "arXiv:2508.00410" in card
    run_usage_snippet(card, out)


def run_usage_snippet(card: str, folder: Path) -> None:
    """The card's "Use" code runs as printed (path filled in, fewer tokens for the 64-position toy)."""
    code = re.search(r"## Use\n\n```python\n(.*?)```", card, re.S).group(1)
    code = code.replace(f'"{folder.name}"', repr(str(folder))).replace(
        "max_new_tokens=256", "max_new_tokens=4"
    )
    exec(compile(code, "model-card-snippet", "exec"), {})


def test_openrlhf_run_dir_uses_model_and_per_save_hf_copies(tmp_path: Path) -> None:
    run = tmp_path / "orun"
    run.mkdir()
    (run / "recipe.yaml").write_text(
        "engine:\n  kind: openrlhf\nmodel:\n  path: Qwen/Qwen2.5-3B\n"
        "method:\n  name: co_rewarding_i\n",
        encoding="utf-8",
    )
    save_tiny(run / "model", seed=6)
    save_tiny(run / "ckpt" / "global_step20_hf", seed=7)
    assert invoke(str(run), "--out", str(tmp_path / "final")).exit_code == 0
    assert same_tensors(tmp_path / "final", run / "model")
    assert invoke(str(run), "--out", str(tmp_path / "s20"), "--step", "20").exit_code == 0
    assert same_tensors(tmp_path / "s20", run / "ckpt" / "global_step20_hf")
    card = (tmp_path / "s20" / "README.md").read_text(encoding="utf-8")
    assert "base_model: Qwen/Qwen2.5-3B" in card and "| Steps | 20 |" in card
    assert_one_line_error(
        invoke(str(run), "--out", str(tmp_path / "x"), "--step", "30"), 2, "saved steps: 20"
    )
    assert_one_line_error(
        invoke(str(run), "--out", str(tmp_path / "x"), "--teacher"), 2, "no final teacher"
    )


def test_openrlhf_run_teacher_final_and_checkpoint_shadow(tmp_path: Path) -> None:
    """coreward's OpenRLHF actor saves the EMA teacher as RUN/model_teacher/ and, per checkpoint, as the
    fp32 shadow ckpt/_teacher/global_stepN/teacher_rank0.pt (full tensors by parameter name, ZeRO<3)."""
    run = tmp_path / "orun"
    run.mkdir()
    (run / "recipe.yaml").write_text(
        "engine:\n  kind: openrlhf\nmethod:\n  name: co_rewarding_ii\n", encoding="utf-8"
    )
    save_tiny(run / "model", seed=6)
    save_tiny(run / "model_teacher", seed=8)
    shadow_model = toy.build_model(seed=9)
    shadow = run / "ckpt" / "_teacher" / "global_step20"
    shadow.mkdir(parents=True)
    torch.save(
        {n: p.detach().clone() for n, p in shadow_model.named_parameters()},
        shadow / "teacher_rank0.pt",
    )
    (shadow / "teacher_meta.json").write_text(json.dumps({"zero3": False, "world": 2, "names": 1}))

    assert invoke(str(run), "--teacher", "--out", str(tmp_path / "t")).exit_code == 0
    assert same_tensors(tmp_path / "t", run / "model_teacher")
    result = invoke(str(run), "--teacher", "--step", "20", "--out", str(tmp_path / "t20"))
    assert result.exit_code == 0, result.output
    exported = load_file(str(tmp_path / "t20" / "model.safetensors"))
    expected = shadow_model.state_dict()
    assert (
        all(torch.equal(exported[k], expected[k]) for k in exported)
        and len(exported) >= len(expected) - 1
    )
    assert "teacher at step 20" in (tmp_path / "t20" / "README.md").read_text(encoding="utf-8")
    (shadow / "teacher_meta.json").write_text(json.dumps({"zero3": True, "world": 2, "names": 1}))
    assert_one_line_error(
        invoke(str(run), "--teacher", "--step", "20", "--out", str(tmp_path / "x")), 2, "ZeRO-3"
    )
    assert_one_line_error(
        invoke(str(run), "--teacher", "--step", "5", "--out", str(tmp_path / "x")),
        2,
        "no teacher checkpoint",
    )


def test_force_replaces_only_after_a_passing_check(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless --force")
    assert_one_line_error(invoke(str(run), "--out", str(out)), 2, "not empty", "--force")
    assert (out / "old.txt").is_file()
    result = invoke(str(run), "--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists() and same_tensors(out, run / "final")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        invoke(str(run), "--out", str(empty)).exit_code == 0
    )  # an empty folder is fine without --force


# ------------------------------------------------------------------ the model card


def test_model_card_renders_recipe_eval_and_citation(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "card"
    assert invoke(str(run), "--out", str(out)).exit_code == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    recipe_text = (run / "recipe.yaml").read_text(encoding="utf-8")
    assert "```yaml\n" + recipe_text.rstrip() + "\n```" in card
    assert "| Base model | `builtin:tiny-arith` |" in card
    assert "| Method | `co_rewarding_ii`: Co-rewarding-II" in card
    assert "| Training data | `builtin:tiny-arith` |" in card and "| Steps | 4 |" in card
    assert "## Evaluation" in card and "| arithmetic | 500 | 71.2 |" in card
    assert "Measured by" not in card  # eval measured RUN/final, which is what was exported
    assert (
        "title={Co-rewarding: Stable Self-supervised RL for Eliciting Reasoning in Large Language Models}"
        in card
    )
    assert "arXiv preprint arXiv:2508.00410" in card
    front = card.split("---\n")[1]
    assert (
        "library_name: transformers" in front and "base_model" not in front
    )  # builtin is no hub id


def test_model_card_eval_table_from_results_json_and_teacher_note(
    run: Path, tmp_path: Path
) -> None:
    (run / "eval" / "results.md").unlink()
    out = tmp_path / "teacher"
    assert invoke(str(run), "--out", str(out), "--teacher").exit_code == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| arithmetic | 500 | 71.2 |" in card  # rebuilt from results.json
    assert "Measured by `coreward eval` on" in card  # eval saw the policy, not this teacher


def test_model_card_without_eval(tmp_path: Path) -> None:
    run = make_local_run(tmp_path, eval_results=False)
    out = tmp_path / "out"
    assert invoke(str(run), "--out", str(out)).exit_code == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Evaluation" not in card and "## Recipe" in card


# ------------------------------------------------------------------ errors


def test_missing_source_is_one_line_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(invoke(str(tmp_path / "nope"), "--out", str(tmp_path / "o")), 2, "nope")
    (tmp_path / "junk").mkdir()
    assert_one_line_error(
        invoke(str(tmp_path / "junk"), "--out", str(tmp_path / "o")),
        2,
        "not a coreward run directory",
    )
    assert not (tmp_path / "o").exists()


def test_bad_step_and_teacher_are_one_line_exit_2(run: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    assert_one_line_error(invoke(str(run), "--out", out, "--step", "abc"), 2, "--step")
    assert_one_line_error(invoke(str(run), "--out", out, "--step", "0"), 2, "--step")
    assert_one_line_error(
        invoke(str(run), "--out", out, "--step", "7"), 2, "no checkpoint for step 7", "step-000002"
    )
    plain = make_local_run(tmp_path / "i", method="co_rewarding_i", eval_results=False)
    for folder in ("final_teacher", "checkpoints/step-000002/teacher"):
        shutil.rmtree(plain / folder)
    assert_one_line_error(invoke(str(plain), "--out", out, "--teacher"), 2, "teacher")
    assert_one_line_error(
        invoke(str(run), "--out", out, "--max-shard-size", "lots"), 2, "--max-shard-size"
    )
    assert not Path(out).exists()


def test_unreadable_source_is_one_line_exit_2(run: Path, tmp_path: Path) -> None:
    weights = run / "final" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors.pop("model.layers.0.mlp.down_proj.weight")
    save_file(
        tensors, str(weights), metadata={"format": "pt"}
    )  # transformers would fill it with random values
    assert_one_line_error(
        invoke(str(run), "--out", str(tmp_path / "o")), 2, "incomplete", "down_proj"
    )
    weights.write_bytes(weights.read_bytes()[:5000])
    assert_one_line_error(invoke(str(run), "--out", str(tmp_path / "o")), 2, "does not load")
    (run / "final" / "config.json").write_text("{ not json", encoding="utf-8")
    assert_one_line_error(invoke(str(run), "--out", str(tmp_path / "o")), 2, "does not load")
    (run / "recipe.yaml").write_text("engine: [unclosed", encoding="utf-8")
    assert_one_line_error(invoke(str(run), "--out", str(tmp_path / "o")), 2, "recipe.yaml")
    assert not (tmp_path / "o").exists()


def test_out_may_not_be_the_source(run: Path) -> None:
    assert_one_line_error(
        invoke(str(run), "--out", str(run / "final"), "--force"), 2, "would replace the source"
    )
    assert_one_line_error(
        invoke(str(run), "--out", str(run), "--force"), 2, "would replace the source"
    )
    assert (run / "final" / "model.safetensors").is_file()
    for inside in (run / "checkpoints", run / "eval" / "x", run.parent):
        assert_one_line_error(
            invoke(str(run), "--out", str(inside), "--force"), 2, "would replace the source"
        )
    assert (run / "checkpoints" / "step-000002" / "policy" / "model.safetensors").is_file()


def test_damaged_checkpoint_is_not_exported(run: Path, tmp_path: Path) -> None:
    """Readable but wrong weights (1 MB zeroed) fail the checkpoint's checksum: exit 2, no export."""
    weights = run / "checkpoints" / "step-000002" / "policy" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    weights.write_bytes(bytes(data))
    result = invoke(str(run), "--step", "2", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, 2, "policy/model.safetensors", "checksum")
    assert not (tmp_path / "o").exists()


def test_corrupted_weight_fails_the_self_check(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight that changes on its way to disk: exit 1 naming the logits, and nothing written."""
    write = export_module._write_model

    def write_then_corrupt(model, folder: Path, max_shard_size: int) -> None:
        write(model, folder, max_shard_size)
        tensors = load_file(str(folder / "model.safetensors"))
        name = next(k for k in tensors if k.endswith("mlp.down_proj.weight"))
        tensors[name] = tensors[name] + 0.05 * torch.randn_like(tensors[name])
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})

    monkeypatch.setattr(export_module, "_write_model", write_then_corrupt)
    out = tmp_path / "out"
    result = invoke(str(run), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "self-check failed: logits differ from the source" in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "no partial folder left beside DIR"
    # with --force over an earlier export, the earlier export survives the failed one
    monkeypatch.setattr(export_module, "_write_model", write)
    assert invoke(str(run), "--out", str(out)).exit_code == 0
    monkeypatch.setattr(export_module, "_write_model", write_then_corrupt)
    assert invoke(str(run), "--out", str(out), "--force").exit_code == 1
    assert same_tensors(out, run / "final")


def test_missing_tokenizer_json_is_named(run: Path, tmp_path: Path) -> None:
    """Only tokenizer_config.json left: named as a missing vocabulary, not as 'no tokens'."""
    (run / "final" / "tokenizer.json").unlink()
    result = invoke(str(run), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, 2, "tokenizer.json")
    assert "no tokens" not in result.stderr
