"""YAML into typed dataclasses, remembering where every value came from.

The recipe is parsed into yaml's node tree (which keeps line marks), `--set` overrides are
spliced into that tree as nodes of their own (marked `--set KEY`), and only then is the tree
converted against the dataclass annotations. So every error, from a type mismatch here to a
nonsense combination found later, can name the exact `file:line` (or `--set KEY`) it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, Union

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from coreward_cli.errors import UserError, one_line

SET_PREFIX = "--set "
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MAP_TAG = "tag:yaml.org,2002:map"


class Loader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-6` as a float (YAML 1.1 demands a dot: `3.0e-6`)."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def location(node: Node) -> str:
    """`file:line` of a node, or `--set KEY` for a node that came from an override."""
    name = node.start_mark.name
    if name.startswith(SET_PREFIX):
        return name
    return f"{name}:{node.start_mark.line + 1}"


def fail(node: Node, field: str, message: str) -> UserError:
    """The one-line error for a field: `file:line: field: message` (or `--set field: message`)."""
    where = location(node)
    text = (
        f"{where}: {message}"
        if where == f"{SET_PREFIX}{field}" or not field
        else f"{where}: {field}: {message}"
    )
    return UserError(
        _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    )  # a key with a newline stays one line


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def compose(text: str, name: str) -> Node | None:
    """The node tree of one YAML document; syntax errors become one line with the line number."""
    try:
        loader = Loader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise UserError(f"{name}: not valid YAML: {one_line(exc)}; fix the text") from exc
    loader.name = name  # marks carry this as the file name (or `--set KEY`)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and "<stream end>" in (
            exc.problem or ""
        ):  # an unclosed [ or {: where it opened
            mark = exc.context_mark
        line = f":{mark.line + 1}" if mark and not name.startswith(SET_PREFIX) else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise UserError(f"{name}{line}: not valid YAML: {problem}; fix the syntax") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{name}: not valid YAML: {exc}; fix the syntax") from exc
    except RecursionError:
        raise UserError(f"{name}: nested too deeply to read; fix the YAML") from None
    finally:
        loader.dispose()


# ---------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str | int], str, Node]:
    """`a.b[0].c=value` -> (path, key as typed, value node parsed with YAML scalar/flow rules)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"{SET_PREFIX}{text}: expected KEY=VALUE, e.g. --set train.lr=1e-6")
    path: list[str | int] = []
    for part in key.split("."):
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)?((?:\[\d+\])*)", part)
        if part.isdigit():
            path.append(int(part))
        elif match and (match.group(1) or match.group(2)):
            if match.group(1):
                path.append(match.group(1))
            path.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
        else:
            raise UserError(
                f"{SET_PREFIX}{key}: '{part}' is not a field name; use dotted names like train.lr"
            )
    name = f"{SET_PREFIX}{key}"
    node = compose(value, name)
    if node is None:  # `--set model.system_prompt=` means null
        node = _scalar("", name, _NULL_TAG)
    return path, key, node


def _scalar(value: str, name: str, tag: str = _STR_TAG) -> ScalarNode:
    mark = yaml.Mark(name, 0, 0, 0, None, None)
    return ScalarNode(tag, value, mark, mark)


def apply_override(root: MappingNode, path: list[str | int], key: str, value: Node) -> None:
    """Put `value` at `path` in the tree, creating mappings on the way (marked as the override)."""
    name = f"{SET_PREFIX}{key}"
    node: Node = root
    for depth, step in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(step, int):
            if not isinstance(node, SequenceNode):
                raise UserError(f"{name}: {_dotted(path[:depth])} is not a list; drop the [{step}]")
            if step >= len(node.value):
                raise UserError(
                    f"{name}: {_dotted(path[:depth])} has {len(node.value)} entries; index {step} is out of range"
                )
            if last:
                node.value[step] = value
            else:
                node = node.value[step]
            continue
        if not isinstance(node, MappingNode):
            raise UserError(
                f"{name}: {_dotted(path[:depth])} is not a section; '{step}' cannot go inside it"
            )
        existing = next(
            (
                pair
                for pair in node.value
                if isinstance(pair[0], ScalarNode) and pair[0].value == step
            ),
            None,
        )
        if last:
            if existing is not None:
                node.value[node.value.index(existing)] = (existing[0], value)
            else:
                node.value.append((_scalar(step, name), value))
            return
        if existing is None or _is_null(existing[1]):
            child = MappingNode(_MAP_TAG, [], value.start_mark, value.end_mark)
            if existing is not None:
                node.value[node.value.index(existing)] = (existing[0], child)
            else:
                node.value.append((_scalar(step, name), child))
            node = child
        else:
            node = existing[1]


def _dotted(path: list[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "the recipe"


# ---------------------------------------------------------------- conversion

_constructor = SafeConstructor()


# Tags a recipe value may carry: what plain YAML resolves to. Explicit tags (`!!python/name:...`,
# `!custom`, `!!binary`, `!!set`) are refused rather than constructed or read as text.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}"
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "merge")
)


def _check_tag(node: Node, path: str) -> None:
    if node.tag not in _PLAIN_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise fail(
            node, path or "the recipe", f"the tag {tag} is not allowed; write the plain value"
        )


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _value(node: ScalarNode) -> Any:
    return _constructor.construct_object(node, deep=True)


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a section (mapping)"
    if isinstance(node, SequenceNode):
        return "a list"
    value = _value(node)
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "text"}.get(
        type(value), type(value).__name__
    )
    return f"{kind} ({node.value!r})" if node.value else kind


class Converter:
    """Converts a node tree against dataclass annotations; records each field path's node."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}  # "data.train[0].original" -> its value node
        self.key_nodes: dict[
            str, Node
        ] = {}  # field path -> the node of its key (for "remove this")

    def build(self, cls: type, node: Node, path: str = "") -> Any:
        """An instance of dataclass `cls` from a mapping node; absent fields take their defaults."""
        _check_tag(node, path)
        if not isinstance(node, MappingNode):
            raise fail(
                node,
                path,
                f"expected a section with fields ({', '.join(_field_names(cls))}), got {_describe(node)}",
            )
        written = {id(k) for k, _ in node.value}
        _constructor.flatten_mapping(
            node
        )  # `<<: *anchor` merge keys first, then the keys written here
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            child = f"{path}.{key}" if path else str(key)
            if key not in fields:
                raise fail(key_node, child, self._unknown(key, cls, path))
            if key in kwargs and id(key_node) in written and id(self.key_nodes[child]) in written:
                raise fail(
                    key_node, child, f"'{key}' appears twice in {path or 'the recipe'}; keep one"
                )
            self.nodes[child] = value_node
            self.key_nodes[child] = key_node
            value = self.convert(hints[key], value_node, child)
            _check_range(fields[key], value, value_node, child)
            kwargs[key] = value
        return cls(**kwargs)

    def convert(self, tp: Any, node: Node, path: str) -> Any:
        _check_tag(node, path)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            if _is_null(node) and len(inner) < len(args):
                return None
            return self.convert(inner[0], node, path)
        if _is_null(node) and dataclasses.is_dataclass(tp):
            return tp()  # `section:` with nothing under it keeps its defaults
        if dataclasses.is_dataclass(tp):
            return self.build(tp, node, path)
        if origin is list:
            return self._list(args[0], node, path)
        if origin is Literal:
            return self._choice(args, node, path)
        if not isinstance(node, ScalarNode):
            raise fail(node, path, f"expected {_type_name(tp)}, got {_describe(node)}")
        value = _value(node)
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise fail(node, path, f"expected true or false, got {_describe(node)}")
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise fail(node, path, f"expected a whole number, got {_describe(node)}")
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    raise fail(node, path, f"expected a finite number, got {node.value!r}")
                return float(value)
            raise fail(node, path, f"expected a number (e.g. 3e-6 or 0.5), got {_describe(node)}")
        if tp is str:
            if value is None:
                raise fail(node, path, "must not be empty (null); give a value")
            if isinstance(value, bool):
                raise fail(
                    node,
                    path,
                    f"expected text, got a boolean; quote it ('{node.value}') if you mean the text",
                )
            text = (
                value if isinstance(value, str) else node.value
            )  # numbers and dates keep their spelling
            if "\x00" in text:
                raise fail(node, path, "contains a NUL byte; remove it")
            return text
        raise TypeError(
            f"unsupported field type {tp!r} at {path}"
        )  # a schema bug, not a user error

    def _list(self, item_tp: Any, node: Node, path: str) -> list[Any]:
        if not isinstance(node, SequenceNode):
            example = (
                "[a, b]" if not dataclasses.is_dataclass(item_tp) else "a list of entries (- ...)"
            )
            raise fail(node, path, f"expected a list, e.g. {example}; got {_describe(node)}")
        out = []
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            self.nodes[child] = item
            shorthand = (
                dataclasses.is_dataclass(item_tp)
                and isinstance(item, ScalarNode)
                and not _is_null(item)
            )
            if shorthand:  # `- file.parquet` for an entry whose first field is the only one given
                first = dataclasses.fields(item_tp)[0].name
                self.nodes[f"{child}.{first}"] = item
                out.append(item_tp(**{first: self.convert(str, item, f"{child}.{first}")}))
            else:
                out.append(self.convert(item_tp, item, child))
        return out

    def _choice(self, choices: tuple[Any, ...], node: Node, path: str) -> Any:
        value = _value(node) if isinstance(node, ScalarNode) else None
        if isinstance(node, ScalarNode) and (value in choices or node.value in choices):
            return value if value in choices else node.value
        near = difflib.get_close_matches(
            str(node.value) if isinstance(node, ScalarNode) else "", [str(c) for c in choices], n=1
        )
        hint = f"; did you mean '{near[0]}'?" if near else ""
        got = f"'{node.value}'" if isinstance(node, ScalarNode) else _describe(node)
        raise fail(node, path, f"{got} is not one of {', '.join(map(str, choices))}{hint}")

    def _unknown(self, key: Any, cls: type, path: str) -> str:
        names = _field_names(cls)
        near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
        where = f"in {path}" if path else "at the top level"
        if near:
            return f"unknown field '{key}' {where}; did you mean '{near[0]}'?"
        elsewhere = _find_field(str(key), cls if not path else None)
        if elsewhere:
            return f"unknown field '{key}' {where}; it belongs under {elsewhere}"
        return f"unknown field '{key}' {where}; known fields: {', '.join(names)}"


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _find_field(name: str, root: type | None) -> str | None:
    """For a key at the top level that belongs in a section (e.g. `lr:` -> `train`)."""
    if root is None:
        return None
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or [tp]
        section = inner[0]
        if dataclasses.is_dataclass(section) and name in _field_names(section):
            return f"'{f.name}:' ({f.name}.{name})"
    return None


_INT_LIMIT = 2**31 - 1


def _type_name(tp: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(
        tp, str(tp)
    )


def _check_range(f: dataclasses.Field, value: Any, node: Node, path: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if isinstance(
        value, int
    ):  # no field means more than a 32-bit count; bigger ones overflow torch
        low = -_INT_LIMIT if low is None else low
        high = _INT_LIMIT if high is None else high
    if low is not None and value < low:
        raise fail(node, path, f"{value} is below the minimum {low}; use a value >= {low}")
    if high is not None and value > high:
        raise fail(node, path, f"{value} is above the maximum {high}; use a value <= {high}")


# ---------------------------------------------------------------- writing


def emit(obj: Any, explain: bool = False, sources: dict[str, str] | None = None) -> str:
    """A dataclass tree as block YAML in field order; `explain` puts each field's help above it,
    `sources` (field path -> where its value came from) goes beside each value as a comment."""
    return "\n".join(_emit_fields(obj, 0, explain, sources or {}, "")) + "\n"


def _emit_fields(
    obj: Any, indent: int, explain: bool, sources: dict[str, str], prefix: str
) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        source = f"  # {sources[path]}" if path in sources else ""
        if explain and f.metadata.get("help"):
            lines.append(f"{pad}# {f.metadata['help']}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            lines.extend(_emit_fields(value, indent + 2, explain, sources, f"{path}."))
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            lines.append(f"{pad}{f.name}:{source}")
            for item in value:
                item_lines = _emit_fields(item, indent + 4, explain, {}, "")
                first = next(
                    i for i, line in enumerate(item_lines) if not line.lstrip().startswith("#")
                )
                item_lines[first] = f"{pad}  - {item_lines[first].lstrip()}"
                lines.extend(item_lines)
        else:
            lines.append(f"{pad}{f.name}: {flow(value)}{source}")
    return lines


def flow(value: Any) -> str:
    """One value in YAML flow style, quoted where YAML needs it (`[0.9, 0.999]`, `'runs/{recipe}'`)."""
    text = yaml.safe_dump(
        [value], default_flow_style=True, width=1 << 30, allow_unicode=True
    ).strip()
    return text[1:-1]
