"""OpenRLHF 0.11.2's own argument parser and validation, reused without copying it.

`openrlhf.cli.train_ppo_ray` builds its parser and validates the parsed arguments inside
`if __name__ == "__main__":`, then calls `train(args)`, whose first real act is
`get_strategy(args)`. We run that module as `__main__` with three temporary patches: `parse_args`
first adds our `--coreward.*` flags, `get_strategy` raises an exception carrying the validated,
hierarchized `args`, and `ray.is_initialized` says yes so that nothing connects to a cluster.
What we get back is exactly what OpenRLHF would train with, `args.coreward.*` included.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from unittest import mock

HOST_MODULE = "openrlhf.cli.train_ppo_ray"


def add_coreward_flags(parser: argparse.ArgumentParser) -> None:
    """Our flags, namespaced so OpenRLHF's `hierarchize` nests them under `args.coreward`."""
    a = parser.add_argument
    a(
        "--coreward.method",
        type=str,
        required=True,
        help="reward method name (coreward_plugins.methods)",
    )
    a("--coreward.method_options", type=str, default="{}", help="MethodOptions as JSON")
    a(
        "--coreward.policy_views",
        type=str,
        default="original",
        help="views the policy samples, comma-separated",
    )
    a(
        "--coreward.teacher_views",
        type=str,
        default="none",
        help="views the EMA teacher samples, or none",
    )
    a("--coreward.problems_per_step", type=int, required=True, help="problems drawn per RL step")
    a("--coreward.max_steps", type=int, default=None, help="stop after this many RL steps")
    a("--coreward.view_loss", type=str, default="sum", choices=["sum", "mean"])
    a("--coreward.kl_target", type=str, default="initial", choices=["initial", "teacher"])
    a(
        "--coreward.token_stats",
        type=int,
        default=0,
        help="1: compute per-response entropy/self-certainty",
    )
    a("--coreward.reward_actors", type=int, default=4, help="Ray actors grading answers")
    a(
        "--coreward.metrics_file",
        type=str,
        default=None,
        help="append one JSON line of metrics per step",
    )
    a(
        "--coreward.max_prompt_tokens",
        type=int,
        default=None,
        help="drop problems whose prompt (any view) is longer",
    )
    a(
        "--coreward.wandb",
        type=int,
        default=0,
        help="1: log to W&B (the key comes from WANDB_API_KEY, never from the arguments)",
    )
    a(
        "--coreward.score_timeout_s",
        type=float,
        default=1800.0,
        help="deadline for the grading actors to start and to score a step",
    )
    a(
        "--coreward.stop_on_collapse",
        type=int,
        default=0,
        help="1: stop when the collapse detector fires",
    )
    a("--coreward.teacher.decay_start", type=float, default=0.99)
    a("--coreward.teacher.decay_end", type=float, default=0.99999)
    a("--coreward.teacher.schedule", type=str, default="cosine", choices=["cosine", "constant"])
    a("--coreward.teacher.update_interval", type=int, default=1)


class _Captured(Exception):
    def __init__(self, args: SimpleNamespace) -> None:
        super().__init__("captured")
        self.parsed = args


@contextmanager
def _capture_patches() -> Iterator[None]:
    import openrlhf.utils
    import ray

    original_parse = argparse.ArgumentParser.parse_args

    def parse_with_ours(self: argparse.ArgumentParser, args=None, namespace=None):
        if not any(action.dest == "coreward.method" for action in self._actions):
            add_coreward_flags(self)
        return original_parse(self, args, namespace)

    def capture(args, *unused, **kw):
        raise _Captured(args)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_with_ours),
        mock.patch.object(openrlhf.utils, "get_strategy", capture),
        mock.patch.object(ray, "is_initialized", lambda: True),
    ):
        yield


def parse_args(argv: Sequence[str]) -> SimpleNamespace:
    """OpenRLHF's validated, hierarchized args for `argv` (flags only, no program name).

    argparse errors exit with status 2 and OpenRLHF's own usage message, as the real CLI does."""
    saved_argv = sys.argv
    sys.argv = [HOST_MODULE, *argv]
    try:
        with _capture_patches():
            runpy.run_module(HOST_MODULE, run_name="__main__", alter_sys=False)
    except _Captured as captured:
        return captured.parsed
    finally:
        sys.argv = saved_argv
    raise RuntimeError(
        f"{HOST_MODULE} finished without calling get_strategy: OpenRLHF is not 0.11.2?"
    )


def csv_views(value: str) -> tuple[str, ...]:
    return () if value in ("", "none") else tuple(v.strip() for v in value.split(","))
