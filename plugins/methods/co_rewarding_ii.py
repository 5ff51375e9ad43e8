"""`co_rewarding_ii` (model side): the policy is rewarded by the majority answer of the EMA teacher's
rollouts for the same prompt (official `co_rewarding_II` reward manager). Only the policy trains."""

from __future__ import annotations

from coreward_plugins.batch import Group, Source, View
from coreward_plugins.methods.labelled import VotedMethod


class CoRewardingII(VotedMethod):
    name = "co_rewarding_ii"
    policy_views = ("original",)
    teacher_views = ("original",)
    needs_teacher = True

    def label_source(self, group: Group) -> tuple[View, Source]:
        return group.view, "teacher"
