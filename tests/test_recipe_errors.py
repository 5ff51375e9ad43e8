"""Malformed recipes: each ends in exactly one stderr line naming file:line (or --set) and the field, exit 2.

A case is a recipe text whose offending line carries the marker `# <-`, and the field the error
must name. Override cases give `--set` arguments instead and expect `--set KEY` as the location.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from coreward_cli.main import cli

GOOD = """\
model:
  path: builtin:tiny-arith
data:
  train:
    - original: builtin:tiny-arith
method:
  name: co_rewarding_i
engine:
  kind: local
"""

# (id, recipe text with `# <-` on the line the error must point at, field the error must name)
FILE_CASES = [
    ("unknown-top-level", GOOD + "lr: 1e-6  # <-\n", "lr"),
    ("typo-in-section", GOOD + "train:\n  lrr: 1e-6  # <-\n", "train.lrr"),
    ("int-got-text", GOOD + "rollout:\n  n: eight  # <-\n", "rollout.n"),
    ("int-got-float", GOOD + "rollout:\n  n: 8.5  # <-\n", "rollout.n"),
    ("int-got-bool", GOOD + "train:\n  epochs: true  # <-\n", "train.epochs"),
    (
        "bool-got-text",
        GOOD.replace(
            "  path: builtin:tiny-arith\n",
            "  path: builtin:tiny-arith\n  chat_template: maybe  # <-\n",
            1,
        ),
        "model.chat_template",
    ),
    ("float-got-list", GOOD + "train:\n  lr: [1, 2]  # <-\n", "train.lr"),
    ("above-maximum", GOOD + "rollout:\n  top_p: 1.5  # <-\n", "rollout.top_p"),
    ("below-minimum", GOOD + "train:\n  lr: -1e-6  # <-\n", "train.lr"),
    (
        "bad-choice",
        GOOD.replace("  name: co_rewarding_i\n", "  name: co_rewarding_i\n  match: fuzzy  # <-\n"),
        "method.match",
    ),
    (
        "bad-choice-in-list",
        GOOD.replace(
            "  name: co_rewarding_i\n",
            "  name: co_rewarding_i\n  extract_fallbacks: [gsm8k, boxd]  # <-\n",
        ),
        "method.extract_fallbacks[1]",
    ),
    ("section-is-scalar", GOOD + "train: 5  # <-\n", "train"),
    ("duplicate-key", GOOD + "seed: 1\nseed: 2  # <-\n", "seed"),
    (
        "missing-data-file",
        GOOD.replace(
            "    - original: builtin:tiny-arith\n", "    - original: ./no/such/file.parquet  # <-\n"
        ),
        "data.train[0].original",
    ),
    (
        "missing-rephrased-file",
        GOOD.replace(
            "    - original: builtin:tiny-arith\n",
            "    - original: builtin:tiny-arith\n      rephrased: builtin:tiny-arith  # <-\n",
        ),
        "data.train[0].rephrased",
    ),
    (
        "missing-data-dir",
        GOOD.replace("data:\n", "data:\n  data_dir: /no/such/folder  # <-\n"),
        "data.data_dir",
    ),
    (
        "no-training-data",
        GOOD.replace("  train:\n    - original: builtin:tiny-arith\n", "  train: []  # <-\n"),
        "data.train",
    ),
    (
        "unknown-eval-set",
        GOOD.replace("data:\n", "data:\n  eval: [math500, mmlu]  # <-\n"),
        "data.eval[1]",
    ),
    (
        "unknown-method",
        GOOD.replace("  name: co_rewarding_i\n", "  name: co_rewarding_iv  # <-\n"),
        "method.name",
    ),
    ("teacher-without-teacher-method", GOOD + "teacher:  # <-\n  decay_start: 0.99\n", "teacher"),
    (
        "kl-to-missing-teacher",
        GOOD.replace("  name: co_rewarding_i\n", "  name: majority_vote\n")
        + "train:\n  kl_target: teacher  # <-\n",
        "train.kl_target",
    ),
    (
        "decay-backwards",
        GOOD.replace("  name: co_rewarding_i\n", "  name: co_rewarding_ii\n")
        + "teacher:\n  decay_start: 0.9999  # <-\n  decay_end: 0.99\n",
        "teacher.decay_start",
    ),
    (
        "min-votes-above-n",
        GOOD.replace("  name: co_rewarding_i\n", "  name: co_rewarding_i\n  min_votes: 9  # <-\n"),
        "method.min_votes",
    ),
    (
        "openrlhf-with-builtin",
        GOOD.replace("  path: builtin:tiny-arith\n", "  path: builtin:tiny-arith  # <-\n").replace(
            "kind: local", "kind: openrlhf"
        ),
        "model.path",
    ),
    (
        "colocate-mismatch",
        GOOD.replace("  path: builtin:tiny-arith\n", "  path: Qwen/Qwen2.5-3B\n")
        .replace(
            "    - original: builtin:tiny-arith\n",
            "    - original: TMLR-Group-HF/Co-rewarding-RephrasedMATH\n",
        )
        .replace("kind: local", "kind: openrlhf\n  cluster:\n    vllm_engines: 2  # <-"),
        "engine.cluster.vllm_engines",
    ),
    ("zero-temperature", GOOD + "rollout:\n  temperature: 0  # <-\n", "rollout.temperature"),
    ("betas-not-a-pair", GOOD + "train:\n  betas: [0.9]  # <-\n", "train.betas"),
    ("bad-output-placeholder", GOOD + "output:\n  dir: runs/{name}  # <-\n", "output.dir"),
    (
        "gt-without-answers",
        GOOD.replace("  name: co_rewarding_i\n", "  name: gt\n").replace(
            "    - original: builtin:tiny-arith\n",
            "    - original: {jsonl}\n  answer_key: null  # <-\n  question_key: q\n  id_key: null\n",
        ),
        "data.answer_key",
    ),
    (
        "co-rewarding-i-without-rephrasings",
        GOOD.replace(
            "    - original: builtin:tiny-arith\n",
            "    - original: {jsonl}  # <-\n  question_key: q\n  id_key: null\n",
        ),
        "data.train[0]",
    ),
    ("empty-file", "# <-\n", ""),
    ("not-a-mapping", "- just  # <-\n- a list\n", ""),
]
FILE_CASES.insert(0, ("bad-yaml-syntax", GOOD + "train:\n  lr: [1e-6  # <-\n", ""))

# (id, --set arguments, the field the one line must name)
SET_CASES = [
    ("set-unknown-field", ["train.lrr=1e-6"], "train.lrr"),
    ("set-wrong-type", ["rollout.n=many"], "rollout.n"),
    ("set-bad-choice", ["method.tie=random"], "method.tie"),
    ("set-out-of-range", ["train.warmup_ratio=2"], "train.warmup_ratio"),
    ("set-without-equals", ["train.lr"], "train.lr"),
    ("set-nonsense-combination", ["method.name=gt", "teacher.decay_start=0.9"], "teacher"),
]


def _run(args: list[str]):
    return CliRunner().invoke(cli, args)


def _one_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("text,field", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_malformed_recipe_is_one_line_with_file_line_and_field(
    tmp_path: Path, text: str, field: str
) -> None:
    data = tmp_path / "questions.jsonl"
    data.write_text('{"q": "1+1=", "a": "2"}\n', encoding="utf-8")
    text = text.replace("{jsonl}", str(data))
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text, encoding="utf-8")
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if "# <-" in row)
    message = _one_line(_run(["recipe", "validate", str(recipe)]))
    assert message.startswith(f"error: {recipe}:{line}: "), message
    if field:
        assert f": {field}: " in message, message
    assert (
        len(message) > len(f"error: {recipe}:{line}: {field}: ") + 15
    )  # says what is wrong, not just where


@pytest.mark.parametrize(
    "overrides,field", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES]
)
def test_bad_override_names_the_set_flag_and_field(
    tmp_path: Path, overrides: list[str], field: str
) -> None:
    recipe = tmp_path / "good.yaml"
    recipe.write_text(GOOD, encoding="utf-8")
    args = ["recipe", "validate", str(recipe)]
    for item in overrides:
        args += ["--set", item]
    message = _one_line(_run(args))
    assert message.startswith("error: --set "), message
    assert field in message, message


def test_did_you_mean_and_choices_are_offered(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(GOOD + "train:\n  lrr: 1e-6\n", encoding="utf-8")
    assert "did you mean 'lr'?" in _one_line(_run(["recipe", "validate", str(recipe)]))
    recipe.write_text(GOOD + "lr: 1e-6\n", encoding="utf-8")
    assert "under 'train:'" in _one_line(_run(["recipe", "validate", str(recipe)]))
    message = _one_line(
        _run(["recipe", "validate", str(recipe), "--set", "lr=1", "--set", "train.schedule=cosin"])
    )
    assert "lr" in message  # the first problem wins: the file's stray `lr`
    recipe.write_text(GOOD, encoding="utf-8")
    message = _one_line(_run(["recipe", "validate", str(recipe), "--set", "train.schedule=cosin"]))
    assert "cosine, linear, constant" in message and "did you mean 'cosine'?" in message


def test_missing_recipe_file_is_one_line(tmp_path: Path) -> None:
    message = _one_line(_run(["recipe", "show", str(tmp_path / "nope.yaml")]))
    assert "nope.yaml" in message and "coreward recipe list" in message
