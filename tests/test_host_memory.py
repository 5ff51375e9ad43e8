"""keep_freed_memory: a step's alloc/free cycle stops faulting in fresh pages, and the engine and the
eval backend turn it on. Measured in fresh interpreters: the setting is process-wide and one-way."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The toy's decoding of a step's 64 rows, as the engine runs it: with glibc's defaults each call
# faults in 200 to 1,300 fresh pages (its activations and logits keep crossing malloc's mmap and
# trim thresholds); with the thresholds set, none.
CYCLE = """
import json, resource, torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer
from coreward_cli import toy
from coreward_cli.host_memory import keep_freed_memory
from coreward_cli.prompts import Prompt
from coreward_cli.sampling import sample

torch.set_num_threads(1)
path = toy.warm_start(Console(quiet=True))
model = AutoModelForCausalLM.from_pretrained(path).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
prompts = [Prompt(toy.prompt_of(p, "original"), True) for p in toy.problems("train", seed=0)[:8]]

def faults_per_call():
    def call():
        sample(model, tokenizer, prompts, n=8, temperature=0.6, top_p=1.0, max_new_tokens=12)
    call()
    call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5

default = faults_per_call()
applied = keep_freed_memory()
print(json.dumps({"default": default, "applied": applied, "kept": faults_per_call(),
                  "again": keep_freed_memory()}))
"""

glibc = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)


def run_python(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_memory_is_reused_without_page_faults():
    result = run_python(CYCLE)
    assert result["applied"] and result["again"]
    assert result["default"] > 100, result  # the baseline really faults
    assert result["kept"] < result["default"] / 10, result


@glibc
def test_the_local_engine_and_the_eval_backend_keep_freed_memory():
    common = """
import json, sys, tempfile
from pathlib import Path
from rich.console import Console
from coreward_cli import host_memory
from coreward_cli.toy import warm_start
out = {"at_import": host_memory._applied}
"""
    backend = """
from coreward_cli.generation import HfBackend
from coreward_cli.models import model_source
HfBackend(model_source(str(warm_start(Console(quiet=True)))), device="cpu")
"""
    engine = f"""
from coreward_cli.engines.local import LocalTrainer
from coreward_cli.resolve import load_recipe
recipe = load_recipe(Path({str(ROOT / "recipes" / "tiny_cpu.yaml")!r}))
LocalTrainer(recipe, Path(tempfile.mkdtemp()) / "run", Console(quiet=True), None)
"""
    done = """
out["after"] = host_memory._applied
print(json.dumps(out))
"""
    for start in (backend, engine):
        assert run_python(common + start + done) == {"at_import": False, "after": True}
