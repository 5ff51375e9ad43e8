"""Property-based fuzzing (issue 11): recipes and --set, responses files, and damaged checkpoints.

The property everywhere: a correct result, or a UserError of one line (exit 2); never another
exception, a silent restart, or a file changed outside the output folder.

The default budget is small enough for CI. A long run: COREWARD_FUZZ_EXAMPLES=2000 (cases per
property; the matcher and checkpoint-export properties run a fifth of that, the checkpoint-resume
property, which trains, a twentieth).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from coreward_cli import runlayout
from coreward_cli.engines import local
from coreward_cli.engines.checkpoint import file_digests, newest_resumable
from coreward_cli.errors import UserError
from coreward_cli.evaluate import ResponseKeys, grade_file
from coreward_cli.grading import CONVENTIONS, LATEX, Grader
from coreward_cli.recipe import Recipe
from coreward_cli.resolve import load_recipe, load_recipe_text
from tests.test_resume import toy_folder, write_recipe  # noqa: F401

EXAMPLES = int(os.environ.get("COREWARD_FUZZ_EXAMPLES", "25"))
ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny_cpu.yaml"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


def assert_one_line(exc: UserError) -> None:
    text = str(exc)
    assert text and len(text.splitlines()) == 1 and "Traceback" not in text, text


# ---------------------------------------------------------------- recipes and --set

FIELDS = sorted(
    {
        "model",
        "path",
        "data",
        "train",
        "original",
        "rephrased",
        "eval",
        "method",
        "name",
        "rollout",
        "n",
        "seed",
        "lr",
        "max_steps",
        "engine",
        "kind",
        "output",
        "dir",
        "teacher",
        "decay_start",
        "match",
        "temperature",
        "problems_per_step",
        "epochs",
        "kl_coef",
        "chat_template",
    }
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["builtin:tiny-arith", "co_rewarding_i", "local", "gt", "1e-6", "~", "*a"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)
yaml_noise = st.lists(
    st.sampled_from(
        [
            *"abc:{}[]-!&*|>'\"#%@`,?\n\t 0123456789.eE+",
            "!!binary ",
            "!!python/name:os.system ",
            "\x00",
            "model",
            "seed",
            "<<",
            "\u2028",
        ]
    ),
    max_size=60,
).map("".join)


def check_recipe(text: str, overrides: list[str] = ()) -> None:
    try:
        recipe = load_recipe_text(text, "fuzz.yaml", overrides, warn=lambda message: None)
    except UserError as exc:
        assert_one_line(exc)
    else:
        assert isinstance(recipe, Recipe)


@FUZZ
@given(doc=documents)
def test_fuzz_recipe_documents(doc):
    check_recipe(yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(text=yaml_noise)
def test_fuzz_recipe_text(text):
    check_recipe(text)


@FUZZ
@given(
    path=st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3).map(".".join),
    value=st.one_of(yaml_noise, scalars.map(lambda v: yaml.safe_dump(v).removesuffix("\n...\n"))),
)
def test_fuzz_set_overrides(path, value):
    base = TINY.read_text(encoding="utf-8")
    try:
        load_recipe(TINY, [f"{path}={value}"], warn=lambda message: None)
    except UserError as exc:
        assert_one_line(exc)
    assert TINY.read_text(encoding="utf-8") == base


# ---------------------------------------------------------------- responses files and matchers

json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
answers = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\\boxed{72}", "#### 72", "\\boxed{\\frac{1}{2}}", "0.5", "\\boxed{", "}"]),
)
line_objects = st.fixed_dictionaries(
    {},
    optional={
        "question": json_values,
        "reference": st.one_of(answers, json_values),
        "responses": st.one_of(st.lists(answers, max_size=4), json_values),
        "benchmark": st.one_of(st.sampled_from(sorted(CONVENTIONS)), json_values),
    },
)
lines = st.one_of(
    line_objects.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t),
)


@FUZZ
@given(
    body=st.lists(lines, min_size=1, max_size=4),
    match=st.sampled_from(["exact", "hendrycks", "normalized"]),
)
@example(body=['{"\\u0085":null}'], match="exact")  # a key holding NEL, a line break to splitlines
@example(body=['{"a\\u2028b":1, "responses":["x"]}'], match="exact")
def test_fuzz_responses_lines(body, match):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gens.jsonl"
        path.write_text("\n".join(body) + "\n", encoding="utf-8", errors="surrogatepass")
        out = Path(tmp) / "out"
        try:
            results = grade_file(path, ResponseKeys(), match, None, out)
        except UserError as exc:
            assert_one_line(exc)
            assert not out.exists()
        else:
            assert results["overall"]["questions"] >= 1
            assert {p.name for p in out.iterdir()} == {
                "config.json",
                "samples.jsonl",
                "results.json",
                "results.md",
            }
        assert {p.name for p in Path(tmp).iterdir()} <= {"gens.jsonl", "out"}


@pytest.fixture(scope="module")
def graders() -> dict[str, Grader]:
    return {
        m: Grader(m, timeout_s=2.0) for m in ("exact", "hendrycks", "normalized", "math_verify")
    }


@settings(FUZZ, max_examples=max(5, EXAMPLES // 5))
@given(responses=st.lists(answers, min_size=1, max_size=4), reference=answers)
def test_fuzz_answers_through_all_matchers(graders, responses, reference):
    for match, grader in graders.items():
        convention = random.choice([LATEX, *CONVENTIONS.values()])
        got, correct = grader.grade(responses, reference, convention)
        assert len(got) == len(correct) == len(responses), match
        assert all(isinstance(c, bool) for c in correct)
        assert all(a is None or isinstance(a, str) for a in got)
        if match == "exact":  # exact: right means the extracted answer is the reference as written
            assert all(not c or a == reference for a, c in zip(got, correct))


# ---------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, toy_folder):  # noqa: F811
    root = tmp_path_factory.mktemp("fuzzrun")
    recipe = write_recipe(root, toy_folder, steps=4, kl=0.0)
    local.train(load_recipe(recipe), root / "run", False, Console(quiet=True))
    return recipe, root / "run"


def corrupt(run: Path, data: st.DataObject) -> str:
    """Flip, zero or cut bytes of one checkpoint file; returns what was done."""
    files = sorted(p for p in (run / runlayout.CHECKPOINTS).rglob("*") if p.is_file())
    target = data.draw(st.sampled_from(files))
    raw = bytearray(target.read_bytes())
    how = data.draw(st.sampled_from(["flip", "zero", "truncate", "empty"]))
    if raw and how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
    elif raw and how == "zero":
        start = data.draw(st.integers(0, len(raw) - 1))
        raw[start : start + data.draw(st.integers(1, 2**20))] = b""
        raw[start:start] = bytes(min(2**20, len(raw) - start))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    else:
        raw = bytearray()
    target.write_bytes(bytes(raw))
    return f"{how} {target.relative_to(run)}"


@settings(FUZZ, max_examples=max(3, EXAMPLES // 5))
@given(data=st.data())
def test_fuzz_corrupt_checkpoint_then_pick_and_export(finished_run, data):
    """Whatever bytes change, resume picks a checkpoint whose files all verify, or stops with one
    line; export of a damaged step is refused."""
    from click.testing import CliRunner

    from coreward_cli.main import cli

    _, src = finished_run
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(src, Path(tmp) / "run"))
        what = corrupt(run, data)
        try:
            picked = newest_resumable(run)
        except UserError as exc:
            assert_one_line(exc)
        else:
            assert picked is not None, what
            assert file_digests(picked.folder) == file_digests(src / picked.folder.relative_to(run))
        step = data.draw(st.sampled_from([2, 4]))
        result = CliRunner().invoke(
            cli, ["export", str(run), "--step", str(step), "--out", str(Path(tmp) / "x")]
        )
        assert result.exit_code in (0, 2), (what, result.output)
        if result.exit_code == 2:
            assert len(result.output.strip().splitlines()) == 1, result.output
        else:
            assert not damaged(run, src, step), what


def damaged(run: Path, src: Path, step: int) -> bool:
    """Whether checkpoint `step` of the copy says anything other than the source's: some file's
    bytes differ, beyond a checksums.json that still reads as the same JSON (a flip of whitespace
    into whitespace, or two flips of one byte that cancel, damage nothing)."""
    for path in sorted((run / runlayout.CHECKPOINTS / f"step-{step:06d}").rglob("*")):
        if not path.is_file():
            continue
        got, expected = path.read_bytes(), (src / path.relative_to(run)).read_bytes()
        if got == expected:
            continue
        if path.name == "checksums.json":
            try:
                if json.loads(got) == json.loads(expected):
                    continue
            except ValueError:
                pass
        return True
    return False


@settings(FUZZ, max_examples=max(1, EXAMPLES // 20))
@given(data=st.data())
def test_fuzz_corrupt_checkpoint_then_resume(finished_run, data):
    """The real --resume of a run killed before final/: it finishes from a verified checkpoint or
    exits with one line; it never starts over and never changes an intact checkpoint."""
    recipe, src = finished_run
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(src, Path(tmp) / "run"))
        shutil.rmtree(run / runlayout.FINAL)
        (run / runlayout.SUMMARY).unlink()
        what = corrupt(run, data)
        console = Console(record=True, width=300, file=open(os.devnull, "w"))
        try:
            local.train(load_recipe(recipe), run, True, console)
        except UserError as exc:
            assert_one_line(exc)
            return
        out = console.export_text()
        assert "Resuming" in out and "starting at step 1" not in out, (what, out)
        assert (run / runlayout.FINAL).is_dir()
        assert (
            json.loads((run / runlayout.SUMMARY).read_text())["eval_after"]
            == json.loads((src / runlayout.SUMMARY).read_text())["eval_after"]
        )
