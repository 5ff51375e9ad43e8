"""`gt`: reward against the reference answer (RLVR, the supervised upper bound)."""

from __future__ import annotations

from coreward_plugins.methods.labelled import LabelledMethod
from coreward_plugins.methods.scoring import ScoringContext


class GroundTruth(LabelledMethod):
    """Reward 1 where the extracted answer equals the group's reference under the matcher, else 0.

    The official GT baseline compares with verl's Hendrycks `is_equiv` (string normalisation):
    `match: hendrycks`, this method's default; `normalized` and `math_verify` are looser.
    """

    name = "gt"
    policy_views = ("original",)

    def pseudo_label(self, ctx: ScoringContext, index: int) -> str | None:
        group = ctx.groups[index]
        if group.reference is None:
            raise ValueError(
                f"gt: problem {group.problem_id!r} has no reference answer; gt needs one for every problem"
            )
        return group.reference
