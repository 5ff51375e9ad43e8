"""Evaluation benchmarks: load them by name or path, and each one's answer convention.

A benchmark name resolves to a file under the data folder (`--data-dir`, env
`COREWARD_DATA_DIR`), laid out like the published files (math500.json, gsm8k.jsonl, ...; the
5,000-problem MATH test split `math_test` as verl's train/math/test.parquet), or, when online, to
its public hub dataset through `datasets`. Any other json, jsonl or
parquet file is a custom benchmark read with `question_key` / `answer_key`.

Each benchmark writes its reference answers its own way (GSM8K `#### 1,234`, AIME "070",
AMC "142.0", OlympiadBench `["$x$"]`, Minerva a `\\boxed{}` inside a worked solution); its
`coreward_cli.grading.Convention` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreward_cli import rows as tables
from coreward_cli.errors import UserError, field_names
from coreward_cli.grading import ARITHMETIC, CONVENTIONS, LATEX, Convention
from coreward_cli.problem import BUILTIN

DATA_DIR_ENV = "COREWARD_DATA_DIR"


def strip_dollars(answer: str) -> str:
    """OlympiadBench wraps answers in math mode: "$\\frac{1}{2}$" -> "\\frac{1}{2}"."""
    return answer.replace("$", "").strip()


@dataclass(frozen=True)
class BenchItem:
    index: int
    question: str
    reference: str  # already in the convention's canonical form
    solution: str | None = None  # a worked solution where the file carries one (tests, diagnostics)


@dataclass
class Benchmark:
    name: str
    source: str  # the file or hub id it was read from
    convention: Convention
    items: list[BenchItem]


@dataclass(frozen=True)
class _Layout:
    filename: str
    question_key: str
    reference: Callable[[dict[str, Any]], str | None]
    solution: Callable[[dict[str, Any]], str | None] = lambda row: None
    hub: tuple[str, str | None, str] | None = None  # (dataset id, config, split) for online use


def _last_boxed(text: str) -> str | None:
    from coreward_plugins.answers import extract_answer

    return extract_answer(text)


def _gsm8k_reference(row: dict[str, Any]) -> str | None:
    answer = str(row.get("answer", ""))
    return answer.rsplit("####", 1)[1].strip() if "####" in answer else None


def _olympiad_reference(row: dict[str, Any]) -> str | None:
    final = row.get("final_answer")
    if isinstance(final, str):
        final = [final]
    if not final:
        return None
    return ", ".join(strip_dollars(str(a)) for a in final)


def _olympiad_solution(row: dict[str, Any]) -> str | None:
    solution = row.get("solution")
    if isinstance(solution, list):
        return solution[0] if solution else None
    return solution


def _plain(key: str) -> Callable[[dict[str, Any]], str | None]:
    """A field as text (`a.b` for nested fields)."""

    def read(row: dict[str, Any]) -> str | None:
        value = tables.get(row, key)
        return None if value is None else str(value)

    return read


LAYOUTS: dict[str, _Layout] = {
    "math500": _Layout(
        "math500.json", "prompt", _plain("answer"), hub=("HuggingFaceH4/MATH-500", None, "test")
    ),
    # the official code's validation set: the whole MATH test split, in verl's layout beside the training data
    "math_test": _Layout(
        "train/math/test.parquet",
        "prompt",
        _plain("reward_model.ground_truth"),
        hub=("DigitalLearningGmbH/MATH-lighteval", "default", "test"),
    ),
    "gsm8k": _Layout(
        "gsm8k.jsonl",
        "question",
        _gsm8k_reference,
        _plain("answer"),
        hub=("openai/gsm8k", "main", "test"),
    ),
    "amc": _Layout(
        "amc.json", "prompt", _plain("answer"), hub=("AI-MO/aimo-validation-amc", None, "train")
    ),
    "aime24": _Layout(
        "aime24.json", "prompt", _plain("answer"), hub=("HuggingFaceH4/aime_2024", None, "train")
    ),
    "aime25": _Layout(
        "aime25.json", "prompt", _plain("answer"), hub=("math-ai/aime25", None, "test")
    ),
    "amc23": _Layout(
        "amc23.jsonl", "question", _plain("answer"), hub=("math-ai/amc23", None, "test")
    ),
    "minerva_math": _Layout(
        "minerva_math.jsonl",
        "problem",
        lambda row: _last_boxed(str(row.get("solution", ""))),
        _plain("solution"),
        hub=("math-ai/minervamath", None, "test"),
    ),
    "olympiadbench": _Layout(
        "olympiadbench.jsonl", "question", _olympiad_reference, _olympiad_solution
    ),
}
KNOWN_BENCHMARKS = [*LAYOUTS, ARITHMETIC]
# Hub copies name their columns differently from the published files.
_HUB_QUESTION_KEYS = ("problem", "question", "prompt")


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def _items(
    rows: list[dict[str, Any]],
    source: str,
    question_key: str,
    reference: Callable[[dict[str, Any]], str | None],
    solution: Callable[[dict[str, Any]], str | None],
    convention: Convention,
    answer_key_name: str,
) -> list[BenchItem]:
    if rows and tables.get(rows[0], question_key) is None:
        raise UserError(
            f"{source}: no field {question_key!r} in its records (fields: {field_names(rows[0])}); pass --question-key"
        )
    items = []
    for i, row in enumerate(rows):
        ref = convention.canonical(reference(row))
        if ref is None:
            raise UserError(
                f"{source}: record {i} has no reference answer in '{answer_key_name}'; pass --answer-key"
            )
        items.append(BenchItem(i, str(tables.get(row, question_key)), ref, solution(row)))
    return items


def load_benchmark(
    spec: str,
    data_dir: str | Path | None = None,
    question_key: str | None = None,
    answer_key: str | None = None,
) -> Benchmark:
    """A benchmark by name (file under data_dir, else the hub) or by path."""
    path = Path(spec)
    if tables.is_table_file(path) or path.is_file():
        return _load_custom(path, question_key or "question", answer_key or "answer")
    if spec == ARITHMETIC:
        return _load_arithmetic()
    if spec not in LAYOUTS:
        raise UserError(
            f"unknown benchmark '{spec}'; use one of {', '.join(KNOWN_BENCHMARKS)} or a json/jsonl/parquet path"
        )
    layout, convention = LAYOUTS[spec], CONVENTIONS[spec]
    folder = Path(data_dir) if data_dir else default_data_dir()
    if folder is not None:
        # the folder itself, or a copy of the published data with benchmarks under bench/ (one data_dir
        # then serves both a recipe's training sets and its held-out sets)
        file = next((f for f in _candidate_files(folder, layout.filename) if f.is_file()), None)
        if file is None:
            where = (
                "nor under bench/"
                if "/" not in layout.filename
                else "nor beside or inside this folder"
            )
            raise UserError(
                f"benchmark {spec}: {folder / layout.filename} does not exist ({where});"
                f" point --data-dir at a folder holding {layout.filename}"
            )
        rows = tables.read_file(file, what=f"benchmark {spec}").rows
        reference = _plain(answer_key) if answer_key else layout.reference
        return Benchmark(
            spec,
            str(file),
            convention,
            _items(
                rows,
                str(file),
                question_key or layout.question_key,
                reference,
                layout.solution,
                convention,
                answer_key or "answer",
            ),
        )
    return _load_from_hub(spec, layout, convention, question_key, answer_key)


def _candidate_files(folder: Path, filename: str) -> list[Path]:
    """Where a benchmark file may sit: in the folder, or in a copy of the published data given as its
    root (bench/math500.json, train/math/test.parquet) or as its bench/ or train/ folder."""
    if "/" not in filename:
        return [folder / filename, folder / "bench" / filename]
    return [folder / filename, folder.parent / filename, folder / filename.split("/", 1)[1]]


def _load_custom(path: Path, question_key: str, answer_key: str) -> Benchmark:
    rows = tables.read_file(path, what="benchmark").rows
    stem = path.stem
    convention = CONVENTIONS.get(stem, LATEX)
    if rows and tables.get(rows[0], answer_key) is None:
        raise UserError(
            f"{path}: no field {answer_key!r} in its records (fields: {field_names(rows[0])}); pass --answer-key"
        )
    reference = (
        _gsm8k_reference if stem == "gsm8k" and answer_key == "answer" else _plain(answer_key)
    )
    return Benchmark(
        stem,
        str(path),
        convention,
        _items(rows, str(path), question_key, reference, lambda r: None, convention, answer_key),
    )


def _load_from_hub(
    name: str,
    layout: _Layout,
    convention: Convention,
    question_key: str | None,
    answer_key: str | None,
) -> Benchmark:
    hint = f"pass --data-dir DIR (or set {DATA_DIR_ENV}) with a folder holding {layout.filename}"
    if layout.hub is None:
        raise UserError(f"benchmark {name} has no hub copy coreward knows; {hint}")
    hub_id, config, split = layout.hub
    rows = tables.read_hub(hub_id, config, split, what=f"benchmark {name}", hint=hint)
    qkey = question_key or next(
        (k for k in _HUB_QUESTION_KEYS if rows and k in rows[0]), layout.question_key
    )
    first = rows[0] if rows else {}
    if answer_key:
        reference = _plain(answer_key)
    elif name == "gsm8k":
        reference = _gsm8k_reference
    elif "final_answer" in first:
        reference = _olympiad_reference
    elif "answer" not in first and "solution" in first:
        reference = lambda row: _last_boxed(str(row.get("solution", "")))  # noqa: E731
    else:
        reference = _plain("answer")
    return Benchmark(
        name,
        hub_id,
        convention,
        _items(rows, hub_id, qkey, reference, layout.solution, convention, answer_key or "answer"),
    )


def _load_arithmetic() -> Benchmark:
    from coreward_cli import toy  # torch loads only for the built-in task

    convention = CONVENTIONS[ARITHMETIC]
    items = []
    for i, problem in enumerate(toy.problems("eval")):
        items.append(
            BenchItem(i, problem.question, convention.canonical(str(problem.answer)) or "", None)
        )
    return Benchmark(ARITHMETIC, BUILTIN, convention, items)
