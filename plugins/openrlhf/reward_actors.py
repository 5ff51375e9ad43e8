"""Scoring a step's rollouts with the recipe's method, spread over a pool of Ray actors.

A voting method labels a problem's groups only from that problem's other groups, so the batch splits
by problem into shards that score independently: each actor runs the same method code the local
engine runs, on whole problems, and the controller merges the rewards back in batch order. The
rewards are exactly those of one `method.score(batch)` call. Metrics are merged as means weighted by
each shard's number of policy groups (exact for per-group means, the common case).

Methods with state across steps (a non-empty `state_dict()`, e.g. the seeded `random` control) score
the whole batch in the controller, so that their sequence does not depend on the sharding; the
controller checkpoints that state with OpenRLHF's client states.
"""

from __future__ import annotations

import json
from typing import Any

from coreward_plugins.batch import MethodResult, RolloutBatch
from coreward_plugins.methods import MethodOptions, get_method


def make_method(name: str, options_json: str):
    options = json.loads(options_json)
    options["extract_fallbacks"] = tuple(options.get("extract_fallbacks", ()))
    return get_method(name)(MethodOptions(**options))


def shard_by_problem(batch: RolloutBatch, shards: int) -> list[list[int]]:
    """Group indices per shard; all groups of a problem land in the same shard, balanced by count."""
    by_problem: dict[str, list[int]] = {}
    for i, g in enumerate(batch.groups):
        by_problem.setdefault(g.problem_id, []).append(i)
    out: list[list[int]] = [[] for _ in range(max(1, min(shards, len(by_problem))))]
    for k, indices in enumerate(by_problem.values()):
        out[k % len(out)].extend(indices)
    return [sorted(s) for s in out if s]


def merge_results(
    batch: RolloutBatch, shards: list[list[int]], results: list[MethodResult]
) -> MethodResult:
    rewards: list[list[float]] = [[] for _ in batch.groups]
    labels: list[str | None] = [None] * len(batch.groups)
    weighted: dict[str, float] = {}
    weights: dict[str, float] = {}
    for indices, result in zip(shards, results):
        for local, i in enumerate(indices):
            rewards[i] = result.rewards[local]
            labels[i] = result.pseudo_labels[local]
        w = float(sum(1 for i in indices if batch.groups[i].source == "policy"))
        for key, value in result.metrics.items():
            weighted[key] = weighted.get(key, 0.0) + w * float(value)
            weights[key] = weights.get(key, 0.0) + w
    metrics = {k: weighted[k] / weights[k] for k in weighted if weights[k] > 0}
    return MethodResult(rewards=rewards, pseudo_labels=labels, metrics=metrics)


class ScoringWorker:
    """One pool member: the recipe's method, scoring the shards it is sent."""

    def __init__(self, name: str, options_json: str) -> None:
        self.method = make_method(name, options_json)

    def ready(self) -> bool:
        return True

    def score(self, batch: RolloutBatch) -> MethodResult:
        return self.method.score(batch)


class RewardPool:
    """`score(batch)` with the method in `size` Ray actors (in-process when size <= 1 or stateful).

    Each actor holds `num_cpus` outside OpenRLHF's placement groups, so a cluster short of CPUs
    never places them; starting and scoring have a deadline that names the cause."""

    def __init__(
        self,
        name: str,
        options_json: str,
        size: int,
        num_cpus: float = 1.0,
        timeout_s: float = 1800.0,
    ) -> None:
        self.local = make_method(name, options_json)
        self.stateful = bool(self.local.state_dict())
        self.timeout_s = timeout_s
        self.actors: list[Any] = []
        if size > 1 and not self.stateful:
            import ray

            remote = ray.remote(num_cpus=num_cpus)(ScoringWorker)
            self.actors = [remote.remote(name, options_json) for _ in range(size)]
            self._wait([a.ready.remote() for a in self.actors], "start")

    def _wait(self, refs: list[Any], what: str) -> list[Any]:
        import ray

        try:
            return ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"coreward: the {len(self.actors)} grading actors did not {what} within "
                f"{self.timeout_s:g} s; each needs 1 free CPU outside the GPU bundles (the plan's "
                f"CPU count): add CPUs to the cluster or lower engine.cluster.reward_actors"
            ) from None

    def score(self, batch: RolloutBatch) -> MethodResult:
        if not self.actors:
            return self.local.score(batch)
        shards = shard_by_problem(batch, len(self.actors))
        refs = [
            actor.score.remote(RolloutBatch([batch.groups[i] for i in indices]))
            for actor, indices in zip(self.actors, shards)
        ]
        return merge_results(batch, shards, self._wait(refs, "score a step"))

    def state_dict(self) -> dict[str, Any]:
        return self.local.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state:
            self.local.load_state_dict(state)
