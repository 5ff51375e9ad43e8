"""The cluster path against OpenRLHF 0.11.2's own code, on CPU: what it builds, splits and reserves
for the plan's flags, and the plan's memory, disk and CPU estimates against a hand calculation.

Hand calculation for recipes/qwen3b_math.yaml (Qwen2.5-3B: P = 3,085,938,688 parameters, vocabulary
V = 151,936; L = 512 + 3072 = 3,584 tokens; ZeRO-2 on N = 4 GPUs; KL on the initial model):
- model states per GPU: 2P + 14P/4 = 5.5P = 16.97 GB; the colocated reference's bf16 weights 2P = 6.17 GB
- log-prob pass at micro batch 16: 16 * 3584 * V * 6 bytes = 52.27 GB -> 75.4 GB per GPU
- training pass at micro batch 8: 8 * 3584 * V * 10 bytes = 43.56 GB -> 66.7 GB per GPU
- host, node 0: sleeping DeepSpeed states 4 * 14P/4 = 43.20 GB + four sleeping vLLM engines 4 * 2P
  = 24.69 GB = 67.9 GB
- disk: 3 checkpoints * 14P = 129.61 GB + the final HF model 2P = 6.17 GB = 135.8 GB
- CPUs: 4 GPU bundles + 4 grading actors + 1 controller = 9
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("openrlhf")
pytestmark = pytest.mark.usefixtures("openrlhf_import_stubs")

from coreward_cli.engines.openrlhf import build_plan  # noqa: E402
from coreward_cli.errors import UserError  # noqa: E402
from coreward_cli.resolve import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
P, V, L = 3_085_938_688, 151_936, 512 + 3072


def _recipe(name: str = "qwen3b_math.yaml", overrides: list[str] = ()):
    return load_recipe(ROOT / "recipes" / name, list(overrides))


def _plan(tmp_path: Path, name: str = "qwen3b_math.yaml", overrides: list[str] = ()):
    return build_plan(_recipe(name, overrides), tmp_path / "run")


@pytest.fixture(scope="module")
def parse():
    from coreward_plugins.openrlhf.cli_args import parse_args

    return parse_args


# ---- 1. fp16 ----
def test_param_dtype_is_the_dtype_openrlhf_builds_vllm_in(
    tmp_path: Path, parse, monkeypatch
) -> None:
    import openrlhf.trainer.ray.vllm_engine as vllm_engine

    built: dict = {}

    class Recorder:
        @staticmethod
        def options(**unused):
            return SimpleNamespace(remote=lambda **kwargs: built.update(kwargs))

    monkeypatch.setattr(vllm_engine, "RolloutRayActor", Recorder)
    vllm_engine.create_vllm_engines(1, 1, "m", 1, False, True, False, 64, shared_pg=object())
    args = parse(_plan(tmp_path).flags)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.ds.param_dtype]
    assert getattr(torch, built["dtype"]) == torch_dtype  # what vllm_worker_wrap asserts
    for dtype in ("fp16", "fp32"):
        with pytest.raises(UserError, match="model.dtype: .*bfloat16"):
            _plan(tmp_path, overrides=[f"model.dtype={dtype}"])


def test_recipe_validation_refuses_fp16_in_one_line() -> None:
    with pytest.raises(UserError) as exc:
        _recipe(overrides=["model.dtype=fp16"])
    assert "model.dtype" in str(exc.value) and "\n" not in str(exc.value)


# ---- 2. entropy and GPU memory ----
def test_no_entropy_in_the_training_pass(tmp_path: Path, parse) -> None:
    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer

    args = parse(_plan(tmp_path).flags)
    seen: dict = {}

    class Stop(Exception):
        pass

    class Actor:
        def train(self) -> None:
            pass

        def __call__(self, *a, **kw):
            seen.update(kw)
            raise Stop

    rows = torch.ones(1, 4, dtype=torch.long)
    experience = SimpleNamespace(
        sequences=rows,
        action_mask=rows.bool(),
        attention_mask=rows,
        action_log_probs=None,
        advantages=None,
        base_action_log_probs=None,
    )
    fake = SimpleNamespace(args=args, actor=Actor(), strategy=SimpleNamespace(ring_attn_group=None))
    with pytest.raises(Stop):  # OpenRLHF's own training step, up to the actor's forward
        ActorPPOTrainer.training_step(fake, experience, 0.0, 0, loss_batch_info={})
    assert seen["return_entropy"] is False


def test_gpu_memory_estimate_matches_the_hand_calculation(tmp_path: Path) -> None:
    est = _plan(tmp_path).resources["estimates"]
    assert est["model"] == {"params": P, "vocab": V}
    states = P * (2 + 14 / 4) / 1e9
    reference = 2 * P / 1e9
    assert est["gpu_gb"]["model_states"] == round(states, 1) == 17.0
    assert est["gpu_gb"]["logprob_pass"] == round(states + reference + 16 * L * V * 6 / 1e9, 1)
    assert est["gpu_gb"]["train_pass"] == round(states + reference + 8 * L * V * 10 / 1e9, 1)
    assert est["gpu_peak_gb"] == 75.4


def test_a_log_prob_micro_batch_over_gpu_memory_is_refused_with_the_size_that_fits(
    tmp_path: Path,
) -> None:
    with pytest.raises(UserError) as exc:
        _plan(tmp_path, overrides=["engine.cluster.micro_rollout_batch_size=32"])
    assert "micro_rollout_batch_size" in str(exc.value) and str(exc.value).endswith(": 16")
    with pytest.raises(UserError, match="micro_rollout_batch_size: 8"):
        _plan(tmp_path, overrides=["engine.cluster.gpu_memory_gb=60"])


def test_doctor_checks_a_recipe_against_this_gpu() -> None:
    from coreward_cli.commands.doctor import check_recipe_memory

    small = check_recipe_memory(str(ROOT / "recipes/qwen3b_math.yaml"), 48.0)
    assert small.status == "fail" and "micro_rollout_batch_size" in small.fix
    big = check_recipe_memory(str(ROOT / "recipes/qwen3b_math.yaml"), 141.0)
    assert big.status == "ok" and "75" in big.detail


# ---- 3. disk ----
def test_no_hf_copy_per_save_and_the_disk_estimate(tmp_path: Path, parse) -> None:
    plan = _plan(tmp_path)
    args = parse(plan.flags)
    assert args.ckpt.save_hf is False  # OpenRLHF's rotation never deletes global_stepN_hf/
    disk = plan.resources["estimates"]["disk_gb"]
    assert args.ckpt.max_num == 3
    assert disk == {"checkpoints": round(3 * 14 * P / 1e9, 1), "final_model": round(2 * P / 1e9, 1)}
    assert plan.resources["estimates"]["disk_total_gb"] == 135.8
    teacher = _plan(tmp_path, "qwen3b_math_ii.yaml").resources["estimates"]["disk_gb"]
    assert teacher["teacher_checkpoints"] == round(3 * 4 * P / 1e9, 1)


# ---- 4. wandb ----
def test_the_wandb_key_never_enters_the_arguments_or_the_plan(tmp_path: Path, monkeypatch) -> None:
    from coreward_plugins.openrlhf import entry

    secret = "wandb-secret-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    captured = {}
    host = SimpleNamespace(train=lambda args: captured.update(args=args))
    monkeypatch.setattr(entry, "filter_long_prompts", lambda args: {})
    monkeypatch.setattr(entry, "install_coreward_classes", lambda args: host)
    monkeypatch.setattr("ray.is_initialized", lambda: True)
    for extra, asked in (([], 0), (["logging.wandb_project=proj"], 1)):
        plan = _plan(tmp_path, overrides=extra)
        assert secret not in json.dumps(plan.to_dict())
        entry.main(plan.flags)  # parses, refuses, then hands OpenRLHF's train() its args
        args = captured["args"]
        assert secret not in repr(args)  # what train_ppo_ray prints and W&B uploads
        assert not args.logger.wandb.key  # OpenRLHF's own switch stays off
        assert args.coreward.wandb == asked
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(SystemExit, match="WANDB_API_KEY"):
        entry.prepare_args(plan.flags)


# ---- 5. micro batches split evenly over the ranks ----
def _rows_per_rank(micro_batches: int, ranks: int, monkeypatch) -> list[int]:
    """OpenRLHF's RayActorGroup.async_run_method_batch on `micro_batches` items over `ranks` actors."""
    import ray
    from openrlhf.trainer.ray.launcher import RayActorGroup

    got: list[int] = []

    class Rank:
        def __init__(self) -> None:
            self.execute_batch = SimpleNamespace(
                remote=lambda method, chunk, start, n: got.append(n)
            )

    group = object.__new__(RayActorGroup)
    group._actor_handlers = [Rank() for _ in range(ranks)]
    group.duplicate_actors = 1
    monkeypatch.setattr(ray, "put", lambda value: value)
    group.async_run_method_batch("forward", sequences=list(range(micro_batches)))
    return got + [0] * (ranks - len(got))


@pytest.mark.parametrize(
    ("recipe", "problems", "micro"),
    [
        ("qwen3b_math_ii.yaml", 20, 16),  # 160 samples: 10 micro batches of 16, split 3/3/3/1
        ("qwen3b_math_gt.yaml", 12, 16),  # 96 samples: 6 micro batches, split 2/2/2/0
        ("qwen3b_math_gt.yaml", 16, 16),
        ("qwen3b_math.yaml", 128, 16),
    ],
)
def test_plan_accepts_only_even_micro_batch_splits(
    tmp_path: Path, monkeypatch, recipe: str, problems: int, micro: int
) -> None:
    given = [
        f"train.problems_per_step={problems}",
        f"engine.cluster.micro_rollout_batch_size={micro}",
    ]
    views = 2 if recipe == "qwen3b_math.yaml" else 1
    samples = problems * views * 8  # rollout.n
    micro_batches = len(range(0, samples, micro))  # experience_maker.split_rollout_samples
    split = _rows_per_rank(micro_batches, 4, monkeypatch)
    even = len(set(split)) == 1 and samples % micro == 0
    if even:
        build_plan(_recipe(recipe, given), tmp_path / "run")
    else:  # refused when the recipe is resolved, before any plan
        with pytest.raises(UserError, match="micro_rollout_batch_size: .* or .*problems_per_step"):
            _recipe(recipe, given)
    assert even == (recipe != "qwen3b_math_ii.yaml" and problems != 12)


# ---- 6. CPUs and the grading deadline ----
def test_cpu_count_in_the_plan(tmp_path: Path) -> None:
    res = _plan(tmp_path).resources
    assert res["cpus"] == 4 + 4 + 1
    apart = _plan(tmp_path, overrides=["engine.cluster.colocate=false"]).resources
    assert apart["cpus"] == 4 + 4 + 4 + 1 and apart["total_gpus"] == 8


@pytest.fixture(scope="module")
def ray_two_cpus():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_grading_actors_without_cpus_fail_with_the_cause(ray_two_cpus) -> None:
    from coreward_plugins.openrlhf.reward_actors import RewardPool

    with pytest.raises(RuntimeError, match="grading actors did not start within 5 s.*CPU"):
        RewardPool("majority_vote", "{}", size=3, num_cpus=1.0, timeout_s=5.0)


# ---- 7. the teacher as KL anchor: one guarded unit ----
class _Rank:
    """One policy rank's teacher swap (the real ShadowTeacher) behind a forward."""

    def __init__(self) -> None:
        from coreward_plugins.openrlhf.teacher import ShadowTeacher

        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 2)
        self.teacher = ShadowTeacher(self.model, zero_stage=2, use_fp32_master=False)
        with torch.no_grad():
            self.model.weight.add_(1.0)  # the student moves away from the teacher
        self.student = self.model.weight.detach().clone()
        self.fail_out = False

    def teacher_in(self) -> None:
        self.teacher.enter_swap()

    def teacher_out(self) -> None:
        self.teacher.exit_swap()
        if self.fail_out:
            raise RuntimeError("restore failed")

    def execute_batch(self, method, data, start, n):
        raise RuntimeError("forward failed")

    def is_student(self) -> bool:
        return torch.equal(self.model.weight, self.student)


class _Group:
    def __init__(self, ray, dispatch_error: bool) -> None:
        self.ray = ray
        self.actors = [ray.remote(num_cpus=0)(_Rank).remote()]
        self.dispatch_error = dispatch_error

    def async_run_method(self, name, *args, **kwargs):
        return [getattr(a, name).remote(*args, **kwargs) for a in self.actors]

    def async_run_method_batch(self, method_name, **kwargs):
        if self.dispatch_error:
            raise ValueError("Insufficient batch size")
        return [a.execute_batch.remote(method_name, None, 0, 1) for a in self.actors]


def test_teacher_reference_restores_the_student_and_reports_errors(ray_two_cpus) -> None:
    ray = ray_two_cpus
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from coreward_plugins.openrlhf.trainer import TeacherAsReference

    group = _Group(ray, dispatch_error=True)
    with pytest.raises(ValueError, match="Insufficient"):
        TeacherAsReference(group).async_run_method_batch("forward", sequences=[1])
    assert ray.get(group.actors[0].is_student.remote())  # swapped out although dispatch failed
    group.dispatch_error = False
    refs = TeacherAsReference(group).async_run_method_batch("forward", sequences=[1])
    assert ray.get(group.actors[0].is_student.remote())
    with pytest.raises(ray.exceptions.RayTaskError, match="forward failed"):
        ray.get(refs)
    ray.get(group.actors[0].__ray_call__.remote(lambda self: setattr(self, "fail_out", True)))
    with pytest.raises(ray.exceptions.RayTaskError, match="restore failed"):
        TeacherAsReference(group).async_run_method_batch("forward", sequences=[1])


def test_a_second_swap_in_is_refused() -> None:
    rank = _Rank()
    rank.teacher_in()
    with pytest.raises(RuntimeError, match="already swapped in"):
        rank.teacher_in()
    rank.teacher_out()
    assert rank.is_student()


# ---- 10. without colocation OpenRLHF requests the GPUs the plan counts ----
def _gpus_openrlhf_requests(args, monkeypatch) -> tuple[float, object]:
    """Run OpenRLHF's `train(args)` up to the controller, recording every GPU it reserves."""
    import openrlhf.cli.train_ppo_ray as host
    import openrlhf.trainer.ppo_trainer as ppo_trainer
    import ray

    requested: list[float] = []
    seen: dict = {}

    class PG:
        def __init__(self, bundles, strategy) -> None:
            requested.extend(b["GPU"] for b in bundles)

        def ready(self):
            return None

    class Group:
        def __init__(self, nodes, gpus, actor_type, pg=None, num_gpus_per_actor=1, **kw) -> None:
            if pg is None:  # RayActorGroup._initiate_actors: a group of its own
                requested.extend([1] * (nodes * gpus) if gpus > 1 else [num_gpus_per_actor] * nodes)

    def vllm(num_engines, tp, *a, **kw):
        if a[6] is None:  # create_vllm_engines without a shared placement group makes its own
            requested.extend([1] * (num_engines * tp))

    class Stop(Exception):
        pass

    def controller(*a, **kw):
        seen["reference"] = a[5]
        raise Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get", lambda ref: ref)
    monkeypatch.setattr(host, "get_strategy", lambda a: SimpleNamespace(print=lambda *x: None))
    monkeypatch.setattr(host, "placement_group", PG)
    monkeypatch.setattr(host, "RayActorGroup", Group)
    monkeypatch.setattr(host, "create_vllm_engines", vllm)
    monkeypatch.setattr(ppo_trainer, "PPOTrainer", SimpleNamespace(remote=controller))
    with pytest.raises(Stop):
        host.train(args)
    return sum(requested), seen["reference"]


@pytest.mark.parametrize("name", ["qwen3b_math.yaml", "qwen3b_math_ii.yaml"])
@pytest.mark.parametrize("colocate", [True, False])
def test_plan_gpus_equal_what_openrlhf_requests(
    tmp_path: Path, parse, monkeypatch, name: str, colocate: bool
) -> None:
    plan = _plan(tmp_path, name, [f"engine.cluster.colocate={str(colocate).lower()}"])
    gpus, _ = _gpus_openrlhf_requests(parse(plan.flags), monkeypatch)
    assert gpus == plan.resources["total_gpus"] == (4 if colocate else 8)


def test_no_teacher_pass_without_a_kl_term(tmp_path: Path, parse, monkeypatch) -> None:
    from coreward_plugins.openrlhf.trainer import TeacherAsReference, kl_reference

    actors = object()
    for kl, expect_teacher in (("0", False), ("0.001", True)):
        plan = _plan(tmp_path, "qwen3b_math_ii.yaml", [f"train.kl_coef={kl}"])
        args = parse(plan.flags)
        _, reference = _gpus_openrlhf_requests(args, monkeypatch)
        chosen = kl_reference(args.coreward.kl_target, reference, actors)
        assert isinstance(chosen, TeacherAsReference) is expect_teacher
        if not expect_teacher:
            assert chosen is None  # no forward pass of the teacher every step for nothing


# ---- 11. host memory of the ZeRO-2 swap ----
def test_zero2_swap_keeps_one_backup_and_restores_every_rank(tmp_path: Path) -> None:
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    worker = Path(__file__).with_name("openrlhf_swap_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(r), port, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    for proc in procs:
        log = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, log[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    numel = 64 * 32 + 32
    assert [r["held"] for r in ranks] == [2 * numel, 0]  # bf16 student on rank 0 only
    assert all(r["swapped"] and r["restored"] for r in ranks)


def test_host_memory_estimate_matches_the_hand_calculation(tmp_path: Path) -> None:
    one = _plan(tmp_path).resources["estimates"]
    assert one["host_node0_gb"] == {
        "deepspeed_asleep": round(4 * 14 * P / 4 / 1e9, 1),
        "vllm_asleep": round(4 * 2 * P / 1e9, 1),
    }
    assert one["host_node0_total_gb"] == 67.9
    two = _plan(tmp_path, "qwen3b_math_ii.yaml").resources["estimates"]
    assert two["host_node0_gb"]["teacher_shadow"] == round(4 * P / 1e9, 1)
    assert two["host_node0_gb"]["teacher_swap_backup"] == round(2 * P / 1e9, 1)  # one rank
    assert two["teacher_update_allreduce_gb"] == round(4 * P / 1e9, 1)


# ---- 12. ZeRO++ ----
def test_zero_plus_plus_partitions_are_refused(tmp_path: Path) -> None:
    from coreward_plugins.openrlhf import entry
    from coreward_plugins.openrlhf.teacher import ShadowTeacher

    model = torch.nn.Linear(2, 2)
    for p in model.parameters():
        p.ds_tensor = p.data.reshape(-1).clone()
        p.ds_secondary_tensor = p.data.reshape(-1).clone()
    with pytest.raises(ValueError, match="zpg"):
        ShadowTeacher(model, zero_stage=3, use_fp32_master=False, release_gathered=lambda: None)
    plan = _plan(tmp_path, "qwen3b_math_ii.yaml")
    with pytest.raises(SystemExit, match="zpg"):
        entry.prepare_args([*plan.flags, "--ds.zpg", "2"])


def test_dry_run_prints_the_estimates(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from coreward_cli.main import cli

    result = CliRunner().invoke(
        cli,
        ["run", str(ROOT / "recipes/qwen3b_math.yaml"), "--dry-run", "--out", str(tmp_path / "r")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    for shown in ("9 reserved by Ray", "~75 GB per GPU of 80", "~68 GB on node 0", "~136 GB"):
        assert shown in result.output
