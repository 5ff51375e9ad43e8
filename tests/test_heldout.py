"""Held-out sets during training are graded with `data.eval_match`, whatever `method.match` rewards with."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from coreward_cli.engines import heldout
from coreward_cli.resolve import load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("eval_match", "accuracy"),
    [("exact", 0.0), ("hendrycks", 0.5), ("normalized", 1.0), ("math_verify", 1.0)],
)
def test_held_out_answers_are_graded_with_eval_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eval_match: str, accuracy: float
) -> None:
    bench = tmp_path / "forms.jsonl"  # references written one way, answers another
    bench.write_text(
        "".join(
            json.dumps({"question": q, "answer": a}) + "\n"
            for q, a in [("q1", "81.0"), ("q2", "\\frac{1}{2}")]
        )
    )
    recipe = load_recipe(
        ROOT / "recipes/tiny_cpu.yaml",
        [f"data.eval=[{bench}]", f"data.eval_match={eval_match}", "method.match=exact"],
    )
    answers = {"q1": "So it is \\boxed{81}.", "q2": "That gives \\boxed{0.5}."}

    def fake_sample(model, tokenizer, prompts, **kwargs):
        return SimpleNamespace(texts=[answers[p.text.strip()[-2:]] for p in prompts])

    monkeypatch.setattr(heldout, "sample", fake_sample)
    sets = heldout.HeldOut.from_recipe(recipe)
    assert sets.evaluate(model=None, tokenizer=None) == {
        "eval/forms": accuracy,
        "eval_accuracy": accuracy,
    }


def test_paper_recipes_grade_held_out_sets_like_the_official_validation() -> None:
    for path in sorted((ROOT / "recipes").glob("qwen3b_math*.yaml")):
        recipe = load_recipe(path)
        assert recipe.data.eval == ["math_test"] and recipe.data.eval_match == "hendrycks", (
            path.name
        )
