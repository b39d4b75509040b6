"""Click plumbing shared by every spoofsdk command line: the runtime's ``spoofsdk``, ``spoofsdk-train``,
the benchmark report and the scripts.

One error handler for all of them (:class:`Group` and :class:`Command`): an error the code raises on
purpose (:class:`~spoofsdk.errors.SpoofSDKError` and its subclasses, a missing or unreadable file)
becomes one line on stderr and an exit status, never a traceback. The status is the error's
``exit_code`` attribute when it has one, else 1; click's own usage errors exit with 2, and Ctrl-C
with 130. Anything else is a bug and keeps its traceback.

The version comes from the installed distribution's metadata (``importlib.metadata``), so it is
written once, in ``pyproject.toml``.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import click

from .errors import SpoofSDKError

__all__ = ["Group", "Command", "Failure", "version_option", "one_line", "run_main", "EXPECTED_ERRORS"]

# Errors a user can cause and act on. OSError covers missing, unreadable and unwritable files.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (SpoofSDKError, OSError)


class Failure(click.ClickException):
    """A typed error as click shows it: ``Error: <one line>`` on stderr, exit status ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException) -> str:
    """The error as one line: its message with whitespace collapsed (an OSError names its file)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _translate(error: BaseException) -> Failure:
    return Failure(one_line(error), int(getattr(error, "exit_code", 1) or 1))


class _Handled:
    """Mixin: turn expected errors raised while invoking a command into :class:`Failure`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`spoofsdk run --json dir | head -1`): not an error to report. click's
            # main exits 1 quietly on EPIPE, as a tool killed by SIGPIPE would not print either.
            raise
        except EXPECTED_ERRORS as e:
            raise _translate(e) from e
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


class Command(_Handled, click.Command):
    """A click command with the shared error handler (for single-command scripts)."""


class Group(_Handled, click.Group):
    """A click group whose subcommands share the error handler."""

    command_class = Command
    group_class = type  # subgroups are Groups too


def version_option(distribution: str, prog_name: str | None = None) -> Callable:
    """``--version`` reading the installed distribution's version (importlib.metadata)."""
    return click.version_option(package_name=distribution, prog_name=prog_name or distribution, message="%(prog)s %(version)s")


def run_main(command: click.Command, argv: Sequence[str] | None = None, prog_name: str | None = None) -> int:
    """Run a click command as a function: returns the exit status instead of calling ``sys.exit``.

    Messages go to stderr exactly as in standalone mode; a command may return an int status.
    """
    try:
        rv = command.main(args=list(argv) if argv is not None else None, prog_name=prog_name, standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 130
    if isinstance(rv, int) and not isinstance(rv, bool):
        return rv
    return 0


def entry_point(command: click.Command, prog_name: str | None = None) -> Callable[[], None]:
    """A console-script function for ``command`` that exits with its status."""

    def main(argv: Sequence[str] | None = None) -> None:
        sys.exit(run_main(command, argv, prog_name))

    return main
