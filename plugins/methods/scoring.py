"""What every method needs while scoring one batch: extracted answers, votes, rewards against a label,
and the metrics common to all methods.

Answers are extracted once per batch (the last \\boxed{} plus the recipe's fallbacks); a blank answer
is no answer (None), as in the official `majority_vote`, which drops None and '' alike. A group's vote
is computed at most once per batch, however many groups it labels.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

from coreward_plugins.answers import AnswerMatcher, extract_answer
from coreward_plugins.batch import Group, MethodResult, RolloutBatch
from coreward_plugins.methods.base import Method, MethodOptions
from coreward_plugins.voting import Vote, majority_vote


def make_matcher(options: MethodOptions) -> AnswerMatcher:
    return AnswerMatcher(options.match, timeout_s=options.match_timeout_s)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass
class ScoringContext:
    """One batch being scored: per-group answers and (lazily) votes, under one matcher."""

    batch: RolloutBatch
    options: MethodOptions
    matcher: AnswerMatcher
    answers: list[list[str | None]] = field(init=False)
    _votes: dict[int, Vote] = field(default_factory=dict, init=False)
    _positions: dict[tuple[str, str, str], list[int]] = field(default_factory=dict, init=False)
    _ranks: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        fallbacks = self.options.extract_fallbacks
        self.answers = [
            [extract_answer(r, fallbacks) for r in g.responses] for g in self.batch.groups
        ]
        for i, g in enumerate(self.batch.groups):
            same = self._positions.setdefault((g.problem_id, g.view, g.source), [])
            self._ranks.append(len(same))
            same.append(i)

    @property
    def groups(self) -> list[Group]:
        return self.batch.groups

    def policy_indices(self) -> list[int]:
        return [i for i, g in enumerate(self.groups) if g.source == "policy"]

    def partner(self, index: int, view: str, source: str) -> int | None:
        """The group of the same problem in `view` sampled by `source`.

        Should a problem occur twice in one batch, the k-th (problem, view, source) group pairs with
        the k-th group of the other key, so each occurrence keeps its own partner.
        """
        key = (self.groups[index].problem_id, view, source)
        candidates = self._positions.get(key, [])
        rank = self._ranks[index]
        return candidates[rank] if rank < len(candidates) else None

    def vote(self, index: int) -> Vote:
        if index not in self._votes:
            self._votes[index] = majority_vote(
                self.answers[index],
                self.matcher,
                tie=self.options.tie,
                min_votes=self.options.min_votes,
            )
        return self._votes[index]

    def matches(self, answers: list[str | None], target: str | None) -> list[bool]:
        """Which answers equal `target` under the matcher; no answer never matches, nor does a None target."""
        if target is None:
            return [False] * len(answers)
        seen: dict[str, bool] = {}  # a group repeats answers: compare each distinct one once
        out = []
        for answer in answers:
            if answer is None:
                out.append(False)
                continue
            if answer not in seen:
                seen[answer] = self.matcher.equal(answer, target)
            out.append(seen[answer])
        return out

    def rewards_against(self, index: int, label: str | None) -> list[float]:
        """Binary rewards of a group against a label: 1 where the answer equals it; all 0 without a label."""
        return [1.0 if hit else 0.0 for hit in self.matches(self.answers[index], label)]

    def common_metrics(self, rewards: list[list[float]]) -> dict[str, float]:
        """Metrics over the trained (policy) groups, whatever the method.

        reward_mean: mean reward over trained responses. no_answer_share: share of them with no
        extracted answer. clusters_per_group: mean number of distinct answers (under the matcher) per
        trained group, a diversity gauge that falls when a policy collapses. reference_accuracy: share
        of trained responses whose answer equals their group's reference (only groups that have one;
        omitted when none has) - the training accuracy that label-free methods never see.
        """
        trained = self.policy_indices()
        flat_rewards = [r for i in trained for r in rewards[i]]
        flat_answers = [a for i in trained for a in self.answers[i]]
        metrics = {
            "reward_mean": mean(flat_rewards),
            "no_answer_share": mean([1.0 if a is None else 0.0 for a in flat_answers]),
            "clusters_per_group": mean([float(self.vote(i).clusters) for i in trained]),
        }
        with_reference = [i for i in trained if self.groups[i].reference is not None]
        if with_reference:
            hits = [
                h
                for i in with_reference
                for h in self.matches(self.answers[i], self.groups[i].reference)
            ]
            metrics["reference_accuracy"] = mean([1.0 if h else 0.0 for h in hits])
        return metrics


class GroupScoredMethod(Method):
    """A method that scores each policy group on its own (given the whole batch as context).

    Teacher groups get an empty reward list and no label. Subclasses give `score_group` and may add
    metrics in `metrics`.
    """

    def __init__(self, options: MethodOptions | None = None) -> None:
        super().__init__(options)
        self._matcher: AnswerMatcher | None = None

    @property
    def matcher(self) -> AnswerMatcher:
        if (
            self._matcher is None
        ):  # built once: a math_verify matcher keeps a worker for its time limit
            self._matcher = make_matcher(self.options)
        return self._matcher

    @abstractmethod
    def score_group(self, ctx: ScoringContext, index: int) -> tuple[list[float], str | None]:
        """Rewards of policy group `index` (one per response) and its pseudo-label (None if none)."""

    def metrics(
        self, ctx: ScoringContext, rewards: list[list[float]], labels: list[str | None]
    ) -> dict[str, float]:
        return ctx.common_metrics(rewards)

    def score(self, batch: RolloutBatch) -> MethodResult:
        ctx = ScoringContext(batch, self.options, self.matcher)
        rewards: list[list[float]] = []
        labels: list[str | None] = []
        for index, group in enumerate(batch.groups):
            if group.source != "policy":
                rewards.append([])
                labels.append(None)
                continue
            group_rewards, label = self.score_group(ctx, index)
            if len(group_rewards) != len(group.responses):
                raise ValueError(
                    f"{self.name}: {len(group_rewards)} rewards for {len(group.responses)} responses"
                )
            rewards.append(group_rewards)
            labels.append(label)
        return MethodResult(rewards, labels, self.metrics(ctx, rewards, labels))


def token_stats(group: Group, stat: str, method: str) -> list[float]:
    """Per-response token statistic the engine filled in (`entropy` or `self_certainty`)."""
    values = getattr(group, stat)
    if values is None or len(values) != len(group.responses):
        have = "none" if values is None else f"{len(values)} values"
        raise ValueError(
            f"{method}: group {group.problem_id!r} needs Group.{stat} for its {len(group.responses)} "
            f"responses ({have}); the engine fills it when Method.needs_token_stats is set"
        )
    return [float(v) for v in values]
