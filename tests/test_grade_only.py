"""`coreward eval --responses`: grade-only answers right or exits 2 with one line (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreward_cli.evaluate import CONFIG_FILE, SAMPLES_FILE
from coreward_cli.main import cli
from tests.cli_checks import one_line_error


def grade(tmp_path: Path, lines: list[str], *args: str, out: str = "o"):
    path = tmp_path / "gens.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return CliRunner().invoke(
        cli, ["eval", "--responses", str(path), "--out", str(tmp_path / out), *args]
    )


def overall(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["overall"]


def row(reference: str, *responses: str) -> str:
    return json.dumps({"question": "q", "reference": reference, "responses": list(responses)})


def test_uneven_response_counts_use_each_questions_own_n(tmp_path):
    """Item 7: [right, wrong] + [right] is 75 % right per question, not 100 % (cut to n=1)."""
    result = grade(
        tmp_path, [row("2", "\\boxed{2}", "\\boxed{3}"), row("5", "\\boxed{5}")], "--json"
    )
    metrics = overall(result)
    assert metrics["avg@1"] == pytest.approx(0.75)
    assert metrics["pass@1"] == pytest.approx(0.75)
    assert metrics["n"] == 1 and metrics["n_max"] == 2
    assert "pass@2" not in metrics  # the second question has one response


def test_gsm8k_reference_in_its_own_form_is_graded(tmp_path):
    """Item 8: `... #### 72` against \\boxed{72} is right, with or without --bench gsm8k."""
    ref = "Natalia sold 48/2 = 24 clips in May. 48+24 = 72 #### 72"
    lines = [row(ref, "so \\boxed{72}"), row("#### 1,234", "\\boxed{1234}")]
    assert overall(grade(tmp_path, lines, "--json"))["avg@1"] == 1.0
    assert overall(grade(tmp_path, lines, "--bench", "gsm8k", "--json", out="g"))["avg@1"] == 1.0


def test_grade_only_refuses_options_that_do_nothing(tmp_path):
    """Item 8: --n, --temperature ... make no responses here; an unknown --bench is no convention."""
    lines = [row("2", "\\boxed{2}")]
    one_line_error(grade(tmp_path, lines, "--n", "4", "--temperature", "0"), "--n", "--temperature")
    one_line_error(grade(tmp_path, lines, "--bench", "nosuch"), "nosuch", "gsm8k")
    assert not (tmp_path / "o").exists()


def test_grade_only_does_not_overwrite_another_eval(tmp_path):
    """Item 6: a folder holding a model eval (its config and samples) is left as it was."""
    out = tmp_path / "o"
    out.mkdir()
    (out / CONFIG_FILE).write_text(json.dumps({"model": "m", "n": 8}) + "\n")
    (out / SAMPLES_FILE).write_text('{"generated": "by a model"}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(grade(tmp_path, [row("2", "\\boxed{2}")]), "another config", str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the same grade-only eval again is fine (it is the same config)
    assert grade(tmp_path, [row("2", "\\boxed{2}")], out="g").exit_code == 0
    assert grade(tmp_path, [row("2", "\\boxed{2}")], out="g").exit_code == 0


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"reference": "2", "responses": 5}', "non-empty list"),
        ('{"reference": "2", "responses": []}', "non-empty list"),
        ('{"reference": "2", "responses": [null]}', "expected text"),
        ("[1, 2, 3]", "not an object"),
        ("42", "not an object"),
        ('{"reference": "2", "responses": ["\\ud800"]}', "lone surrogate"),
        ('{"reference": "2", "responses": "x"}\n{"reference": ', "gens.jsonl:2:"),
        ('{"reference": ' * 60000 + "1" + "}" * 60000, "nested too deeply"),
    ],
)
def test_bad_responses_lines_are_one_line_errors(tmp_path, line, fragment):
    """Item 15 (and 11 for a responses file): exit 2, one line, nothing written."""
    one_line_error(grade(tmp_path, [line]), fragment)
    assert not (tmp_path / "o").exists()


def test_results_md_of_grade_only_is_titled_by_its_file(tmp_path):
    assert grade(tmp_path, [row("2", "\\boxed{2}")]).exit_code == 0
    title = (tmp_path / "o" / "results.md").read_text().splitlines()[0]
    assert title != "# None" and "gens.jsonl" in title


def test_lone_fbox_is_no_answer_unless_asked(tmp_path):
    """Issue 12: the official extraction scores a lone \\fbox{} as no answer; --fbox reads it, and a
    folder graded one way is not silently regraded the other."""
    lines = [row("72", "so \\fbox{72}"), row("5", "\\boxed{5}")]
    official = overall(grade(tmp_path, lines, "--json"))
    assert official["avg@1"] == 0.5 and official["no_answer"] == 0.5
    assert overall(grade(tmp_path, lines, "--fbox", "--json", out="f"))["avg@1"] == 1.0
    assert grade(tmp_path, lines, "--fbox", "--json").exit_code == 2
