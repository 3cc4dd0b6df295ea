"""Fake peers for client tests: a canned REST directory and a FileTransfer servicer, real servers.

`FakeDirectory` serves a small FastAPI app that answers the REST contract with canned
`peerfind.api` models, by uvicorn on 127.0.0.1 in a background thread (HTTPS when
given a certificate); tests change what it answers through `Directory.state`.
`serve_transfer` runs `FakeTransfer` on a real `grpc.aio` server on port 0 (TLS when
given `TlsFiles`) on the running event loop. `make_pki` writes a throwaway CA and
certificates for both.

The pytest fixtures below wrap them; a test suite's conftest imports the ones it uses:

    from peerfind_devnet.fakes import directory, fake_directory_server, transfer

(a fixture that another depends on, such as `fake_directory_server`, comes along).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
import pytest
import trustme
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from peerfind.api import (
    BootstrapResponse,
    ErrorResponse,
    FailedPeer,
    FileInfo,
    FilesResponse,
    HealthResponse,
    IndexHealth,
    PeerInfo,
    PeerRef,
    PeersResponse,
    RegisterRequest,
    RegisterResponse,
    SearchHit,
    SearchResponse,
    TransferHealth,
)
from peerfind.client import GRPC_MAX_MESSAGE_BYTES
from peerfind.tls import TlsFiles, server_credentials
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from peerfind_devnet._wait import free_port, wait_for

__all__ = [
    "PEER_ID",
    "Directory",
    "DirectoryState",
    "FakeDirectory",
    "FakeTransfer",
    "Pki",
    "Transfer",
    "Upload",
    "build_directory_app",
    "dead_port",
    "directory",
    "fake_directory_server",
    "fake_https_directory_server",
    "hit",
    "https_directory",
    "make_health",
    "make_hit",
    "make_pki",
    "mtls_transfer",
    "pki",
    "serve_transfer",
    "transfer",
    "transfer_default_limits",
]

PEER_ID = "peer1"


def make_health(grpc_address: str = "127.0.0.1:50051", status: str = "ok") -> HealthResponse:
    return HealthResponse.model_validate(
        {
            "status": status,
            "peer": PEER_ID,
            "peer_id": PEER_ID,
            "url": "http://127.0.0.1:8001",
            "grpc_address": grpc_address,
            "version": "0.1.0",
            "uptime_s": 12.5,
            "peers": 2,
            "index": IndexHealth(
                available=True, files=3, bytes=1234, last_scan_at=1.7e9, age_s=1.0, stale=False
            ),
            "transfer": TransferHealth(address=grpc_address, serving=True),
            "key_id": "k" * 52,
        }
    )


def make_hit(name: str, peer_id: str, grpc_address: str, size: int = 6) -> SearchHit:
    return SearchHit(
        name=name,
        path=f"docs/{name}",
        size=size,
        mtime=1.7e9,
        peer_id=peer_id,
        rest_url=f"http://{peer_id}.example:8000",
        grpc_address=grpc_address,
    )


@dataclass
class DirectoryState:
    """What the fake directory answers; tests change it freely."""

    health: HealthResponse = field(default_factory=make_health)
    health_status: int = 200
    peers: list[PeerInfo] = field(default_factory=list)
    passive: list[PeerRef] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    hits: list[SearchHit] = field(default_factory=list)
    failed: list[FailedPeer] = field(default_factory=list)
    truncated: bool = False
    override: dict[str, tuple[int, str]] = field(default_factory=dict)
    """path -> (status, raw body) answered instead of the route."""
    delay_s: float = 0.0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@dataclass
class Directory:
    url: str
    state: DirectoryState

    def advertise(self, grpc_address: str, status: str = "ok") -> None:
        """Make /health name `grpc_address` as this peer's transfer service."""
        self.state.health = make_health(grpc_address, status)


def build_directory_app(holder: dict[str, DirectoryState]) -> FastAPI:
    app = FastAPI()

    def state() -> DirectoryState:
        return holder["state"]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        body = ErrorResponse(error="invalid_request", detail=detail)
        return JSONResponse(body.model_dump(), status_code=422)

    @app.middleware("http")
    async def record(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        current = state()
        body = await request.body()
        current.requests.append(
            (request.method, request.url.path, dict(request.query_params), body)
        )
        if current.delay_s:
            await asyncio.sleep(current.delay_s)
        if request.url.path in current.override:
            status, raw = current.override[request.url.path]
            return Response(raw, status_code=status, media_type="application/json")
        return await call_next(request)

    @app.get("/health")
    async def health() -> JSONResponse:
        current = state()
        return JSONResponse(current.health.model_dump(), status_code=current.health_status)

    @app.get("/peers")
    async def peers() -> PeersResponse:
        return PeersResponse(
            peer_id=PEER_ID,
            peers=state().peers,
            passive=state().passive,
            active_size=6,
            passive_size=36,
        )

    @app.get("/files")
    async def files(limit: int = 100, after: str | None = None) -> FilesResponse:
        if limit < 1:
            body = ErrorResponse(error="invalid_request", detail="limit must be at least 1")
            return JSONResponse(body.model_dump(), status_code=422)  # type: ignore[return-value]
        ordered = sorted(state().files, key=lambda f: f.path)
        rest = [f for f in ordered if after is None or f.path > after]
        page = rest[:limit]
        more = len(rest) > limit
        return FilesResponse(
            peer_id=PEER_ID,
            files=page,
            total=len(ordered),
            next_after=page[-1].path if more else None,
        )

    @app.get("/search")
    async def search(
        query: str, fanout: int | None = None, timeout_ms: int | None = None
    ) -> SearchResponse:
        current = state()
        hits = [h for h in current.hits if query.casefold() in h.name.casefold()]
        answered = sorted({PEER_ID, *(h.peer_id for h in hits)})
        return SearchResponse(
            query=query,
            query_id="q-1",
            peer_id=PEER_ID,
            hits=hits,
            peers_answered=answered,
            peers_failed=current.failed,
            partial=bool(current.failed),
            truncated=current.truncated,
            took_ms=3.0,
        )

    @app.post("/register")
    async def register(body: RegisterRequest) -> RegisterResponse:
        registered = PeerInfo(
            peer_id="peer9", url=body.url, state="alive", last_seen=1.7e9, friend=False
        )
        return RegisterResponse(
            registered=registered,
            peer_id=PEER_ID,
            url="http://127.0.0.1:8001",
            peers=[registered],
        )

    @app.post("/bootstrap")
    async def bootstrap() -> BootstrapResponse:
        return BootstrapResponse(
            ok=True,
            friend="http://127.0.0.1:8002",
            friend_peer_id="peer2",
            tried=["http://127.0.0.1:8002"],
            learned=2,
        )

    return app


class FakeDirectory:
    """`build_directory_app` served by uvicorn on 127.0.0.1 in a thread.

    `with FakeDirectory() as server:` starts it and stops it again; `reset()` gives
    each test a fresh state. With `certfile` and `keyfile` it serves HTTPS.
    """

    def __init__(self, *, certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self._holder = {"state": DirectoryState()}
        # Bound here, served by uvicorn: no window in which another process takes the port.
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        scheme = "https" if certfile is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            build_directory_app(self._holder),
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        wait_for(
            lambda: self._server.started or not self._thread.is_alive(),
            10,
            step_s=0.01,
            what="the fake directory to start",
        )
        if not self._server.started:
            raise RuntimeError("the fake directory did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def reset(self) -> Directory:
        """A fresh state, answered from now on."""
        self._holder["state"] = DirectoryState()
        return Directory(url=self.url, state=self._holder["state"])


# --------------------------------------------------------------------------- gRPC


@dataclass
class Upload:
    name: str
    bytes: int
    chunks: int
    crc: int
    offsets_ok: bool
    names: tuple[str, ...]  # each chunk's label: the client sends it on the first only


class FakeTransfer(transfer_pb2_grpc.FileTransferServicer):  # type: ignore[misc]
    """Streams zero bytes for names in `files` (DummyDownload), the bytes of `shared`
    (Download); counts and checksums uploads.

    A request with `path` names that file of `shared` (DummyDownload falls back to
    `files` by the path's base name); with `name` alone, the first path of `shared` by
    order with that base name, as a real owner does.
    """

    def __init__(self) -> None:
        self.files: dict[str, int] = {"hello3.txt": 6, "big.bin": 10_000}
        self.shared: dict[str, bytes] = {}
        """path -> content, for Download (and DummyDownload's sizes)."""
        self.default_chunk = 4096
        self.bad_offsets = False
        self.corrupt_checksum = False
        self.upload_cap: int | None = None
        self.requests: list[Any] = []
        self.uploads: list[Upload] = []

    async def _named(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The path of `shared` the request names, or "" (none by that name)."""
        name, path = request.name, request.path
        if "/" in name or not (name or path):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name must not be a path")
        if path:
            if name and name != path.rpartition("/")[2]:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{name!r} is not the name of {path!r}"
                )
            return path if path in self.shared else ""
        return next((p for p in sorted(self.shared) if p.rpartition("/")[2] == name), "")

    async def DummyDownload(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        self.requests.append(request)
        found = await self._named(request, context)
        name = request.name or request.path.rpartition("/")[2]
        if found:
            size = len(self.shared[found])
        elif name in self.files:
            size = self.files[name]
        else:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no file named {name!r}")
        for chunk in self._chunks(request, size, name, lambda start, end: bytes(end - start)):
            yield chunk

    async def Download(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        self.requests.append(request)
        found = await self._named(request, context)
        if not found:
            what = f"at {request.path!r}" if request.path else f"named {request.name!r}"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no file {what}")
        data = self.shared[found]
        if request.sha256 and request.sha256.lower() != hashlib.sha256(data).hexdigest():
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"{found!r} has another sha256"
            )
        name = found.rpartition("/")[2]
        for chunk in self._chunks(request, len(data), name, lambda start, end: data[start:end]):
            yield chunk

    def _chunks(
        self, request: Any, size: int, name: str, read: Callable[[int, int], bytes]
    ) -> Iterator[Any]:
        end = size if request.length == 0 else min(size, request.offset + request.length)
        chunk = request.chunk_size or self.default_chunk
        offset = request.offset
        first = True
        while offset < end:
            count = min(chunk, end - offset)
            yield transfer_pb2.FileChunk(
                data=read(offset, offset + count),
                offset=offset + (1 if self.bad_offsets and not first else 0),
                name=name if first else "",
            )
            offset += count
            first = False

    async def DummyUpload(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        received = chunks = crc = 0
        name = ""
        offsets_ok = True
        names: list[str] = []
        async for chunk in request_iterator:
            names.append(chunk.name)
            if chunks == 0:
                name = chunk.name
            offsets_ok = offsets_ok and chunk.offset == received
            received += len(chunk.data)
            chunks += 1
            crc = zlib.crc32(chunk.data, crc)
            if self.upload_cap is not None and received > self.upload_cap:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"upload exceeds {self.upload_cap} bytes"
                )
        self.uploads.append(Upload(name, received, chunks, crc, offsets_ok, tuple(names)))
        reported = crc ^ 1 if self.corrupt_checksum else crc
        return transfer_pb2.UploadStatus(
            ok=True,
            bytes_received=received,
            chunks=chunks,
            checksum=f"crc32:{reported:08x}",
            message="received",
            name=name,
        )


@dataclass
class Transfer:
    address: str
    servicer: FakeTransfer


@asynccontextmanager
async def serve_transfer(
    max_message_bytes: int | None = None, *, tls: TlsFiles | None = None
) -> AsyncIterator[Transfer]:
    """`FakeTransfer` on a grpc.aio server on 127.0.0.1:0, stopped on exit.

    `max_message_bytes` None leaves gRPC's default 4 MiB message limit; with `tls`
    (a certificate and key, and a CA to require client certificates) it serves TLS.
    """
    limits = max_message_bytes is not None
    options = (
        [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if limits
        else []
    )
    server = grpc.aio.server(options=options)
    servicer = FakeTransfer()
    transfer_pb2_grpc.add_FileTransferServicer_to_server(servicer, server)
    credentials = server_credentials(tls) if tls is not None else None
    if credentials is not None:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Transfer(address=f"127.0.0.1:{port}", servicer=servicer)
    finally:
        await server.stop(None)


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class Pki:
    """PEM files of a throwaway CA, for servers on 127.0.0.1 and for their clients."""

    server: TlsFiles
    """Certificate and key for 127.0.0.1, and the CA: gRPC servers then require client certs."""
    client: TlsFiles
    """The CA and a client certificate and key (mutual TLS)."""
    ca_only: TlsFiles
    """The CA alone: verify servers, present no certificate."""


def make_pki(directory: Path) -> Pki:
    """A new CA and its certificates, written as PEM files into `directory`."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("peerfind-client")
    paths = {
        name: directory / f"{name}.pem"
        for name in ("ca", "server", "server-key", "client", "client-key")
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["server"]))
    server.private_key_pem.write_to_path(str(paths["server-key"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client"]))
    client.private_key_pem.write_to_path(str(paths["client-key"]))
    return Pki(
        server=TlsFiles(paths["ca"], paths["server"], paths["server-key"]),
        client=TlsFiles(paths["ca"], paths["client"], paths["client-key"]),
        ca_only=TlsFiles(paths["ca"]),
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def fake_directory_server() -> Iterator[FakeDirectory]:
    """One fake directory for the session (`directory` resets it for each test)."""
    with FakeDirectory() as server:
        yield server


@pytest.fixture
def directory(fake_directory_server: FakeDirectory) -> Directory:
    """The session's fake directory, with a fresh state."""
    return fake_directory_server.reset()


@pytest.fixture(scope="session")
def fake_https_directory_server(pki: Pki) -> Iterator[FakeDirectory]:
    """One fake directory on HTTPS (a certificate of `pki`'s CA) for the session."""
    with FakeDirectory(certfile=pki.server.cert_file, keyfile=pki.server.key_file) as server:
        yield server


@pytest.fixture
def https_directory(fake_https_directory_server: FakeDirectory) -> Directory:
    """The session's fake HTTPS directory, with a fresh state."""
    return fake_https_directory_server.reset()


@pytest.fixture
async def transfer() -> AsyncIterator[Transfer]:
    """A transfer server that accepts the client's largest chunks."""
    async with serve_transfer(GRPC_MAX_MESSAGE_BYTES) as served:
        yield served


@pytest.fixture
async def transfer_default_limits() -> AsyncIterator[Transfer]:
    """A transfer server left at gRPC's default 4 MiB message limit."""
    async with serve_transfer() as served:
        yield served


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One throwaway CA and its certificates for the session."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def mtls_transfer(pki: Pki) -> AsyncIterator[Transfer]:
    """A transfer server on TLS that requires a client certificate of `pki`'s CA."""
    async with serve_transfer(GRPC_MAX_MESSAGE_BYTES, tls=pki.server) as served:
        yield served


@pytest.fixture
def dead_port() -> int:
    """A local port with no listener (connection refused)."""
    return free_port()


@pytest.fixture
def hit() -> Callable[..., SearchHit]:
    """Factory of search hits: `hit(name, peer_id, grpc_address, size=6)`."""
    return make_hit
