"""Recipes: the shipped ones, overrides, the resolved dump and its round trip, and the CLI verbs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from coreward_cli.main import cli
from coreward_cli.recipe import Recipe, TeacherConfig, dump_recipe, recipe_to_dict, run_dir_for
from coreward_cli.resolve import load_recipe, load_recipe_text

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))
PAPER = ROOT / "recipes" / "qwen3b_math.yaml"
PAPER_II = ROOT / "recipes" / "qwen3b_math_ii.yaml"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_paper_recipes_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    for stem in (
        "qwen3b_math",
        "qwen3b_math_ii",
        "qwen3b_math_gt",
        "qwen3b_math_majority_vote",
        "qwen3b_math_self_certainty",
        "qwen3b_math_entropy",
    ):
        assert f"{stem}.yaml" in names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_recipe_validates(path: Path) -> None:
    result = invoke("recipe", "validate", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"OK {path}: ")
    assert result.stderr == ""  # no warnings either
    assert path.read_text(encoding="utf-8").startswith("# "), (
        "every recipe starts with a header comment"
    )


def test_co_rewarding_i_recipe_has_the_papers_hyperparameters() -> None:
    r = load_recipe(PAPER)
    assert (r.method.name, r.model.path, r.method.match) == (
        "co_rewarding_i",
        "Qwen/Qwen2.5-3B",
        "exact",
    )
    assert r.data.train[0].original == "TMLR-Group-HF/Co-rewarding-RephrasedMATH"
    assert (r.train.problems_per_step, r.rollout.n, r.rollout.temperature, r.rollout.top_p) == (
        128,
        8,
        1.0,
        1.0,
    )
    assert (r.rollout.max_prompt_tokens, r.rollout.max_new_tokens) == (512, 3072)
    assert (r.train.lr, r.train.warmup_ratio, r.train.schedule, r.train.min_lr_ratio) == (
        3e-6,
        0.1,
        "cosine",
        0.0,
    )
    assert (r.train.weight_decay, r.train.betas, r.train.grad_clip, r.train.epochs) == (
        0.01,
        [0.9, 0.999],
        1.0,
        3,
    )
    assert (r.train.kl_coef, r.train.kl_estimator, r.train.kl_target) == (0.005, "k3", "initial")
    assert (r.train.clip_ratio, r.train.loss_agg, r.train.view_loss) == (0.2, "token-mean", "sum")
    cluster = r.engine.cluster
    assert (r.engine.kind, cluster.nodes, cluster.gpus_per_node, cluster.vllm_tensor_parallel) == (
        "openrlhf",
        1,
        4,
        1,
    )
    assert (r.output.save_interval, r.output.eval_interval, r.seed, r.data.shuffle_seed) == (
        10,
        10,
        1,
        1,
    )
    assert r.teacher is None


def test_co_rewarding_ii_recipe_has_the_official_teacher() -> None:
    r = load_recipe(PAPER_II)
    assert r.method.name == "co_rewarding_ii"
    assert (r.train.kl_coef, r.train.kl_target) == (0.001, "teacher")
    assert r.teacher == TeacherConfig(
        decay_start=0.99, decay_end=0.99999, schedule="cosine", update_interval=1
    )
    assert (r.output.save_interval, r.data.shuffle_seed, r.train.lr, r.train.problems_per_step) == (
        30,
        1234,
        3e-6,
        128,
    )


def test_co_rewarding_iii_recipe_has_the_forks_values() -> None:
    """run_corewarding-III.sh: KL 0.001 against the teacher, EMA 0.01 -> 1e-5 every step, micro
    batch 4; the rest as Co-rewarding-I."""
    r = load_recipe(ROOT / "recipes" / "qwen3b_math_iii.yaml")
    assert r.method.name == "co_rewarding_iii"
    assert (r.train.kl_coef, r.train.kl_estimator, r.train.kl_target) == (0.001, "k3", "teacher")
    assert r.teacher == TeacherConfig(
        decay_start=0.99, decay_end=0.99999, schedule="cosine", update_interval=1
    )
    assert (r.train.micro_batch_size, r.engine.cluster.micro_train_batch_size) == (4, 4)
    one = recipe_to_dict(load_recipe(PAPER))
    three = recipe_to_dict(r)
    for key in ("kl_coef", "kl_target", "micro_batch_size"):
        one["train"].pop(key), three["train"].pop(key)
    one["engine"]["cluster"].pop("micro_train_batch_size")
    three["engine"]["cluster"].pop("micro_train_batch_size")
    assert {k: v for k, v in three.items() if k not in ("method", "teacher")} == {
        k: v for k, v in one.items() if k not in ("method", "teacher")
    }


@pytest.mark.parametrize(
    ("method", "kl", "target", "data_seed", "source"),
    [
        ("co_rewarding_i", 0.005, "initial", 1, "default"),
        ("co_rewarding_ii", 0.001, "teacher", 1234, "method default (co_rewarding_ii)"),
        ("co_rewarding_iii", 0.001, "teacher", 1, "method default (co_rewarding_iii)"),
        ("gt", 0.005, "initial", 1, "default"),
    ],
)
def test_method_dependent_fields_follow_the_method(
    method: str, kl: float, target: str, data_seed: int, source: str
) -> None:
    """`--set method.name=...` on the Co-rewarding-I recipe gives that method's official KL and
    data seed, and `recipe show --explain` says where each value came from."""
    shown = invoke("recipe", "show", str(PAPER), "--explain", "--set", f"method.name={method}")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert f"  kl_coef: {kl}  # {source}" in lines
    assert f"  kl_target: {target}  # {source}" in lines
    seed_source = source if method == "co_rewarding_ii" else "default"
    assert f"  shuffle_seed: {data_seed}  # {seed_source}" in lines
    assert f"  name: {method}  # --set" in lines
    match = (
        "  match: hendrycks  # method default (gt)"
        if method == "gt"
        else "  match: exact  # default"
    )
    assert match in lines
    assert "  lr: 3.0e-06  # recipe" in lines
    pinned = invoke(
        "recipe",
        "show",
        str(PAPER),
        "--explain",
        "--set",
        f"method.name={method}",
        "--set",
        "train.kl_coef=0.02",
    )  # a value the user gives always wins
    assert "  kl_coef: 0.02  # --set" in pinned.stdout.splitlines()


def test_baselines_share_the_setup_and_differ_in_the_method() -> None:
    base = recipe_to_dict(load_recipe(ROOT / "recipes" / "qwen3b_math_majority_vote.yaml"))
    for stem, method in (
        ("gt", "gt"),
        ("self_certainty", "self_certainty"),
        ("entropy", "entropy"),
    ):
        other = recipe_to_dict(load_recipe(ROOT / "recipes" / f"qwen3b_math_{stem}.yaml"))
        assert other["method"]["name"] == method
        for section in ("rollout", "train", "engine", "output", "model", "data"):
            assert other[section] == base[section], (stem, section)
    paper = recipe_to_dict(load_recipe(PAPER))
    assert paper["train"] == base["train"] and paper["rollout"] == base["rollout"]


def test_show_applies_overrides(tmp_path: Path) -> None:
    result = invoke(
        "recipe", "show", str(PAPER), "--set", "train.lr=1e-6", "--set", "data.eval=[math500,gsm8k]"
    )
    assert result.exit_code == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["train"]["lr"] == 1e-6
    assert shown["data"]["eval"] == ["math500", "gsm8k"]
    assert "lr: 1.0e-06" in result.stdout
    as_json = json.loads(
        invoke("recipe", "show", str(PAPER), "--json", "--set", "rollout.n=4").stdout
    )
    assert as_json["rollout"]["n"] == 4 and as_json["train"]["lr"] == 3e-6


def test_overrides_follow_yaml_rules_and_create_sections(tmp_path: Path) -> None:
    r = load_recipe(
        PAPER_II,
        [
            "train.lr=2e-6",  # PyYAML alone reads 2e-6 as text
            "train.kl_coef=0",  # ints are fine for floats
            "teacher.decay_end=1",
            "model.system_prompt=",  # empty means null
            "data.train[0].split=test",
            "logging.wandb_project=co-rewarding",
            "engine.cluster={nodes: 2, vllm_engines: 8}",
        ],
    )
    assert r.train.lr == 2e-6 and isinstance(r.train.lr, float)
    assert r.train.kl_coef == 0.0 and isinstance(r.train.kl_coef, float)
    assert r.teacher is not None and r.teacher.decay_end == 1.0
    assert r.model.system_prompt is None
    assert r.data.train[0].split == "test"
    assert r.logging.wandb_project == "co-rewarding"
    assert (
        r.engine.cluster.nodes,
        r.engine.cluster.vllm_engines,
        r.engine.cluster.gpus_per_node,
    ) == (2, 8, 4)


def test_teacher_method_without_a_teacher_section_gets_the_paper_defaults(tmp_path: Path) -> None:
    text = "model: {path: builtin:tiny-arith}\ndata: {train: [builtin:tiny-arith]}\nmethod: {name: co_rewarding_ii}\n"
    r = load_recipe_text(text, "r.yaml")
    assert r.teacher == TeacherConfig()
    assert (r.teacher.decay_start, r.teacher.decay_end, r.teacher.update_interval) == (
        0.99,
        0.99999,
        1,
    )
    assert (
        r.data.train[0].original == "builtin:tiny-arith"
    )  # a bare string is a source's `original`


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = (
        "model: {path: builtin:tiny-arith}\ndata: {train: [{original: builtin:tiny-arith}]}\n"
        "rollout: &sampling {n: 4, temperature: 0.7}\n"
        "method: {name: majority_vote}\n"
        "train:\n  <<: {lr: 1e-5, epochs: 2}\n  epochs: 5\n"
    )
    r = load_recipe_text(text, "r.yaml")
    assert (r.rollout.n, r.rollout.temperature, r.train.lr, r.train.epochs) == (4, 0.7, 1e-5, 5)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_dump_then_load_is_the_same_recipe(path: Path, tmp_path: Path) -> None:
    original = load_recipe(path, ["train.lr=1.5e-6", "data.eval=[math500, gsm8k]"])
    for explain in (False, True):
        dumped = tmp_path / f"dumped_{explain}.yaml"
        dumped.write_text(dump_recipe(original, explain=explain), encoding="utf-8")
        again = load_recipe(dumped, warn=pytest.fail)
        assert again == original
        assert dump_recipe(again) == dump_recipe(original)


def test_dump_keeps_schema_order_and_explain_documents_every_field() -> None:
    r = load_recipe(PAPER)
    text = dump_recipe(r)
    top = [
        line.split(":")[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))
    ]
    assert top == [f.name for f in dataclasses.fields(Recipe)]
    explained = dump_recipe(r, explain=True)
    assert "# Peak learning rate (AdamW).\n  lr: 3.0e-06" in explained
    assert explained.count("\n") > 2 * text.count("\n") - 5  # a comment above (nearly) every line
    result = invoke("recipe", "show", str(PAPER), "--explain")
    shown = [line.split("  # ")[0] for line in result.stdout.splitlines()]  # less the sources
    assert result.exit_code == 0 and shown == [
        line.split("  # ")[0] for line in explained.splitlines()
    ]
    assert (
        "  lr: 3.0e-06  # recipe" in result.stdout
        and "  kl_coef: 0.005  # default" in result.stdout
    )


def test_run_dir_expands_the_recipe_stem() -> None:
    r = load_recipe(PAPER)
    assert run_dir_for(r, PAPER) == Path("runs/qwen3b_math")
    r2 = load_recipe(PAPER, ["output.dir=/scratch/{recipe}-lr"])
    assert run_dir_for(r2, "x/my_run.yaml") == Path("/scratch/my_run-lr")


def test_validate_check_data_reads_the_training_data(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text(
        "".join(json.dumps({"q": f"{i}+1=", "a": str(i + 1)}) + "\n" for i in range(5)),
        encoding="utf-8",
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {{path: builtin:tiny-arith}}\ndata:\n  train: [{data}]\n  question_key: q\n  answer_key: a\n"
        "  id_key: null\nmethod: {name: majority_vote}\n",
        encoding="utf-8",
    )
    result = invoke("recipe", "validate", str(recipe), "--check-data")
    assert result.exit_code == 0, result.stderr
    assert "5 training problems (0 with a rephrasing)" in result.stdout


def test_single_view_method_warns_about_view_loss_but_passes(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {path: builtin:tiny-arith}\ndata: {train: [builtin:tiny-arith]}\nmethod: {name: entropy}\n"
        "train:\n  view_loss: mean\n",
        encoding="utf-8",
    )
    result = invoke("recipe", "validate", str(recipe))
    assert result.exit_code == 0
    assert (
        result.stderr.strip()
        == f"warning: {recipe}:5: train.view_loss: method entropy trains one view, so view_loss has no effect"
    )


def test_new_writes_a_valid_explained_recipe_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "mine.yaml"
    args = [
        "recipe",
        "new",
        "--method",
        "co_rewarding_ii",
        "--model",
        "Qwen/Qwen2.5-0.5B",
        "--data",
        "DigitalLearningGmbH/MATH-lighteval",
        "-o",
        str(out),
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    made = load_recipe(out, warn=pytest.fail)
    assert (made.method.name, made.model.path, made.train.kl_target, made.train.kl_coef) == (
        "co_rewarding_ii",
        "Qwen/Qwen2.5-0.5B",
        "teacher",
        0.001,
    )
    assert made.teacher == TeacherConfig()
    assert "# Peak learning rate" in out.read_text(encoding="utf-8")
    again = invoke(*args[:-2], "--model", "other", "-o", str(out))
    assert again.exit_code == 2 and "--force" in again.stderr
    assert load_recipe(out).model.path == "Qwen/Qwen2.5-0.5B"  # untouched
    forced = invoke(
        *args[:4],
        "--model",
        "builtin:tiny-arith",
        "--data",
        "builtin:tiny-arith",
        "-o",
        str(out),
        "--force",
    )
    assert forced.exit_code == 0, forced.stderr
    assert load_recipe(out).engine.kind == "local"
    assert [p.name for p in out.parent.iterdir()] == ["mine.yaml"]  # no temporary files left


def test_new_refuses_an_invalid_combination_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "mine.yaml"
    result = invoke(
        "recipe",
        "new",
        "--method",
        "co_rewarding_i",
        "--model",
        "Qwen/Qwen2.5-0.5B",
        "--data",
        "DigitalLearningGmbH/MATH-lighteval",
        "-o",
        str(out),
    )
    assert result.exit_code == 2
    assert (
        "needs rephrased questions" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_list_shows_the_shipped_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the shipped folder is found from the package, not the cwd
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "broken.yaml").write_text(
        "# mine\ntrain: {lr: fast}\n", encoding="utf-8"
    )
    result = invoke("recipe", "list", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {Path(row["recipe"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows["qwen3b_math.yaml"]["method"] == "co_rewarding_i"
    assert rows["qwen3b_math.yaml"]["data"] == "TMLR-Group-HF/Co-rewarding-RephrasedMATH"
    assert rows["qwen3b_math_ii.yaml"]["engine"] == "openrlhf"
    assert rows["qwen3b_math.yaml"]["about"].startswith("Co-rewarding-I")
    assert "train.lr" in rows["broken.yaml"]["error"]
    table = invoke("recipe", "list")
    assert (
        table.exit_code == 0
        and "qwen3b_math_self_certainty" in table.stdout
        and "invalid" in table.stdout
    )
