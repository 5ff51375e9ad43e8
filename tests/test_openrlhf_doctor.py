"""`coreward doctor` / scripts/gpu_check.py on a machine without a GPU: a clear report, no crash."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from coreward_cli.commands import doctor as doctor_module

ROOT = Path(__file__).resolve().parents[1]


def test_doctor_without_gpu_reports_and_skips(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(doctor_module.doctor, ["--json"])
    assert result.exit_code == 1  # something must be fixed: there is no GPU
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["GPU"]["status"] == "fail" and "no CUDA GPU" in checks["GPU"]["detail"]
    assert "GPU node" in checks["GPU"]["fix"]
    for name in ("flash-attn kernel", "Ray GPUs", "tiny training step", "tiny generation"):
        assert checks[name]["status"] == "skip"
    assert set(doctor_module.PINS) <= {n.removeprefix("version ") for n in checks}


def test_version_check_names_the_fix(monkeypatch) -> None:
    versions = {"torch": "2.13.0+cu128", "openrlhf": "0.11.1", "ray": "2.55.0"}

    def fake_version(dist: str) -> str:
        if dist not in versions:
            raise doctor_module.metadata.PackageNotFoundError(dist)
        return versions[dist]

    monkeypatch.setattr(doctor_module.metadata, "version", fake_version)
    found = {c.name: c for c in doctor_module.check_versions()}
    assert found["version torch"].status == "ok"  # local build tags do not matter
    assert (
        found["version openrlhf"].status == "fail"
        and found["version openrlhf"].fix == "pip install 'openrlhf==0.11.2'"
    )
    assert (
        found["version vllm"].status == "fail" and "not installed" in found["version vllm"].detail
    )
    assert found["version ray"].status == "ok"


def test_gpu_check_script_runs_here() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gpu_check.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, whatever the machine
    )
    assert proc.returncode == 1, proc.stderr[-2000:]  # the missing GPU must be fixed
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    gpu_work = ["flash-attn kernel", "Ray GPUs", "tiny training step", "tiny generation"]
    assert list(checks) == [f"version {d}" for d in doctor_module.PINS] + ["GPU", *gpu_work]
    assert checks["GPU"]["status"] == "fail"
    assert checks["GPU"]["detail"].startswith("no CUDA GPU visible")
    assert checks["GPU"]["detail"].endswith("CUDA_VISIBLE_DEVICES=)")
    for name in gpu_work:
        assert checks[name] == {"name": name, "status": "skip", "detail": "no GPU", "fix": ""}
    if importlib.util.find_spec("vllm") is None:  # as on the CPU test machines
        assert checks["version vllm"] == {
            "name": "version vllm",
            "status": "fail",
            "detail": "not installed (want 0.29.0: openrlhf[vllm] 0.11.2)",
            "fix": "pip install 'vllm==0.29.0'",
        }
