"""The library's errors. The CLI (`main.py`) prints them as one line and exits with their status.

Library code never imports click for this: a function called from a script or a test raises a
plain exception, and only the command-line layer decides how it is shown.
"""

from __future__ import annotations


class CorewardError(Exception):
    """An error reported as one line (`error: ...`) with exit status `exit_code`."""

    exit_code = 1


class UserError(CorewardError):
    """An error the user can fix: the message names the field, file or value and the fix."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters), for wrapping a library's error."""
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


def field_names(keys) -> str:
    """Field names for a one-line message, sorted, each as Python writes it: a name holding a line
    break or another unprintable character (a hostile file's keys) cannot split the line."""
    return ", ".join(repr(str(key)) for key in sorted(keys, key=str))
