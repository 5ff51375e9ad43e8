"""Reading tables of records: json arrays, jsonl and parquet files, and hub datasets.

Training data, benchmarks and grade-only responses all come through here. A key reaches into
nested columns with dots (`reward_model.ground_truth`); a column whose own name contains dots
wins. A chat-message list stands for its last user turn (verl keeps questions as `prompt` chats).
Every failure is a `UserError` whose message starts with `what` (the recipe field or option that
named the table) when the caller gives one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreward_cli.errors import UserError, one_line

FILE_TYPES = (".parquet", ".jsonl", ".json")
MISSING: Any = object()  # `lookup` of a key a row does not have


def _fail(what: str | None, message: str) -> UserError:
    return UserError(f"{what}: {message}" if what else message)


def is_table_file(spec: str | Path) -> bool:
    return Path(spec).suffix.lower() in FILE_TYPES


@dataclass(frozen=True)
class Table:
    rows: list[dict[str, Any]]
    columns: list[str]  # every column the source has, nested ones dotted (for messages)


def read_file(path: Path, keys: Sequence[str] = (), what: str | None = None) -> Table:
    """The records of a json array (or a `{"data": [...]}` wrapper), jsonl or parquet file.

    `keys`: for parquet, read only the top-level columns these keys need (all when empty).
    """
    if not path.is_file():
        raise _fail(what, f"file {path} does not exist (relative to {Path.cwd()}); fix the path")
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise _fail(what, f"{path}: unsupported file type; use parquet, jsonl or a json array")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            names = schema.names
            wanted = sorted({k if k in names else k.split(".")[0] for k in keys} & set(names))
            rows = pq.read_table(path, columns=wanted if keys else None).to_pylist()
            return Table(rows, _schema_columns(schema))
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # arrow and decode errors are ValueErrors
        raise _fail(what, f"cannot read {path} ({one_line(exc)}); fix or replace the file") from exc
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    reason = f"{exc.msg} at column {exc.colno}" if hasattr(exc, "msg") else str(exc)
                    raise _fail(
                        what, f"{path}:{n}: not valid JSON ({reason}); fix the line"
                    ) from exc
                except RecursionError:
                    raise _fail(
                        what, f"{path}:{n}: nested too deeply to read; fix the line"
                    ) from None
    else:
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise _fail(what, f"{path}: not valid JSON ({exc}); fix the file") from exc
        except RecursionError:
            raise _fail(what, f"{path}: nested too deeply to read; fix the file") from None
        if isinstance(rows, dict):  # {"data": [...]}-style wrappers around one list
            lists = [v for v in rows.values() if isinstance(v, list)]
            rows = lists[0] if len(lists) == 1 else rows
        if not isinstance(rows, list):
            raise _fail(
                what, f"{path} is not a list of records; use a json array, jsonl or parquet"
            )
    bad = next((n for n, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise _fail(what, f"record {bad} of {path} is not an object with columns; fix the file")
    return Table(rows, column_names(rows[0]) if rows else [])


def column_names(row: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key of a record, nested ones dotted: for messages that list what a table has."""
    names = []
    for key, value in row.items():
        names.append(f"{prefix}{key}")
        if isinstance(value, dict):
            names.extend(column_names(value, f"{prefix}{key}."))
    return names


def _schema_columns(schema: Any) -> list[str]:
    import pyarrow as pa

    def walk(fields: Any, prefix: str) -> list[str]:
        names = []
        for f in fields:
            names.append(prefix + f.name)
            if pa.types.is_struct(f.type):
                names.extend(walk(list(f.type), f"{prefix}{f.name}."))
        return names

    return walk(list(schema), "")


def hub_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def read_hub(
    hub_id: str, config: str | None, split: str, *, what: str | None = None, hint: str
) -> list[dict]:
    """The records of a hub dataset split, through `datasets` (imported only here)."""
    if hub_offline():
        raise _fail(
            what, f"'{hub_id}' is a hub dataset and the hub is offline (HF_HUB_OFFLINE); {hint}"
        )
    try:
        import datasets
    except ImportError as exc:
        raise _fail(
            what, f"reading hub dataset '{hub_id}' needs `pip install datasets`; or {hint}"
        ) from exc
    try:
        table = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # network, auth, unknown id: all end the same way for a user
        raise _fail(
            what, f"cannot load '{hub_id}' (split {split}) from the hub ({one_line(exc)}); {hint}"
        ) from exc
    return [dict(row) for row in table]


def lookup(row: dict[str, Any], key: str) -> Any:
    """The value under a (dotted) key, or MISSING."""
    if key in row:  # a flat column whose name contains dots
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def get(row: dict[str, Any], key: str) -> Any:
    """`lookup`, with None for a missing key and a chat list read as its question (`chat_text`)."""
    value = lookup(row, key)
    if value is MISSING:
        return None
    return chat_text(value) if is_chat(value) else value


def is_chat(value: Any) -> bool:
    """A chat-message list: every item a mapping with `content` (a list of other records is not)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "content" in m for m in value)
    )


def chat_text(value: Any) -> str | None:
    """The question a value holds: text itself, or the last user turn of a chat-message list."""
    if isinstance(value, str):
        return value if value.strip() else None
    if is_chat(value):
        users = [m.get("content") for m in value if m.get("role") == "user"]
        text = users[-1] if users else None
        return text if isinstance(text, str) and text.strip() else None
    return None
