"""One rank of a 2-rank gloo ZeRO-2 teacher swap (tests/test_openrlhf_cluster.py): argv rank, port, out."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from coreward_plugins.openrlhf.teacher import ShadowTeacher


def main(rank: int, port: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 32).to(torch.bfloat16)  # equal on both ranks, as under ZeRO-2
    teacher = ShadowTeacher(model, zero_stage=2, use_fp32_master=False)
    original = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the student moves away from the teacher
    student = [p.detach().clone() for p in model.parameters()]
    with teacher.swapped_in():
        held = teacher.backup_bytes
        swapped = all(torch.equal(p, o) for p, o in zip(model.parameters(), original))
    restored = all(torch.equal(p, s) for p, s in zip(model.parameters(), student))
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"held": held, "swapped": swapped, "restored": restored})
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
