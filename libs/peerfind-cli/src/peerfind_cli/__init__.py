"""The `peerfind` command: look around the network, locate files, test transfers.

    peerfind health                        # the peer at $PEERFIND_PEER (or :8001)
    peerfind search hello --fanout 3       # a table; --json for scripts
    peerfind search hello --mode walk --explain  # and the route the query took
    peerfind download hello3.txt           # locate via any peer, stream from the owner
    peerfind upload --to 127.0.0.1:50051 --size 10MiB

Errors are one line on stderr, `peerfind: <message>`; the exit code is 1 for a
failed call (unreachable, refused, not found), 2 for a usage error and 130 on
Ctrl-C. The commands are thin: the work happens in `peerfind.client`.

Modules: `_commands` (the typer app), `_settings` (the context object, exit codes),
`_output` (errors, JSON, tables, progress), `_sizes` (`10MiB`), `_main` (entry point).
"""

from __future__ import annotations

from peerfind_cli._commands import app
from peerfind_cli._main import main
from peerfind_cli._settings import DEFAULT_PEER, PEER_ENV, Settings
from peerfind_cli._sizes import parse_size

__all__ = ["DEFAULT_PEER", "PEER_ENV", "Settings", "app", "main", "parse_size"]
