"""`coreward recipe new|show|validate|list`: write, show, check and find recipes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from coreward_cli.errors import UserError, one_line
from coreward_cli.fileutil import write_text_atomic

SET_HELP = "Override a field, e.g. --set train.lr=1e-6 or --set data.eval=[math500,gsm8k] (YAML values; repeatable)."


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def summary(recipe) -> str:
    """One line: method, model, data, batch shape and engine."""
    sources = ", ".join(
        s.original + (f" + {s.rephrased}" if s.rephrased else "") for s in recipe.data.train
    )
    engine = recipe.engine.kind
    if engine == "openrlhf":
        engine += f" ({recipe.engine.cluster.nodes}x{recipe.engine.cluster.gpus_per_node} GPUs)"
    steps = (
        f"max {recipe.train.max_steps} steps"
        if recipe.train.max_steps
        else f"{recipe.train.epochs} epochs"
    )
    return (
        f"{recipe.method.name} on {recipe.model.path}, data {sources}, "
        f"{recipe.train.problems_per_step} problems/step x n={recipe.rollout.n}, {steps}, engine {engine}"
    )


@click.group()
def recipe() -> None:
    """Write, show, validate and list recipes."""


@recipe.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--check-data",
    is_flag=True,
    help="Also read the training data (files, columns, pairing) and count the problems.",
)
def validate(file: Path, overrides: tuple[str, ...], check_data: bool) -> None:
    """Check a recipe; print OK and a one-line summary.

    Checks types, ranges, choices, data files and combinations of FILE with its --set overrides.
    """
    from coreward_cli.resolve import load_recipe

    loaded = load_recipe(file, overrides, warn=_warn)
    line = summary(loaded)
    if check_data:
        from coreward_cli.data import load_train_problems

        problems = load_train_problems(loaded)
        paired = sum(p.rephrased is not None for p in problems)
        line += f"; {len(problems)} training problems ({paired} with a rephrasing)"
        if len(problems) < loaded.train.problems_per_step:
            _warn(
                f"{file}: train.problems_per_step {loaded.train.problems_per_step} is more than the "
                f"{len(problems)} training problems; no step can be full"
            )
    click.echo(f"OK {file}: {line}")


@recipe.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--explain", is_flag=True, help="Put each field's description above it, as a YAML comment."
)
@click.option("--json", "as_json", is_flag=True, help="Print the resolved recipe as JSON.")
def show(file: Path, overrides: tuple[str, ...], explain: bool, as_json: bool) -> None:
    """Print the resolved recipe as YAML.

    Defaults are filled in and --set overrides applied; --explain documents every field and says
    where its value came from (default, method default, recipe or --set).
    """
    from coreward_cli.recipe import dump_recipe, recipe_to_dict
    from coreward_cli.resolve import load_recipe_sources, read_recipe_text

    loaded, sources = load_recipe_sources(read_recipe_text(file), str(file), overrides, _warn)
    if as_json:
        click.echo(json.dumps(recipe_to_dict(loaded), indent=2))
    else:
        click.echo(
            dump_recipe(loaded, explain=explain, sources=sources if explain else None), nl=False
        )


@recipe.command()
@click.option(
    "--method",
    required=True,
    help="Reward method, e.g. co_rewarding_i, co_rewarding_ii, majority_vote, gt.",
)
@click.option(
    "--model", required=True, help="Policy: a Hugging Face folder or hub id, or builtin:tiny-arith."
)
@click.option(
    "--data",
    "data_source",
    default=None,
    help="Training questions: a file or hub dataset id (builtin:tiny-arith for the toy model).",
)
@click.option(
    "--rephrased",
    default=None,
    help="Row-aligned rephrased questions (file or hub id), for co_rewarding_i/iii.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "openrlhf"]),
    default=None,
    help="Where it runs (default: local for builtin:tiny-arith, openrlhf otherwise).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Recipe file to write.",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def new(
    method: str,
    model: str,
    data_source: str | None,
    rephrased: str | None,
    engine: str | None,
    output: Path,
    force: bool,
) -> None:
    """Write a new recipe with the paper's settings.

    Every field is written, with its description above it, and checked before the file is written.
    """
    from coreward_cli.problem import BUILTIN
    from coreward_cli.recipe import (
        DataConfig,
        EngineConfig,
        MethodConfig,
        ModelConfig,
        Recipe,
        TrainSource,
        dump_recipe,
    )
    from coreward_cli.resolve import load_recipe_text

    if output.exists() and not force:
        raise UserError(f"{output} exists; pass --force to overwrite it or choose another -o")
    builtin = model == BUILTIN
    if data_source is None:
        if not builtin:
            raise UserError(
                "--data: name the training questions (a file or hub dataset id), e.g. --data TMLR-Group-HF/Co-rewarding-RephrasedMATH"
            )
        data_source = BUILTIN
    made = Recipe(
        model=ModelConfig(path=model),
        data=DataConfig(
            train=[TrainSource(original=data_source, rephrased=rephrased)],
            eval=["arithmetic"] if builtin else ["math500"],
        ),
        method=MethodConfig(name=method),
        engine=EngineConfig(kind=engine or ("local" if builtin else "openrlhf")),
    )
    if method in (
        "co_rewarding_ii",
        "co_rewarding_iii",
    ):  # the official scripts: KL 0.001 against the EMA teacher
        made.train.kl_coef = 0.001
        made.train.kl_target = "teacher"
    command = " ".join(
        ["coreward recipe new", "--method", method, "--model", model, "--data", data_source]
        + (["--rephrased", rephrased] if rephrased else [])
    )
    try:  # resolved before it is written: the file shows every default (the teacher of II/III too)
        made = load_recipe_text(dump_recipe(made), str(output), warn=_warn)
    except UserError as exc:
        raise UserError(f"nothing written: {exc}") from exc
    command = command.replace("\r", "\\r").replace("\n", "\\n")  # stays inside the comment
    text = f"# Written by `{command}`.\n# Every field is explained above it; `coreward recipe validate {output}` checks it.\n"
    text += dump_recipe(made, explain=True)
    try:
        write_text_atomic(output, text)
    except OSError as e:
        raise UserError(
            f"-o {output}: cannot write it ({one_line(e)}); pick a writable place"
        ) from e
    click.echo(f"wrote {output}: {summary(made)}")


def _about(path: Path) -> str:
    """The recipe's first header comment line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""  # listed as invalid by the recipe check
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


@recipe.command(name="list")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per recipe instead of a table."
)
def list_(as_json: bool) -> None:
    """List the shipped recipes: method, model, data.

    Looks in the recipes/ folder beside the package and in ./recipes.
    """
    from rich.console import Console
    from rich.table import Table

    from coreward_cli.resolve import load_recipe

    rows = []
    from coreward_cli.resolve import recipe_dirs

    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.y*ml")):
            relative = os.path.relpath(path)
            shown = relative if not relative.startswith(".." + os.sep) else str(path)
            row = {"recipe": shown, "about": _about(path)}
            try:
                loaded = load_recipe(path, warn=lambda message: None)
            except UserError as exc:
                row["error"] = str(exc)
            else:
                row.update(
                    method=loaded.method.name,
                    model=loaded.model.path,
                    data=", ".join(s.original for s in loaded.data.train),
                    engine=loaded.engine.kind,
                )
            rows.append(row)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        raise UserError("no recipes found in recipes/; write one with `coreward recipe new`")
    for row in rows:
        row["name"] = Path(row["recipe"]).stem
    folders = ", ".join(sorted({str(Path(row["recipe"]).parent) for row in rows}))
    keys = ("name", "method", "model", "engine", "data")
    table = Table(
        *keys,
        box=None,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        title=f"recipes in {folders}",
        title_justify="left",
    )
    for column, key in zip(table.columns, keys, strict=True):
        column.no_wrap = True
        column.overflow = "ellipsis"
        # model and data ids get shortened on a narrow terminal; the rest is always whole
        column.min_width = {"model": 10, "data": 16}.get(key) or max(
            len(str(row.get(key, ""))) for row in rows
        )
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "[red]invalid[/red]", "", "", row["error"])
        else:
            table.add_row(*(row[key] for key in keys))
    Console().print(table)
