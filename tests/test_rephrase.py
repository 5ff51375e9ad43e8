"""`coreward rephrase`: the official prompt byte for byte, the official parse, and the command around
the model (outputs the training loader reads, resume after SIGKILL, --limit, --force, --verify),
with a canned rephraser (tests/canned_rephraser.py) and once with a real tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from coreward_cli import rephrase as rp
from coreward_cli.data import load_train_problems
from coreward_cli.main import cli
from coreward_cli.resolve import load_recipe_text

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import canned_rephraser  # noqa: E402

SYSTEM = "Let's think step by step and output the final answer within \\boxed{}."

# The official instruction, copied here from Co-rewarding-I/rewrite_questions.py independently of the code.
OFFICIAL = (
    "You are given a math problem. Please rewrite it using different wording and a different real-world "
    "scenario, while keeping the underlying mathematical meaning and answer exactly the same.\n\n"
    "Guidelines:\n"
    "1. Do not change the math logic or the final answer.\n"
    "2. Use different words and a new context to make it look like a different problem.\n"
    "3. Avoid copying phrases or sentence structures from the original.\n"
    "4. Make sure the rewritten question is natural, clear, and solvable.\n"
    "5. Output ONLY between the following markers, and strictly in this format (no extra explanation):\n\n"
    "### RESULT_START\nORIGINAL:\n<original question>\nREWRITE:\n<rewritten question>\n### RESULT_END\n"
)
# Qwen3's template, cut to what a one-user-turn prompt uses (the empty think block with thinking off).
QWEN3_LIKE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)

QUESTIONS = [
    ("What is 2+3?", "5"),
    ("Compute 7*6.", "42"),
    ("garble this: 9 apples", "9"),
    ("shift: take 4 from 10", "6"),
    ("Name the smallest prime.", "2"),
    ("Write the number 8.", "8"),
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    """The built-in tiny model's architecture, freshly initialised, with room for a long prompt."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from coreward_cli.toy import MODEL_CONFIG

    folder = tmp_path_factory.mktemp("tiny") / "model"
    Qwen2ForCausalLM(
        Qwen2Config(**{**MODEL_CONFIG, "max_position_embeddings": 2048})
    ).save_pretrained(folder)
    tok = tokenizer()
    tok.model_max_length = 2048
    tok.save_pretrained(folder)
    return str(folder)


def tokenizer():
    from coreward_cli.toy import build_tokenizer

    return build_tokenizer()


# ---------------------------------------------------------------- the prompt


def test_prompt_is_the_official_one_byte_for_byte() -> None:
    tok = tokenizer()
    tok.chat_template = QWEN3_LIKE
    prompt = rp.rephrase_prompt(tok, "  What is 2+3?\n")
    expected = (
        "<|im_start|>user\n"
        + OFFICIAL
        + "\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert prompt.text == expected and not prompt.add_special_tokens
    assert rp.INSTRUCTION == OFFICIAL


def test_prompt_without_a_chat_template_is_the_plain_text() -> None:
    prompt = rp.rephrase_prompt(tokenizer(), "What is 2+3?")
    assert prompt.text == OFFICIAL + "\nWhat is 2+3?" and prompt.add_special_tokens


def test_instruction_matches_the_reference_doc(shared_data: Path) -> None:
    doc = shared_data.parent / "docs" / "co-rewarding-reference.md"
    if not doc.is_file():
        pytest.skip(f"{doc} is absent")
    text = doc.read_text(encoding="utf-8")
    block = "\n".join("  " + line if line else "" for line in OFFICIAL.rstrip("\n").split("\n"))
    assert block in text


# ---------------------------------------------------------------- the parse


QWEN_OUTPUT = (
    "### RESULT_START\nORIGINAL:\nWhat is 2+3?\nREWRITE:\n"
    "A baker puts 2 loaves on a shelf and adds 3 more. How many loaves are on the shelf?\n### RESULT_END"
)


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            QWEN_OUTPUT,
            (
                "What is 2+3?",
                "A baker puts 2 loaves on a shelf and adds 3 more. How many loaves are on the shelf?",
            ),
        ),
        ("Sure, here it is:\n" + QWEN_OUTPUT + "\nHope this helps!", None),  # same parse
        (  # a second REWRITE: stays in the rewrite (split once)
            "### RESULT_START\nORIGINAL: q\nREWRITE: a\nREWRITE: b\n### RESULT_END",
            ("q", "a\nREWRITE: b"),
        ),
        (  # ORIGINAL: is removed wherever it is in the first part, and only there
            "### RESULT_START\nq ORIGINAL: r\nREWRITE:\nORIGINAL: s\n### RESULT_END",
            ("q  r", "ORIGINAL: s"),
        ),
        ("### RESULT_START\nREWRITE:\n### RESULT_END", ("", "")),  # parses; dropped as empty
    ],
)
def test_parse_follows_the_official_rules(text: str, expected: tuple[str, str] | None) -> None:
    if expected is None:
        expected = rp.parse_rewrite(QWEN_OUTPUT)
    assert rp.parse_rewrite(text) == expected


@pytest.mark.parametrize(
    "text,reason",
    [
        ("ORIGINAL:\nq\nREWRITE:\nr\n### RESULT_END", rp.NO_MARKERS),  # no start
        ("### RESULT_START\nORIGINAL:\nq\nREWRITE:\nr", rp.NO_MARKERS),  # cut off before the end
        (
            "### RESULT_END\n### RESULT_START\nREWRITE: r\n### RESULT_END",
            rp.NO_MARKERS,
        ),  # end first
        ("### RESULT_START\nORIGINAL:\nq\nRewrite: r\n### RESULT_END", rp.NO_REWRITE),  # case
        ("", rp.NO_MARKERS),
    ],
)
def test_parse_failures_name_their_reason(text: str, reason: str) -> None:
    with pytest.raises(rp.ParseFailure) as exc:
        rp.parse_rewrite(text)
    assert exc.value.reason == reason
    assert rp.outcome(0, "0", text, 1, 0.0).drop == reason


def test_an_empty_rewrite_is_dropped() -> None:
    line = rp.outcome(0, "0", "### RESULT_START\nORIGINAL: q\nREWRITE:   \n### RESULT_END", 9, 0.0)
    assert line.drop == rp.EMPTY and not line.kept


# ---------------------------------------------------------------- the command


def verl_file(path: Path, questions=QUESTIONS, start: int = 100) -> Path:
    rows = [
        {
            "data_source": "mine",
            "prompt": [{"content": SYSTEM, "role": "system"}, {"content": q, "role": "user"}],
            "reward_model": {"ground_truth": a, "style": "rule"},
            "extra_info": {"index": start + i, "split": "train"},
            "level": f"Level {i % 3 + 1}",
        }
        for i, (q, a) in enumerate(questions)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def canned(monkeypatch):
    monkeypatch.setattr(
        "coreward_cli.generation.open_backend", lambda *a, **k: canned_rephraser.CannedBackend()
    )
    canned_rephraser.CALLS.clear()
    return canned_rephraser.CALLS


def invoke(*args: str, json_out: bool = True):
    result = CliRunner().invoke(
        cli, ["rephrase", *args, *(["--json"] if json_out else [])], catch_exceptions=False
    )
    stats = json.loads(result.stdout) if json_out and result.exit_code == 0 else None
    return result, stats


def train_from_snippet(stats: dict, extra: str = "") -> list:
    snippet = stats["recipe_snippet"]
    text = f"model: {{path: Qwen/Qwen2.5-0.5B}}\n{snippet}{extra}"
    return load_train_problems(load_recipe_text(text, "snippet.yaml", (), warn=lambda m: None))


def test_outputs_train_at_once_and_keep_rows(tmp_path, canned) -> None:
    data = verl_file(tmp_path / "mine.parquet")
    out = tmp_path / "out"
    result, stats = invoke(str(data), "--model", "Qwen/Qwen2.5-0.5B", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert stats["rows_in"] == 6 and stats["parsed"] == 5 and stats["kept"] == 5
    assert stats["dropped"] == {"no_markers": 1, "no_rewrite": 0, "empty_rewrite": 0}
    assert stats["identical_to_original"] == 0 and stats["mean_length_ratio"] > 1
    assert stats["questions_per_second"] > 0 and (out / rp.STATS_FILE).is_file()
    assert stats["recipe_snippet"] in result.stderr  # printed for the user

    problems = train_from_snippet(stats)
    kept = [q for q in QUESTIONS if "garble" not in q[0]]
    assert [p.id for p in problems] == ["100", "101", "103", "104", "105"]
    assert [p.question for p in problems] == [q for q, _ in kept]
    assert [p.answer for p in problems] == [a for _, a in kept]
    assert problems[0].rephrased == "In a shop: What is 2+3?"
    assert problems[2].rephrased == "In a shop: shift: take 4 from 11"  # no --verify: kept

    original = pq.read_table(out / rp.ORIGINAL_FILE).to_pylist()
    rephrased = pq.read_table(out / rp.REPHRASED_FILE).to_pylist()
    source = [
        r for r in pq.read_table(data).to_pylist() if "garble" not in r["prompt"][1]["content"]
    ]
    assert original == source  # every column, as read
    for a, b in zip(original, rephrased):  # only the user turn differs
        assert b["prompt"][0] == a["prompt"][0] and b["prompt"][1]["content"].startswith(
            "In a shop: "
        )
        assert {k: v for k, v in b.items() if k != "prompt"} == {
            k: v for k, v in a.items() if k != "prompt"
        }

    one_file = (
        "  question_key: original\n  rephrased_key: rephrased\n  answer_key: answer\n  id_key: id\n"
    )
    text = f"model: {{path: Qwen/Qwen2.5-0.5B}}\ndata:\n  train: [{{original: {out / rp.PAIRS_FILE}}}]\n{one_file}"
    pairs = load_train_problems(load_recipe_text(text, "pairs.yaml", (), warn=lambda m: None))
    assert pairs == problems


def test_plain_jsonl_without_ids_or_answers(tmp_path, canned) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"problem": q}) + "\n" for q, _ in QUESTIONS))
    result, stats = invoke(
        str(data),
        "--model",
        "Qwen/Qwen2.5-0.5B",
        "--out",
        str(tmp_path / "o"),
        "--question-key",
        "problem",
    )
    assert result.exit_code == 0, result.output
    assert (
        'question_key: "problem"' in stats["recipe_snippet"]
        and "answer_key: null" in stats["recipe_snippet"]
    )
    problems = train_from_snippet(stats)
    assert [p.id for p in problems] == ["0", "1", "3", "4", "5"]  # source rows survive the drop
    assert all(p.answer is None for p in problems)


def test_limit_then_a_larger_limit_continues(tmp_path, canned) -> None:
    data, out = verl_file(tmp_path / "d.parquet"), tmp_path / "out"
    result, stats = invoke(str(data), "--model", "m/m", "--out", str(out), "--limit", "2")
    assert result.exit_code == 0 and stats["rows_in"] == 2 and sum(canned) == 2
    assert len(rp.read_log(out / rp.LOG_FILE)) == 2
    result, stats = invoke(str(data), "--model", "m/m", "--out", str(out), "--limit", "4")
    assert result.exit_code == 0 and stats["rows_in"] == 4 and sum(canned) == 4  # 2 new
    assert [p.id for p in train_from_snippet(stats)] == ["100", "101", "103"]


def test_another_config_needs_force(tmp_path, canned) -> None:
    data, out = verl_file(tmp_path / "d.parquet"), tmp_path / "out"
    assert invoke(str(data), "--model", "m/m", "--out", str(out))[0].exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result, _ = invoke(str(data), "--model", "m/m", "--out", str(out), "--temperature", "0.5")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert result.stderr.count("\n") == 1 and "temperature: 0.7 -> 0.5" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    calls = sum(canned)
    result, stats = invoke(
        str(data), "--model", "m/m", "--out", str(out), "--temperature", "0.5", "--force"
    )
    assert (
        result.exit_code == 0 and sum(canned) - calls == 6 and stats["config"]["temperature"] == 0.5
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--question-key", "question"], "no column 'question'"),
        (["--answer-key", "solution"], "set --answer-key to one of them"),
        (["--id-key", "extra_info.idx"], "no column 'extra_info.idx'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, canned, args, message) -> None:
    data, out = verl_file(tmp_path / "d.parquet"), tmp_path / "out"
    result, _ = invoke(str(data), "--model", "m/m", "--out", str(out), *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert result.stderr.startswith("error: DATA: ") and result.stderr.count("\n") == 1
    assert not out.exists() and not canned


def test_missing_file_and_unknown_model(tmp_path, canned) -> None:
    result, _ = invoke(
        str(tmp_path / "nope.parquet"), "--model", "m/m", "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2 and "nope.parquet does not exist" in result.stderr
    data = verl_file(tmp_path / "d.parquet")
    result, _ = invoke(
        str(data), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2 and "not found" in result.stderr and not (tmp_path / "o").exists()


def test_verify_drops_a_changed_problem_without_reading_references(tmp_path, canned) -> None:
    out = tmp_path / "out"
    result, stats = invoke(
        str(verl_file(tmp_path / "d.parquet")), "--model", "m/m", "--out", str(out), "--verify", "3"
    )
    assert result.exit_code == 0, result.output
    verify = stats["verify"]
    assert (verify["agree"], verify["disagree"], verify["undecided"]) == (3, 1, 1)
    assert verify["no_majority_original"] == 1 and verify["agreement_rate"] == 0.75
    assert stats["dropped"]["disagree"] == 1 and stats["kept"] == 4
    # The canned answer is the question's last number: the reference only for "Write the number 8."
    assert (
        verify["reference"]["kept"]["pairs"] == 4 and verify["reference"]["dropped"]["pairs"] == 1
    )
    assert verify["reference"]["kept"]["original_majority_matches_reference"] == 0.25  # 8
    assert verify["reference"]["dropped"]["original_majority_matches_reference"] == 0.0
    kept = [p.id for p in train_from_snippet(stats)]
    assert kept == ["100", "101", "104", "105"]

    # The same data with every reference wrong or missing: the same pairs are kept.
    wrong = [(q, "999") for q, _ in QUESTIONS]
    data2 = verl_file(tmp_path / "d2.parquet", wrong)
    result, stats2 = invoke(
        str(data2), "--model", "m/m", "--out", str(tmp_path / "o2"), "--verify", "3"
    )
    assert [p.id for p in train_from_snippet(stats2)] == kept
    assert stats2["verify"]["reference"]["kept"]["original_majority_matches_reference"] == 0.0


def test_torn_last_line_is_cut_and_redone(tmp_path, canned) -> None:
    data, out = verl_file(tmp_path / "d.parquet"), tmp_path / "out"
    invoke(str(data), "--model", "m/m", "--out", str(out), "--limit", "3")
    with open(out / rp.LOG_FILE, "a") as f:
        f.write('{"index": 3, "id": "103", "out')
    result, stats = invoke(str(data), "--model", "m/m", "--out", str(out))
    assert (
        result.exit_code == 0 and stats["rows_in"] == 6 and len(rp.read_log(out / rp.LOG_FILE)) == 6
    )


def test_sigkill_then_resume_redoes_nothing(tmp_path, canned) -> None:
    data = verl_file(tmp_path / "d.parquet")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = [str(data), "--model", "m/m", "--batch-size", "1", "--verify", "2"]
    script = [sys.executable, str(TESTS / "canned_rephraser.py"), "rephrase", *args]
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "CANNED_DELAY": "0.3"}
    assert invoke(*args, "--out", str(whole))[0].exit_code == 0
    canned.clear()

    proc = subprocess.Popen(
        [*script, "--out", str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if len(rp.read_log(cut / rp.LOG_FILE)) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(rp.read_log(cut / rp.LOG_FILE))
    assert 2 <= done < 6 and not (cut / rp.STATS_FILE).exists()

    result, _ = invoke(*args, "--out", str(cut))
    assert result.exit_code == 0, result.output
    rephrased_now = [n for n in canned if n == 1]
    assert len(rephrased_now) == 6 - done  # only the rows the killed run had not logged
    for name in (rp.ORIGINAL_FILE, rp.REPHRASED_FILE, rp.PAIRS_FILE):
        assert (cut / name).read_bytes() == (whole / name).read_bytes()


def test_a_real_tiny_model_runs_end_to_end(tmp_path, tiny_folder) -> None:
    """Through the transformers backend: a random model's text never parses, every row is dropped."""
    data = verl_file(tmp_path / "d.parquet")
    out = tmp_path / "out"
    result, _ = invoke(
        str(data),
        "--model",
        tiny_folder,
        "--out",
        str(out),
        "--limit",
        "2",
        "--max-new-tokens",
        "6",
        json_out=False,
    )
    assert result.exit_code == 1 and "none of the 2 rows was kept" in result.stderr
    stats = json.loads((out / rp.STATS_FILE).read_text())
    assert stats["rows_in"] == 2 and stats["dropped"]["no_markers"] == 2
    assert pq.read_table(out / rp.ORIGINAL_FILE).num_rows == 0


def test_a_column_empty_in_the_first_row_keeps_its_type(tmp_path, canned) -> None:
    data = tmp_path / "mine.jsonl"
    rows = [{"problem": q, "answer": None if i == 0 else a} for i, (q, a) in enumerate(QUESTIONS)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    result, stats = invoke(
        str(data),
        "--model",
        "m/m",
        "--out",
        str(out),
        "--question-key",
        "problem",
        "--answer-key",
        "answer",
    )
    assert result.exit_code == 0, result.output
    assert [p.answer for p in train_from_snippet(stats)] == [None, "42", "6", "2", "8"]
