"""The client's workflows: locate a file, pick its owner, and run one transfer.

Each opens the clients it needs and closes them again; `tls=` goes to every one.
"""

from __future__ import annotations

import httpx

from peerfind.api import SearchHit
from peerfind.client._defaults import DEFAULT_STALL_TIMEOUT_S
from peerfind.client._rest import PeerClient
from peerfind.client._results import ChunkCallback, DownloadResult, UploadResult
from peerfind.client._transfer import TransferClient, validate_grpc_address
from peerfind.config import DEFAULT_CHUNK_SIZE
from peerfind.errors import ClientError, FileNotLocated, PeerRefused
from peerfind.tls import TlsFiles

__all__ = ["choose_owner", "download_from", "locate", "resolve_transfer_address", "upload_to"]


LOCATE_HITS = 16
"""Hits a search for a file to download asks for before it stops."""


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

    Hits keep the search's order, without duplicates (same owner and path).
    Raises FileNotLocated when no peer in reach holds the name.
    """
    async with PeerClient(peer_url, tls=tls, http=http) as peer:
        # Several owners, not the first: a multi-source download wants them all.
        found = await peer.search(
            name, fanout=fanout, timeout_ms=timeout_ms, max_results=LOCATE_HITS
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


def choose_owner(hits: list[SearchHit], from_peer: str | None = None) -> SearchHit:
    """The hit to download from: the first with a gRPC address, or `from_peer`'s."""
    if not hits:
        raise FileNotLocated("no owner to download from")
    name = hits[0].name
    if from_peer is not None:
        for hit in hits:
            if hit.peer_id == from_peer:
                if not hit.grpc_address:
                    raise ClientError(f"peer {from_peer!r} advertises no gRPC address")
                return hit
        owners = ", ".join(sorted({hit.peer_id for hit in hits}))
        raise FileNotLocated(f"peer {from_peer!r} does not hold {name!r} (owners: {owners})")
    for hit in hits:
        if hit.grpc_address:
            return hit
    raise ClientError(f"no owner of {name!r} advertises a gRPC address")


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
    chunk_size: int = 0,
    offset: int = 0,
    length: int = 0,
    on_chunk: ChunkCallback | None = None,
    tls: TlsFiles | None = None,
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S,
) -> DownloadResult:
    """Open a channel to `address`, run one DummyDownload of `name`, close it
    (PeerStalled when the owner sends nothing for `stall_timeout_s`)."""
    async with TransferClient(address, tls=tls, stall_timeout=stall_timeout_s) as transfer:
        return await transfer.download(
            name, chunk_size=chunk_size, offset=offset, length=length, on_chunk=on_chunk
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
