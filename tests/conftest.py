"""Shared fixtures. Tests build their tiny models and data themselves; nothing is downloaded."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COREWARD_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def shared_data() -> Path:
    """The real published data laid beside the project (../shared/data); skipped where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent on this machine")
    return SHARED_DATA


@pytest.fixture(scope="module")
def openrlhf_import_stubs():
    """tests/stubs (flash_attn, vllm) first on sys.path for one test module, when the real ones are absent.

    OpenRLHF 0.11.2 imports both at module level; neither installs on a CPU machine. The product
    never imports the stubs: only test modules that ask for this fixture see them.
    """
    stubs = str(ROOT / "tests" / "stubs")
    added = stubs not in sys.path and any(
        importlib.util.find_spec(n) is None for n in ("flash_attn", "vllm")
    )
    if added:
        sys.path.insert(0, stubs)
    yield
    if added:
        sys.path.remove(stubs)
        for name in [
            m
            for m, mod in sys.modules.items()
            if str(getattr(mod, "__file__", "") or "").startswith(stubs)
        ]:
            del sys.modules[name]  # later modules' find_spec("vllm") must not see the stub


@pytest.fixture(scope="session")
def make_toy_folder(tmp_path_factory):
    """`make_toy_folder(seed)`: a freshly initialised toy model with its tokenizer as a plain HF folder
    (built once per seed): the engine's mechanics need no warm start."""
    built: dict[int, str] = {}

    def make(seed: int) -> str:
        if seed not in built:
            from coreward_cli.toy import build_model, build_tokenizer

            folder = tmp_path_factory.mktemp(f"toy-seed{seed}") / "model"
            build_model(seed=seed).save_pretrained(folder)
            build_tokenizer().save_pretrained(folder)
            built[seed] = str(folder)
        return built[seed]

    return make
