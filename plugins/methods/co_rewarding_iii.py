"""`co_rewarding_iii` (both sides combined, the authors' fork): policy and EMA teacher sample both
views; the policy's original group is rewarded by the teacher's majority on the rephrased view, and
the policy's rephrased group by the teacher's majority on the original view."""

from __future__ import annotations

from coreward_plugins.batch import Group, Source, View
from coreward_plugins.methods.labelled import VotedMethod, other_view


class CoRewardingIII(VotedMethod):
    name = "co_rewarding_iii"
    policy_views = ("original", "rephrased")
    teacher_views = ("original", "rephrased")
    needs_teacher = True

    def label_source(self, group: Group) -> tuple[View, Source]:
        return other_view(group.view), "teacher"
