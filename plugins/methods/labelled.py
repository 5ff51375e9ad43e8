"""Methods that reward agreement with a pseudo-label: the label of a trained group comes from somewhere
(the reference, or the majority vote of some group of the batch) and each response gets 1 if its answer
equals the label, else 0.

Shared rules (the official reward managers, reference §2.4/§3.2): binary reward; a response with no
answer is never rewarded and never votes; an empty label (no voting answers, a tie under tie="none",
or fewer than min_votes agreeing answers) gives the whole group zeros; teacher groups are never trained
on and get an empty reward list. References are read only for metrics, except by `gt`.
"""

from __future__ import annotations

from abc import abstractmethod

from coreward_plugins.batch import Group, Source, View
from coreward_plugins.methods.scoring import GroupScoredMethod, ScoringContext, mean


class LabelledMethod(GroupScoredMethod):
    """Scores every policy group against the label `pseudo_label` gives it."""

    @abstractmethod
    def pseudo_label(self, ctx: ScoringContext, index: int) -> str | None:
        """The label of policy group `index`, or None when there is none (the group then gets zeros)."""

    def voting_groups(self, ctx: ScoringContext) -> list[int]:
        """Groups whose vote produced labels this batch (for the agreement metric); none by default."""
        return []

    def score_group(self, ctx: ScoringContext, index: int) -> tuple[list[float], str | None]:
        label = self.pseudo_label(ctx, index)
        return ctx.rewards_against(index, label), label

    def metrics(
        self, ctx: ScoringContext, rewards: list[list[float]], labels: list[str | None]
    ) -> dict[str, float]:
        """The common metrics, plus: label_rate (share of trained groups with a label),
        pseudo_label_accuracy (label equals the group's reference, over trained groups having both;
        omitted when none has), agreement_share (mean share of the voting answers that agree with the
        winner, over the groups that voted and had at least one answer; omitted when none had)."""
        metrics = ctx.common_metrics(rewards)
        trained = ctx.policy_indices()
        metrics["label_rate"] = mean([1.0 if labels[i] is not None else 0.0 for i in trained])
        judged = [
            i for i in trained if labels[i] is not None and ctx.groups[i].reference is not None
        ]
        if judged:
            hits = [ctx.matches([labels[i]], ctx.groups[i].reference)[0] for i in judged]
            metrics["pseudo_label_accuracy"] = mean([1.0 if h else 0.0 for h in hits])
        votes = [ctx.vote(i) for i in self.voting_groups(ctx)]
        votes = [v for v in votes if v.valid > 0]
        if votes:
            metrics["agreement_share"] = mean([v.share for v in votes])
        return metrics


class VotedMethod(LabelledMethod):
    """The label of a trained group is the majority answer of another group of the same problem:
    which one is `label_source` (its view and who sampled it)."""

    @abstractmethod
    def label_source(self, group: Group) -> tuple[View, Source]:
        """(view, source) of the group whose majority labels `group`."""

    def _source_index(self, ctx: ScoringContext, index: int) -> int | None:
        group = ctx.groups[index]
        view, source = self.label_source(group)
        return ctx.partner(index, view, source)

    def pseudo_label(self, ctx: ScoringContext, index: int) -> str | None:
        source = self._source_index(ctx, index)
        if (
            source is None
        ):  # the engine sampled too little: scoring on would silently train on zeros
            group = ctx.groups[index]
            view, who = self.label_source(group)
            raise ValueError(
                f"{self.name}: problem {group.problem_id!r} ({group.view}) has no {who} group in the "
                f"{view} view to take its label from; sample the views in policy_views/teacher_views"
            )
        return ctx.vote(source).label

    def voting_groups(self, ctx: ScoringContext) -> list[int]:
        found = {self._source_index(ctx, i) for i in ctx.policy_indices()}
        return sorted(i for i in found if i is not None)


def other_view(view: View) -> View:
    return "rephrased" if view == "original" else "original"
