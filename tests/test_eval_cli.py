"""`coreward eval` end to end on CPU with the built-in tiny model: outputs, resume, grade-only, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreward_cli.main import cli

TINY = ["eval", "builtin:tiny-arith", "--bench", "arithmetic", "--n", "4", "--temperature", "0.6"]


def run(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_model_writes_all_outputs_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    first = run([*TINY, "--limit", "10", "--out", str(out), "--json"])
    assert first.exit_code == 0, first.output
    results = json.loads(first.stdout)
    assert results["generated_now"] == 10
    samples = lines(out / "samples.jsonl")
    assert len(samples) == 10
    for s in samples:
        assert (
            s["benchmark"] == "arithmetic"
            and len(s["responses"]) == len(s["answers"]) == len(s["correct"]) == 4
        )
        assert s["question"].endswith("=") and s["reference"].isdigit()
        assert all(t >= 1 for t in s["n_tokens"])
    bench = results["benchmarks"]["arithmetic"]
    assert set(bench) >= {
        "questions",
        "avg@4",
        "pass@1",
        "pass@2",
        "pass@4",
        "maj@4",
        "no_answer",
        "mean_tokens",
    }
    assert bench["questions"] == 10 and results["match"] == "math_verify"
    right = sum(sum(s["correct"]) for s in samples)
    assert bench["avg@4"] == pytest.approx(right / 40)
    assert bench["avg@4"] > 0.3  # the warm start solves about two thirds of the eval split
    assert json.loads((out / "results.json").read_text())["benchmarks"] == results["benchmarks"]
    report = (out / "results.md").read_text()
    assert "| arithmetic | 10 |" in report and "maj@4" in report

    second = run([*TINY, "--limit", "20", "--out", str(out), "--json"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["generated_now"] == 10
    samples2 = lines(out / "samples.jsonl")
    assert len(samples2) == 20 and samples2[:10] == samples
    assert [s["index"] for s in samples2] == list(range(20))

    # a kill mid-write leaves a torn last line: it is cut off and that question is generated again
    with open(out / "samples.jsonl", "a") as f:
        f.write('{"benchmark": "arithmetic", "index": 20, "quest')
    third = run([*TINY, "--limit", "21", "--out", str(out), "--json"])
    assert third.exit_code == 0, third.output
    assert json.loads(third.stdout)["generated_now"] == 1
    assert len(lines(out / "samples.jsonl")) == 21

    # a changed config in the same folder: one clear line, exit 2, nothing touched
    before = (out / "samples.jsonl").read_bytes()
    changed_args = [a if a != "4" else "2" for a in TINY]  # --n 4 -> --n 2, all else equal
    changed = CliRunner().invoke(cli, [*changed_args, "--limit", "5", "--out", str(out)])
    assert changed.exit_code == 2
    assert "holds results of another config (n: 4 -> 2)" in changed.output
    assert len(changed.output.strip().splitlines()) == 1
    assert (out / "samples.jsonl").read_bytes() == before

    # grade-only on the samples file gives the same numbers without a model
    graded = run(
        ["eval", "--responses", str(out / "samples.jsonl"), "--out", str(tmp_path / "g"), "--json"]
    )
    assert graded.exit_code == 0, graded.output
    regraded = json.loads(graded.stdout)["benchmarks"]["arithmetic"]
    final = json.loads((out / "results.json").read_text())["benchmarks"]["arithmetic"]
    assert regraded["avg@4"] == pytest.approx(final["avg@4"]) and regraded[
        "maj@4"
    ] == pytest.approx(final["maj@4"])


def test_greedy_repeats_one_response(tmp_path: Path) -> None:
    result = run(
        [
            "eval",
            "builtin:tiny-arith",
            "--n",
            "2",
            "--temperature",
            "0",
            "--limit",
            "5",
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    for s in lines(tmp_path / "samples.jsonl"):
        assert s["responses"][0] == s["responses"][1]


def test_grade_only_with_custom_keys(tmp_path: Path) -> None:
    rows = [
        {"q": "1+1", "gold": "2", "out": ["\\boxed{2}", "\\boxed{3}"]},
        {"q": "half", "gold": "\\frac{1}{2}", "out": ["\\boxed{0.5}", "nothing"]},
    ]
    path = tmp_path / "gens.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "eval",
        "--responses",
        str(path),
        "--question-key",
        "q",
        "--answer-key",
        "gold",
        "--response-key",
        "out",
    ]
    result = run([*args, "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    overall = json.loads(result.stdout)["overall"]
    assert overall["avg@2"] == pytest.approx(2 / 4) and overall["pass@2"] == pytest.approx(1.0)
    assert overall["no_answer"] == pytest.approx(1 / 4)
    exact = json.loads(
        run([*args, "--match", "exact", "--out", str(tmp_path / "e"), "--json"]).stdout
    )["overall"]
    assert exact["avg@2"] == pytest.approx(1 / 4)  # 0.5 is not the string \frac{1}{2}
    missing = CliRunner().invoke(
        cli, ["eval", "--responses", str(path), "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "no field 'responses'" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "builtin:tiny-arith", "--bench", "nosuch"], "unknown benchmark 'nosuch'"),
        (
            ["eval", "builtin:tiny-arith", "--bench", "math500", "--data-dir", "/nonexistent-dir"],
            "math500.json",
        ),
        (["eval", "./no/such/model", "--bench", "arithmetic"], "not found"),
        (["eval"], "missing MODEL"),
    ],
)
def test_user_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_runs_of_the_tiny_model_keep_its_task_and_prompt(tmp_path: Path) -> None:
    from coreward_cli.commands.eval import _is_tiny

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "recipe.yaml").write_text("model:\n  path: builtin:tiny-arith\n")
    assert _is_tiny("builtin:tiny-arith") and _is_tiny(str(run))
    (run / "recipe.yaml").write_text("model:\n  path: Qwen/Qwen2.5-3B\n")
    assert not _is_tiny(str(run)) and not _is_tiny(str(tmp_path))
