"""The launch plan against OpenRLHF 0.11.2's own argument parser (taken from the installed module).

`flash_attn` and `vllm` are replaced by the import stubs in tests/stubs (test only) so that
`openrlhf.cli.train_ppo_ray` imports on CPU; its parser and validation are OpenRLHF's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("openrlhf")
pytestmark = pytest.mark.usefixtures("openrlhf_import_stubs")

from coreward_cli.engines.openrlhf import build_plan  # noqa: E402
from coreward_cli.errors import UserError  # noqa: E402
from coreward_cli.resolve import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GPU_RECIPES = sorted(ROOT.glob("recipes/qwen3b_*.yaml"))


@pytest.fixture(scope="module")
def parse():
    from coreward_plugins.openrlhf.cli_args import parse_args

    return parse_args


def test_there_are_gpu_recipes() -> None:
    assert GPU_RECIPES, "recipes/qwen3b_*.yaml are the paper's GPU recipes"


@pytest.mark.parametrize("path", GPU_RECIPES, ids=[p.stem for p in GPU_RECIPES])
def test_every_gpu_recipe_parses_with_openrlhf(path: Path, tmp_path: Path, parse) -> None:
    recipe = load_recipe(path)
    assert recipe.engine.kind == "openrlhf"
    plan = build_plan(recipe, tmp_path / "run")
    args = parse(plan.flags)  # raises SystemExit(2) on any flag OpenRLHF 0.11.2 does not accept
    views = 2 if recipe.method.name in ("co_rewarding_i", "co_rewarding_iii") else 1
    per_step = recipe.train.problems_per_step * views
    assert args.rollout.batch_size == per_step
    assert args.train.batch_size == per_step * recipe.rollout.n  # one optimizer step per RL step
    assert args.train.max_epochs == 1 and args.train.num_episodes == recipe.train.epochs
    assert args.rollout.n_samples_per_prompt == recipe.rollout.n
    assert args.algo.advantage.estimator == "group_norm"
    assert args.reward.remote_url == [
        "coreward_plugins/openrlhf/reward_func.py"
    ]  # OpenRLHF split it
    assert args.coreward.method == recipe.method.name
    assert args.actor.model_name_or_path == recipe.model.path
    assert args.data.prompt_dataset == str((tmp_path / "run" / "data" / "train.jsonl").resolve())
    assert args.ckpt.path.endswith("/run/ckpt") and args.ckpt.output_dir.endswith("/run/model")
    assert not args.train.enable_ema  # OpenRLHF's bf16 EMA is not the teacher
    assert not args.algo.dynamic_filtering_enable
    if recipe.method.name in ("co_rewarding_ii", "co_rewarding_iii"):
        assert args.coreward.teacher_views != "none"
        assert args.coreward.teacher.decay_start == recipe.teacher.decay_start
        assert args.coreward.kl_target == recipe.train.kl_target
    # the whole plan is JSON (plan.json)
    json.dumps(plan.to_dict())


def test_paper_config_in_dry_run_json(tmp_path: Path) -> None:
    """`coreward run recipes/qwen3b_math.yaml --dry-run --json` shows the paper's Co-rewarding-I run."""
    from coreward_cli.main import cli

    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(ROOT / "recipes/qwen3b_math.yaml"),
            "--dry-run",
            "--json",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    plan = out["plan"]
    flags = plan["flags"]

    def value(flag: str) -> str:
        return flags[flags.index(f"--{flag}") + 1]

    s = plan["schedule"]
    assert (s["problems_per_step"], s["prompts_per_step"], s["samples_per_step"]) == (
        128,
        256,
        2048,
    )
    assert value("rollout.batch_size") == "256" and value("rollout.n_samples_per_prompt") == "8"
    assert float(value("rollout.temperature")) == 1.0
    assert value("rollout.max_new_tokens") == "3072"
    assert (
        out["recipe"]["rollout"]["max_prompt_tokens"] == 512
        and value("coreward.max_prompt_tokens") == "512"
    )
    assert value("data.max_len") == str(512 + 3072)
    assert float(value("actor.adam.lr")) == 3e-6 and float(value("actor.lr_warmup_ratio")) == 0.1
    assert (
        value("actor.lr_scheduler") == "cosine_with_min_lr"
        and float(value("actor.min_lr_ratio")) == 0.0
    )
    assert "--algo.kl.use_loss" in flags and value("algo.kl.estimator") == "k3"
    assert s["kl"] == {
        "coef": 0.005,
        "flag_coef": 0.01,
        "estimator": "k3",
        "target": "initial",
    }  # 2 views summed
    assert value("coreward.kl_target") == "initial"
    assert float(value("actor.eps_clip")) == 0.2
    assert (
        value("train.num_episodes") == "3"
        and s["epochs"] == 3
        and s["optimizer_steps_per_rl_step"] == 1
    )
    assert value("algo.advantage.estimator") == "group_norm"
    assert s["advantages"].startswith("group-normalised")
    assert value("coreward.view_loss") == "sum"
    assert plan["resources"]["total_gpus"] == 4 and plan["resources"]["colocate"] is True
    assert plan["entrypoint"] == ["python", "-m", "coreward_plugins.openrlhf.entry"]
    assert plan["runtime_env"]["working_dir"].endswith("/run/job")
    # rewards: the method's exact votes; reference scores (OpenRLHF's held-out pass@1): the eval grading
    assert json.loads(value("coreward.method_options"))["match"] == "exact"
    assert plan["runtime_env"]["env_vars"]["COREWARD_MATCH"] == "hendrycks"


def test_steps_with_known_problem_count(tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes/qwen3b_math.yaml")
    plan = build_plan(recipe, tmp_path, problems=7500)
    assert (
        plan.schedule["rl_steps_per_epoch"] == 58 and plan.schedule["rl_steps"] == 174
    )  # the paper's 174


def test_plan_rejects_impossible_resources(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="colocate"):  # OpenRLHF asserts it: resolve() refuses it
        load_recipe(ROOT / "recipes/qwen3b_math.yaml", ["engine.cluster.vllm_engines=2"])
    with pytest.raises(UserError, match="micro_train_batch_size"):
        load_recipe(ROOT / "recipes/qwen3b_math.yaml", ["engine.cluster.micro_train_batch_size=7"])


def test_openrlhf_rejects_a_flag_it_does_not_know(parse) -> None:
    with pytest.raises(SystemExit) as exc:  # proves the parser is OpenRLHF's and it is strict
        parse(["--coreward.method", "gt", "--coreward.problems_per_step", "1", "--pretrain", "x"])
    assert exc.value.code == 2


def test_launch_without_cluster_or_gpu_is_one_clear_line(tmp_path: Path, monkeypatch) -> None:
    from coreward_cli.main import cli

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = CliRunner().invoke(
        cli, ["run", str(ROOT / "recipes/qwen3b_math.yaml"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "GPU" in result.output or "pip install" in result.output
    assert not (tmp_path / "r" / "plan.json").exists()  # nothing half-written


def test_unreachable_cluster_is_one_clear_line(tmp_path: Path) -> None:
    from coreward_cli.main import cli

    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(ROOT / "recipes/qwen3b_math.yaml"),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "engine.cluster.ray_address=http://127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "cannot reach the Ray cluster" in result.output


def test_prepare_data_writes_paired_rows_from_the_real_data(
    tmp_path: Path, shared_data: Path
) -> None:
    from coreward_cli.engines.openrlhf_job import prepare_data, stage_plugins
    from coreward_plugins.openrlhf.rows import decode_label

    recipe = load_recipe(
        ROOT / "recipes/qwen3b_math.yaml",
        [f"data.data_dir={shared_data}", "data.max_problems=40", "data.eval_limit=5"],
    )
    plan = build_plan(recipe, tmp_path / "run")
    assert prepare_data(recipe, plan) == 40
    rows = [json.loads(line) for line in Path(plan.paths["train_data"]).read_text().splitlines()]
    assert len(rows) == 40
    for row in rows:
        system, user = row["prompt"]
        assert (
            system == {"role": "system", "content": recipe.model.system_prompt}
            and user["role"] == "user"
        )
        label = decode_label(row["label"])
        assert label.view == "original" and label.reference
        assert label.rephrased[0] == system and label.rephrased[1]["content"] != user["content"]
    assert (
        len({decode_label(r["label"]).id for r in rows}) == 40
    )  # one id per problem, shared by its views
    evals = [json.loads(line) for line in Path(plan.paths["eval_data"]).read_text().splitlines()]
    assert len(evals) == 5 and {e["datasource"] for e in evals} == {
        "math_test"
    }  # the official validation set
    first = evals[0]["prompt"][-1]["content"]
    assert (
        first.startswith("How many vertical asymptotes")
        and decode_label(evals[0]["label"]).reference == "2"
    )
    stage_plugins(Path(plan.paths["job_dir"]))
    assert (Path(plan.paths["job_dir"]) / "coreward_plugins/openrlhf/reward_func.py").is_file()


def test_warmup_steps_are_verls_under_openrlhfs_rounding(tmp_path: Path) -> None:
    """verl warms up int(0.1 x 174) = 17 steps; OpenRLHF's scheduler takes ceil(steps x ratio)
    (utils/deepspeed/deepspeed.py), which at 0.1 would be 18. The launch passes the ratio that gives 17."""
    import inspect
    import math

    from openrlhf.utils.deepspeed import deepspeed as ds

    assert 'math.ceil(scheduler_steps * cfg.get("lr_warmup_ratio"' in inspect.getsource(ds)
    plan = build_plan(load_recipe(ROOT / "recipes/qwen3b_math.yaml"), tmp_path, problems=7500)
    ratio = float(plan.flags[plan.flags.index("--actor.lr_warmup_ratio") + 1])
    assert math.ceil(174 * ratio) == 17 == int(174 * 0.1)
    unknown = build_plan(load_recipe(ROOT / "recipes/qwen3b_math.yaml"), tmp_path)
    assert float(unknown.flags[unknown.flags.index("--actor.lr_warmup_ratio") + 1]) == 0.1
