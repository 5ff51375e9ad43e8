"""`coreward eval MODEL --bench ...` and `coreward eval --responses FILE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import click

from coreward_cli import runlayout
from coreward_cli.errors import UserError
from coreward_cli.problem import BUILTIN
from coreward_plugins.answers import MatchMode

DEFAULT_BENCHES = "math500,gsm8k,amc,aime24,aime25"
MATCH_MODES = list(get_args(MatchMode))
# Options that shape generation: given with --responses they would silently do nothing.
GENERATION_ONLY = (
    "n",
    "temperature",
    "top_p",
    "max_new_tokens",
    "backend",
    "limit",
    "seed",
    "data_dir",
    "step",
    "teacher",
    "gguf_file",
    "batch_size",
    "system_prompt",
    "no_chat_template",
    "dtype",
)


def _default_out(model: str, resolved: str, step: int | None, teacher: bool, name: str) -> Path:
    path = Path(model)
    if path.is_dir() and runlayout.is_run_dir(path):
        sub = path / runlayout.EVAL
        if step is not None:
            sub = sub / runlayout.checkpoint_name(step)
        return sub / runlayout.TEACHER if teacher else sub
    return Path("eval-out") / (BUILTIN.split(":", 1)[1] if model == BUILTIN else name)


def _is_tiny(model: str) -> bool:
    """builtin:tiny-arith itself, or a run directory trained from it (same task, same plain prompt)."""
    if model == BUILTIN:
        return True
    path = Path(model)
    if not (path.is_dir() and runlayout.is_run_dir(path)):
        return False
    import yaml

    try:
        recipe = yaml.safe_load((path / runlayout.RECIPE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(recipe, dict) and (recipe.get("model") or {}).get("path") == BUILTIN


@click.command("eval")
@click.argument("model", required=False)
@click.option(
    "--bench",
    "benches",
    default=None,
    help=f"Comma-separated benchmark names or json/jsonl/parquet files [default: {DEFAULT_BENCHES}; arithmetic for builtin:tiny-arith and its runs].",
)
@click.option(
    "--n",
    "n",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Responses sampled per question.",
)
@click.option(
    "--temperature",
    default=0.8,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Sampling temperature (0 = greedy).",
)
@click.option(
    "--top-p",
    default=0.95,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Nucleus sampling.",
)
@click.option(
    "--max-new-tokens",
    default=None,
    type=click.IntRange(min=1),
    help="Longest response [default: 3072; 16 for builtin:tiny-arith].",
)
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "vllm", "hf"]),
    help="vLLM (GPU) or transformers; auto picks vLLM when installed and a GPU is there.",
)
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(min=1),
    help="Only the first N questions of each benchmark.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Sampling seed.")
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder [default: RUN/eval for a run directory, else eval-out/<model-name>]. Rerunning into it resumes.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print results.json to stdout (progress and table go to stderr).",
)
@click.option(
    "--data-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="COREWARD_DATA_DIR",
    help="Folder holding the benchmark files (math500.json, gsm8k.jsonl, ...) [env COREWARD_DATA_DIR]; without it names load from the hub.",
)
@click.option(
    "--step",
    default=None,
    type=click.IntRange(min=0),
    help="For a run directory: evaluate checkpoints/step-N instead of final/.",
)
@click.option(
    "--teacher",
    is_flag=True,
    help="For a run directory: evaluate the EMA teacher (Co-rewarding-II/III) instead of the policy.",
)
@click.option(
    "--gguf-file",
    default=None,
    help="GGUF file inside the MODEL folder (MODEL may also be the .gguf path itself).",
)
@click.option(
    "--match",
    default="math_verify",
    show_default=True,
    type=click.Choice(MATCH_MODES),
    help="How an answer is compared with the reference.",
)
@click.option(
    "--fbox",
    is_flag=True,
    help="Read a lone \\fbox{} as the answer (the official code scores it as no answer).",
)
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(min=1),
    help="Questions per generate call [default: 64/n with transformers, 256/n with vLLM].",
)
@click.option(
    "--system-prompt",
    default=None,
    help="System prompt [default: the paper's \"Let's think step by step and output the final answer within \\boxed{}.\"]; '' for none.",
)
@click.option(
    "--no-chat-template",
    is_flag=True,
    help="Plain prompt (system prompt, blank line, question) instead of the tokenizer's chat template.",
)
@click.option(
    "--question-key",
    default=None,
    help="Field holding the question in benchmark files / the responses file.",
)
@click.option(
    "--answer-key",
    default=None,
    help="Field holding the reference answer in benchmark files / the responses file.",
)
@click.option(
    "--responses",
    "responses_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Grade-only: a jsonl of question, reference and response(s) made elsewhere; no model.",
)
@click.option(
    "--response-key",
    default="responses",
    show_default=True,
    help="Grade-only: field with a list of responses (a single string under 'response' also works).",
)
@click.option(
    "--dtype",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
    help="Weights dtype (auto: bf16 on GPU, fp32 on CPU).",
)
def eval_cmd(
    model,
    benches,
    n,
    temperature,
    top_p,
    max_new_tokens,
    backend,
    limit,
    seed,
    out_dir,
    as_json,
    data_dir,
    step,
    teacher,
    gguf_file,
    match,
    fbox,
    batch_size,
    system_prompt,
    no_chat_template,
    question_key,
    answer_key,
    responses_file,
    response_key,
    dtype,
) -> None:
    """Measure MODEL on math benchmarks: avg@n, pass@k, maj@n, no-answer share, response length.

    MODEL is a Hugging Face folder or hub id, a run directory (its final/ model, or --step N),
    a .gguf file, or builtin:tiny-arith. Outputs go to --out: samples.jsonl, results.json,
    results.md; rerunning into the same folder resumes.
    """
    import contextlib
    import sys

    from rich.console import Console

    if responses_file is not None:
        ctx = click.get_current_context()
        unused = [
            f"--{name.replace('_', '-')}"
            for name in GENERATION_ONLY
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if unused:
            raise UserError(
                f"{', '.join(unused)}: no effect with --responses (grade-only makes no responses); drop it"
            )
    console = Console(stderr=as_json)
    # With --json, stdout carries only the JSON: libraries that log to stdout on import (deepspeed) go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        results = _run(
            console,
            model,
            benches,
            n,
            temperature,
            top_p,
            max_new_tokens,
            backend,
            limit,
            seed,
            out_dir,
            as_json,
            data_dir,
            step,
            teacher,
            gguf_file,
            match,
            fbox,
            batch_size,
            system_prompt,
            no_chat_template,
            question_key,
            answer_key,
            responses_file,
            response_key,
            dtype,
        )
    if as_json:
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))


def _run(
    console,
    model,
    benches,
    n,
    temperature,
    top_p,
    max_new_tokens,
    backend,
    limit,
    seed,
    out_dir,
    as_json,
    data_dir,
    step,
    teacher,
    gguf_file,
    match,
    fbox,
    batch_size,
    system_prompt,
    no_chat_template,
    question_key,
    answer_key,
    responses_file,
    response_key,
    dtype,
):
    if responses_file is not None:
        if model:
            raise UserError("pass either MODEL or --responses FILE, not both")
        results = _grade_only(
            responses_file, benches, question_key, answer_key, response_key, match, fbox, out_dir
        )
    else:
        if not model:
            raise UserError(
                "missing MODEL: pass a model folder, hub id, run directory, .gguf file or builtin:tiny-arith (or --responses FILE)"
            )
        results = _evaluate(
            console,
            model,
            benches,
            n,
            temperature,
            top_p,
            max_new_tokens,
            backend,
            limit,
            seed,
            out_dir,
            data_dir,
            step,
            teacher,
            gguf_file,
            match,
            fbox,
            batch_size,
            system_prompt,
            no_chat_template,
            question_key,
            answer_key,
            dtype,
        )
    from coreward_cli.evaluate import rich_table

    console.print(rich_table(results))
    return results


def _grade_only(path, benches, question_key, answer_key, response_key, match, fbox, out_dir):
    from coreward_cli.evaluate import ResponseKeys, grade_file

    keys = ResponseKeys(
        question=question_key or "question",
        reference=answer_key or "reference",
        response=response_key,
    )
    if benches and "," in benches:
        raise UserError(
            "--bench with --responses names one convention (e.g. gsm8k); per-line conventions come from a 'benchmark' field"
        )
    out = out_dir or Path("eval-out") / f"{path.stem}-graded"
    return grade_file(path, keys, match, benches, out, fbox)


def _evaluate(
    console,
    model,
    benches,
    n,
    temperature,
    top_p,
    max_new_tokens,
    backend_kind,
    limit,
    seed,
    out_dir,
    data_dir,
    step,
    teacher,
    gguf_file,
    match,
    fbox,
    batch_size,
    system_prompt,
    no_chat_template,
    question_key,
    answer_key,
    dtype,
):
    from coreward_cli.benchdata import load_benchmark
    from coreward_cli.evaluate import EvalRequest, PromptStyle, check_config, run_eval
    from coreward_cli.generation import SamplingConfig, open_backend
    from coreward_cli.models import model_source, resolve_model
    from coreward_cli.recipe import PAPER_SYSTEM_PROMPT

    builtin = _is_tiny(model)
    names = [
        b.strip()
        for b in (benches or ("arithmetic" if builtin else DEFAULT_BENCHES)).split(",")
        if b.strip()
    ]
    if not names:
        raise UserError("--bench is empty; name at least one benchmark (e.g. --bench math500)")
    benchmarks = [load_benchmark(name, data_dir, question_key, answer_key) for name in names]
    resolved = resolve_model(model, step, teacher)
    source = model_source(
        resolved if not Path(resolved).exists() else str(Path(resolved).resolve()), gguf_file
    )
    if builtin:  # the toy answers `a+b=` with `\boxed{c}`: no chat, no instruction
        prompt = PromptStyle(system_prompt or None, chat_template=False)
    else:
        prompt = PromptStyle(
            PAPER_SYSTEM_PROMPT if system_prompt is None else (system_prompt or None),
            not no_chat_template,
        )
    sampling = SamplingConfig(
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens or (16 if builtin else 3072),
        seed=seed,
    )
    config = {
        "model": source.path,
        "gguf_file": source.gguf_file,
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": sampling.max_new_tokens,
        "seed": seed,
        "match": match,
        "fbox": fbox,
        "system_prompt": prompt.system_prompt,
        "chat_template": prompt.chat_template,
    }
    out = out_dir or _default_out(model, resolved, step, teacher, source.name)
    check_config(out, config, write=False)  # before the (slow) model load
    backend = open_backend(source, backend_kind, dtype=dtype)
    meta = {
        "model": model,
        "resolved_model": source.path,
        "gguf_file": source.gguf_file,
        "backend": backend.name,
        "sampling": config,
        "sources": {b.name: b.source for b in benchmarks},
        "out": str(out),
    }
    results = run_eval(
        EvalRequest(benchmarks, out, config, sampling, prompt, match, limit, batch_size, fbox),
        backend,
        console,
        meta,
    )
    console.print(
        f"wrote {out}/ (samples.jsonl, results.json, results.md); {results['generated_now']} questions generated now"
    )
    return results
