"""The `peerfind.v1.FileTransfer` servicer: real downloads, dummy downloads and uploads.

`Download` streams the bytes of a shared file, read through
`peerfind.sharedfile.open_shared` (regular files under the shared folder only).
The dummy methods touch no file: `DummyDownload` streams as many zero bytes as the
index says the named file has; an upload is counted, checksummed and dropped.

Status codes sent to clients (never a traceback):

    Download       every code of DummyDownload, and
                   PERMISSION_DENIED   the file must not be served (outside the
                                       shared folder, not a regular file, several
                                       hard links, unreadable)
                   FAILED_PRECONDITION the file on disk is not the indexed one
                                       (size, mtime, inode), or its indexed sha256
                                       is not the requested one
                   ABORTED             the file changed while it streamed
                   NOT_FOUND           also: indexed, but gone from the disk

    DummyDownload  INVALID_ARGUMENT    the request bytes are not a FileRequest, the
                                       name cannot be a base name, the path is not
                                       a plain relative one, the name is not the
                                       path's base name, or chunk_size is neither
                                       0 nor within 1 KiB..MAX_CHUNK_SIZE
                   NOT_FOUND           no such path (or name) in the index
                   OUT_OF_RANGE        offset beyond the file size
                   UNAVAILABLE         no readable index (indexer not started yet,
                                       rebuilding, or the database is damaged)
    DummyUpload    INVALID_ARGUMENT    a chunk that is not a valid FileChunk message
                   RESOURCE_EXHAUSTED  more than settings.max_upload_bytes received
                                       (sent once the client has finished sending,
                                       see _drain, so that it is the status it gets)
    both           RESOURCE_EXHAUSTED  settings.max_concurrent_streams transfers running,
                                       or settings.max_streams_per_client of them from
                                       this client's address (slots.py)
                   DEADLINE_EXCEEDED   no chunk moved for settings.stream_stall_timeout_s
                                       (the client stopped reading or sending: a
                                       download ends when its blocked write returns,
                                       see _StallWatchdog), or the client's own
                                       deadline passed
                   INTERNAL            an unexpected error (logged here, not sent)

The stall deadline is what keeps a slot from being held for ever: a stream that
neither sends nor receives for `stream_stall_timeout_s` is ended by the server,
whatever deadline the client set (or none).

A download of zero bytes (an empty file, `offset` equal to the size) is an OK
stream with no chunk at all.

Both downloads name their file by `request.path` when it is set (exactly that file),
else by `request.name` (the first file of that name by path, as before `path` was
added), through `IndexReader.resolve`: the one rule the content route follows too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from peerfind.checksum import crc32
from peerfind.config import MAX_CHUNK_SIZE, PeerSettings
from peerfind.errors import IndexUnavailable, InvalidNameError
from peerfind.index import FileEntry, IndexReader
from peerfind.sharedfile import (
    FileChanged,
    SharedFile,
    SharedFileError,
    SharedFileMissing,
    SharedFileRefused,
    open_shared,
)
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from transfer import metrics
from transfer.slots import StreamSlots, client_key

__all__ = [
    "DOWNLOAD",
    "FILE_DOWNLOAD",
    "IDLE_DELAY_S",
    "MIN_CHUNK_SIZE",
    "SERVICE_NAME",
    "UPLOAD",
    "FileTransferServicer",
    "RpcFailure",
    "add_to_server",
    "chunk_frame",
]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = transfer_pb2.DESCRIPTOR.services_by_name["FileTransfer"].full_name
DOWNLOAD = "DummyDownload"
FILE_DOWNLOAD = "Download"
UPLOAD = "DummyUpload"
MIN_CHUNK_SIZE = 1024
_INTERNAL_DETAILS = "internal error in the transfer service"
# How much of an over-cap upload is still read (and dropped) while waiting for the
# client to finish sending, before the cap status is sent anyway (_drain).
UPLOAD_DRAIN_BYTES = 256 * 1024 * 1024
_DEADLINE_SLACK_S = 0.1
# How long the server stays without streams before on_idle: a client fetching piece
# after piece (`peerfind get`, one source) leaves gaps of one round trip, and trimming
# in each of them would make every next piece fault its buffers in again.
IDLE_DELAY_S = 1.0


_T = TypeVar("_T")
DownloadContext = grpc.aio.ServicerContext[transfer_pb2.FileRequest, transfer_pb2.FileChunk]
UploadContext = grpc.aio.ServicerContext[transfer_pb2.FileChunk, transfer_pb2.UploadStatus]


class RpcFailure(Exception):
    """A request the servicer refuses; it becomes `context.abort(code, details)`."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(slots=True)
class _Progress:
    """What one stream moved so far (read by the metrics when it ends)."""

    bytes: int = 0
    chunks: int = 0
    # Set when the client went away mid-stream (CANCELLED or DEADLINE_EXCEEDED).
    ended: grpc.StatusCode | None = None
    # Downloads: loop time of the last chunk handed over (the stall watchdog reads it),
    # and whether the watchdog has given the stream up.
    moved_at: float = 0.0
    stalled: bool = False


class _StallWatchdog:
    """Gives a download up when no chunk went out for `stall_s` (progress.moved_at).

    A download whose client stops reading blocks in `context.write` (flow control).
    Cancelling that write does not help: a status queues behind the unsent chunk
    (HTTP/2 sends trailers after the data), and grpc.aio cannot reset a stream from
    the server. So the watchdog does not cancel: it calls `give_up` (which frees the
    stream's place in the total, see slots.py) and the handler ends with a status as
    soon as the write returns (the client read again, or went away). One timer per
    stream, not one per chunk: the loop only stores a time.
    """

    __slots__ = ("_give_up", "_handle", "_loop", "_progress", "_stall_s")

    def __init__(self, stall_s: float, progress: _Progress, give_up: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stall_s = stall_s
        self._progress = progress
        self._give_up = give_up
        progress.moved_at = self._loop.time()
        self._handle = self._loop.call_at(progress.moved_at + stall_s, self._check)

    def _check(self) -> None:
        due = self._progress.moved_at + self._stall_s
        if self._loop.time() >= due:
            self._progress.stalled = True
            self._give_up()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


def _quoted(text: str, limit: int = 200) -> str:
    """`text` for a status message: quoted and escaped (repr), cut after `limit`
    characters (a path may be 4096, and a status travels in a header)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _client_gone_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """Why a call ended under our feet: its deadline passed, or the client cancelled."""
    # The client's own timer may fire first and cancel the call while the server's
    # copy of the deadline (set on arrival, so a little later) has a moment left:
    # a cancel in the last _DEADLINE_SLACK_S counts as the deadline.
    remaining = context.time_remaining()
    if remaining is not None and remaining <= _DEADLINE_SLACK_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def chunk_frame(data: bytes, offset: int, name: str = "") -> bytes:
    """`FileChunk(data=data, offset=offset, name=name)` as its wire bytes, built with one
    copy of `data`. Fields go out as offset (2), name (3), then data (1): protobuf parsers
    accept fields in any order, so this parses as that message does; the proto3 default
    values (offset 0, name "") are left out, as SerializeToString leaves them."""
    parts = []
    if offset:
        parts.append(b"\x10" + _varint(offset))
    if name:
        encoded = name.encode()
        parts.append(b"\x1a" + _varint(len(encoded)) + encoded)
    if data:
        parts.append(b"\x0a" + _varint(len(data)))
        parts.append(data)
    return b"".join(parts)


def add_to_server(servicer: FileTransferServicer, server: grpc.aio.Server) -> None:
    """Register `servicer` like the generated `add_FileTransferServicer_to_server`, except
    that the request of a download is parsed here: grpc.aio answers bytes its
    deserializer cannot parse with UNKNOWN and the exception's class name; these get
    INVALID_ARGUMENT and one line instead. And Download's chunks are written as their
    wire bytes (`chunk_frame`), so this is the one way to register the servicer."""

    def parsed(
        method: str, handler: Callable[[transfer_pb2.FileRequest, DownloadContext], Awaitable[None]]
    ) -> Callable[[bytes, DownloadContext], Awaitable[None]]:
        async def checked(raw: bytes, context: DownloadContext) -> None:
            try:
                request = transfer_pb2.FileRequest.FromString(raw)
            except DecodeError:
                metrics.RPCS.labels(method, grpc.StatusCode.INVALID_ARGUMENT.name).inc()
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid FileRequest message ({len(raw)} bytes)",
                )
            await handler(request, context)

        return checked

    handlers = {
        FILE_DOWNLOAD: grpc.unary_stream_rpc_method_handler(
            parsed(FILE_DOWNLOAD, servicer.Download),
            request_deserializer=None,  # the raw bytes
            response_serializer=None,  # Download writes each chunk's wire bytes
        ),
        DOWNLOAD: grpc.unary_stream_rpc_method_handler(
            parsed(DOWNLOAD, servicer.DummyDownload),
            request_deserializer=None,
            response_serializer=transfer_pb2.FileChunk.SerializeToString,
        ),
        # A chunk that does not parse raises DecodeError while the servicer iterates
        # the stream, where _upload maps it to INVALID_ARGUMENT itself.
        UPLOAD: grpc.stream_unary_rpc_method_handler(
            servicer.DummyUpload,
            request_deserializer=transfer_pb2.FileChunk.FromString,
            response_serializer=transfer_pb2.UploadStatus.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


class FileTransferServicer(transfer_pb2_grpc.FileTransferServicer):  # type: ignore[misc]
    """Serves one peer's index over `peerfind.v1.FileTransfer`."""

    def __init__(
        self,
        settings: PeerSettings,
        index: IndexReader | None = None,
        *,
        on_idle: Callable[[], object] | None = None,
        idle_delay_s: float = IDLE_DELAY_S,
    ) -> None:
        """`on_idle` runs once no stream has been in progress for `idle_delay_s` (the
        server passes `transfer.memory.heap_trimmer()`: freed heap memory goes back)."""
        self._settings = settings
        self._index = index if index is not None else IndexReader(settings.index_path)
        self._slots = StreamSlots(settings.max_concurrent_streams, settings.max_streams_per_client)
        self._stall_s = settings.stream_stall_timeout_s
        self._on_idle = on_idle
        self._idle_delay_s = idle_delay_s
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def active_streams(self) -> int:
        """Transfers in progress right now (every method, every client)."""
        return self._slots.active

    def streams_of(self, peer: str) -> int:
        """Transfers in progress from the client of `context.peer()` string `peer`."""
        return self._slots.held_by(client_key(peer))

    async def Download(self, request: transfer_pb2.FileRequest, context: DownloadContext) -> None:
        """Stream the bytes of the shared file `request.path` (or `request.name`), or the
        requested range of them."""

        async def work(progress: _Progress) -> None:
            await self._download_file(request, context, progress)

        await self._run(FILE_DOWNLOAD, context, work)

    async def DummyDownload(
        self, request: transfer_pb2.FileRequest, context: DownloadContext
    ) -> None:
        """Stream the size of `request.path` (or `request.name`), or the requested range,
        in zero-filled chunks."""

        async def work(progress: _Progress) -> None:
            await self._download(request, context, progress)

        await self._run(DOWNLOAD, context, work)

    async def DummyUpload(
        self, request_iterator: AsyncIterator[transfer_pb2.FileChunk], context: UploadContext
    ) -> transfer_pb2.UploadStatus:
        """Count and crc32 every chunk received; store nothing."""

        async def work(progress: _Progress) -> transfer_pb2.UploadStatus:
            return await self._upload(request_iterator, context, progress)

        return await self._run(UPLOAD, context, work)

    async def _run(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[_Progress], Awaitable[_T]],
    ) -> _T:
        """Run one RPC: enforce the stream limits, map errors to codes, record metrics."""
        peer = context.peer()  # empty once the call is over: read it now
        client = client_key(peer)
        slots = self._slots
        refusal = slots.acquire(client)
        if refusal is not None:
            limit = "total_slots" if slots.active >= slots.total else "client_slots"
            metrics.LIMITED.labels(limit).inc()
            metrics.RPCS.labels(method, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            logger.warning("%s from %s refused: %s", method, peer, refusal)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        gauge = metrics.ACTIVE_STREAMS.labels(method)
        gauge.inc()
        progress = _Progress()
        code = grpc.StatusCode.OK
        started = time.perf_counter()
        watchdog = None
        if method != UPLOAD:  # uploads time their reads themselves (_upload)

            def give_up() -> None:
                metrics.LIMITED.labels("stall").inc()
                logger.info("%s from %s stalled: the client reads nothing", method, peer)
                slots.release_total(client)

            watchdog = _StallWatchdog(self._stall_s, progress, give_up)
        try:
            result = await work(progress)
            if progress.ended is not None:
                code = progress.ended
                self._log_ended(method, peer, code, progress)
            return result
        except RpcFailure as exc:
            code = exc.code
            logger.debug("%s from %s: %s %s", method, peer, code.name, exc.details)
            await context.abort(exc.code, exc.details)
        except asyncio.CancelledError:
            code = _client_gone_code(context)
            self._log_ended(method, peer, code, progress)
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logger.exception("%s from %s failed", method, peer)
            await context.abort(code, _INTERNAL_DETAILS)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if progress.stalled:
                slots.release_share(client)  # the total was released on giving up
            else:
                slots.release(client)
            gauge.dec()
            self._record(method, code, progress, time.perf_counter() - started)
            if self._on_idle is not None and self._idle():
                self._idle_soon()

    def _idle(self) -> bool:
        return self._slots.active == 0 and self._slots.lingering == 0

    def _idle_soon(self) -> None:
        """Run on_idle `idle_delay_s` after this moment, unless a stream runs then."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()  # the last stream's end counts, not the first's
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self._idle_delay_s, self._when_idle)

    def _when_idle(self) -> None:
        self._idle_timer = None
        if self._on_idle is not None and self._idle():  # a stream that runs now re-arms
            self._on_idle()

    @property
    def stalled_streams(self) -> int:
        """Downloads given up on (out of the total) whose write has not returned yet."""
        return self._slots.lingering

    @staticmethod
    def _log_ended(method: str, peer: str, code: grpc.StatusCode, progress: _Progress) -> None:
        logger.info(
            "%s from %s ended early (%s) after %d bytes",
            method,
            peer,
            code.name,
            progress.bytes,
        )

    @staticmethod
    def _record(method: str, code: grpc.StatusCode, progress: _Progress, elapsed: float) -> None:
        if method == DOWNLOAD:
            metrics.BYTES_SENT.inc(progress.bytes)
            metrics.CHUNKS_SENT.inc(progress.chunks)
        elif method == FILE_DOWNLOAD:
            metrics.FILE_BYTES_SENT.inc(progress.bytes)
            metrics.FILE_CHUNKS_SENT.inc(progress.chunks)
        else:
            metrics.BYTES_RECEIVED.inc(progress.bytes)
            metrics.CHUNKS_RECEIVED.inc(progress.chunks)
        metrics.RPCS.labels(method, code.name).inc()
        metrics.STREAM_DURATION.labels(method).observe(elapsed)
        if code is grpc.StatusCode.OK:
            logger.debug(
                "%s: %d bytes in %d chunks, %.3fs", method, progress.bytes, progress.chunks, elapsed
            )

    def _chunk_size(self, requested: int) -> int:
        if requested == 0:
            return self._settings.chunk_size
        if not MIN_CHUNK_SIZE <= requested <= MAX_CHUNK_SIZE:
            raise RpcFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"chunk_size must be 0 (server default) or {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
                f" bytes, not {requested}",
            )
        return requested

    def _lookup(self, request: transfer_pb2.FileRequest) -> FileEntry:
        # Called on the event loop, not through asyncio.to_thread: an indexed point
        # query costs a fraction of a thread hop (docs/benchmarks.md, "Index scan,
        # query, freshness, memory"). Readers never wait for the writer (WAL).
        peer = self._settings.peer_id
        name, path = request.name, request.path
        try:
            entry = self._index.resolve(name, path)
            if entry is None and not self._index.stats().available:
                raise RpcFailure(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the index of peer {peer} is not available yet; retry later",
                )
        except InvalidNameError as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except IndexUnavailable as exc:
            logger.warning("index unavailable: %s", exc)
            raise RpcFailure(
                grpc.StatusCode.UNAVAILABLE, f"the index of peer {peer} is unavailable"
            ) from None
        if entry is None:
            what = f"at path {_quoted(path)}" if path else f"named {_quoted(name)}"
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, f"no file {what} on peer {peer}")
        return entry

    def _request(self, request: transfer_pb2.FileRequest) -> tuple[FileEntry, int, int, int]:
        """Check a download request: (index entry, chunk size, start, end)."""
        chunk_size = self._chunk_size(request.chunk_size)
        entry = self._lookup(request)
        size = entry.size
        start: int = request.offset
        if start > size:
            raise RpcFailure(
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {start} is beyond the end of {_quoted(entry.path)} ({size} bytes)",
            )
        end = size if request.length == 0 else min(size, start + request.length)
        return entry, chunk_size, start, end

    def _stalled(self, what: str, moved: int) -> RpcFailure:
        return RpcFailure(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no chunk {what} for {self._stall_s:g} s (stream_stall_timeout_s): transfer "
            f"ended after {moved} bytes",
        )

    @staticmethod
    def _refuse(reason: str, code: grpc.StatusCode, details: str) -> RpcFailure:
        metrics.REFUSALS.labels(reason).inc()
        return RpcFailure(code, details)

    def _open(self, entry: FileEntry, wanted_sha256: str) -> SharedFile:
        """Open the indexed file, refusing anything but the indexed version."""
        peer = self._settings.peer_id
        name = _quoted(entry.path)
        if wanted_sha256 and entry.sha256 != wanted_sha256.lower():
            have = entry.sha256 or "not hashed yet"
            raise self._refuse(
                "sha256_mismatch",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{name} on peer {peer} has sha256 {have}, not {wanted_sha256}",
            )
        try:
            f = open_shared(self._settings.shared_dir, entry.path)
        except SharedFileMissing:
            raise self._refuse(
                "missing",
                grpc.StatusCode.NOT_FOUND,
                f"{name} is indexed on peer {peer} but gone from its disk",
            ) from None
        except SharedFileRefused as exc:
            raise self._refuse(
                exc.reason, grpc.StatusCode.PERMISSION_DENIED, f"peer {peer} refuses: {exc}"
            ) from None
        except SharedFileError as exc:
            logger.warning("cannot open %s: %s", entry.path, exc)
            raise RpcFailure(
                grpc.StatusCode.UNAVAILABLE, f"peer {peer} cannot read {name} now"
            ) from None
        if (f.size, f.mtime, f.ino) != (entry.size, entry.mtime, entry.ino):
            f.close()
            raise self._refuse(
                "changed_since_indexed",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{name} changed on peer {peer} since it was indexed; search again",
            )
        return f

    async def _download_file(
        self, request: transfer_pb2.FileRequest, context: DownloadContext, progress: _Progress
    ) -> None:
        entry, chunk_size, start, end = self._request(request)
        with self._open(entry, request.sha256) as f:
            if end == start:
                return
            # Each chunk goes out as its wire bytes (`chunk_frame`), built with one copy
            # of the payload: a FileChunk message would copy it in, then out again to
            # serialize (docs/benchmarks.md, "Download: the chunk's wire bytes").
            name = entry.name
            write = context.write
            read = f.read
            unchanged = f.check_unchanged
            clock = asyncio.get_running_loop().time
            pos = start
            try:
                while pos < end:
                    n = end - pos
                    if n > chunk_size:
                        n = chunk_size
                    # pread on the loop, as DummyDownload writes on it: a page-cache read
                    # of one chunk.
                    data = read(pos, n)
                    if len(data) != n:
                        raise FileChanged(f"{entry.path} shrank while it was being read")
                    unchanged()  # after the read: the bytes sent all come from one version
                    # Only the first chunk carries the name.
                    frame = chunk_frame(data, pos, name if pos == start else "")
                    try:
                        await write(frame)  # type: ignore[arg-type]  # wire bytes, see above
                    except Exception:
                        # As in DummyDownload: the client went away, stop quietly.
                        progress.ended = _client_gone_code(context)
                        return
                    if progress.stalled:  # given up on while this write was blocked
                        raise self._stalled("could be sent", pos - start)
                    progress.moved_at = clock()
                    pos += n
            except FileChanged:
                raise self._refuse(
                    "changed_while_streaming",
                    grpc.StatusCode.ABORTED,
                    f"{_quoted(entry.path)} changed on peer {self._settings.peer_id} while it "
                    f"streamed, after {pos - start} bytes; download it again",
                ) from None
            except OSError as exc:
                logger.warning("reading %s failed: %s", entry.path, exc)
                raise RpcFailure(
                    grpc.StatusCode.UNAVAILABLE,
                    f"peer {self._settings.peer_id} failed to read {_quoted(entry.path)}",
                ) from None
            finally:
                progress.bytes = pos - start
                progress.chunks = -(-progress.bytes // chunk_size)

    async def _download(
        self, request: transfer_pb2.FileRequest, context: DownloadContext, progress: _Progress
    ) -> None:
        entry, chunk_size, start, end = self._request(request)
        name = entry.name
        if end == start:
            return
        # One payload buffer and one message per stream. The message is mutated
        # between writes: `context.write` serializes it before it returns, so the
        # next chunk never alters one in flight. Per chunk: an offset, a write and
        # the time for the stall watchdog.
        buf = bytes(min(chunk_size, end - start))
        buf_len = len(buf)
        chunk = transfer_pb2.FileChunk(data=buf, offset=start, name=name)
        write = context.write
        clock = asyncio.get_running_loop().time
        pos = start
        try:
            while pos < end:
                n = end - pos
                if n >= chunk_size:
                    n = chunk_size
                elif n != buf_len:  # the last, shorter chunk
                    chunk.data = buf[:n]
                chunk.offset = pos
                await write(chunk)
                if progress.stalled:  # given up on while this write was blocked
                    break
                progress.moved_at = clock()
                if pos == start:
                    chunk.ClearField("name")  # only the first chunk carries the name
                pos += n
        except Exception:
            # grpc.aio fails the write (ExecuteBatchError, a private type) when the
            # client cancelled or its deadline passed: the call is over, stop quietly.
            progress.ended = _client_gone_code(context)
        finally:
            progress.bytes = pos - start
            progress.chunks = -(-progress.bytes // chunk_size)
        if progress.stalled and progress.ended is None:
            raise self._stalled("could be sent", pos - start)

    async def _drain(
        self,
        receive: Callable[[], Awaitable[transfer_pb2.FileChunk]],
        timer: asyncio.Timeout,
        clock: Callable[[], float],
    ) -> None:
        """Read and drop what the client still sends, up to UPLOAD_DRAIN_BYTES.

        A status sent while the client is still writing reaches a grpc.aio client as
        INTERNAL "Internal error from Core" about one time in three: its failed write
        overwrites the status it had received (grpc/grpc#36066). Sent after the
        client's half-close, the status is what the client sees. A client that sends
        more than the budget gets the status then, whatever it shows; one that stops
        sending ends as any stalled upload does (DEADLINE_EXCEEDED).
        """
        dropped = 0
        while dropped < UPLOAD_DRAIN_BYTES:
            timer.reschedule(clock() + self._stall_s)
            try:
                dropped += len((await receive()).data)
            except (StopAsyncIteration, DecodeError):
                return

    async def _upload(
        self,
        chunks: AsyncIterator[transfer_pb2.FileChunk],
        context: UploadContext,
        progress: _Progress,
    ) -> transfer_pb2.UploadStatus:
        cap = self._settings.max_upload_bytes
        crc = 0
        received = 0
        count = 0
        name = ""
        stall = self._stall_s
        clock = asyncio.get_running_loop().time
        receive = chunks.__aiter__().__anext__
        try:
            # grpc.aio parses each chunk as the stream is read: a malformed one
            # raises DecodeError from the iteration itself. The stall timer is pushed
            # back before each read: a client that stops sending ends here.
            async with asyncio.timeout(None) as timer:
                while True:
                    timer.reschedule(clock() + stall)
                    try:
                        chunk = await receive()
                    except StopAsyncIteration:
                        break
                    data = chunk.data
                    if count == 0:
                        name = chunk.name
                    count += 1
                    received += len(data)
                    if received > cap:
                        await self._drain(receive, timer, clock)
                        raise RpcFailure(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"upload exceeds the cap of {cap} bytes (max_upload_bytes)",
                        )
                    crc = crc32(data, crc)
        except TimeoutError:
            metrics.LIMITED.labels("stall").inc()
            raise self._stalled("received", received) from None
        except DecodeError as exc:
            raise RpcFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"chunk {count + 1} is not a valid FileChunk: {exc}",
            ) from None
        finally:
            progress.bytes = received
            progress.chunks = count
        # grpc.aio ends the request stream the same way whether the client
        # half-closed or cancelled, and gives no way to tell them apart here. The
        # cancellation of this task follows the end of the stream, nearly always
        # within one loop iteration: yield once so that it lands (CancelledError,
        # recorded as CANCELLED). A later one is recorded as OK (the cancel test
        # accepts either).
        await asyncio.sleep(0)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:  # the stream ended by the deadline
            progress.ended = grpc.StatusCode.DEADLINE_EXCEEDED
        return transfer_pb2.UploadStatus(
            ok=True,
            bytes_received=received,
            chunks=count,
            checksum=f"crc32:{crc:08x}",
            name=name,
            message=f"received {received} bytes in {count} chunks; nothing was stored",
        )
