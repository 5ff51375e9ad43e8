from setuptools import setup

setup(
    name="coreward",
    version="0.1.0",
    description="Label-free RL for LLM reasoning: Co-rewarding (arXiv 2508.00410) and its baselines",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "coreward_cli",
        "coreward_cli.commands",
        "coreward_cli.engines",
        "coreward_plugins",
        "coreward_plugins.methods",
        "coreward_plugins.openrlhf",
        "coreward_cli.recipes",  # the shipped recipes, so `coreward run tiny_cpu` works from a wheel
    ],
    package_dir={"coreward_plugins": "plugins", "coreward_cli.recipes": "recipes"},
    # the shipped recipes, and the built-in tiny model's warm start (4 MB; `python -m coreward_cli.toy`
    # rebuilds it)
    package_data={
        "coreward_cli.recipes": ["*.yaml"],
        "coreward_cli": ["tiny_arith_warm_start/*"],
    },
    install_requires=[
        "torch",  # install torch==2.13.0 first on CPU machines (see README)
        "transformers>=4.51",
        "safetensors",
        "numpy",
        "pyarrow",  # parquet datasets (the published MATH/DAPO/OpenRS layouts)
        "click>=8",
        "rich>=13",
        "pyyaml>=6",
        "math-verify[antlr4_13_2]>=0.7",
        "matplotlib>=3.8",  # `coreward report` figures
    ],
    extras_require={
        # what the CPU tests need beside the core; OpenRLHF itself goes in with --no-deps
        # (scripts/install_test_deps.sh): its full dependency set needs a GPU (flash-attn, vLLM)
        "test": [
            "pytest>=8",
            "pytest-timeout",
            "hypothesis>=6",  # the fuzz tests (tests/test_fuzz.py, tests/test_equivalence_fuzz.py)
            "ruff==0.17.6",  # lint and format (ruff.toml); .ci/run checks both
            "vulture==2.16",  # dead code (vulture_allowlist.py)
            "tensorboard",
            "ray[default]==2.55.0",
            "datasets",
            "peft",
            "torchdata",
            "pylatexenc",
            "gguf",
        ],
        "cluster": [
            "openrlhf==0.11.2",
            "ray[default]==2.55.0",
            "deepspeed==0.19.6",
            "vllm==0.29.0",
        ],
    },
    entry_points={"console_scripts": ["coreward=coreward_cli.main:cli"]},
)
