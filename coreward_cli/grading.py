"""Grading answers: each benchmark's answer convention, and the grader that extracts and compares.

A `Convention` turns a benchmark's stored reference into the answer a grader compares against,
and puts a model's extracted answer into the same form, so "070" and "70" are one answer. The
`Grader` serves `coreward eval`, the held-out evaluation during training and the built-in toy's
accuracy alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from coreward_plugins.answers import AnswerMatcher, extract_answer
from coreward_plugins.voting import majority_vote

ARITHMETIC = "arithmetic"  # the built-in tiny model's task (toy eval split)

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_ZERO = re.compile(r"^([+-]?\d+)\.0*$")
_INTEGER = re.compile(r"^([+-]?)0*(\d+)$")


def canonical_number(answer: str) -> str:
    """A plain number in one spelling: "1,234" -> "1234", "142.0" -> "142", "070" -> "70".

    Anything that is not a plain number comes back stripped but otherwise unchanged.
    """
    text = answer.strip().strip("$").strip()
    if text.startswith("\\$"):  # a dollar sign as currency, e.g. GSM8K answers written "\$18"
        text = text[2:].strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    match = _DECIMAL_ZERO.match(text)
    if match:
        text = match.group(1)
    match = _INTEGER.match(text)
    if match:
        text = ("-" if match.group(1) == "-" else "") + match.group(2)
    return text


@dataclass(frozen=True)
class Convention:
    """How one benchmark states answers.

    `numeric`: answers are plain numbers, compared after `canonical_number` on both sides.
    `fallbacks`: answer extraction after the last `\\boxed{}` (names understood by
    `coreward_plugins.answers.extract_answer`).
    """

    name: str
    numeric: bool = False
    fallbacks: tuple[str, ...] = ()

    def canonical(self, answer: str | None) -> str | None:
        if answer is None:
            return None
        answer = answer.strip()
        if not answer:
            return None
        return canonical_number(answer) if self.numeric else answer


CONVENTIONS: dict[str, Convention] = {
    "math500": Convention("math500"),
    "math_test": Convention("math_test"),
    "minerva_math": Convention("minerva_math"),
    "olympiadbench": Convention("olympiadbench"),
    "gsm8k": Convention("gsm8k", numeric=True, fallbacks=("gsm8k",)),
    "aime24": Convention("aime24", numeric=True),
    "aime25": Convention("aime25", numeric=True),
    "amc": Convention("amc", numeric=True),
    "amc23": Convention("amc23", numeric=True),
    ARITHMETIC: Convention(
        ARITHMETIC, numeric=True
    ),  # the toy answers in \boxed{}, like the paper's prompt asks
}
LATEX = Convention("latex")  # custom files: answers compared as written


@dataclass
class Grader:
    """Extracts answers in a benchmark's convention and compares them with the matcher.

    `fbox`: read a lone `\\fbox{}` as the answer (the official code scores it as no answer).
    """

    match: str = "math_verify"
    timeout_s: float = 5.0
    fbox: bool = False
    matcher: AnswerMatcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.matcher = AnswerMatcher(self.match, timeout_s=self.timeout_s)

    def extract(self, response: str, convention: Convention) -> str | None:
        fallbacks = (*convention.fallbacks, "fbox") if self.fbox else convention.fallbacks
        return convention.canonical(extract_answer(response, fallbacks=fallbacks))

    def grade(
        self, responses: Sequence[str], reference: str, convention: Convention
    ) -> tuple[list[str | None], list[bool]]:
        answers = [self.extract(r, convention) for r in responses]
        verdicts: dict[str, bool] = {}  # the n answers repeat a lot: compare each distinct one once
        for a in answers:
            if a is not None and a not in verdicts:
                verdicts[a] = bool(self.matcher.equal(a, reference))
        return answers, [a is not None and verdicts[a] for a in answers]

    def majority_correct(self, answers: Sequence[str | None], reference: str) -> bool:
        vote = majority_vote(list(answers), self.matcher)
        return vote.label is not None and bool(self.matcher.equal(vote.label, reference))
