"""`self_certainty` (Intuitor, Zhao et al. 2025): reward = the response's self-certainty, the mean
over its tokens of KL(U || p) = logsumexp(logits) - mean(logits) - log V, computed by the engine.

Rewards are the raw values, as in Intuitor: GRPO normalises them within each group anyway, so any
shift or scale common to a group would cancel. No answer extraction enters the reward (responses
without an answer are rewarded like any other); answers are extracted only for the metrics.
"""

from __future__ import annotations

from coreward_plugins.methods.scoring import GroupScoredMethod, ScoringContext, token_stats


class SelfCertainty(GroupScoredMethod):
    name = "self_certainty"
    policy_views = ("original",)
    needs_token_stats = True

    def score_group(self, ctx: ScoringContext, index: int) -> tuple[list[float], str | None]:
        return token_stats(ctx.groups[index], "self_certainty", self.name), None
