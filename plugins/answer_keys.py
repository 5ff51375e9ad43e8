"""Cheap canonical keys for final answers, and the guard that keeps hostile answers away from sympy.

`normalize_answer` maps answers that differ only in notation to one string: `\\dfrac12`, `\\frac{1}{2}`,
`0.5` and `1/2` all become `1/2`; `142.0` and `142` become `142`; `1,000` becomes `1000`, `070` becomes
`70`; `\\text{ cm}` units, degrees, dollars, percent signs, `x =` prefixes and spacing are dropped.
A comma is a thousands separator only with exactly three digits after it and no space (`32, 349` and
`1,00` are lists, not numbers); spacing between two digits is kept (`2 3` is not `23`); a prefix is
dropped only when it names a lone variable (`x =`, `a_n =`, `\\theta =`; not `7 =` or `\\pi =`). It is
plain string work plus exact rational arithmetic (`fractions.Fraction`) on strings that a strict ASCII
pattern has already shown to be numbers; nothing is ever evaluated as code. Answers longer than
`MAX_KEY_CHARS` are keyed raw, so hostile 100 kB answers cost nothing.

`safe_for_sympy` says whether an answer may go to math-verify (latex2sympy + sympy) at all: short,
balanced, shallow, no exponent towers, no huge factorials, no TeX file or macro commands, nothing that
reads like program text.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

MAX_KEY_CHARS = 1000  # longer answers are keyed raw: no normalisation work on hostile text
MAX_NUMBER_DIGITS = 60  # longer digit strings are not turned into rationals
MAX_SYMPY_CHARS = 400  # longer answers never reach sympy (real final answers are far shorter)
MAX_SYMPY_DEPTH = 12  # bracket nesting allowed before sympy

# Spacing and sizing commands that never change a value.
_NOISE = re.compile(  # a row break (two backslashes) is matched first, to be kept whole
    r"\\\\|\\(?:displaystyle|textstyle|!|,|;|:|quad|qquad| )|\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])"
)
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°")
_FRAC_ALIASES = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_BINOM_ALIASES = re.compile(r"\\[dt]binom(?![a-zA-Z])")
_WRAPPERS = (
    "\\boxed",
    "\\text",
    "\\textbf",
    "\\textit",
    "\\textrm",
    "\\mathrm",
    "\\mathbf",
    "\\mbox",
)
# A trailing text group that names a unit ("\\text{ cm}", "\\mbox{square units}", "\\text{m/s}^2").
_UNIT_GROUP = re.compile(r"\\(?:text|mbox|textrm)\{\s*[A-Za-z][A-Za-z /.\-]*\}(?:\^\{?[0-9]\}?)?$")
_UNIT_WORDS = (
    "square units|sq units|units|unit|cm|mm|km|m|meters|metres|meter|centimeters|kilometers|inches|inch|"
    "feet|foot|ft|yards|yd|miles|mph|degrees|degree|dollars|dollar|cents|cent|minutes|minute|min|hours|hour|"
    "seconds|second|sec|days|day|weeks|years|grams|kg|g|pounds|lbs|ounces|oz|liters|litres|ml|people|students"
)
# A plain number followed by a unit word: "12 cm", "3.5 hours", "5 square units".
_NUMBER_THEN_UNIT = re.compile(
    rf"^([+-]?[0-9][0-9,]*(?:\.[0-9]+)?)\s*(?:{_UNIT_WORDS})(?:\^\{{?[0-9]\}}?)?\.?$"
)
_GREEK = (  # letters that name variables (not \pi, a constant)
    "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|rho|"
    "varrho|sigma|varsigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Sigma|"
    "Upsilon|Phi|Psi|Omega"
)
# `x =`, `a_n =`, `\theta =`: a lone variable's name before the only `=` (`7 =`, `\pi =`, `2x =` are not)
_VARIABLE_PREFIX = re.compile(
    rf"^(?:[a-zA-Z](?:_\{{?[a-zA-Z0-9]+\}}?)?|\\(?:{_GREEK})(?![a-zA-Z]))=(?![=<>])"
)
# Spacing between two digits separates two numbers (`2 3`, `1.5\;3`): it becomes one space, never nothing.
# `\!` (a negative space, as in `10,\!000`) is not spacing.
_DIGIT_GAP = re.compile(r"(?<=[0-9])(?:\s|\\[,;: ]|\\q?quad(?![a-zA-Z]))+(?=[0-9])")
_SPACE_NOT_BETWEEN_DIGITS = re.compile(r"(?<![0-9]) | (?![0-9])")
# `32, 349` is a list: a thousands separator has no space after it (`\,` is a thin space, not a comma)
_SPACED_COMMA = re.compile(r"(?<!\\),\s")
_SINGLE_CHAR_GROUP = re.compile(r"([\^_])\{([a-zA-Z0-9])\}")
_THOUSANDS = re.compile(r"^[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?$")
_DECIMAL = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$")
_SLASH = re.compile(r"^([+-]?[0-9]+)/([+-]?[0-9]+)$")
_FRAC = re.compile(r"^([+-]?)\\frac\{([+-]?[0-9]*\.?[0-9]+)\}\{([+-]?[0-9]*\.?[0-9]+)\}$")
_BRACKETS = {"(": ")", "[": "]", "\\{": "\\}"}

# math-verify guard
_FORBIDDEN = re.compile(
    r"\\(?:input|include|includeonly|def|edef|gdef|xdef|let|newcommand|renewcommand|providecommand|"
    r"write|immediate|openout|openin|read|catcode|csname|usepackage|documentclass|special|directlua|"
    r"verbatim|lstinline|loop|repeat|expandafter)(?![a-zA-Z])"
)
_BIG_EXPONENT = re.compile(r"\^\s*\{?\s*[+-]?[0-9]{5,}")  # 2^{100000}
_TOWER = re.compile(
    r"\^\s*\{[^{}]*\^|\^\s*[0-9a-zA-Z]\s*\^|\*\*"
)  # 10^{10^{...}}, 2^3^4, python powers
_NESTED_EXP = re.compile(r"\\exp\s*(?:\\left)?\s*[({][^)}]*\\exp")  # \exp(\exp(...))
# Functions that explode (or need huge precision) on large arguments, and what counts as large for them.
_FACTORIAL_LIKE = re.compile(r"(?<!\\)!|\\Gamma|\\binom|\\choose")
_LARGE_FOR_FACTORIAL = re.compile(r"[0-9]{3,}|\^")  # 1000!, (10^6)!, \binom{10^6}{3}
_TRANSCENDENTAL = re.compile(
    r"\\(?:sin|cos|tan|sec|csc|cot|sinh|cosh|tanh|exp|log|ln|arc[a-z]+)(?![a-zA-Z])"
)
_LARGE_FOR_TRANSCENDENTAL = re.compile(r"[0-9]{7,}|\^\s*\{?\s*[+-]?[0-9]{3,}")  # \sin(10^{100})
_BIG_LITERAL = re.compile(r"[0-9]{13,}")  # fine in a plain number, a hazard inside an expression
_PLAIN_NUMBER = re.compile(r"^[\s0-9.,+\-]*$")
# Program text, not mathematics: dunders, quotes, shell substitutions, Python keywords and calls.
_CODE = re.compile(
    r"__|[\"`]|\$[({][a-z]+\s|&&|\bos\.|(?<![\\a-zA-Z])(?:import|lambda|exec|eval|open|system|subprocess)\b"
)
_LONG_NUMBER = re.compile(rf"[0-9]{{{MAX_NUMBER_DIGITS + 1},}}")


def _read_group(s: str, i: int) -> int:
    """Index just past the balanced {...} group that starts at s[i] == '{'; -1 when it never closes."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return -1


def _read_argument(s: str, i: int, depth: int) -> tuple[str, int] | None:
    """One TeX macro argument at s[i]: a balanced group, a \\command, or one character (TeX's rule);
    spaces before it are skipped, as TeX does (`\\frac 3 8`)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        end = _read_group(s, i)
        if end < 0:
            return None
        return "{" + _brace_arguments(s[i + 1 : end - 1], depth + 1) + "}", end
    if s[i] == "\\":
        m = re.match(r"\\[a-zA-Z]+|\\.", s[i : i + 40])
        if m is None:
            return None
        return "{" + m.group(0) + "}", i + m.end()
    if s[i] == "}":
        return None
    return "{" + s[i] + "}", i + 1


def _brace_arguments(s: str, depth: int = 0) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\sqrt2` -> `\\sqrt{2}`: every argument of these macros in braces."""
    if depth > 20:
        return s
    out: list[str] = []
    i = 0
    for m in re.finditer(r"\\(frac|binom|sqrt)(?![a-zA-Z])", s):
        if m.start() < i:  # inside an argument, already handled recursively
            continue
        out.append(s[i : m.end()])
        i = m.end()
        if (
            m.group(1) == "sqrt" and i < len(s) and s[i] == "["
        ):  # \sqrt[3]{x}: keep the index as written
            close = s.find("]", i)
            if close < 0:
                break
            out.append(s[i : close + 1])
            i = close + 1
        for _ in range(1 if m.group(1) == "sqrt" else 2):
            arg = _read_argument(s, i, depth)
            if arg is None:
                break
            out.append(arg[0])
            i = arg[1]
    out.append(s[i:])
    return "".join(out)


def _unwrap(s: str) -> str:
    """Replace `\\text{X}`, `\\mathrm{X}`, `\\boxed{X}` ... by X (balanced braces; malformed left as is)."""
    for _ in range(8):  # nested wrappers: \boxed{\text{5}}
        changed = False
        for name in _WRAPPERS:
            start = 0
            while (k := s.find(name + "{", start)) >= 0:
                end = _read_group(s, k + len(name))
                if end < 0:
                    break
                s = s[:k] + s[k + len(name) + 1 : end - 1] + s[end:]
                start = k
                changed = True
        if not changed:
            break
    return s


def as_fraction(s: str) -> Fraction | None:
    """The exact value of a plain number written as `-3`, `0.50`, `.5`, `1/2` or `\\frac{1}{2}`; else None."""
    if len(s) > MAX_NUMBER_DIGITS + 10:
        return None
    try:
        if _DECIMAL.match(s) and s not in "+-.":
            return Fraction(s)
        if m := _SLASH.match(s):
            return Fraction(int(m.group(1)), int(m.group(2))) if int(m.group(2)) != 0 else None
        if m := _FRAC.match(s):
            num, den = Fraction(m.group(2)), Fraction(m.group(3))
            if den == 0:
                return None
            return -num / den if m.group(1) == "-" else num / den
    except (ValueError, ZeroDivisionError):
        return None
    return None


def format_fraction(value: Fraction) -> str:
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


def _canonical_number(s: str, thousands: bool = True) -> str:
    if thousands and _THOUSANDS.match(s):
        s = s.replace(",", "")
    value = as_fraction(s)
    return s if value is None else format_fraction(value)


def _split_top_level(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _canonical_elements(s: str) -> str:
    """Numbers inside a tuple, interval or set, each made canonical: `(0.5, 2.0)` -> `(1/2,2)`."""
    for left, right in _BRACKETS.items():
        for close in (right, ")", "]"):  # half-open intervals mix brackets
            if s.startswith(left) and s.endswith(close) and len(s) > len(left) + len(close):
                inner = s[len(left) : len(s) - len(close)]
                items = _split_top_level(inner)
                if len(items) > 1:
                    return left + ",".join(_canonical_number(x) for x in items) + close
    return s


def normalize_answer(answer: str) -> str:
    """The canonical key of a final answer (see the module docstring); raw when longer than MAX_KEY_CHARS."""
    s = answer.strip()
    if not s or len(s) > MAX_KEY_CHARS:
        return s
    return _normalize(s)


@lru_cache(maxsize=65536)
def _normalize(s: str) -> str:
    s = s.replace("\u2212", "-").replace("\u00a0", " ").replace("\n", " ")
    thousands = not _SPACED_COMMA.search(s)  # a comma and a space: a list, no thousands separators
    s = _DIGIT_GAP.sub(" ", s)
    s = _NOISE.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else "", s)
    s = _FRAC_ALIASES.sub(r"\\frac", s)
    s = _BINOM_ALIASES.sub(r"\\binom", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = s.strip().rstrip(".").strip()
    if len(_UNIT_GROUP.sub("", s).strip()) > 0:  # "5\text{ cm}" -> "5"; a lone "\text{east}" stays
        s = _UNIT_GROUP.sub("", s).strip()
    s = _unwrap(s).strip()
    if m := _NUMBER_THEN_UNIT.match(s):
        s = m.group(1)
    s = _SPACE_NOT_BETWEEN_DIGITS.sub("", re.sub(r"\s+", " ", s))
    s = s.replace("{,}", ",")
    s = _SPACE_NOT_BETWEEN_DIGITS.sub("", _brace_arguments(s))  # \frac3 8 -> \frac{3}{8}
    s = _SINGLE_CHAR_GROUP.sub(r"\1\2", s)
    if _VARIABLE_PREFIX.match(s) and s.count("=") == 1:
        s = _VARIABLE_PREFIX.sub("", s, count=1)
    s = s.rstrip(".")
    if s.startswith("+") and as_fraction(s) is not None:
        s = s[1:]
    return _canonical_elements(_canonical_number(s, thousands))


def _depth(s: str) -> int:
    depth = deepest = 0
    for ch in s:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def safe_for_sympy(answer: str) -> bool:
    """Whether an answer is small and tame enough to hand to latex2sympy/sympy at all."""
    if not answer.strip() or len(answer) > MAX_SYMPY_CHARS:
        return False
    if (
        answer.count("{") != answer.count("}")
        or _read_group("{" + answer + "}", 0) != len(answer) + 2
    ):
        return False
    if _depth(answer) > MAX_SYMPY_DEPTH or answer.count("^") > 8:
        return False
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in answer):  # lone surrogates (undecodable bytes)
        return False
    if any(
        p.search(answer)
        for p in (_FORBIDDEN, _CODE, _BIG_EXPONENT, _TOWER, _NESTED_EXP, _LONG_NUMBER)
    ):
        return False
    if _FACTORIAL_LIKE.search(answer) and _LARGE_FOR_FACTORIAL.search(answer):
        return False
    if _TRANSCENDENTAL.search(answer) and _LARGE_FOR_TRANSCENDENTAL.search(answer):
        return False
    return not (_BIG_LITERAL.search(answer) and not _PLAIN_NUMBER.match(answer))
