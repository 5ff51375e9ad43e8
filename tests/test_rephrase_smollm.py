"""A real small instruct model, offline: SmolLM2-135M-Instruct (GGUF) rephrases real MATH questions
with the official recipe, and Co-rewarding-I trains two steps on what it wrote (a tiny policy)."""

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


@pytest.mark.slow
def test_smollm2_rephrases_math_and_co_rewarding_i_trains_on_it(
    shared_data: Path, tmp_path: Path, policy: str
) -> None:
    import torch

    torch.set_num_threads(1)  # as test_eval_smollm: 2 threads crawl on 2 shared cores
    gguf = smollm2_gguf()
    rows = pq.read_table(shared_data / "train" / "math" / "train_original.parquet").to_pylist()
    short = [r for r in rows if len(r["prompt"][1]["content"]) < 120][:QUESTIONS]
    data = tmp_path / "math.parquet"
    pq.write_table(pa.Table.from_pylist(short), data)
    out = tmp_path / "rephrased"
    started = time.perf_counter()
    result = CliRunner().invoke(
        cli,
        [
            "rephrase",
            str(data),
            "--model",
            str(gguf),
            "--out",
            str(out),
            "--max-new-tokens",
            "128",
            "--backend",
            "hf",
            "--json",
        ],
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
    for line in log:
        print(f"--- row {line['index']} ({line['drop'] or 'kept'}):\n{line['output'][:400]}")
    assert len(log) == QUESTIONS and all(line["output"].strip() for line in log)  # real text
    assert result.exit_code == 0, result.output  # at least one rewrite parsed
    assert stats["kept"] == stats["parsed"] >= 1

    data_yaml = stats["recipe_snippet"].replace("method:\n  name: co_rewarding_i\n", "")
    recipe = tmp_path / "ci.yaml"
    recipe.write_text(
        RECIPE.format(policy=policy, data=data_yaml) + "method: {name: co_rewarding_i}\n"
    )
    run = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["run", str(recipe), "--out", str(run)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
