"""Training problems from the published dataset layouts, with their rephrasings paired.

A training source is one of:
- `builtin:tiny-arith`, the toy task (it carries its own rephrasings);
- a file (parquet, jsonl, json array), read with the recipe's column keys; its rephrasings come
  from a row-aligned second file (`rephrased:`) or from a second column (`data.rephrased_key`);
- a hub dataset id. The published Co-rewarding sets below carry their own layout; with
  `data.data_dir` they resolve to local files laid out like shared/data/train, otherwise they
  are read from the hub with the `datasets` library (imported only then). Other hub ids are
  read from the hub with the recipe's column keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from coreward_cli import rows as tables
from coreward_cli.benchdata import KNOWN_BENCHMARKS
from coreward_cli.errors import UserError
from coreward_cli.problem import BUILTIN, Problem
from coreward_cli.rows import FILE_TYPES, MISSING
from coreward_plugins.answers import extract_answer

if TYPE_CHECKING:
    from coreward_cli.recipe import DataConfig, Recipe, TrainSource


@dataclass(frozen=True)
class Layout:
    """Where a table keeps each part of a problem (dotted keys reach into nested columns)."""

    question_key: str
    rephrased_key: str | None = None
    answer_key: str | None = None
    id_key: str | None = None
    answer_in_solution: bool = False  # the answer is the last \boxed{} of a worked solution


VERL = Layout("prompt", None, "reward_model.ground_truth", "extra_info.index")


@dataclass(frozen=True)
class Published:
    """A public dataset: its files under `data.data_dir` (per split) and its columns on the hub."""

    files: dict[str, tuple[str, str | None]]  # split -> (original file, row-aligned rephrased file)
    hub: Layout
    config: str | None = None
    aliases: tuple[str, ...] = ()
    local: Layout = VERL

    @property
    def rephrased(self) -> bool:
        return self.hub.rephrased_key is not None


_PAIRED_HUB = Layout(
    "original_question", "rephrased_question", "solution", "idx"
)  # TMLR-Group-HF releases
PUBLISHED: dict[str, Published] = {
    "TMLR-Group-HF/Co-rewarding-RephrasedMATH": Published(
        {"train": ("math/train_original.parquet", "math/train_rephrased.parquet")},
        _PAIRED_HUB,
        aliases=("TMLR-Group-HF/CoReward-RephrasedMATH",),
    ),
    "TMLR-Group-HF/Co-rewarding-RephrasedDAPO-14k": Published(
        {"train": ("dapo/train_original.parquet", "dapo/train_rephrased.parquet")}, _PAIRED_HUB
    ),
    "TMLR-Group-HF/Co-rewarding-RephrasedOpenRS": Published(
        {"train": ("openrs/train_original.parquet", "openrs/train_rephrased.parquet")}, _PAIRED_HUB
    ),
    "DigitalLearningGmbH/MATH-lighteval": Published(
        {"train": ("math/train_original.parquet", None), "test": ("math/test.parquet", None)},
        Layout("problem", None, "solution", None, answer_in_solution=True),
    ),
    # Locally: the 14,109 problems that have a rephrasing (the hub copy has 14,116).
    "open-r1/DAPO-Math-17k-Processed": Published(
        {"train": ("dapo/train_original.parquet", None)},
        Layout("prompt", None, "solution"),
        config="en",
    ),
    "knoveleng/open-rs": Published(
        {"train": ("openrs/train_original.parquet", None)}, Layout("problem", None, "answer")
    ),
}
_BY_NAME = {
    alias.lower(): entry for name, entry in PUBLISHED.items() for alias in (name, *entry.aliases)
}


def published(name: str) -> Published | None:
    return _BY_NAME.get(name.lower())


def is_path_like(spec: str) -> bool:
    """A file path rather than a hub id (`org/name` has one slash and no file suffix)."""
    return (
        spec.startswith(("/", "./", "../", "~"))
        or Path(spec).suffix.lower() in FILE_TYPES
        or Path(spec).is_file()
    )


class SourceError(Exception):
    """A source that cannot be resolved; the message says why and what to do."""


@dataclass(frozen=True)
class Resolved:
    label: str  # what messages call it
    path: Path | None = None
    paired: Path | None = None  # row-aligned rephrased file that comes with a published dataset
    hub: tuple[str, str | None, str] | None = None  # (id, config, split)
    layout: Layout | None = None  # None: the recipe's column keys


def _local(data_dir: str, relative: str) -> Path | None:
    root = Path(data_dir).expanduser()
    for candidate in (
        root / relative,
        root / "train" / relative,
    ):  # data_dir may be shared/data or shared/data/train
        if candidate.is_file():
            return candidate
    return None


def locate(spec: str, data_dir: str | None, split: str) -> Resolved:
    if spec.startswith("builtin:"):
        raise SourceError(f"unknown builtin '{spec}'; the only one is {BUILTIN}")
    if is_path_like(spec):
        path = Path(spec).expanduser()
        if path.suffix.lower() not in FILE_TYPES:
            raise SourceError(f"{spec}: unsupported file type; use parquet, jsonl or a json array")
        if not path.is_file():
            raise SourceError(
                f"file {spec} does not exist (relative paths are read from {Path.cwd()}); fix the path"
            )
        return Resolved(str(path), path=path)
    entry = published(spec)
    if entry is None:
        return Resolved(spec, hub=(spec, None, split))
    if data_dir is None:
        return Resolved(
            spec,
            hub=(spec, entry.config, split),
            layout=entry.hub,
        )
    if split not in entry.files:
        raise SourceError(
            f"{spec} has no split '{split}' in data_dir; use one of {', '.join(entry.files)}"
        )
    original, rephrased = entry.files[split]
    found = [(name, _local(data_dir, name)) for name in (original, rephrased) if name]
    missing = [name for name, path in found if path is None]
    if missing:
        raise SourceError(
            f"{spec}: data_dir {data_dir} has no {missing[0]}; point data.data_dir at a folder laid out like shared/data/train"
        )
    paths = [path for _, path in found]
    return Resolved(
        spec,
        path=paths[0],
        paired=paths[1] if len(paths) > 1 else None,
        layout=entry.local,
    )


# ---------------------------------------------------------------- checks used by the recipe


def source_problem(
    spec: str, data_dir: str | None, split: str = "train", rephrased: bool = False
) -> str | None:
    """Why a source cannot be used (missing file, unknown builtin, ...), or None. Hub ids are not checked."""
    if spec == BUILTIN:
        return f"{BUILTIN} carries its own rephrasings; remove this field" if rephrased else None
    try:
        locate(spec, data_dir, split)
    except SourceError as exc:
        return str(exc)
    return None


def carries_rephrasings(source: TrainSource, cfg: DataConfig) -> bool:
    if source.original == BUILTIN or source.rephrased is not None:
        return True
    entry = None if is_path_like(source.original) else published(source.original)
    return entry.rephrased if entry is not None else cfg.rephrased_key is not None


def eval_set_problem(name: str, data_dir: str | None) -> str | None:
    """Why a held-out set cannot be evaluated, or None (benchmark names belong to coreward_cli.benchdata)."""
    if is_path_like(name):
        if Path(name).suffix.lower() not in FILE_TYPES:
            return f"{name}: unsupported file type; use parquet, jsonl or a json array"
        return (
            None
            if Path(name).expanduser().is_file()
            else f"file {name} does not exist (relative to {Path.cwd()}); fix the path"
        )
    if name in KNOWN_BENCHMARKS:
        return None
    return f"unknown eval set '{name}'; use one of {', '.join(KNOWN_BENCHMARKS)} or a json/jsonl/parquet file"


# ---------------------------------------------------------------- loading


def load_train_problems(recipe: Recipe) -> list[Problem]:
    """Every training problem of the recipe, in source order, at most `data.max_problems`."""
    cfg = recipe.data
    if not cfg.train:
        raise UserError(
            "data.train: no training data; add a source (a file, a hub dataset id or builtin:tiny-arith)"
        )
    limit = cfg.max_problems
    problems: list[Problem] = []
    for i, source in enumerate(cfg.train):
        items = _load_source(source, cfg, f"data.train[{i}]")
        if (
            len(cfg.train) > 1
        ):  # ids restart in every source; a pair's id must stay unique in a step
            items = [Problem(f"{i}:{p.id}", p.question, p.rephrased, p.answer) for p in items]
        problems.extend(items)
        if limit is not None and len(problems) >= limit:
            break
    return problems if limit is None else problems[:limit]


def _load_source(source: TrainSource, cfg: DataConfig, field: str) -> list[Problem]:
    if source.original == BUILTIN:
        from coreward_cli import toy  # torch loads only for the built-in task

        return toy.problems("train")
    try:
        main = locate(source.original, cfg.data_dir, source.split)
        extra = locate(source.rephrased, cfg.data_dir, source.split) if source.rephrased else None
    except SourceError as exc:
        raise UserError(f"{field}: {exc}") from exc
    layout = main.layout or Layout(cfg.question_key, cfg.rephrased_key, cfg.answer_key, cfg.id_key)
    table = _Table.read(main, layout, f"{field}.original")
    rephrased: list[str] | None = None
    partner = extra or (Resolved(str(main.paired), path=main.paired) if main.paired else None)
    if partner is not None:
        other = _Table.read(
            partner, Layout(layout.question_key, None, None, layout.id_key), f"{field}.rephrased"
        )
        if len(other.rows) != len(table.rows):
            raise UserError(
                f"{field}: {table.label} has {len(table.rows)} rows but {other.label} has {len(other.rows)}; "
                "the rephrased file must be row-aligned with the original (row i = the same problem)"
            )
        if layout.id_key is not None:
            for n, (a, b) in enumerate(zip(table.ids(), other.ids(), strict=True)):
                if a != b:
                    raise UserError(
                        f"{field}: row {n} is problem {a} in {table.label} but {b} in {other.label}; the files are not row-aligned"
                    )
        rephrased = other.questions(layout.question_key)
    elif layout.rephrased_key is not None:
        rephrased = table.questions(layout.rephrased_key)
    questions, answers, ids = table.questions(layout.question_key), table.answers(), table.ids()
    table.check_unique(ids, field)
    return [
        Problem(ids[n], questions[n], rephrased[n] if rephrased else None, answers[n])
        for n in range(len(questions))
    ]


@dataclass(frozen=True)
class SourceRows:
    """A source's records with every column, and the problems read from them (`coreward rephrase`
    writes the records back with the question replaced)."""

    label: str
    rows: list[dict[str, Any]]
    layout: Layout
    problems: list[Problem]


def read_source_rows(
    spec: str,
    data_dir: str | None,
    split: str,
    layout: Layout,
    field: str,
    optional: tuple[str, ...] = (),
    option: str = "data.{name}",
) -> SourceRows:
    """The records of one source, as `data.train` reads it (a published set brings its layout).

    `optional`: layout fields ("answer_key", "id_key") that become None when the table lacks them;
    `option`: what sets a layout field, for messages ("--{dashed}" on the command line).
    """
    if spec == BUILTIN:
        raise UserError(f"{field}: {BUILTIN} carries its own rephrasings; pass a file or dataset")
    try:
        source = locate(spec, data_dir, split)
    except SourceError as exc:
        raise UserError(f"{field}: {exc}") from exc
    table = _Table.read(source, source.layout or layout, field, all_columns=True, optional=optional)
    table.option = option
    table.check_keys()
    ids = table.ids()
    table.check_unique(ids, field)
    questions, answers = table.questions(table.layout.question_key), table.answers()
    problems = [Problem(ids[n], questions[n], None, answers[n]) for n in range(len(ids))]
    return SourceRows(table.label, table.rows, table.layout, problems)


@dataclass
class _Table:
    label: str
    rows: list[dict[str, Any]]
    columns: list[str]  # dotted names, for messages
    layout: Layout
    recipe_field: str
    _cache: dict[str, list[Any]] = field(default_factory=dict)

    option: str = "data.{name}"  # what sets a key ({name}: the field, {dashed}: with dashes)

    @classmethod
    def read(
        cls,
        source: Resolved,
        layout: Layout,
        recipe_field: str,
        all_columns: bool = False,
        optional: tuple[str, ...] = (),
    ) -> _Table:
        keys = [
            k
            for k in (layout.question_key, layout.rephrased_key, layout.answer_key, layout.id_key)
            if k and not all_columns
        ]
        if source.hub is not None:
            rows = tables.read_hub(*source.hub, what=recipe_field, hint=_HUB_HINT)
            label = f"{source.hub[0]} ({source.hub[2]})"
            columns = tables.column_names(rows[0]) if rows else []
        else:
            assert source.path is not None
            label = str(source.path)
            read = tables.read_file(source.path, keys, what=recipe_field)
            rows, columns = read.rows, read.columns
        if not rows:
            raise UserError(f"{recipe_field}: {label} has no rows; use a file with problems in it")
        absent = {
            n: None
            for n in optional
            if getattr(layout, n) and tables.lookup(rows[0], getattr(layout, n)) is MISSING
        }
        table = cls(label, rows, columns, dataclasses.replace(layout, **absent), recipe_field)
        if not all_columns:
            table.check_keys()
        return table

    def check_keys(self) -> None:
        for name in ("question_key", "rephrased_key", "answer_key", "id_key"):
            key = getattr(self.layout, name)
            if key is not None and tables.lookup(self.rows[0], key) is MISSING:
                self.missing(key, name, 0)

    def check_unique(self, ids: list[str], field: str) -> None:
        seen: dict[str, int] = {}
        for n, problem_id in enumerate(ids):
            if problem_id in seen:
                raise UserError(
                    f"{field}: {self.label} has problem id {problem_id} twice (rows {seen[problem_id]} and {n}) in "
                    f"'{self.layout.id_key}'; set {self._option('id_key')} to null to number the rows"
                )
            seen[problem_id] = n

    def _option(self, name: str) -> str:
        return self.option.format(name=name, dashed=name.replace("_", "-"))

    def missing(self, key: str, name: str, row: int) -> NoReturn:
        fix = f"set {self._option(name)} to one of them" + (
            ", or null" if name in ("id_key", "answer_key", "rephrased_key") else ""
        )
        where = f"row {row} of " if row else ""
        raise UserError(
            f"{self.recipe_field}: {where}{self.label} has no column '{key}' (columns: {', '.join(self.columns)}); {fix}"
        )

    def column(self, key: str, name: str) -> list[Any]:
        if key not in self._cache:
            values = []
            for n, row in enumerate(self.rows):
                value = tables.lookup(row, key)
                if value is MISSING:
                    self.missing(key, name, n)
                values.append(value)
            self._cache[key] = values
        return self._cache[key]

    def questions(self, key: str) -> list[str]:
        out = []
        for n, value in enumerate(self.column(key, "question_key")):
            text = tables.chat_text(value)
            if not text:
                raise UserError(
                    f"{self.recipe_field}: row {n} of {self.label}: column '{key}' holds no question text ({str(value)[:60]!r}); fix the row or the key"
                )
            out.append(text)
        return out

    def answers(self) -> list[str | None]:
        if self.layout.answer_key is None:
            return [None] * len(self.rows)
        values = [_answer_text(v) for v in self.column(self.layout.answer_key, "answer_key")]
        if self.layout.answer_in_solution:
            values = [extract_answer(v) if v else None for v in values]
        return values

    def ids(self) -> list[str]:
        if self.layout.id_key is None:
            return [str(n) for n in range(len(self.rows))]
        return [str(v) for v in self.column(self.layout.id_key, "id_key")]


def _answer_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # e.g. OlympiadBench's final_answer: ["$x$"]
        return _answer_text(value[0]) if value else None
    text = str(value).strip()
    return text or None  # an empty reference is no reference (two MATH rows have one)


_HUB_HINT = "set data.data_dir to a local copy laid out like shared/data/train, or use a file path"
