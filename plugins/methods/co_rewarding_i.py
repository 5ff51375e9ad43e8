"""`co_rewarding_i` (data side): original and rephrased questions cross-label each other.

The original view's group is rewarded by the majority answer of the rephrased view's group of the
same problem, and vice versa (paper Eq. 7-8, official `CoRewardManager`). Both views are trained on.
"""

from __future__ import annotations

from coreward_plugins.batch import Group, Source, View
from coreward_plugins.methods.labelled import VotedMethod, other_view


class CoRewardingI(VotedMethod):
    name = "co_rewarding_i"
    policy_views = ("original", "rephrased")

    def label_source(self, group: Group) -> tuple[View, Source]:
        return other_view(group.view), "policy"
