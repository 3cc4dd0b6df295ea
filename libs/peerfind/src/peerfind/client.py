"""Typed client for a peer: its REST directory and its gRPC transfer service.

    async with PeerClient("http://127.0.0.1:8001") as peer:
        found = await peer.search("hello", fanout=2)
    hits = await locate("http://127.0.0.1:8001", "hello3.txt")
    async with TransferClient(hits[0].grpc_address) as transfer:
        result = await transfer.download("hello3.txt", on_chunk=print)

Every failure is a `peerfind.errors.ClientError` whose message is one line meant
for a user:

    PeerUnreachable   connect error, timeout, gRPC UNAVAILABLE or DEADLINE_EXCEEDED
    PeerRefused       HTTP 4xx/5xx (with the ErrorResponse detail), a malformed
                      answer, or any other gRPC status ("NOT_FOUND: no file named ...")
    FileNotLocated    `locate` found no peer holding the name
    ClientError       a bad argument (URL, address, size) caught before any call
"""

from __future__ import annotations

import errno as errno_codes
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import grpc
import grpc.aio
import httpx
from pydantic import BaseModel, ValidationError

from peerfind.api import (
    BootstrapResponse,
    ErrorResponse,
    FileInfo,
    FilesResponse,
    HealthResponse,
    PeersResponse,
    RegisterRequest,
    RegisterResponse,
    SearchHit,
    SearchResponse,
)
from peerfind.checksum import crc32
from peerfind.config import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, validate_http_url
from peerfind.errors import ClientError, FileNotLocated, PeerRefused, PeerUnreachable
from peerfind.tls import TlsFiles, channel_credentials, client_ssl_context
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_SEARCH_TIMEOUT_MS",
    "DEFAULT_TIMEOUT_S",
    "GRPC_MAX_MESSAGE_BYTES",
    "SEARCH_MARGIN_S",
    "ChunkCallback",
    "DownloadResult",
    "PeerClient",
    "TransferClient",
    "UploadReceipt",
    "UploadResult",
    "choose_owner",
    "download_from",
    "locate",
    "resolve_transfer_address",
    "upload_to",
    "use_tls",
    "validate_grpc_address",
]

DEFAULT_TIMEOUT_S: Final = 5.0
"""Deadline of one REST call (connect included), except `/search`."""
DEFAULT_CONNECT_TIMEOUT_S: Final = 3.0
DEFAULT_SEARCH_TIMEOUT_MS: Final = 2000
"""The directory's own default search deadline, assumed when none is given."""
SEARCH_MARGIN_S: Final = 1.0
"""Added to a search's deadline: the entry peer answers at its deadline, then the reply travels."""
GRPC_MAX_MESSAGE_BYTES: Final = MAX_CHUNK_SIZE + 64 * 1024
"""A chunk of the largest size plus room for the other fields of FileChunk."""

ChunkCallback = Callable[[int], object]
"""Called with the byte count of each chunk received or sent (progress bars)."""

_ModelT = TypeVar("_ModelT", bound=BaseModel)
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_GRPC_DEFAULT_MESSAGE_BYTES = 4 * 1024 * 1024  # what a server accepts unless configured
_CHUNK_OVERHEAD = 32  # FileChunk's other fields and framing, generously


_SIZE_LIMIT_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
_GRPC_REASONS = (
    ("connection refused", "connection refused"),
    ("dns resolution failed", "name or service not known"),
    ("name or service not known", "name or service not known"),
    ("deadline exceeded", "timed out"),
    ("timeout", "timed out"),
)


# --------------------------------------------------------------------------- TLS

_TLS: dict[str, TlsFiles] = {"files": TlsFiles()}


def use_tls(files: TlsFiles) -> None:
    """Make every client of this process use TLS: verify peers' HTTPS against
    `files.ca_file` and talk gRPC over TLS, presenting `cert_file` when given (mTLS)."""
    _TLS["files"] = files


def _http_verify() -> ssl.SSLContext | bool:
    files = _TLS["files"]
    return client_ssl_context(files) if files.enabled else True


# --------------------------------------------------------------------------- REST


class PeerClient:
    """Async client of one peer's REST API (the directory service).

    `async with PeerClient(url) as peer:` owns an `httpx.AsyncClient`; pass
    `http=` to share one client between many peers (it is then left open).
    """

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        try:
            self.base_url = validate_http_url(base_url)
        except ValueError as exc:
            raise ClientError(f"invalid peer URL {base_url!r}: {exc}") from None
        self.timeout = timeout
        self._owns_http = http is None
        self._http = (
            http
            if http is not None
            else httpx.AsyncClient(timeout=self._timeout(), verify=_http_verify())
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def health(self) -> HealthResponse:
        """`GET /health`. A degraded peer may answer 503 with the same body."""
        return await self._call("GET", "/health", HealthResponse, also_ok=(503,))

    async def peers(self) -> PeersResponse:
        """`GET /peers`: the peers this peer knows."""
        return await self._call("GET", "/peers", PeersResponse)

    async def files(self, limit: int | None = None, after: str | None = None) -> FilesResponse:
        """`GET /files`: one page of this peer's index, after path `after`."""
        params: dict[str, str | int] = {}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        return await self._call("GET", "/files", FilesResponse, params=params)

    async def iter_files(self, page_size: int | None = None) -> AsyncIterator[FileInfo]:
        """Every file of this peer's index, page after page (keyset pagination)."""
        after: str | None = None
        while True:
            page = await self.files(limit=page_size, after=after)
            for info in page.files:
                yield info
            if page.next_after is None:
                return
            if page.next_after == after:
                raise PeerRefused(f"{self.base_url} repeated page cursor {after!r} for /files")
            after = page.next_after

    async def search(
        self, query: str, fanout: int | None = None, timeout_ms: int | None = None
    ) -> SearchResponse:
        """`GET /search`: ask this peer to search itself and the peers it reaches."""
        params: dict[str, str | int] = {"query": query}
        if fanout is not None:
            params["fanout"] = fanout
        if timeout_ms is not None:
            params["timeout_ms"] = timeout_ms
        deadline_ms = timeout_ms if timeout_ms is not None else DEFAULT_SEARCH_TIMEOUT_MS
        budget = max(self.timeout, deadline_ms / 1000) + SEARCH_MARGIN_S
        return await self._call("GET", "/search", SearchResponse, params=params, budget_s=budget)

    async def register(self, url: str) -> RegisterResponse:
        """`POST /register`: ask this peer to verify and add the peer at `url`."""
        body = RegisterRequest(url=url).model_dump()
        return await self._call("POST", "/register", RegisterResponse, json=body)

    async def bootstrap(self) -> BootstrapResponse:
        """`POST /bootstrap`: make this peer (re)register with its friends."""
        return await self._call("POST", "/bootstrap", BootstrapResponse)

    def _timeout(self, total: float | None = None) -> httpx.Timeout:
        total = self.timeout if total is None else total
        return httpx.Timeout(total, connect=min(total, DEFAULT_CONNECT_TIMEOUT_S))

    async def _call(
        self,
        method: str,
        path: str,
        model: type[_ModelT],
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        budget_s: float | None = None,
        also_ok: Collection[int] = (),
    ) -> _ModelT:
        url = self.base_url + path
        try:
            response = await self._http.request(
                method, url, params=params, json=json, timeout=self._timeout(budget_s)
            )
        except httpx.TimeoutException:
            seconds = self.timeout if budget_s is None else budget_s
            raise PeerUnreachable(
                f"cannot reach {self.base_url}: no answer to {path} within {seconds:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise PeerUnreachable(f"cannot reach {self.base_url}: {_reason(exc)}") from None
        if response.is_success or response.status_code in also_ok:
            try:
                return model.model_validate_json(response.content)
            except ValidationError as exc:
                if response.is_success:
                    raise PeerRefused(
                        f"{self.base_url} sent a malformed answer to {path}: {_first_error(exc)}"
                    ) from None
        raise PeerRefused(_refusal(self.base_url, response))


def _reason(exc: BaseException) -> str:
    """A short lower-case reason for a transport error, from its cause chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            if current.errno is not None and current.errno > 0:
                if current.errno == errno_codes.ECONNREFUSED:
                    return "connection refused"
                return os.strerror(current.errno).lower()
            if current.errno is not None and current.strerror:
                return current.strerror.lower()  # getaddrinfo errors: negative errno
        current = current.__cause__ or current.__context__
    text = " ".join(str(exc).split())
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def _refusal(base_url: str, response: httpx.Response) -> str:
    status = response.status_code
    detail = ""
    try:
        detail = ErrorResponse.model_validate_json(response.content).detail
    except ValidationError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            detail = body["detail"]
    detail = " ".join(detail.split()) or response.reason_phrase or "error"
    return f"{detail} (HTTP {status} from {base_url})"


# --------------------------------------------------------------------------- gRPC


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What one DummyDownload streamed."""

    name: str
    bytes: int
    chunks: int
    seconds: float
    address: str
    offset: int = 0

    @property
    def mb_per_s(self) -> float:
        """Throughput in decimal megabytes per second."""
        return _mb_per_s(self.bytes, self.seconds)


@dataclass(frozen=True, slots=True)
class UploadReceipt:
    """The server's `UploadStatus`, typed."""

    ok: bool
    bytes_received: int
    chunks: int
    checksum: str
    message: str
    name: str


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What one DummyUpload sent, and what the server says it received."""

    address: str
    name: str
    bytes_sent: int
    chunks_sent: int
    seconds: float
    checksum: str
    """crc32 of every byte sent, in the server's format: `crc32:<8 hex digits>`."""
    receipt: UploadReceipt

    @property
    def verified(self) -> bool:
        """The server received every byte and its checksum matches ours."""
        return (
            self.receipt.checksum.lower() == self.checksum
            and self.receipt.bytes_received == self.bytes_sent
        )

    @property
    def mb_per_s(self) -> float:
        """Throughput in decimal megabytes per second."""
        return _mb_per_s(self.bytes_sent, self.seconds)


def _mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else 0.0


def validate_grpc_address(address: str) -> str:
    """Return `address` if it is `host:port` (IPv6 as `[::1]:port`); else ClientError."""
    address = address.strip()
    match = _HOST_PORT.match(address)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ClientError(f"invalid gRPC address {address!r}: expected HOST:PORT")
    return address


class TransferClient:
    """Async client of one peer's FileTransfer gRPC service.

    Create it inside a running event loop; `async with` closes the channel.
    """

    def __init__(self, address: str, *, timeout: float | None = None) -> None:
        self.address = validate_grpc_address(address)
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ]
        tls = _TLS["files"]
        if tls.enabled:
            self._channel = grpc.aio.secure_channel(
                self.address, channel_credentials(tls), options=options
            )
        else:
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
        self._stub = transfer_pb2_grpc.FileTransferStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, cancelling any call still running."""
        await self._channel.close(None)

    async def download(
        self,
        name: str,
        *,
        chunk_size: int = 0,
        offset: int = 0,
        length: int = 0,
        on_chunk: ChunkCallback | None = None,
    ) -> DownloadResult:
        """Stream `name` from the owner (DummyDownload); nothing is written anywhere.

        `chunk_size` 0 lets the server choose; `length` 0 means up to the end.
        """
        if not 0 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ClientError(f"chunk size must be 0 (server default) to {MAX_CHUNK_SIZE} bytes")
        if offset < 0 or length < 0:
            raise ClientError("offset and length must not be negative")
        request = transfer_pb2.FileRequest(
            name=name, chunk_size=chunk_size, offset=offset, length=length
        )
        served = name
        received = chunks = 0
        started = time.perf_counter()
        call = self._stub.DummyDownload(request, timeout=self.timeout)
        try:
            async for chunk in call:
                data: bytes = chunk.data
                if chunk.offset != offset + received:
                    raise PeerRefused(
                        f"{self.address} sent a chunk at offset {chunk.offset}, "
                        f"expected {offset + received}"
                    )
                if chunks == 0 and chunk.name:
                    served = str(chunk.name)
                received += len(data)
                chunks += 1
                if on_chunk is not None:
                    on_chunk(len(data))
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc, self.address) from None
        finally:
            call.cancel()
        elapsed = time.perf_counter() - started
        return DownloadResult(served, received, chunks, elapsed, self.address, offset)

    async def upload(
        self,
        size: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        name: str = "",
        on_chunk: ChunkCallback | None = None,
    ) -> UploadResult:
        """Send `size` synthetic bytes (DummyUpload) and check the server's checksum.

        One preallocated buffer of `chunk_size` bytes is sent over and over; the
        first chunk carries `name` as the upload's label. A zero `size` sends one
        empty chunk, so the label still arrives.
        """
        if size < 0:
            raise ClientError("upload size must not be negative")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ClientError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes")
        pattern = bytes(range(256))
        buffer = (pattern * (chunk_size // len(pattern) + 1))[:chunk_size]
        crc = sent = chunks = 0
        # One message for every full chunk, built once: grpc.aio serializes each
        # message before the stream asks for the next, so only `offset` (and the
        # label, after the first) changes in place; a new message per chunk copied the
        # whole chunk once more. With zlib-ng's crc32: 1,458 -> 2,035 MB/s at 1 MiB
        # chunks (docs/benchmarks.md).
        full = transfer_pb2.FileChunk(data=buffer, name=name)

        async def stream() -> AsyncIterator[Any]:
            nonlocal crc, sent, chunks
            while chunks == 0 or sent < size:
                count = min(chunk_size, size - sent)
                if count == chunk_size:
                    message, data = full, buffer
                else:  # the last, short chunk (or the one empty chunk of a 0-byte upload)
                    data = buffer[:count]
                    message = transfer_pb2.FileChunk(data=data, name=name if chunks == 0 else "")
                message.offset = sent
                yield message
                if chunks == 0:
                    full.name = ""
                crc = crc32(data, crc)
                sent += count
                chunks += 1
                if on_chunk is not None:
                    on_chunk(count)

        started = time.perf_counter()
        try:
            status = await self._stub.DummyUpload(stream(), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            error = _rpc_error(exc, self.address)
            oversized = chunk_size + _CHUNK_OVERHEAD > _GRPC_DEFAULT_MESSAGE_BYTES
            if oversized and exc.code() in _SIZE_LIMIT_CODES:
                error = type(error)(
                    f"{error} (a {chunk_size}-byte chunk may exceed the peer's gRPC message "
                    "limit; try a smaller chunk size)"
                )
            raise error from None
        elapsed = time.perf_counter() - started
        receipt = UploadReceipt(
            ok=bool(status.ok),
            bytes_received=int(status.bytes_received),
            chunks=int(status.chunks),
            checksum=str(status.checksum),
            message=str(status.message),
            name=str(status.name),
        )
        return UploadResult(
            address=self.address,
            name=name,
            bytes_sent=sent,
            chunks_sent=chunks,
            seconds=elapsed,
            checksum=f"crc32:{crc:08x}",
            receipt=receipt,
        )


def _rpc_error(exc: grpc.aio.AioRpcError, address: str) -> ClientError:
    code = exc.code()
    details = " ".join((exc.details() or "").split())
    if code in _UNREACHABLE:
        lowered = details.lower()
        reason = next((short for key, short in _GRPC_REASONS if key in lowered), details)
        return PeerUnreachable(f"cannot reach {address}: {reason or code.name.lower()}")
    return PeerRefused(f"{code.name}: {details}" if details else f"{code.name} from {address}")


# --------------------------------------------------------------------------- workflows


async def locate(
    peer_url: str,
    name: str,
    fanout: int | None = None,
    *,
    timeout_ms: int | None = None,
    http: httpx.AsyncClient | None = None,
) -> list[SearchHit]:
    """Search through any peer and keep the hits named exactly `name`.

    Hits keep the search's order, without duplicates (same owner and path).
    Raises FileNotLocated when no peer in reach holds the name.
    """
    async with PeerClient(peer_url, http=http) as peer:
        found = await peer.search(name, fanout=fanout, timeout_ms=timeout_ms)
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


async def resolve_transfer_address(target: str, *, http: httpx.AsyncClient | None = None) -> str:
    """A gRPC address from `host:port`, or from a peer REST URL via its `/health`."""
    if target.strip().lower().startswith(("http://", "https://")):
        async with PeerClient(target, http=http) as peer:
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
) -> DownloadResult:
    """Open a channel to `address`, run one DummyDownload of `name`, close it."""
    async with TransferClient(address) as transfer:
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
) -> UploadResult:
    """Resolve `target` (gRPC address or peer URL), then run one DummyUpload."""
    address = await resolve_transfer_address(target)
    async with TransferClient(address) as transfer:
        return await transfer.upload(size, chunk_size=chunk_size, name=name, on_chunk=on_chunk)
