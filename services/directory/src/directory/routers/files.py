"""GET /files: this peer's local index, page by page."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from directory.deps import NodeDep
from directory.search import describe
from peerfind.api import FileInfo, FilesResponse

router = APIRouter(tags=["files"])


@router.get("/files", response_model=FilesResponse)
async def files(
    node: NodeDep,
    limit: Annotated[int, Query(ge=1, le=10000, description="Entries per page.")] = 1000,
    after: Annotated[
        str, Query(max_length=4096, description="Return entries whose path sorts after this.")
    ] = "",
) -> FilesResponse:
    """Name, size and mtime of each shared file, with the URLs to fetch it."""
    entries = await asyncio.to_thread(node.reader.list, limit + 1, after)
    stats = await asyncio.to_thread(node.reader.stats)
    page = entries[:limit]
    settings = node.settings
    return FilesResponse(
        peer_id=settings.peer_id,
        files=[
            describe(e, settings.peer_id, settings.self_url, settings.grpc_advertise, FileInfo)
            for e in page
        ],
        total=stats.files,
        next_after=page[-1].path if len(entries) > limit else None,
    )
