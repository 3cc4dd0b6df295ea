"""How `peerfind` answers: one-line errors with exit codes, JSON, tables, progress bars."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from peerfind.client import ChunkCallback
from peerfind.errors import ClientError
from peerfind_cli._settings import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE
from peerfind_cli._sizes import parse_size

__all__ = [
    "error_line",
    "fail",
    "print_json",
    "progress",
    "run",
    "size_option",
    "stdout_console",
    "when",
]

_T = TypeVar("_T")


def error_line(message: str) -> None:
    """`peerfind: <message>` on stderr, folded to one line."""
    print(f"peerfind: {' '.join(message.split())}", file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print `peerfind: <message>` as one line on stderr and exit with `code`."""
    error_line(message)
    raise typer.Exit(code)


def size_option(text: str, option: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        fail(f"{option}: {exc}", EXIT_USAGE)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        fail(f"{option}: {value} bytes is out of range ({minimum}{upper})", EXIT_USAGE)
    return value


def run(work: Coroutine[Any, Any, _T]) -> _T:
    """Run one coroutine; turn every failure into one line and an exit code."""
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except ClientError as exc:
        fail(str(exc) or type(exc).__name__)
    except Exception as exc:
        fail(f"unexpected error: {type(exc).__name__}: {exc}")


def print_json(data: str) -> None:
    sys.stdout.write(data + "\n")
    sys.stdout.flush()


def stdout_console() -> Console:
    return Console(highlight=False)


def when(epoch: float) -> str:
    if epoch <= 0:
        return "never"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def progress(label: str, total: int | None, enabled: bool) -> Iterator[ChunkCallback]:
    """A byte progress bar on stderr (only on a terminal) with rate and ETA; yields the
    callback that advances it (by a negative count when bytes are given back)."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )
    task = bar.add_task(label, total=total)

    def advance(nbytes: int) -> None:
        bar.advance(task, nbytes)

    with bar:
        yield advance
