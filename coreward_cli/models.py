"""Model specs -> a loadable model: HF folders, hub ids, run directories, GGUF files, the built-in.

A spec is one of
- `builtin:tiny-arith`: the toy's warm-started model (`coreward_cli.toy.warm_start()`);
- a run directory of the local engine (`RUN/final/`, or `RUN/checkpoints/step-00000N/policy`
  with `step`, `teacher/` and `final_teacher/` with `teacher=True`) or of the OpenRLHF engine
  (`RUN/model/`);
- a Hugging Face model folder, or a hub id (`org/name`);
- a `.gguf` file (or a folder plus `gguf_file=`), dequantized by transformers on load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreward_cli import runlayout
from coreward_cli.errors import UserError, one_line
from coreward_cli.problem import BUILTIN

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve_run_dir(run_dir: Path, step: int | None, teacher: bool) -> Path:
    role = runlayout.TEACHER if teacher else runlayout.POLICY
    if step is not None:
        ckpt = runlayout.checkpoint_dir(run_dir, step)
        if not ckpt.is_dir():
            have = runlayout.checkpoint_names(run_dir)
            raise UserError(
                f"run {run_dir} has no checkpoint for step {step} ({ckpt.name}); available: {', '.join(have) or 'none'}"
            )
        model = ckpt / role
    else:
        final = run_dir / (runlayout.FINAL_TEACHER if teacher else runlayout.FINAL)
        if final.is_dir():
            return final
        openrlhf_save = run_dir / runlayout.OPENRLHF_MODEL
        if not teacher and openrlhf_save.is_dir():
            return openrlhf_save
        latest = runlayout.latest_checkpoint(run_dir)
        if latest is None:
            raise UserError(
                f"run {run_dir} has no {final.name}/ and no complete checkpoint yet; wait for a checkpoint or pass --step N"
            )
        model = latest / role
    if not model.is_dir():
        raise UserError(
            f"run {run_dir}: {model} does not exist (a {role} model is saved only by methods that have one)"
        )
    return model


def resolve_model(spec: str, step: int | None = None, teacher: bool = False) -> str:
    """The folder, `.gguf` file or hub id that `spec` names (see module doc)."""
    if spec == BUILTIN:
        if step is not None or teacher:
            raise UserError(
                f"{BUILTIN} is a fixed model; --step and teacher apply only to run directories"
            )
        from coreward_cli import toy

        return str(toy.warm_start())
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and runlayout.is_run_dir(path):
            return str(_resolve_run_dir(path, step, teacher))
        if step is not None:
            raise UserError(
                f"--step applies to run directories; {spec} is not one (no recipe.yaml)"
            )
        if path.is_file() and path.suffix != ".gguf":
            raise UserError(
                f"model {spec} is a file; pass a model folder, a run directory, a .gguf file or a hub id"
            )
        return str(path)
    if spec.startswith("builtin:"):
        raise UserError(f"unknown built-in model '{spec}'; the built-in model is {BUILTIN}")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return spec
    raise UserError(
        f"model {spec} not found: pass an existing model folder, run directory, .gguf file or hub id (org/name)"
    )


@dataclass(frozen=True)
class ModelSource:
    """Where transformers loads from: a folder or hub id, plus the GGUF file inside it if any."""

    path: str
    gguf_file: str | None = None

    @property
    def name(self) -> str:
        """A short name for output folders: the last path part without suffix."""
        base = Path(self.gguf_file).stem if self.gguf_file else Path(self.path.rstrip("/")).name
        return base or "model"


def model_source(resolved: str, gguf_file: str | None = None) -> ModelSource:
    """Split a `.gguf` path into its folder and file, the way `from_pretrained` wants them."""
    if gguf_file:
        return ModelSource(resolved, gguf_file)
    path = Path(resolved)
    if path.suffix == ".gguf":
        return ModelSource(str(path.parent), path.name)
    return ModelSource(resolved)


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype == "auto":
        return (
            torch.bfloat16
            if device.startswith("cuda") and torch.cuda.is_bf16_supported()
            else torch.float32
        )
    if dtype not in table:
        raise UserError(f"dtype '{dtype}' is not one of auto, {', '.join(table)}")
    return table[dtype]


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    except (
        Exception
    ) as exc:  # transformers raises OSError, ValueError, KeyError... for unloadable folders
        raise UserError(
            f"tokenizer of {source.path} does not load ({one_line(exc)}); check the model path"
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(source: ModelSource, device: str = "auto", dtype: str = "auto") -> Any:
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.path, gguf_file=source.gguf_file, dtype=pick_dtype(dtype, device)
        )
    except Exception as exc:  # OSError, ValueError, KeyError...: all mean "this does not load"
        raise UserError(
            f"model {source.path} does not load ({one_line(exc)}); check the path, or that it is a causal LM"
        ) from exc
    return model.to(device).eval()
