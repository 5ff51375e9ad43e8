"""`coreward rephrase`: a second wording of every training question, for Co-rewarding-I.

The default is the official recipe (Co-rewarding-I/rewrite_questions.py): the instruction below,
a blank line and the question as one user turn in the chat template with thinking off; one
sample per question at T 0.7, top-p 0.8; the rewrite is the text between `### RESULT_START` and
`### RESULT_END`, after the first `REWRITE:`; a row whose output does not parse is dropped from
both files. One addition: an empty rewrite is dropped too (the training loader needs a question).

`--verify K` goes further: K answers to each wording, and a pair is dropped when both wordings
have a majority answer and the two differ. The decision never reads the reference answer; the
reference is read afterwards, for a metric only.

OUT holds `config.json` (what was asked), `rephrasings.jsonl` (one line per source row, appended
after every batch, so a killed run loses at most the batch in flight and a rerun continues),
and, rebuilt from that log at the end of every run: `train_original.parquet` and
`train_rephrased.parquet` (row-aligned: the source rows that were kept, every column as read,
only the question replaced in the second), `pairs.jsonl` and `rephrase.json` (the statistics).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coreward_cli import rows as tables
from coreward_cli.data import SourceRows
from coreward_cli.errors import UserError, one_line
from coreward_cli.evaluate import batch_seed, check_config
from coreward_cli.fileutil import complete_lines, write_file_atomic, write_json_atomic
from coreward_cli.generation import Backend, SamplingConfig
from coreward_cli.prompts import Prompt, PromptStyle
from coreward_plugins.answers import AnswerMatcher, extract_answer
from coreward_plugins.voting import majority_vote

# Verbatim from the official script (its trailing newline included); the question follows a "\n".
INSTRUCTION = """You are given a math problem. Please rewrite it using different wording and a different real-world scenario, while keeping the underlying mathematical meaning and answer exactly the same.

Guidelines:
1. Do not change the math logic or the final answer.
2. Use different words and a new context to make it look like a different problem.
3. Avoid copying phrases or sentence structures from the original.
4. Make sure the rewritten question is natural, clear, and solvable.
5. Output ONLY between the following markers, and strictly in this format (no extra explanation):

### RESULT_START
ORIGINAL:
<original question>
REWRITE:
<rewritten question>
### RESULT_END
"""
START, END, SPLIT = "### RESULT_START", "### RESULT_END", "REWRITE:"
STYLE = PromptStyle(None, chat_template=True, thinking=False)

CONFIG_FILE = "config.json"
LOG_FILE = "rephrasings.jsonl"
STATS_FILE = "rephrase.json"
ORIGINAL_FILE = "train_original.parquet"
REPHRASED_FILE = "train_rephrased.parquet"
PAIRS_FILE = "pairs.jsonl"
OWNED = (CONFIG_FILE, LOG_FILE, STATS_FILE, ORIGINAL_FILE, REPHRASED_FILE, PAIRS_FILE)
ROW_ID = "source_row"  # id column added to the outputs when the source has none

# Why a row is dropped, in the order a row can fail.
NO_MARKERS, NO_REWRITE, EMPTY, DISAGREE = "no_markers", "no_rewrite", "empty_rewrite", "disagree"
AGREE, UNDECIDED = "agree", "undecided"


def instruction_sha() -> str:
    return hashlib.sha256(INSTRUCTION.encode()).hexdigest()[:16]


def rephrase_prompt(tokenizer: Any, question: str) -> Prompt:
    return STYLE.render(tokenizer, INSTRUCTION + "\n" + question.strip())


class ParseFailure(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_rewrite(text: str) -> tuple[str, str]:
    """(the model's copy of the original, the rewrite), by the official script's rules."""
    start, end = text.find(START), text.find(END)
    if start == -1 or end == -1 or end <= start:
        raise ParseFailure(NO_MARKERS)
    parts = text[start + len(START) : end].strip().split(SPLIT, 1)
    if len(parts) != 2:
        raise ParseFailure(NO_REWRITE)
    return parts[0].replace("ORIGINAL:", "").strip(), parts[1].strip()


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifySettings:
    sampling: SamplingConfig  # n = K
    style: PromptStyle
    match: str
    fallbacks: tuple[str, ...] = ()  # answer extraction after \boxed{} (extract_answer's names)


@dataclass(frozen=True)
class Check:
    """The answers to both wordings, their majority answers and the verdict."""

    original: list[str | None]
    rephrased: list[str | None]
    original_label: str | None
    rephrased_label: str | None
    verdict: str  # agree | disagree | undecided (a view without a majority answer)


def verdict(a: str | None, b: str | None, matcher: AnswerMatcher) -> str:
    if a is None or b is None:
        return UNDECIDED
    return AGREE if matcher.equal(a, b) else DISAGREE


def check_pairs(
    backend: Backend,
    pairs: list[tuple[str, str]],
    settings: VerifySettings,
    matcher: AnswerMatcher,
    seed: int,
) -> list[Check]:
    """K answers to each wording of each pair; only the questions are seen, never a reference."""
    prompts = [settings.style.render(backend.tokenizer, q) for pair in pairs for q in pair]
    groups = backend.generate(prompts, settings.sampling, seed)
    checks = []
    for i in range(len(pairs)):
        views = [
            [extract_answer(c.text, settings.fallbacks) for c in groups[2 * i + v]] for v in (0, 1)
        ]
        # A tie is no majority: the pair is kept rather than judged on a coin flip.
        labels = [majority_vote(answers, matcher, tie="none").label for answers in views]
        checks.append(Check(*views, *labels, verdict(*labels, matcher)))
    return checks


# ---------------------------------------------------------------- the log


@dataclass
class Line:
    """One source row's outcome: a line of rephrasings.jsonl."""

    index: int
    id: str
    output: str
    n_tokens: int
    seconds: float  # its share of its batch's time
    echo: str | None  # the model's copy of the original question
    rephrased: str | None
    drop: str | None
    check: dict[str, Any] | None = None

    @property
    def kept(self) -> bool:
        return self.drop is None


def read_log(path: Path) -> dict[int, Line]:
    lines: dict[int, Line] = {}
    for n, text in enumerate(complete_lines(path), 1):
        if not text.strip():
            continue
        try:
            line = Line(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise UserError(
                f"{path}:{n}: not a coreward rephrasings line ({exc}); pass --force to start over"
            ) from exc
        lines[line.index] = line
    return lines


def outcome(index: int, problem_id: str, text: str, n_tokens: int, seconds: float) -> Line:
    try:
        echo, rewrite = parse_rewrite(text)
    except ParseFailure as exc:
        return Line(index, problem_id, text, n_tokens, seconds, None, None, exc.reason)
    return Line(
        index, problem_id, text, n_tokens, seconds, echo, rewrite, None if rewrite else EMPTY
    )


# ---------------------------------------------------------------- the run


@dataclass
class RephraseRequest:
    source: SourceRows
    out_dir: Path
    config: dict[str, Any]  # everything that shapes the outputs; a rerun must match it to resume
    sampling: SamplingConfig
    limit: int | None = None
    batch_size: int | None = None
    verify: VerifySettings | None = None


def prepare_out(out_dir: Path, config: dict[str, Any], force: bool) -> None:
    """Refuse another config's folder unless forced (then remove exactly what rephrase writes)."""
    if force:
        for name in OWNED:
            (out_dir / name).unlink(missing_ok=True)
    check_config(out_dir, config, fix="pass --force to start over, or another --out", write=True)


def check_writable(source: SourceRows) -> None:
    """Fail before any generation when the rows cannot be written back as parquet."""
    import pyarrow as pa

    if source.layout.id_key is None and ROW_ID in source.rows[0]:
        raise UserError(
            f"DATA: {source.label} has a column '{ROW_ID}' but no id key; pass --id-key {ROW_ID}"
        )
    try:
        arrow_schema(source)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise UserError(
            f"DATA: the rows of {source.label} cannot be written as parquet ({one_line(exc)}); "
            "give every column one type"
        ) from exc


def arrow_schema(source: SourceRows) -> Any:
    """The parquet schema of the outputs: the source's columns (and the added id column)."""
    import pyarrow as pa

    numbered = source.layout.id_key is None
    rows = [{**row, ROW_ID: n} for n, row in enumerate(source.rows)] if numbered else source.rows
    return pa.Table.from_pylist(rows).schema


def run_rephrase(
    request: RephraseRequest,
    backend: Backend,
    verify_backend: Backend | None,
    console: Any,
) -> dict[str, Any]:
    """Rephrase (and verify) what the log lacks, then write every output; returns the stats."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    log_path = request.out_dir / LOG_FILE
    done = read_log(log_path)
    problems = request.source.problems
    selected = problems if request.limit is None else problems[: request.limit]
    pending = [i for i in range(len(selected)) if i not in done]
    verify = request.verify
    matcher = AnswerMatcher(verify.match) if verify else None
    spread = 2 * verify.sampling.n if verify else 1
    batch = request.batch_size or max(1, (256 if backend.name == "vllm" else 64) // spread)
    kept = sum(done[i].kept for i in range(len(selected)) if i in done)
    with (
        open(log_path, "a", encoding="utf-8") as log,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task(
            f"rephrase (kept {kept})", total=len(selected), completed=len(selected) - len(pending)
        )
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            started = time.perf_counter()
            prompts = [rephrase_prompt(backend.tokenizer, selected[i].question) for i in chunk]
            outputs = backend.generate(
                prompts, request.sampling, batch_seed(request.sampling.seed, "rephrase", chunk[0])
            )
            lines = [
                outcome(i, selected[i].id, group[0].text, group[0].n_tokens, 0.0)
                for i, group in zip(chunk, outputs)
            ]
            parsed = [line for line in lines if line.kept]
            if verify and verify_backend is not None and matcher is not None and parsed:
                pairs = [(selected[line.index].question, line.rephrased or "") for line in parsed]
                seed = batch_seed(verify.sampling.seed, "verify", chunk[0])
                for line, check in zip(
                    parsed, check_pairs(verify_backend, pairs, verify, matcher, seed)
                ):
                    line.check = asdict(check)
                    line.drop = DISAGREE if check.verdict == DISAGREE else None
            share = (time.perf_counter() - started) / len(chunk)
            for line in lines:
                line.seconds = round(share, 6)  # a fast model takes well under a millisecond a row
                log.write(json.dumps(asdict(line), ensure_ascii=False) + "\n")
                done[line.index] = line
            log.flush()
            os.fsync(log.fileno())
            kept += sum(line.kept for line in lines)
            progress.update(task, advance=len(chunk), description=f"rephrase (kept {kept})")
    ordered = [done[i] for i in range(len(selected))]
    write_outputs(request.out_dir, request.source, ordered)
    stats = statistics(request, ordered, matcher)
    write_json_atomic(request.out_dir / STATS_FILE, stats)
    return stats


# ---------------------------------------------------------------- outputs


def with_question(row: dict[str, Any], key: str, text: str) -> dict[str, Any]:
    """A copy of `row` whose question (a string, or a chat's last user turn) is `text`."""
    row = copy.deepcopy(row)
    parent, last = row, key
    if key not in row:
        *path, last = key.split(".")
        for part in path:
            parent = parent[part]
    value = parent[last]
    if tables.is_chat(value):
        user = [m for m in value if m.get("role") == "user"][-1]
        user["content"] = text
    else:
        parent[last] = text
    return row


def write_outputs(out_dir: Path, source: SourceRows, lines: list[Line]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = source.layout.question_key
    numbered = source.layout.id_key is None
    originals, rephrased, pairs = [], [], []
    for line in lines:
        if not line.kept or line.rephrased is None:
            continue
        row = source.rows[line.index]
        if numbered:
            row = {**row, ROW_ID: line.index}
        originals.append(row)
        rephrased.append(with_question(row, key, line.rephrased))
        problem = source.problems[line.index]
        pair = {
            "index": line.index,
            "id": problem.id,
            "original": problem.question,
            "rephrased": line.rephrased,
            "answer": problem.answer,
        }
        if line.check is not None:
            pair["verdict"] = line.check["verdict"]
        pairs.append(pair)
    schema = arrow_schema(source)
    for name, table_rows in ((ORIGINAL_FILE, originals), (REPHRASED_FILE, rephrased)):
        table = pa.Table.from_pylist(table_rows, schema=schema)
        write_file_atomic(out_dir / name, lambda tmp, t=table: pq.write_table(t, tmp))
    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    write_file_atomic(out_dir / PAIRS_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def recipe_snippet(out_dir: Path, source: SourceRows) -> str:
    """The `data:` block that trains Co-rewarding-I on OUT (keys only where not the defaults)."""
    layout = source.layout
    keys = {
        "question_key": (layout.question_key, "prompt"),
        "answer_key": (layout.answer_key, "reward_model.ground_truth"),
        "id_key": (layout.id_key or ROW_ID, "extra_info.index"),
    }
    lines = [
        "data:",
        "  train:",
        f"    - original: {out_dir / ORIGINAL_FILE}",
        f"      rephrased: {out_dir / REPHRASED_FILE}",
    ]
    for name, (value, default) in keys.items():
        if value != default:
            lines.append(f"  {name}: {json.dumps(value) if value is not None else 'null'}")
    lines += ["method:", "  name: co_rewarding_i"]
    return "\n".join(lines) + "\n"


def statistics(
    request: RephraseRequest, lines: list[Line], matcher: AnswerMatcher | None
) -> dict[str, Any]:
    problems = request.source.problems
    kept = [line for line in lines if line.kept]
    drops = Counter(line.drop for line in lines if line.drop)
    ratios = [len(line.rephrased or "") / len(problems[line.index].question) for line in kept]
    seconds = sum(line.seconds for line in lines)
    stats: dict[str, Any] = {
        "rows_in": len(lines),
        "parsed": sum(line.rephrased is not None for line in lines),
        "kept": len(kept),
        "dropped": {reason: drops.get(reason, 0) for reason in (NO_MARKERS, NO_REWRITE, EMPTY)},
        "identical_to_original": sum(
            (line.rephrased or "").strip() == problems[line.index].question.strip() for line in kept
        ),
        "mean_length_ratio": round(sum(ratios) / len(ratios), 4) if ratios else None,
        "hit_token_limit": sum(line.n_tokens >= request.sampling.max_new_tokens for line in lines),
        "mean_tokens": round(sum(line.n_tokens for line in lines) / len(lines), 1)
        if lines
        else None,
        "seconds": round(seconds, 2),
        "questions_per_second": round(len(lines) / seconds, 4) if seconds else None,
    }
    if request.verify is not None and matcher is not None:
        stats["dropped"][DISAGREE] = drops.get(DISAGREE, 0)
        stats["verify"] = verify_statistics(lines, problems, matcher, request.verify)
    stats["config"] = request.config
    stats["recipe_snippet"] = recipe_snippet(request.out_dir, request.source)
    return stats


def verify_statistics(
    lines: list[Line], problems: list[Any], matcher: AnswerMatcher, settings: VerifySettings
) -> dict[str, Any]:
    checked = [line for line in lines if line.check is not None]
    count = Counter(line.check["verdict"] for line in checked if line.check)
    decided = count[AGREE] + count[DISAGREE]
    out: dict[str, Any] = {
        "k": settings.sampling.n,
        "match": settings.match,
        "pairs": len(checked),
        AGREE: count[AGREE],
        DISAGREE: count[DISAGREE],
        UNDECIDED: count[UNDECIDED],
        "no_majority_original": sum(
            line.check["original_label"] is None for line in checked if line.check
        ),
        "no_majority_rephrased": sum(
            line.check["rephrased_label"] is None for line in checked if line.check
        ),
        "agreement_rate": round(count[AGREE] / decided, 4) if decided else None,
    }
    # A metric only, computed after every decision is made: how often the original wording's
    # majority answer is the reference, among kept and among dropped pairs.
    reference: dict[str, Any] = {}
    for name, group in (
        ("kept", [line for line in checked if line.kept]),
        ("dropped", [line for line in checked if not line.kept]),
    ):
        scored = [
            bool(
                line.check["original_label"] is not None
                and matcher.equal(line.check["original_label"], problems[line.index].answer)
            )
            for line in group
            if line.check and problems[line.index].answer is not None
        ]
        reference[name] = {
            "pairs": len(scored),
            "original_majority_matches_reference": round(sum(scored) / len(scored), 4)
            if scored
            else None,
        }
    out["reference"] = reference
    return out
