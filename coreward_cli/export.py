"""`coreward export`: write a trained model as a self-checked Hugging Face folder.

The flow: load the source in fp32 (an HF folder, or DeepSpeed ZeRO partitions merged by DeepSpeed's
own zero_to_fp32 into a model built from the base config), take its logits on a few fixed prompts,
cast to the export dtype, `save_pretrained` (safetensors, sharded) with tokenizer and generation
config into a hidden folder beside DIR, reload that folder with plain transformers, compare logits
and tokenizer, write the model card, and only then rename it to DIR. A failed check leaves nothing.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from coreward_cli.errors import CorewardError, UserError, one_line
from coreward_cli.export_card import render_card
from coreward_cli.export_sources import ExportSource
from coreward_cli.fileutil import share_like_umask

Dtype = Literal["auto", "bf16", "fp16", "fp32"]
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Allowed max |logit difference| = ABS + REL * max |reference logit|. Logits are compared in fp32, so an
# fp32 export must match almost exactly; bf16/fp16 only carry their weight rounding.
TOLERANCE = {"fp32": (1e-5, 1e-6), "fp16": (1e-3, 1e-2), "bf16": (1e-2, 5e-2)}
PROBE_TEXTS = ("1+2=", "Question: What is 12 times 7?\nAnswer:", "Let's think step by step. 17+25=")
PROBE_CHAT = "What is 3+4? Put the final answer within \\boxed{}."
PROBE_MAX_TOKENS = 48
# A tokenizer's vocabulary; tokenizer_config.json alone gives transformers an empty tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


class SelfCheckFailed(CorewardError):
    """The written folder does not reproduce the source: exit 1, nothing left behind."""


@dataclass
class CheckResult:
    dtype: str
    max_abs_diff: float
    tolerance: float
    prompts: int
    tokens: int


@dataclass
class ExportResult:
    out: Path
    source: str
    dtype: str
    params: int
    files: list[str]
    bytes: int
    check: CheckResult


def parse_shard_size(text: str) -> int:
    """'2GB', '500MB', '1GiB', or bytes -> bytes (decimal units as in transformers)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise UserError(f"--max-shard-size {text!r}: give a size like 2GB, 500MB or 1GiB")
    units = {
        "B": 1,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
    }
    size = int(float(match.group(1)) * units[(match.group(2) or "B").upper()])
    if size < 1:
        raise UserError(f"--max-shard-size {text!r}: must be positive")
    return size


def check_destination(out: Path, source: ExportSource, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; pick a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(
            f"--out {out}: folder is not empty; pick another or pass --force to replace it"
        )
    protected = [source.weights, *([source.run_dir] if source.run_dir else [])] + (
        [Path(source.config_from)]
        if source.config_from and Path(source.config_from).exists()
        else []
    )
    target = out.resolve()
    for path in protected:
        src = path.resolve()
        if target == src or target in src.parents or src in target.parents:
            raise UserError(
                f"--out {out}: would replace the source {path} or write inside it; "
                "pick a folder outside it"
            )


def export_model(
    source: ExportSource,
    out: Path,
    dtype: Dtype = "auto",
    force: bool = False,
    max_shard_size: int = 2 * 10**9,
    status: Callable[[str], Any] | None = None,
) -> ExportResult:
    """Export, self-check, and rename into `out`. Raises UserError (bad input) or SelfCheckFailed."""
    with _quiet_transformers():
        return _export(source, out, dtype, force, max_shard_size, status or (lambda message: None))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load reports or tqdm bars from transformers: they would bury our one-line verdicts, and we
    check loading ourselves."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _export(
    source: ExportSource,
    out: Path,
    dtype: Dtype,
    force: bool,
    max_shard_size: int,
    step: Callable[[str], Any],
) -> ExportResult:
    check_destination(out, source, force)
    step(f"loading {source.label}")
    model, tokenizer, source_dtype = load_source(source)
    export_dtype = source_dtype if dtype == "auto" else dtype
    probes = probe_inputs(tokenizer, model.config)
    reference = probe_logits(model, probes)
    params = sum(p.numel() for p in model.parameters())
    generation = _generation_dict(model.generation_config)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create its parent folder ({e.strerror})") from e
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        step(f"writing {export_dtype} safetensors")
        model.to(TORCH_DTYPES[export_dtype])
        try:
            _write_model(model, partial, max_shard_size)
            tokenizer.save_pretrained(partial)
        except OSError as e:
            raise UserError(
                f"--out {out}: cannot write beside it ({e.strerror or e}); check space and permissions"
            ) from e
        del model
        gc.collect()
        step("reloading the export with transformers to check it")
        check = verify_export(partial, reference, probes, tokenizer, generation, export_dtype)
        card = render_card(
            source,
            check,
            export_dtype,
            params,
            out.name,
            chat=bool(getattr(tokenizer, "chat_template", None)),
        )
        (partial / "README.md").write_text(card, encoding="utf-8")
        share_like_umask(partial)
        files = sorted(p.name for p in partial.iterdir())
        size = sum(p.stat().st_size for p in partial.iterdir() if p.is_file())
        _move_into_place(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ExportResult(out, source.label, export_dtype, params, files, size, check)


def load_source(source: ExportSource):
    """(model in fp32, tokenizer, dtype name of the source weights for --dtype auto)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    where = str(source.config_from if source.bare_weights else source.weights)
    config = _loading(where, "config", lambda: AutoConfig.from_pretrained(where))
    source_dtype = _dtype_name(
        getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    )
    if Path(where).is_dir() and not any((Path(where) / name).is_file() for name in TOKENIZER_FILES):
        # transformers would quietly build an empty tokenizer from config.json alone
        raise UserError(
            f"{where}: has no tokenizer vocabulary (tokenizer.json, tokenizer.model or vocab.json); "
            "pass --base with the folder the model was trained from"
        )
    tokenizer = _loading(where, "tokenizer", lambda: AutoTokenizer.from_pretrained(where))
    if not source.bare_weights:
        model, info = _loading(
            where,
            "model",
            lambda: AutoModelForCausalLM.from_pretrained(
                where, dtype=torch.float32, output_loading_info=True
            ),
        )
        if info.get("missing_keys") or info.get("mismatched_keys"):
            # transformers would fill them with random values and the export would carry them on
            broken = sorted(map(str, info.get("missing_keys") or info.get("mismatched_keys")))
            raise UserError(
                f"{where}: the weights are incomplete ({len(broken)} tensors missing or misshapen, "
                f"e.g. {broken[0]}); is the save complete?"
            )
    else:
        model = _loading(
            where, "model", lambda: AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        )
        state = (
            merge_deepspeed(source.weights, source.deepspeed_tag)
            if source.is_deepspeed
            else _loading(
                str(source.shadow_file),
                "teacher state",
                lambda: torch.load(source.shadow_file, map_location="cpu", weights_only=True),
            )
        )
        load_merged_state(model, state, source)
        try:
            model.generation_config = GenerationConfig.from_pretrained(where)
        except OSError:
            pass  # no generation_config.json beside the base config: keep the one derived from config
    model.eval()
    return model, tokenizer, source_dtype


def merge_deepspeed(root: Path, tag: str | None) -> dict[str, torch.Tensor]:
    """The fp32 master weights of a ZeRO-1/2/3 checkpoint, merged by DeepSpeed's own converter."""
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError as e:
        raise UserError(
            "exporting a DeepSpeed checkpoint needs deepspeed: "
            "pip install deepspeed==0.19.6 (or pip install -e '.[cluster]')"
        ) from e
    try:
        with contextlib.redirect_stdout(
            sys.stderr
        ):  # its progress prints must not pollute --json on stdout
            return get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
    except (OSError, ValueError, KeyError, RuntimeError, AssertionError, EOFError) as e:
        raise UserError(
            f"{root / (tag or '')}: DeepSpeed could not merge this checkpoint ({one_line(e)})"
        ) from e


def load_merged_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: ExportSource
) -> None:
    """Load merged weights, accepting a wrapper prefix (module./model.) and tied weights left out."""
    expected = set(model.state_dict())
    prefix = max(
        ("", "module.", "model."),
        key=lambda p: len(expected & {k[len(p) :] for k in state if k.startswith(p)}),
    )
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise UserError(
            f"{source.label}: weights do not fit the config from "
            f"{source.config_from} ({one_line(e)}); pass the right --base"
        ) from e
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in missing if current[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise UserError(
            f"{source.label}: weights do not fit the config from "
            f"{source.config_from} (missing {untied[:3]}, unexpected {sorted(unexpected)[:3]}); "
            "pass the right --base"
        )


def probe_inputs(tokenizer, config) -> list[tuple[str, list[int]]]:
    """The fixed check prompts (plus one through the chat template, if any) with their token ids."""
    texts = list(PROBE_TEXTS)
    if getattr(tokenizer, "chat_template", None):
        try:
            texts.append(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": PROBE_CHAT}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
        except Exception:
            pass
    limit = min(
        PROBE_MAX_TOKENS, getattr(config, "max_position_embeddings", None) or PROBE_MAX_TOKENS
    )
    probes = [(text, tokenizer(text)["input_ids"][:limit]) for text in texts]
    probes = [(text, ids) for text, ids in probes if ids]
    if not probes:
        raise UserError(
            "the tokenizer turns the check prompts into no tokens; is it the model's tokenizer?"
        )
    return probes


@torch.no_grad()
def probe_logits(model: torch.nn.Module, probes: list[tuple[str, list[int]]]) -> list[torch.Tensor]:
    return [model(input_ids=torch.tensor([ids])).logits[0].float() for _, ids in probes]


def verify_export(
    folder: Path,
    reference: list[torch.Tensor],
    probes: list[tuple[str, list[int]]],
    tokenizer,
    generation: dict[str, Any],
    dtype: str,
) -> CheckResult:
    """Reload `folder` with plain transformers (fp32 compute) and compare with the source."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    problems: list[str] = []
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, output_loading_info=True
        )
        reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as e:
        raise SelfCheckFailed(
            f"self-check failed: the written folder does not load ({one_line(e)})"
        ) from e
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):
            problems.append(
                f"{kind.replace('_', ' ')} on reload: {sorted(map(str, info[kind]))[:3]}"
            )
    model.eval()
    got = probe_logits(model, probes)
    diffs = [
        (r - g).abs().max().item() if r.shape == g.shape else float("inf")
        for r, g in zip(reference, got)
    ]
    max_diff = max(diffs)
    absolute, relative = TOLERANCE[dtype]
    tolerance = absolute + relative * max(r.abs().max().item() for r in reference)
    if not max_diff <= tolerance:  # also catches nan
        worst = diffs.index(max_diff)
        problems.append(
            f"logits differ from the source by {max_diff:.3g} (> {tolerance:.3g} allowed for "
            f"{dtype}) on check prompt {worst + 1}: a weight was not written faithfully"
        )
    texts = [text for text, _ in probes]
    if [reloaded_tokenizer(t)["input_ids"] for t in texts] != [
        tokenizer(t)["input_ids"] for t in texts
    ]:
        problems.append("the reloaded tokenizer encodes the check prompts differently")
    if getattr(reloaded_tokenizer, "chat_template", None) != getattr(
        tokenizer, "chat_template", None
    ):
        problems.append("the reloaded tokenizer lost or changed the chat template")
    if _generation_dict(model.generation_config) != generation:
        problems.append("the generation config changed on its way to disk")
    if problems:
        raise SelfCheckFailed("self-check failed: " + "; ".join(problems))
    return CheckResult(dtype, max_diff, tolerance, len(probes), sum(len(ids) for _, ids in probes))


def _write_model(model: torch.nn.Module, folder: Path, max_shard_size: int) -> None:
    """save_pretrained: safetensors (sharded past max_shard_size), config, generation config."""
    model.save_pretrained(folder, max_shard_size=max_shard_size)


def _generation_dict(config: Any) -> dict[str, Any]:
    values = config.to_dict() if config is not None else {}
    values.pop("transformers_version", None)
    return values


def _move_into_place(partial: Path, out: Path) -> None:
    if out.is_dir():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(out)


def _loading(where: str, what: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{where}: the {what} does not load with transformers ({one_line(e)})"
        ) from e


def _dtype_name(value: Any) -> str:
    text = str(value or "float32").replace("torch.", "")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(text, "fp32")
