"""The `peerfind` command: look around the network, locate files, test transfers.

    peerfind health                        # the peer at $PEERFIND_PEER (or :8001)
    peerfind search hello --fanout 3       # a table; --json for scripts
    peerfind download hello3.txt           # locate via any peer, stream from the owner
    peerfind upload --to 127.0.0.1:50051 --size 10MiB

Errors are one line on stderr, `peerfind: <message>`; the exit code is 1 for a
failed call (unreachable, refused, not found), 2 for a usage error and 130 on
Ctrl-C. The commands are thin: the work happens in `peerfind.client`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.filesize import decimal as human_size
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from peerfind import __version__
from peerfind.api import MAX_QUERY_LENGTH, SearchHit
from peerfind.client import (
    ChunkCallback,
    PeerClient,
    choose_owner,
    download_from,
    locate,
    upload_to,
)
from peerfind.config import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from peerfind.errors import ClientError, InvalidNameError
from peerfind.index import validate_file_name
from peerfind.tls import TlsFiles

__all__ = ["DEFAULT_PEER", "PEER_ENV", "app", "main", "parse_size"]

PEER_ENV = "PEERFIND_PEER"
DEFAULT_PEER = "http://127.0.0.1:8001"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_T = TypeVar("_T")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}

app = typer.Typer(
    name="peerfind",
    help="Locate files across peerfind peers and test transfers with their owners.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

PeerOption = Annotated[
    str,
    typer.Option(
        "--peer",
        envvar=PEER_ENV,
        metavar="URL",
        help=f"REST URL of the peer to ask (env {PEER_ENV}).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
FanoutOption = Annotated[
    int | None,
    typer.Option("--fanout", min=0, metavar="N", help="Peers each hop forwards to."),
]
TimeoutOption = Annotated[
    int | None,
    typer.Option("--timeout-ms", min=1, metavar="MS", help="Search deadline in milliseconds."),
]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Settings:
    """What one run of the command was told: typer's context object (`ctx.obj`).

    The root options set `tls`; each command adds its `--peer` and `--json`.
    """

    tls: TlsFiles | None = None
    """PEM files for peers that serve TLS; None: plain text (and the system CAs for https)."""
    peer: str = DEFAULT_PEER
    as_json: bool = False


def _settings(ctx: typer.Context, peer: str = DEFAULT_PEER, as_json: bool = False) -> Settings:
    """The root's settings with this command's options, stored back on `ctx.obj`."""
    base = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    settings = replace(base, peer=peer, as_json=as_json)
    ctx.obj = settings
    return settings


# --------------------------------------------------------------------------- helpers


def parse_size(text: str) -> int:
    """Bytes from `10MiB`, `1GiB`, `500kB`, `4K` or `1048576` (units as in coreutils).

    Raises ValueError with a one-line message.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"invalid size {text!r} (examples: 1048576, 500kB, 10MiB, 1GiB)")
    try:
        value = Decimal(match.group(1)) * _UNITS[unit]
    except InvalidOperation:
        raise ValueError(f"invalid size {text!r}") from None
    if value != value.to_integral_value():
        raise ValueError(f"size {text!r} is not a whole number of bytes")
    return int(value)


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print `peerfind: <message>` as one line on stderr and exit with `code`."""
    print(f"peerfind: {' '.join(message.split())}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def _size_option(text: str, option: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        _fail(f"{option}: {exc}", EXIT_USAGE)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        _fail(f"{option}: {value} bytes is out of range ({minimum}{upper})", EXIT_USAGE)
    return value


def _run(work: Coroutine[Any, Any, _T]) -> _T:
    """Run one coroutine; turn every failure into one line and an exit code."""
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except ClientError as exc:
        _fail(str(exc) or type(exc).__name__)
    except Exception as exc:
        _fail(f"unexpected error: {type(exc).__name__}: {exc}")


def _print_json(data: str) -> None:
    sys.stdout.write(data + "\n")
    sys.stdout.flush()


def _console() -> Console:
    return Console(highlight=False)


def _when(epoch: float) -> str:
    if epoch <= 0:
        return "never"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def _progress(label: str, total: int | None, enabled: bool) -> Iterator[ChunkCallback]:
    """A byte progress bar on stderr (only on a terminal); yields the chunk callback."""
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


# --------------------------------------------------------------------------- commands


def _version(value: bool) -> None:
    if value:
        print(f"peerfind {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar="PEERFIND_CA_FILE",
            help="PEM CA for peers that serve TLS (HTTPS and gRPC).",
            dir_okay=False,
            exists=True,
        ),
    ] = None,
    cert_file: Annotated[
        Path | None,
        typer.Option(
            envvar="PEERFIND_CERT_FILE",
            help="PEM client certificate for gRPC mutual TLS.",
            dir_okay=False,
            exists=True,
        ),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="PEERFIND_KEY_FILE",
            help="PEM key of --cert-file.",
            dir_okay=False,
            exists=True,
        ),
    ] = None,
) -> None:
    """Locate files across peerfind peers and test transfers with their owners."""
    if (cert_file is None) != (key_file is None):
        _fail("--cert-file and --key-file go together", EXIT_USAGE)
    tls = TlsFiles(ca_file, cert_file, key_file)
    ctx.obj = Settings(tls=tls if tls.enabled else None)


@app.command()
def health(
    ctx: typer.Context, peer: PeerOption = DEFAULT_PEER, as_json: JsonOption = False
) -> None:
    """Show a peer's status: index, transfer service, peers known."""
    settings = _settings(ctx, peer, as_json)
    result = _run(_call(settings, lambda c: c.health()))
    if settings.as_json:
        _print_json(result.model_dump_json(indent=2))
        return
    table = Table(title=Text(f"{result.peer_id} at {result.url}"), show_header=False)
    index, transfer = result.index, result.transfer
    rows = [
        ("status", result.status),
        ("version", result.version),
        ("uptime", f"{result.uptime_s:.0f} s"),
        ("gRPC address", result.grpc_address),
        ("peers known", str(result.peers)),
        ("index", f"{index.files} files, {human_size(index.bytes)}"),
        ("index available", "yes" if index.available else "no"),
        ("index stale", "yes" if index.stale else "no"),
        ("last scan", _when(index.last_scan_at)),
        ("transfer", f"{transfer.address} ({'serving' if transfer.serving else 'NOT serving'})"),
    ]
    for key, value in rows:
        table.add_row(key, Text(value))
    _console().print(table)


@app.command()
def peers(ctx: typer.Context, peer: PeerOption = DEFAULT_PEER, as_json: JsonOption = False) -> None:
    """List the peers a peer knows."""
    settings = _settings(ctx, peer, as_json)
    result = _run(_call(settings, lambda c: c.peers()))
    if settings.as_json:
        _print_json(result.model_dump_json(indent=2))
        return
    table = Table(title=Text(f"peers known to {result.peer_id}"))
    for column in ("peer", "state", "REST URL", "gRPC address", "last seen (UTC)", "friend"):
        table.add_column(column)
    for info in result.peers:
        table.add_row(
            Text(info.peer_id),
            Text(info.state),
            Text(info.url),
            Text(info.grpc_address or "-"),
            _when(info.last_seen),
            "yes" if info.friend else "",
        )
    console = _console()
    console.print(table)
    console.print(f"{len(result.peers)} peer(s)")


@app.command()
def files(
    ctx: typer.Context,
    peer: PeerOption = DEFAULT_PEER,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, metavar="N", help="Files per page.")
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", metavar="PATH", help="Start after this path.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List one page of a peer's shared files."""
    settings = _settings(ctx, peer, as_json)
    result = _run(_call(settings, lambda c: c.files(limit=limit, after=after)))
    if settings.as_json:
        _print_json(result.model_dump_json(indent=2))
        return
    table = Table(title=Text(f"files shared by {result.peer_id}"))
    table.add_column("name")
    table.add_column("path")
    table.add_column("size", justify="right")
    table.add_column("modified (UTC)")
    for info in result.files:
        table.add_row(Text(info.name), Text(info.path), human_size(info.size), _when(info.mtime))
    console = _console()
    console.print(table)
    console.print(f"{len(result.files)} of {result.total} file(s)")
    if result.next_after is not None:
        console.print(Text(f"more: --after {json.dumps(result.next_after)}"))


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Text to find in file names.")],
    peer: PeerOption = DEFAULT_PEER,
    fanout: FanoutOption = None,
    timeout_ms: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search file names through a peer and the peers it reaches."""
    if not query.strip() or len(query) > MAX_QUERY_LENGTH:
        _fail(f"the query must be 1 to {MAX_QUERY_LENGTH} characters", EXIT_USAGE)
    settings = _settings(ctx, peer, as_json)
    result = _run(_call(settings, lambda c: c.search(query, fanout=fanout, timeout_ms=timeout_ms)))
    if settings.as_json:
        _print_json(result.model_dump_json(indent=2))
        return
    table = Table(title=Text(f"{query!r} via {result.peer_id}"))
    table.add_column("name")
    table.add_column("size", justify="right")
    table.add_column("owner")
    table.add_column("gRPC address")
    for hit in result.hits:
        table.add_row(
            Text(hit.name), human_size(hit.size), Text(hit.peer_id), Text(hit.grpc_address)
        )
    console = _console()
    console.print(table)
    answered = len(result.peers_answered)
    line = f"{len(result.hits)} hit(s) from {answered} peer(s) in {result.took_ms:.0f} ms"
    if result.truncated:
        line += " (truncated)"
    console.print(Text(line))
    if result.partial:
        failed = ", ".join(f"{f.peer_id} ({f.error})" for f in result.peers_failed)
        console.print(Text(f"partial: {failed or 'the deadline cut the search'}"))


@app.command()
def download(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Exact file name, as /search lists it.")],
    peer: PeerOption = DEFAULT_PEER,
    fanout: FanoutOption = None,
    timeout_ms: TimeoutOption = None,
    chunk_size: Annotated[
        str,
        typer.Option("--chunk-size", metavar="BYTES", help="Bytes per chunk; 0: server default."),
    ] = "0",
    from_peer: Annotated[
        str | None,
        typer.Option("--from-peer", metavar="PEER_ID", help="Download from this owner."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Locate NAME through any peer, then stream it from its owner over gRPC."""
    try:
        validate_file_name(name)
    except InvalidNameError as exc:
        _fail(f"invalid file name {name!r}: {exc}", EXIT_USAGE)
    settings = _settings(ctx, peer, as_json)
    chunk = _size_option(chunk_size, "--chunk-size", minimum=0, maximum=MAX_CHUNK_SIZE)
    hits = _run(locate(settings.peer, name, fanout, timeout_ms=timeout_ms, tls=settings.tls))
    owner = _pick(hits, from_peer)
    with _progress(name, owner.size, enabled=not settings.as_json) as on_chunk:
        work = download_from(
            owner.grpc_address, name, chunk_size=chunk, on_chunk=on_chunk, tls=settings.tls
        )
        result = _run(work)
    if settings.as_json:
        summary = asdict(result) | {
            "peer_id": owner.peer_id,
            "expected_bytes": owner.size,
            "mb_per_s": round(result.mb_per_s, 3),
        }
        _print_json(json.dumps(summary, indent=2))
        return
    line = (
        f"downloaded {result.name} from {owner.peer_id} ({result.address}): "
        f"{result.bytes} bytes in {result.chunks} chunks, "
        f"{result.seconds:.2f} s, {result.mb_per_s:.2f} MB/s"
    )
    if result.bytes != owner.size:
        line += f" (the index listed {owner.size} bytes)"
    print(line, flush=True)


@app.command()
def upload(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to", metavar="PEER", help="gRPC HOST:PORT, or a peer's REST URL (http://...)."
        ),
    ],
    size: Annotated[
        str, typer.Option("--size", metavar="BYTES", help="Bytes to send: 1048576, 10MiB, 1GB.")
    ],
    chunk_size: Annotated[
        str, typer.Option("--chunk-size", metavar="BYTES", help="Bytes per chunk.")
    ] = str(DEFAULT_CHUNK_SIZE),
    name: Annotated[
        str, typer.Option("--name", metavar="LABEL", help="Label sent on the first chunk.")
    ] = "peerfind-cli",
    as_json: JsonOption = False,
) -> None:
    """Send synthetic bytes to a peer (DummyUpload) and verify its checksum."""
    settings = _settings(ctx, as_json=as_json)
    total = _size_option(size, "--size", minimum=0)
    chunk = _size_option(chunk_size, "--chunk-size", minimum=1, maximum=MAX_CHUNK_SIZE)
    with _progress(name or "upload", total, enabled=not settings.as_json) as on_chunk:
        work = upload_to(
            to, total, chunk_size=chunk, name=name, on_chunk=on_chunk, tls=settings.tls
        )
        result = _run(work)
    receipt = result.receipt
    if settings.as_json:
        summary = asdict(result) | {
            "verified": result.verified,
            "mb_per_s": round(result.mb_per_s, 3),
        }
        _print_json(json.dumps(summary, indent=2))
    else:
        print(
            f"uploaded {result.bytes_sent} bytes to {result.address} "
            f"in {result.chunks_sent} chunks, {result.seconds:.2f} s, "
            f"{result.mb_per_s:.2f} MB/s; peer received {receipt.bytes_received} bytes, "
            f"checksum {result.checksum} verified: {'yes' if result.verified else 'no'}",
            flush=True,
        )
    if not result.verified:
        _fail(
            f"checksum mismatch: sent {result.bytes_sent} bytes ({result.checksum}), "
            f"peer counted {receipt.bytes_received} ({receipt.checksum or 'no checksum'})"
        )
    if not receipt.ok:
        _fail(f"peer reported a failed upload: {receipt.message or 'no reason given'}")


async def _call(settings: Settings, request: Callable[[PeerClient], Coroutine[Any, Any, _T]]) -> _T:
    async with PeerClient(settings.peer, tls=settings.tls) as client:
        return await request(client)


def _pick(hits: list[SearchHit], from_peer: str | None) -> SearchHit:
    try:
        return choose_owner(hits, from_peer)
    except ClientError as exc:
        _fail(str(exc))


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: run the command, exit with its code, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args or ["--help"], prog_name="peerfind", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.TyperException as exc:  # click's usage errors (exit code 2)
        message = exc.format_message()
        context = getattr(exc, "ctx", None)
        if exc.exit_code == EXIT_USAGE and context is not None:
            message = f"{message} (see '{context.command_path} --help')"
        print(f"peerfind: {' '.join(message.split())}", file=sys.stderr, flush=True)
        code = exc.exit_code
    except typer.Abort:
        print("peerfind: aborted", file=sys.stderr, flush=True)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        print("peerfind: interrupted", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`peerfind files --json | head`): say nothing more, and
        # point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_FAILURE
    except Exception as exc:
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        print(f"peerfind: {' '.join(message.split())}", file=sys.stderr, flush=True)
        code = EXIT_FAILURE
    sys.exit(code)


if __name__ == "__main__":
    main()
