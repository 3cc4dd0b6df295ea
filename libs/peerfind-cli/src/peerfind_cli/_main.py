"""The console entry point: run one command, exit with its code, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import typer

from peerfind_cli._commands import app
from peerfind_cli._output import error_line
from peerfind_cli._settings import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: run the command, exit with its code, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    # --json before any "--": known before the options are parsed, so an error in
    # parsing them (or in the root's) is a JSON object on stdout too.
    as_json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    try:
        result = command.main(
            args=args or ["--help"],
            prog_name="peerfind",
            standalone_mode=False,
            obj=Settings(as_json=as_json),
        )
        code = result if isinstance(result, int) else 0
    except typer.TyperException as exc:  # click's usage errors (exit code 2)
        message = exc.format_message()
        context = getattr(exc, "ctx", None)
        if exc.exit_code == EXIT_USAGE and context is not None:
            message = f"{message} (see '{context.command_path} --help')"
        error_line(message, exc.exit_code, as_json=as_json)
        code = exc.exit_code
    except typer.Abort:
        error_line("aborted", EXIT_FAILURE, as_json=as_json)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        error_line("interrupted", EXIT_INTERRUPTED, as_json=as_json)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`peerfind files --json | head`): say nothing more, and
        # point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_FAILURE
    except Exception as exc:
        error_line(f"unexpected error: {type(exc).__name__}: {exc}", as_json=as_json)
        code = EXIT_FAILURE
    sys.exit(code)
