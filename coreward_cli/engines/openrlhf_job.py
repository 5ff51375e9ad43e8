"""Launching the openrlhf engine: prepare the run directory, submit the Ray job, stream its logs.

The run directory must be on storage the cluster's nodes see (a shared file system; trivially so on
one node): OpenRLHF writes its checkpoints (`RUN/ckpt/`) and final model (`RUN/model/`) there, and
reads the prompt file from it. The code travels with the job: the plugins are staged into
`RUN/job/coreward_plugins/` and that folder is the job's Ray `working_dir`, shipped to every node.

With `engine.cluster.ray_address` (or RAY_ADDRESS) the job goes to that cluster through Ray's job
API (the dashboard address, e.g. http://head:8265); without, the entry module runs here and starts
a local Ray head for itself. Ctrl-C stops the job. The run directory is locked (flock) while this
process launches and watches the job, as a local-engine run locks its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from coreward_cli import runlayout
from coreward_cli.engines import rundir
from coreward_cli.engines.openrlhf import JOB_DIR, LaunchPlan, build_plan
from coreward_cli.errors import UserError
from coreward_cli.fileutil import write_folder_atomic, write_text_atomic
from coreward_cli.recipe import Recipe, dump_recipe

SECRET_ENV = (
    "WANDB_API_KEY",
    "HF_TOKEN",
)  # forwarded to the job, never written to plan.json/job.json
CLUSTER_MODULES = ("ray", "openrlhf", "deepspeed", "vllm")


def cluster_address(recipe: Recipe) -> str | None:
    return recipe.engine.cluster.ray_address or os.environ.get("RAY_ADDRESS") or None


def check_requirements(address: str | None, gpus_needed: int) -> None:
    """One clear line (exit 2) when this machine cannot launch: missing extra, no GPU."""
    needed = ("ray",) if address else CLUSTER_MODULES
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"the openrlhf engine needs {', '.join(missing)}: pip install -e '.[cluster]' "
            f"(then `coreward doctor` on a GPU node checks the stack)"
        )
    if address:
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus_needed:
        raise UserError(
            f"engine.cluster: the recipe needs {gpus_needed} GPU(s) and this machine has {found}; "
            f"set engine.cluster.ray_address to a Ray GPU cluster, or use engine.kind: local"
        )


def prepare_data(recipe: Recipe, plan: LaunchPlan) -> int:
    """Write the prompt file (and the eval file); the number of training problems."""
    from coreward_cli.data import load_train_problems
    from coreward_plugins.openrlhf.rows import Label, make_prompt, make_row

    m = recipe.model
    problems = load_train_problems(recipe)
    lines = [
        json.dumps(
            make_row(p.id, p.question, p.rephrased, p.answer, m.system_prompt, m.chat_template),
            ensure_ascii=False,
        )
        for p in problems
    ]
    write_text_atomic(Path(plan.paths["train_data"]), "\n".join(lines) + "\n")
    if recipe.data.eval:
        from coreward_cli.benchdata import load_benchmark

        rows = []
        for name in recipe.data.eval:
            bench = load_benchmark(
                name, recipe.data.data_dir
            )  # finds bench/ and train/ under a data root
            items = bench.items[: recipe.data.eval_limit] if recipe.data.eval_limit else bench.items
            for item in items:
                label = Label(id=f"{bench.name}:{item.index}", reference=item.reference)
                rows.append(
                    json.dumps(
                        {
                            "prompt": make_prompt(item.question, m.system_prompt, m.chat_template),
                            "label": label.encode(),
                            "datasource": bench.name,
                        },
                        ensure_ascii=False,
                    )
                )
        write_text_atomic(Path(plan.paths["eval_data"]), "\n".join(rows) + "\n")
    return len(problems)


def stage_plugins(job_dir: Path) -> None:
    """Copy the coreward_plugins package into the job's working directory (replacing an old copy)."""
    import coreward_plugins

    source = Path(coreward_plugins.__file__).parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    write_folder_atomic(
        job_dir / "coreward_plugins", lambda tmp: shutil.copytree(source, tmp, ignore=ignore)
    )


def run_job(recipe: Recipe, run_dir: Path, resume: bool, console: Console) -> None:
    run_dir = Path(run_dir).resolve()
    address = cluster_address(recipe)
    probe = build_plan(recipe, run_dir)  # validates the recipe before anything is written
    check_requirements(address, probe.resources["total_gpus"])
    client = _connect(address) if address else None  # fail fast, before anything is written
    with rundir.locked(run_dir):  # one run writes a folder; a submitted job is watched to its end
        _launch(recipe, run_dir, resume, console, probe, client, address)


def _launch(
    recipe: Recipe,
    run_dir: Path,
    resume: bool,
    console: Console,
    probe: LaunchPlan,
    client: Any,
    address: str | None,
) -> None:
    if (run_dir / "plan.json").exists() and not resume:
        raise UserError(
            f"{run_dir} already holds an openrlhf run: continue it with --resume, or pick --out DIR"
        )
    problems = prepare_data(recipe, probe)
    plan = build_plan(
        recipe, run_dir, problems=problems, resume=resume and (run_dir / "ckpt" / "_actor").exists()
    )
    if plan.schedule["rl_steps"] == 0:
        raise UserError(
            f"train.problems_per_step: {problems} problems make no full step of {recipe.train.problems_per_step}"
        )
    stage_plugins(run_dir / JOB_DIR)
    write_text_atomic(run_dir / runlayout.RECIPE, dump_recipe(recipe))
    write_text_atomic(run_dir / "plan.json", json.dumps(plan.to_dict(), indent=2))
    console.print(
        f"[bold]openrlhf[/bold]: {problems} problems, {plan.schedule['rl_steps']} steps, run dir {run_dir}"
    )
    if client is not None:
        _submit(client, plan, address, run_dir, console)
    else:
        _run_here(plan, run_dir, console)


def _secret_env() -> dict[str, str]:
    return {k: os.environ[k] for k in SECRET_ENV if k in os.environ}


def _connect(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"engine.cluster.ray_address: cannot reach the Ray cluster at {address} ({reason}); "
            f"check the dashboard address (http://HEAD:8265) and that `ray status` works there"
        ) from None


def _submit(client, plan: LaunchPlan, address: str, run_dir: Path, console: Console) -> None:
    from ray.job_submission import JobStatus

    runtime_env = {
        **plan.runtime_env,
        "env_vars": {**plan.runtime_env["env_vars"], **_secret_env()},
    }
    job_id = client.submit_job(
        entrypoint=plan.command(),
        runtime_env=runtime_env,
        submission_id=f"coreward-{run_dir.name}-{int(time.time())}",
    )
    write_text_atomic(
        run_dir / "job.json",
        json.dumps(
            {
                "job_id": job_id,
                "address": address,
                "mode": "ray-job",
                "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ),
    )
    console.print(f"submitted Ray job {job_id} to {address} (logs follow; Ctrl-C stops the job)")
    try:
        import asyncio

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job_id):
                sys.stdout.write(chunk)
                sys.stdout.flush()

        asyncio.run(tail())
    except KeyboardInterrupt:
        client.stop_job(job_id)
        raise UserError(
            f"stopped Ray job {job_id}; continue later with: coreward run RECIPE --resume --out {run_dir}"
        ) from None
    status = client.get_job_status(job_id)
    if status != JobStatus.SUCCEEDED:
        raise UserError(
            f"Ray job {job_id} ended {status}; its log: ray job logs {job_id} --address {address}"
        )


def _run_here(plan: LaunchPlan, run_dir: Path, console: Console) -> None:
    env = {**os.environ, **plan.runtime_env["env_vars"]}
    command = [sys.executable, *plan.entrypoint[1:], *plan.flags]
    child = subprocess.Popen(command, cwd=run_dir / JOB_DIR, env=env, start_new_session=True)
    write_text_atomic(
        run_dir / "job.json",
        json.dumps(
            {
                "job_id": f"local-{child.pid}",
                "pid": child.pid,
                "mode": "local-head",
                "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ),
    )
    console.print(f"running on this machine (pid {child.pid}, a local Ray head; Ctrl-C stops it)")
    try:
        code = child.wait()
    except KeyboardInterrupt:
        os.killpg(child.pid, signal.SIGINT)  # the session we started for it
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
        raise UserError(
            f"stopped; continue later with: coreward run RECIPE --resume --out {run_dir}"
        ) from None
    if code != 0:
        raise UserError(f"the OpenRLHF job exited with status {code}; see its log above")
