"""One rank of the ZeRO teacher check (run twice by tests/test_openrlhf_teacher.py; not a test module).

usage: python openrlhf_zero_worker.py RANK WORLD PORT STAGE PERSISTENCE OUT_DIR

Trains a tiny model a few DeepSpeed steps on CPU/gloo, keeps the coreward ShadowTeacher beside a
plain full-model fp32 EMA, and writes what it measured to OUT_DIR/rank{RANK}.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

rank, world, port, stage, persistence, out_dir = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    sys.argv[3],
    int(sys.argv[4]),
    int(sys.argv[5]),
    Path(sys.argv[6]),
)
os.environ.update(
    RANK=str(rank),
    LOCAL_RANK=str(rank),
    WORLD_SIZE=str(world),
    MASTER_ADDR="127.0.0.1",
    MASTER_PORT=port,
)
torch.set_num_threads(1)

import deepspeed  # noqa: E402
import torch.distributed as dist  # noqa: E402

from coreward_plugins.openrlhf.teacher import ShadowTeacher  # noqa: E402
from coreward_plugins.teacher import decay_at  # noqa: E402

deepspeed.init_distributed("gloo")
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
)  # 40 + 18 params: odd sizes pad
config = {
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 0.05, "torch_adam": True}},
    "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": persistence},
    "steps_per_print": 10**9,
}
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)


def full_params() -> dict[str, torch.Tensor]:
    out = {}
    for name, p in engine.module.named_parameters():
        with deepspeed.zero.GatheredParameters([p], enabled=stage == 3):
            out[name] = p.data.detach().clone().float()
    return out


teacher = ShadowTeacher(
    engine.module, zero_stage=stage, release_gathered=engine.empty_partition_cache
)
reference = full_params()  # the plain full-model fp32 EMA, starting from the base model
total = 4
for step in range(1, total + 1):
    decay = decay_at(step, total, 0.6, 0.9)  # fast decays so the teacher visibly moves in 4 steps
    teacher.update(decay)
    for name, full in full_params().items():
        reference[name].lerp_(full, 1.0 - decay)
    torch.manual_seed(100 * step + rank)
    loss = engine(torch.randn(4, 7)).pow(2).mean()
    engine.backward(loss)
    engine.step()

result: dict = {"rank": rank, "stage": stage}
first = next(iter(engine.module.parameters()))
if stage == 3:
    result["fp32_master"] = deepspeed.utils.safe_get_local_fp32_param(first) is not None
else:
    result["fp32_master"] = deepspeed.utils.safe_get_full_fp32_param(first) is not None
ema_err = 0.0
for name, shadow in teacher.shadow.items():
    if stage == 3:
        part = shadow.numel()  # DeepSpeed pads the last partition; padding holds no weights
        valid = max(0, min(part, reference[name].numel() - rank * part))
        mine = reference[name].reshape(-1)[rank * part : rank * part + valid]
        err = (shadow[:valid] - mine).abs().max().item() if valid else 0.0
        if err > 0:
            result.setdefault("bad", []).append(
                [name, part, valid, err, shadow[:valid].abs().max().item(), mine.abs().max().item()]
            )
        ema_err = max(ema_err, err)
    else:
        ema_err = max(ema_err, (shadow - reference[name]).abs().max().item())
result["holds"] = teacher.holds
result["ema_max_err"] = ema_err
result["teacher_moved"] = max(
    (reference[n] - p).abs().max().item() for n, p in full_params().items()
)

x = torch.ones(2, 7)
with torch.no_grad():
    out_student = (
        engine.module(x).detach().clone()
    )  # also leaves ZeRO-3 parameters cached, gathered
student = full_params()
student_local = {
    n: (p.ds_tensor.detach().clone() if stage == 3 else p.data.detach().clone())
    for n, p in engine.module.named_parameters()
}
with teacher.swapped_in():
    inside = full_params()
    result["swap_in_max_err"] = max(
        (inside[n] - reference[n]).abs().max().item() for n in reference
    )
    with torch.no_grad():
        out_teacher = engine.module(x).detach().clone()
after = full_params()
with torch.no_grad():
    result["student_forward_after_bitwise"] = torch.equal(engine.module(x), out_student)
result["restored_bitwise"] = all(torch.equal(after[n], student[n]) for n in student) and all(
    torch.equal(p.ds_tensor if stage == 3 else p.data, student_local[n])
    for n, p in engine.module.named_parameters()
)

ckpt = out_dir / "teacher_ckpt"
teacher.save(ckpt)
saved = {n: t.clone() for n, t in teacher.shadow.items()}
teacher.update(0.0)  # teacher := student, so the load below has something to undo
fresh = ShadowTeacher(
    engine.module, zero_stage=stage, release_gathered=engine.empty_partition_cache
)
fresh.load(ckpt)
result["ckpt_roundtrip"] = (
    all(torch.equal(fresh.shadow[n], saved[n]) for n in saved)
    and (fresh.holds == teacher.holds)
    and len(fresh.shadow) == len(saved)
)
expected = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
expected.load_state_dict({n: t for n, t in reference.items()})
with torch.no_grad():
    result["teacher_forward_err"] = (expected(x) - out_teacher).abs().max().item()
(out_dir / f"rank{rank}.json").write_text(json.dumps(result))
dist.barrier()
dist.destroy_process_group()  # before finalization: gloo threads alive at exit can SIGABRT
