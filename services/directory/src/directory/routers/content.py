"""GET /files/{name}/content: a shared file's bytes over HTTP, with Range, for browsers and curl.

`?path=` names the file exactly (its path relative to the shared folder, as /files and
/search list it; `name` must then be its base name); without it, `name` alone names the
first file of that name by path. The `content_url` of every hit carries the path, so a
link opens the file it was listed for even when another folder holds the same name.

The bytes are read through this peer's own transfer service (`Download`), not from
the folder: the directory faces the network and needs no access to the shared
folder at all (it is not mounted into its container), and the rules of what may be
served (regular files under the root, no symlink or hard-link escape, one version
per response) stay in one place, with their metrics. The cost is one local gRPC
hop per response, which a browser download does not notice.

One range per request (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges are
answered with the whole file (200), as RFC 9110 allows. Once the status line is
sent, a file that changes mid-way can only cut the response short: the body then
ends before Content-Length, which curl and browsers report as a failed download.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

import grpc
import grpc.aio
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from directory.deps import NodeDep
from directory.errors import ApiError
from peerfind.api import ErrorResponse
from peerfind.errors import InvalidNameError
from peerfind.index import MAX_NAME_LENGTH, MAX_PATH_LENGTH, FileEntry
from peerfind.tls import grpc_channel
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc

__all__ = ["content", "parse_range", "router"]

router = APIRouter(tags=["files"])

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# What the transfer service's refusals mean to an HTTP client.
_HTTP_OF = {
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "refused"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "file_changed"),
    grpc.StatusCode.ABORTED: (409, "file_changed"),
    grpc.StatusCode.OUT_OF_RANGE: (416, "range_not_satisfiable"),
    grpc.StatusCode.UNAVAILABLE: (503, "transfer_unavailable"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (503, "busy"),
}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single `Range` header, None for the whole file.

    Raises ValueError when the range cannot be satisfied (416).
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # several ranges, or another unit: the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise ValueError("range starts beyond the end")
    return start, end


async def _entry(node: NodeDep, name: str, path: str) -> FileEntry:
    try:
        entry = await asyncio.to_thread(node.reader.resolve, name, path)
    except InvalidNameError as exc:
        # A name or path that cannot be in any index (or a name that is not the path's
        # base name) names no file: 404, as for any other.
        raise ApiError(404, "not_found", f"no such file: {exc}") from None
    if entry is None:
        what = f"at path {path!r}" if path else f"named {name!r}"
        raise ApiError(404, "not_found", f"no file {what} on peer {node.settings.peer_id}")
    return entry


_RESPONSES: dict[int | str, dict[str, object]] = {
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    416: {"model": ErrorResponse},
    502: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


async def content(
    request: Request,
    node: NodeDep,
    name: Annotated[
        str, Path(max_length=MAX_NAME_LENGTH, description="File name, as /files lists it.")
    ],
    path: Annotated[
        str,
        Query(
            max_length=MAX_PATH_LENGTH,
            description="The file's path relative to the shared folder, as /files and "
            "/search list it: names the file exactly (`name` must be its base name). "
            "Without it, the first file named `name` by path.",
        ),
    ] = "",
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The bytes of a shared file (`Range` supported), read through this peer's Download."""
    entry = await _entry(node, name, path)
    size = entry.size
    try:
        wanted = parse_range(range_header, size)
    except ValueError as exc:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"{exc} ({size} bytes)",
            {"Content-Range": f"bytes */{size}"},
        ) from None
    start, end = wanted if wanted is not None else (0, size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        # inline: a browser shows what it can (text, images) and saves the rest by name.
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(entry.name, safe='')}",
    }
    if entry.sha256:
        headers["ETag"] = f'"{entry.sha256}"'
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    status = 206 if wanted is not None else 200
    media_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    if request.method == "HEAD" or end == start:
        return Response(status_code=status, headers=headers, media_type=media_type)
    settings = node.settings
    channel = grpc_channel(
        settings.transfer_address,
        settings.tls_files if settings.tls else None,
        server_name=settings.grpc_tls_name,
    )
    stub = transfer_pb2_grpc.FileTransferStub(channel)
    call = stub.Download(
        transfer_pb2.FileRequest(
            name=entry.name,
            path=entry.path,
            offset=start,
            length=end - start,
            sha256=entry.sha256 or "",
        )
    )
    try:
        first = await call.read()  # a refusal before any byte becomes a JSON answer
    except grpc.aio.AioRpcError as exc:
        await channel.close(None)
        status_code, error = _HTTP_OF.get(exc.code(), (502, "transfer_failed"))
        raise ApiError(status_code, error, exc.details() or exc.code().name) from None
    if first is grpc.aio.EOF:  # type: ignore[attr-defined]
        await channel.close(None)
        raise ApiError(502, "transfer_failed", "the transfer service sent no bytes")
    assert isinstance(first, transfer_pb2.FileChunk)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first.data
            # read() on, never `async for`: grpc.aio refuses to mix the two styles on
            # one call (UsageError), which cut every body after its first chunk.
            while (chunk := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                assert isinstance(chunk, transfer_pb2.FileChunk)
                yield chunk.data
        finally:
            call.cancel()
            await channel.close(None)

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=media_type)


for _method in ("GET", "HEAD"):
    router.add_api_route(
        "/files/{name}/content",
        content,
        methods=[_method],
        operation_id=f"file_content_{_method.lower()}",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, **_RESPONSES},
    )
