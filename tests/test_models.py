"""Model specs: run directories, checkpoints, GGUF files, hub ids, and load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from coreward_cli.errors import UserError
from coreward_cli.models import (
    ModelSource,
    load_causal_lm,
    load_tokenizer,
    model_source,
    resolve_model,
)


def make_run(
    root: Path, steps: tuple[int, ...] = (10, 20), final: bool = True, teacher: bool = False
) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("method: {name: gt}\n")
    for step in steps:
        ckpt = run / "checkpoints" / f"step-{step:06d}"
        (ckpt / "policy").mkdir(parents=True)
        (ckpt / "state.json").write_text("{}")
        (ckpt / "checksums.json").write_text("{}")  # written last: the checkpoint is complete
        if teacher:
            (ckpt / "teacher").mkdir()
    if steps:
        (run / "checkpoints" / "latest").write_text(f"step-{steps[-1]:06d}\n")
    if final:
        (run / "final").mkdir()
        if teacher:
            (run / "final_teacher").mkdir()
    return run


def test_run_dir_resolves_to_final_step_and_teacher(tmp_path: Path) -> None:
    run = make_run(tmp_path, teacher=True)
    assert resolve_model(str(run)) == str(run / "final")
    assert resolve_model(str(run), step=10) == str(run / "checkpoints" / "step-000010" / "policy")
    assert resolve_model(str(run), teacher=True) == str(run / "final_teacher")
    assert resolve_model(str(run), step=20, teacher=True) == str(
        run / "checkpoints" / "step-000020" / "teacher"
    )


def test_run_dir_without_final_uses_the_latest_checkpoint(tmp_path: Path) -> None:
    run = make_run(tmp_path, final=False)
    assert resolve_model(str(run)) == str(run / "checkpoints" / "step-000020" / "policy")
    (run / "checkpoints" / "step-000020" / "checksums.json").unlink()  # a crash mid-write
    with pytest.raises(UserError, match="no complete checkpoint"):
        resolve_model(str(run))


def test_run_dir_errors_name_what_exists(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(UserError, match="no checkpoint for step 30.*step-000010, step-000020"):
        resolve_model(str(run), step=30)
    with pytest.raises(UserError, match="teacher"):
        resolve_model(str(run), step=10, teacher=True)


def test_other_specs(tmp_path: Path) -> None:
    assert resolve_model("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"
    with pytest.raises(UserError, match="not found"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="unknown built-in"):
        resolve_model("builtin:nope")
    folder = tmp_path / "plain"
    folder.mkdir()
    with pytest.raises(UserError, match="--step applies to run directories"):
        resolve_model(str(folder), step=3)
    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_source(resolve_model(str(gguf))) == ModelSource(str(tmp_path), "m.Q4.gguf")
    assert model_source(str(tmp_path), "m.Q4.gguf").name == "m.Q4"


def test_loads_a_saved_model_and_refuses_a_broken_one(tmp_path: Path) -> None:
    from coreward_cli import toy

    folder = tmp_path / "tiny"
    toy.build_model(seed=0).save_pretrained(folder)
    toy.build_tokenizer().save_pretrained(folder)
    source = model_source(resolve_model(str(folder)))
    model, tokenizer = load_causal_lm(source, device="cpu"), load_tokenizer(source)
    assert model.config.hidden_size == toy.MODEL_CONFIG["hidden_size"]
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="does not load"):
        load_causal_lm(model_source(resolve_model(str(folder))), device="cpu")
