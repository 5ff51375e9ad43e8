"""The prompt file the launcher writes and the label every sample carries through OpenRLHF.

One JSONL row per problem: `prompt` (a chat message list, or a string when the recipe uses no chat
template) and `label`, a JSON string (strings pass through OpenRLHF's datasets, vLLM actors and
`Experience.labels` unchanged) holding the problem id, the view this prompt shows, the reference
answer (read for metrics and the per-sample reference score only) and the rephrased prompt, which the
controller renders itself when it samples the second view.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class Label:
    id: str
    view: str = "original"
    reference: str | None = None
    rephrased: Prompt | None = None

    def encode(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    def as_view(self, view: str) -> Label:
        return replace(self, view=view)


def decode_label(raw: Any) -> Label:
    """The label of an OpenRLHF sample; raises ValueError on anything else (a foreign prompt file)."""
    data = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(data, dict) or "id" not in data:
        raise ValueError(f"not a coreward label: {str(raw)[:80]!r}")
    return Label(
        id=str(data["id"]),
        view=data.get("view", "original"),
        reference=data.get("reference"),
        rephrased=data.get("rephrased"),
    )


def make_prompt(question: str, system_prompt: str | None, chat_template: bool) -> Prompt:
    """The `prompt` value for a question (the same text the local engine builds)."""
    if chat_template:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return messages + [{"role": "user", "content": question}]
    return f"{system_prompt}\n{question}" if system_prompt else question


def make_row(
    problem_id: str,
    question: str,
    rephrased: str | None,
    reference: str | None,
    system_prompt: str | None,
    chat_template: bool,
) -> dict[str, Any]:
    label = Label(
        id=problem_id,
        reference=reference,
        rephrased=make_prompt(rephrased, system_prompt, chat_template)
        if rephrased is not None
        else None,
    )
    return {"prompt": make_prompt(question, system_prompt, chat_template), "label": label.encode()}


def render(
    prompt: Prompt,
    apply_chat_template: Callable[..., str] | None,
    input_template: str | None = None,
) -> str:
    """The text OpenRLHF's PromptDataset makes of a `prompt` value (its `preprocess_data`)."""
    from openrlhf.datasets.prompts_dataset import preprocess_data

    text, _ = preprocess_data(
        {"prompt": prompt}, input_template, "prompt", None, apply_chat_template
    )
    return text
