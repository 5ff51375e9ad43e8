"""The slowly-updated teacher of Co-rewarding-II/III: an fp32 EMA of the policy and its decay schedule.

Update order (the official code, reference §3.2): at every step the teacher is updated toward the
current policy weights (those that just sampled the student rollouts) BEFORE the teacher samples,
and step 1 updates too. The teacher starts as a copy of the base model, so at step 1 the update mixes
theta_0 with theta_0 and the teacher still equals the base model.

The teacher is kept in fp32 whatever the policy's dtype: with decays up to 0.99999 the per-step
change (1 - decay) * (policy - teacher) is far below bf16's resolution, so a bf16 EMA would stall.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import torch

DecaySchedule = Literal["cosine", "constant"]
NamedTensors = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]


def decay_at(
    step: int, total_steps: int, start: float, end: float, schedule: DecaySchedule = "cosine"
) -> float:
    """The weight kept on the old teacher at `step` (1-based) of a run of `total_steps` steps.

    The official schedule is written on alpha = 1 - decay, the weight on the new policy:
        t = clamp(step - 1, 0, T),  alpha(t) = a_end + 0.5 (a_start - a_end) (1 + cos(pi t / T))
    which is the same cosine written on decays: decay_start at step 1 (0.99 in the official script),
    moving to decay_end (0.99999) at step T + 1; the last trained step T is one notch before it.
    """
    if schedule == "constant":
        return start
    if schedule != "cosine":
        raise ValueError(f"teacher decay schedule must be 'cosine' or 'constant', not {schedule!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, not {total_steps}")
    t = min(max(step - 1, 0), total_steps)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t / total_steps))


def check_decay(decay: float) -> None:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], not {decay}")


@torch.no_grad()
def ema_update_(teacher: torch.Tensor, policy: torch.Tensor, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * policy, in place (fp32 teacher, policy cast)."""
    # lerp = teacher + (1 - decay) * (policy - teacher): the same EMA, and exact where
    # policy == teacher (step 1 leaves the base model bit for bit unchanged)
    teacher.lerp_(policy.to(device=teacher.device, dtype=teacher.dtype), 1.0 - decay)


def _as_dict(named_tensors: NamedTensors) -> dict[str, torch.Tensor]:
    items = named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors
    return dict(items)


def _check_names(expected: Iterable[str], given: Iterable[str], what: str) -> None:
    expected_set, given_set = set(expected), set(given)
    if expected_set == given_set:
        return
    missing = sorted(expected_set - given_set)[:5]
    unexpected = sorted(given_set - expected_set)[:5]
    raise ValueError(
        f"{what}: parameter names do not match the teacher's (missing {missing}, unexpected {unexpected})"
    )


class EmaTeacher:
    """fp32 copies of named tensors (a model's parameters), updated by exponential moving average."""

    def __init__(self, named_tensors: NamedTensors, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._tensors = {
            name: t.detach().to(device=self.device, dtype=torch.float32, copy=True)
            for name, t in _as_dict(named_tensors).items()
        }

    @classmethod
    def from_module(cls, module: torch.nn.Module, device: torch.device | str = "cpu") -> EmaTeacher:
        return cls(module.named_parameters(), device=device)

    def names(self) -> list[str]:
        return list(self._tensors)

    @torch.no_grad()
    def update(self, named_tensors: NamedTensors, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * policy, in fp32, name by name."""
        check_decay(decay)
        policy = _as_dict(named_tensors)
        _check_names(self._tensors, policy, "EMA update")
        for name, teacher in self._tensors.items():
            source = policy[name].detach().to(device=self.device, dtype=torch.float32)
            if source.shape != teacher.shape:
                raise ValueError(
                    f"EMA update: {name} has shape {tuple(source.shape)}, the teacher {tuple(teacher.shape)}"
                )
            ema_update_(teacher, source, decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fp32 teacher tensors (live references, as nn.Module.state_dict gives)."""
        return dict(self._tensors)

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        _check_names(self._tensors, state, "EMA load_state_dict")
        for name, teacher in self._tensors.items():
            if state[name].shape != teacher.shape:
                raise ValueError(
                    f"EMA load_state_dict: {name} has shape {tuple(state[name].shape)}, the teacher {tuple(teacher.shape)}"
                )
            teacher.copy_(state[name].to(dtype=torch.float32))

    @contextmanager
    def swapped_into(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Inside the block `module` carries the teacher's weights (cast to each parameter's dtype).

        On exit, even by exception, the module's own parameters are restored bit for bit. The backup
        lives beside each parameter (same device), so it costs one extra copy of the parameters.
        """
        params = dict(module.named_parameters())
        _check_names(self._tensors, params, "teacher swap")
        for name, param in params.items():
            if param.shape != self._tensors[name].shape:
                raise ValueError(
                    f"teacher swap: {name} has shape {tuple(param.shape)}, the teacher {tuple(self._tensors[name].shape)}"
                )
        backup: dict[str, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for name, param in params.items():
                    backup[name] = param.detach().clone()
                    param.copy_(self._tensors[name].to(device=param.device, dtype=param.dtype))
            yield module
        finally:
            with torch.no_grad():
                for name, saved in backup.items():
                    params[name].copy_(saved)
