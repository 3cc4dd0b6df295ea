"""The client's workflows: locate a file, pick its owner, and run one transfer.

Each opens the clients it needs and closes them again; `tls=` goes to every one.
"""

from __future__ import annotations

import unicodedata

import httpx

from peerfind.api import SearchHit
from peerfind.client._defaults import DEFAULT_STALL_TIMEOUT_S
from peerfind.client._rest import PeerClient
from peerfind.client._results import ChunkCallback, DownloadResult, UploadResult
from peerfind.client._transfer import TransferClient, validate_grpc_address
from peerfind.config import DEFAULT_CHUNK_SIZE
from peerfind.errors import AmbiguousName, ClientError, FileNotLocated, PeerRefused
from peerfind.index import base_name
from peerfind.tls import TlsFiles

__all__ = [
    "check_unambiguous",
    "choose_owner",
    "download_from",
    "hits_at_path",
    "locate",
    "locate_query",
    "resolve_transfer_address",
    "upload_to",
]


LOCATE_HITS = 16
"""Hits a search for a file to download asks for before it stops."""
_LISTED_PATHS = 8
"""Paths an AmbiguousName message lists before it says how many more there are."""


def locate_query(name: str) -> str:
    """What to search for to find `name`: the name itself, or, when it holds control
    characters (a tab, a newline), which no search query may, its longest run without
    one (a search matches substrings, and `locate` keeps exact names only).

    ClientError when no run has a character that is not white space.
    """
    runs = _runs(name)
    if len(runs) == 1:
        return name
    best = max((r for r in runs if r.strip()), key=len, default="")
    if not best:
        raise ClientError(f"cannot search for {name!r}: it has nothing but control characters")
    return best


def _runs(name: str) -> list[str]:
    """The pieces of `name` between its control characters (empty ones included)."""
    runs: list[str] = []
    current: list[str] = []
    for c in name:
        if unicodedata.category(c) == "Cc":
            runs.append("".join(current))
            current = []
        else:
            current.append(c)
    runs.append("".join(current))
    return runs


def hits_at_path(hits: list[SearchHit], path: str) -> list[SearchHit]:
    """The hits at exactly `path`; FileNotLocated naming the paths there are if none."""
    at = [hit for hit in hits if hit.path == path]
    if not at:
        name = hits[0].name if hits else base_name(path)
        found = sorted({hit.path for hit in hits})
        raise FileNotLocated(
            f"no peer in reach has {name!r} at {path!r} (it is at {_listing(found)})"
        )
    return at


def check_unambiguous(hits: list[SearchHit]) -> None:
    """AmbiguousName when the hits sit at several paths and may hold different files:
    two of them at different paths whose contents are not known to be one (both hashed,
    one SHA-256). Copies of one path that disagree are versions of one file (the
    caller picks one: most owners); files of one name in different folders are
    different files, and which one is meant only the user can say."""
    paths = {hit.path for hit in hits}
    if len(paths) < 2:
        return
    digests = {hit.sha256.lower() if hit.sha256 else None for hit in hits}
    if len(digests) == 1 and None not in digests:
        return
    by_path: dict[str, list[str]] = {}
    for hit in hits:
        by_path.setdefault(hit.path, []).append(hit.peer_id)
    shown = [
        f"{path!r} ({', '.join(sorted(set(peers)))})" for path, peers in sorted(by_path.items())
    ]
    raise AmbiguousName(
        f"{hits[0].name!r} is at {len(paths)} paths that may hold different files: "
        f"{_listing(shown, quoted=False)}; choose one with --path PATH",
        sorted((hit.peer_id, hit.path) for hit in hits),
    )


def _listing(items: list[str], *, quoted: bool = True) -> str:
    shown = [repr(i) if quoted else i for i in items[:_LISTED_PATHS]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


async def locate(
    peer_url: str,
    name: str,
    fanout: int | None = None,
    *,
    timeout_ms: int | None = None,
    http: httpx.AsyncClient | None = None,
    tls: TlsFiles | None = None,
) -> list[SearchHit]:
    """Search through any peer and keep the hits named exactly `name`.

    Hits keep the search's order, without duplicates (same owner and path): one name
    may be at several paths on one owner. Raises FileNotLocated when no peer in reach
    holds the name.
    """
    query = locate_query(name)
    async with PeerClient(peer_url, tls=tls, http=http) as peer:
        # Several owners, not the first: a multi-source download wants them all.
        found = await peer.search(
            query, fanout=fanout, timeout_ms=timeout_ms, max_results=LOCATE_HITS
        )
    hits: list[SearchHit] = []
    seen: set[tuple[str, str]] = set()
    for hit in found.hits:
        key = (hit.peer_id, hit.path)
        if hit.name == name and key not in seen:
            seen.add(key)
            hits.append(hit)
    if not hits:
        notes = [f"searched via {peer.base_url}"]
        if found.peers_failed:
            notes.append(f"{len(found.peers_failed)} peer(s) did not answer")
        if found.truncated:
            notes.append("results were truncated")
        raise FileNotLocated(f"no peer in reach has {name!r} ({'; '.join(notes)})")
    return hits


def choose_owner(
    hits: list[SearchHit], from_peer: str | None = None, path: str | None = None
) -> SearchHit:
    """The hit to download from: the first with a gRPC address, or `from_peer`'s; with
    `path`, among the hits at that path only.

    AmbiguousName when the owner holds the name at several paths that may hold
    different files and no `path` says which.
    """
    if not hits:
        raise FileNotLocated("no owner to download from")
    name = hits[0].name
    if path is not None:
        hits = hits_at_path(hits, path)
    if from_peer is not None:
        for hit in hits:
            if hit.peer_id == from_peer:
                if not hit.grpc_address:
                    raise ClientError(f"peer {from_peer!r} advertises no gRPC address")
                return _only_one(hits, hit)
        owners = ", ".join(sorted({hit.peer_id for hit in hits}))
        where = f" at {path!r}" if path is not None else ""
        raise FileNotLocated(f"peer {from_peer!r} does not hold {name!r}{where} (owners: {owners})")
    for hit in hits:
        if hit.grpc_address:
            return _only_one(hits, hit)
    raise ClientError(f"no owner of {name!r} advertises a gRPC address")


def _only_one(hits: list[SearchHit], chosen: SearchHit) -> SearchHit:
    check_unambiguous([hit for hit in hits if hit.peer_id == chosen.peer_id])
    return chosen


async def resolve_transfer_address(
    target: str, *, http: httpx.AsyncClient | None = None, tls: TlsFiles | None = None
) -> str:
    """A gRPC address from `host:port`, or from a peer REST URL via its `/health`."""
    if target.strip().lower().startswith(("http://", "https://")):
        async with PeerClient(target, tls=tls, http=http) as peer:
            health = await peer.health()
        if not health.grpc_address:
            raise PeerRefused(f"{peer.base_url} advertises no gRPC address")
        return validate_grpc_address(health.grpc_address)
    return validate_grpc_address(target)


async def download_from(
    address: str,
    name: str,
    *,
    path: str = "",
    chunk_size: int = 0,
    offset: int = 0,
    length: int = 0,
    on_chunk: ChunkCallback | None = None,
    tls: TlsFiles | None = None,
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S,
) -> DownloadResult:
    """Open a channel to `address`, run one DummyDownload of `name` (exactly the file
    at `path` when given: pass the hit's), close it (PeerStalled when the owner sends
    nothing for `stall_timeout_s`)."""
    async with TransferClient(address, tls=tls, stall_timeout=stall_timeout_s) as transfer:
        return await transfer.download(
            name,
            path=path,
            chunk_size=chunk_size,
            offset=offset,
            length=length,
            on_chunk=on_chunk,
        )


async def upload_to(
    target: str,
    size: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    name: str = "",
    on_chunk: ChunkCallback | None = None,
    tls: TlsFiles | None = None,
) -> UploadResult:
    """Resolve `target` (gRPC address or peer URL), then run one DummyUpload."""
    address = await resolve_transfer_address(target, tls=tls)
    async with TransferClient(address, tls=tls) as transfer:
        return await transfer.upload(size, chunk_size=chunk_size, name=name, on_chunk=on_chunk)
