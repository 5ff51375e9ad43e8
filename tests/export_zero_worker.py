"""One DeepSpeed rank for tests/test_export_deepspeed.py (not a test module).

usage: python export_zero_worker.py RANK WORLD PORT STAGE BASE OUT

Trains the HF causal LM in BASE three steps under ZeRO-STAGE on CPU/gloo, then writes what an
OpenRLHF run leaves behind: OUT/ckpt/_actor/global_step3 (DeepSpeed's own save_checkpoint, every
rank its partition) and, on rank 0, OUT/model: the trained weights gathered and saved as an HF
folder with the tokenizer, the reference the export must reproduce.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

rank, world, port, stage = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
base, out = sys.argv[5], Path(sys.argv[6])
os.environ.update(
    RANK=str(rank),
    LOCAL_RANK=str(rank),
    WORLD_SIZE=str(world),
    MASTER_ADDR="127.0.0.1",
    MASTER_PORT=port,
)
torch.set_num_threads(1)

import deepspeed  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

deepspeed.init_distributed("gloo")
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
config = {
    "train_micro_batch_size_per_gpu": 2,
    "gradient_accumulation_steps": 1,
    "optimizer": {
        "type": "AdamW",
        "params": {"lr": 1e-2, "torch_adam": True},
    },  # no fused_adam JIT on CPU
    # threshold 0: ZeRO-3 partitions every parameter, the small ones too
    "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
    "steps_per_print": 10**9,
}
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
generator = torch.Generator().manual_seed(100 + rank)
for _ in range(3):
    ids = torch.randint(4, 260, (2, 16), generator=generator)
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
engine.save_checkpoint(str(out / "ckpt" / "_actor"), tag="global_step3")

with deepspeed.zero.GatheredParameters(list(model.parameters()), enabled=stage == 3):
    if rank == 0:
        model.save_pretrained(out / "model")
        AutoTokenizer.from_pretrained(base).save_pretrained(out / "model")
engine.destroy()
# Both ranks leave together and tear gloo down while Python is whole: without this a rank could
# exit with gloo's worker threads alive and abort in interpreter finalization ("terminate called
# without an active exception", SIGABRT), which failed one CI run after the checkpoint was saved.
torch.distributed.barrier()
torch.distributed.destroy_process_group()
