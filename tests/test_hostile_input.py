"""Hostile or careless input ends in one line and exit 2, with nothing half-written (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from coreward_cli.main import cli
from tests.cli_checks import one_line_error

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "tiny_cpu.yaml")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!custom x", "!custom"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!set {a: null}", "!!set"),
    ],
)
def test_tagged_values_are_refused(value, fragment):
    """Item 10: no tag is constructed, none read as a path."""
    result = CliRunner().invoke(cli, ["recipe", "validate", TINY, "--set", f"model.path={value}"])
    one_line_error(result, "model.path", fragment, "not allowed")


def test_tagged_recipe_file_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        Path(TINY).read_text().replace("seed:", "seed: !!python/object:os.system\nx:", 1)
    )
    result = CliRunner().invoke(cli, ["recipe", "validate", str(path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deeply_nested_recipe_is_one_line(tmp_path, opener):
    """Item 11: 60k levels of nesting, in a file and in --set."""
    deep = "model: " + opener * 60000 + "\n"
    path = tmp_path / "deep.yaml"
    path.write_text(deep)
    one_line_error(CliRunner().invoke(cli, ["recipe", "validate", str(path)]), "deep.yaml")
    result = CliRunner().invoke(cli, ["recipe", "validate", TINY, "--set", "seed=" + "[" * 60000])
    one_line_error(result, "--set seed")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("seed=99999999999999999999999", "maximum"),
        ("seed=-1", "minimum"),
        ("data.shuffle_seed=99999999999999999999999", "maximum"),
        ("rollout.n=100000000", "maximum 1024"),
        ("train.problems_per_step=99999999999", "maximum"),
        ('model.path="a\\0b"', "NUL"),
        ('output.dir="runs/\\0x"', "NUL"),
        ("model.path=/no/such/model", "not a folder or file here"),
        ("model.path=./my-model", "nor a hub id"),
        ("data.train=[{original: /no/such.parquet}]", "does not exist"),
        ("data.eval=[/no/such.jsonl]", "does not exist"),
    ],
)
def test_values_that_would_crash_run_fail_validate(override, fragment):
    """Item 12: validate refuses what `run` could not use."""
    result = CliRunner().invoke(cli, ["recipe", "validate", TINY, "--set", override])
    one_line_error(result, override.split("=")[0], fragment)


def test_a_cluster_model_path_is_only_a_warning():
    """On the openrlhf engine the cluster loads the model: a path missing here may exist there."""
    paper = str(ROOT / "recipes" / "qwen3b_math.yaml")
    result = CliRunner().invoke(cli, ["recipe", "validate", paper, "--set", "model.path=/nodes/q"])
    assert result.exit_code == 0, result.output
    assert "warning: --set model.path: '/nodes/q' is not a folder or file here" in result.output


def test_run_into_proc_is_one_line(tmp_path):
    """Item 14: an --out that cannot be created."""
    result = CliRunner().invoke(cli, ["run", TINY, "--out", "/proc/self/x/run"])
    one_line_error(result, "/proc/self/x/run", "cannot write")


def test_unwritable_places_are_one_line(tmp_path):
    """Item 14: run --out, eval --out and recipe new -o under a file (unwritable even for root, as
    a read-only folder is not); a HOME the cache cannot go under."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    runner = CliRunner()
    one_line_error(runner.invoke(cli, ["run", TINY, "--out", str(blocker / "run")]), "cannot")
    lines = tmp_path / "g.jsonl"
    lines.write_text('{"reference": "2", "responses": ["\\\\boxed{2}"]}\n')
    result = runner.invoke(cli, ["eval", "--responses", str(lines), "--out", str(blocker / "e")])
    one_line_error(result, "cannot write")
    result = runner.invoke(
        cli,
        [
            "recipe",
            "new",
            "--method",
            "gt",
            "--model",
            "builtin:tiny-arith",
            "-o",
            str(blocker / "r.yaml"),
        ],
    )
    one_line_error(result, "cannot write")
    env = {"HOME": str(blocker), "COREWARD_CACHE": "", "XDG_CACHE_HOME": ""}
    result = runner.invoke(cli, ["eval", "builtin:tiny-arith", "--limit", "1"], env=env)
    one_line_error(result, "COREWARD_CACHE")
    assert blocker.read_text() == ""


def test_recipe_list_marks_bad_files_and_lists_the_good(tmp_path, monkeypatch):
    """Item 16: a binary *.yaml, a tagged one and a folder named x.yaml."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "good.yaml").write_text(Path(TINY).read_text())
    (recipes / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (recipes / "tagged.yaml").write_text("model: !!python/name:os.system\n")
    (recipes / "x.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["recipe", "list", "--json"])
    assert result.exit_code == 0, result.output
    import json

    rows = {Path(r["recipe"]).name: r for r in map(json.loads, result.output.splitlines())}
    local = {
        k: v for k, v in rows.items() if k in {"good.yaml", "binary.yaml", "tagged.yaml", "x.yaml"}
    }
    assert set(local) == {"good.yaml", "binary.yaml", "tagged.yaml", "x.yaml"}
    assert "error" not in rows["good.yaml"]
    assert all("error" in local[k] for k in ("binary.yaml", "tagged.yaml", "x.yaml"))


def test_recipe_new_model_with_a_newline_stays_in_the_header_comment(tmp_path, monkeypatch):
    out = tmp_path / "r.yaml"
    (tmp_path / "x\nseed: 5").mkdir()  # a model folder with that name: the path check passes
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "recipe",
            "new",
            "--method",
            "gt",
            "--model",
            "x\nseed: 5",
            "--data",
            "builtin:tiny-arith",
            "--engine",
            "local",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    import yaml

    assert yaml.safe_load(out.read_text())["seed"] != 5
    assert not any(line.startswith("seed: 5") for line in out.read_text().splitlines())


def test_shipped_recipe_resolves_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["recipe", "validate", "tiny_cpu"])
    assert result.exit_code == 0 and "co_rewarding_i" in result.output, result.output
    one_line_error(CliRunner().invoke(cli, ["recipe", "validate", "no_such_recipe"]), "no such")


def test_a_wheel_ships_the_recipes(tmp_path):
    """A pip-installed coreward (a wheel, no checkout beside it) resolves and lists the shipped
    recipes by name from any folder."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    source, wheels, site = tmp_path / "source", tmp_path / "wheels", tmp_path / "site"
    for name in ("coreward_cli", "plugins", "recipes"):  # a clean copy: no build/ left from before
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(root / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("coreward-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    assert {p.name for p in (site / "coreward_cli" / "recipes").glob("*.yaml")} == {
        p.name for p in (root / "recipes").glob("*.yaml")
    }
    code = (
        "import sys; from coreward_cli.main import cli; "
        "sys.argv = ['coreward', *sys.argv[1:]]; cli()"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    shown = subprocess.run(
        [sys.executable, "-c", code, "recipe", "show", "tiny_cpu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert "builtin:tiny-arith" in shown.stdout
    listed = subprocess.run(
        [sys.executable, "-c", code, "recipe", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and "qwen3b_math_gt" in listed.stdout, listed.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import coreward_cli; print(coreward_cli.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site)), where.stdout  # the wheel's copy, not the checkout
