"""A stand-in for the model behind `coreward rephrase`, for tests of everything around the model.

It answers the official rewrite prompt in the official output format, rewording the question
("In a shop: ..."), except that a question containing "garble" gets no markers and one containing
"shift" gets its last number changed (a rewrite that changed the problem). It answers any other
prompt with the last number of the question in \\boxed{} (no number: no answer).

`install()` makes `coreward_cli.generation.open_backend` return it; run as a script it installs
itself and runs the CLI (for the kill-and-resume test), `CANNED_DELAY` seconds per generate call.
"""

from __future__ import annotations

import os
import re
import sys
import time

from coreward_cli import generation
from coreward_cli.generation import Completion, SamplingConfig
from coreward_cli.prompts import Prompt
from coreward_cli.rephrase import INSTRUCTION

CALLS: list[int] = []  # prompts per generate call


def rewrite(question: str) -> str:
    if "garble" in question:
        return "Sure! Here is a new version of the problem about apples."
    body = question
    if "shift" in question:
        numbers = re.findall(r"\d+", question)
        if numbers:
            last = numbers[-1]
            cut = question.rfind(last)
            body = question[:cut] + str(int(last) + 1) + question[cut + len(last) :]
    return f"### RESULT_START\nORIGINAL:\n{question}\nREWRITE:\nIn a shop: {body}\n### RESULT_END"


def answer(prompt: str) -> str:
    numbers = re.findall(r"\d+", prompt)
    return f"The answer is \\boxed{{{numbers[-1]}}}." if numbers else "I do not know."


class CannedBackend:
    name = "hf"

    def __init__(self) -> None:
        from coreward_cli.toy import build_tokenizer

        self.tokenizer = build_tokenizer()

    def generate(
        self, prompts: list[Prompt], sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        CALLS.append(len(prompts))
        time.sleep(float(os.environ.get("CANNED_DELAY", "0")))
        out = []
        for p in prompts:
            if p.text.startswith(INSTRUCTION):
                text = rewrite(p.text[len(INSTRUCTION) + 1 :])
            else:
                text = answer(p.text)
            out.append([Completion(text, len(text))] * sampling.n)
        return out


def install() -> None:
    generation.open_backend = lambda *args, **kwargs: CannedBackend()


if __name__ == "__main__":
    install()
    from coreward_cli.main import cli

    sys.argv[0] = "coreward"
    cli()
