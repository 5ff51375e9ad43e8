"""The Ray job's entry point: `python -m coreward_plugins.openrlhf.entry <OpenRLHF flags> <--coreward.* flags>`.

1. Parse with OpenRLHF 0.11.2's own parser and validation (cli_args), our flags included.
2. Drop problems whose prompt, in any view the method samples, is longer than max_prompt_tokens
   (the paper filters pairs at 512 tokens), with the policy's own tokenizer and chat template;
   held-out prompts by the same rule (OpenRLHF would cut them from the left, losing the system prompt).
3. Run OpenRLHF's unchanged `train(args)` with three of its classes replaced by ours: the policy actor
   (teacher shadow), the controller (relabelling), and, when the KL anchor is the teacher, the
   reference actor (a stand-in that loads no model).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from coreward_plugins.openrlhf.cli_args import csv_views, parse_args
from coreward_plugins.openrlhf.rows import decode_label, render

FORWARDED_ENV = (
    "COREWARD_MATCH",
    "COREWARD_MATCH_TIMEOUT_S",
    "COREWARD_EXTRACT_FALLBACKS",
    "WANDB_API_KEY",
    "HF_TOKEN",
    "HF_HOME",
)


def _visible(path: str) -> Path:
    source = Path(path)
    if not source.is_file():
        raise SystemExit(
            f"coreward: {source} is not visible on this node; the run directory must be on "
            f"storage every node of the cluster sees (a shared file system)"
        )
    return source


def _filter_file(source: Path, keep) -> tuple[Path, int, int]:
    kept, dropped = [], 0
    for line in source.read_text(encoding="utf-8").splitlines():
        if keep(json.loads(line)):
            kept.append(line)
        else:
            dropped += 1
    target = source.with_name(source.stem + ".filtered.jsonl")
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target, len(kept), dropped


def filter_long_prompts(args: SimpleNamespace) -> dict[str, tuple[int, int]]:
    """Rewrite the prompt files without the problems too long in any sampled view (training) or
    too long as asked (held-out: OpenRLHF would cut them from the left, system prompt first);
    {"train"/"eval": (kept, dropped)}."""
    limit = args.coreward.max_prompt_tokens
    train = _visible(args.data.prompt_dataset)
    held_out = _visible(args.eval.dataset) if args.eval.dataset else None
    if not limit:
        return {}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.actor.model_name_or_path, trust_remote_code=True)
    template = tok.apply_chat_template if args.data.apply_chat_template else None
    views = set(csv_views(args.coreward.policy_views)) | set(csv_views(args.coreward.teacher_views))

    def fits(prompts: list) -> bool:
        return all(
            len(
                tok(
                    render(p, template, args.data.input_template), add_special_tokens=False
                ).input_ids
            )
            <= limit
            for p in prompts
        )

    def keep_train(row: dict) -> bool:
        label = decode_label(row["label"])
        prompts = [row["prompt"]] + ([label.rephrased] if "rephrased" in views else [])
        if any(p is None for p in prompts):
            raise SystemExit(
                f"coreward: problem {label.id} has no rephrased question; the method needs one"
            )
        return fits(prompts)

    target, kept, dropped = _filter_file(train, keep_train)
    args.data.prompt_dataset = str(target)
    counts = {"train": (kept, dropped)}
    if held_out is not None:
        target, kept, dropped = _filter_file(held_out, lambda row: fits([row["prompt"]]))
        args.eval.dataset = str(target)
        counts["eval"] = (kept, dropped)
    return counts


def prepare_args(argv: list[str]) -> SimpleNamespace:
    """OpenRLHF's parsed arguments, refused where coreward cannot run them. No secret enters them:
    OpenRLHF prints its arguments and uploads them as the W&B config."""
    args = parse_args(argv)
    if args.train.async_enable:
        raise SystemExit(
            "coreward: async training is not supported (the labels must match the weights that sampled)"
        )
    if csv_views(args.coreward.teacher_views) and args.ds.zpg > 1:
        raise SystemExit(
            "coreward: --ds.zpg > 1 (ZeRO++ hierarchical partitions) is not supported with a teacher: "
            "its swap writes the primary partitions only"
        )
    # OpenRLHF logs to W&B whenever logger.wandb.key is set; the controller (trainer.py) turns
    # it on only when the recipe asks, with the key read by wandb from the environment
    args.logger.wandb.key = None
    if args.coreward.wandb and not os.environ.get("WANDB_API_KEY"):
        raise SystemExit(
            "coreward: logging.wandb_project needs WANDB_API_KEY in the environment of the job"
        )
    return args


def install_coreward_classes(args: SimpleNamespace):
    """Point OpenRLHF's `train()` at our subclasses (driver-side names only; actors import by reference)."""
    import openrlhf.cli.train_ppo_ray as host
    import openrlhf.trainer.ppo_trainer as ppo_trainer

    from coreward_plugins.openrlhf.actor import CorewardPolicyActorRemote, TeacherKLStandInRemote
    from coreward_plugins.openrlhf.trainer import CorewardPPOTrainerRemote

    host.PolicyModelActor = CorewardPolicyActorRemote
    ppo_trainer.PPOTrainer = CorewardPPOTrainerRemote
    if args.coreward.kl_target == "teacher":
        host.ReferenceModelActor = TeacherKLStandInRemote
    return host


def main(argv: list[str] | None = None) -> None:
    args = prepare_args(sys.argv[1:] if argv is None else argv)
    for name, (kept, dropped) in filter_long_prompts(args).items():
        print(
            f"coreward: {kept} {name} problems fit in {args.coreward.max_prompt_tokens} prompt "
            f"tokens ({dropped} dropped)",
            flush=True,
        )
    import ray

    if not ray.is_initialized():
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        env.update(
            TOKENIZERS_PARALLELISM="true",
            NCCL_DEBUG=os.environ.get("NCCL_DEBUG", "WARN"),
            RAY_ENABLE_ZERO_COPY_TORCH_TENSORS="1",
        )
        # inside `ray job submit` this connects to the cluster and keeps the job's runtime env;
        # run directly, it starts a local Ray head for this process
        ray.init(
            runtime_env={"env_vars": env, "working_dir": os.getcwd()}
            if "RAY_ADDRESS" not in os.environ
            else None
        )
    host = install_coreward_classes(args)
    host.train(args)


if __name__ == "__main__":
    main()
