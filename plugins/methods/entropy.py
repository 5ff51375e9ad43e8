"""`entropy` (RENT, Prabhudesai et al. 2025): reward = minus the response's mean token entropy
(computed by the engine from the policy's own distribution).

Rewards are the raw values, as in RENT: GRPO normalises them within each group anyway. No answer
extraction enters the reward; answers are extracted only for the metrics.
"""

from __future__ import annotations

from coreward_plugins.methods.scoring import GroupScoredMethod, ScoringContext, token_stats


class Entropy(GroupScoredMethod):
    name = "entropy"
    policy_views = ("original",)
    needs_token_stats = True

    def score_group(self, ctx: ScoringContext, index: int) -> tuple[list[float], str | None]:
        return [-h for h in token_stats(ctx.groups[index], "entropy", self.name)], None
