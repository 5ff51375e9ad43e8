"""A label-free early warning for a collapsing run, step by step.

Label-free rewards fail quietly: the reward keeps rising while the policy settles on confidently
wrong answers (the paper's Fig. 3), or the policy blurs until it no longer answers. This detector
reads only what a run knows without references - agreement share, answer clusters per group,
entropy, response length and no-answer share - and compares each one's recent level (the mean of
the last `window` steps) with the run's own level over its first `baseline_steps`. It never reads
`pseudo_label_accuracy`, `reference_accuracy` or a held-out score. (The reward is not read: its
scale is each method's own, and a collapsing run's reward looks as good as a healthy one's.)

Rules, each scored so that 1.0 is its threshold; `risk` is the largest score:
- blurring: a reward that teaches sharpens the policy (entropy and the number of distinct
  answers per group fall); one that does not, blurs it. Scored as the mean of the entropy's rise
  over `entropy_rise` and the answer clusters' rise over `clusters_rise`.
- answers vanish: the no-answer share climbs `no_answer_rise` above its start;
- length drifts: the mean response length moves by `length_change` of its start, either way;
- entropy collapses: per-token entropy falls to `entropy_floor` of its start;
- lock-in: votes are unanimous (agreement share at least `agreement_ceiling`) while entropy has
  fallen to half its start.
It fires once `risk` has stayed at or above 1 for `patience` consecutive steps, and stays fired.

No torch, Ray or engine import: both engines feed it one metrics row per step.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# What the detector reads, under the local engine's names; OpenRLHF's are mapped onto them.
SIGNALS = (
    "agreement_share",
    "clusters_per_group",
    "entropy",
    "response_length",
    "no_answer_share",
)
ALIASES = {"entropy_loss": "entropy", "rollout/response_length_mean": "response_length"}


def label_free_signals(row: dict[str, Any]) -> dict[str, float]:
    """The detector's signals from a metrics row of either engine (`coreward/` prefix, OpenRLHF
    names); anything else in the row - references above all - is ignored."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = ALIASES.get(key, key.removeprefix("coreward/"))
        if (
            name in SIGNALS
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            out.setdefault(name, float(value))
    return out


@dataclass(frozen=True)
class CollapseSettings:
    baseline_steps: int = 10  # steps 1..N give each signal its starting level
    window: int = 10  # the recent level: mean of the last N steps
    patience: int = 3
    entropy_rise: float = 0.15  # relative to the start
    clusters_rise: float = 0.25  # distinct answers per group
    no_answer_rise: float = 0.10
    length_change: float = 0.25
    entropy_floor: float = 0.2
    agreement_ceiling: float = 0.98


@dataclass
class Assessment:
    step: int
    risk: float  # 0 = nothing unusual, >= 1 = a rule's threshold is crossed
    reasons: list[str]  # the rules at or over threshold, in words
    fired: bool  # the detector has fired (at this step or earlier)


@dataclass
class CollapseDetector:
    settings: CollapseSettings = field(default_factory=CollapseSettings)
    fired_at: int | None = None
    _start: dict[str, list[float]] = field(default_factory=dict)
    _recent: dict[str, deque] = field(default_factory=dict)
    _over: int = 0

    def _baseline(self, name: str) -> float | None:
        values = self._start.get(name)
        if not values or len(values) < self.settings.baseline_steps:
            return None
        return sum(values) / len(values)

    def _level(self, name: str) -> float | None:
        recent = self._recent.get(name)
        if not recent or len(recent) < self.settings.window:
            return None
        return sum(recent) / len(recent)

    def update(self, row: dict[str, Any]) -> Assessment:
        """Take one step's metrics row (either engine's names); say how the run looks now."""
        s = self.settings
        step = int(row.get("step", 0))
        for name, value in label_free_signals(row).items():
            start = self._start.setdefault(name, [])
            if len(start) < s.baseline_steps:
                start.append(value)
            self._recent.setdefault(name, deque(maxlen=s.window)).append(value)
        scores = self._scores()
        risk = max(scores.values(), default=0.0)
        self._over = self._over + 1 if risk >= 1.0 else 0
        if self.fired_at is None and self._over >= s.patience:
            self.fired_at = step
        reasons = [name for name, score in scores.items() if score >= 1.0]
        return Assessment(step, round(risk, 4), reasons, self.fired_at is not None)

    def _scores(self) -> dict[str, float]:
        s = self.settings
        scores: dict[str, float] = {}

        def pair(name: str) -> tuple[float, float] | None:
            base, now = self._baseline(name), self._level(name)
            return None if base is None or now is None else (base, now)

        entropy, clusters = pair("entropy"), pair("clusters_per_group")
        if entropy and clusters and entropy[0] > 0:
            sharper = (entropy[1] / entropy[0] - 1.0) / s.entropy_rise
            scattered = (clusters[1] - clusters[0]) / s.clusters_rise
            scores["blurring (entropy and distinct answers rising)"] = max(
                0.0, (sharper + scattered) / 2
            )
        if p := pair("no_answer_share"):
            scores["answers vanish (no-answer share up)"] = max(0.0, p[1] - p[0]) / s.no_answer_rise
        if (p := pair("response_length")) and p[0] > 0:
            scores["length drifts"] = abs(p[1] / p[0] - 1.0) / s.length_change
        if entropy and entropy[0] > 0:
            fall = max(0.0, 1.0 - entropy[1] / entropy[0])
            scores["entropy collapses"] = fall / (1.0 - s.entropy_floor)
            agreement = self._level("agreement_share")
            if agreement is not None and agreement >= s.agreement_ceiling:
                scores["lock-in (unanimous votes, entropy falling)"] = fall / 0.5
        return scores

    def state_dict(self) -> dict[str, Any]:
        return {
            "fired_at": self.fired_at,
            "start": {k: list(v) for k, v in self._start.items()},
            "recent": {k: list(v) for k, v in self._recent.items()},
            "over": self._over,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fired_at = state["fired_at"]
        self._start = {k: list(v) for k, v in state["start"].items()}
        self._recent = {
            k: deque(v, maxlen=self.settings.window) for k, v in state["recent"].items()
        }
        self._over = state["over"]
