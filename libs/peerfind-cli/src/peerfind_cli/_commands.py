"""The `peerfind` commands: thin, the work happens in `peerfind.client`.

The root callback puts a `Settings` (the TLS files) on typer's context object;
each command adds its `--peer` and `--json` to it and hands `tls=` to the client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.filesize import decimal as human_size
from rich.table import Table

from peerfind import __version__
from peerfind.api import SearchHit, SearchMode
from peerfind.client import (
    DEFAULT_SOURCES,
    DEFAULT_STALL_TIMEOUT_S,
    PeerClient,
    choose_owner,
    download_from,
    fetch_file,
    locate,
    pick_version,
    search_request,
    upload_to,
)
from peerfind.config import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from peerfind.errors import ClientError, InvalidNameError
from peerfind.index import base_name, validate_file_name, validate_shared_path
from peerfind.tls import TlsFiles
from peerfind_cli._output import (
    cell,
    error_line,
    fail,
    plural,
    print_json,
    progress,
    run,
    safe,
    size_option,
    stdout_console,
    trace_tree,
    when,
)
from peerfind_cli._settings import (
    DEFAULT_PEER,
    EXIT_FAILURE,
    EXIT_USAGE,
    PEER_ENV,
    Settings,
    for_command,
)

__all__ = ["app"]

_T = TypeVar("_T")

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
NameArgument = Annotated[
    str,
    typer.Argument(
        help="Exact file name, as /search lists it (any characters a file name may have)."
    ),
]
PathOption = Annotated[
    str | None,
    typer.Option(
        "--path",
        metavar="PATH",
        help="The file's path on its owner, as /search lists it: chooses among files of "
        "the same name in different folders (PATH must end in /NAME or be NAME).",
    ),
]
StallOption = Annotated[
    float,
    typer.Option(
        "--stall-timeout",
        min=0.001,
        max=3600,
        metavar="SECONDS",
        help="Fail when an owner sends nothing for this long mid-download.",
    ),
]


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
        wanted = isinstance(ctx.obj, Settings) and ctx.obj.as_json  # main's --json
        fail("--cert-file and --key-file go together", EXIT_USAGE, as_json=wanted)
    tls = TlsFiles(ca_file, cert_file, key_file)
    base = ctx.obj if isinstance(ctx.obj, Settings) else Settings()  # main's --json, if any
    ctx.obj = replace(base, tls=tls if tls.enabled else None)


@app.command()
def health(
    ctx: typer.Context, peer: PeerOption = DEFAULT_PEER, as_json: JsonOption = False
) -> None:
    """Show a peer's status: index, transfer service, peers known."""
    settings = for_command(ctx, peer, as_json)
    result = run(_call(settings, lambda c: c.health()), as_json=settings.as_json)
    if settings.as_json:
        print_json(result.model_dump_json(indent=2))
        return
    table = Table(title=cell(f"{result.peer_id} at {result.url}"), show_header=False)
    index, transfer = result.index, result.transfer
    rows = [
        ("status", result.status),
        ("version", result.version),
        ("uptime", f"{result.uptime_s:.0f} s"),
        ("gRPC address", result.grpc_address),
        ("key id", result.key_id or "-"),
        ("peers known", str(result.peers)),
        ("index", f"{index.files} files, {human_size(index.bytes)}"),
        ("index available", "yes" if index.available else "no"),
        ("index stale", "yes" if index.stale else "no"),
        ("last scan", when(index.last_scan_at)),
        ("transfer", f"{transfer.address} ({'serving' if transfer.serving else 'NOT serving'})"),
    ]
    for key, value in rows:
        table.add_row(key, cell(value))
    stdout_console().print(table)


@app.command()
def peers(ctx: typer.Context, peer: PeerOption = DEFAULT_PEER, as_json: JsonOption = False) -> None:
    """List a peer's overlay views: its neighbours (active) and its replacements (passive)."""
    settings = for_command(ctx, peer, as_json)
    result = run(_call(settings, lambda c: c.peers()), as_json=settings.as_json)
    if settings.as_json:
        print_json(result.model_dump_json(indent=2))
        return
    active = Table(
        title=cell(
            f"{result.peer_id}'s active view: neighbours searched through and pinged "
            f"({len(result.peers)} of {result.active_size})"
        )
    )
    columns = ("peer", "state", "REST URL", "gRPC address", "key id", "last seen (UTC)", "friend")
    for column in columns:
        active.add_column(column)
    for info in result.peers:
        active.add_row(
            cell(info.peer_id),
            cell(info.state),
            cell(info.url),
            cell(info.grpc_address or "-"),
            cell(f"{info.key_id[:16]}..." if info.key_id else "-"),
            when(info.last_seen),
            "yes" if info.friend else "",
        )
    passive = Table(
        title=cell(
            f"passive view: known peers, replacements for neighbours "
            f"({len(result.passive)} of {result.passive_size})"
        )
    )
    for column in ("peer", "REST URL"):
        passive.add_column(column)
    for ref in result.passive:
        passive.add_row(cell(ref.peer_id), cell(ref.url))
    console = stdout_console()
    console.print(active)
    console.print(passive)
    console.print(f"{len(result.peers)} neighbour(s), {len(result.passive)} passive peer(s)")


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
    settings = for_command(ctx, peer, as_json)
    result = run(
        _call(settings, lambda c: c.files(limit=limit, after=after)), as_json=settings.as_json
    )
    if settings.as_json:
        print_json(result.model_dump_json(indent=2))
        return
    table = Table(title=cell(f"files shared by {result.peer_id}"))
    table.add_column("name")
    table.add_column("path")
    table.add_column("size", justify="right")
    table.add_column("modified (UTC)")
    for info in result.files:
        table.add_row(cell(info.name), cell(info.path), human_size(info.size), when(info.mtime))
    console = stdout_console()
    console.print(table)
    console.print(f"{len(result.files)} of {result.total} file(s)")
    if result.next_after is not None:
        console.print(cell(f"more: --after {json.dumps(result.next_after)}"))


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Text to find in file names.")],
    peer: PeerOption = DEFAULT_PEER,
    fanout: FanoutOption = None,
    timeout_ms: TimeoutOption = None,
    mode: Annotated[
        SearchMode | None,
        typer.Option(
            "--mode",
            help="How the query travels: flood (every hop to --fanout neighbours), walk "
            "(random walkers steered by summaries), dynamic (a probe, then one neighbour at "
            "a time); default auto, the peer's choice.",
        ),
    ] = None,
    max_results: Annotated[
        int | None,
        typer.Option("--max-results", metavar="N", help="Stop once N hits are in (walk, dynamic)."),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option("--budget", metavar="N", help="Messages the search may cost, at most."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Draw the route the query took, hop by hop.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Search file names through a peer and the peers it reaches."""
    try:  # the one model of a search request: what the peer would refuse, refused here
        request = search_request(
            query,
            fanout,
            timeout_ms,
            mode=mode,
            max_results=max_results,
            budget=budget,
            explain=explain,
        )
    except ClientError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    settings = for_command(ctx, peer, as_json)
    result = run(_call(settings, lambda c: c.send_search(request)), as_json=settings.as_json)
    if settings.as_json:
        print_json(result.model_dump_json(indent=2))
        return
    table = Table(title=cell(f"{query!r} via {result.peer_id}"))
    table.add_column("name")
    table.add_column("path")  # what `get --path` takes: one name may be in several folders
    table.add_column("size", justify="right")
    table.add_column("owner")
    table.add_column("gRPC address")
    for hit in result.hits:
        table.add_row(
            cell(hit.name),
            cell(hit.path),
            human_size(hit.size),
            cell(hit.peer_id),
            cell(hit.grpc_address),
        )
    console = stdout_console()
    console.print(table)
    line = (
        f"{plural(len(result.hits), 'hit')} from {plural(len(result.peers_answered), 'peer')} "
        f"in {result.took_ms:.0f} ms, mode {result.mode}, {plural(result.messages, 'message')}"
    )
    if result.truncated:
        line += " (truncated)"
    console.print(cell(line))
    if result.partial:
        failed = ", ".join(f"{f.peer_id} ({f.error})" for f in result.peers_failed)
        console.print(cell(f"partial: {failed or 'the deadline cut the search'}"))
    if explain:
        console.print()
        if result.trace is None:
            console.print(cell(f"no trace: {result.peer_id} did not explain (an older peer?)"))
        else:
            console.print(trace_tree(result.trace))


@app.command()
def download(
    ctx: typer.Context,
    name: NameArgument,
    path: PathOption = None,
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
    stall_timeout: StallOption = DEFAULT_STALL_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Locate NAME through any peer, then stream it from its owner over gRPC.

    When the owner holds NAME in several folders with different contents, --path
    chooses one (without it, the command fails and lists the paths).
    """
    _check_name(name, path, as_json=as_json)
    settings = for_command(ctx, peer, as_json)
    chunk = size_option(
        chunk_size, "--chunk-size", minimum=0, maximum=MAX_CHUNK_SIZE, as_json=as_json
    )
    hits = run(
        locate(settings.peer, name, fanout, timeout_ms=timeout_ms, tls=settings.tls),
        as_json=as_json,
    )
    owner = _pick(hits, from_peer, path, as_json=as_json)
    with progress(name, owner.size, enabled=not settings.as_json) as on_chunk:
        work = download_from(
            owner.grpc_address,
            name,
            path=owner.path,
            chunk_size=chunk,
            on_chunk=on_chunk,
            tls=settings.tls,
            stall_timeout_s=stall_timeout,
        )
        result = run(work, as_json=as_json)
    if settings.as_json:
        summary = asdict(result) | {
            "peer_id": owner.peer_id,
            "expected_bytes": owner.size,
            "mb_per_s": round(result.mb_per_s, 3),
        }
        print_json(json.dumps(summary, indent=2))
        return
    line = (
        f"downloaded {result.name} from {owner.peer_id} ({result.address}): "
        f"{result.bytes} bytes in {result.chunks} chunks, "
        f"{result.seconds:.2f} s, {result.mb_per_s:.2f} MB/s"
    )
    if result.bytes != owner.size:
        line += f" (the index listed {owner.size} bytes)"
    print(safe(line), flush=True)


@app.command()
def get(
    ctx: typer.Context,
    name: NameArgument,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Where to write it (default: NAME)."),
    ] = None,
    path: PathOption = None,
    peer: PeerOption = DEFAULT_PEER,
    fanout: FanoutOption = None,
    timeout_ms: TimeoutOption = None,
    sources: Annotated[
        int,
        typer.Option("--sources", min=1, max=16, help="Owners to fetch from at once, at most."),
    ] = DEFAULT_SOURCES,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", metavar="HEX", help="Fetch this version (default: most owners)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
    stall_timeout: StallOption = DEFAULT_STALL_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Download NAME's real bytes from up to --sources owners, verified by SHA-256.

    Writes FILE.part (and FILE.part.json, the pieces done): run the same command
    again after an interruption to resume. FILE appears only once its SHA-256 matches.
    When NAME is in several folders with different contents, --path (or --sha256)
    chooses one; without, the command fails and lists the paths. A NAME with control
    characters (a tab, a newline) is written only where --output says.
    """
    _check_name(name, path, as_json=as_json)
    settings = for_command(ctx, peer, as_json)
    target = output if output is not None else _default_output(name, as_json=as_json)
    hits = run(
        locate(settings.peer, name, fanout, timeout_ms=timeout_ms, tls=settings.tls),
        as_json=as_json,
    )
    try:
        version, owners = pick_version(hits, sha256, path)
    except ClientError as exc:
        fail(str(exc), as_json=as_json)
    with progress(name, owners[0].size, enabled=not settings.as_json) as on_progress:
        work = fetch_file(
            owners,
            target,
            sha256=version,
            sources=sources,
            force=force,
            on_progress=on_progress,
            tls=settings.tls,
            stall_timeout_s=stall_timeout,
        )
        result = run(work, as_json=as_json)
    if settings.as_json:
        print_json(json.dumps(asdict(result) | {"mb_per_s": round(result.mb_per_s, 3)}, indent=2))
        return
    line = (
        f"got {result.name} -> {result.path}: {result.size} bytes, sha256 {result.sha256} "
        f"verified, from {', '.join(result.owners)} in {result.seconds:.2f} s"
    )
    if result.resumed_bytes:
        line += f" (resumed: {result.resumed_bytes} bytes were already there)"
    if result.failed_owners:
        line += f" ({', '.join(result.failed_owners)} failed mid-way)"
    print(safe(line), flush=True)


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
    settings = for_command(ctx, as_json=as_json)
    total = size_option(size, "--size", minimum=0, as_json=as_json)
    chunk = size_option(
        chunk_size, "--chunk-size", minimum=1, maximum=MAX_CHUNK_SIZE, as_json=as_json
    )
    with progress(name or "upload", total, enabled=not settings.as_json) as on_chunk:
        work = upload_to(
            to, total, chunk_size=chunk, name=name, on_chunk=on_chunk, tls=settings.tls
        )
        result = run(work, as_json=as_json)
    receipt = result.receipt
    problem = None
    if not result.verified:
        problem = (
            f"checksum mismatch: sent {result.bytes_sent} bytes ({result.checksum}), "
            f"peer counted {receipt.bytes_received} ({receipt.checksum or 'no checksum'})"
        )
    elif not receipt.ok:
        problem = f"peer reported a failed upload: {receipt.message or 'no reason given'}"
    if settings.as_json:
        summary = asdict(result) | {
            "verified": result.verified,
            "mb_per_s": round(result.mb_per_s, 3),
        }
        if problem is not None:  # one JSON object on stdout: the summary says what failed
            summary |= {"error": safe(problem), "exit_code": EXIT_FAILURE}
        print_json(json.dumps(summary, indent=2))
        if problem is not None:
            error_line(problem, as_json=False)
            raise typer.Exit(EXIT_FAILURE)
        return
    print(
        safe(
            f"uploaded {result.bytes_sent} bytes to {result.address} "
            f"in {result.chunks_sent} chunks, {result.seconds:.2f} s, "
            f"{result.mb_per_s:.2f} MB/s; peer received {receipt.bytes_received} bytes, "
            f"checksum {result.checksum} verified: {'yes' if result.verified else 'no'}"
        ),
        flush=True,
    )
    if problem is not None:
        fail(problem)


async def _call(settings: Settings, request: Callable[[PeerClient], Coroutine[Any, Any, _T]]) -> _T:
    async with PeerClient(settings.peer, tls=settings.tls) as client:
        return await request(client)


def _pick(
    hits: list[SearchHit], from_peer: str | None, path: str | None, *, as_json: bool
) -> SearchHit:
    try:
        return choose_owner(hits, from_peer, path)
    except ClientError as exc:
        fail(str(exc), as_json=as_json)


def _check_name(name: str, path: str | None, *, as_json: bool) -> None:
    """Refuse, as a usage error, a NAME no file can have, or a --path that is no plain
    relative path or does not end in NAME."""
    try:
        validate_file_name(name)
    except InvalidNameError as exc:
        fail(f"invalid file name {name!r}: {exc}", EXIT_USAGE, as_json=as_json)
    if path is None:
        return
    try:
        validate_shared_path(path)
    except InvalidNameError as exc:
        fail(f"invalid --path {path!r}: {exc}", EXIT_USAGE, as_json=as_json)
    if base_name(path) != name:
        fail(f"--path {path!r} is not a path of {name!r}", EXIT_USAGE, as_json=as_json)


def _default_output(name: str, *, as_json: bool) -> Path:
    """Where `get NAME` writes without --output: NAME in the current folder, when NAME
    shows as itself. A name with control characters or bidirectional overrides (which
    a terminal, a shell or a file manager would show as something else, or act on) is
    a usage error: the user chooses its local name with --output."""
    if safe(name) != name:
        fail(
            f"{name!r} has control or bidirectional characters: choose the file to "
            "write with --output FILE",
            EXIT_USAGE,
            as_json=as_json,
        )
    return Path(name)
