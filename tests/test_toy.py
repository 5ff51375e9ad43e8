"""The built-in tiny-arith model and task: tokenizer, model, problems, warm start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from coreward_cli import toy
from coreward_cli.prompts import Prompt
from coreward_cli.sampling import sample
from coreward_plugins.answers import extract_answer

TINY = replace(
    toy.WarmStartConfig(), max_steps=3, first_check=2, check_every=1, batch_size=16, threads=1
)
AWKWARD = [
    "23+58=",
    "sum of 23 and 58?",
    "  two  spaces\nnew line\ttab \\boxed{81} {braces} \\frac{1}{2}",
    "héllo wörld ☃ 数学 🙂",
    "",
]


def _save_pair(folder: Path) -> None:
    toy.build_model(0).save_pretrained(folder)
    toy.build_tokenizer().save_pretrained(folder)


def test_tokenizer_reloads_through_autotokenizer_with_identical_ids(tmp_path):
    from transformers import AutoTokenizer

    tok = toy.build_tokenizer()
    _save_pair(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == len(reloaded) == 260
    for text in AWKWARD:
        ids = tok(text).input_ids
        assert reloaded(text).input_ids == ids
        assert len(ids) == len(text.encode("utf-8"))  # one token per byte, no specials added
        assert reloaded.decode(ids) == text
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        assert getattr(reloaded, name) == getattr(tok, name)
    assert reloaded.padding_side == "left"
    batch = reloaded(["1+2=", "sum of 1 and 2?"], padding=True).input_ids
    assert batch[0][0] == tok.pad_token_id and batch[1][0] != tok.pad_token_id


def test_model_is_deterministic_and_reloads_with_identical_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    a, b, other = toy.build_model(0), toy.build_model(0), toy.build_model(1)
    assert 0.9e6 < sum(p.numel() for p in a.parameters()) < 1.2e6
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.model.embed_tokens.weight, other.model.embed_tokens.weight)
    _save_pair(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = toy.build_tokenizer()(AWKWARD[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(a.eval()(**ids).logits, reloaded(**ids).logits)


def test_rephrasings_are_genuinely_different_wordings():
    def words(template: str) -> str:
        return re.sub(r"\{[ab]\}", "", template)

    assert len(toy.REPHRASED_TEMPLATES) >= 2
    assert len({words(t) for t in toy.TEMPLATES}) == len(
        toy.TEMPLATES
    )  # not only the operands swapped
    for t in toy.TEMPLATES:
        assert t.count("{a}") == 1 and t.count("{b}") == 1
    for p in toy.problems("train")[:500] + toy.problems("eval"):
        a, b = (int(x) for x in p.id.split("+"))
        for view in (p.question, p.rephrased):
            assert sorted(int(n) for n in re.findall(r"\d+", view)) == sorted([a, b])
        assert p.question == toy.ORIGINAL_TEMPLATE.format(a=a, b=b)
        assert p.rephrased in {t.format(a=a, b=b) for t in toy.REPHRASED_TEMPLATES}


def test_splits_are_disjoint_complete_and_correct():
    splits = {s: toy.problems(s) for s in ("train", "dev", "eval")}
    ids = {s: {p.id for p in ps} for s, ps in splits.items()}
    assert len(ids["eval"]) == toy.EVAL_SIZE and len(ids["dev"]) == toy.DEV_SIZE
    assert (
        not ids["train"] & ids["eval"]
        and not ids["train"] & ids["dev"]
        and not ids["dev"] & ids["eval"]
    )
    assert sum(len(v) for v in ids.values()) == 100 * 100
    for ps in splits.values():
        for p in ps:
            a, b = re.fullmatch(r"(\d+)\+(\d+)=", p.question).groups()
            assert p.answer == str(int(a) + int(b))
        for t in toy.REPHRASED_TEMPLATES:  # every wording is used in every split
            assert (
                sum(p.rephrased == t.format(**dict(zip("ab", p.id.split("+")))) for p in ps)
                > len(ps) / 4
            )
    assert [p.id for p in toy.problems("eval")] == [p.id for p in splits["eval"]]
    shuffled = toy.problems("eval", seed=3)
    assert [p.id for p in shuffled] != [p.id for p in splits["eval"]]
    assert sorted(p.id for p in shuffled) == sorted(ids["eval"])
    with pytest.raises(ValueError):
        toy.problems("test")


def test_batched_greedy_with_left_padding_matches_one_by_one():
    torch.manual_seed(0)
    model, tok = toy.build_model(3), toy.build_tokenizer()
    prompts = ["1+2=", "sum of 12 and 58?", "add 7 and 99:"]

    def greedy(texts: list[str]) -> list[str]:
        prompts = [Prompt(t, add_special_tokens=True) for t in texts]
        return sample(model, tok, prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=12).texts

    assert greedy(prompts) == [greedy([p])[0] for p in prompts]


def test_small_warm_start_is_deterministic():
    runs = [toy.train_warm_start(TINY) for _ in range(2)]
    assert runs[0][2] == runs[1][2]
    first, second = runs[0][0].state_dict(), runs[1][0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    untrained = toy.build_model(TINY.seed).state_dict()
    assert not all(torch.equal(first[k], untrained[k]) for k in first)


def test_warm_start_folder_is_cached_complete_and_rebuilt_when_stale(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("COREWARD_CACHE", str(tmp_path))
    folder = toy.warm_start(cfg=TINY)
    assert folder.parent == tmp_path and toy.fingerprint(TINY) in folder.name
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        toy.MARKER,
    } <= names
    assert json.loads((folder / toy.MARKER).read_text())["steps"] == TINY.max_steps
    AutoModelForCausalLM.from_pretrained(folder)
    AutoTokenizer.from_pretrained(folder)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert toy.warm_start(cfg=TINY) == folder  # cached: not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert (
        toy.warm_start(cfg=replace(TINY, max_steps=2)) != folder
    )  # other definition, other folder
    (folder / toy.MARKER).unlink()  # an incomplete folder is rebuilt
    assert toy.warm_start(cfg=TINY) == folder and (folder / toy.MARKER).is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_racing_processes_build_the_warm_start_once(tmp_path):
    script = (
        "from dataclasses import replace; from coreward_cli import toy; "
        "print(toy.warm_start(cfg=replace(toy.WarmStartConfig(), max_steps=3, first_check=2, check_every=1, batch_size=16, threads=1)))"
    )
    env = {**__import__("os").environ, "COREWARD_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    builds = sum("Building" in o[1] for o in outs)
    assert builds == 1
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [Path(paths.pop()).name]


def _greedy_accuracy(model, tok, items, view) -> float:
    """Share of problems whose greedy response's last \\boxed{} answer, as written, is the reference."""
    prompts = [Prompt(toy.prompt_of(p, view), add_special_tokens=True) for p in items]
    seqs = sample(model, tok, prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=12)
    return sum(extract_answer(t) == p.answer for t, p in zip(seqs.texts, items)) / len(items)


def _window(folder: Path) -> tuple[float, float]:
    """Greedy accuracy on the eval split, original and rephrased view, checked against the window
    label-free RL needs: about 70 % solved, the second view about as solvable (cross-view votes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    eval_set = toy.problems("eval")
    original = _greedy_accuracy(model, tok, eval_set, "original")
    rephrased = _greedy_accuracy(model, tok, eval_set, "rephrased")
    assert 0.60 <= original <= 0.80, (original, rephrased)
    assert rephrased >= original - 0.15, (original, rephrased)
    return original, rephrased


def test_shipped_warm_start_is_the_default_one_and_lands_in_the_window():
    folder = toy.shipped_folder(toy.WarmStartConfig())
    assert folder is not None, "the default WarmStartConfig changed: run python -m coreward_cli.toy"
    meta = json.loads((folder / toy.MARKER).read_text())
    assert meta["config"] == json.loads(json.dumps(asdict(toy.WarmStartConfig())))
    original, rephrased = _window(folder)
    # the stop check's one-forward accuracy is what greedy decoding gets
    model = __import__("transformers").AutoModelForCausalLM.from_pretrained(folder)
    tok = toy.build_tokenizer()
    for view, greedy in (("original", original), ("rephrased", rephrased)):
        batch = toy.teacher_forced_batch(tok, toy.problems("eval"), view)
        assert toy.answer_accuracy(model, batch) == pytest.approx(greedy, abs=0.01)


def test_first_use_copies_the_shipped_warm_start_instead_of_training(tmp_path, monkeypatch):
    monkeypatch.setenv("COREWARD_CACHE", str(tmp_path))

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the package ships this warm start")

    monkeypatch.setattr(toy, "train_warm_start", no_training)
    folder = toy.warm_start()
    assert folder.parent == tmp_path and toy.fingerprint(toy.WarmStartConfig()) in folder.name
    shipped = toy.shipped_folder(toy.WarmStartConfig())
    for name in ("model.safetensors", toy.MARKER, "tokenizer.json", "config.json"):
        assert (folder / name).read_bytes() == (shipped / name).read_bytes()
    assert toy.warm_start() == folder  # cached from now on


@pytest.mark.slow
def test_a_rebuild_of_the_warm_start_lands_in_the_accuracy_window(tmp_path, monkeypatch, capsys):
    """What `python -m coreward_cli.toy` does, from scratch on this machine's arithmetic."""
    monkeypatch.setenv("COREWARD_CACHE", str(tmp_path))
    folder = toy.warm_start(shipped=False)
    meta = json.loads((folder / toy.MARKER).read_text())
    original, rephrased = _window(folder)
    with capsys.disabled():
        print(
            f"\nwarm start: {meta['seconds']} s, {meta['steps']} steps, dev {meta['dev_accuracy']}, "
            f"eval original {original:.3f}, eval rephrased {rephrased:.3f}"
        )
