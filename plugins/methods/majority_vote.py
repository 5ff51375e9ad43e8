"""`majority_vote`: each group is rewarded by its own majority answer (SRT / TTRL-style self-voting)."""

from __future__ import annotations

from coreward_plugins.batch import Group, Source, View
from coreward_plugins.methods.labelled import VotedMethod


class MajorityVote(VotedMethod):
    name = "majority_vote"
    policy_views = ("original",)

    def label_source(self, group: Group) -> tuple[View, Source]:
        return group.view, "policy"
