"""How well the label-free collapse detector warns, checked against held-out accuracy.

A run has collapsed when its greedy held-out accuracy falls 10 points below its start (step 0) and
stays there: the fall is the first evaluation from which every later one is that low. The detector
(coreward_plugins.collapse, default settings) is replayed on each run's metrics.jsonl; it reads
only label-free metrics. Lead = fall step - warning step (positive: warned before the fall).

    python benchmarks/methods_tiny.py --set train.max_steps=200 --set output.eval_interval=10
    python benchmarks/collapse_validation.py runs/methods_tiny/*-seed*
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

from coreward_cli.report import Run, load_run

DROP = 0.10


@dataclass
class Verdict:
    run: Run
    fall_step: int | None  # None: did not collapse
    warning_step: int | None

    @property
    def lead(self) -> int | None:
        if self.fall_step is None or self.warning_step is None:
            return None
        return self.fall_step - self.warning_step


def fall_step(run: Run, drop: float = DROP) -> int | None:
    steps, acc = run.series("eval_accuracy")
    if len(acc) < 2:
        return None
    floor = acc[0] - drop
    fall = None
    for step, value in zip(steps, acc):
        if value <= floor:
            fall = step if fall is None else fall
        else:
            fall = None
    return fall


def verdicts(paths: list[str]) -> list[Verdict]:
    out = []
    for path in paths:
        run = load_run(path)
        out.append(Verdict(run, fall_step(run), run.collapse_step))
    return out


HEADERS = [
    "method",
    "runs",
    "collapsed",
    "flagged",
    "flagged by the fall",
    "lead, steps (median; min..max)",
    "false alarms",
]


def rows(results: list[Verdict]) -> list[list[str]]:
    methods = list(dict.fromkeys(v.run.method for v in results))
    table = []
    for method in [*methods, "all"]:
        mine = [v for v in results if method in ("all", v.run.method)]
        collapsed = [v for v in mine if v.fall_step is not None]
        flagged = [v for v in collapsed if v.warning_step is not None]
        leads = [v.lead for v in flagged if v.lead is not None]
        in_time = [x for x in leads if x >= 0]
        healthy = [v for v in mine if v.fall_step is None]
        alarms = [v for v in healthy if v.warning_step is not None]
        lead_text = (
            f"{statistics.median(leads):+.0f}; {min(leads):+d}..{max(leads):+d}" if leads else "-"
        )
        table.append(
            [
                method,
                str(len(mine)),
                str(len(collapsed)),
                f"{len(flagged)}/{len(collapsed)}" if collapsed else "-",
                f"{len(in_time)}/{len(collapsed)}" if collapsed else "-",
                lead_text,
                f"{len(alarms)}/{len(healthy)}" if healthy else "-",
            ]
        )
    return table


def per_run(results: list[Verdict]) -> list[str]:
    lines = []
    for v in results:
        steps, acc = v.run.series("eval_accuracy")
        lines.append(
            f"{v.run.path.name}: held-out {100 * acc[0]:.1f}% -> {100 * acc[-1]:.1f}% "
            f"(min {100 * min(acc):.1f}%), fall at {v.fall_step}, warning at {v.warning_step}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    args = parser.parse_args()
    results = verdicts(args.runs)
    for line in per_run(results):
        print(line)
    print()
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "---|" * len(HEADERS))
    for row in rows(results):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
