"""The teacher shadow on real DeepSpeed ZeRO-2/3 partitions: two ranks, gloo, CPU.

Each configuration trains a tiny model four steps while the coreward ShadowTeacher and a plain
full-model fp32 EMA follow it; the worker (tests/openrlhf_zero_worker.py) reports the differences.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
WORKER = Path(__file__).with_name("openrlhf_zero_worker.py")


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _run_ranks(stage: int, persistence: int, out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(r),
                "2",
                port,
                str(stage),
                str(persistence),
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
# ZeRO-3 runs with stage3_param_persistence_threshold=0: with persistent (never released) parameters,
# DeepSpeed 0.19.6 on CPU/gloo now and then gathers garbage into them (seen in the plain full-model
# reference, outside any coreward code), which would make this test flaky. The forward before the swap
# still leaves parameters cached (prefetch reuse), which is the case the swap must handle: without the
# swap's cache release this test fails (restored_bitwise False).
@pytest.mark.parametrize(("stage", "persistence"), [(2, 0), (3, 0)], ids=["zero2", "zero3"])
def test_teacher_shadow_on_zero_partitions(tmp_path: Path, stage: int, persistence: int) -> None:
    results = _run_ranks(stage, persistence, tmp_path)
    for r in results:
        assert r["fp32_master"], "the EMA should read the optimizer's fp32 master weights"
        assert (
            r["teacher_moved"] > 1e-3
        )  # the student moved away from the teacher: the checks below mean something
        assert (
            r["ema_max_err"] == 0.0
        )  # the shadow equals the full-model fp32 EMA (ZeRO-3: this rank's slice)
        assert r["swap_in_max_err"] == 0.0  # swapped in, the gathered weights are the teacher's
        assert r["restored_bitwise"] is True  # and the student comes back bit for bit
        assert r["ckpt_roundtrip"] is True
        assert r["teacher_forward_err"] == 0.0  # a forward inside the swap is the teacher's
        assert (
            r["student_forward_after_bitwise"] is True
        )  # and the one after it the student's again
    if stage == 2:
        assert [r["holds"] for r in results] == [True, False]  # one full copy, on rank 0 only
    else:
        assert all(r["holds"] for r in results)  # every rank keeps its own partition
