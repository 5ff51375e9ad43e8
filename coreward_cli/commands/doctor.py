"""`coreward doctor`: check a GPU node against the cluster stack the openrlhf engine is pinned to.

Checks, each with what is wrong and the command that fixes it: package versions against the pins
(OpenRLHF 0.11.2 and what it pins), GPU visibility and bf16 support, flash-attn on the GPU, Ray
seeing the GPUs, one tiny training step (DeepSpeed ZeRO-2 when installed, else plain torch) and one
tiny generation (vLLM when installed, else transformers) on a model built from a config, nothing
downloaded. On a machine without a GPU it says so and skips the GPU work. `scripts/gpu_check.py`
runs the same checks without the CLI.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

# distribution -> (pinned version, why). torch: vLLM 0.29.0 pins 2.13.0; the others are OpenRLHF 0.11.2's pins.
PINS: dict[str, tuple[str, str]] = {
    "torch": ("2.13.0", "vllm 0.29.0 pins it"),
    "openrlhf": ("0.11.2", "the flags and hooks coreward uses"),
    "vllm": ("0.29.0", "openrlhf[vllm] 0.11.2"),
    "deepspeed": ("0.19.6", "openrlhf 0.11.2"),
    "flash-attn": ("2.8.3", "openrlhf 0.11.2 imports it at module level"),
    "ray": ("2.55.0", "openrlhf 0.11.2"),
    "transformers": ("5.15.0", "openrlhf 0.11.2"),
}
FIX_INSTALL = "pip install -e '.[cluster]'  (torch first: pip install torch==2.13.0 for your CUDA)"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""


def check_versions() -> list[Check]:
    out = []
    for dist, (pin, why) in PINS.items():
        try:
            found = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out.append(
                Check(
                    f"version {dist}",
                    "fail",
                    f"not installed (want {pin}: {why})",
                    f"pip install '{dist}=={pin}'",
                )
            )
            continue
        base = found.split("+")[0]
        if base == pin:
            out.append(Check(f"version {dist}", "ok", found))
        else:
            status = "fail" if dist in ("openrlhf", "vllm", "torch") else "warn"
            out.append(
                Check(
                    f"version {dist}",
                    status,
                    f"{found}, pinned {pin} ({why})",
                    f"pip install '{dist}=={pin}'",
                )
            )
    return out


def check_gpu() -> tuple[Check, int]:
    try:
        import torch
    except ImportError:
        return Check("GPU", "fail", "torch is not installed", FIX_INSTALL), 0
    if not torch.cuda.is_available():
        build = torch.version.cuda or "CPU-only build"
        return Check(
            "GPU",
            "fail",
            f"no CUDA GPU visible (torch {torch.__version__}, {build}; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})",
            "run on a GPU node; check nvidia-smi and that torch is a CUDA build "
            "(pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128)",
        ), 0
    count = torch.cuda.device_count()
    names = {torch.cuda.get_device_name(i) for i in range(count)}
    bf16 = torch.cuda.is_bf16_supported()
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30
    detail = f"{count} x {', '.join(sorted(names))}, {mem:.0f} GiB each, CUDA {torch.version.cuda}"
    if not bf16:
        return Check(
            "GPU",
            "fail",
            detail + "; no bf16 (needs compute capability 8.0+)",
            "use A100/H100-class GPUs, or model.dtype: fp16",
        ), count
    return Check("GPU", "ok", detail + ", bf16"), count


def _timed(name: str, fn: Callable[[], str], fix: str) -> Check:
    start = time.time()
    try:
        detail = fn()
    except Exception as exc:
        return Check(
            name,
            "fail",
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            fix,
        )
    return Check(name, "ok", f"{detail} ({time.time() - start:.1f} s)")


def _tiny_model_dir() -> str:
    """A 1 M-parameter Qwen2 and byte-level tokenizer saved to a temp folder (built, not downloaded)."""
    from coreward_cli.toy import build_model, build_tokenizer

    path = tempfile.mkdtemp(prefix="coreward-doctor-")
    build_model(seed=0).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def _flash_attn() -> str:
    import torch
    from flash_attn import flash_attn_func

    q = torch.randn(1, 16, 2, 64, device="cuda", dtype=torch.bfloat16)
    out = flash_attn_func(q, q, q, causal=True)
    torch.cuda.synchronize()
    if not torch.isfinite(out).all():
        raise RuntimeError("flash-attn returned non-finite values")
    return "flash_attn_func ran on the GPU"


def _ray(gpus: int) -> str:
    import ray

    ray.init(num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        seen = ray.cluster_resources().get("GPU", 0)

        @ray.remote(num_gpus=1)
        def probe() -> str:
            import torch

            return torch.cuda.get_device_name(0)

        name = ray.get(probe.remote(), timeout=120)
    finally:
        ray.shutdown()
    if seen < gpus:
        raise RuntimeError(f"Ray sees {seen} GPU(s), torch {gpus}")
    return f"Ray sees {seen:g} GPU(s); a GPU task ran on {name}"


def _train_step(model_dir: str) -> str:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    ids = torch.randint(4, 200, (4, 24), device="cuda")
    try:
        import deepspeed
    except ImportError:
        deepspeed = None
    if deepspeed is not None:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29531")
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        deepspeed.init_distributed()
        config = {
            "train_micro_batch_size_per_gpu": 4,
            "bf16": {"enabled": True},
            "zero_optimization": {"stage": 2},
            "gradient_clipping": 1.0,
            "steps_per_print": 10**9,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        }
        engine, *_ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=config
        )
        before = next(engine.module.parameters()).detach().clone()
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        moved = not torch.equal(before, next(engine.module.parameters()))
        how = "DeepSpeed ZeRO-2 bf16"
        engine.destroy()
        # the generation check runs next in this process; a live process group there, or at exit,
        # is what torch warns about and what can abort the interpreter on its way out
        torch.distributed.destroy_process_group()
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        before = next(model.parameters()).detach().clone()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        moved = not torch.equal(before, next(model.parameters()))
        how = "torch bf16 (DeepSpeed not installed)"
    if not torch.isfinite(loss) or not moved:
        raise RuntimeError(f"loss {loss.item()} / weights moved: {moved}")
    return f"{how}: loss {loss.item():.3f}, weights updated"


def _generate(model_dir: str) -> str:
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        LLM = None
    prompts = ["12+34=", "7+8="]
    if LLM is not None:
        llm = LLM(
            model=model_dir,
            enforce_eager=True,
            gpu_memory_utilization=0.15,
            max_model_len=64,
            dtype="bfloat16",
        )
        outs = llm.generate(prompts, SamplingParams(max_tokens=6, temperature=1.0, n=2))
        texts = [o.text for out in outs for o in out.outputs]
        return f"vLLM generated {len(texts)} samples, e.g. {texts[0]!r}"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    ids = tok(prompts[0], return_tensors="pt").to("cuda")
    out = model.generate(**ids, max_new_tokens=6, do_sample=True, pad_token_id=tok.pad_token_id)
    return f"transformers generated {tok.decode(out[0][ids.input_ids.shape[1] :])!r} (vLLM not installed)"


def run_checks(quick: bool = False, recipe: str | None = None) -> list[Check]:
    checks = check_versions()
    gpu, count = check_gpu()
    checks.append(gpu)
    if recipe is not None:
        if count:
            import torch

            memory = torch.cuda.get_device_properties(0).total_memory / 1e9
            checks.append(check_recipe_memory(recipe, memory))
        else:
            checks.append(Check("recipe memory", "skip", "no GPU"))
    gpu_work = ["flash-attn kernel", "Ray GPUs", "tiny training step", "tiny generation"]
    if count == 0 or quick:
        why = "no GPU" if count == 0 else "--quick"
        checks += [Check(name, "skip", why) for name in gpu_work]
        return checks
    checks.append(
        _timed(
            "flash-attn kernel", _flash_attn, "pip install flash-attn==2.8.3 --no-build-isolation"
        )
    )
    checks.append(
        _timed(
            "Ray GPUs",
            lambda: _ray(count),
            "pip install 'ray[default]==2.55.0'; check CUDA_VISIBLE_DEVICES",
        )
    )
    model_dir = _tiny_model_dir()
    checks.append(
        _timed(
            "tiny training step",
            lambda: _train_step(model_dir),
            "pip install deepspeed==0.19.6; see the error",
        )
    )
    checks.append(
        _timed(
            "tiny generation",
            lambda: _generate(model_dir),
            "pip install vllm==0.29.0 (it pins torch 2.13.0)",
        )
    )
    return checks


def check_recipe_memory(recipe_path: str, gpu_gb: float) -> Check:
    """The recipe's per-GPU estimate (the plan's) against this node's GPU memory (decimal GB)."""
    from coreward_cli.engines.openrlhf import build_plan
    from coreward_cli.errors import UserError
    from coreward_cli.resolve import load_recipe

    name = "recipe memory"
    try:
        recipe = load_recipe(recipe_path, [f"engine.cluster.gpu_memory_gb={gpu_gb}"])
        plan = build_plan(recipe, Path(tempfile.gettempdir()) / "coreward-doctor")
    except UserError as exc:
        field, _, fix = str(exc).rpartition("; ")
        return Check(name, "fail", field or str(exc), fix)
    est = plan.resources["estimates"]
    if est is None:
        return Check(name, "skip", f"no size known for {recipe.model.path}")
    return Check(
        name,
        "ok",
        f"~{est['gpu_peak_gb']:.0f} GB per GPU of {gpu_gb:.0f} (micro batches "
        f"{recipe.engine.cluster.micro_train_batch_size} train, "
        f"{recipe.engine.cluster.micro_rollout_batch_size} log-prob)",
    )


STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def report(checks: list[Check], console: Console) -> None:
    table = Table(title="coreward doctor: the openrlhf engine's stack on this node")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.detail, c.fix)
    console.print(table)
    failed = [c for c in checks if c.status == "fail"]
    console.print(
        "[green]ready for `coreward run` on the openrlhf engine[/green]"
        if not failed
        else f"[bold red]{len(failed)} problem(s)[/bold red]: fix them in order (versions first), then rerun"
    )


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--quick", is_flag=True, help="Only versions and GPU visibility (no GPU work).")
@click.option(
    "--recipe",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Also check this recipe's per-GPU memory estimate against this node's GPUs.",
)
def doctor(as_json: bool, quick: bool, recipe: str | None) -> None:
    """Check this node for the openrlhf engine: versions against the pins, GPUs, flash-attn, Ray, and
    one tiny training step and generation on the GPU. Exit status 1 when something must be fixed."""
    checks = run_checks(quick=quick, recipe=recipe)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        report(checks, Console())
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)
