"""Nothing a user does to a run folder loses work or runs code (issue 11): damaged or planted
checkpoint files, resuming a finished run, two runs in one folder."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from coreward_cli import runlayout
from coreward_cli.engines import local, rundir
from coreward_cli.engines.checkpoint import file_digests
from coreward_cli.errors import UserError
from coreward_cli.fileutil import write_json_atomic
from coreward_cli.main import cli
from coreward_cli.resolve import load_recipe
from tests.test_resume import assert_same_run, metrics, toy_folder, write_recipe  # noqa: F401


def train(recipe: Path, out: Path, resume: bool = False) -> tuple[dict, str]:
    console = Console(record=True, width=400, file=open(os.devnull, "w"))
    summary = local.train(load_recipe(recipe), out, resume, console)
    return summary, console.export_text()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, toy_folder):  # noqa: F811
    """A 4-step run with checkpoints at steps 2 and 4, and its recipe."""
    root = tmp_path_factory.mktemp("finished")
    recipe = write_recipe(root, toy_folder, steps=4, kl=0.0)
    train(recipe, root / "run")
    return recipe, root / "run"


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def snapshot(folder: Path) -> dict[str, str]:
    return file_digests(folder)


def ckpt(run: Path, step: int) -> Path:
    return runlayout.checkpoint_dir(run, step)


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {Boom.marker}",))


def plant_pickle(folder: Path, marker: Path) -> None:
    """A trainer_state.pt that runs a command when unpickled, with checksums updated to match."""
    Boom.marker = marker
    (folder / runlayout.TRAINER_STATE).write_bytes(pickle.dumps({"optimizer": Boom()}))
    write_json_atomic(folder / runlayout.CHECKSUMS, file_digests(folder))


def test_planted_pickle_runs_nothing_and_errors_in_one_line(tmp_path, finished):
    recipe, src = finished
    run = copy_run(src, tmp_path / "run")
    marker = tmp_path / "pwned"
    for step in (2, 4):
        plant_pickle(ckpt(run, step), marker)
    (run / runlayout.SUMMARY).unlink()  # not finished: resume must read a checkpoint
    before = snapshot(run)
    result = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(run), "--resume"])
    assert not marker.exists()
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "trainer_state.pt" in lines[0] and "--force" in lines[0]
    assert {k: v for k, v in snapshot(run).items() if k != runlayout.LOCK} == {
        k: v for k, v in before.items() if k != runlayout.LOCK
    }


def _truncate_trainer_state(folder: Path) -> None:
    path = folder / runlayout.TRAINER_STATE
    path.write_bytes(path.read_bytes()[:100])


def _zero_weights(folder: Path) -> None:
    path = folder / runlayout.POLICY / "model.safetensors"
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start : start + 2**20] = bytes(min(2**20, len(data) - start))
    path.write_bytes(bytes(data))


DAMAGE = {
    "latest_garbled": lambda f: (f.parent / runlayout.LATEST).write_bytes(b"\x00\xffstep-9"),
    "state_json_missing": lambda f: (f / runlayout.STATE_JSON).unlink(),
    "trainer_state_truncated": _truncate_trainer_state,
    "weights_zeroed": _zero_weights,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, finished, damage):
    """Items 2, 5, 13: resume from the newest checkpoint that verifies (step 2, saying so, or step 4
    when only `latest` is garbled), and end as the uninterrupted run did."""
    recipe, src = finished
    run = copy_run(src, tmp_path / "run")
    for name in (runlayout.SUMMARY, runlayout.FINAL):
        (run / name).unlink() if (run / name).is_file() else __import__("shutil").rmtree(run / name)
    DAMAGE[damage](ckpt(run, 4))
    kept = snapshot(ckpt(run, 2))
    _, out = train(recipe, run, resume=True)
    resumed = [line for line in out.splitlines() if "Resuming" in line]
    want = "step-000004" if damage == "latest_garbled" else "step-000002"
    assert resumed and want in resumed[0], out
    if damage != "latest_garbled":
        assert "skipped" in out and "step-000004" in out
    assert snapshot(ckpt(run, 2)) == kept
    assert_same_run(src, run)


def test_no_checkpoint_verifies_stops_without_starting_over(tmp_path, finished):
    recipe, src = finished
    run = copy_run(src, tmp_path / "run")
    (run / runlayout.SUMMARY).unlink()
    _zero_weights(ckpt(run, 4))
    (ckpt(run, 2) / runlayout.STATE_JSON).unlink()
    before = snapshot(run)
    with pytest.raises(UserError, match="no checkpoint verifies.*step-000004.*model.safetensors"):
        train(recipe, run, resume=True)
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != runlayout.LOCK} == {
        k: v for k, v in before.items() if k != runlayout.LOCK
    }


def test_resuming_a_finished_run_changes_nothing(tmp_path, finished):
    recipe, src = finished
    run = copy_run(src, tmp_path / "run")
    before = snapshot(run)
    summary, out = train(recipe, run, resume=True)
    assert "already finished" in out
    assert summary == json.loads((src / runlayout.SUMMARY).read_text())
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != runlayout.LOCK} == {
        k: v for k, v in before.items() if k != runlayout.LOCK
    }


def test_killed_before_final_is_finished_properly(tmp_path, finished):
    """Last checkpoint written, then killed: resume writes final/ and a summary with the real
    after-training accuracy (not eval_before again)."""
    import shutil

    recipe, src = finished
    run = copy_run(src, tmp_path / "run")
    shutil.rmtree(run / runlayout.FINAL)
    (run / runlayout.SUMMARY).unlink()
    summary, _ = train(recipe, run, resume=True)
    want = json.loads((src / runlayout.SUMMARY).read_text())
    assert summary["eval_after"] == want["eval_after"]
    assert summary["eval_before"] == want["eval_before"]
    assert metrics(run) == metrics(src)
    assert_same_run(src, run)


def test_second_run_in_a_locked_folder_exits_2_naming_the_holder(tmp_path, finished):
    recipe, _ = finished
    run = tmp_path / "run"
    with rundir.locked(run):
        result = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(run)])
        assert result.exit_code == 2, result.output
        assert f"pid {os.getpid()}" in result.output and str(run) in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (run / runlayout.METRICS).exists()


def test_an_openrlhf_run_takes_the_lock_too(tmp_path, monkeypatch):
    """Item 4 on the cluster path: a second openrlhf launch into a folder in use exits 2 naming the
    holder, before it writes anything."""
    from coreward_cli.engines import openrlhf_job

    monkeypatch.setattr(openrlhf_job, "check_requirements", lambda address, gpus: None)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "qwen3b_math.yaml"
    run = tmp_path / "run"
    with rundir.locked(run):
        result = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(run)])
        assert result.exit_code == 2, result.output
        assert f"pid {os.getpid()}" in result.output and str(run) in result.output
    assert sorted(p.name for p in run.iterdir()) == [runlayout.LOCK]


def test_a_dead_holders_lock_does_not_block(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    code = (
        "import sys; from pathlib import Path; from coreward_cli.engines import rundir\n"
        "with rundir.locked(Path(sys.argv[1])): import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(run)], check=True)
    assert (run / runlayout.LOCK).read_text().strip().isdigit()
    with rundir.locked(run):
        assert (run / runlayout.LOCK).read_text().strip() == str(os.getpid())


def test_checkpoint_files_follow_the_umask(finished):
    """Checkpoints and final/ were written 0600 (safetensors' private temp file); now as exports."""
    _, run = finished
    umask = os.umask(0)
    os.umask(umask)
    for folder in (runlayout.CHECKPOINTS, runlayout.FINAL):
        for path in (run / folder).rglob("*"):
            if path.is_file() and path.name != runlayout.LATEST:
                assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_ctrl_c_says_how_to_continue(tmp_path, finished, monkeypatch):
    recipe, _ = finished

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "train", interrupted)
    result = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(tmp_path / "r")])
    assert result.exit_code == 130
    assert f"--out {tmp_path / 'r'} --resume" in result.output


def test_dry_run_resume_plan_names_the_checkpoint_it_would_use(tmp_path, finished):
    recipe, src = finished
    run = copy_run(src, tmp_path / "run")
    args = ["run", str(recipe), "--out", str(run), "--resume", "--dry-run", "--json"]
    assert "already finished" in json.loads(CliRunner().invoke(cli, args).stdout)["plan"]["action"]
    (run / runlayout.SUMMARY).unlink()
    _zero_weights(ckpt(run, 4))
    action = json.loads(CliRunner().invoke(cli, args).stdout)["plan"]["action"]
    assert action.startswith("resume from step-000002") and "step-000004" in action
