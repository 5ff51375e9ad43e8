"""Final answers: extract them from a response, and compare two of them.

Extraction is the official Co-rewarding reward's (verl's `last_boxed_only_string` + `remove_boxed`):
the content of the last `\\boxed{...}` with balanced braces, or, when the text contains `\\boxed ` (with a
space), everything after the last `\\boxed ` up to the next `$`. A lone `\\fbox{...}` is no answer, as
in the official code (its `remove_boxed` fails on it); the `fbox` fallback reads its content instead.
Optional fallbacks apply only when no boxed answer is found.

Comparison modes (`AnswerMatcher`):
- `exact`: raw string equality, as in the paper.
- `hendrycks`: the official GT reward and validation grader (verl `math.compute_score`): equality after
  the Hendrycks-MATH `strip_string` (`coreward_plugins.hendrycks`).
- `normalized`: equality of the cheap canonical keys of `answer_keys.normalize_answer` (looser).
- `math_verify`: equal keys decide "equal" at no cost; different plain numbers decide "different";
  everything else goes to math-verify in a killable worker process with a deadline (verify_pool),
  after a guard that keeps hostile answers away from sympy. The worker's verdicts are strict and
  symmetric (`strict_compare`: an equation equals a bare expression only when it names a lone
  variable, a set never equals a tuple or an interval). Verdicts are cached per unordered pair of
  answers as written.
  `first_equal(a, candidates)` sends all of a's undecided pairs to the worker in one message.
Nothing here evaluates model output as code, and every comparison returns within a bounded time from
any thread or process.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from coreward_plugins.answer_keys import as_fraction, normalize_answer, safe_for_sympy
from coreward_plugins.hendrycks import hendrycks_key
from coreward_plugins.verify_pool import shared_pool

__all__ = [
    "FALLBACKS",
    "Fallback",
    "AnswerMatcher",
    "MatchMode",
    "MatcherStats",
    "extract_answer",
    "normalize_answer",
]

MatchMode = Literal["exact", "hendrycks", "normalized", "math_verify"]
Fallback = Literal["gsm8k", "answer_is", "last_number", "fbox"]
FALLBACKS: tuple[str, ...] = get_args(Fallback)
_ANSWER_IS = re.compile(r"(?i)the\s+(?:final\s+)?answer\s+is\s*:?\s*")
_NUMBER = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|-?[0-9]+(?:\.[0-9]+)?|-?\.[0-9]+")
_BRACE = re.compile(r"[{}]")
_LONG_DECIMAL = re.compile(r"\.[0-9]{6,}")  # math-verify compares floats rounded: leave those to it
MAX_FALLBACK_CHARS = 200
_CACHE_LIMIT = 200_000


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _last_boxed(text: str) -> str | None:
    """The official extraction (verl `last_boxed_only_string` + `remove_boxed`)."""
    spaced = text.rfind("\\boxed ")
    if spaced >= 0:  # verl: "\boxed 5$" style, up to the next "$"
        return text[spaced + len("\\boxed ") :].split("$", 1)[0]
    return _braced_after(text, "\\boxed")


def _last_fbox(text: str) -> str | None:
    return _braced_after(text, "\\fbox")


def _braced_after(text: str, command: str) -> str | None:
    """The content of the last `command{...}` with balanced braces; None when it is written otherwise
    (e.g. "\\boxed\\n{5}", which verl's remove_boxed rejects too) or never closes."""
    start = text.rfind(command)
    if start < 0:
        return None
    depth, end = 0, -1
    for m in _BRACE.finditer(text, start):
        depth += 1 if m.group(0) == "{" else -1
        if depth == 0:
            end = m.start()
            break
    opening = command + "{"
    if end < 0 or not text.startswith(opening, start):
        return None
    return text[start + len(opening) : end]


def _after_marks(text: str) -> str | None:
    marker = text.rfind("####")
    if marker < 0:
        return None
    return text[marker + 4 :].split("\n", 1)[0].strip().lstrip("$").strip()


def _answer_is(text: str) -> str | None:
    last = next(reversed(list(_ANSWER_IS.finditer(text))), None)
    if last is None:
        return None
    rest = text[last.end() : last.end() + MAX_FALLBACK_CHARS].split("\n", 1)[0]
    rest = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]  # the sentence ends at ". " (not at "3.5")
    return rest.strip().strip("*").strip().strip("$").strip() or None


def _last_number(text: str) -> str | None:
    last = next(reversed(list(_NUMBER.finditer(text))), None)
    return last.group(0).replace(",", "") if last is not None else None


_FALLBACK_FUNCTIONS = {
    "gsm8k": _after_marks,
    "answer_is": _answer_is,
    "last_number": _last_number,
    "fbox": _last_fbox,
}


def extract_answer(text: str | None, fallbacks: Sequence[str] = ()) -> str | None:
    """The final answer of a response: the last boxed answer, else the first fallback that finds one.

    fallbacks, tried in order: "gsm8k" (`#### x`), "answer_is" ("the answer is x"), "last_number",
    "fbox" (the last `\\fbox{x}`).
    Blank answers count as none (None), as in the official vote.
    """
    unknown = [f for f in fallbacks if f not in _FALLBACK_FUNCTIONS]
    if unknown:
        raise ValueError(
            f"unknown answer fallback {unknown[0]!r}; choose from {', '.join(FALLBACKS)}"
        )
    if text is None:
        return None
    text = _as_text(text)
    answer = _last_boxed(text)
    if answer is not None and answer.strip():
        return answer
    for name in fallbacks:
        answer = _FALLBACK_FUNCTIONS[name](text)
        if answer is not None and answer.strip():
            return answer
    return None


def _distinct_numbers(key_a: str, key_b: str, a: str, b: str) -> bool:
    """Two different exact numbers, which math-verify would also call different (no %, no long floats)."""
    if as_fraction(key_a) is None or as_fraction(key_b) is None:
        return False
    return not any("%" in s or _LONG_DECIMAL.search(s) for s in (a, b))


@dataclass
class MatcherStats:
    equal_calls: int = 0
    decided_by_key: int = 0  # keys equal, or two different plain numbers
    guarded: int = 0  # refused by the input guard: "not equal" without sympy
    cache_hits: int = 0
    verify_calls: int = 0  # pairs sent to a math-verify worker
    timeouts: int = 0  # of those, the ones with no verdict in time, or no free worker ("not equal")


class AnswerMatcher:
    """Compares final answers under one mode, with a time limit on every comparison.

    `key(a)` is a canonical string: equal keys mean equal answers (the converse holds for exact and
    normalized, not for math_verify). `equal(a, b)` reads `b` as the reference (math-verify's gold).
    Blank or missing answers are never equal to anything.
    """

    def __init__(self, mode: MatchMode = "exact", timeout_s: float = 5.0) -> None:
        if mode not in get_args(MatchMode):
            raise ValueError(
                f"unknown match mode {mode!r}; choose from {', '.join(get_args(MatchMode))}"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if mode == "math_verify" and importlib.util.find_spec("math_verify") is None:
            raise ImportError(
                "match mode math_verify needs math-verify: pip install 'math-verify[antlr4_13_2]'"
            )
        self.mode: MatchMode = mode
        self.timeout_s = float(timeout_s)
        self.stats = MatcherStats()
        self._verdicts: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()
        if mode == "math_verify":
            shared_pool().warm()

    @property
    def keys_decide(self) -> bool:
        """True when equal() is exactly key equality (exact, normalized): votes need no pairwise work."""
        return self.mode != "math_verify"

    @property
    def max_call_s(self) -> float:
        """The longest an equal() call can take (math_verify: waiting for a worker, its start, the deadline)."""
        return (
            shared_pool().max_call_s(self.timeout_s)
            if self.mode == "math_verify"
            else self.timeout_s
        )

    def key(self, answer: str) -> str:
        text = _as_text(answer)
        if self.mode == "exact":
            return text
        return hendrycks_key(text) if self.mode == "hendrycks" else normalize_answer(text)

    def equal(self, a: str | None, b: str | None) -> bool:
        return self.first_equal(a, [b]) == 0

    def first_equal(self, a: str | None, candidates: Sequence[str | None]) -> int | None:
        """The index of the first candidate equal to `a` (each candidate read as the reference), or None.

        The same verdicts as `equal(a, c)` for each candidate in turn, but under math_verify every
        pair that needs the worker goes to it in one message, which stops at the first equal pair.
        """
        undecided: list[tuple[int, str, tuple[str, str]]] = []  # (index, candidate, cache pair)
        decided: int | None = None
        for i, b in enumerate(candidates):
            verdict = self._cheap_verdict(a, b)
            if verdict is True:
                decided = i
                break
            if isinstance(verdict, tuple):
                undecided.append((i, _as_text(b), verdict))
        if not undecided:
            return decided
        pred = _as_text(a)
        verdicts = shared_pool().verify_many(
            [(b, pred) for _, b, _ in undecided], self.timeout_s, first=True
        )
        self.stats.verify_calls += len(verdicts) if verdicts and verdicts[-1] else len(undecided)
        for (i, _, pair), verdict in zip(undecided, verdicts):
            if verdict is None:
                self.stats.timeouts += 1
            with self._lock:
                if len(self._verdicts) >= _CACHE_LIMIT:
                    self._verdicts.clear()
                self._verdicts[pair] = bool(verdict)  # a timed-out pair stays "not equal"
            if verdict:
                return i
        if len(verdicts) < len(undecided):  # no free worker: "not equal" now, but not remembered
            self.stats.timeouts += len(undecided) - len(verdicts)
        return decided

    def _cheap_verdict(self, a: str | None, b: str | None) -> bool | tuple[str, str]:
        """True or False when decided without math-verify, else the (cached-verdict) key pair to ask about."""
        self.stats.equal_calls += 1
        if a is None or b is None:
            return False
        a, b = _as_text(a), _as_text(b)
        if not a.strip() or not b.strip():
            return False
        if self.mode == "exact":
            return a == b
        if self.mode == "hendrycks":
            return hendrycks_key(a) == hendrycks_key(b)
        key_a, key_b = normalize_answer(a), normalize_answer(b)
        if key_a == key_b:
            self.stats.decided_by_key += 1
            return True
        if self.mode == "normalized":
            return False
        if _distinct_numbers(key_a, key_b, a, b):
            self.stats.decided_by_key += 1
            return False
        if not (safe_for_sympy(a) and safe_for_sympy(b)):
            self.stats.guarded += 1
            return False
        # The worker's verdict is symmetric, so one verdict serves both ways round. It is cached per pair
        # of answers as written, not per pair of keys: keys merge forms that math-verify reads apart
        # (`5\%` is 5 to a key, 1/20 to math-verify), and a verdict must not pass from one to the other.
        a, b = a.strip(), b.strip()
        pair = (a, b) if a < b else (b, a)
        with self._lock:
            cached = self._verdicts.get(pair)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        return pair

    def __getstate__(self) -> dict:
        return {"mode": self.mode, "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mode"], state["timeout_s"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"AnswerMatcher({self.mode!r}, timeout_s={self.timeout_s})"
