"""`coreward report` on real tiny runs as a person sees it: figures that are not blank, an HTML page
that opens offline and shows its images in a browser, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from coreward_cli.main import cli
from tests.cli_checks import one_line_error

torch.set_num_threads(2)

RECIPE = """
model: {{path: '{model}', chat_template: false, system_prompt: null, dtype: fp32}}
data:
  train: [{{original: 'builtin:tiny-arith'}}]
  eval: [arithmetic]
  eval_limit: 24
method: {{name: {method}}}
rollout: {{n: 4, temperature: 0.8, max_prompt_tokens: 32, max_new_tokens: 8}}
train: {{problems_per_step: 4, lr: 1.0e-4, warmup_ratio: 0.0, schedule: constant, max_steps: {steps}, kl_coef: 0.0, micro_batch_size: 64, stop_on_collapse: {stop}}}
engine: {{device: cpu, threads: 2}}
output: {{dir: 'runs/{{recipe}}', save_interval: 2, eval_interval: 2}}
seed: 4
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def train(folder: Path, model: str, method: str, steps: int = 4, stop: bool = False) -> Path:
    recipe = folder / f"{method}.yaml"
    recipe.write_text(
        RECIPE.format(model=model, method=method, steps=steps, stop=str(stop).lower())
    )
    out = folder / method
    result = invoke("run", str(recipe), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def toy_folder(make_toy_folder) -> str:
    return make_toy_folder(seed=1)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, toy_folder) -> list[Path]:
    """Two real runs of the local engine from an untrained toy: Co-rewarding-I and random."""
    folder = tmp_path_factory.mktemp("runs")
    return [train(folder, toy_folder, m) for m in ("co_rewarding_i", "random")]


@pytest.fixture(scope="module")
def report(tmp_path_factory, two_runs) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    result = invoke("report", *map(str, two_runs), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def pixel_sd(png: Path) -> float:
    import matplotlib.image

    return float(matplotlib.image.imread(png)[..., :3].std())


def test_every_run_step_logs_collapse_risk(two_runs):
    for run in two_runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert all(isinstance(r["collapse_risk"], float) for r in rows if r["step"] > 0)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["stopped_on_collapse"] is None


def test_report_writes_non_blank_figures_for_the_default_panels(report):
    names = {p.name for p in report.glob("*.png")}
    for panel in ("reward_mean", "no_answer_share", "eval-arithmetic", "entropy", "lr"):
        assert f"fig-{panel}.png" in names and f"fig-{panel}.svg" in {
            p.name for p in report.glob("*.svg")
        }
    assert "overview.png" in names
    for png in report.glob("*.png"):
        assert png.stat().st_size > 5000
        assert pixel_sd(png) > 0.05, f"{png.name} looks blank"


def test_report_html_is_self_contained_and_tables_name_both_runs(report, two_runs):
    page = (report / "report.html").read_text()
    assert "http" not in page  # no CDN, no remote image, no link out
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == len(list(report.glob("fig-*.png")))
    assert all(src.startswith("data:image/png;base64,") for src in images)
    md = (report / "report.md").read_text()
    for text in (page, md):
        assert "co_rewarding_i, seed 4" in text and "random, seed 4" in text
        assert "method.name" in text  # the recipe difference between the two
    assert "KL to the anchor (kl): no run logged it" in md


def find_chromium() -> str | None:
    return next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )


def test_report_renders_its_images_in_headless_chromium(report, tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip(
            "headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
        )
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    # The page as shipped, plus a probe that records each image's decoded width once loaded.
    probe = tmp_path / "probe.html"
    probe.write_text(
        (report / "report.html")
        .read_text()
        .replace(
            "</body>",
            "<script>window.addEventListener('load', () => document.body.setAttribute("
            "'data-widths', [...document.images].map(i => i.naturalWidth).join(',')));</script></body>",
        )
    )
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    widths = re.search(r'data-widths="([^"]*)"', dom)
    assert widths, dom[-500:]
    decoded = [int(w) for w in widths.group(1).split(",")]
    assert len(decoded) == len(list(report.glob("fig-*.png"))) and min(decoded) > 100
    shot = tmp_path / "screenshot.png"
    subprocess.run(
        [
            *flags,
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            (report / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and pixel_sd(shot) > 0.05
    keep = Path("runs") / "report-screenshot.png"  # for a person to look at after the test
    if keep.parent.is_dir():
        shutil.copy(shot, keep)


def test_group_seeds_and_smoothing(two_runs, tmp_path):
    out = tmp_path / "grouped"
    result = invoke(
        "report",
        *map(str, two_runs),
        "--out",
        str(out),
        "--group-seeds",
        "--smooth",
        "3",
        "--metrics",
        "reward_mean,collapse_risk",
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.glob("fig-*.png")} == {
        "fig-reward_mean.png",
        "fig-collapse_risk.png",
    }


def test_stop_on_collapse_keeps_the_last_checkpoint_before_the_warning(
    tmp_path, toy_folder, monkeypatch
):
    """A detector tuned to fire at the first change stops a real run; final/ is the checkpoint
    written before the warning and none is written at or after it."""
    from safetensors.torch import load_file

    from coreward_cli.engines import collapse_watch
    from coreward_plugins.collapse import CollapseDetector, CollapseSettings

    hair_trigger = CollapseSettings(
        baseline_steps=3, window=1, patience=1, clusters_rise=1e-6, length_change=1e-6
    )
    monkeypatch.setattr(collapse_watch, "CollapseDetector", lambda: CollapseDetector(hair_trigger))
    run = train(tmp_path, toy_folder, "random", steps=10, stop=True)
    summary = json.loads((run / "summary.json").read_text())
    fired = summary["stopped_on_collapse"]
    assert fired is not None and fired == summary["collapse_warning_step"] and 3 <= fired < 10
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == fired and rows[-1]["collapse_risk"] >= 1.0
    saved = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert saved and int(saved[-1].removeprefix("step-")) < fired
    final = load_file(run / "final" / "model.safetensors")
    kept = load_file(run / "checkpoints" / saved[-1] / "policy" / "model.safetensors")
    assert all(torch.equal(final[k], kept[k]) for k in final)


# ------------------------------------------------------------------ bad input


def metrics_run(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def test_not_a_run_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(invoke("report", str(tmp_path / "empty")), "not a run folder", "metrics.jsonl")
    one_line_error(invoke("report", str(tmp_path / "nowhere")), "no such run folder")


def test_empty_and_garbled_metrics(tmp_path):
    empty = metrics_run(tmp_path / "empty", [])
    one_line_error(invoke("report", str(empty)), "no metrics in it yet")
    garbled = metrics_run(
        tmp_path / "garbled", ['{"step": 0, "eval_accuracy": 0.5}', '{"step": 1, "rew']
    )
    one_line_error(invoke("report", str(garbled)), "metrics.jsonl:2", "not a JSON line")
    stepless = metrics_run(tmp_path / "stepless", ['{"loss": 1.0}'])
    one_line_error(invoke("report", str(stepless / "metrics.jsonl")), ':1: no integer "step"')
    assert not (tmp_path / "garbled" / "report").exists()  # nothing half-written


def test_one_step_and_disjoint_metrics_give_a_report_that_says_what_is_missing(tmp_path):
    one = metrics_run(
        tmp_path / "one",
        ['{"step": 0, "eval_accuracy": 0.5}', '{"step": 1, "reward_mean": 0.5, "entropy": 0.1}'],
    )
    other = metrics_run(
        tmp_path / "other",
        [
            json.dumps(  # an OpenRLHF run's names
                {"step": s, "coreward/agreement_share": 0.8, "actor_lr": 1e-6}
                | ({"eval/eval_math500_pass1": 0.4 + s / 10} if s != 2 else {})
            )
            for s in (1, 2, 3)
        ],
    )
    out = tmp_path / "rep"
    result = invoke("report", str(one), str(other), "--out", str(out))
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    assert "1 training step(s) logged" in md
    assert "reward (mean) (reward_mean): not logged by other" in md
    assert "agreement share (majority / voters) (agreement_share): not logged by one" in md
    for panel in ("agreement_share", "lr", "eval-math500"):
        assert (out / f"fig-{panel}.png").is_file()
    assert "| other | 50.0% | 70.0% | +20.0 pts |" in md
    for png in out.glob("*.png"):
        assert pixel_sd(png) > 0.05


def test_metrics_that_no_run_has(tmp_path):
    run = metrics_run(
        tmp_path / "r", ['{"step": 1, "reward_mean": 0.5}', '{"step": 2, "reward_mean": 0.6}']
    )
    one_line_error(
        invoke("report", str(run), "--metrics", "nonsense,kl", "--out", str(tmp_path / "o")),
        "--metrics",
        "reward_mean",
    )
    assert not (tmp_path / "o").exists()


def test_out_that_is_not_a_report_is_never_replaced(tmp_path):
    run = metrics_run(
        tmp_path / "r", ['{"step": 1, "reward_mean": 0.5}', '{"step": 2, "reward_mean": 0.6}']
    )
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    one_line_error(invoke("report", str(run), "--out", str(keep)), "not a coreward report")
    assert (keep / "notes.txt").read_text() == "mine"
