"""The controller side on CPU: our prompt file through OpenRLHF's own dataset code, paired views sampled
in one step by the sample generator (fake vLLM engines as Ray actors), the trainer's relabelling and
schedules, and the entry's class wiring and prompt-length filter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("openrlhf")
pytestmark = pytest.mark.usefixtures("openrlhf_import_stubs")

from coreward_cli.engines.openrlhf import build_plan  # noqa: E402
from coreward_cli.resolve import load_recipe  # noqa: E402
from coreward_plugins.openrlhf.rows import decode_label, make_row  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N = 4
# five problems, two per step: two full steps, and the fifth problem is dropped (drop_last)
PROBLEMS = [(f"p{i}", f"what is {i}+{i}?", f"add {i} to itself", str(2 * i)) for i in range(5)]


def _args(tmp_path: Path, recipe_file: str, extra: list[str] = ()):
    from coreward_plugins.openrlhf.cli_args import parse_args

    recipe = load_recipe(
        ROOT / "recipes" / recipe_file,
        [
            "train.problems_per_step=2",
            f"rollout.n={N}",
            "model.chat_template=false",
            "model.system_prompt=SYS",
            "engine.cluster.micro_train_batch_size=1",
            "engine.cluster.micro_rollout_batch_size=1",
            "data.eval=[]",
            *extra,
        ],
    )
    plan = build_plan(recipe, tmp_path / "run")
    data = Path(plan.paths["train_data"])
    data.parent.mkdir(parents=True)
    data.write_text(
        "".join(
            json.dumps(make_row(pid, q, r, a, "SYS", False)) + "\n" for pid, q, r, a in PROBLEMS
        )
    )
    return parse_args(plan.flags)


class FakeEngine:
    """Answers like a vLLM rollout actor: n responses per prompt, the answer depending on the view."""

    def get_num_unfinished_requests(self) -> int:
        return 0

    def wake_up(
        self, tags=None
    ) -> None:  # the recipes colocate, so OpenRLHF sleeps engines between phases
        pass

    def sleep(self, level: int = 1) -> None:
        pass

    def generate_responses(
        self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples, images=None
    ):
        from coreward_plugins.openrlhf.rows import decode_label

        view = decode_label(label).view
        out = []
        for k in range(num_samples):
            text = f"\\boxed{{{'7' if view == 'original' and k == 0 else view[:3]}}}"
            p_ids = hf_tokenizer(prompt, add_special_tokens=False).input_ids
            r_ids = hf_tokenizer(text, add_special_tokens=False).input_ids + [
                hf_tokenizer.eos_token_id
            ]
            out.append(
                {
                    "observation_tokens": p_ids + r_ids,
                    "action_ranges": [(len(p_ids), len(p_ids) + len(r_ids))],
                    "reward": 0.0,
                    "scores": 0.0,
                    "extra_logs": {"coreward_reference_score": 0.0},
                    "rollout_log_probs": None,
                    "truncated": False,
                    "prompt": prompt,
                    "label": label,
                }
            )
        return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # workers unpickle the (stub) vllm.SamplingParams the generator sends: they need the stubs too
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).with_name("stubs"))}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tokenizer():
    from coreward_cli.toy import build_tokenizer

    return build_tokenizer()


def _generator(args, tokenizer, ray):
    from openrlhf.trainer.ppo_trainer import prepare_datasets
    from openrlhf.utils import get_strategy

    from coreward_plugins.openrlhf.samples import CorewardSamplesGenerator

    strategy = get_strategy(args)
    loader, _, openrlhf_max_steps = prepare_datasets(
        strategy, tokenizer
    )  # OpenRLHF's own loading of our file
    engines = [ray.remote(FakeEngine).remote() for _ in range(2)]
    gen = CorewardSamplesGenerator(
        strategy=strategy,
        prompts_dataloader=loader,
        eval_dataloader=None,
        tokenizer=tokenizer,
        vllm_engines=engines,
    )
    return gen, openrlhf_max_steps


@pytest.mark.slow
def test_paired_views_are_sampled_in_the_same_step(tmp_path, tokenizer, ray_cluster) -> None:
    args = _args(tmp_path, "qwen3b_math.yaml")
    gen, openrlhf_max_steps = _generator(args, tokenizer, ray_cluster)
    kw = dict(max_len=256, max_new_tokens=16, temperature=1.0)
    seen = []
    for _ in range(2):
        samples, _, consumed, exhausted = gen.generate_samples(**kw)
        assert (
            consumed == 2 and not exhausted and len(samples) == 2 * 2 * N
        )  # 2 problems x 2 views x n
        labels = [decode_label(s.labels[0]) for s in samples]
        runs = [(labels[i].id, labels[i].view) for i in range(0, len(samples), N)]
        assert all(
            (lab.id, lab.view) == runs[i // N] for i, lab in enumerate(labels)
        )  # groups contiguous
        assert [v for _, v in runs] == [
            "original",
            "rephrased",
        ] * 2  # a problem's views side by side
        assert runs[0][0] == runs[1][0] and runs[2][0] == runs[3][0]
        for s, lab in zip(samples, labels):
            question, rephrased = next((q, r) for pid, q, r, _ in PROBLEMS if pid == lab.id)
            assert s.prompts[0] == f"SYS\n{rephrased if lab.view == 'rephrased' else question}"
        seen += [pid for pid, _ in runs[::2]]
    assert len(set(seen)) == 4
    samples, _, consumed, exhausted = gen.generate_samples(
        **kw
    )  # one problem left: dropped, epoch over
    assert samples == [] and exhausted
    # OpenRLHF alone would schedule 5*n // (2*2*n) * 3 epochs = 3 optimizer steps; the run makes 2 per epoch = 6
    assert openrlhf_max_steps == 3 and (5 // 2) * args.train.num_episodes == 6

    # the trainer's relabelling on these samples
    from coreward_plugins.openrlhf.reward_actors import RewardPool
    from coreward_plugins.openrlhf.trainer import CorewardPPOTrainer

    gen.stop = False
    gen._iter = None
    samples, *_ = gen.generate_samples(**kw)
    fake = SimpleNamespace(
        args=args,
        samples_generator=gen,
        tokenizer=tokenizer,
        rewards=RewardPool("co_rewarding_i", "{}", size=1),
    )
    metrics = CorewardPPOTrainer.relabel(fake, samples)
    rewards = [s.rewards.item() for s in samples]
    # originals answer 7 once and "ori" three times; rephrased always "rep": cross-view labels never match
    assert rewards == [0.0] * len(samples)
    assert metrics["coreward/label_rate"] == 1.0 and "coreward/scoring_s" in metrics


@pytest.mark.slow
def test_teacher_rollouts_follow_the_teacher_swap(tmp_path, tokenizer, ray_cluster) -> None:
    args = _args(tmp_path, "qwen3b_math_ii.yaml")
    gen, _ = _generator(args, tokenizer, ray_cluster)
    calls = []
    gen.before_teacher = lambda: calls.append(len(gen.last_teacher_samples))
    samples, *_ = gen.generate_samples(max_len=256, max_new_tokens=16)
    assert len(samples) == 2 * N and len(gen.last_teacher_samples) == 2 * N
    assert calls == [0]  # the swap happened once, before any teacher sample
    assert {decode_label(s.labels[0]).view for s in samples + gen.last_teacher_samples} == {
        "original"
    }


def test_trainer_schedule_and_subclassing(tmp_path) -> None:
    import ray
    from openrlhf.trainer.ppo_trainer import PPOTrainer
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    from coreward_plugins.openrlhf.actor import CorewardPolicyActor, CorewardPolicyActorRemote
    from coreward_plugins.openrlhf.trainer import CorewardPPOTrainer, CorewardPPOTrainerRemote

    assert issubclass(CorewardPPOTrainer, PPOTrainer.__ray_actor_class__)
    assert issubclass(CorewardPolicyActor, PolicyModelActor.__ray_actor_class__)
    assert isinstance(CorewardPPOTrainerRemote, ray.actor.ActorClass)
    assert isinstance(CorewardPolicyActorRemote, ray.actor.ActorClass)
    args = _args(tmp_path, "qwen3b_math_ii.yaml")
    fake = SimpleNamespace(args=args, teacher_views=("original",), rl_steps=10)
    decays = [CorewardPPOTrainer._decay_for(fake, k) for k in range(1, 12)]
    # reference §3.3 by hand, T = 10: decay = 1 - (1e-5 + 0.004995 (1 + cos(pi (k - 1) / 10)))
    assert decays[0] == pytest.approx(0.99, abs=1e-12)  # cos 0 = 1
    assert decays[5] == pytest.approx(0.994995, abs=1e-12)  # cos(pi/2) = 0
    assert decays[9] == pytest.approx(0.9997455273, abs=1e-10)  # cos(0.9 pi) = -0.9510565163
    assert all(a < b for a, b in zip(decays[:9], decays[1:10]))
    assert (
        decays[10] is None
    )  # no update after the last step (the saved final teacher is step 10's)
    fake.teacher_views = ()
    assert CorewardPPOTrainer._decay_for(fake, 3) is None


def test_entry_wires_our_classes_into_openrlhf_train(tmp_path) -> None:
    import openrlhf.cli.train_ppo_ray as host
    import openrlhf.trainer.ppo_trainer as ppo_trainer

    from coreward_plugins.openrlhf import entry

    saved = (host.PolicyModelActor, host.ReferenceModelActor, ppo_trainer.PPOTrainer)
    try:
        entry.install_coreward_classes(
            _args(tmp_path, "qwen3b_math_ii.yaml")
        )  # KL anchor: the teacher
        assert host.PolicyModelActor.__ray_actor_class__.__name__ == "CorewardPolicyActor"
        assert host.ReferenceModelActor.__ray_actor_class__.__name__ == "TeacherKLStandIn"
        assert ppo_trainer.PPOTrainer.__ray_actor_class__.__name__ == "CorewardPPOTrainer"
    finally:
        host.PolicyModelActor, host.ReferenceModelActor, ppo_trainer.PPOTrainer = saved


def test_entry_drops_problems_too_long_in_any_view(tmp_path, tokenizer) -> None:
    from coreward_plugins.openrlhf.entry import filter_long_prompts

    model_dir = tmp_path / "tok"
    tokenizer.save_pretrained(model_dir)
    args = _args(tmp_path, "qwen3b_math.yaml", ["rollout.max_prompt_tokens=20"])
    args.actor.model_name_or_path = str(model_dir)
    source = Path(args.data.prompt_dataset)
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows[1]["label"] = json.dumps(
        {**json.loads(rows[1]["label"]), "rephrased": "SYS\n" + "a very long rephrasing " * 3}
    )
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = filter_long_prompts(args)  # byte tokenizer: "SYS\nwhat is 1+1?" is 16 tokens
    assert counts == {"train": (4, 1)}
    assert args.data.prompt_dataset.endswith("train.filtered.jsonl")
    ids = [
        decode_label(json.loads(line)["label"]).id
        for line in Path(args.data.prompt_dataset).read_text().splitlines()
    ]
    assert ids == ["p0", "p2", "p3", "p4"]


def test_held_out_prompts_are_filtered_by_the_same_rule(tmp_path, tokenizer) -> None:
    from coreward_plugins.openrlhf.entry import filter_long_prompts

    model_dir = tmp_path / "tok"
    tokenizer.save_pretrained(model_dir)
    args = _args(tmp_path, "qwen3b_math.yaml", ["rollout.max_prompt_tokens=20"])
    args.actor.model_name_or_path = str(model_dir)
    held_out = tmp_path / "run" / "data" / "eval.jsonl"
    rows = [("short", "SYS\nwhat is 2+2?"), ("long", "SYS\n" + "a long question " * 4)]
    held_out.write_text(
        "".join(json.dumps({"prompt": q, "label": i, "datasource": "b"}) + "\n" for i, q in rows)
    )
    args.eval.dataset = str(held_out)
    assert filter_long_prompts(args)["eval"] == (1, 1)  # cut from the left, it would lose SYS
    kept = [json.loads(line)["label"] for line in Path(args.eval.dataset).read_text().splitlines()]
    assert kept == ["short"]


def test_a_prompt_file_not_on_this_node_is_one_line(tmp_path) -> None:
    from coreward_plugins.openrlhf.entry import filter_long_prompts

    args = _args(tmp_path, "qwen3b_math.yaml")
    args.data.prompt_dataset = str(tmp_path / "elsewhere" / "train.jsonl")
    with pytest.raises(SystemExit, match="not visible on this node.*storage every node"):
        filter_long_prompts(args)


def _epoch_order(args, tokenizer, seed: int) -> list[str]:
    import torch
    from openrlhf.trainer.ppo_trainer import prepare_datasets
    from openrlhf.utils import get_strategy

    from coreward_plugins.openrlhf.trainer import seed_prompt_order

    torch.manual_seed(0)  # the controller's global RNG, the same in every run
    loader, _, _ = prepare_datasets(get_strategy(args), tokenizer)  # OpenRLHF's own loader
    seed_prompt_order(loader, seed)
    return [decode_label(label).id for _ in range(2) for batch in loader for label in batch[2]]


def test_prompt_order_is_a_function_of_the_seed(tmp_path, tokenizer) -> None:
    args = _args(tmp_path, "qwen3b_math.yaml")
    first = _epoch_order(args, tokenizer, 1)
    assert sorted(first[:5]) == [p for p, *_ in PROBLEMS]  # one epoch is every problem once
    assert _epoch_order(args, tokenizer, 1) == first
    assert any(_epoch_order(args, tokenizer, s) != first for s in (2, 3))


def test_controller_watches_collapse_and_stops_when_asked(tmp_path, capsys) -> None:
    """The recipe's train.stop_on_collapse reaches the controller; the detector reads OpenRLHF's
    status names, logs coreward/collapse_risk, warns once, and stops saving and sampling."""
    from coreward_plugins.collapse import CollapseDetector
    from coreward_plugins.openrlhf.trainer import CorewardPPOTrainer

    args = _args(tmp_path, "qwen3b_math.yaml", ["train.stop_on_collapse=true"])
    assert args.coreward.stop_on_collapse == 1
    fake = SimpleNamespace(args=args, collapse=CollapseDetector(), stopped_on_collapse=None)
    for step in range(1, 60):
        gone = 0.0 if step < 30 else min(1.0, 0.05 * (step - 29))  # answers vanish from step 30
        status = {
            "coreward/reward_mean": 0.5,
            "coreward/no_answer_share": gone,
            "entropy_loss": 0.3,
            "rollout/response_length_mean": 200.0,
        }
        CorewardPPOTrainer._watch_collapse(fake, step, status)
        assert isinstance(status["coreward/collapse_risk"], float)
    fired = fake.collapse.fired_at
    assert fired is not None and 30 < fired < 45 and fake.stopped_on_collapse == fired
    out = capsys.readouterr().out
    assert out.count("collapse warning") == 1 and "stopping (train.stop_on_collapse)" in out
    # no checkpoint at or after the warning (the fake has no .rewards: saving would raise)
    assert CorewardPPOTrainer.save_logs_and_checkpoints(fake, fired) is None
    assert load_recipe(ROOT / "recipes" / "qwen3b_math.yaml").train.stop_on_collapse is False
