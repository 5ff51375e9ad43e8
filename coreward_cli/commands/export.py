"""`coreward export SOURCE --out DIR`: a trained model as a self-checked Hugging Face folder."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console


@click.command("export")
@click.argument("source")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to write (created; must be empty unless --force).",
)
@click.option(
    "--step",
    "step",
    default=None,
    metavar="N",
    help="Export the checkpoint of this step instead of the final model.",
)
@click.option(
    "--teacher",
    is_flag=True,
    help="Export the EMA teacher (Co-rewarding-II/III runs) instead of the policy.",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
    default="auto",
    show_default=True,
    help="Weights dtype of the export (auto: the dtype of the source / base config).",
)
@click.option(
    "--base",
    default=None,
    metavar="MODEL",
    help="Config and tokenizer for a bare DeepSpeed checkpoint (HF folder or hub id).",
)
@click.option(
    "--max-shard-size",
    default="2GB",
    show_default=True,
    help="Split safetensors weights into files of at most this size.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a non-empty --out folder (only after the new export passed its check).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(
    source: str,
    out: Path,
    step: str | None,
    teacher: bool,
    dtype: str,
    base: str | None,
    max_shard_size: str,
    force: bool,
    as_json: bool,
) -> None:
    """Write SOURCE as a Hugging Face folder: safetensors, config, generation config, tokenizer
    with its chat template, and a README.md model card (recipe, eval results, citation).

    SOURCE is a coreward run directory (local or openrlhf engine), a Hugging Face folder (e.g.
    OpenRLHF's --ckpt.output_dir), or an OpenRLHF --ckpt.path / DeepSpeed checkpoint folder (ZeRO
    partitions merged with DeepSpeed's zero_to_fp32; config/tokenizer from the run or --base).

    The export is reloaded with transformers and its logits compared with the source's before it
    is moved into place: OK prints the largest difference; a mismatch exits 1 and writes nothing.
    """
    from coreward_cli.export import export_model, parse_shard_size
    from coreward_cli.export_sources import parse_step, resolve_source

    console = Console(stderr=as_json)
    shard_bytes = parse_shard_size(max_shard_size)
    resolved = resolve_source(source, parse_step(step), teacher, base)
    with console.status("exporting") as status:
        result = export_model(
            resolved,
            out,
            dtype,
            force,
            shard_bytes,  # type: ignore[arg-type]
            status=lambda message: status.update(message),
        )
    check = result.check
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(result.out),
                    "source": result.source,
                    "dtype": result.dtype,
                    "params": result.params,
                    "files": result.files,
                    "bytes": result.bytes,
                    "ok": True,
                    "max_abs_diff": check.max_abs_diff,
                    "tolerance": check.tolerance,
                    "prompts": check.prompts,
                }
            )
        )
        return
    console.print(
        f"OK: reloaded {result.out} with transformers; max |logit difference| vs the source "
        f"{check.max_abs_diff:.3g} (tolerance {check.tolerance:.3g}, {check.dtype}, {check.prompts} prompts)",
        soft_wrap=True,
    )
    console.print(
        f"wrote {result.out}: {result.source}, {result.dtype}, {len(result.files)} files, "
        f"{result.bytes / 1e6:.1f} MB",
        soft_wrap=True,
    )
