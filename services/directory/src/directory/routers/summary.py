"""GET /summary: this peer's routing summary, which its neighbours fetch to route searches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from directory.deps import NodeDep, PeerTraffic
from directory.errors import ApiError
from directory.summarysync import etag_matches, etag_of
from peerfind.api import ErrorResponse, SummaryDoc

router = APIRouter(tags=["search"])

_RESPONSES: dict[int | str, dict[str, object]] = {
    304: {"description": "Not modified: `If-None-Match` names the current version."},
    **{code: {"model": ErrorResponse} for code in (401, 429, 503)},
}


@router.get(
    "/summary",
    response_model=SummaryDoc,
    responses=_RESPONSES,
    dependencies=[PeerTraffic],
)
async def summary(
    node: NodeDep,
    if_none_match: Annotated[
        str | None, Header(description="The ETag of the summary the caller holds.")
    ] = None,
) -> Response:
    """This peer's routing summary, for its neighbours (peers only).

    A Bloom filter of the trigrams of this peer's file names (`own`) and its union with
    its neighbours' (`merged`). The `ETag` is the version: a caller that sends it back in
    `If-None-Match` gets a 304 with no body while it is current. 503 until the filter has
    first been built from the index (an empty one would say this peer holds nothing).
    """
    if not node.summary_upkeep.ready:
        raise ApiError(503, "summary_not_ready", "the summary is being built from the index")
    book = node.summaries
    headers = {"ETag": etag_of(book.version), "Cache-Control": "no-cache"}
    if etag_matches(if_none_match, book.version):
        return Response(status_code=304, headers=headers)
    return Response(
        book.document().model_dump_json(), media_type="application/json", headers=headers
    )
