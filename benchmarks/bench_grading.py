"""How fast are majority votes under each answer matcher, and do keys change math-verify's clusters?

Builds groups of 8 answers the way a policy writes them: the right answer in several equivalent
notations (`\\frac{1}{2}`, `\\dfrac12`, `0.5`, `142.0`, `1,000`, `x = 5`, `\\left(...\\right)`, pairs that
only algebra equates), some wrong answers, now and then no answer. References come from MATH500
(`../shared/data/bench/math500.json`) when present, else from a built-in list. Then it times
`majority_vote` with exact, normalized and math_verify matchers (keys first, math-verify in worker
processes; once with latex2sympy's own LL parsing and once with the two-stage SLL-then-LL parsing of
`coreward_plugins.latex_parsing`, the default), against the naive way: math-verify on every pair of a
group (O(n^2) calls, in process, as shipped, both parsing per pair and parsing each answer once).
Then it checks that math_verify-with-keys finds the same clusters as the worker's strict verdict
(`coreward_plugins.strict_compare`) on every pair of a group, and reports where those strict verdicts
cluster differently from plain math-verify.

Both sides are warmed alike before timing: the worker finishes its built-in warm-up (answers in common
shapes, none from the corpus), and this process parses and compares the same answers. Wall time and CPU
time (this process plus the workers) are both reported: on a loaded machine a worker that sleeps between
requests is scheduled ahead of a busy process, so CPU time is the load-independent comparison.

    python benchmarks/bench_grading.py [--groups 150] [--seed 0] [--builtin] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coreward_plugins.answer_keys import as_fraction, normalize_answer
from coreward_plugins.answers import AnswerMatcher
from coreward_plugins.verify_pool import restart_shared_pool, shared_pool
from coreward_plugins.verify_worker import WARM_UP_ANSWERS, WARM_UP_PAIRS
from coreward_plugins.voting import majority_vote

MATH500 = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench" / "math500.json"
BUILTIN = [
    "142",
    "70",
    "1000",
    "27",
    "-3",
    "0",
    "2220",
    "\\frac{14}{3}",
    "\\frac{3}{56}",
    "\\frac{1}{2}",
    "1.25",
    "\\sqrt{51}",
    "3\\sqrt{13}",
    "\\pi",
    "6 - 5i",
    "\\left( 3, \\frac{\\pi}{2} \\right)",
    "\\text{Evelyn}",
    "90^\\circ",
    "x=5",
    "1,-2",
    "3, 5, 7",
    "[-2, 7]",
    "(-\\infty, 0)",
    "p - q",
    "x^5 - x^4 + x^3 - x^2 + x - 1",
]
# Equal answers that no cheap key can merge: only math-verify sees they are the same.
ALGEBRA = [
    ("x^2+2x", "x(x+2)"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("a+b", "b+a"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    ("(x+1)^2", "x^2+2x+1"),
]


def equivalent_forms(reference: str) -> list[str]:
    """Ways a model writes the same answer."""
    forms = [reference]
    value = as_fraction(normalize_answer(reference))
    if value is not None and value.denominator == 1:
        n = value.numerator
        forms += [f"{n}.0", f"{n}.00", f"x = {n}", f"{n}."]
        if abs(n) >= 1000:
            forms.append(f"{n:,}")
        if 0 < n < 100:
            forms.append(f"{n:03d}")
    elif value is not None:
        p, q = value.numerator, value.denominator
        forms += [f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}"]
        if (
            Fraction(round(float(value), 6)).limit_denominator(10**6) == value
            and len(str(float(value))) < 10
        ):
            forms.append(str(float(value)))
    else:
        forms += [
            reference.replace(" ", ""),
            reference.replace(",", ", "),
            reference.replace("\\frac", "\\dfrac"),
        ]
        if reference.startswith("(") and reference.endswith(")"):
            forms.append("\\left" + reference[:-1] + "\\right)")
    return list(dict.fromkeys(forms))


def wrong_answers(reference: str, rng: random.Random) -> list[str]:
    """Wrong answers a model writes for this problem: a nearby value in the same notation."""
    value = as_fraction(normalize_answer(reference))
    if value is not None:
        candidates = [value + 1, value - 1, 2 * value, -value] + (
            [1 / value] if value not in (0, 1, -1) else []
        )
        wrong = [
            str(c.numerator)
            if c.denominator == 1
            else f"\\frac{{{c.numerator}}}{{{c.denominator}}}"
            for c in candidates
        ]
    else:
        digits = [i for i, ch in enumerate(reference) if ch.isdigit()]
        wrong = [
            reference + " + 1",
            "-" + reference if not reference.startswith("-") else reference[1:],
        ]
        for i in digits[:2]:
            wrong.append(reference[:i] + str((int(reference[i]) + 1) % 10) + reference[i + 1 :])
    rng.shuffle(wrong)
    return [w for w in wrong[:2] if normalize_answer(w) != normalize_answer(reference)] or ["-1"]


def build_groups(
    references: list[str], n_groups: int, rng: random.Random
) -> tuple[list[list[str | None]], list[str]]:
    """Groups of 8 answers, and each group's kind: numeric, symbolic (other references), algebra."""
    groups: list[list[str | None]] = []
    kinds: list[str] = []
    for g in range(n_groups):
        if g % 6 == 5:  # some groups whose right answers only algebra can merge
            a, b = ALGEBRA[(g // 6) % len(ALGEBRA)]
            forms, wrong = [a, b], ["x^2", "\\sqrt{3}"]
            kinds.append("algebra")
        else:
            reference = references[g % len(references)]
            forms, wrong = equivalent_forms(reference), wrong_answers(reference, rng)
            kinds.append(
                "numeric" if as_fraction(normalize_answer(reference)) is not None else "symbolic"
            )
        n_right = rng.randint(3, 7)
        answers: list[str | None] = [rng.choice(forms) for _ in range(n_right)]
        answers += [rng.choice(wrong) for _ in range(8 - n_right)]
        rng.shuffle(answers)
        if rng.random() < 0.2:
            answers[rng.randrange(8)] = None
        groups.append(answers)
    return groups, kinds


def mv_parse(answer: str) -> list:
    """math-verify's reading of a final answer, as shipped: LaTeX extraction from `\\boxed{answer}`."""
    from math_verify import LatexExtractionConfig, parse

    return parse("\\boxed{" + answer + "}", extraction_config=[LatexExtractionConfig()])


def naive_pairwise(
    answers: list[str | None], parse_once: bool = True
) -> tuple[tuple[int | None, ...], int]:
    """math-verify on every pair of one group (O(n^2) verify calls, in process), then the same first-fit
    clustering as majority_vote. parse_once=False is the literal naive way, `verify(parse(a), parse(b))`
    for every pair, as a per-pair reward function does; parse_once=True parses each answer once."""
    from math_verify import verify

    valid = [i for i, a in enumerate(answers) if a is not None and a.strip()]

    cache: dict[int, object] = {}

    def parsed(i: int):
        if not parse_once or i not in cache:
            cache[i] = mv_parse(answers[i])  # type: ignore[arg-type]
        return cache[i]

    equal: dict[tuple[int, int], bool] = {}
    for x, i in enumerate(valid):
        for j in valid[:x]:
            equal[(j, i)] = bool(verify(parsed(j), parsed(i)))
    return first_fit(len(answers), valid, equal), len(equal)


def first_fit(
    n: int, valid: list[int], equal: dict[tuple[int, int], bool]
) -> tuple[int | None, ...]:
    """majority_vote's clustering from pairwise verdicts: each answer joins the first equal cluster."""
    reps: list[int] = []
    assignment: list[int | None] = [None] * n
    for i in valid:
        cluster = next((c for c, rep in enumerate(reps) if equal[(rep, i)]), None)
        if cluster is None:
            cluster = len(reps)
            reps.append(i)
        assignment[i] = cluster
    return tuple(assignment)


def strict_pairwise(answers: list[str | None]) -> tuple[int | None, ...]:
    """The worker's strict verdict (coreward_plugins.strict_compare) on every pair of one group, no
    keys, no cache, then the same first-fit clustering: what math_verify votes must reproduce."""
    valid = [i for i, a in enumerate(answers) if a is not None and a.strip()]
    order = [(j, i) for x, i in enumerate(valid) for j in valid[:x]]
    verdicts = shared_pool().verify_many([(answers[j], answers[i]) for j, i in order], 30.0)
    equal = {pair: bool(v) for pair, v in zip(order, verdicts, strict=False)}
    return first_fit(len(answers), valid, {pair: equal.get(pair, False) for pair in order})


def differing_pairs(
    groups: list[list[str | None]], left: list[tuple], right: list[tuple]
) -> tuple[int, dict[tuple[str, str], list]]:
    """Groups clustered differently, and the answer pairs behind them: (a, b) -> [groups, together
    on the left]."""
    pairs: dict[tuple[str, str], list] = {}
    n_groups = 0
    for answers, ours, theirs in zip(groups, left, right, strict=True):
        if ours == theirs:
            continue
        n_groups += 1
        for i, a in enumerate(answers):
            for j in range(i):
                b = answers[j]
                if (
                    a is None
                    or b is None
                    or a == b
                    or (ours[i] == ours[j]) == (theirs[i] == theirs[j])
                ):
                    continue
                entry = pairs.setdefault((b, a) if b < a else (a, b), [0, ours[i] == ours[j]])
                entry[0] += 1
    return n_groups, pairs


def math_verify_reads(answer: str) -> bool:
    """Whether math-verify reads a value out of `\\boxed{answer}` (`4.` gives only the string '4.')."""
    return any(not isinstance(item, str) for item in mv_parse(answer))


def cpu_seconds() -> float:
    """CPU time of this process plus the idle math-verify workers (Linux /proc; 0 for them elsewhere).

    Wall time on a loaded machine favours the worker: a process that sleeps between requests is
    scheduled ahead of a busy one. CPU time is the load-independent cost, so the table shows both.
    """
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in shared_pool().worker_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def warm_in_process() -> None:
    """The worker's warm-up, here: parse its answers and compare its pairs, as the naive way does."""
    from math_verify import verify

    for answer in WARM_UP_ANSWERS:
        mv_parse(answer)
    for gold, pred in WARM_UP_PAIRS:
        verify(mv_parse(gold), mv_parse(pred))


def worker_overhead(repeats: int = 100) -> dict[str, float]:
    """Per-call cost of a math-verify comparison in the worker process versus in this process.

    The pairs repeat, so parsing and sympy work are cached on both sides and what remains is the
    comparison itself plus, for the worker, the round trip (JSON over a pipe, select with a deadline).
    The worker's verdict is symmetric (math-verify asked both ways round, the second only when the
    first says equal), so the in-process side asks the same way.
    """
    from math_verify import verify

    # pairs that the worker's value probe does not settle, so both sides run math-verify's verify()
    pairs = [("x+1", "1+x"), ("(1,2)", "(1,3)"), ("\\{1,2\\}", "\\{2,1\\}"), ("a b", "b a")]
    pool = shared_pool()
    cached = {a: mv_parse(a) for pair in pairs for a in pair}
    for a, b in pairs:
        pool.verify(b, a, 30.0)
        verify(cached[b], cached[a])
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in pairs:
            pool.verify(b, a, 30.0)
    worker = (time.perf_counter() - start) / (repeats * len(pairs))
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in pairs:
            _ = verify(cached[b], cached[a]) and verify(cached[a], cached[b])
    in_process = (time.perf_counter() - start) / (repeats * len(pairs))
    return {
        "worker_ms": worker * 1000,
        "in_process_ms": in_process * 1000,
        "overhead_ms": (worker - in_process) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--builtin",
        action="store_true",
        help="use the built-in answers even when MATH500 is present",
    )
    args = parser.parse_args()
    console = Console(
        stderr=args.json, width=None if sys.stdout.isatty() else 150
    )  # files get the whole table

    if MATH500.is_file() and not args.builtin:
        references, source = (
            [item["answer"] for item in json.loads(MATH500.read_text())],
            "MATH500 answers",
        )
    else:
        references, source = BUILTIN, "built-in answers"
    rng = random.Random(args.seed)
    groups, kinds = build_groups(references, args.groups, rng)
    n_answers = sum(len(g) for g in groups)
    console.print(f"{len(groups)} groups x 8 = {n_answers} answers, from {source}")

    # name -> per-group seconds, per-group math-verify calls
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # CPU seconds (this process, plus the workers for math_verify)
    calls: dict[str, list[int]] = {}
    votes = {}
    for name in ("exact", "normalized", "math_verify_ll", "math_verify"):
        mode = "math_verify" if name.startswith("math_verify") else name
        if mode == "math_verify":
            # fresh workers: with latex2sympy's own LL parsing, then with two-stage parsing (the default)
            os.environ["COREWARD_SLL_PARSING"] = "0" if name == "math_verify_ll" else "1"
            restart_shared_pool()
            AnswerMatcher(mode).equal("x+1", "1+x")  # start the worker outside the timing
            shared_pool().wait_warm()  # and let it finish its warm-up (the naive side gets the same)
        matcher = AnswerMatcher(mode, timeout_s=5.0)  # an empty verdict cache
        times[name], cpu[name], calls[name], votes[name] = [], [], [], []
        for g in groups:
            before = matcher.stats.verify_calls
            start_cpu = cpu_seconds()  # read outside the wall-clock timing
            start = time.perf_counter()
            votes[name].append(majority_vote(g, matcher))
            times[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
            calls[name].append(matcher.stats.verify_calls - before)
    naive_assignments = []
    naive_pairwise(["x+1", "1+x"])  # import and warm math-verify in this process too,
    warm_in_process()  # with the worker's warm-up answers and pairs
    for name, parse_once in (("naive", False), ("parse_once", True)):
        times[name], cpu[name], calls[name] = [], [], []
        for g in groups:
            start, start_cpu = time.perf_counter(), time.process_time()
            assignment, n_calls = naive_pairwise(g, parse_once=parse_once)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            calls[name].append(n_calls)
            if parse_once:
                naive_assignments.append(assignment)

    labels = {
        "exact": "exact",
        "normalized": "normalized",
        "math_verify_ll": "math_verify: keys, then LL parsing (as shipped)",
        "math_verify": "math_verify: keys, then two-stage parsing",
        "parse_once": "math-verify on every pair, each answer parsed once",
        "naive": "math-verify on every pair (naive)",
    }
    subsets = {"all": list(range(len(groups)))}
    for kind in ("numeric", "symbolic", "algebra"):
        subsets[kind] = [i for i, k in enumerate(kinds) if k == kind]
    rows = []
    for subset, members in subsets.items():
        if not members:
            continue
        naive_time = sum(times["naive"][i] for i in members)
        naive_cpu = sum(cpu["naive"][i] for i in members)
        for name in ("exact", "normalized", "math_verify_ll", "math_verify", "parse_once", "naive"):
            seconds = sum(times[name][i] for i in members)
            cpu_s = sum(cpu[name][i] for i in members)
            rows.append(
                {
                    "groups": subset,
                    "n_groups": len(members),
                    "matcher": labels[name],
                    "seconds": seconds,
                    "answers_per_s": 8 * len(members) / seconds,
                    "verify_calls": sum(calls[name][i] for i in members),
                    "speedup_vs_naive": naive_time / seconds,
                    "cpu_seconds": cpu_s,
                    "cpu_speedup_vs_naive": naive_cpu / cpu_s if cpu_s > 0 else None,
                }
            )
    keys_time, naive_time = sum(times["math_verify"]), sum(times["naive"])
    keys_ll_time = sum(times["math_verify_ll"])
    parse_once_time = sum(times["parse_once"])
    # Keys must not change the worker's strict verdicts: math_verify votes against the strict verdict
    # on every pair (no keys, no cache). Then what the strict rules change: against plain math-verify.
    strict_assignments = [strict_pairwise(g) for g in groups]
    ours_assignments = [v.assignment for v in votes["math_verify"]]
    n_disagreements, pairs = differing_pairs(groups, ours_assignments, strict_assignments)
    n_strict_changes, strict_changes = differing_pairs(
        groups, strict_assignments, naive_assignments
    )
    n_plain_disagreements, _ = differing_pairs(groups, ours_assignments, naive_assignments)
    unreadable = {a for pair in pairs for a in pair if not math_verify_reads(a)}
    # keys merge two forms of one value, and math-verify cannot read one of them at all
    explained = {
        pair for pair, (_, together) in pairs.items() if together and unreadable & set(pair)
    }
    unexplained = [pair for pair in pairs if pair not in explained]
    overhead = worker_overhead()
    result = {
        "answers": n_answers,
        "worker_overhead": overhead,
        "disagreeing_pairs_math_verify_cannot_read": len(explained),
        "unexplained_disagreeing_pairs": [list(pair) for pair in unexplained],
        "rows": rows,
        "speedup_keys_vs_naive": naive_time / keys_time,
        "speedup_keys_vs_parse_once": parse_once_time / keys_time,
        "speedup_keys_ll_vs_naive": naive_time / keys_ll_time,
        "cpu_speedup_keys_vs_naive": sum(cpu["naive"]) / max(sum(cpu["math_verify"]), 1e-9),
        "cluster_disagreements": n_disagreements,
        "strict_vs_plain_math_verify_groups": n_strict_changes,
        "strict_vs_plain_math_verify_pairs": [
            [a, b, n, together] for (a, b), (n, together) in strict_changes.items()
        ],
        "keys_vs_plain_naive_groups": n_plain_disagreements,
        "ll_vs_two_stage_disagreements": sum(
            a.assignment != b.assignment
            for a, b in zip(votes["math_verify"], votes["math_verify_ll"], strict=True)
        ),
        "mean_clusters": {m: sum(v.clusters for v in votes[m]) / len(groups) for m in votes},
    }
    if args.json:
        result["disagreeing_pairs"] = [
            [a, b, n, together] for (a, b), (n, together) in pairs.items()
        ]
        print(json.dumps(result, indent=2))
    else:
        table = Table(title="majority_vote over groups of 8 answers")
        for column in (
            "groups",
            "matcher",
            "seconds",
            "answers/s",
            "verify calls",
            "x vs naive",
            "CPU s",
            "x CPU",
        ):
            table.add_column(column, justify="left" if column in ("groups", "matcher") else "right")
        for row in rows:
            table.add_row(
                f"{row['groups']} ({row['n_groups']})",
                row["matcher"],
                f"{row['seconds']:.3f}",
                f"{row['answers_per_s']:,.0f}",
                str(row["verify_calls"]),
                f"{row['speedup_vs_naive']:,.1f}",
                f"{row['cpu_seconds']:.2f}",
                f"{row['cpu_speedup_vs_naive']:,.1f}" if row["cpu_speedup_vs_naive"] else "-",
                end_section=row["matcher"].startswith("math-verify on every"),
            )
        console.print(table)
        console.print(
            f"clusters per group: {', '.join(f'{m} {c:.2f}' for m, c in result['mean_clusters'].items())}"
        )
        console.print(
            f"speed-up, math_verify with keys vs naive pairwise: {result['speedup_keys_vs_naive']:.1f}x"
            f" (vs pairwise with each answer parsed once: {result['speedup_keys_vs_parse_once']:.1f}x);"
            f" in CPU time (this process + workers): {result['cpu_speedup_keys_vs_naive']:.1f}x;"
            f" keys with LL parsing only: {result['speedup_keys_ll_vs_naive']:.1f}x"
        )
        console.print(
            "groups where two-stage and LL-only parsing cluster differently:"
            f" {result['ll_vs_two_stage_disagreements']}"
        )
        console.print(
            "groups where the strict rules (strict_compare) cluster differently from plain"
            f" math-verify on every pair: {n_strict_changes}"
        )
        for (a, b), (n, together) in sorted(strict_changes.items(), key=lambda item: -item[1][0]):
            side = "strict merges, plain splits" if together else "plain merges, strict splits"
            console.print(f"  {a!r} ~ {b!r}: {side} (in {n} groups)")
        console.print(
            "groups where keys and the strict verdict on every pair cluster differently:"
            f" {n_disagreements} (against plain naive pairwise: {n_plain_disagreements})"
        )
        console.print(
            f"  answer pairs behind them: {len(pairs)}; in {len(explained)} of them keys merge an answer from"
            f" which math-verify reads no value ({', '.join(repr(a) for a in sorted(unreadable)[:5])}, ...)"
            f" with another form of it; unexplained: {len(unexplained)}"
        )
        for (a, b), (n, together) in sorted(pairs.items(), key=lambda item: -item[1][0])[:10]:
            side = (
                "keys merge, math-verify splits" if together else "math-verify merges, keys split"
            )
            console.print(f"  {a!r} ~ {b!r}: {side} (in {n} groups)")
        console.print(
            f"math-verify worker round trip: {overhead['worker_ms']:.2f} ms per call"
            f" vs {overhead['in_process_ms']:.2f} ms"
            f" in process (overhead {overhead['overhead_ms']:.2f} ms)"
        )
    # the keys must not change what math-verify decides, beyond answers it cannot read
    sys.exit(1 if unexplained or result["ll_vs_two_stage_disagreements"] else 0)


if __name__ == "__main__":
    main()
