"""Majority vote over answer clusters, with its statistics.

The official vote (Co-rewarding `majority_vote`) drops missing and blank answers and returns
`Counter(answers).most_common(1)`: the most frequent answer string, ties going to the one counted
first. Here answers are first grouped by the matcher's key (so under `exact` this is the official vote
exactly), and, when keys do not decide equality (math_verify), distinct keys are merged by comparing
each new key's first answer with every cluster's representative: O(distinct answers x clusters)
comparisons, never O(n^2) over all answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


class Matcher(Protocol):
    def key(self, answer: str) -> str: ...

    def equal(self, a: str | None, b: str | None) -> bool: ...


@dataclass(frozen=True)
class Vote:
    """The outcome of one vote.

    label: the winning cluster's first-seen answer, or None (no valid answer, a tie under tie="none",
    or fewer than min_votes agreeing). count: size of the largest cluster. valid: answers that took
    part (not None, not blank). clusters: number of distinct answers under the matcher. share:
    count / valid (0 when none valid). assignment: per input answer, its cluster index (clusters are
    numbered in first-seen order), None for excluded answers. sizes / representatives: per cluster.
    """

    label: str | None
    count: int
    valid: int
    clusters: int
    share: float
    assignment: tuple[int | None, ...] = ()
    sizes: tuple[int, ...] = ()
    representatives: tuple[str, ...] = ()


def majority_vote(
    answers: Sequence[str | None],
    matcher: Matcher,
    tie: Literal["first", "none"] = "first",
    min_votes: int = 1,
) -> Vote:
    if tie not in ("first", "none"):
        raise ValueError(f"tie must be 'first' or 'none', got {tie!r}")
    keys_decide = bool(getattr(matcher, "keys_decide", False))
    cluster_of_key: dict[str, int] = {}
    representatives: list[str] = []
    sizes: list[int] = []
    assignment: list[int | None] = []
    for answer in answers:
        if not isinstance(answer, str) or not answer.strip():
            assignment.append(None)
            continue
        key = matcher.key(answer)
        cluster = cluster_of_key.get(key)
        if cluster is None and not keys_decide:
            first_equal = getattr(matcher, "first_equal", None)
            if first_equal is not None:  # one batched comparison against every representative
                cluster = first_equal(answer, representatives)
            else:
                cluster = next(
                    (i for i, rep in enumerate(representatives) if matcher.equal(answer, rep)), None
                )
        if cluster is None:
            cluster = len(representatives)
            representatives.append(answer)
            sizes.append(0)
        cluster_of_key[key] = cluster
        sizes[cluster] += 1
        assignment.append(cluster)

    valid = sum(sizes)
    count = max(sizes, default=0)
    winners = [i for i, size in enumerate(sizes) if size == count]
    label: str | None = None
    if valid and count >= min_votes and (tie == "first" or len(winners) == 1):
        label = representatives[winners[0]]  # lowest index = counted first, as Counter.most_common
    return Vote(
        label=label,
        count=count,
        valid=valid,
        clusters=len(representatives),
        share=count / valid if valid else 0.0,
        assignment=tuple(assignment),
        sizes=tuple(sizes),
        representatives=tuple(representatives),
    )
