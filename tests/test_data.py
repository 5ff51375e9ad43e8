"""Training data: the published layouts (verl parquet pairs, two-column releases), jsonl/json files,
hub names resolved through data.data_dir, and the one-line errors for data that does not fit."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coreward_cli.data import PUBLISHED, Problem, load_train_problems
from coreward_cli.errors import UserError
from coreward_cli.resolve import load_recipe_text

SYSTEM = "Let's think step by step and output the final answer within \\boxed{}."


def verl_rows(questions: list[str], answers: list[str], start: int = 0) -> list[dict]:
    return [
        {
            "data_source": "DigitalLearningGmbH/MATH-lighteval",
            "prompt": [{"content": SYSTEM, "role": "system"}, {"content": q, "role": "user"}],
            "reward_model": {"ground_truth": a, "style": "rule"},
            "extra_info": {"index": start + i, "split": "train"},
        }
        for i, (q, a) in enumerate(zip(questions, answers))
    ]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def recipe(data_yaml: str, method: str = "co_rewarding_i", overrides: tuple[str, ...] = ()):
    text = f"model: {{path: Qwen/Qwen2.5-0.5B}}\nmethod: {{name: {method}}}\ndata:\n{data_yaml}"
    return load_recipe_text(text, "test.yaml", overrides, warn=lambda message: None)


def one_line(exc: pytest.ExceptionInfo[UserError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture
def verl_pair(tmp_path: Path) -> tuple[Path, Path]:
    questions = ["What is 2+3?", "What is 7*6?", "Solve x+1=3."]
    rephrased = [
        "Ann has 2 apples and gets 3 more; how many?",
        "Six crates of seven eggs: how many eggs?",
        "A number plus one is three; find it.",
    ]
    answers = ["5", "42", "2"]
    return (
        write_parquet(tmp_path / "train_original.parquet", verl_rows(questions, answers)),
        write_parquet(tmp_path / "train_rephrased.parquet", verl_rows(rephrased, answers)),
    )


def test_verl_parquet_pair_gives_paired_problems(verl_pair: tuple[Path, Path]) -> None:
    original, rephrased = verl_pair
    problems = load_train_problems(
        recipe(f"  train:\n    - original: {original}\n      rephrased: {rephrased}\n")
    )
    assert problems[0] == Problem(
        "0", "What is 2+3?", "Ann has 2 apples and gets 3 more; how many?", "5"
    )
    assert [p.id for p in problems] == ["0", "1", "2"]
    assert [p.answer for p in problems] == ["5", "42", "2"]
    assert all(
        SYSTEM not in p.question for p in problems
    )  # the user turn only; the recipe adds the system prompt


def test_pair_of_different_length_is_one_clear_line(
    verl_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    original, _ = verl_pair
    short = write_parquet(tmp_path / "short.parquet", verl_rows(["a", "b"], ["1", "2"]))
    with pytest.raises(UserError) as exc:
        load_train_problems(
            recipe(f"  train:\n    - original: {original}\n      rephrased: {short}\n")
        )
    message = one_line(exc)
    assert "has 3 rows" in message and "has 2" in message and "row-aligned" in message


def test_pair_with_shuffled_rows_is_refused(verl_pair: tuple[Path, Path], tmp_path: Path) -> None:
    original, _ = verl_pair
    shuffled = write_parquet(
        tmp_path / "shuffled.parquet", list(reversed(verl_rows(["a", "b", "c"], ["1", "2", "3"])))
    )
    with pytest.raises(UserError) as exc:
        load_train_problems(
            recipe(f"  train:\n    - original: {original}\n      rephrased: {shuffled}\n")
        )
    assert "row 0 is problem 0" in one_line(exc) and "not row-aligned" in one_line(exc)


def test_one_file_with_two_question_columns(tmp_path: Path) -> None:
    rows = [
        {"idx": 10 + i, "original_question": q, "rephrased_question": r, "solution": a}
        for i, (q, r, a) in enumerate(
            [("1+1?", "one plus one?", "2"), ("2+2?", "two plus two?", "4")]
        )
    ]
    path = write_parquet(tmp_path / "pairs.parquet", rows)
    data = (
        f"  train: [{path}]\n  question_key: original_question\n  rephrased_key: rephrased_question\n"
        "  answer_key: solution\n  id_key: idx\n"
    )
    problems = load_train_problems(recipe(data))
    assert problems == [
        Problem("10", "1+1?", "one plus one?", "2"),
        Problem("11", "2+2?", "two plus two?", "4"),
    ]


def test_jsonl_with_dotted_keys_and_row_numbers(tmp_path: Path) -> None:
    rows = [{"item": {"text": f"What is {i}+{i}?", "meta": {"gold": 2 * i}}} for i in range(4)]
    path = write_jsonl(tmp_path / "q.jsonl", rows)
    data = f"  train: [{path}]\n  question_key: item.text\n  answer_key: item.meta.gold\n  id_key: null\n  max_problems: 3\n"
    problems = load_train_problems(recipe(data, method="majority_vote"))
    assert [(p.id, p.question, p.answer, p.rephrased) for p in problems] == [
        ("0", "What is 0+0?", "0", None),
        ("1", "What is 1+1?", "2", None),
        ("2", "What is 2+2?", "4", None),
    ]


def test_json_array_and_several_sources_get_unique_ids(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text(
        json.dumps(
            [{"question": "q1", "answer": "1", "id": 0}, {"question": "q2", "answer": "2", "id": 1}]
        ),
        encoding="utf-8",
    )
    b = write_jsonl(tmp_path / "b.jsonl", [{"question": "q3", "answer": "3", "id": 0}])
    data = f"  train: [{a}, {b}]\n  question_key: question\n  answer_key: answer\n  id_key: id\n"
    problems = load_train_problems(recipe(data, method="gt"))
    assert [p.id for p in problems] == ["0:0", "0:1", "1:0"]
    assert [p.question for p in problems] == ["q1", "q2", "q3"]


def test_missing_column_names_it_and_the_available_ones(verl_pair: tuple[Path, Path]) -> None:
    original, rephrased = verl_pair
    with pytest.raises(UserError) as exc:
        load_train_problems(
            recipe(
                f"  train: [{{original: {original}, rephrased: {rephrased}}}]\n  answer_key: reward_model.answer\n"
            )
        )
    message = one_line(exc)
    assert "no column 'reward_model.answer'" in message
    assert (
        "reward_model.ground_truth" in message
        and "extra_info.index" in message
        and "data.answer_key" in message
    )


def test_duplicate_ids_and_bad_json_lines_are_one_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [{"q": "a", "id": 1}, {"q": "b", "id": 1}])
    with pytest.raises(UserError) as exc:
        load_train_problems(
            recipe(
                f"  train: [{path}]\n  question_key: q\n  id_key: id\n  answer_key: null\n",
                method="entropy",
            )
        )
    assert "id 1 twice (rows 0 and 1)" in one_line(exc)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"q": "a"}\n{"q": \n', encoding="utf-8")
    with pytest.raises(UserError) as exc:
        load_train_problems(
            recipe(
                f"  train: [{broken}]\n  question_key: q\n  id_key: null\n  answer_key: null\n",
                method="entropy",
            )
        )
    assert f"{broken}:2: not valid JSON" in one_line(exc)


def test_empty_question_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"q": "fine"}, {"q": "  "}])
    with pytest.raises(UserError) as exc:
        load_train_problems(
            recipe(
                f"  train: [{path}]\n  question_key: q\n  id_key: null\n  answer_key: null\n",
                method="entropy",
            )
        )
    assert "row 1" in one_line(exc) and "no question text" in one_line(exc)


@pytest.mark.parametrize(
    "under_train", [False, True], ids=["data_dir=train-folder", "data_dir=data-root"]
)
def test_published_names_resolve_through_data_dir(tmp_path: Path, under_train: bool) -> None:
    folder = tmp_path / "train" / "math"
    write_parquet(folder / "train_original.parquet", verl_rows(["q0", "q1"], ["a0", "a1"]))
    write_parquet(folder / "train_rephrased.parquet", verl_rows(["r0", "r1"], ["a0", "a1"]))
    data_dir = tmp_path if under_train else tmp_path / "train"
    paired = recipe(
        f"  train: [TMLR-Group-HF/Co-rewarding-RephrasedMATH]\n  data_dir: {data_dir}\n"
    )
    assert [(p.question, p.rephrased) for p in load_train_problems(paired)] == [
        ("q0", "r0"),
        ("q1", "r1"),
    ]
    single = recipe(
        f"  train: [DigitalLearningGmbH/MATH-lighteval]\n  data_dir: {data_dir}\n", method="gt"
    )
    assert [(p.question, p.rephrased, p.answer) for p in load_train_problems(single)] == [
        ("q0", None, "a0"),
        ("q1", None, "a1"),
    ]


def test_published_name_missing_under_data_dir_fails_at_validation(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        recipe(f"  train: [TMLR-Group-HF/Co-rewarding-RephrasedDAPO-14k]\n  data_dir: {tmp_path}\n")
    assert "test.yaml:" in one_line(exc) and "dapo/train_original.parquet" in one_line(exc)


def test_hub_name_offline_suggests_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    r = recipe(
        "  train: [TMLR-Group-HF/Co-rewarding-RephrasedMATH]\n"
    )  # valid: hub ids are not checked
    with pytest.raises(UserError) as exc:
        load_train_problems(r)
    assert "offline" in one_line(exc) and "data.data_dir" in one_line(exc)


def test_hub_datasets_use_their_published_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, a published name goes through `datasets.load_dataset` with its own column layout."""
    calls = []
    tables = {
        "TMLR-Group-HF/Co-rewarding-RephrasedMATH": [
            {
                "idx": 7,
                "original_question": "o",
                "rephrased_question": "r",
                "solution": "3",
                "original_message": [],
            }
        ],
        "DigitalLearningGmbH/MATH-lighteval": [
            {
                "problem": "p",
                "solution": "so the answer is $\\boxed{\\frac{1}{2}}$.",
                "level": "Level 1",
                "type": "Algebra",
            }
        ],
    }

    def load_dataset(name: str, config: str | None = None, split: str = "train") -> list[dict]:
        calls.append((name, config, split))
        return tables[name]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert load_train_problems(recipe("  train: [TMLR-Group-HF/Co-rewarding-RephrasedMATH]\n")) == [
        Problem("7", "o", "r", "3")
    ]
    problems = load_train_problems(
        recipe("  train: [DigitalLearningGmbH/MATH-lighteval]\n", method="gt")
    )
    assert problems == [Problem("0", "p", None, "\\frac{1}{2}")]
    assert calls == [
        ("TMLR-Group-HF/Co-rewarding-RephrasedMATH", None, "train"),
        ("DigitalLearningGmbH/MATH-lighteval", None, "train"),
    ]


def test_builtin_is_the_toy_task() -> None:
    r = recipe(
        "  train: [builtin:tiny-arith]\n  max_problems: 5\n",
        overrides=("model.path=builtin:tiny-arith",),
    )
    assert load_train_problems(r) == [
        Problem("0+0", "0+0=", "add 0 and 0:", "0"),
        Problem("0+1", "0+1=", "sum of 0 and 1?", "1"),
        Problem("0+2", "0+2=", "add 2 and 0:", "2"),
        Problem("0+3", "0+3=", "sum of 0 and 3?", "3"),
        Problem("0+4", "0+4=", "add 4 and 0:", "4"),
    ]


def test_published_table_knows_the_public_names() -> None:
    assert PUBLISHED["TMLR-Group-HF/Co-rewarding-RephrasedMATH"].files["train"] == (
        "math/train_original.parquet",
        "math/train_rephrased.parquet",
    )
    assert PUBLISHED["DigitalLearningGmbH/MATH-lighteval"].files["test"] == (
        "math/test.parquet",
        None,
    )


# ---------------------------------------------------------------- the real published files (skipped where absent)

REAL = [
    ("math", "TMLR-Group-HF/Co-rewarding-RephrasedMATH", None, 7500),
    ("dapo", "TMLR-Group-HF/Co-rewarding-RephrasedDAPO-14k", None, 14109),
    ("openrs", "TMLR-Group-HF/Co-rewarding-RephrasedOpenRS", None, 6999),
    (
        "amc",
        "{root}/train/amc/test_original.parquet",
        "{root}/train/amc/test_rephrased.parquet",
        83,
    ),
]


@pytest.mark.parametrize("name,original,rephrased,rows", REAL, ids=[r[0] for r in REAL])
def test_real_train_layouts(
    shared_data: Path, name: str, original: str, rephrased: str | None, rows: int
) -> None:
    source = f"original: {original.format(root=shared_data)}"
    if rephrased:
        source += f", rephrased: {rephrased.format(root=shared_data)}"
    problems = load_train_problems(
        recipe(f"  train: [{{{source}}}]\n  data_dir: {shared_data / 'train'}\n")
    )
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert all(p.question and p.rephrased for p in problems)
    assert sum(p.answer is None for p in problems) <= 2  # MATH has two empty references, OpenRS one
    assert (
        sum(p.question != p.rephrased for p in problems) > 0.9 * rows
    )  # a different wording, row by row
    assert all(not p.question.startswith("Let's think step by step") for p in problems)


def test_real_math_test_split_and_max_problems(shared_data: Path) -> None:
    r = recipe(
        f"  train: [{{original: DigitalLearningGmbH/MATH-lighteval, split: test}}]\n  data_dir: {shared_data}\n  max_problems: 100\n",
        method="majority_vote",
    )
    problems = load_train_problems(r)
    assert (
        len(problems) == 100
        and problems[0].answer == "2"
        and "vertical asymptotes" in problems[0].question
    )


def test_rows_read_chats_as_their_question_and_other_lists_as_they_are() -> None:
    from coreward_cli import rows

    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 2+2?"}]
    record = {"prompt": chat, "data": {"train": [{"original": "a.parquet"}]}, "x.y": 1}
    assert rows.get(record, "prompt") == "What is 2+2?"
    assert rows.get(record, "data.train") == [{"original": "a.parquet"}]  # not a chat
    assert rows.get(record, "x.y") == 1 and rows.get(record, "data.missing") is None
    assert rows.lookup(record, "data.missing") is rows.MISSING
