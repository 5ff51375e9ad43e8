"""The README.md model card written by `coreward export`: what was trained, how, on what, how it scored.

Facts come from the run directory (recipe.yaml, summary.json/metrics.jsonl, eval/results.md|json) when
the source was one; a bare model folder gets a shorter card. Hub metadata sits in the YAML front matter.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from coreward_cli import rows as tables

if TYPE_CHECKING:
    from coreward_cli.export import CheckResult
    from coreward_cli.export_sources import ExportSource

CITATION = """@article{zhang2025co,
  title={Co-rewarding: Stable Self-supervised RL for Eliciting Reasoning in Large Language Models},
  author={Zhang, Zizhuo and Zhu, Jianing and Ge, Xinmu and Zhao, Zihua and Zhou, Zhanke and Li, Xuan and Feng, Xiao and Yao, Jiangchao and Han, Bo},
  journal={arXiv preprint arXiv:2508.00410},
  year={2025}
}"""

METHODS = {
    "gt": "the reference answer as reward (the supervised upper bound)",
    "majority_vote": "reward for agreeing with the majority answer of the same group (TTRL/SRT-style)",
    "co_rewarding_i": "Co-rewarding-I: each question view is rewarded by the majority answer of the other view "
    "(original <-> rephrased question)",
    "co_rewarding_ii": "Co-rewarding-II: rewarded by the majority answer of a slowly updated EMA teacher",
    "co_rewarding_iii": "Co-rewarding-III: rewarded by the EMA teacher's majority answer on the other question view",
    "self_certainty": "reward = mean token self-certainty (Intuitor-style)",
    "entropy": "reward = minus the mean token entropy (RENT-style)",
    "random": "coin-flip reward (a control)",
}


def render_card(
    source: ExportSource,
    check: CheckResult,
    dtype: str,
    params: int,
    name: str = "",
    chat: bool = True,
) -> str:
    recipe = source.recipe or {}
    base = str(tables.get(recipe, "model.path") or "")
    method = str(tables.get(recipe, "method.name") or "")
    title = name or (source.run_dir.name if source.run_dir else source.weights.name)
    rows = [
        ("Base model", f"`{base}`" if base else "unknown (not a coreward run directory)"),
        (
            "Method",
            f"`{method}`: {METHODS.get(method, 'a custom reward method')}" if method else "unknown",
        ),
        ("Training data", _data_line(recipe) or "unknown"),
        ("Steps", str(source.step) if source.step is not None else "unknown"),
        ("Exported", f"{source.label}; {dtype} safetensors; {_params(params)} parameters"),
        (
            "Self-check",
            f"reloaded with transformers: max |logit difference| {check.max_abs_diff:.3g} vs the source "
            f"on {check.prompts} prompts (tolerance {check.tolerance:.3g})",
        ),
        ("Exported by", f"coreward {_version()}"),
    ]
    parts = [
        _front_matter(base, method),
        f"# {title}\n",
        "A reasoning model trained with label-free reinforcement learning by "
        "[coreward](https://arxiv.org/abs/2508.00410) (Co-rewarding and its baselines).\n",
        "| | |\n| --- | --- |\n" + "\n".join(f"| {k} | {_cell(v)} |" for k, v in rows) + "\n",
        usage_snippet(title, chat),
    ]
    evaluation = eval_section(source.run_dir, source.weights)
    if evaluation:
        parts.append("## Evaluation\n\n" + evaluation)
    if source.recipe_text:
        parts.append(
            "## Recipe\n\nThe resolved recipe of the run (`coreward run` reads it back as is):\n\n"
            "```yaml\n" + source.recipe_text.rstrip() + "\n```\n"
        )
    parts.append("## Citation\n\n```bibtex\n" + CITATION + "\n```\n")
    return "\n".join(parts)


def usage_snippet(folder: str, chat: bool) -> str:
    """How to load and prompt the export with plain transformers (through the chat template if it has one)."""
    lines = [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
        f'model = AutoModelForCausalLM.from_pretrained("{folder}")',
    ]
    if chat:
        lines += [
            'messages = [{"role": "user", "content": "What is 17 + 25? Put the final answer within \\\\boxed{}."}]',
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
            'return_tensors="pt", return_dict=True)',
        ]
    else:
        lines += ['inputs = tokenizer("17+25=", return_tensors="pt")']
    lines += [
        "output = model.generate(**inputs, max_new_tokens=256, do_sample=False)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    return "## Use\n\n```python\n" + "\n".join(lines) + "\n```\n"


def eval_section(run_dir: Path | None, weights: Path | None = None) -> str | None:
    """`coreward eval` results of the run (RUN/eval/): results.md, else the table rebuilt from results.json."""
    if run_dir is None:
        return None
    folder = run_dir / "eval"
    results: dict[str, Any] = {}
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if (folder / "results.md").is_file():
        table = (folder / "results.md").read_text(encoding="utf-8")
    elif results:
        from coreward_cli.evaluate import markdown_table

        try:
            table = markdown_table(results)
        except (KeyError, TypeError, AttributeError):
            return None
    else:
        return None
    measured = results.get("resolved_model") if isinstance(results, dict) else None
    note = ""
    if measured and weights is not None and not _same_folder(Path(measured), weights):
        note = f"Measured by `coreward eval` on `{measured}`, not on the exported weights.\n\n"
    return note + _demote_headings(table).rstrip() + "\n"


def _front_matter(base: str, method: str) -> str:
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation"}
    if re.fullmatch(r"[\w.-]+/[\w.-]+", base) and not Path(base).exists():
        meta["base_model"] = base  # only hub ids: a local path or builtin is no valid hub reference
    meta["tags"] = ["coreward", "reinforcement-learning", "label-free-rl", "reasoning"] + (
        [method.replace("_", "-")] if method else []
    )
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _data_line(recipe: dict) -> str:
    sources = tables.get(recipe, "data.train") or []
    parts = []
    for entry in sources if isinstance(sources, list) else []:
        if isinstance(entry, dict) and entry.get("original"):
            part = f"`{entry['original']}`"
            if entry.get("rephrased"):
                part += f" (rephrased: `{entry['rephrased']}`)"
            parts.append(part)
    limit = tables.get(recipe, "data.max_problems")
    return ", ".join(parts) + (f", at most {limit} problems" if parts and limit else "")


def _same_folder(measured: Path, weights: Path) -> bool:
    """eval may have recorded a path relative to another working directory: the tail decides then."""
    return (
        measured.resolve() == weights.resolve()
        or measured.parts[-2:] == weights.resolve().parts[-2:]
    )


def _demote_headings(text: str) -> str:
    """Keep the card's outline: an eval report's headings go under '## Evaluation'."""
    return re.sub(r"(?m)^(#{1,4}) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n:,}"


def _version() -> str:
    try:
        return metadata.version("coreward")
    except metadata.PackageNotFoundError:
        return "(development)"
