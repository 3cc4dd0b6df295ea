"""Typed client for a peer: its REST directory and its gRPC transfer service.

    async with PeerClient("http://127.0.0.1:8001") as peer:
        found = await peer.search("hello", fanout=2)
        walked = await peer.search("hello", mode="walk", max_results=3, explain=True)
    hits = await locate("http://127.0.0.1:8001", "hello3.txt")
    async with TransferClient(hits[0].grpc_address) as transfer:
        result = await transfer.download("hello3.txt", on_chunk=print)

TLS is a constructor argument, as httpx's `verify=` is: `PeerClient(url, tls=files)`,
`TransferClient(address, tls=files)`, and `tls=` on every workflow function.

Every failure is a `peerfind.errors.ClientError` whose message is one line meant
for a user:

    PeerUnreachable   connect error, timeout, gRPC UNAVAILABLE or DEADLINE_EXCEEDED
    PeerRefused       HTTP 4xx/5xx (with the ErrorResponse detail), a malformed
                      answer, or any other gRPC status ("NOT_FOUND: no file named ...")
    FileNotLocated    `locate` found no peer holding the name
    ClientError       a bad argument (URL, address, size) caught before any call

Modules: `_rest` (PeerClient, search_request), `_transfer` (TransferClient), `_results` (what a
transfer reports), `_workflows` (locate, pick an owner, one transfer), `_fetch`
(a real, multi-source, resumable, verified download), `_errors`
(failures to messages), `_defaults` (timeouts and limits).
"""

from __future__ import annotations

from peerfind.client._defaults import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_SEARCH_TIMEOUT_MS,
    DEFAULT_STALL_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    GRPC_MAX_MESSAGE_BYTES,
    SEARCH_MARGIN_S,
)
from peerfind.client._fetch import (
    DEFAULT_PIECE_SIZE,
    DEFAULT_SOURCES,
    LocalWriteError,
    fetch_file,
    pick_version,
)
from peerfind.client._rest import PeerClient, search_request
from peerfind.client._results import (
    ChunkCallback,
    ChunkSink,
    DownloadResult,
    FetchResult,
    UploadReceipt,
    UploadResult,
)
from peerfind.client._transfer import TransferClient, validate_grpc_address
from peerfind.client._workflows import (
    choose_owner,
    download_from,
    locate,
    resolve_transfer_address,
    upload_to,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_PIECE_SIZE",
    "DEFAULT_SEARCH_TIMEOUT_MS",
    "DEFAULT_SOURCES",
    "DEFAULT_STALL_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "GRPC_MAX_MESSAGE_BYTES",
    "SEARCH_MARGIN_S",
    "ChunkCallback",
    "ChunkSink",
    "DownloadResult",
    "FetchResult",
    "LocalWriteError",
    "PeerClient",
    "TransferClient",
    "UploadReceipt",
    "UploadResult",
    "choose_owner",
    "download_from",
    "fetch_file",
    "locate",
    "pick_version",
    "resolve_transfer_address",
    "search_request",
    "upload_to",
    "validate_grpc_address",
]
