"""Loading a recipe: YAML and `--set` overrides into the typed schema (`load_recipe`), then
`resolve`: fill every default that depends on other fields, once, and check every combination of
fields, once. Engines only read a resolved recipe.

Defaults filled: the paper's EMA teacher for a method that has one. Checks: combinations that are
valid field by field but make no sense together; each names the line of the field to change.
"""

from __future__ import annotations

import dataclasses
import difflib
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node

from coreward_cli import data as train_data
from coreward_cli.engines import openrlhf_plan
from coreward_cli.errors import UserError
from coreward_cli.problem import BUILTIN
from coreward_cli.recipe import ClusterConfig, Recipe, TeacherConfig
from coreward_cli.typed_yaml import (
    SET_PREFIX,
    Converter,
    MappingNode,
    apply_override,
    compose,
    fail,
    parse_override,
)

Warn = Callable[[str], None]


@dataclass
class Where:
    """Finds the node behind a field path (or its nearest written ancestor) for error lines."""

    converter: Converter
    root: Node

    def node(self, path: str) -> Node:
        while path:
            if path in self.converter.nodes:
                value = self.converter.nodes[path]
                key = self.converter.key_nodes.get(path)
                from_file = not value.start_mark.name.startswith(SET_PREFIX)
                return (
                    key if key is not None and from_file else value
                )  # a section's error points at its key
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.root

    def given(self, path: str) -> bool:
        return path in self.converter.nodes

    def changed(self, path: str, value: object, default: object) -> bool:
        """Written in the recipe with a value other than the default (resolved dumps repeat every default)."""
        return self.given(path) and value != default

    def error(self, path: str, message: str) -> UserError:
        return fail(self.node(path), path, message)

    def warning(self, path: str, message: str) -> str:
        return str(fail(self.node(path), path, message))


def resolve(recipe: Recipe, where: Where, warn: Warn) -> dict[str, str]:
    """Fill the defaults that depend on other fields, then check the whole recipe (in place).

    Returns where each field's value came from (`sources`)."""
    cls = method_class(recipe, where)  # looked up once: every step below reads its declarations
    filled = _fill_defaults(recipe, where, cls)
    _check_method(recipe, where, warn, cls)
    _check_model(recipe, where, warn)
    _check_data(recipe, where, warn, cls)
    _check_training(recipe, where)
    _check_engine(recipe, where, warn, cls)
    _check_output(recipe, where)
    return sources(recipe, where, filled)


def sources(recipe: Recipe, where: Where, filled: list[str]) -> dict[str, str]:
    """Field path -> "--set", "recipe", "method default (NAME)" or "default", for every leaf field
    (a list counts as one field)."""
    out: dict[str, str] = {}

    def walk(obj: object, prefix: str, inherited: str | None) -> None:
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            path = f"{prefix}{f.name}"
            value = getattr(obj, f.name)
            by_method = inherited or (
                f"method default ({recipe.method.name})" if path in filled else None
            )
            if dataclasses.is_dataclass(value):
                walk(value, f"{path}.", by_method)
            elif where.given(path):
                node = where.converter.nodes[path]
                out[path] = "--set" if node.start_mark.name.startswith(SET_PREFIX) else "recipe"
            else:
                out[path] = by_method or "default"

    walk(recipe, "", None)
    return out


def method_class(recipe: Recipe, where: Where) -> type:
    """The registered Method class of `method.name` (its views and teacher needs)."""
    from coreward_plugins.methods import available_methods, get_method

    name = recipe.method.name
    try:
        return get_method(name)
    except Exception as exc:  # registry lookups and `module:Class` imports fail in many ways
        known = available_methods()
        reason = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
        if ":" in name or name in known:
            raise where.error(
                "method.name", f"cannot load method '{name}' ({reason}); check that it imports"
            ) from exc
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise where.error(
            "method.name",
            f"unknown method '{name}'; {hint}choose one of {', '.join(known)} or module:Class",
        ) from exc


# Where the official scripts of a method differ from the schema's defaults (Co-rewarding-I's), the
# method's values apply unless the recipe or a --set gives the field (reference doc §3.3, §4).
METHOD_DEFAULTS: dict[str, dict[str, object]] = {
    "gt": {"method.match": "hendrycks"},  # the official GT reward: verl math.compute_score
    "co_rewarding_ii": {  # run_corewarding-II.sh: KL 0.001 against the EMA teacher, data seed 1234
        "train.kl_coef": 0.001,
        "train.kl_target": "teacher",
        "data.shuffle_seed": 1234,
    },
    "co_rewarding_iii": {"train.kl_coef": 0.001, "train.kl_target": "teacher"},  # the fork's script
}


def _fill_defaults(recipe: Recipe, where: Where, cls: type) -> list[str]:
    """Fill what follows from the method; returns the field paths it filled."""
    filled = []
    if getattr(cls, "needs_teacher", False) and recipe.teacher is None:
        recipe.teacher = TeacherConfig()  # the paper's EMA: 0.99 -> 0.99999, cosine, every step
        filled.append("teacher")
    for path, value in METHOD_DEFAULTS.get(recipe.method.name, {}).items():
        if not where.given(path):
            section, name = path.split(".")
            setattr(getattr(recipe, section), name, value)
            filled.append(path)
    return filled


def _check_method(recipe: Recipe, where: Where, warn: Warn, cls: type) -> None:
    name = recipe.method.name
    needs_teacher = bool(getattr(cls, "needs_teacher", False))
    if not needs_teacher and where.given("teacher") and recipe.teacher is not None:
        raise where.error(
            "teacher",
            f"method {name} has no teacher; remove the teacher section or use co_rewarding_ii/iii",
        )
    if recipe.train.kl_target == "teacher" and not needs_teacher:
        raise where.error(
            "train.kl_target",
            f"method {name} has no teacher to anchor the KL to; use kl_target: initial",
        )
    teacher = recipe.teacher
    if (
        teacher is not None
        and teacher.schedule == "cosine"
        and teacher.decay_start > teacher.decay_end
    ):
        raise where.error(
            "teacher.decay_start",
            f"decay_start {teacher.decay_start} > decay_end {teacher.decay_end}: the teacher would speed up over the run; "
            "swap them (the paper: 0.99 -> 0.99999)",
        )
    if recipe.method.min_votes > recipe.rollout.n:
        raise where.error(
            "method.min_votes",
            f"{recipe.method.min_votes} agreeing answers can never come from rollout.n={recipe.rollout.n} samples; use <= {recipe.rollout.n}",
        )
    views = tuple(getattr(cls, "policy_views", ("original",)))
    if len(views) < 2 and where.changed("train.view_loss", recipe.train.view_loss, "sum"):
        warn(
            where.warning(
                "train.view_loss", f"method {name} trains one view, so view_loss has no effect"
            )
        )
    if (
        getattr(cls, "name", name) == "gt"
        and recipe.data.answer_key is None
        and not _all_builtin(recipe)
    ):
        raise where.error(
            "data.answer_key",
            "method gt rewards agreement with the reference answer; set the answer column",
        )


def uses_rephrased(cls: type) -> bool:
    views = tuple(getattr(cls, "policy_views", ())) + tuple(getattr(cls, "teacher_views", ()))
    return "rephrased" in views


def _all_builtin(recipe: Recipe) -> bool:
    return bool(recipe.data.train) and all(s.original == BUILTIN for s in recipe.data.train)


def _check_model(recipe: Recipe, where: Where, warn: Warn) -> None:
    """A model path that is not here and cannot be a hub id is a typo: say so before a run starts.
    On the openrlhf engine the cluster loads the model, so a path missing here is only a warning."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    spec = recipe.model.path
    if spec == BUILTIN or Path(spec).expanduser().exists():
        return
    try:
        validate_repo_id(spec)
        return
    except HFValidationError:
        pass
    problem = f"{spec!r} is not a folder or file here (relative to {Path.cwd()}), nor a hub id like Qwen/Qwen2.5-3B"
    if recipe.engine.kind == "openrlhf":
        warn(where.warning("model.path", problem + "; fine if the cluster's nodes have it"))
        return
    raise where.error("model.path", problem + "; fix the path")


def _check_data(recipe: Recipe, where: Where, warn: Warn, cls: type) -> None:
    cfg = recipe.data
    if not cfg.train:
        raise where.error(
            "data.train",
            "no training data; add a source, e.g. train: [{original: TMLR-Group-HF/Co-rewarding-RephrasedMATH}]",
        )
    if cfg.data_dir is not None and not Path(cfg.data_dir).expanduser().is_dir():
        raise where.error(
            "data.data_dir",
            f"folder {cfg.data_dir} does not exist (relative to {Path.cwd()}); point it at a copy laid out like shared/data",
        )
    needs_rephrased = uses_rephrased(cls)
    for i, source in enumerate(cfg.train):
        for field in ("original", "rephrased"):
            spec = getattr(source, field)
            if spec is None:
                continue
            path = f"data.train[{i}].{field}"
            if not spec.strip():
                raise where.error(
                    path, "is empty; name a file, a hub dataset id or builtin:tiny-arith"
                )
            problem = train_data.source_problem(spec, cfg.data_dir, rephrased=field == "rephrased")
            if problem:
                raise where.error(path, problem)
        has_rephrased = train_data.carries_rephrasings(source, cfg)
        if needs_rephrased and not has_rephrased:
            raise where.error(
                f"data.train[{i}]",
                f"method {recipe.method.name} needs rephrased questions but '{source.original}' has none; set "
                f"data.train[{i}].rephrased to a row-aligned file, or data.rephrased_key to the column that holds them",
            )
        if not needs_rephrased and (
            source.rephrased is not None or (cfg.rephrased_key and source.original != BUILTIN)
        ):
            field = (
                f"data.train[{i}].rephrased"
                if source.rephrased is not None
                else "data.rephrased_key"
            )
            warn(
                where.warning(
                    field,
                    f"method {recipe.method.name} trains on the original questions only; the rephrased ones are not used",
                )
            )
    for i, name in enumerate(cfg.eval):
        problem = train_data.eval_set_problem(name, cfg.data_dir)
        if problem:
            raise where.error(f"data.eval[{i}]", problem)


def _check_training(recipe: Recipe, where: Where) -> None:
    betas = recipe.train.betas
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise where.error(
            "train.betas", f"{betas} is not two numbers in [0, 1); the paper uses [0.9, 0.999]"
        )
    if recipe.rollout.temperature == 0.0:
        raise where.error(
            "rollout.temperature",
            "0 makes all n samples of a prompt identical, so groups carry no signal; use > 0 (paper: 1.0)",
        )
    if recipe.rollout.top_p == 0.0:
        raise where.error("rollout.top_p", "0 keeps no tokens; use a value in (0, 1] (paper: 1.0)")


def _check_engine(recipe: Recipe, where: Where, warn: Warn, cls: type) -> None:
    engine = recipe.engine
    builtin = recipe.model.path == BUILTIN
    if engine.kind == "openrlhf":
        if builtin:
            raise where.error(
                "model.path",
                f"{BUILTIN} runs on the local engine only; set engine.kind: local or use a real model",
            )
        if any(s.original == BUILTIN for s in recipe.data.train):
            raise where.error(
                "data.train",
                f"{BUILTIN} data runs on the local engine only; set engine.kind: local",
            )
        if recipe.train.loss_agg == "micro-token-mean":
            raise where.error(
                "train.loss_agg",
                "micro-token-mean runs on the local engine only (OpenRLHF normalises by the step's "
                "token count); use token-mean",
            )
        try:  # the checks OpenRLHF itself would fail on (or hang): dtype, GPUs, even micro-batches
            openrlhf_plan.recipe_problems(
                recipe,
                len(cls.policy_views),
                len(cls.teacher_views),
                bool(cls.needs_token_stats),
            )
        except UserError as exc:
            field, _, problem = str(exc).partition(": ")
            raise where.error(field, problem) from None
        for field, default in (("device", "auto"), ("threads", None)):
            if where.changed(f"engine.{field}", getattr(engine, field), default):
                warn(
                    where.warning(
                        f"engine.{field}",
                        "is read by the local engine only; the openrlhf engine ignores it",
                    )
                )
    elif where.changed("engine.cluster", engine.cluster, ClusterConfig()):
        warn(
            where.warning(
                "engine.cluster", "is read by the openrlhf engine only; engine.kind is local"
            )
        )


def _check_output(recipe: Recipe, where: Where) -> None:
    try:
        names = {
            name
            for _, name, _, _ in string.Formatter().parse(recipe.output.dir)
            if name is not None
        }
    except ValueError as exc:
        raise where.error(
            "output.dir", f"unbalanced braces ({exc}); the only placeholder is {{recipe}}"
        ) from exc
    unknown = names - {"recipe"}
    if unknown:
        raise where.error(
            "output.dir",
            f"unknown placeholder {{{sorted(unknown)[0]}}}; the only placeholder is {{recipe}}",
        )


# ---------------------------------------------------------------- loading


def recipe_dirs() -> list[Path]:
    """The shipped recipes (inside an installed package, or recipes/ of a checkout), then ./recipes."""
    import coreward_cli

    package = Path(coreward_cli.__file__).resolve().parent
    found: list[Path] = []
    for folder in (package / "recipes", package.parent / "recipes", Path.cwd() / "recipes"):
        if folder.is_dir() and folder.resolve() not in [f.resolve() for f in found]:
            found.append(folder)
    return found


def load_recipe(
    path: str | Path, overrides: Sequence[str] = (), warn: Callable[[str], None] | None = None
) -> Recipe:
    """Read, override (`a.b=value`, YAML rules) and resolve a recipe (defaults filled, checked).

    Every problem raises UserError with one line: `FILE:LINE: field: what is wrong and the fix`
    (`--set field: ...` for an override). `warn` receives one-line warnings (default: stderr).
    """
    return load_recipe_text(read_recipe_text(path), str(path), overrides, warn)


def read_recipe_text(path: str | Path) -> str:
    """A recipe file's text; a missing or unreadable file is a one-line error."""
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and not path.suffix:
        shipped = [
            d / f"{path.name}.yaml" for d in recipe_dirs() if (d / f"{path.name}.yaml").is_file()
        ]
        path = shipped[0] if shipped else path  # `coreward run tiny_cpu`: a shipped recipe by name
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(
            f"{path}: no such recipe file; see the shipped ones with `coreward recipe list`"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: cannot read the recipe ({exc.__class__.__name__}: {exc})"
        ) from exc


def load_recipe_text(
    text: str, name: str, overrides: Sequence[str] = (), warn: Callable[[str], None] | None = None
) -> Recipe:
    """`load_recipe` on text already in memory; `name` is what error lines call the file."""
    return load_recipe_sources(text, name, overrides, warn)[0]


def load_recipe_sources(
    text: str, name: str, overrides: Sequence[str] = (), warn: Callable[[str], None] | None = None
) -> tuple[Recipe, dict[str, str]]:
    """`load_recipe_text`, and where each field's value came from (see `sources`)."""
    root = compose(text, name)
    if root is None:
        raise UserError(f"{name}:1: the recipe is empty; write one with `coreward recipe new`")
    if not isinstance(root, MappingNode):
        raise fail(root, "", "a recipe is a mapping of sections (model:, data:, method:, ...)")
    for item in overrides:
        apply_override(root, *parse_override(item))
    converter = Converter()
    recipe = converter.build(Recipe, root)
    return recipe, resolve(recipe, Where(converter, root), warn or _warn_stderr)


def _warn_stderr(message: str) -> None:
    import click

    click.echo(f"warning: {message}", err=True)
