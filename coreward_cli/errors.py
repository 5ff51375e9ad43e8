"""User-caused errors: one line naming the field, file or value and the fix; exit status 2."""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """An error the user can fix. Printed as one line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # one line, no "Error:" noise from click's usage text
        click.echo(f"error: {self.format_message()}", err=True, file=file)
