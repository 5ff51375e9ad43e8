"""What `coreward export` reads: a run directory, a Hugging Face folder, or a DeepSpeed checkpoint.

`resolve_source` turns the SOURCE argument (+ --step/--teacher/--base) into an `ExportSource`:
where the weights are, where config/tokenizer/generation config come from, and the run directory
(for the model card). Every way it can fail is a `UserError` with one line.

Layouts (BRIEF, docs/openrlhf-0.11.2.md §7):
- local engine run: RUN/recipe.yaml, RUN/final/, RUN/final_teacher/,
  RUN/checkpoints/step-00000N/{policy,teacher}/
- openrlhf engine run: RUN/recipe.yaml, RUN/model/ (OpenRLHF's final HF save), RUN/ckpt/ (its ckpt.path)
- OpenRLHF ckpt.path: _actor/latest, _actor/global_stepN/*model_states.pt (+ optim states),
  global_stepN_hf/ (with --ckpt.save_hf); coreward's EMA teacher (plugins/openrlhf/actor.py):
  RUN/model_teacher/ (final, HF) and ckpt/_teacher/global_stepN/teacher_rank*.pt + teacher_meta.json
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from coreward_cli import runlayout
from coreward_cli.errors import UserError, one_line

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ExportSource:
    weights: Path  # an HF folder, or a DeepSpeed checkpoint folder (the one holding `latest`/tags)
    deepspeed_tag: str | None  # set for DeepSpeed checkpoints (e.g. global_step20)
    config_from: (
        str | None
    )  # HF folder or hub id with config/tokenizer (bare weights only; HF folders carry their own)
    run_dir: Path | None  # the coreward run directory, when SOURCE was one
    recipe: dict | None  # its recipe.yaml, parsed
    recipe_text: str | None  # and verbatim, for the model card
    step: int | None  # the training step of the exported weights, when known
    teacher: bool
    label: str  # what is exported, in words

    shadow_file: Path | None = (
        None  # a teacher_rank0.pt: the openrlhf engine's full fp32 EMA teacher (ZeRO<3)
    )

    @property
    def is_deepspeed(self) -> bool:
        return self.deepspeed_tag is not None

    @property
    def bare_weights(self) -> bool:
        """Weights without config/tokenizer beside them (these come from `config_from`)."""
        return self.deepspeed_tag is not None or self.shadow_file is not None


def parse_step(text: str | None) -> int | None:
    """--step as given on the command line; a bad value is a one-line UserError (not click's usage block)."""
    if text is None:
        return None
    if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
        raise UserError(
            f"--step {text!r}: give a positive step number of a saved checkpoint, e.g. --step 10"
        )
    return int(text)


def is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in WEIGHT_FILES
    )


def resolve_source(
    spec: str, step: int | None = None, teacher: bool = False, base: str | None = None
) -> ExportSource:
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"{spec}: no such run directory or model folder; pass a coreward run directory, "
            "a Hugging Face model folder or an OpenRLHF checkpoint folder"
        )
    if not path.is_dir():
        raise UserError(f"{spec}: is a file; pass a run directory or a model folder")
    if (path / runlayout.RECIPE).is_file():
        return _from_run(path, step, teacher, base)
    if teacher:
        raise UserError(
            f"--teacher: {spec} is not a coreward run directory (no recipe.yaml), so it has no teacher"
        )
    if is_hf_folder(path) and step is None:
        return ExportSource(
            path, None, None, None, None, None, None, False, f"Hugging Face folder {path}"
        )
    ds_root = deepspeed_root(path)
    if ds_root is not None or (step is not None and (path / f"global_step{step}_hf").is_dir()):
        return _from_ckpt_path(
            path, ds_root, step, base or _sibling_hf_save(path), None, None, None
        )
    if is_hf_folder(path):
        raise UserError(
            f"--step {step}: {spec} is a single Hugging Face model folder with no checkpoints; drop --step"
        )
    raise UserError(
        f"{spec}: not a coreward run directory (no recipe.yaml), a Hugging Face model folder "
        "(no config.json with weights) or a DeepSpeed checkpoint (no `latest` or global_step*/)"
    )


def deepspeed_root(path: Path) -> Path | None:
    """The folder DeepSpeed's zero_to_fp32 wants (holding `latest` and the tag folders): `path` or `path/_actor`."""
    for candidate in (path, path / "_actor"):
        if (candidate / "latest").is_file() or any(candidate.glob("global_step*/*model_states.pt")):
            return candidate
    return None


def _from_run(run: Path, step: int | None, teacher: bool, base: str | None) -> ExportSource:
    recipe_path = run / runlayout.RECIPE
    try:
        text = recipe_path.read_text(encoding="utf-8")
        recipe = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(
            f"{recipe_path}: not readable ({one_line(e)}); is this a complete coreward run directory?"
        ) from e
    if not isinstance(recipe, dict):
        raise UserError(f"{recipe_path}: not a recipe (expected a YAML mapping)")
    engine = str((recipe.get("engine") or {}).get("kind", "local"))
    if engine == "openrlhf":
        return _from_openrlhf_run(run, recipe, text, step, teacher, base)
    if engine != "local":
        raise UserError(
            f"{recipe_path}: engine.kind {engine!r} is unknown; export reads local and openrlhf runs"
        )
    saved = (runlayout.FINAL, runlayout.FINAL_TEACHER, runlayout.CHECKPOINTS)
    if not any((run / sub).exists() for sub in saved):
        raise UserError(
            f"{run}: no model saved yet (no final/ and no checkpoints/); wait for the first checkpoint"
        )
    from coreward_cli.models import resolve_model  # finds the model eval would load

    folder = Path(resolve_model(str(run), step, teacher))
    who = runlayout.TEACHER if teacher else runlayout.POLICY
    if folder.name in (runlayout.FINAL, runlayout.FINAL_TEACHER):
        step = _final_step(run)
        label = f"final {who} of run {run}"
    else:
        from coreward_cli.engines.checkpoint import checksum_problem

        problem = checksum_problem(folder.parent)
        if problem is not None:
            raise UserError(
                f"{folder.parent}: {problem}; export another checkpoint with --step N"
                " (or restore the file)"
            )
        step = _step_of(folder.parent.name)
        label = f"{who} at step {step} of run {run}"
    _require_hf(folder)
    return ExportSource(folder, None, None, run, recipe, text, step, teacher, label)


def _from_openrlhf_run(
    run: Path, recipe: dict, text: str, step: int | None, teacher: bool, base: str | None
) -> ExportSource:
    if teacher:
        return _openrlhf_teacher(run, recipe, text, step, base)
    final = run / runlayout.OPENRLHF_MODEL
    if step is None:
        if not is_hf_folder(final):
            ckpt = run / "ckpt"
            raise UserError(
                f"{run}: no final model yet (model/ has no Hugging Face save); export a checkpoint "
                f"with --step N (saved steps: {_list(_openrlhf_steps(ckpt))})"
            )
        return ExportSource(
            final,
            None,
            None,
            run,
            recipe,
            text,
            _final_step(run),
            False,
            f"final policy of run {run}",
        )
    config_from = (
        base
        or (str(final) if is_hf_folder(final) else None)
        or _sibling_hf_save(run / "ckpt")
        or str((recipe.get("model") or {}).get("path") or "")
        or None
    )
    ckpt = run / "ckpt"
    return _from_ckpt_path(ckpt, deepspeed_root(ckpt), step, config_from, run, recipe, text)


def _openrlhf_teacher(
    run: Path, recipe: dict, text: str, step: int | None, base: str | None
) -> ExportSource:
    """The EMA teacher of an openrlhf-engine run: the final HF save, or a checkpoint's fp32 shadow."""
    if step is None:
        final = run / "model_teacher"
        if not is_hf_folder(final):
            raise UserError(
                f"--teacher: run {run} has no final teacher (model_teacher/); the method may train "
                "none, or the run is unfinished (then add --step N)"
            )
        return ExportSource(
            final,
            None,
            None,
            run,
            recipe,
            text,
            _final_step(run),
            True,
            f"final teacher of run {run}",
        )
    folder = run / "ckpt" / "_teacher" / f"global_step{step}"
    try:
        meta = json.loads((folder / "teacher_meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(
            f"--teacher --step {step}: run {run} has no teacher checkpoint at {folder}"
        ) from e
    if meta.get("zero3"):
        raise UserError(
            f"{folder}: a ZeRO-3 teacher is saved in per-rank partitions, which export cannot merge; "
            "export the final teacher (drop --step)"
        )
    final = run / runlayout.OPENRLHF_MODEL
    config_from = (
        base or (str(final) if is_hf_folder(final) else None) or _sibling_hf_save(run / "ckpt")
    )
    if not config_from:
        raise UserError(f"{folder}: no config or tokenizer for the teacher; pass --base MODEL")
    return ExportSource(
        folder,
        None,
        config_from,
        run,
        recipe,
        text,
        step,
        True,
        f"teacher at step {step} of run {run}",
        shadow_file=folder / "teacher_rank0.pt",
    )


def _from_ckpt_path(
    ckpt: Path,
    ds_root: Path | None,
    step: int | None,
    config_from: str | None,
    run: Path | None,
    recipe: dict | None,
    text: str | None,
) -> ExportSource:
    """An OpenRLHF ckpt.path (or a bare DeepSpeed checkpoint folder): the fp32 DeepSpeed masters first,
    the per-save HF copy (global_stepN_hf, 16-bit) when no DeepSpeed tag exists for that step."""
    tags = _deepspeed_tags(ds_root) if ds_root is not None else {}
    if step is None:
        latest = ds_root / "latest" if ds_root is not None else None
        if latest is not None and latest.is_file():
            tag = latest.read_text(encoding="utf-8").strip()
        elif tags:
            tag = tags[max(tags)]
        else:
            raise UserError(f"{ckpt}: no DeepSpeed checkpoint tags (global_stepN/) found")
        step = _step_of(tag)
    else:
        tag = tags.get(step)
    if tag is None or ds_root is None or not (ds_root / tag).is_dir():
        hf = ckpt / f"global_step{step}_hf"
        if is_hf_folder(hf):
            return ExportSource(
                hf, None, None, run, recipe, text, step, False, f"policy at step {step} ({hf})"
            )
        raise UserError(
            f"--step {step}: {ckpt} has no checkpoint for that step "
            f"(saved steps: {_list(_openrlhf_steps(ckpt))})"
        )
    if not config_from:
        raise UserError(
            f"{ds_root}: a bare DeepSpeed checkpoint has no config or tokenizer; "
            "pass --base MODEL (the Hugging Face folder or hub id it was trained from)"
        )
    where = f"run {run}" if run is not None else str(ds_root)
    return ExportSource(
        ds_root,
        tag,
        config_from,
        run,
        recipe,
        text,
        step,
        False,
        f"policy at step {step} of {where} (DeepSpeed {tag})",
    )


def _deepspeed_tags(root: Path) -> dict[int, str]:
    tags: dict[int, str] = {}
    for folder in root.glob("global_step*"):
        if (
            folder.is_dir()
            and re.fullmatch(r"global_step\d+", folder.name)
            and any(folder.glob("*model_states.pt"))
        ):
            tags[_step_of(folder.name)] = folder.name
    return tags


def _step_of(tag: str) -> int | None:
    match = re.search(r"(\d+)$", tag)
    return int(match.group(1)) if match else None


def _openrlhf_steps(ckpt: Path) -> list[int]:
    root = deepspeed_root(ckpt) if ckpt.is_dir() else None
    steps = set(_deepspeed_tags(root)) if root is not None else set()
    steps |= {
        int(m.group(1))
        for p in ckpt.glob("global_step*_hf")
        if (m := re.fullmatch(r"global_step(\d+)_hf", p.name))
    }
    return sorted(steps)


def _sibling_hf_save(ckpt: Path) -> str | None:
    """Any HF save beside the DeepSpeed checkpoints (global_stepN_hf/): same architecture and tokenizer."""
    saves = sorted(p for p in ckpt.glob("global_step*_hf") if is_hf_folder(p))
    return str(saves[-1]) if saves else None


def _final_step(run: Path) -> int | None:
    """The last training step: summary.json if it says, else the last metrics.jsonl record with a step."""
    try:
        summary = json.loads((run / runlayout.SUMMARY).read_text(encoding="utf-8"))
        for key in ("steps", "step", "global_step", "final_step"):
            if isinstance(summary.get(key), int):
                return summary[key]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        lines = (run / runlayout.METRICS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            return record["step"]
    return None


def _require_hf(folder: Path) -> None:
    if not is_hf_folder(folder):
        raise UserError(
            f"{folder}: not a Hugging Face model folder (config.json or weights missing)"
        )


def _list(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if steps else "none"
