"""The openrlhf engine: a recipe as an OpenRLHF 0.11.2 Ray job (the launch plan, dry run, launch).

The plan is plain data built from the recipe alone: the complete dotted-flag argument list of
`openrlhf.cli.train_ppo_ray` plus our `--coreward.*` flags, the resources (GPUs per role, vLLM
engines, colocation), the Ray runtime environment and the entry module. Nothing here imports Ray,
OpenRLHF or torch, so `--dry-run` works on any machine; the launch itself lives in `openrlhf_job.py`.

Step accounting (the paper: one optimizer step per RL step). A step draws `problems_per_step`
problems; methods that train on both views send each problem twice, so a step generates
P * views prompts and P * views * n samples. OpenRLHF's own `max_steps` (the LR schedule length) is
`len(prompts) * n // train.batch_size * episodes`, which does not know about the second view and counts
the last, partial batch; our controller replaces it with floor(problems / P) * epochs and drops the
partial batch, as verl's drop_last does.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from coreward_cli.engines.openrlhf_plan import KEPT_CHECKPOINTS, requirements
from coreward_cli.errors import UserError
from coreward_cli.recipe import Recipe

OPENRLHF_VERSION = "0.11.2"
ENTRY_MODULE = "coreward_plugins.openrlhf.entry"
# Staged copy of the plugins inside the job's working directory (Ray ships it to every node; the
# folder is `plugins/` in the repository but imports as `coreward_plugins`).
JOB_DIR = "job"
REWARD_FUNC = "coreward_plugins/openrlhf/reward_func.py"  # relative to the job's working directory
SCHEDULERS = {
    "cosine": "cosine_with_min_lr",
    "linear": "linear",
    "constant": "constant_with_warmup",
}
DUAL_CLIP = 3.0  # verl's clip_ratio_c, the official runs' default (inactive on-policy, ratio = 1)


@dataclass
class MethodViews:
    """What the recipe's method needs sampled (read from the method class)."""

    name: str
    policy_views: tuple[str, ...]
    teacher_views: tuple[str, ...]
    needs_teacher: bool
    needs_token_stats: bool


@dataclass
class LaunchPlan:
    flags: list[str]
    resources: dict[str, Any]
    runtime_env: dict[str, Any]
    entrypoint: list[str]
    paths: dict[str, str]
    schedule: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def command(self) -> str:
        return " ".join(shlex.quote(part) for part in self.entrypoint + self.flags)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "command": self.command(), "openrlhf": OPENRLHF_VERSION}


def method_views(recipe: Recipe) -> MethodViews:
    from coreward_plugins.methods import get_method

    cls = get_method(recipe.method.name)  # resolve() has checked that it loads
    return MethodViews(
        name=recipe.method.name,
        policy_views=tuple(cls.policy_views),
        teacher_views=tuple(cls.teacher_views),
        needs_teacher=bool(cls.needs_teacher),
        needs_token_stats=bool(cls.needs_token_stats),
    )


def _check_resources(recipe: Recipe, mv: MethodViews) -> dict[str, Any]:
    c = recipe.engine.cluster
    views, teacher_views = len(mv.policy_views), len(mv.teacher_views)
    need = requirements(recipe, views, teacher_views, mv.needs_teacher)
    actor_gpus = c.nodes * c.gpus_per_node
    return {
        "actor_gpus": actor_gpus,
        "reference_gpus": 0,  # the reference group shares the actor's GPU bundles
        "vllm_engines": c.vllm_engines,
        "vllm_tensor_parallel": c.vllm_tensor_parallel,
        "vllm_gpus": c.vllm_engines * c.vllm_tensor_parallel,
        "colocate": c.colocate,
        "nodes": c.nodes,
        "zero_stage": c.zero_stage,
        "reward_actors": c.reward_actors,
        **need,
    }


def openrlhf_warmup_ratio(ratio: float, total: int | None) -> float:
    """The lr_warmup_ratio that makes OpenRLHF's ceil(total x ratio) equal verl's int(total x ratio).

    verl: 17 warmup steps of 174 at ratio 0.1; OpenRLHF at 0.1 would take 18. Unknown total: as given.
    """
    if total is None:
        return ratio
    steps = int(total * ratio)
    return (steps - 0.5) / total if steps > 0 else 0.0


def build_plan(
    recipe: Recipe, run_dir: Path, *, problems: int | None = None, resume: bool = False
) -> LaunchPlan:
    """The complete OpenRLHF invocation for `recipe`, writing under `run_dir` (absolute paths)."""
    run_dir = Path(run_dir).resolve()
    mv = method_views(recipe)
    views = len(mv.policy_views)
    t, r, c = recipe.train, recipe.rollout, recipe.engine.cluster
    resources = _check_resources(recipe, mv)
    problems_per_step = t.problems_per_step
    prompts_per_step = problems_per_step * views
    samples_per_step = prompts_per_step * r.n
    teacher = recipe.teacher  # resolve() filled it for a method with a teacher
    steps_per_epoch = problems // problems_per_step if problems is not None else None
    total = steps_per_epoch * t.epochs if steps_per_epoch is not None else None
    if t.max_steps is not None:
        total = t.max_steps if total is None else min(total, t.max_steps)
    if t.schedule == "linear" and t.min_lr_ratio > 0:
        raise UserError(
            "train.min_lr_ratio: OpenRLHF's linear schedule decays to 0; use schedule: cosine or min_lr_ratio: 0"
        )

    paths = {
        "run_dir": str(run_dir),
        "job_dir": str(run_dir / JOB_DIR),
        "train_data": str(run_dir / "data" / "train.jsonl"),
        "eval_data": str(run_dir / "data" / "eval.jsonl"),
        "model": str(run_dir / "model"),
        "ckpt": str(run_dir / "ckpt"),
        "metrics": str(run_dir / "metrics.jsonl"),
        "tensorboard": str(run_dir / "tensorboard"),
    }
    # Views' losses: OpenRLHF takes one token-mean over the whole step (both views concatenated).
    # The controller scales each view's advantages by T / T_view (sum) or T / (2 T_view) (mean),
    # which makes the policy-gradient loss exactly the sum (mean) of per-view token-means. The KL
    # loss has one coefficient for all tokens: `views * kl_coef` (sum) gives the sum of the views'
    # KL terms when their token counts are equal, and their token-weighted sum otherwise.
    kl_scale = views if (views > 1 and t.view_loss == "sum") else 1
    kl_coef = t.kl_coef * kl_scale

    f: list[str] = []

    def add(flag: str, *values: Any) -> None:
        f.append(f"--{flag}")
        f.extend(str(v) for v in values)

    # placement
    add("actor.num_nodes", c.nodes)
    add("actor.num_gpus_per_node", c.gpus_per_node)
    add("ref.num_nodes", c.nodes)
    add("ref.num_gpus_per_node", c.gpus_per_node)
    add("vllm.num_engines", c.vllm_engines)
    add("vllm.tensor_parallel_size", c.vllm_tensor_parallel)
    add("vllm.gpu_memory_utilization", c.vllm_gpu_memory_utilization)
    add(
        "vllm.enable_prefix_caching"
    )  # the n samples of a prompt share it; reset at every weight sync
    if c.colocate:
        add("train.colocate_all")
        add("vllm.enable_sleep")
        add("ds.enable_sleep")
    elif kl_coef > 0:
        # the reference (or the teacher's KL stand-in) on the actor's bundles, not a placement
        # group of its own that the plan does not count
        add("train.colocate_actor_ref")
    # model and data
    add("actor.model_name_or_path", recipe.model.path)
    add("reward.remote_url", REWARD_FUNC)
    add("data.prompt_dataset", paths["train_data"])
    add("data.input_key", "prompt")
    add("data.label_key", "label")
    if recipe.model.chat_template:
        add("data.apply_chat_template")
    add("data.max_len", r.max_prompt_tokens + r.max_new_tokens)
    # rollout
    add("rollout.batch_size", prompts_per_step)
    add("rollout.micro_batch_size", c.micro_rollout_batch_size)
    add("rollout.n_samples_per_prompt", r.n)
    add("rollout.max_new_tokens", r.max_new_tokens)
    add("rollout.temperature", r.temperature)
    add("rollout.top_p", r.top_p)
    # optimisation: one optimizer step per RL step over all of its samples
    add("train.batch_size", samples_per_step)
    add("train.micro_batch_size", c.micro_train_batch_size)
    add("train.max_epochs", 1)
    add("train.num_episodes", t.epochs)
    add("train.seed", recipe.seed)
    add("algo.advantage.estimator", "group_norm" if t.advantage_std == "unbiased" else "dr_grpo")
    add("algo.kl.init_coef", kl_coef)
    if kl_coef > 0:
        add("algo.kl.use_loss")
    add("algo.kl.estimator", t.kl_estimator)
    add("actor.eps_clip", t.clip_ratio)
    add("actor.dual_clip", DUAL_CLIP)
    add("actor.loss_agg_mode", t.loss_agg)
    # no --actor.entropy_coef: any value, 0 included, makes OpenRLHF compute a full-vocabulary
    # entropy with gradients in every training pass (the paper's entropy_coeff is 0)
    add("actor.optim", "adam")
    add("actor.adam.lr", t.lr)
    add("actor.adam.betas", *t.betas)
    add("actor.adam.eps", 1e-8)
    add("actor.adam.weight_decay", t.weight_decay)
    add("actor.lr_scheduler", SCHEDULERS[t.schedule])
    add("actor.lr_warmup_ratio", openrlhf_warmup_ratio(t.warmup_ratio, total))
    add("actor.min_lr_ratio", t.min_lr_ratio)
    add("actor.max_norm", t.grad_clip)
    # DeepSpeed
    add("ds.zero_stage", c.zero_stage)
    add("ds.param_dtype", "bf16")  # OpenRLHF builds vLLM in bf16 (openrlhf_plan.recipe_problems)
    add("ds.attn_implementation", "flash_attention_2")
    if c.gradient_checkpointing:
        add("actor.gradient_checkpointing_enable")
    # checkpoints and logs
    add("ckpt.path", paths["ckpt"])
    add("ckpt.output_dir", paths["model"])
    add("ckpt.save_steps", recipe.output.save_interval)
    # no --ckpt.save_hf: OpenRLHF's rotation never deletes those copies; the HF folder is written
    # once, at the end (RUN/model)
    add("ckpt.max_num", KEPT_CHECKPOINTS)
    add("ckpt.best_metric_key", "none")
    if resume:
        add("ckpt.load_enable")
    add("logger.logging_steps", 1)
    if recipe.logging.tensorboard:
        add("logger.tensorboard_dir", paths["tensorboard"])
    if recipe.logging.wandb_project:
        # the key stays in the environment (WANDB_API_KEY): OpenRLHF prints and uploads its args
        add("logger.wandb.project", recipe.logging.wandb_project)
        add("logger.wandb.run_name", run_dir.name)
        add("coreward.wandb", 1)
    if recipe.data.eval:
        add("eval.dataset", paths["eval_data"])
        add("eval.steps", recipe.output.eval_interval)
        add("eval.temperature", 0.0)  # the paper's in-training validation is greedy
        add("eval.n_samples_per_prompt", 1)
    # ours
    add("coreward.method", mv.name)
    add("coreward.method_options", json.dumps(_method_options(recipe), separators=(",", ":")))
    add("coreward.policy_views", ",".join(mv.policy_views))
    add("coreward.teacher_views", ",".join(mv.teacher_views) or "none")
    add("coreward.problems_per_step", problems_per_step)
    if t.max_steps is not None:
        add("coreward.max_steps", t.max_steps)
    add("coreward.view_loss", t.view_loss)
    add("coreward.kl_target", t.kl_target)
    add("coreward.token_stats", int(mv.needs_token_stats))
    add("coreward.reward_actors", c.reward_actors)
    add("coreward.metrics_file", paths["metrics"])
    add("coreward.max_prompt_tokens", r.max_prompt_tokens)
    add("coreward.stop_on_collapse", int(t.stop_on_collapse))
    if mv.needs_teacher and teacher is not None:
        add("coreward.teacher.decay_start", teacher.decay_start)
        add("coreward.teacher.decay_end", teacher.decay_end)
        add("coreward.teacher.schedule", teacher.schedule)
        add("coreward.teacher.update_interval", teacher.update_interval)

    schedule = {
        "problems": problems,
        "problems_per_step": problems_per_step,
        "views": list(mv.policy_views),
        "teacher_views": list(mv.teacher_views),
        "prompts_per_step": prompts_per_step,
        "samples_per_step": samples_per_step,
        "teacher_samples_per_step": problems_per_step * len(mv.teacher_views) * r.n,
        "optimizer_steps_per_rl_step": 1,
        "rl_steps_per_epoch": steps_per_epoch,
        "epochs": t.epochs,
        "rl_steps": total,
        "lr": t.lr,
        "warmup_ratio": t.warmup_ratio,
        "lr_schedule": t.schedule,
        "kl": {
            "coef": t.kl_coef,
            "flag_coef": kl_coef,
            "estimator": t.kl_estimator,
            "target": t.kl_target,
        },
        "view_loss": t.view_loss if views > 1 else "single view",
        "advantages": "group-normalised per (problem, view)"
        + (" (no std)" if t.advantage_std == "none" else ""),
    }
    notes = [
        "steps = floor(problems / problems_per_step) * epochs (the partial last batch is dropped); "
        "the controller sets OpenRLHF's LR-schedule length to it",
        (
            f"warmup = int(steps * {t.warmup_ratio}) optimizer steps, as verl (the ratio passed to "
            "OpenRLHF, which rounds up, is set so that ceil gives verl's count)"
            if total is not None
            else f"warmup = ceil(steps * {t.warmup_ratio}) optimizer steps (OpenRLHF rounds up; "
            "verl rounds down: the launch, which knows the step count, passes a ratio that matches)"
        ),
        "weight decay: OpenRLHF's Adam exempts bias and norm weights; verl decays every parameter "
        "(no OpenRLHF switch; the difference is the 0.01 decay of those few weights)",
    ]
    if views > 1:
        notes.append(
            f"views' losses ({t.view_loss}): advantages scaled per view by T/T_view{'' if t.view_loss == 'sum' else '/2'} "
            f"(exact for the policy-gradient term); KL coefficient x{kl_scale} over all tokens"
        )
    if t.kl_target == "teacher":
        notes.append(
            "KL anchor: the EMA teacher (its log-probs come from the policy actors with the teacher swapped in)"
        )
    runtime_env = {
        "working_dir": paths["job_dir"],
        "env_vars": {
            "TOKENIZERS_PARALLELISM": "true",
            "NCCL_DEBUG": "WARN",
            "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
            "PYTHONUNBUFFERED": "1",
            # how the per-sample reward file compares answers with references: it scores OpenRLHF's
            # held-out evaluation, so it grades like the held-out sets (rewards come from the method)
            "COREWARD_MATCH": recipe.data.eval_match,
            "COREWARD_MATCH_TIMEOUT_S": str(recipe.method.match_timeout_s),
            "COREWARD_EXTRACT_FALLBACKS": ",".join(recipe.method.extract_fallbacks),
        },
    }
    return LaunchPlan(
        flags=f,
        resources=resources,
        runtime_env=runtime_env,
        entrypoint=["python", "-m", ENTRY_MODULE],
        paths=paths,
        schedule=schedule,
        notes=notes,
    )


def _method_options(recipe: Recipe) -> dict[str, Any]:
    m = recipe.method
    return {
        "match": m.match,
        "extract_fallbacks": list(m.extract_fallbacks),
        "tie": m.tie,
        "min_votes": m.min_votes,
        "match_timeout_s": m.match_timeout_s,
        "seed": recipe.seed,
    }


def count_local_problems(recipe: Recipe) -> int | None:
    """The number of training problems when every source is on this machine, else None (a dry run
    never downloads). Problems that turn out too long for max_prompt_tokens are dropped later, on the
    cluster, where the tokenizer is."""
    sources = recipe.data.train
    local = bool(sources) and all(
        s.original.startswith("builtin:") or Path(s.original).exists() or recipe.data.data_dir
        for s in sources
    )
    if not local:
        return None
    from coreward_cli.data import load_train_problems

    try:
        return len(load_train_problems(recipe))
    except UserError:  # the launch reports it; a dry run shows the plan without the count
        return None


def print_plan(plan: LaunchPlan, console: Console) -> None:
    s = plan.schedule
    table = Table(title="OpenRLHF 0.11.2 launch plan", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    res = plan.resources
    table.add_row(
        "GPUs",
        f"{res['total_gpus']} ({res['nodes']} node(s); actor {res['actor_gpus']}, "
        f"vLLM {res['vllm_engines']} x TP{res['vllm_tensor_parallel']}"
        f"{', colocated' if res['colocate'] else ''}; ZeRO-{res['zero_stage']})",
    )
    table.add_row(
        "per step",
        f"{s['problems_per_step']} problems x {len(s['views'])} view(s) = {s['prompts_per_step']} prompts, "
        f"{s['samples_per_step']} samples"
        + (f", teacher {s['teacher_samples_per_step']}" if s["teacher_samples_per_step"] else ""),
    )
    table.add_row("CPUs", f"{res['cpus']} reserved by Ray ({res['cpus_detail']})")
    est = res["estimates"]
    if est is None:
        table.add_row(
            "memory, disk", "no estimate: model.path is neither a known model nor a local folder"
        )
    else:
        gpu, host, disk = est["gpu_gb"], est["host_node0_gb"], est["disk_gb"]
        table.add_row(
            "GPU memory",
            f"~{est['gpu_peak_gb']:.0f} GB per GPU of {est['gpu_memory_gb']:g} (log-prob pass "
            f"{gpu['logprob_pass']:.0f}, training pass {gpu['train_pass']:.0f}; model states "
            f"{gpu['model_states']:.0f})",
        )
        table.add_row(
            "host memory",
            f"~{est['host_node0_total_gb']:.0f} GB on node 0 ("
            + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in host.items())
            + ")",
        )
        table.add_row(
            "disk",
            f"~{est['disk_total_gb']:.0f} GB on shared storage ("
            + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in disk.items())
            + ")",
        )
        if est["teacher_update_allreduce_gb"]:
            table.add_row(
                "teacher update",
                f"all-reduces {est['teacher_update_allreduce_gb']:.0f} GB of fp32 weights per update",
            )
    steps = "unknown until the data is prepared" if s["rl_steps"] is None else str(s["rl_steps"])
    table.add_row("RL steps", f"{steps} (one optimizer step each; {s['epochs']} epochs)")
    table.add_row("LR", f"{s['lr']:g}, warmup {s['warmup_ratio']:g}, {s['lr_schedule']}")
    kl = s["kl"]
    table.add_row(
        "KL", f"{kl['coef']:g} {kl['estimator']} vs {kl['target']} (flag {kl['flag_coef']:g})"
    )
    table.add_row("advantages", s["advantages"])
    table.add_row("run dir", plan.paths["run_dir"])
    console.print(table)
    for note in plan.notes:
        console.print(f"  [dim]- {note}[/dim]")
    console.print("[bold]command[/bold] (run by `ray job submit` in the staged job directory):")
    console.print(plan.command(), markup=False, highlight=False, soft_wrap=True)


def dry_run(
    recipe: Recipe, run_dir: Path, as_json: bool, console: Console, sources: dict[str, str]
) -> None:
    """Show the launch plan; run nothing (no Ray, GPU or OpenRLHF needed)."""
    plan = build_plan(recipe, Path(run_dir), problems=count_local_problems(recipe))
    if as_json:
        from coreward_cli.recipe import recipe_to_dict

        payload = {
            "engine": "openrlhf",
            "recipe": recipe_to_dict(recipe),
            "sources": sources,
            "plan": plan.to_dict(),
        }
        click.echo(json.dumps(payload, indent=2))  # stdout, whatever the console prints to
        return
    from rich.syntax import Syntax

    from coreward_cli.recipe import dump_recipe

    console.print(Syntax(dump_recipe(recipe, sources=sources), "yaml", background_color="default"))
    print_plan(plan, console)
