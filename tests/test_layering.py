"""The house rules of the layout, read from the source with `ast` (so a new import that breaks
them fails here, whether it sits at the top of a module or inside a function):

- `coreward_plugins` (plugins/) never imports `coreward_cli`;
- the method modules (answers, voting, methods/, advantages, batch), and everything they import,
  load no torch, Ray, OpenRLHF, DeepSpeed, vLLM or transformers code;
- the `coreward_cli` modules import each other without cycles.

Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"coreward_cli": ROOT / "coreward_cli", "coreward_plugins": ROOT / "plugins"}
METHOD_MODULES = (
    "coreward_plugins.answers",
    "coreward_plugins.voting",
    "coreward_plugins.advantages",
    "coreward_plugins.batch",
    "coreward_plugins.methods",
)
ENGINE_PACKAGES = ("torch", "ray", "openrlhf", "deepspeed", "vllm", "transformers")


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement of the file names (`from a import b` gives a, a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    mods = modules()
    return {m: {n for n in imported_names(p) if n in mods and n != m} for m, p in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_plugins_never_import_the_application() -> None:
    bad = {
        name: sorted(n for n in imported_names(path) if n.split(".")[0] == "coreward_cli")
        for name, path in modules().items()
        if name.startswith("coreward_plugins")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_method_modules_load_no_engine_code() -> None:
    mods, edges = modules(), graph()
    reach = {m for m in mods if m.startswith(METHOD_MODULES)}
    todo = list(reach)
    while todo:  # everything the method modules import, transitively, inside the project
        for w in edges[todo.pop()] - reach:
            reach.add(w)
            todo.append(w)
    offenders = {
        m: sorted(n for n in imported_names(mods[m]) if n.split(".")[0] in ENGINE_PACKAGES)
        for m in reach
    }
    assert {m: v for m, v in offenders.items() if v} == {}
    assert not any(m.startswith("coreward_cli") for m in reach)


def test_application_modules_import_each_other_without_cycles() -> None:
    app = {m: {w for w in v if w.startswith("coreward_cli")} for m, v in graph().items()}
    assert cycles({m: v for m, v in app.items() if m.startswith("coreward_cli")}) == []


def test_the_checks_see_what_they_check(tmp_path: Path) -> None:
    """The reader finds imports at any depth, skips TYPE_CHECKING, and the cycle finder finds cycles."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
        "def f():\n    from coreward_cli.data import load_train_problems\n    import ray.util\n"
    )
    assert imported_names(source) == {
        "typing",
        "typing.TYPE_CHECKING",
        "coreward_cli.data",
        "coreward_cli.data.load_train_problems",
        "ray.util",
    }
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "coreward_cli.recipe" in graph()["coreward_cli.resolve"]
