"""`coreward rephrase DATA --model MODEL --out OUT`: the second wording Co-rewarding-I trains on."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, get_args

import click

from coreward_cli.errors import CorewardError
from coreward_plugins.answers import MatchMode

OFFICIAL_T, OFFICIAL_TOP_P, OFFICIAL_MAX_TOKENS = 0.7, 0.8, 20480


def _key(value: str | None) -> str | None:
    """An optional column key: '' or null means none."""
    return None if value is None or value.strip() in ("", "null") else value


@click.command("rephrase")
@click.argument("data")
@click.option(
    "--model",
    required=True,
    help="Rephrasing model: a hub id, a model folder, a run directory or a .gguf file.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder. Rerunning into it continues where it stopped.",
)
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(min=1),
    help="Only the first N rows (a later run with a larger N continues).",
)
@click.option(
    "--max-new-tokens",
    default=OFFICIAL_MAX_TOKENS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Longest output (the official script's).",
)
@click.option(
    "--temperature",
    default=OFFICIAL_T,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Sampling temperature (0 = greedy).",
)
@click.option("--top-p", default=OFFICIAL_TOP_P, show_default=True, type=click.FloatRange(0.0, 1.0))
@click.option("--seed", default=0, show_default=True, type=int, help="Sampling seed.")
@click.option(
    "--backend",
    "backend_kind",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "vllm", "hf"]),
    help="vLLM (GPU) or transformers; auto picks vLLM when installed and a GPU is there.",
)
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(min=1),
    help="Questions per generate call [default: 64 with transformers, 256 with vLLM; divided by 2K with --verify K].",
)
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
)
@click.option("--gguf-file", default=None, help="GGUF file inside the MODEL folder.")
@click.option(
    "--data-dir",
    default=None,
    help="Local copy of the published sets laid out like shared/data (as data.data_dir).",
)
@click.option("--split", default="train", show_default=True, help="Split of a hub dataset.")
@click.option(
    "--question-key",
    default="prompt",
    show_default=True,
    help="Column with the question: text, or a chat list whose last user turn is the question.",
)
@click.option(
    "--answer-key",
    default=None,
    help="Column with the reference answer ('' for none) [default: reward_model.ground_truth when the file has it].",
)
@click.option(
    "--id-key",
    default=None,
    help="Column with a problem id ('' for none: rows are numbered) [default: extra_info.index when the file has it].",
)
@click.option(
    "--verify",
    "verify_k",
    default=None,
    type=click.IntRange(min=1),
    help="Sample K answers to both wordings; drop a pair whose two majority answers differ.",
)
@click.option("--verify-model", default=None, help="Model that answers [default: --model].")
@click.option(
    "--verify-max-new-tokens",
    default=3072,
    show_default=True,
    type=click.IntRange(min=1),
    help="Longest answer.",
)
@click.option(
    "--verify-temperature", default=0.8, show_default=True, type=click.FloatRange(min=0.0)
)
@click.option(
    "--match",
    default="normalized",
    show_default=True,
    type=click.Choice(list(get_args(MatchMode))),
    help="How two majority answers are compared.",
)
@click.option(
    "--system-prompt",
    default=None,
    help="System prompt of the answering prompt [default: the paper's]; '' for none.",
)
@click.option("--force", is_flag=True, help="Start over, discarding what OUT holds.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print rephrase.json to stdout (the rest to stderr)."
)
def rephrase(as_json: bool, **options: Any) -> None:
    """Rewrite every question of DATA in a second wording, with the official Co-rewarding-I recipe.

    DATA is anything data.train reads: a verl parquet, a json/jsonl/parquet file (--question-key
    and friends), or a published set by name. OUT gets row-aligned train_original.parquet and
    train_rephrased.parquet, pairs.jsonl and rephrase.json; the recipe snippet is printed.
    """
    from rich.console import Console

    console = Console(stderr=as_json)
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        stats = _run(console, **options)
    if as_json:
        click.echo(json.dumps(stats, indent=2, ensure_ascii=False))
    if not stats["kept"]:
        raise CorewardError(
            f"none of the {stats['rows_in']} rows was kept (drops by reason: {stats['dropped']}); "
            "try a stronger --model or a larger --max-new-tokens"
        )


def _run(console: Any, **o: Any) -> dict[str, Any]:
    from coreward_cli import rephrase as rp
    from coreward_cli.data import VERL, Layout, read_source_rows
    from coreward_cli.evaluate import check_config
    from coreward_cli.generation import SamplingConfig, open_backend
    from coreward_cli.prompts import PromptStyle
    from coreward_cli.recipe import PAPER_SYSTEM_PROMPT

    optional = tuple(k for k in ("answer_key", "id_key") if o[k] is None)
    layout = Layout(
        o["question_key"],
        None,
        VERL.answer_key if o["answer_key"] is None else _key(o["answer_key"]),
        VERL.id_key if o["id_key"] is None else _key(o["id_key"]),
    )
    source = read_source_rows(
        o["data"], o["data_dir"], o["split"], layout, "DATA", optional, option="--{dashed}"
    )
    rp.check_writable(source)
    model = _source(o["model"], o["gguf_file"])
    sampling = SamplingConfig(1, o["temperature"], o["top_p"], o["max_new_tokens"], o["seed"])
    verify = None
    verify_model = None
    if o["verify_k"]:
        verify_model = _source(o["verify_model"], None) if o["verify_model"] else model
        system = PAPER_SYSTEM_PROMPT if o["system_prompt"] is None else (o["system_prompt"] or None)
        verify = rp.VerifySettings(
            SamplingConfig(
                o["verify_k"], o["verify_temperature"], 0.95, o["verify_max_new_tokens"], o["seed"]
            ),
            PromptStyle(system),
            o["match"],
        )
    layout = source.layout
    config = {
        "data": str(Path(o["data"]).resolve()) if Path(o["data"]).is_file() else source.label,
        "split": o["split"],
        "question_key": layout.question_key,
        "answer_key": layout.answer_key,
        "id_key": layout.id_key,
        "model": model.path,
        "gguf_file": model.gguf_file,
        "instruction_sha256": rp.instruction_sha(),
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_new_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "verify": None
        if verify is None or verify_model is None
        else {
            "k": verify.sampling.n,
            "model": verify_model.path,
            "gguf_file": verify_model.gguf_file,
            "temperature": verify.sampling.temperature,
            "top_p": verify.sampling.top_p,
            "max_new_tokens": verify.sampling.max_new_tokens,
            "match": verify.match,
            "system_prompt": verify.style.system_prompt,
        },
    }
    out: Path = o["out_dir"]
    if not o["force"]:  # before the (slow) model load
        check_config(out, config, write=False, fix="pass --force to start over, or another --out")
    backend = open_backend(model, o["backend_kind"], dtype=o["dtype"])
    verify_backend = None
    if verify_model is not None:
        verify_backend = (
            backend
            if verify_model == model
            else open_backend(verify_model, o["backend_kind"], dtype=o["dtype"])
        )
    rp.prepare_out(out, config, o["force"])
    request = rp.RephraseRequest(source, out, config, sampling, o["limit"], o["batch_size"], verify)
    stats = rp.run_rephrase(request, backend, verify_backend, console)
    _report(console, stats, out)
    return stats


def _source(spec: str, gguf_file: str | None) -> Any:
    from coreward_cli.models import model_source, resolve_model

    resolved = resolve_model(spec)
    return model_source(
        resolved if not Path(resolved).exists() else str(Path(resolved).resolve()), gguf_file
    )


def _report(console: Any, stats: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"rephrase -> {out}")
    table.add_column("")
    table.add_column("", justify="right")
    rows = [
        ("rows in", stats["rows_in"]),
        ("parsed", stats["parsed"]),
        ("kept", stats["kept"]),
        *((f"dropped: {k}", v) for k, v in stats["dropped"].items()),
        ("identical to the original", stats["identical_to_original"]),
        ("mean length ratio", stats["mean_length_ratio"]),
        ("hit the token limit", stats["hit_token_limit"]),
        ("seconds", stats["seconds"]),
        ("questions / s", stats["questions_per_second"]),
    ]
    verify = stats.get("verify")
    if verify:
        rows += [
            (
                f"verify K={verify['k']}: agree / disagree / undecided",
                f"{verify['agree']} / {verify['disagree']} / {verify['undecided']}",
            ),
            ("agreement rate", verify["agreement_rate"]),
        ]
    for name, value in rows:
        table.add_row(name, "-" if value is None else str(value))
    console.print(table)
    console.print(
        f"wrote {out}/ ({', '.join(_outputs())}); train Co-rewarding-I on it with:", soft_wrap=True
    )
    console.print(stats["recipe_snippet"], markup=False, highlight=False, soft_wrap=True)


def _outputs() -> tuple[str, ...]:
    from coreward_cli import rephrase as rp

    return (rp.ORIGINAL_FILE, rp.REPHRASED_FILE, rp.PAIRS_FILE, rp.STATS_FILE)
