"""The per-sample reward file given to OpenRLHF as `--reward.remote_url`.

OpenRLHF 0.11.2 calls `reward_func` once per generated sample (batch size 1), inside every vLLM
Ray actor, through `asyncio.to_thread`, so possibly from several threads at once. It cannot see a
prompt's other samples, so no label-free reward can be computed here: the controller relabels the
whole step later (`trainer.py`). What this file gives is the reference-answer score (1 when the
response's answer equals the problem's reference, else 0; 0 when there is no reference). It is
what OpenRLHF's in-training evaluation reports as pass@1, it lets OpenRLHF skip creating a reward
model group, and the controller logs it beside the pseudo-rewards.

It never raises: OpenRLHF swallows an exception here and later fails with an unrelated
"reward_model_group is required" error. Answers are compared as the recipe grades held-out sets
(`COREWARD_MATCH` = `data.eval_match`; `COREWARD_EXTRACT_FALLBACKS`, `COREWARD_MATCH_TIMEOUT_S` from
its method section, in the job's environment); the matcher bounds every comparison in time from
any thread.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch

logger = logging.getLogger("coreward.reward_func")
_lock = threading.Lock()
_matcher = None


def _get_matcher():
    global _matcher
    with _lock:
        if _matcher is None:
            from coreward_plugins.answers import AnswerMatcher

            _matcher = AnswerMatcher(
                os.environ.get("COREWARD_MATCH", "exact"),
                timeout_s=float(os.environ.get("COREWARD_MATCH_TIMEOUT_S", "5")),
            )
        return _matcher


def _fallbacks() -> tuple[str, ...]:
    raw = os.environ.get("COREWARD_EXTRACT_FALLBACKS", "")
    return tuple(f for f in raw.split(",") if f)


def response_of(query: str, prompt: str) -> str:
    """The generated part of OpenRLHF's `query` (prompt + response, decoded with special tokens)."""
    return query[len(prompt) :] if prompt and query.startswith(prompt) else query


def reference_score(query: str, prompt: str, label: Any) -> float:
    """1.0 when the response's answer equals the label's reference answer, else 0.0. Never raises."""
    try:
        from coreward_plugins.answers import extract_answer
        from coreward_plugins.openrlhf.rows import decode_label

        reference = decode_label(label).reference
        if reference is None:
            return 0.0
        answer = extract_answer(response_of(query, prompt), _fallbacks())
        if answer is None:
            return 0.0
        return 1.0 if _get_matcher().equal(answer, reference) else 0.0
    except Exception:
        logger.exception("coreward reward_func: scoring one sample failed; it scores 0")
        return 0.0


def reward_func(
    queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's reward-function contract: rewards, scores and extra logs, one per sample."""
    try:
        scores = [reference_score(q, p, lab) for q, p, lab in zip(queries, prompts, labels)]
    except Exception:
        logger.exception("coreward reward_func: bad inputs; scoring 0")
        scores = [0.0] * len(queries)
    values = torch.tensor(scores, dtype=torch.float32)
    return {
        "rewards": values,
        "scores": values.clone(),
        "extra_logs": {"coreward_reference_score": values.clone()},
    }
