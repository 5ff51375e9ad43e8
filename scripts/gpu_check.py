#!/usr/bin/env python
"""Check a GPU node for coreward's openrlhf engine (the same checks as `coreward doctor`).

    python scripts/gpu_check.py            # versions, GPUs, flash-attn, Ray, a tiny train step and generation
    python scripts/gpu_check.py --quick    # versions and GPU visibility only
    python scripts/gpu_check.py --json

Prints what is wrong and how to fix it; exit status 1 when something must be fixed. Works from a
checkout without installing coreward (it puts the checkout on sys.path).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import coreward_cli  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))

from coreward_cli.commands.doctor import doctor  # noqa: E402

if __name__ == "__main__":
    doctor(prog_name="gpu_check.py")
