"""The official grader's answer comparison: Hendrycks-MATH string normalisation.

The Co-rewarding GT reward and its MATH validation score use verl's `math.compute_score`, which
compares `strip_string(answer) == strip_string(reference)` (the normalisation of the Hendrycks MATH
paper, via lm-evaluation-harness) and falls back to raw equality when the normalisation raises.
`hendrycks_key` reproduces that verdict as a key: two answers are equal under the official grader
exactly when their keys are equal. The steps, their order and their quirks are kept on purpose
(`1,000` stays apart from `1000`, `0.5` joins `\\frac{1}{2}` but `-0.5` does not join
`-\\frac{1}{2}`): this is the paper's grader, not a better one (that is `normalized` or `math_verify`).
"""

from __future__ import annotations

_RAW = "\x00raw\x00"  # prefix of an answer the normalisation rejects: compared as written


class _Rejected(Exception):
    """Where the official normalisation raises, and the grader falls back to raw equality."""


def hendrycks_key(answer: str) -> str:
    """A key with: key(a) == key(b) exactly when verl's `is_equiv(a, b)` holds."""
    try:
        return normalize(answer)
    except _Rejected:
        return _RAW + answer


def normalize(text: str) -> str:
    """verl's `strip_string`, step for step; raises _Rejected where it raises."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    text = _drop_unit(text).replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text.startswith("."):
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "x = 5", "k=3": keep the value
        text = sides[1]
    text = _brace_sqrt(text).replace(" ", "")
    text = _brace_fracs(text)
    if text == "0.5":
        return "\\frac{1}{2}"
    return _slash_to_frac(text)


def _drop_unit(text: str) -> str:
    """Cut a trailing unit written `\\text{ unit}` (with the space); twice is more than it handles."""
    if "\\text{ " not in text:
        return text
    parts = text.split("\\text{ ")
    if len(parts) != 2:
        raise _Rejected
    return parts[0]


def _brace_sqrt(text: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}`: the one character after `\\sqrt` gets braces (spaces too)."""
    head, *rest = text.split("\\sqrt")
    out = [head]
    for piece in rest:
        if not piece:
            raise _Rejected  # `\sqrt` at the very end
        out.append(piece if piece[0] == "{" else "{" + piece[0] + "}" + piece[1:])
    return "\\sqrt".join(out)


def _brace_fracs(text: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}`; a stub `\\fracX` leaves the text as it was."""
    head, *rest = text.split("\\frac")
    out = [head]
    for piece in rest:
        if not piece:
            raise _Rejected  # `\frac` at the very end
        if piece[0] == "{":
            out.append(piece)
        elif len(piece) < 2:
            return text
        elif piece[1] == "{":
            out.append("{" + piece[0] + "}" + piece[1:])
        else:
            out.append("{" + piece[0] + "}{" + piece[1] + "}" + piece[2:])
    return "\\frac".join(out)


def _slash_to_frac(text: str) -> str:
    """`3/4` -> `\\frac{3}{4}` when both sides are integers written the way Python prints them."""
    parts = text.split("/")
    if len(parts) == 2 and all(_printed_int(p) for p in parts):
        return "\\frac{" + parts[0] + "}{" + parts[1] + "}"
    return text


def _printed_int(text: str) -> bool:
    try:
        return str(int(text)) == text
    except (
        ValueError
    ):  # not an integer, or past Python's digit limit (the official code gives up too)
        return False
