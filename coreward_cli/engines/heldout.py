"""Greedy accuracy on the recipe's held-out sets, during training (the only place, with the
per-step metrics, where reference answers are read)."""

from __future__ import annotations

from dataclasses import dataclass

from coreward_cli.benchdata import Benchmark, load_benchmark
from coreward_cli.grading import Grader
from coreward_cli.prompts import PromptStyle
from coreward_cli.recipe import Recipe
from coreward_cli.sampling import sample


@dataclass
class HeldOut:
    """The held-out sets of a run, loaded once, with the grader and prompt style of the run."""

    benchmarks: list[Benchmark]
    grader: Grader
    prompt_style: PromptStyle
    limit: int | None
    max_new_tokens: int

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> HeldOut:
        sets = [load_benchmark(spec, data_dir=recipe.data.data_dir) for spec in recipe.data.eval]
        return cls(
            sets,
            Grader(recipe.data.eval_match, timeout_s=recipe.method.match_timeout_s),
            PromptStyle(recipe.model.system_prompt, recipe.model.chat_template),
            recipe.data.eval_limit,
            recipe.rollout.max_new_tokens,
        )

    def evaluate(self, model, tokenizer) -> dict[str, float]:
        """{"eval/<set>": greedy accuracy, ..., "eval_accuracy": their mean}; {} when there are no sets."""
        results: dict[str, float] = {}
        for bench in self.benchmarks:
            items = bench.items if self.limit is None else bench.items[: self.limit]
            if not items:
                results[f"eval/{bench.name}"] = 0.0
                continue
            seqs = sample(
                model,
                tokenizer,
                [self.prompt_style.render(tokenizer, item.question) for item in items],
                n=1,
                temperature=0.0,
                top_p=1.0,
                max_new_tokens=self.max_new_tokens,
            )
            right = sum(
                self.grader.grade([text], item.reference, bench.convention)[1][0]
                for text, item in zip(seqs.texts, items)
            )
            results[f"eval/{bench.name}"] = right / len(items)
        if results:
            results["eval_accuracy"] = sum(results.values()) / len(results)
        return results
