"""The EMA teacher as an fp32 shadow kept where DeepSpeed keeps the policy's parameters.

- ZeRO-0/1/2: every rank holds the full parameters, so one full fp32 copy lives on the holder rank's
  CPU (rank 0): 4 bytes per parameter of host memory, nothing on the GPUs.
- ZeRO-3: each rank holds one partition of every parameter (`param.ds_tensor`), so each rank keeps an
  fp32 copy of its own partition: 4 bytes per parameter / world size, no communication to update.

The update is `coreward_plugins.teacher`'s EMA (teacher <- decay * teacher + (1 - decay) * policy,
as `lerp`, in fp32), fed with the optimizer's fp32 master weights where DeepSpeed exposes them
(`safe_get_full_fp32_param` / `safe_get_local_fp32_param`) and the live parameters otherwise. All
ranks call every method (some steps are collectives).

`swapped_in()` puts the teacher into the live parameters for the duration of a block (a vLLM weight
broadcast, a teacher log-prob pass, an HF save) and restores the student's parameters bit for bit:
ZeRO-2 copies the teacher into rank 0's parameters and broadcasts them to the other ranks, and
restores the same way (rank 0 alone keeps the student's bf16 copy, 2 bytes per parameter); ZeRO-3
writes each rank's partition. ZeRO-3 also caches gathered parameters between forwards (persistent
small ones, and those within the prefetch reuse distance), which would keep serving the weights of
the other side of the swap; `release_gathered` (the engine's `empty_partition_cache`) drops them on
entry and on exit, so every later use gathers from the right partitions. Any parameter still gathered
on entry gets its full teacher tensor all-gathered from the partitions, and its own restored on exit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from coreward_plugins.teacher import check_decay, ema_update_

HOLDER = 0  # the rank holding the ZeRO-0/1/2 shadow


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _is_gathered(param: torch.nn.Parameter) -> bool:
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return getattr(param, "ds_status", None) == ZeroParamStatus.AVAILABLE


class ShadowTeacher:
    def __init__(
        self,
        module: torch.nn.Module,
        zero_stage: int,
        use_fp32_master: bool = True,
        release_gathered: Callable[[], None] | None = None,
    ) -> None:
        if zero_stage == 3 and release_gathered is None:
            raise ValueError(
                "ZeRO-3 needs release_gathered (the DeepSpeed engine's empty_partition_cache)"
            )
        if any(getattr(p, "ds_secondary_tensor", None) is not None for p in module.parameters()):
            # ZeRO++ hierarchical partitions: gathers read the secondary copy, which the swap
            # does not write (it is refreshed only by an optimizer step)
            raise ValueError(
                "the teacher swap does not support ZeRO++ hierarchical partitions (zpg > 1)"
            )
        self.module = module
        self.release_gathered = release_gathered
        self.zero3 = zero_stage == 3
        self.use_fp32_master = use_fp32_master
        self.rank, self.world = _rank(), _world()
        self.holds = self.zero3 or self.rank == HOLDER
        self.shadow: dict[str, torch.Tensor] = {}
        self.backup_bytes = 0  # host bytes this rank holds for a swap in progress
        self._open_swap: AbstractContextManager[None] | None = None
        for name, param in self._params():
            source = self._source(param)
            if self.holds:
                self.shadow[name] = source.detach().to("cpu", torch.float32, copy=True)

    def _params(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.module.named_parameters())

    @torch.no_grad()
    def _source(self, param: torch.nn.Parameter) -> torch.Tensor:
        """The policy weights this rank contributes: the full tensor (ZeRO<3, every rank joins the
        gather) or the local partition (ZeRO-3), fp32 master when available."""
        if self.zero3:
            if self.use_fp32_master:
                from deepspeed.utils import safe_get_local_fp32_param

                master = safe_get_local_fp32_param(param)
                if master is not None:
                    return master.reshape(-1)
            return param.ds_tensor.data.reshape(-1)
        if self.use_fp32_master:
            from deepspeed.utils import safe_get_full_fp32_param

            master = safe_get_full_fp32_param(param)
            if master is not None:
                return master
        return param.data

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * policy, parameter by parameter (all ranks)."""
        check_decay(decay)
        for name, param in self._params():
            source = self._source(param)
            if self.holds:
                ema_update_(self.shadow[name], source.detach(), decay)

    @torch.no_grad()
    def _full_from_partitions(self, name: str, param: torch.nn.Parameter) -> torch.Tensor:
        """ZeRO-3: the whole teacher tensor of a gathered parameter, all-gathered from partitions."""
        part = self.shadow[name].to(param.ds_tensor.device, param.ds_tensor.dtype)
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(parts, part)
        return torch.cat(parts)[: param.ds_numel].view(param.ds_shape)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        params = self._params()
        backup: list[tuple[torch.Tensor, torch.Tensor]] = []  # (live tensor, saved copy)
        if self.zero3:
            self.release_gathered()
        try:
            with torch.no_grad():
                for name, param in params:
                    if self.zero3:
                        target = param.ds_tensor.data
                        backup.append((target, target.detach().to("cpu", copy=True)))
                        target.copy_(self.shadow[name].view_as(target))
                        if _is_gathered(param):
                            full = self._full_from_partitions(name, param)
                            backup.append((param.data, param.data.detach().to("cpu", copy=True)))
                            param.data.copy_(full)
                    else:
                        # ZeRO-0/1/2 parameters are equal on all ranks: one backup, on the
                        # holder, is broadcast back on exit
                        if self.rank == HOLDER:
                            backup.append((param.data, param.data.detach().to("cpu", copy=True)))
                            param.data.copy_(self.shadow[name])
                        if self.world > 1:
                            dist.broadcast(param.data, src=HOLDER)
            self.backup_bytes = sum(saved.numel() * saved.element_size() for _, saved in backup)
            yield
        finally:
            with torch.no_grad():
                for live, saved in backup:
                    live.copy_(saved)
                if not self.zero3 and self.world > 1:
                    for _, param in params:
                        dist.broadcast(param.data, src=HOLDER)
            self.backup_bytes = 0
            if self.zero3:
                self.release_gathered()

    # ---- a swap across calls (the teacher's log-prob pass: in, forwards, out) ----
    def enter_swap(self) -> None:
        if self._open_swap is not None:  # a backup now would save the teacher as the student
            raise RuntimeError("coreward: teacher swap-in while the teacher is already swapped in")
        swap = self.swapped_in()
        swap.__enter__()
        self._open_swap = swap

    def exit_swap(self) -> None:
        swap, self._open_swap = self._open_swap, None
        if swap is not None:
            swap.__exit__(None, None, None)

    # ---- persistence: one file per holder rank, written beside and renamed ----
    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        if self.holds:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"teacher_rank{self.rank if self.zero3 else HOLDER}.pt"
            tmp = path.with_suffix(".pt.tmp")
            torch.save(self.shadow, tmp)
            os.replace(tmp, path)
            if self.rank == HOLDER:
                meta = {"zero3": self.zero3, "world": self.world, "names": len(self.shadow)}
                (directory / "teacher_meta.json").write_text(json.dumps(meta))
        if self.world > 1:
            dist.barrier()

    def load(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        meta = json.loads((directory / "teacher_meta.json").read_text())
        if meta["zero3"] != self.zero3 or (self.zero3 and meta["world"] != self.world):
            raise ValueError(
                f"teacher checkpoint {directory} was saved with zero3={meta['zero3']} on {meta['world']} ranks; "
                f"this run has zero3={self.zero3} on {self.world}"
            )
        if self.holds:
            state = torch.load(
                directory / f"teacher_rank{self.rank if self.zero3 else HOLDER}.pt",
                map_location="cpu",
                weights_only=True,  # a planted pickle in a checkpoint folder must not run code
            )
            if set(state) != set(self.shadow):
                raise ValueError(
                    f"teacher checkpoint {directory}: parameter names differ from the model's"
                )
            for name, tensor in state.items():
                self.shadow[name].copy_(tensor)
