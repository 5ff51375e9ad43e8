"""Real MATH questions through `coreward rephrase`: SmolLM2-135M-Instruct (GGUF, offline) with the
official recipe, and two Co-rewarding-I steps of a tiny policy trained on the command's output.

SmolLM2-135M does not follow the official output format: on 12 short MATH questions (T 0.7 and
greedy, 128-160 new tokens) it wrote `### RESULT_START` twice and `REWRITE:` never, so none parsed.
Its test checks the command end to end on a real model and prints the numbers; the training test
rephrases the same questions with the canned rephraser (tests/canned_rephraser.py), the only
offline model here that writes the format."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from coreward_cli.main import cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
import canned_rephraser
from test_eval_smollm import smollm2_gguf

QUESTIONS = 4

RECIPE = """
model: {{path: '{policy}', chat_template: false, system_prompt: null, dtype: fp32}}
{data}rollout: {{n: 2, temperature: 1.0, max_prompt_tokens: 1024, max_new_tokens: 8}}
train: {{problems_per_step: 1, lr: 1.0e-4, warmup_ratio: 0.0, schedule: constant, max_steps: 2, kl_coef: 0.0, micro_batch_size: 8}}
engine: {{device: cpu, threads: 1}}
output: {{save_interval: 10, eval_interval: 10}}
seed: 3
"""


@pytest.fixture
def policy(tmp_path: Path) -> str:
    """The built-in tiny architecture, freshly initialised, with room for a MATH question."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from coreward_cli.toy import MODEL_CONFIG, build_tokenizer

    folder = tmp_path / "policy"
    config = Qwen2Config(**{**MODEL_CONFIG, "max_position_embeddings": 2048})
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = 2048
    tokenizer.save_pretrained(folder)
    return str(folder)


def short_math(shared_data: Path, folder: Path) -> Path:
    rows = pq.read_table(shared_data / "train" / "math" / "train_original.parquet").to_pylist()
    data = folder / "math.parquet"
    pq.write_table(
        pa.Table.from_pylist([r for r in rows if len(r["prompt"][1]["content"]) < 120][:QUESTIONS]),
        data,
    )
    return data


@pytest.mark.slow
def test_smollm2_rephrases_real_math_questions(shared_data: Path, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)  # as test_eval_smollm: 2 threads crawl on 2 shared cores
    gguf = smollm2_gguf()
    data, out = short_math(shared_data, tmp_path), tmp_path / "rephrased"
    started = time.perf_counter()
    result = CliRunner().invoke(
        cli,
        ["rephrase", str(data), "--model", str(gguf), "--out", str(out)]
        + ["--max-new-tokens", "128", "--backend", "hf", "--json"],
        catch_exceptions=False,
    )
    elapsed = time.perf_counter() - started
    stats = json.loads((out / "rephrase.json").read_text())
    log = [json.loads(line) for line in (out / "rephrasings.jsonl").read_text().splitlines()]
    print(
        f"\nSmolLM2-135M-Instruct GGUF, {QUESTIONS} MATH questions, official recipe, 128 new tokens: "
        f"parsed {stats['parsed']}/{stats['rows_in']}, drops {stats['dropped']}, "
        f"hit the limit {stats['hit_token_limit']}, {stats['seconds'] / QUESTIONS:.0f} s a question "
        f"({elapsed:.0f} s with the model load)"
    )
    assert len(log) == QUESTIONS and all(line["output"].strip() for line in log)  # real text
    assert stats["rows_in"] == QUESTIONS and 0 < stats["mean_tokens"] <= 128
    assert (
        stats["parsed"] + stats["dropped"]["no_markers"] + stats["dropped"]["no_rewrite"]
        == QUESTIONS
    )
    kept = pq.read_table(out / "train_original.parquet").num_rows
    assert kept == stats["kept"] and (result.exit_code == 0) == (kept > 0), result.output
    if not kept:
        assert f"none of the {QUESTIONS} rows was kept" in result.stderr


@pytest.mark.slow
def test_co_rewarding_i_trains_on_rephrased_math(
    shared_data: Path, tmp_path: Path, policy: str, monkeypatch
) -> None:
    monkeypatch.setattr(
        "coreward_cli.generation.open_backend", lambda *a, **k: canned_rephraser.CannedBackend()
    )
    data, out = short_math(shared_data, tmp_path), tmp_path / "rephrased"
    result = CliRunner().invoke(
        cli,
        ["rephrase", str(data), "--model", "canned/rephraser", "--out", str(out), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["kept"] == QUESTIONS
    monkeypatch.undo()

    recipe = tmp_path / "ci.yaml"
    recipe.write_text(RECIPE.format(policy=policy, data=stats["recipe_snippet"]))
    run = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["run", str(recipe), "--out", str(run)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["step"]] == [1, 2]  # step 0: the untrained record
