"""`hendrycks` is the official grader (verl `math.compute_score`): a hand-checked table where it must
part from `normalized`, every MATH reference graded right against itself, and verdicts identical to
verl's own code (the test extras install verl 0.5.0 --no-deps; its math.py is byte for byte the one in
the official Co-rewarding repository)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreward_cli.grading import CONVENTIONS, Grader
from coreward_cli.rows import read_file
from coreward_plugins.answers import AnswerMatcher, extract_answer
from coreward_plugins.hendrycks import hendrycks_key

MATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "math"

# (answer, reference, official verdict, normalized verdict), each checked by hand against the steps of
# verl's strip_string.
TABLE = [
    # normalized merges these; the official grader does not
    ("1,000", "1000", False, True),
    ("142.0", "142", False, True),
    ("070", "70", False, True),
    ("-0.5", r"-\frac12", False, True),  # only the whole string "0.5" becomes \frac{1}{2}
    ("5.00", "5", False, True),
    ("03/4", r"\frac{3}{4}", False, True),  # a/b -> \frac{a}{b} only for integers printed plainly
    (r"10\text{cm}", "10", False, True),  # a unit is cut only when written "\text{ " with a space
    (
        r"\frac",
        r"\frac ",
        False,
        True,
    ),  # \frac at the end: strip_string raises, raw strings compared
    # both merge these
    ("0.5", r"\frac12", True, True),
    (".5", r"\frac{1}{2}", True, True),
    (r"\dfrac{1}{2}", r"\frac12", True, True),
    (r"\tfrac{3}{2}", r"\frac32", True, True),
    ("x = 5", "5", True, True),  # a left side of at most two characters is dropped
    ("y = 2x+1", "2x+1", True, True),
    ("3/4", r"\frac{3}{4}", True, True),
    ("-3/4", r"\frac{-3}{4}", True, True),
    (r"\sqrt3", r"\sqrt{3}", True, True),
    (r"90^\circ", "90", True, True),
    (r"5\%", "5", True, True),
    (r"\$18", "18", True, True),
    (r"10\text{ cm}", "10", True, True),
    (r"\left(1,2\right)", "(1,2)", True, True),
    ("(1, 2)", "(1,2)", True, True),
    (r"1\!000", "1000", True, True),
    # neither merges these (math_verify's territory)
    ("1,2", "2,1", False, False),
    ("x+1", "1+x", False, False),
    (r"\pi/2", r"\frac{\pi}{2}", False, False),
    (r"\frac{x}{2}", "x/2", False, False),
    (r"a\text{ b}\text{ c}", "a", False, False),  # two "\text{ " units: strip_string raises
]


@pytest.mark.parametrize(("answer", "reference", "official", "normalized"), TABLE)
def test_hand_checked_table(answer: str, reference: str, official: bool, normalized: bool) -> None:
    assert AnswerMatcher("hendrycks").equal(answer, reference) is official
    assert AnswerMatcher("hendrycks").equal(reference, answer) is official
    assert AnswerMatcher("normalized").equal(answer, reference) is normalized


def test_keys_decide_votes() -> None:
    m = AnswerMatcher("hendrycks")
    assert m.keys_decide
    assert m.key(r"\dfrac12") == m.key("0.5") == m.key("1/2 ") != m.key("-0.5")


def _verl() -> ModuleType:
    """verl's math.py loaded on its own (importing the verl package would pull in Ray and torch)."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "verl is not installed (scripts/install_test_deps.sh installs verl 0.5.0 --no-deps)"
        )
    path = Path(spec.submodule_search_locations[0]) / "utils" / "reward_score" / "math.py"
    module_spec = importlib.util.spec_from_file_location("verl_math_oracle", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _math_references(split: str) -> list[str]:
    path = MATH / f"{split}.parquet"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder is not on this machine)")
    return [row["reward_model"]["ground_truth"] for row in read_file(path).rows]


def _official_score(verl: ModuleType, response: str, reference: str) -> float:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # compute_score prints the errors it swallows
        return verl.compute_score(response, reference)


def _our_score(response: str, reference: str, matcher: AnswerMatcher) -> float:
    answer = extract_answer(response)
    return float(answer is not None and matcher.equal(answer, reference))


@pytest.mark.parametrize("split", ["test", "train_original"])
def test_every_math_reference_is_right_against_itself(split: str) -> None:
    verl = _verl()
    grader = Grader("hendrycks")
    wrong = []
    for reference in _math_references(split):
        if not reference.strip():
            continue  # two train rows have a blank reference: nothing is right against it (verl: `\boxed{}` is)
        response = f"Let's see. The answer is $\\boxed{{{reference}}}$."
        _, correct = grader.grade([response], reference.strip(), CONVENTIONS["math_test"])
        if not correct[0] or _official_score(verl, response, reference) != 1.0:
            wrong.append(reference)
    assert not wrong, wrong[:5]


def _variants(reference: str) -> list[str]:
    """The ways a policy writes a reference: what the graders disagree on."""
    return [
        reference,
        reference.replace(r"\frac", r"\dfrac"),
        reference.replace(" ", ""),
        f" {reference} ",
        reference + r"\text{ units}",
        reference.replace("{", "").replace("}", ""),
        reference.replace(r"\\", "\\"),
        "x = " + reference,
        reference + ".0",
        reference.replace(",", ""),
        "0" + reference,
    ]


def test_verdicts_equal_verls_on_math_test_variants() -> None:
    verl = _verl()
    references = _math_references("test")
    matcher = AnswerMatcher("hendrycks")
    disagreements = []
    for i, reference in enumerate(references):
        candidates = [*_variants(reference), references[i - 1]]  # and a different reference
        for answer in candidates:
            response = f"so \\boxed{{{answer}}}"
            ours, theirs = (
                _our_score(response, reference, matcher),
                _official_score(verl, response, reference),
            )
            if ours != theirs:
                disagreements.append((answer, reference, ours, theirs))
    assert not disagreements, disagreements[:5]


LATEX_BITS = st.sampled_from(
    [
        "1", "2", "0", "5", "-", ".", ",", "/", "=", " ", "x", "k", "{", "}", "\n", "\\!", "\\\\",
        "\\frac", "\\dfrac", "tfrac", "\\sqrt", "\\left", "\\right", "(", ")", "^{\\circ}", "^\\circ",
        "\\$", "$", "\\%", "\\text{ ", "\\text{", "cm", "0.5", " .", "{.", "\\boxed ", "\\boxed{",
        "\\fbox{", "\\pi",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    a=st.lists(LATEX_BITS, max_size=8).map("".join),
    b=st.lists(LATEX_BITS, max_size=8).map("".join),
)
def test_fuzzed_verdicts_equal_verls(a: str, b: str) -> None:
    verl = _verl()
    matcher = AnswerMatcher("hendrycks")
    if not hendrycks_key(b).strip():
        return  # a reference that normalises to blank: verl rewards an empty box for it, coreward nothing
    if a.strip() and b.strip():  # a blank answer is no answer here; verl would compare it
        assert matcher.equal(a, b) == verl.is_equiv(a, b)
    response = "steps " + a
    if b.strip():
        assert _our_score(response, b, matcher) == _official_score(verl, response, b)
