"""What one run of `peerfind` was told, carried in typer's context object; exit codes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import typer

from peerfind.tls import TlsFiles

__all__ = [
    "DEFAULT_PEER",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "PEER_ENV",
    "Settings",
    "for_command",
]

PEER_ENV = "PEERFIND_PEER"
DEFAULT_PEER = "http://127.0.0.1:8001"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Settings:
    """What one run of the command was told: typer's context object (`ctx.obj`).

    The root options set `tls`; each command adds its `--peer` and `--json`.
    """

    tls: TlsFiles | None = None
    """PEM files for peers that serve TLS; None: plain text (and the system CAs for https)."""
    peer: str = DEFAULT_PEER
    as_json: bool = False


def for_command(ctx: typer.Context, peer: str = DEFAULT_PEER, as_json: bool = False) -> Settings:
    """The root's settings with this command's options, stored back on `ctx.obj`."""
    base = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    settings = replace(base, peer=peer, as_json=as_json)
    ctx.obj = settings
    return settings
