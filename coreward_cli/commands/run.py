"""`coreward run RECIPE`: train with a recipe, on the local engine or OpenRLHF on Ray."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from coreward_cli.errors import UserError


@click.command("run")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field, e.g. --set train.lr=1e-6 --set seed=2 (repeatable).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in the run directory from its latest checkpoint.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Start over: delete the earlier run's outputs in the run directory first.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the resolved recipe and what would run; run nothing."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result (summary or plan) as JSON on stdout."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (default: the recipe's output.dir, runs/{recipe}).",
)
def run(
    recipe_path: Path,
    overrides: tuple[str, ...],
    resume: bool,
    force: bool,
    dry_run: bool,
    as_json: bool,
    out: Path | None,
) -> None:
    """Train with RECIPE (a YAML file). An existing run is never overwritten silently:
    continue it with --resume, or start over with --force."""
    from coreward_cli.recipe import run_dir_for
    from coreward_cli.resolve import load_recipe_sources, read_recipe_text

    recipe, sources = load_recipe_sources(
        read_recipe_text(recipe_path), str(recipe_path), overrides
    )
    run_dir = out if out is not None else run_dir_for(recipe, recipe_path)
    console = Console(stderr=True) if as_json else Console()
    if recipe.engine.kind == "openrlhf":
        from coreward_cli.engines import openrlhf

        if force:
            raise UserError(
                "--force applies to the local engine; for openrlhf pick a new run directory with --out DIR"
            )
        if dry_run:
            openrlhf.dry_run(recipe, run_dir, as_json, console, sources)
        else:
            from coreward_cli.engines.openrlhf_job import run_job

            run_job(recipe, run_dir, resume, console)
        return
    if dry_run:
        _local_dry_run(recipe, sources, run_dir, resume, force, as_json, console)
        return
    from coreward_cli.engines.local import train

    try:
        if (
            as_json
        ):  # stdout carries the JSON alone: anything a library prints while training goes to stderr
            with contextlib.redirect_stdout(sys.stderr):
                summary = train(recipe, run_dir, resume, console, force=force)
            click.echo(json.dumps(summary, indent=2))
        else:
            train(recipe, run_dir, resume, console, force=force)
    except KeyboardInterrupt:
        click.echo(
            f"interrupted; continue from the last checkpoint with: "
            f"coreward run {recipe_path} --out {run_dir} --resume",
            err=True,
        )
        sys.exit(130)


def local_plan(recipe, run_dir: Path, resume: bool, force: bool) -> dict[str, Any]:
    """What the local engine would do, with the trainer's own data filter and step count (the
    tokenizer is loaded to measure prompts; no model is)."""
    from coreward_cli import runlayout
    from coreward_cli.data import load_train_problems
    from coreward_cli.engines import rundir
    from coreward_cli.engines.sampler import total_steps, usable_problems
    from coreward_cli.prompts import PromptStyle
    from coreward_plugins.methods import get_method

    method = get_method(recipe.method.name)
    views = tuple(dict.fromkeys((*method.policy_views, *method.teacher_views)))
    tokenizer = _plan_tokenizer(recipe)
    style = PromptStyle(recipe.model.system_prompt, recipe.model.chat_template)

    def prompt_tokens(problem, view: str) -> int:
        question = problem.question if view == "original" else problem.rephrased
        prompt = style.render(tokenizer, question)
        return len(tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens).input_ids)

    problems = load_train_problems(recipe)
    usable = usable_problems(recipe, problems, views, prompt_tokens if tokenizer else None)
    per_step = min(recipe.train.problems_per_step, len(usable.problems))
    n = recipe.rollout.n
    if runlayout.holds_run(run_dir):
        if resume and rundir.is_finished(run_dir):
            action = "nothing: the run already finished"
        elif resume:
            from coreward_cli.engines.checkpoint import newest_resumable

            try:
                found = newest_resumable(run_dir)
            except UserError as exc:
                action = f"refuse: {exc}"
            else:
                action = (
                    f"resume from {found.folder.name}"
                    + (f" (skipping damaged {'; '.join(found.skipped)})" if found.skipped else "")
                    if found
                    else "start at step 1 (no checkpoint yet)"
                )
        elif force:
            action = f"delete {rundir.describe(run_dir)} and start over"
        else:
            action = f"refuse: it holds {rundir.describe(run_dir)} (use --resume or --force)"
    else:
        action = "start a new run"
    return {
        "engine": "local",
        "run_dir": str(run_dir),
        "action": action,
        "device": recipe.engine.device,
        "model": recipe.model.path,
        "method": recipe.method.name,
        "policy_views": list(method.policy_views),
        "teacher_views": list(method.teacher_views),
        "training_problems": len(usable.problems),
        "dropped_problems": (
            f"{len(problems) - len(usable.problems)} ({usable.too_long} with a prompt over "
            f"rollout.max_prompt_tokens)"
            if tokenizer
            else "prompt lengths not checked: the tokenizer does not load here"
        ),
        "steps": total_steps(recipe, len(usable.problems)),
        "samples_per_step": per_step * n * (len(method.policy_views) + len(method.teacher_views)),
        "trained_samples_per_step": per_step * n * len(method.policy_views),
        "kl": f"{recipe.train.kl_estimator} x {recipe.train.kl_coef} vs {recipe.train.kl_target}"
        if recipe.train.kl_coef > 0
        else "off",
        "eval_sets": list(recipe.data.eval),
    }


def _plan_tokenizer(recipe) -> Any | None:
    """The run's tokenizer without its model (the built-in's is built in code); None if it does not
    load here (a hub id offline)."""
    from coreward_cli.models import load_tokenizer, model_source, resolve_model
    from coreward_cli.problem import BUILTIN

    if recipe.model.path == BUILTIN:
        from coreward_cli import toy

        return toy.build_tokenizer()
    try:
        return load_tokenizer(model_source(resolve_model(recipe.model.path)))
    except UserError:
        return None


def _local_dry_run(
    recipe,
    sources: dict[str, str],
    run_dir: Path,
    resume: bool,
    force: bool,
    as_json: bool,
    console: Console,
) -> None:
    from rich.syntax import Syntax
    from rich.table import Table

    from coreward_cli.recipe import dump_recipe, recipe_to_dict

    plan = local_plan(recipe, run_dir, resume, force)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "engine": "local",
                    "recipe": recipe_to_dict(recipe),
                    "sources": sources,
                    "plan": plan,
                },
                indent=2,
            )
        )
        return
    console.print(Syntax(dump_recipe(recipe, sources=sources), "yaml", background_color="default"))
    table = Table(title="local engine: what would run (nothing was run)", show_header=False)
    for key, value in plan.items():
        table.add_row(
            key.replace("_", " "), ", ".join(value) if isinstance(value, list) else str(value)
        )
    console.print(table)
