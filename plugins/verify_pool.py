"""A small pool of persistent math-verify worker processes, with a hard deadline on every verdict.

Why processes: math-verify's own timeout is `signal.alarm`, which only works on the main thread, and a
sympy call stuck in C or in a long loop cannot be stopped from another thread. A worker process can be
killed. Each call hands one (gold, pred) pair to an idle worker and waits for its verdict until the
deadline; a late worker is killed (SIGKILL) and a fresh one is started at once in the background, so
the next call rarely waits for a start-up. `verify_many` sends several pairs in one message (a vote's new
answer against every cluster representative) and still gives each verdict its own deadline. Works from
any thread, from daemonic processes (plain `subprocess`, not `multiprocessing`), and after `fork` (a
child process builds its own pool).

Time bound of one `verify` call: waiting for a free worker (at most `timeout_s`), its start-up when
it was just (re)started (at most `startup_timeout_s`), then the comparison itself (at most `timeout_s`).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("verify_worker.py")


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            close_fds=True,
        )
        self.ready = False
        self.parsing = ""  # how the worker parses LaTeX, from its ready line: "two-stage" or "ll"
        self._buffer = b""
        self._next_id = 0

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker by the deadline; None when late or the worker died."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def wait_ready(self, deadline: float) -> bool:
        if not self.ready:
            line = self._read_line(deadline)
            try:
                hello = json.loads(line) if line is not None else {}
            except ValueError:
                hello = {}
            self.ready = isinstance(hello, dict) and hello.get("ready") is True
            self.parsing = str(hello.get("parsing", "")) if self.ready else ""
        return self.ready

    def send(self, payload: dict) -> int | None:
        """Write one request; its id, or None when the worker is gone."""
        assert self.proc.stdin is not None
        self._next_id += 1
        data = memoryview(json.dumps({"id": self._next_id, **payload}).encode("ascii") + b"\n")
        try:
            while data:  # an unbuffered pipe write may be partial
                data = data[self.proc.stdin.write(data) or 0 :]
        except (BrokenPipeError, OSError):
            return None
        return self._next_id

    def receive(self, request_id: int, deadline: float) -> dict | None:
        """The next reply to request_id by the deadline, or None when late or broken (then kill it)."""
        line = self._read_line(deadline)
        try:
            reply = json.loads(line) if line is not None else {}
        except ValueError:
            return None
        return reply if isinstance(reply, dict) and reply.get("id") == request_id else None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


class PoolBusy(Exception):
    """No worker became free in time (every one busy with other threads' comparisons)."""


@dataclass
class PoolStats:
    calls: int = 0
    timeouts: int = 0  # calls whose worker gave no verdict in time (counted as "not equal")
    busy: int = 0  # calls that found no free worker in time
    restarts: int = 0  # workers killed and replaced
    parsing: str = ""  # how the workers parse LaTeX ("two-stage" or "ll"), once one has been ready


class VerifyPool:
    """Thread-safe pool of up to `max_workers` math-verify processes."""

    def __init__(self, max_workers: int = 2, startup_timeout_s: float = 30.0) -> None:
        self.max_workers = max(1, max_workers)
        self.startup_timeout_s = startup_timeout_s
        self.stats = PoolStats()
        self._idle: list[_Worker] = []
        self._started = 0
        self._cond = threading.Condition()
        self._closed = False
        self._owner_pid = os.getpid()

    def max_call_s(self, timeout_s: float) -> float:
        """The longest one `verify` call can take (plus a few ms to kill a late worker)."""
        return 2 * timeout_s + self.startup_timeout_s

    def warm(self) -> None:
        """Start one worker in the background (returns at once)."""
        with self._cond:
            if self._started == 0 and not self._closed:
                self._idle.append(_Worker())
                self._started = 1

    def _acquire(self, deadline: float) -> _Worker | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._idle:
                    return self._idle.pop()
                if self._started < self.max_workers:
                    self._started += 1
                    return _Worker()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
            with self._cond:
                self.stats.restarts += 1
        with self._cond:
            if worker.parsing:
                self.stats.parsing = worker.parsing
            if self._closed:
                worker.kill()
                return
            self._idle.append(worker if healthy else _Worker())  # the replacement starts now
            self._cond.notify()

    def verify(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """math-verify's verdict on (gold, pred), or None when the worker gave none in time.

        Raises PoolBusy when no worker became free within timeout_s (a verdict that says nothing
        about the pair, so callers should not cache it).
        """
        verdicts = self.verify_many([(gold, pred)], timeout_s)
        if not verdicts:
            raise PoolBusy(f"no math-verify worker free within {timeout_s}s")
        return verdicts[0]

    def verify_many(
        self, pairs: Sequence[tuple[str, str]], timeout_s: float, first: bool = False
    ) -> list[bool | None]:
        """Verdicts on (gold, pred) pairs, in order, sent to one worker in one message.

        Each verdict has its own deadline (timeout_s after the previous one); a late pair gets None,
        its worker is killed and the pairs after it go to another worker. With first=True the
        comparisons stop after the first equal pair. The list is shorter than pairs when it stopped
        there, or when no worker became free within timeout_s (those pairs got no verdict at all:
        callers should not cache anything for them).
        """
        verdicts: list[bool | None] = []
        while len(verdicts) < len(pairs) and not (first and verdicts and verdicts[-1]):
            todo = [list(pair) for pair in pairs[len(verdicts) :]]
            with self._cond:
                self.stats.calls += 1
            worker = self._acquire(time.monotonic() + timeout_s)
            if worker is None:
                with self._cond:
                    self.stats.busy += 1
                break
            healthy = worker.wait_ready(time.monotonic() + self.startup_timeout_s)
            request_id = worker.send({"pairs": todo, "first": first}) if healthy else None
            healthy, answered = request_id is not None, len(verdicts)
            for i in range(len(todo)):
                if not healthy:
                    break
                reply = worker.receive(request_id, time.monotonic() + timeout_s)  # type: ignore[arg-type]
                healthy = (
                    reply is not None
                    and reply.get("i") == i
                    and isinstance(reply.get("equal"), bool)
                )
                verdicts.append(bool(reply["equal"]) if healthy else None)  # type: ignore[index]
                if healthy and first and reply["equal"]:  # type: ignore[index]
                    break
            if not healthy:
                with self._cond:
                    self.stats.timeouts += 1
                if (
                    len(verdicts) == answered
                ):  # it never got to answer: the pending pair counts as late
                    verdicts.append(None)
            self._release(worker, healthy)
        return verdicts

    def wait_warm(self, timeout_s: float = 120.0) -> bool:
        """Let one worker finish its warm-up (benchmarks call this before timing); True when done."""
        worker = self._acquire(time.monotonic() + timeout_s)
        if worker is None:
            return False
        deadline = time.monotonic() + timeout_s
        request_id = worker.send({"warm": True}) if worker.wait_ready(deadline) else None
        reply = worker.receive(request_id, deadline) if request_id is not None else None
        healthy = reply is not None and reply.get("warm") is True
        self._release(worker, healthy)
        return healthy

    def worker_pids(self) -> list[int]:
        """Process ids of the idle workers (benchmarks read their CPU time)."""
        with self._cond:
            return [worker.proc.pid for worker in self._idle]

    def close(self) -> None:
        if (
            os.getpid() != self._owner_pid
        ):  # inherited by a forked child: the workers are the parent's
            return
        with self._cond:
            self._closed = True
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.kill()


_pool: VerifyPool | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def shared_pool() -> VerifyPool:
    """The process-wide pool (a forked child gets its own; the parent's workers are left alone)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            workers = int(os.environ.get("COREWARD_VERIFY_WORKERS", "0")) or min(
                8, max(2, os.cpu_count() or 2)
            )
            _pool, _pool_pid = VerifyPool(max_workers=workers), os.getpid()
            atexit.register(_pool.close)
        return _pool


def restart_shared_pool() -> None:
    """Stop the shared pool's workers; the next `shared_pool()` starts new ones, which read the
    environment (`COREWARD_SLL_PARSING`, `COREWARD_VERIFY_WARM_UP`, `COREWARD_BOUNDED_SOLVE`) again."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.close()
        _pool = None


def _forget_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
