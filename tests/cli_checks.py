"""What every CLI error must look like: exit status 2 and one line `error: ...`."""

from __future__ import annotations


def one_line_error(result, *fragments: str) -> str:
    """The error line of a click `result` that exited 2 with one `error: ...` line holding `fragments`."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
