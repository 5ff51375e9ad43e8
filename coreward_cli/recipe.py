"""The recipe: a typed schema with one documented field per option.

Every field carries `metadata["help"]`, printed by `coreward recipe show --explain`.
Defaults are the paper's Co-rewarding-I configuration (reference doc §4) wherever the
paper has one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from coreward_plugins.answers import Fallback, MatchMode

PAPER_SYSTEM_PROMPT = "Let's think step by step and output the final answer within \\boxed{}."


def doc(default, help: str, **kw):
    """A dataclass field with its one-line description."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def doc_factory(factory, help: str):
    return field(default_factory=factory, metadata={"help": help})


@dataclass
class ModelConfig:
    path: str = doc(
        "Qwen/Qwen2.5-3B",
        "Policy to train: a Hugging Face folder, a hub id, or builtin:tiny-arith.",
    )
    chat_template: bool = doc(
        True, "Apply the tokenizer's chat template (the paper does, even for base models)."
    )
    system_prompt: str | None = doc(
        PAPER_SYSTEM_PROMPT, "System message put before every question; null for none."
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = doc(
        "auto", "Weights dtype for training and sampling (auto: bf16 on GPU, fp32 on CPU)."
    )


@dataclass
class TrainSource:
    original: str = doc(
        "",
        "Original questions: a file (parquet, jsonl, json; relative to the current directory), a hub dataset id, or builtin:tiny-arith.",
    )
    rephrased: str | None = doc(
        None,
        "Row-aligned rephrased questions (file or hub id); null when `original` holds both columns or none is needed.",
    )
    split: str = doc("train", "Split to read when the source is a hub dataset.")


@dataclass
class DataConfig:
    train: list[TrainSource] = doc_factory(list, "Training sources, concatenated in order.")
    question_key: str = doc(
        "prompt",
        "Column with the question: a string, or a chat message list whose user turn is the question (published datasets bring their own columns).",
    )
    rephrased_key: str | None = doc(
        None,
        "Column with the rephrased question when one file holds both views (e.g. rephrased_question).",
    )
    answer_key: str | None = doc(
        "reward_model.ground_truth",
        "Column with the reference answer (dotted for nested); read only for metrics by label-free methods; null for none (not with gt).",
    )
    id_key: str | None = doc(
        "extra_info.index", "Column with a stable problem id; null to use the row number."
    )
    data_dir: str | None = doc(
        None,
        "Local copy of the data laid out like shared/data (train/, bench/; its train/ also works): published names resolve to files under it instead of the hub. Relative to the current directory.",
    )
    eval: list[str] = doc(
        [], "Held-out sets evaluated greedily during training (benchmark names or files)."
    )
    eval_limit: int | None = doc(
        None, "Evaluate on at most this many problems of each eval set; null for all.", min=1
    )
    eval_match: MatchMode = doc(
        "hendrycks",
        "How held-out answers are graded: hendrycks is the official validation (verl math.compute_score, Hendrycks-normalised strings); normalized and math_verify are looser; method.match only shapes rewards.",
    )
    max_problems: int | None = doc(
        None, "Train on at most this many problems; null for all.", min=1
    )
    shuffle_seed: int = doc(
        1,
        "Seed of the training sampler (verl's data.seed; 1 in Co-rewarding-I).",
        min=0,
        max=2**32 - 1,
    )


@dataclass
class MethodConfig:
    name: str = doc(
        "co_rewarding_i",
        "Reward method: gt, majority_vote, co_rewarding_i, co_rewarding_ii, co_rewarding_iii, self_certainty, entropy, random, or module:Class.",
    )
    match: MatchMode = doc(
        "exact",
        "How answers are compared: exact strings (the paper's votes), hendrycks (the official GT reward; the default for gt), a normalized key, or math-verify equivalence.",
    )
    extract_fallbacks: list[Fallback] = doc(
        [],
        "Answer extraction when there is no \\boxed{}: any of gsm8k (#### x), answer_is, last_number, fbox (a lone \\fbox{}, no answer in the official code).",
    )
    tie: Literal["first", "none"] = doc(
        "first",
        "Vote ties: first = the answer counted first wins (the paper); none = no label, zero rewards.",
    )
    min_votes: int = doc(
        1,
        "A pseudo-label needs at least this many agreeing answers, else the group gets zero rewards (paper: 1).",
        min=1,
    )
    match_timeout_s: float = doc(5.0, "Time limit for one answer comparison, in seconds.", min=0.01)


@dataclass
class RolloutConfig:
    n: int = doc(
        8,
        "Responses sampled per prompt and view (a group of one has no advantage: at least 2).",
        min=2,
        max=1024,
    )
    temperature: float = doc(1.0, "Sampling temperature for training rollouts.", min=0.0)
    top_p: float = doc(1.0, "Nucleus sampling for training rollouts.", min=0.0, max=1.0)
    max_prompt_tokens: int = doc(
        512, "Problems whose (templated) prompt is longer, in either view, are dropped.", min=1
    )
    max_new_tokens: int = doc(3072, "Longest response.", min=1)


@dataclass
class TrainConfig:
    problems_per_step: int = doc(
        128, "Problems per RL step (Co-rewarding-I samples each in both views: 2x prompts).", min=1
    )
    lr: float = doc(3e-6, "Peak learning rate (AdamW).", min=0.0)
    warmup_ratio: float = doc(0.1, "Share of the steps with linear warmup.", min=0.0, max=1.0)
    schedule: Literal["cosine", "linear", "constant"] = doc(
        "cosine", "Learning-rate decay after warmup."
    )
    min_lr_ratio: float = doc(0.0, "Final learning rate as a share of the peak.", min=0.0, max=1.0)
    weight_decay: float = doc(0.01, "AdamW weight decay.", min=0.0)
    betas: list[float] = doc([0.9, 0.999], "AdamW betas.")
    grad_clip: float = doc(1.0, "Clip the global gradient norm to this; 0 disables.", min=0.0)
    epochs: int = doc(3, "Passes over the training problems.", min=1)
    max_steps: int | None = doc(
        None, "Stop after this many RL steps (overrides epochs); null for epochs.", min=1
    )
    kl_coef: float = doc(
        0.005, "KL loss coefficient (0.005 in Co-rewarding-I, 0.001 in II).", min=0.0
    )
    kl_estimator: Literal["k1", "k2", "k3"] = doc(
        "k3", "KL estimator (k3 = verl's low_var_kl, clamped to [-10, 10])."
    )
    kl_target: Literal["initial", "teacher"] = doc(
        "initial",
        "KL anchor: the frozen initial model, or the EMA teacher (the official Co-rewarding-II code).",
    )
    clip_ratio: float = doc(0.2, "PPO clip range.", min=0.0)
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "micro-token-mean"] = doc(
        "token-mean",
        "How token losses aggregate into a view's loss: token-mean over the view; seq-mean-token-mean; "
        "micro-token-mean (verl's: each micro-batch's token mean / micro-batches; local engine only).",
    )
    view_loss: Literal["sum", "mean"] = doc(
        "sum", "How the views' losses combine: sum (the official code, ~2x gradient) or mean."
    )
    advantage_std: Literal["unbiased", "none"] = doc(
        "unbiased", "Group advantage: (r - mean) / (unbiased std + 1e-6), or r - mean (Dr. GRPO)."
    )
    micro_batch_size: int = doc(
        8, "Sequences per forward/backward pass (gradient accumulation beyond it).", min=1
    )
    stop_on_collapse: bool = doc(
        False,
        "Stop when the label-free collapse detector fires; keep the last checkpoint before it.",
    )


@dataclass
class TeacherConfig:
    decay_start: float = doc(
        0.99,
        "EMA decay at step 1: the weight kept on the old teacher (official α_new 0.01 -> decay 0.99).",
        min=0.0,
        max=1.0,
    )
    decay_end: float = doc(
        0.99999,
        "EMA decay at the last step (official code 0.99999; the paper's text says 0.9999).",
        min=0.0,
        max=1.0,
    )
    schedule: Literal["cosine", "constant"] = doc(
        "cosine", "How decay moves from decay_start to decay_end over the run."
    )
    update_interval: int = doc(
        1, "Update the teacher every this many steps, before it samples.", min=1
    )


@dataclass
class ClusterConfig:
    ray_address: str | None = doc(
        None, "Ray cluster to submit to; null: RAY_ADDRESS, else start a local head."
    )
    nodes: int = doc(1, "Nodes for the actor (policy) group.", min=1)
    gpus_per_node: int = doc(4, "GPUs per node for the actor group.", min=1)
    vllm_engines: int = doc(4, "vLLM engines for rollouts.", min=1)
    vllm_tensor_parallel: int = doc(1, "Tensor-parallel size of each vLLM engine.", min=1)
    vllm_gpu_memory_utilization: float = doc(
        0.6, "Share of GPU memory vLLM may take.", min=0.05, max=1.0
    )
    colocate: bool = doc(
        True,
        "Hybrid engine: actor, reference and vLLM share the GPUs (OpenRLHF train.colocate_all).",
    )
    zero_stage: int = doc(
        2,
        "DeepSpeed ZeRO stage (2: the teacher shadow is one full copy on rank 0's CPU; 3: per-rank partitions).",
        min=0,
        max=3,
    )
    micro_train_batch_size: int = doc(8, "Per-GPU micro batch for training (the paper: 8).", min=1)
    micro_rollout_batch_size: int = doc(
        16, "Per-GPU micro batch for log-prob passes (the paper: 16).", min=1
    )
    gradient_checkpointing: bool = doc(True, "Recompute activations in backward to save memory.")
    reward_actors: int = doc(4, "Ray actors that grade answers in parallel.", min=1)
    gpu_memory_gb: float = doc(
        80.0, "Memory of each GPU (GB); the plan checks its per-GPU estimate against it.", min=1.0
    )


@dataclass
class EngineConfig:
    kind: Literal["local", "openrlhf"] = doc(
        "local",
        "local: one process, CPU or one GPU; openrlhf: OpenRLHF 0.11.2 on a Ray GPU cluster.",
    )
    device: Literal["auto", "cpu", "cuda"] = doc(
        "auto", "Local engine device (auto: cuda when available)."
    )
    threads: int | None = doc(
        None, "CPU threads for the local engine; null: torch's default.", min=1
    )
    cluster: ClusterConfig = doc_factory(ClusterConfig, "Resources for the openrlhf engine.")


@dataclass
class OutputConfig:
    dir: str = doc("runs/{recipe}", "Run directory; {recipe} is the recipe file's stem.")
    save_interval: int = doc(
        10, "Write a checkpoint every this many steps (and at the end).", min=1
    )
    eval_interval: int = doc(
        10,
        "Evaluate the held-out sets every this many steps (and before and after training).",
        min=1,
    )


@dataclass
class LoggingConfig:
    tensorboard: bool = doc(False, "Write TensorBoard events under the run directory.")
    wandb_project: str | None = doc(None, "Log to this Weights & Biases project; null for none.")


@dataclass
class Recipe:
    model: ModelConfig = doc_factory(ModelConfig, "The policy model.")
    data: DataConfig = doc_factory(DataConfig, "Training and held-out data.")
    method: MethodConfig = doc_factory(MethodConfig, "The reward method.")
    rollout: RolloutConfig = doc_factory(RolloutConfig, "Sampling for training rollouts.")
    train: TrainConfig = doc_factory(TrainConfig, "Optimisation.")
    teacher: TeacherConfig | None = doc(None, "The EMA teacher (co_rewarding_ii/iii only).")
    engine: EngineConfig = doc_factory(EngineConfig, "Where and how the run executes.")
    output: OutputConfig = doc_factory(OutputConfig, "Run directory and intervals.")
    logging: LoggingConfig = doc_factory(LoggingConfig, "Experiment tracking.")
    seed: int = doc(
        1, "Seed for sampling, initialisation and the random method.", min=0, max=2**32 - 1
    )


# ---------------------------------------------------------------- writing


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain data in schema order (what `dump_recipe` writes and a run's recipe.yaml holds)."""
    return dataclasses.asdict(recipe)


def dump_recipe(
    recipe: Recipe, explain: bool = False, sources: dict[str, str] | None = None
) -> str:
    """The resolved recipe as YAML in schema order; `explain` puts each field's description above
    it, `sources` says beside each value where it came from (default, method default, recipe, --set)."""
    from coreward_cli.typed_yaml import emit

    return emit(recipe, explain=explain, sources=sources)


def run_dir_for(recipe: Recipe, recipe_path: str | Path) -> Path:
    """The run directory: `output.dir` with `{recipe}` replaced by the recipe file's stem."""
    return Path(recipe.output.dir.replace("{recipe}", Path(recipe_path).stem)).expanduser()
