"""`coreward eval`: sample n responses per benchmark question, grade them, and report.

Metrics per benchmark and over all questions: avg@n (mean accuracy of the n samples),
pass@k for k = 1, 2, 4, ... <= n (the unbiased estimator of Chen et al. 2021), maj@n
(majority vote over the answers, clustered with the same matcher that grades), the share of
responses with no answer, and the mean response length in tokens.

The output folder holds `config.json` (what was asked), `samples.jsonl` (one line per
question: every response, its extracted answer and whether it is right), `results.json`
and `results.md`. Lines are appended after every batch, so a killed run loses at most the
batch in flight, and a rerun with the same config skips the questions already done.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from math import comb
from pathlib import Path
from typing import Any

from coreward_cli import rows as tables
from coreward_cli.benchdata import BenchItem, Benchmark
from coreward_cli.errors import UserError, field_names, one_line
from coreward_cli.fileutil import complete_lines, write_text_atomic
from coreward_cli.grading import CONVENTIONS, LATEX, Grader
from coreward_cli.prompts import PromptStyle

SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "results.md"


# ---------------------------------------------------------------- metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are right: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def ks_for(n: int) -> list[int]:
    """Powers of two up to n: the k of the reported pass@k."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


@dataclass
class Record:
    """One question with its n graded responses: a line of samples.jsonl."""

    benchmark: str
    index: int
    question: str
    reference: str
    responses: list[str]
    answers: list[str | None]
    correct: list[bool]
    n_tokens: list[int | None]

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def summarize(records: Sequence[Record], grader: Grader) -> dict[str, Any]:
    """The metrics of a set of questions, each over its own n responses.

    avg is the mean over questions of each one's share right; pass@k is reported for the k every
    question has (k <= the smallest n); maj votes over all of a question's responses.
    """
    if not records:
        return {"questions": 0}
    ns = [len(r.responses) for r in records]
    n = min(ns)
    counts = [sum(r.correct) for r in records]
    out: dict[str, Any] = {
        "questions": len(records),
        "n": n,
        f"avg@{n}": float(sum(Fraction(c, k) for c, k in zip(counts, ns)) / len(records)),
    }
    if max(ns) != n:
        out["n_max"] = max(ns)  # uneven: avg and maj use every response, pass@k only k <= n
    for k in ks_for(n):
        out[f"pass@{k}"] = sum(pass_at_k(m, c, k) for m, c in zip(ns, counts)) / len(records)
    out[f"maj@{n}"] = sum(grader.majority_correct(r.answers, r.reference) for r in records) / len(
        records
    )
    all_answers = [a for r in records for a in r.answers]
    out["no_answer"] = sum(a is None for a in all_answers) / len(all_answers)
    lengths = [t for r in records for t in r.n_tokens if t is not None]
    out["mean_tokens"] = sum(lengths) / len(lengths) if lengths else None
    return out


def results_of(
    records_by_bench: dict[str, list[Record]], grader: Grader, meta: dict[str, Any]
) -> dict[str, Any]:
    """results.json: per benchmark, and `overall` pooled over every question (micro average)."""
    benches = {name: summarize(recs, grader) for name, recs in records_by_bench.items()}
    pooled = [r for recs in records_by_bench.values() for r in recs]
    return {
        **meta,
        "match": grader.match,
        "benchmarks": benches,
        "overall": summarize(pooled, grader),
    }


# ---------------------------------------------------------------- files


def read_records(path: Path) -> list[Record]:
    """The complete lines of a samples file; a torn last line (a kill mid-write) is cut off."""
    records = []
    for i, line in enumerate(complete_lines(path), 1):
        if line.strip():
            try:
                records.append(Record(**json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise UserError(
                    f"{path}:{i}: not a coreward samples line ({exc}); use another --out or remove the file"
                ) from exc
    return records


class SampleLog:
    """samples.jsonl, appended one question per line and flushed after every batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = read_records(path)
        self.done = {(r.benchmark, r.index): r for r in self.records}
        self._file = open(path, "a", encoding="utf-8")

    def append(self, records: Iterable[Record]) -> None:
        for record in records:
            self._file.write(record.to_json() + "\n")
            self.done[(record.benchmark, record.index)] = record
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def check_config(
    out_dir: Path,
    config: dict[str, Any],
    write: bool = True,
    fix: str = "pass another --out or delete that folder",
) -> None:
    """Refuse to mix results of different settings in one folder; record them on first use."""
    path = out_dir / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old != config:
            changed = sorted(
                k for k in set(config) | set(old or {}) if (old or {}).get(k) != config.get(k)
            )
            shown = ", ".join(
                f"{k}: {(old or {}).get(k)!r} -> {config.get(k)!r}" for k in changed[:3]
            )
            raise UserError(f"{out_dir} holds results of another config ({shown}); {fix}")
        return
    if write:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(config, indent=2) + "\n")
        except OSError as e:
            raise UserError(
                f"--out {out_dir}: cannot write there ({one_line(e)}); pick a writable folder"
            ) from e


def write_reports(out_dir: Path, results: dict[str, Any]) -> None:
    write_text_atomic(
        out_dir / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    )
    write_text_atomic(out_dir / REPORT_FILE, markdown_table(results))


def metric_columns(results: dict[str, Any]) -> list[str]:
    n = results["overall"].get("n", 1)
    return [f"avg@{n}", *(f"pass@{k}" for k in ks_for(n) if k > 1), f"maj@{n}", "no_answer"]


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    cols = metric_columns(results)
    rows = []
    for name, m in [*results["benchmarks"].items(), ("overall", results["overall"])]:
        cells = [name, str(m.get("questions", 0))]
        cells += [f"{100 * m[c]:.1f}" if m.get(c) is not None else "-" for c in cols]
        cells.append(f"{m['mean_tokens']:.0f}" if m.get("mean_tokens") is not None else "-")
        rows.append(cells)
    return rows


def _title(results: dict[str, Any]) -> str:
    return str(results.get("model") or results.get("responses_file") or "responses")


def markdown_table(results: dict[str, Any]) -> str:
    header = ["benchmark", "items", *metric_columns(results), "tokens"]
    lines = [
        f"# {_title(results)}",
        "",
        f"match: `{results['match']}`; metrics in % (pass@1 = avg@n); pass@k unbiased; maj@n votes with the same"
        " matcher; no_answer: share of responses without an answer; tokens: mean response length.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines) + "\n"


def rich_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"{_title(results)}  (match: {results['match']}, %)")
    for col in ["benchmark", "items", *metric_columns(results), "tokens"]:
        table.add_column(
            col, justify="left" if col == "benchmark" else "right", no_wrap=col == "benchmark"
        )
    rows = table_rows(results)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 2)
    return table


# ---------------------------------------------------------------- the run


@dataclass
class EvalRequest:
    benchmarks: list[Benchmark]
    out_dir: Path
    config: dict[str, Any]  # everything that shapes the samples; a rerun must match it to resume
    sampling: Any  # generation.SamplingConfig
    prompt: PromptStyle
    match: str = "math_verify"
    limit: int | None = None
    batch_size: int | None = None
    fbox: bool = False


def selected(benchmark: Benchmark, limit: int | None) -> list[BenchItem]:
    return benchmark.items if limit is None else benchmark.items[:limit]


def batch_seed(seed: int, benchmark: str, index: int) -> int:
    """A batch's sampling seed from its first question, so a resumed run draws the same way."""
    return (seed * 1_000_003 + zlib.crc32(f"{benchmark}:{index}".encode())) % 2**31


def run_eval(
    request: EvalRequest, backend: Any, console: Any, meta: dict[str, Any]
) -> dict[str, Any]:
    """Generate what is missing, grade, and write every output; returns results.json's content."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    check_config(request.out_dir, request.config)
    log = SampleLog(request.out_dir / SAMPLES_FILE)
    grader = Grader(request.match, fbox=request.fbox)
    batch_size = request.batch_size or max(
        1, (256 if backend.name == "vllm" else 64) // max(1, request.sampling.n)
    )
    pending = [
        (b, item)
        for b in request.benchmarks
        for item in selected(b, request.limit)
        if (b.name, item.index) not in log.done
    ]
    total = sum(len(selected(b, request.limit)) for b in request.benchmarks)
    meta = {**meta, "generated_now": len(pending)}
    started = time.perf_counter()
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("eval", total=total, completed=total - len(pending))
            for start in range(0, len(pending), batch_size):
                chunk = pending[start : start + batch_size]
                progress.update(task, description=f"eval {chunk[0][0].name}")
                log.append(_generate_chunk(chunk, backend, request, grader))
                progress.advance(task, len(chunk))
    finally:
        log.close()
    meta["generation_s"] = round(time.perf_counter() - started, 2)
    by_bench = {
        b.name: [log.done[(b.name, it.index)] for it in selected(b, request.limit)]
        for b in request.benchmarks
    }
    results = results_of(by_bench, grader, meta)
    write_reports(request.out_dir, results)
    return results


def _generate_chunk(
    chunk: list[tuple[Benchmark, BenchItem]], backend: Any, request: EvalRequest, grader: Grader
) -> list[Record]:
    prompts = [request.prompt.render(backend.tokenizer, item.question) for _, item in chunk]
    first_bench, first_item = chunk[0]
    seed = batch_seed(request.sampling.seed, first_bench.name, first_item.index)
    completions = backend.generate(prompts, request.sampling, seed)
    records = []
    for (bench, item), group in zip(chunk, completions):
        texts = [c.text for c in group]
        answers, correct = grader.grade(texts, item.reference, bench.convention)
        records.append(
            Record(
                bench.name,
                item.index,
                item.question,
                item.reference,
                texts,
                answers,
                correct,
                [c.n_tokens for c in group],
            )
        )
    return records


# ---------------------------------------------------------------- grade-only


@dataclass(frozen=True)
class ResponseKeys:
    question: str = "question"
    reference: str = "reference"
    response: str = "responses"  # a list, or a single string under this key or "response"
    benchmark: str = "benchmark"


def _text(value: Any, where: str) -> str:
    """A response or reference as text: a string or a number; valid Unicode."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: expected text, got {type(value).__name__}; fix the line")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f"{where}: not valid Unicode (a lone surrogate at character {e.start}); fix the line"
        ) from None
    return text


def _responses(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [_text(value, where)]
    if not isinstance(value, list) or not value:
        raise UserError(
            f"{where}: expected a string or a non-empty list of strings, got "
            f"{json.dumps(value)[:40] if isinstance(value, (list, int, float)) else type(value).__name__}; fix the line"
        )
    return [_text(v, f"{where}[{i}]") for i, v in enumerate(value)]


def grade_only_config(
    path: Path, keys: ResponseKeys, match: str, default_bench: str | None, fbox: bool = False
) -> dict[str, Any]:
    """config.json of a grade-only eval: a folder holding another eval is not overwritten."""
    return {
        "responses_file": str(path.resolve()),
        "match": match,
        "fbox": fbox,
        "bench": default_bench,
        "keys": asdict(keys),
    }


def grade_file(
    path: Path,
    keys: ResponseKeys,
    match: str,
    default_bench: str | None,
    out_dir: Path,
    fbox: bool = False,
) -> dict[str, Any]:
    """Grade responses made elsewhere: one question per line, no model involved.

    A reference in GSM8K's own form (`... #### 72`) is read as the number after `####`; --bench
    (or a line's benchmark field) picks a known benchmark's answer convention.
    """
    if path.suffix.lower() not in {".jsonl", ".json", ".parquet"}:
        raise UserError(f"--responses {path}: expected a .jsonl, .json or .parquet file")
    if default_bench is not None and default_bench not in CONVENTIONS:
        raise UserError(
            f"--bench {default_bench!r}: with --responses it names an answer convention, one of "
            f"{', '.join(CONVENTIONS)}; drop it to compare answers as written"
        )
    config = grade_only_config(path, keys, match, default_bench, fbox)
    check_config(out_dir, config, write=False)
    rows = tables.read_file(path, what="--responses").rows
    grader = Grader(match, fbox=fbox)
    by_bench: dict[str, list[Record]] = {}
    for i, row in enumerate(rows):
        where = f"{path}:{i + 1}"
        responses = tables.get(row, keys.response)
        if responses is None and keys.response == "responses":
            responses = tables.get(row, "response")
        reference = tables.get(row, keys.reference)
        if responses is None or reference is None:
            missing = keys.response if responses is None else keys.reference
            raise UserError(
                f"{where}: no field {missing!r} (fields: {field_names(row)}); pass --response-key/--answer-key"
            )
        responses = _responses(responses, f"{where}: '{keys.response}'")
        reference = _text(reference, f"{where}: '{keys.reference}'")
        bench = _text(tables.get(row, keys.benchmark) or default_bench or path.stem, where)
        convention = CONVENTIONS.get(bench, CONVENTIONS.get(default_bench or "", LATEX))
        if "####" in reference:  # GSM8K's own form: the answer is what follows the last ####
            reference = reference.rsplit("####", 1)[1]
            if convention is LATEX:
                convention = CONVENTIONS["gsm8k"]
        ref = convention.canonical(reference) or ""
        answers, correct = grader.grade(responses, ref, convention)
        index = tables.get(row, "index")
        by_bench.setdefault(bench, []).append(
            Record(
                bench,
                int(index) if isinstance(index, int) else i,
                _text(tables.get(row, keys.question) or "", where),
                ref,
                responses,
                answers,
                correct,
                [None] * len(responses),
            )
        )
    if not by_bench:
        raise UserError(f"--responses {path} holds no lines to grade")
    results = results_of(by_bench, grader, {"model": None, "responses_file": str(path)})
    lines = "".join(r.to_json() + "\n" for recs in by_bench.values() for r in recs)
    try:
        check_config(out_dir, config)
        write_text_atomic(out_dir / SAMPLES_FILE, lines)
        write_reports(out_dir, results)
    except OSError as e:
        raise UserError(
            f"--out {out_dir}: cannot write there ({one_line(e)}); pick a writable folder"
        ) from e
    return results
