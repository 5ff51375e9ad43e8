"""The built-in tiny model and arithmetic task behind `model.path: builtin:tiny-arith`.

A 1 M-parameter Qwen2 over a byte-level tokenizer (built in code, nothing downloaded) and
two-digit addition asked in three wordings. `warm_start()` gives the model a short supervised
warm start, the stand-in for a pretrained base: it already solves about 70 % of the held-out
problems in either wording, which leaves label-free RL room to improve and enough right
majorities to learn from. It lives in the user's cache folder under a hash of everything that
defines it; the package ships the default one, so a first run copies it instead of training
(`python -m coreward_cli.toy` rebuilds the shipped copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from coreward_cli.errors import UserError, one_line
from coreward_cli.fileutil import write_folder_atomic
from coreward_cli.problem import BUILTIN, Problem

VERSION = 2  # bump when anything that shapes the warm start changes outside the constants below

# ---------------------------------------------------------------- task

ORIGINAL_TEMPLATE = "{a}+{b}="
# Other words and the other operand order: the same problem, seen differently (Co-rewarding-I).
REPHRASED_TEMPLATES: tuple[str, ...] = ("add {b} and {a}:", "sum of {a} and {b}?")
TEMPLATES: tuple[str, ...] = (ORIGINAL_TEMPLATE, *REPHRASED_TEMPLATES)

SPLIT_SEED = 20250801  # fixed: the eval split never changes with the caller's seed
EVAL_SIZE = 500
DEV_SIZE = 256  # held out too; the warm start stops on its accuracy, never on eval's

Split = Literal["train", "dev", "eval"]
ViewName = Literal["original", "rephrased"]


def format_answer(total: int) -> str:
    """The response the model is taught: the final answer in the \\boxed{} the methods extract."""
    return f"\\boxed{{{total}}}"


def _split_pairs() -> dict[str, list[tuple[int, int]]]:
    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(SPLIT_SEED).shuffle(pairs)
    return {
        "eval": sorted(pairs[:EVAL_SIZE]),
        "dev": sorted(pairs[EVAL_SIZE : EVAL_SIZE + DEV_SIZE]),
        "train": sorted(pairs[EVAL_SIZE + DEV_SIZE :]),
    }


def _problem(a: int, b: int) -> Problem:
    # Rotate through the rephrasings by a mix of both operands so every template covers all sums.
    template = REPHRASED_TEMPLATES[(a * 7 + b) % len(REPHRASED_TEMPLATES)]
    return Problem(
        id=f"{a}+{b}",
        question=ORIGINAL_TEMPLATE.format(a=a, b=b),
        rephrased=template.format(a=a, b=b),
        answer=str(a + b),
    )


def problems(split: Split = "train", seed: int | None = None) -> list[Problem]:
    """The task's problems of one split; `seed` shuffles their order (None keeps (a, b) order).

    The split itself is fixed, so `eval` stays held out from the warm start whatever the seed.
    """
    if split not in ("train", "dev", "eval"):
        raise ValueError(f"split must be train, dev or eval, not {split!r}")
    items = [_problem(a, b) for a, b in _split_pairs()[split]]
    if seed is not None:
        random.Random(seed).shuffle(items)
    return items


def prompt_of(problem: Problem, view: ViewName) -> str:
    if view == "original":
        return problem.question
    if problem.rephrased is None:
        raise ValueError(f"problem {problem.id} has no rephrased view")
    return problem.rephrased


# ---------------------------------------------------------------- tokenizer and model

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
MODEL_CONFIG: dict[str, int | float | bool] = dict(
    vocab_size=260,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=512,
    max_position_embeddings=64,
    tie_word_embeddings=True,
    rope_theta=10000.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def build_tokenizer():
    """Byte-level BPE without merges: one token per byte, 4 specials + 256 bytes = 260 ids.

    Unlike a char-level WordLevel vocabulary, it survives `AutoTokenizer.from_pretrained`
    (reloaded as Qwen2Tokenizer) with identical ids, spaces and newlines included.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=int(MODEL_CONFIG["max_position_embeddings"]),
    )


def build_model(seed: int = 0):
    """A freshly initialised Qwen2ForCausalLM (~1.06 M params), the same weights for the same seed."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**MODEL_CONFIG)
    # Initialise from a private generator state so the caller's global RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    return model


# ---------------------------------------------------------------- warm start


def teacher_forced_batch(tokenizer, items: Sequence[Problem], view: ViewName):
    """(input ids, attention mask, targets) of prompt + reference answer, right-padded; `targets`
    holds each answer token at the position that predicts it and -100 elsewhere (no EOS: the
    answer as written, whatever follows it)."""
    prompts = tokenizer([prompt_of(p, view) for p in items]).input_ids
    answers = tokenizer(
        [format_answer(int(p.answer)) for p in items], add_special_tokens=False
    ).input_ids
    width = max(len(q) + len(a) for q, a in zip(prompts, answers))
    ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    targets = torch.full_like(ids, -100)
    for i, (q, a) in enumerate(zip(prompts, answers)):
        ids[i, : len(q) + len(a)] = torch.tensor(q + a)
        mask[i, : len(q) + len(a)] = 1
        targets[i, len(q) - 1 : len(q) + len(a) - 1] = torch.tensor(a)
    return ids, mask, targets


@torch.no_grad()
def answer_accuracy(model, batch) -> float:
    """Share of rows where greedy decoding starts with the reference answer, read off one forward
    pass (each answer token is the argmax given the right prefix) instead of a decoding loop."""
    ids, mask, targets = batch
    was_training = model.training
    model.eval()
    choice = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    model.train(was_training)
    return ((choice == targets) | (targets == -100)).all(-1).float().mean().item()


@dataclass(frozen=True)
class WarmStartConfig:
    """The supervised warm start: stop at the first check where dev accuracy reaches `target`
    on both views (the original wording and the rephrasings).

    Stopping on a target rather than a step count keeps the starting accuracy in the window
    label-free RL needs even where another CPU's arithmetic moves the (sharp) learning curve.
    """

    seed: int = 0
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    batch_size: int = 128
    original_share: float = 1 / 3  # the rest is spread evenly over the rephrasings
    target_accuracy: float = 0.68
    first_check: int = 100
    check_every: int = 5
    max_steps: int = 900
    threads: int = 1  # fixed: the bits depend on it (on a CPU shared with other busy work, 2 threads stall badly)


def _examples(tokenizer, items: Sequence[Problem]) -> list[list[tuple[list[int], list[int]]]]:
    """Per problem, (prompt ids, response ids) for each template, original first."""
    eos = tokenizer.eos_token_id
    operands = [tuple(int(x) for x in p.id.split("+")) for p in items]
    responses = tokenizer(
        [format_answer(a + b) for a, b in operands], add_special_tokens=False
    ).input_ids
    prompts = [tokenizer([t.format(a=a, b=b) for a, b in operands]).input_ids for t in TEMPLATES]
    return [[(views[i], responses[i] + [eos]) for views in prompts] for i in range(len(items))]


def _batch(examples, rng: random.Random, cfg: WarmStartConfig, pad_id: int):
    """A right-padded batch; the loss covers the response tokens only."""
    seqs, labels = [], []
    n_rephrased = len(REPHRASED_TEMPLATES)
    for _ in range(cfg.batch_size):
        views = rng.choice(examples)
        view = 0 if rng.random() < cfg.original_share else 1 + rng.randrange(n_rephrased)
        prompt, response = views[view]
        seqs.append(prompt + response)
        labels.append([-100] * len(prompt) + response)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (s, lbl) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        lab[i, : len(lbl)] = torch.tensor(lbl)
    return ids, mask, lab


def train_warm_start(
    cfg: WarmStartConfig, progress: Progress | None = None
) -> tuple[object, object, dict]:
    """Supervised training from scratch; returns (model, tokenizer, stats). Deterministic on CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        tokenizer = build_tokenizer()
        model = build_model(cfg.seed)
        model.train()
        examples = _examples(tokenizer, problems("train"))
        views: tuple[ViewName, ...] = ("original", "rephrased")
        dev = {view: teacher_forced_batch(tokenizer, problems("dev"), view) for view in views}
        rng = random.Random(cfg.seed)
        opt = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps)
        )
        task = progress.add_task("warm start", total=cfg.max_steps) if progress else None
        dev_acc, step = dict.fromkeys(views, 0.0), 0
        checks: list[list[float]] = []  # [step, original, rephrased] at each dev check
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for step in range(1, cfg.max_steps + 1):
                ids, mask, lab = _batch(examples, rng, cfg, tokenizer.pad_token_id)
                loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if progress is not None:
                    progress.update(
                        task,
                        advance=1,
                        description=f"warm start  loss {loss.item():.3f}  dev "
                        + " / ".join(f"{a:.0%}" for a in dev_acc.values()),
                    )
                if step >= cfg.first_check and (step - cfg.first_check) % cfg.check_every == 0:
                    dev_acc = {view: answer_accuracy(model, dev[view]) for view in views}
                    checks.append([step, *(round(a, 4) for a in dev_acc.values())])
                    if min(dev_acc.values()) >= cfg.target_accuracy:
                        break
        if progress is not None:
            progress.update(task, completed=cfg.max_steps)
        model.eval()
        return (
            model,
            tokenizer,
            {
                "steps": step,
                "dev_accuracy": dev_acc,
                "final_loss": float(loss.item()),
                "dev_checks": checks,
            },
        )
    finally:
        torch.set_num_threads(threads)


def cache_root() -> Path:
    """$COREWARD_CACHE, else $XDG_CACHE_HOME/coreward, else ~/.cache/coreward."""
    if os.environ.get("COREWARD_CACHE"):
        return Path(os.environ["COREWARD_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "coreward"
    return Path.home() / ".cache" / "coreward"


def fingerprint(cfg: WarmStartConfig) -> str:
    """A short hash of everything that defines the warm start."""
    import transformers

    spec = {
        "version": VERSION,
        "templates": TEMPLATES,
        "split": [SPLIT_SEED, EVAL_SIZE, DEV_SIZE],
        "answer": format_answer(0),
        "tokenizer": SPECIAL_TOKENS,
        "model": MODEL_CONFIG,
        "train": asdict(cfg),
        "transformers_major": transformers.__version__.split(".")[0],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


MARKER = "coreward-warm-start.json"


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "model.safetensors").is_file()


# The warm start of the default WarmStartConfig, built by `python -m coreward_cli.toy` and shipped
# with the package (4 MB), so a first run copies it instead of training for minutes.
SHIPPED = Path(__file__).with_name("tiny_arith_warm_start")


def shipped_folder(cfg: WarmStartConfig) -> Path | None:
    """The shipped warm start when it is the one `cfg` defines (same fingerprint), else None."""
    if not _complete(SHIPPED):
        return None
    try:
        meta = json.loads((SHIPPED / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return SHIPPED if meta.get("fingerprint") == f"tiny-arith-{fingerprint(cfg)}" else None


def warm_start(
    console: Console | None = None, cfg: WarmStartConfig = WarmStartConfig(), shipped: bool = True
) -> Path:
    """The cached HF folder of the warm-started tiny model; copied from the package when it ships
    this one (`shipped`), else built (a few minutes on a CPU) when missing."""
    console = console or Console(stderr=True)
    root = cache_root()
    final = root / f"tiny-arith-{fingerprint(cfg)}"
    if _complete(final):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{final.name}.lock").touch()
    except OSError as e:
        raise UserError(
            f"cache folder {root} is not writable ({one_line(e)}); set COREWARD_CACHE to a writable folder"
        ) from e
    with _lock(root / f"{final.name}.lock"):
        if _complete(final):  # another process built it while we waited
            return final
        source = shipped_folder(cfg) if shipped else None
        if source is None:
            console.print(
                f"Building the {BUILTIN} warm start (supervised, once; cached in {final})"
            )
            build(cfg, final, console)
        else:
            # replaces an incomplete leftover of an interrupted copy
            write_folder_atomic(final, lambda folder: shutil.copytree(source, folder))
            console.print(f"[dim]{BUILTIN}: the shipped warm start, cached in {final}[/]")
    return final


def build(cfg: WarmStartConfig, folder: Path, console: Console) -> None:
    """Train the warm start and write it, marker last, as `folder` (replacing what is there)."""
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        model, tokenizer, stats = train_warm_start(cfg, progress)
    elapsed = time.perf_counter() - started
    meta = {
        "builtin": BUILTIN,
        "fingerprint": f"tiny-arith-{fingerprint(cfg)}",
        "seconds": round(elapsed, 1),
        **stats,
        "config": asdict(cfg),
    }

    def fill(tmp: Path) -> None:
        _save_quietly(model, tokenizer, tmp)
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")

    write_folder_atomic(folder, fill)
    console.print(
        f"Warm start ready in {elapsed:.1f} s: {stats['steps']} supervised steps, "
        f"greedy accuracy {stats['dev_accuracy']['original']:.1%} (rephrased "
        f"{stats['dev_accuracy']['rephrased']:.1%}) on held-out problems -> {folder}"
    )


def _save_quietly(model, tokenizer, folder: Path) -> None:
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Writing model shards" bar would break our rich output
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


class _lock:
    """An exclusive file lock (fcntl), so racing processes build the warm start once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _lock:
        self.handle = open(self.path, "a+")
        try:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): the atomic rename still keeps the folder whole
            pass
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


if __name__ == "__main__":  # python -m coreward_cli.toy: rebuild the shipped warm start
    build(WarmStartConfig(), SHIPPED, Console(stderr=True))
