"""What an openrlhf-engine run needs from the cluster, computed from the recipe alone.

- `recipe_problems`: the checks a recipe must pass before OpenRLHF sees it (each a field and a fix).
- `requirements`: the GPUs and CPUs Ray will reserve, and estimates of GPU memory, host memory per
  node and disk, in decimal GB, from the model's parameter count P and vocabulary V:
  - DeepSpeed model states per GPU (the ZeRO paper's accounting for mixed-precision Adam, N ranks):
    ZeRO-0 16P, ZeRO-1 4P + 12P/N, ZeRO-2 2P + 14P/N, ZeRO-3 16P/N bytes.
  - logits of a forward pass over a micro batch of b full-length rows (L = prompt + new tokens):
    b * L * V * 6 bytes without gradients (bf16 logits and their fp32 log-softmax), b * L * V * 10
    in training (plus the fp32 gradient of the logits).
  - host memory of node 0: under colocation the sleeping DeepSpeed states (14P/N per rank) and the
    sleeping vLLM weights (2P per engine); the teacher's fp32 shadow (4P) and, during a teacher swap,
    one bf16 copy of the student (2P; ZeRO-3: split over the ranks).
  - disk: `ckpt.max_num` DeepSpeed checkpoints of 14P (bf16 weights and fp32 Adam states) plus the
    teacher's 4P each, and the final Hugging Face folders (2P each).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coreward_cli.recipe import Recipe

GB = 1e9
KEPT_CHECKPOINTS = 3  # --ckpt.max_num
CONTROLLER_CPUS = 1  # the PPO controller actor (Ray's default actor needs 1 CPU to be placed)


@dataclass(frozen=True)
class ModelShape:
    params: int
    vocab: int


# Parameter counts and vocabularies of the models the shipped recipes name (their config.json and
# safetensors index); other models are read from a local folder, else estimates are skipped.
KNOWN_MODELS = {
    "qwen/qwen2.5-0.5b": ModelShape(494_032_768, 151_936),
    "qwen/qwen2.5-1.5b": ModelShape(1_543_714_304, 151_936),
    "qwen/qwen2.5-3b": ModelShape(3_085_938_688, 151_936),
    "qwen/qwen2.5-7b": ModelShape(7_615_616_512, 152_064),
}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def _local_shape(folder: Path) -> ModelShape | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.is_file():
        size = json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"]
        params = size // DTYPE_BYTES.get(config.get("torch_dtype", "bfloat16"), 2)
    elif single.is_file():
        with single.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        params = 0
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                params += count
    else:
        return None
    return ModelShape(int(params), int(config["vocab_size"]))


def model_shape(path: str) -> ModelShape | None:
    key = path.lower().removesuffix("-instruct")
    if key in KNOWN_MODELS:
        return KNOWN_MODELS[key]
    return _local_shape(Path(path)) if Path(path).is_dir() else None


@dataclass(frozen=True)
class Counts:
    """A step's row counts and what OpenRLHF splits them into."""

    samples: int  # policy samples per step
    teacher_samples: int
    actor_gpus: int


def step_counts(recipe: Recipe, views: int, teacher_views: int) -> Counts:
    c, r = recipe.engine.cluster, recipe.rollout
    return Counts(
        samples=recipe.train.problems_per_step * views * r.n,
        teacher_samples=recipe.train.problems_per_step * teacher_views * r.n,
        actor_gpus=c.nodes * c.gpus_per_node,
    )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _nearest(value: int, valid: list[int]) -> str:
    below = [v for v in valid if v <= value]
    above = [v for v in valid if v > value]
    near = ([max(below)] if below else []) + ([min(above)] if above else [])
    return " or ".join(str(v) for v in near)


def _problems_per_step_fits(recipe: Recipe, views: int, per_pass: int) -> list[int]:
    n = recipe.rollout.n
    top = recipe.train.problems_per_step * 2
    return [p for p in range(1, top + 1) if (p * views * n) % per_pass == 0]


def logits_gb(rows: int, recipe: Recipe, vocab: int, training: bool) -> float:
    length = recipe.rollout.max_prompt_tokens + recipe.rollout.max_new_tokens
    return rows * length * vocab * (10 if training else 6) / GB


def model_states_gb(params: int, stage: int, ranks: int) -> float:
    per_param = {0: 16.0, 1: 4 + 12 / ranks, 2: 2 + 14 / ranks, 3: 16 / ranks}[stage]
    return params * per_param / GB


def gpu_peak_gb(recipe: Recipe, shape: ModelShape, kl_on_initial: bool) -> dict[str, float]:
    c = recipe.engine.cluster
    ranks = c.nodes * c.gpus_per_node
    states = model_states_gb(shape.params, c.zero_stage, ranks)
    # the reference model shares the actor's GPUs (colocated); bf16 weights
    reference = 2 * shape.params / GB if kl_on_initial else 0.0
    logprob = logits_gb(c.micro_rollout_batch_size, recipe, shape.vocab, training=False)
    train = logits_gb(c.micro_train_batch_size, recipe, shape.vocab, training=True)
    return {
        "model_states": states,
        "reference": reference,
        "logprob_pass": states + reference + logprob,
        "train_pass": states + reference + train,
    }


def recipe_problems(recipe: Recipe, views: int, teacher_views: int, token_stats: bool) -> None:
    """Raise UserError (one line: field, problem, fix) for a recipe the openrlhf engine cannot run."""
    from coreward_cli.errors import UserError

    dtype = recipe.model.dtype
    if dtype in ("fp16", "fp32"):
        raise UserError(
            f"model.dtype: {dtype} is not supported by the openrlhf engine (OpenRLHF 0.11.2 builds "
            f"every vLLM engine in bfloat16 and asserts the synced weights match); use auto or bf16"
        )
    c = recipe.engine.cluster
    counts = step_counts(recipe, views, teacher_views)
    gpus = counts.actor_gpus
    if c.colocate and gpus != c.vllm_engines * c.vllm_tensor_parallel:
        raise UserError(
            f"engine.cluster.vllm_engines: colocate needs vllm_engines x vllm_tensor_parallel = "
            f"nodes x gpus_per_node = {gpus}, got {c.vllm_engines} x {c.vllm_tensor_parallel}; "
            f"set vllm_engines: {gpus // c.vllm_tensor_parallel or 1}"
        )
    # Every rank must get the same number of micro batches: ranks run one collective per micro
    # batch (ZeRO-3 gathers, the loss all-reduces), so an uneven split hangs in NCCL.
    for name, micro in (
        ("micro_train_batch_size", c.micro_train_batch_size),
        ("micro_rollout_batch_size", c.micro_rollout_batch_size),
    ):
        if counts.samples % (micro * gpus):
            fits = [
                m for m in _divisors(counts.samples // gpus) if counts.samples % (m * gpus) == 0
            ]
            steps = _problems_per_step_fits(recipe, views, micro * gpus)
            raise UserError(
                f"engine.cluster.{name}: {counts.samples} samples per step do not split into micro "
                f"batches of {micro} evenly over {gpus} GPUs (ranks would hang in NCCL); use "
                f"{name}: {_nearest(micro, fits) or 'a smaller value'}, or train.problems_per_step: "
                f"{_nearest(recipe.train.problems_per_step, steps) or 'a multiple of the GPUs'}"
            )
    if token_stats and (counts.samples + counts.teacher_samples) % gpus:
        raise UserError(
            f"train.problems_per_step: the token statistics pass over {counts.samples} policy + "
            f"{counts.teacher_samples} teacher samples does not split evenly over {gpus} GPUs"
        )
    shape = model_shape(recipe.model.path)
    if shape is None:
        return
    kl_on_initial = recipe.train.kl_coef > 0 and recipe.train.kl_target == "initial" and c.colocate
    peak = gpu_peak_gb(recipe, shape, kl_on_initial)
    for name, key, training in (
        ("micro_rollout_batch_size", "logprob_pass", False),
        ("micro_train_batch_size", "train_pass", True),
    ):
        if peak[key] > c.gpu_memory_gb:
            base = peak[key] - logits_gb(getattr(c, name), recipe, shape.vocab, training)
            fits = [
                m
                for m in _divisors(counts.samples // gpus)
                if counts.samples % (m * gpus) == 0
                and base + logits_gb(m, recipe, shape.vocab, training) <= c.gpu_memory_gb
            ]
            raise UserError(
                f"engine.cluster.{name}: the {key.replace('_', ' ')} needs about {peak[key]:.0f} GB "
                f"per GPU at {getattr(c, name)} ({base:.0f} GB model states + logits), over "
                f"engine.cluster.gpu_memory_gb={c.gpu_memory_gb:g}; use {name}: "
                f"{max(fits) if fits else 'none fits: more GPUs or ZeRO-3'}"
            )


def requirements(
    recipe: Recipe, views: int, teacher_views: int, needs_teacher: bool
) -> dict[str, Any]:
    """GPUs and CPUs Ray reserves for the job, and the memory and disk estimates (GB)."""
    c, t = recipe.engine.cluster, recipe.train
    actor_gpus = c.nodes * c.gpus_per_node
    vllm_gpus = c.vllm_engines * c.vllm_tensor_parallel
    # The reference group shares the actor's bundles (colocate_all or colocate_actor_ref), so
    # OpenRLHF reserves actor + vLLM GPUs, one CPU with each GPU bundle.
    total_gpus = actor_gpus if c.colocate else actor_gpus + vllm_gpus
    reward_cpus = c.reward_actors if c.reward_actors > 1 else 0
    cpus = total_gpus + reward_cpus + CONTROLLER_CPUS
    out: dict[str, Any] = {
        "total_gpus": total_gpus,
        "cpus": cpus,
        "cpus_detail": f"{total_gpus} GPU bundles + {reward_cpus} grading actors + {CONTROLLER_CPUS} controller",
    }
    shape = model_shape(recipe.model.path)
    if shape is None:
        out["estimates"] = None
        return out
    p = shape.params
    kl_on_initial = t.kl_coef > 0 and t.kl_target == "initial" and c.colocate
    gpu = gpu_peak_gb(recipe, shape, kl_on_initial)
    gpus_on_node0 = min(c.gpus_per_node, actor_gpus)
    host: dict[str, float] = {}
    if c.colocate:
        host["deepspeed_asleep"] = gpus_on_node0 * (14 * p / actor_gpus) / GB
        host["vllm_asleep"] = (c.vllm_engines // c.nodes) * 2 * p / GB
    if needs_teacher:
        share = 1 if c.zero_stage < 3 else gpus_on_node0 / actor_gpus
        host["teacher_shadow"] = 4 * p * share / GB
        host["teacher_swap_backup"] = 2 * p * share / GB
    disk = {
        "checkpoints": KEPT_CHECKPOINTS * 14 * p / GB,
        "final_model": 2 * p / GB,
    }
    if needs_teacher:
        disk["teacher_checkpoints"] = KEPT_CHECKPOINTS * 4 * p / GB
        disk["final_teacher"] = 2 * p / GB
    out["estimates"] = {
        "model": {"params": p, "vocab": shape.vocab},
        "gpu_gb": {k: round(v, 1) for k, v in gpu.items()},
        "gpu_peak_gb": round(max(gpu["logprob_pass"], gpu["train_pass"]), 1),
        "gpu_memory_gb": c.gpu_memory_gb,
        "host_node0_gb": {k: round(v, 1) for k, v in host.items()},
        "host_node0_total_gb": round(sum(host.values()), 1),
        "disk_gb": {k: round(v, 1) for k, v in disk.items()},
        "disk_total_gb": round(sum(disk.values()), 1),
        # ZeRO-0/1/2: the EMA reads the full fp32 master weights, one all-reduce of 4P bytes
        "teacher_update_allreduce_gb": round(4 * p / GB, 1)
        if needs_teacher and c.zero_stage < 3
        else 0.0,
    }
    return out
