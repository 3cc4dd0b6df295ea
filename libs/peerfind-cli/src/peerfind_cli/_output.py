"""How `peerfind` answers: one-line errors with exit codes, JSON, tables, trees, progress bars."""

from __future__ import annotations

import asyncio
import json
import sys
import unicodedata
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
from rich.text import Text
from rich.tree import Tree

from peerfind.api import TraceNode
from peerfind.client import ChunkCallback
from peerfind.errors import ClientError
from peerfind_cli._settings import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE
from peerfind_cli._sizes import parse_size

__all__ = [
    "cell",
    "error_line",
    "fail",
    "json_error",
    "plural",
    "print_json",
    "progress",
    "run",
    "safe",
    "size_option",
    "stdout_console",
    "trace_tree",
    "when",
]

_T = TypeVar("_T")


# Bidirectional overrides and isolates: not control characters (Cc), but they reorder
# what a terminal shows ("Trojan Source"), so a name cannot hide its real spelling.
_BIDI = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))


def safe(text: str) -> str:
    """`text` with every control character (and bidi override) escaped as Python would
    (`\\x1b`, `\\n`, `\\u202e`): what peers send (file names, ids, error details) is
    shown, never obeyed, by a terminal (an escape sequence in a name could set the
    window title or rewrite the screen). Printable text, non-ASCII included, is kept."""
    if text.isprintable() and not _BIDI.intersection(text):
        return text
    out = []
    for c in text:
        if c in _BIDI or unicodedata.category(c) == "Cc":
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)


def cell(text: str) -> Text:
    """A table cell or line of peer-supplied text: escaped (`safe`), never markup."""
    return Text(safe(text))


def plural(count: int, word: str) -> str:
    """`1 hit`, `0 hits`, `2 peers`."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def trace_tree(trace: TraceNode) -> Tree:
    """The hop tree of an explained search, every peer-supplied string escaped (`cell`):

        peer1 (ttl 10, 0 hits)
        ├── peer4 (ttl 9, 0 hits)
        │   └── peer7 (ttl 8, 1 hit)
        ├── peer2 failed: timed out
        └── skipped: peer3 (summary_miss), peer5 (visited)

    Built without recursion: a trace is a peer's answer, as deep as the peer made it.
    """
    root = Tree(_trace_label(trace))
    todo = [(root, trace)]
    while todo:
        branch, node = todo.pop()
        for child in node.children:
            todo.append((branch.add(_trace_label(child)), child))
        if node.skipped:
            skipped = ", ".join(f"{s.peer_id} ({s.reason})" for s in node.skipped)
            branch.add(cell(f"skipped: {skipped}"))
    return root


def _trace_label(node: TraceNode) -> Text:
    if node.error is not None:
        return cell(f"{node.peer_id} failed: {' '.join(node.error.split())}")
    notes = [f"ttl {node.ttl}", plural(node.hits, "hit")]
    if node.duplicate:
        notes.append("duplicate")
    return cell(f"{node.peer_id} ({', '.join(notes)})")


def json_error(message: str, code: int) -> str:
    """The JSON object `--json` prints on stdout for an error (one line)."""
    return json.dumps({"error": " ".join(message.split()), "exit_code": code})


def error_line(message: str, code: int = EXIT_FAILURE, *, as_json: bool = False) -> None:
    """`peerfind: <message>` on stderr, folded to one line and escaped; `as_json` (the
    command's --json) also prints `{"error": ..., "exit_code": code}` on stdout, so a
    script reading stdout sees the failure too."""
    message = safe(" ".join(message.split()))
    print(f"peerfind: {message}", file=sys.stderr, flush=True)
    if as_json:
        print_json(json_error(message, code))


def fail(message: str, code: int = EXIT_FAILURE, *, as_json: bool = False) -> NoReturn:
    """`error_line`, then exit with `code`."""
    error_line(message, code, as_json=as_json)
    raise typer.Exit(code)


def size_option(
    text: str, option: str, *, minimum: int, maximum: int | None = None, as_json: bool = False
) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        fail(f"{option}: {exc}", EXIT_USAGE, as_json=as_json)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        fail(
            f"{option}: {value} bytes is out of range ({minimum}{upper})",
            EXIT_USAGE,
            as_json=as_json,
        )
    return value


def run(work: Coroutine[Any, Any, _T], *, as_json: bool = False) -> _T:
    """Run one coroutine; turn every failure into one line and an exit code (and the
    JSON error on stdout when `as_json`)."""
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED, as_json=as_json)
    except ClientError as exc:
        fail(str(exc) or type(exc).__name__, as_json=as_json)
    except Exception as exc:
        fail(f"unexpected error: {type(exc).__name__}: {exc}", as_json=as_json)


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
    callback that advances it (by a negative count when bytes are given back). The
    label (a file name) is escaped (`safe`) and never read as markup."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )
    task = bar.add_task(safe(label), total=total)

    def advance(nbytes: int) -> None:
        bar.advance(task, nbytes)

    with bar:
        yield advance
