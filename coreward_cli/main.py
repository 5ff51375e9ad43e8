"""The `coreward` command: one click group, one module per verb under `commands/`.

Verbs are imported lazily so that `coreward --help` stays fast and a verb's heavy
dependencies (torch, transformers, ray) load only when that verb runs.
"""

from __future__ import annotations

import importlib

import click

from coreward_cli.errors import CorewardError

# verb -> (module under coreward_cli.commands, attribute, one-line help)
VERBS: dict[str, tuple[str, str, str]] = {
    "run": ("run", "run", "Train with a recipe (local engine or OpenRLHF on Ray)."),
    "eval": ("eval", "eval_cmd", "Measure a model on math benchmarks."),
    "rephrase": (
        "rephrase",
        "rephrase",
        "Rewrite training questions in a second wording (Co-rewarding-I's data).",
    ),
    "export": ("export", "export", "Write a trained model as a Hugging Face folder."),
    "recipe": ("recipe", "recipe", "Write, show, validate and list recipes."),
    "doctor": ("doctor", "doctor", "Check a GPU node against the cluster stack's pins."),
    "report": ("report", "report", "Figures, run comparison and collapse warnings for runs."),
}


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        """The library raises `CorewardError`s; here they become one line and their exit status."""
        try:
            return super().invoke(ctx)
        except CorewardError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in VERBS:
            return None
        module, attr, _ = VERBS[name]
        return getattr(importlib.import_module(f"coreward_cli.commands.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in VERBS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coreward")
def cli() -> None:
    """coreward: label-free RL for LLM reasoning (Co-rewarding, arXiv 2508.00410)."""


if __name__ == "__main__":
    cli()
