"""GPU check of the teacher shadow with bf16 DeepSpeed (one rank, NCCL): not a pytest module.

usage: python tests/openrlhf_gpu_teacher_check.py STAGE      (prints one JSON line; exit 1 on a failed check)

What the CPU test (fp32, gloo) cannot show: with bf16 parameters the EMA must read DeepSpeed's fp32
master weights, the swap must write bf16(teacher) and restore the bf16 student bit for bit.
"""

from __future__ import annotations

import json
import os
import sys

import torch

stage = int(sys.argv[1])
os.environ.update(
    RANK="0",
    LOCAL_RANK="0",
    WORLD_SIZE="1",
    MASTER_ADDR="127.0.0.1",
    MASTER_PORT=str(29600 + stage),
)

import deepspeed  # noqa: E402
from deepspeed.utils import safe_get_full_fp32_param, safe_get_local_fp32_param  # noqa: E402

from coreward_cli.toy import build_model  # noqa: E402
from coreward_plugins.openrlhf.teacher import ShadowTeacher  # noqa: E402
from coreward_plugins.teacher import decay_at  # noqa: E402

deepspeed.init_distributed("nccl")
torch.cuda.set_device(0)
model = build_model(seed=0)
config = {
    "train_micro_batch_size_per_gpu": 4,
    "bf16": {"enabled": True},
    "gradient_clipping": 1.0,
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "torch_adam": True}},
    "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
    "steps_per_print": 10**9,
}
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)


def master(p):
    return (
        (safe_get_local_fp32_param(p) if stage == 3 else safe_get_full_fp32_param(p))
        .detach()
        .float()
        .cpu()
        .reshape(-1)
    )


def live_full():
    out = {}
    for n, p in engine.module.named_parameters():
        with deepspeed.zero.GatheredParameters([p], enabled=stage == 3):
            out[n] = p.data.detach().clone()
    return out


teacher = ShadowTeacher(
    engine.module, zero_stage=stage, release_gathered=engine.empty_partition_cache
)
reference = {n: master(p).clone() for n, p in engine.module.named_parameters()}
ids = torch.randint(4, 200, (4, 20), device="cuda")
for step in range(1, 5):
    decay = decay_at(step, 4, 0.5, 0.9)
    teacher.update(decay)
    for n, p in engine.module.named_parameters():
        reference[n].lerp_(master(p), 1.0 - decay)
    loss = engine(input_ids=ids, labels=ids).loss
    engine.backward(loss)
    engine.step()

r = {"stage": stage, "dtype": str(next(engine.module.parameters()).dtype)}
r["ema_vs_fp32_master_ema"] = max(
    (teacher.shadow[n].reshape(-1) - reference[n]).abs().max().item() for n in reference
)
r["teacher_moved"] = max(
    (reference[n] - master(p)).abs().max().item() for n, p in engine.module.named_parameters()
)
student = live_full()
x = torch.randint(4, 200, (2, 12), device="cuda")
with torch.no_grad():
    logits_student = engine.module(input_ids=x).logits.float()
with teacher.swapped_in():
    inside = live_full()
    r["swap_in_err_vs_bf16_teacher"] = max(
        (
            inside[n].float().cpu().reshape(-1)
            - teacher.shadow[n].reshape(-1)[: inside[n].numel()].to(inside[n].dtype).float()
        )
        .abs()
        .max()
        .item()
        for n in inside
    )
    with torch.no_grad():
        logits_teacher = engine.module(input_ids=x).logits.float()
after = live_full()
r["restored_bitwise"] = all(torch.equal(after[n], student[n]) for n in student)
with torch.no_grad():
    r["student_logits_after_bitwise"] = torch.equal(
        engine.module(input_ids=x).logits.float(), logits_student
    )
r["teacher_logits_differ"] = (logits_teacher - logits_student).abs().max().item()
teacher.save("/tmp/coreward_teacher_ckpt")
fresh = ShadowTeacher(
    engine.module, zero_stage=stage, release_gathered=engine.empty_partition_cache
)
fresh.load("/tmp/coreward_teacher_ckpt")
r["ckpt_roundtrip"] = all(torch.equal(fresh.shadow[n], teacher.shadow[n]) for n in teacher.shadow)
ok = (
    r["ema_vs_fp32_master_ema"] == 0.0
    and r["teacher_moved"] > 0
    and r["swap_in_err_vs_bf16_teacher"] == 0.0
    and r["restored_bitwise"]
    and r["student_logits_after_bitwise"]
    and r["teacher_logits_differ"] > 0
    and r["ckpt_roundtrip"]
)
r["ok"] = bool(ok)
print(json.dumps(r), flush=True)
sys.exit(0 if ok else 1)
