"""GET /search: local lookup, then a bounded flood to neighbours."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from directory.deps import NodeDep, RateLimited, check_peer_token
from directory.errors import ApiError
from directory.search import SearchParams, new_query_id
from peerfind.api import MAX_QUERY_LENGTH, ErrorResponse, SearchResponse

router = APIRouter(tags=["search"])

_PEER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_MAX_TIMEOUT_MS = 60000
# What _check_query enforces, stated in the contract: no control characters (Cc) and
# at least one character that is not white space. (Rust's and Python's \s agree
# outside Cc.)
_NOT_CC = r"\x00-\x1f\x7f-\x9f"
_QUERY_PATTERN = rf"^[^{_NOT_CC}]*[^\s{_NOT_CC}][^{_NOT_CC}]*$"


def _check_query(query: str) -> str:
    if not query.strip():
        raise ApiError(422, "invalid_request", "query: must not be blank")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in query):
        raise ApiError(422, "invalid_request", "query: must not contain control characters")
    return query


@router.get(
    "/search",
    response_model=SearchResponse,
    responses={code: {"model": ErrorResponse} for code in (401, 422, 429)},
    dependencies=[RateLimited],
)
async def search(
    request: Request,
    node: NodeDep,
    query: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            pattern=_QUERY_PATTERN,
            description="Case-insensitive substring of the file name.",
        ),
    ],
    fanout: Annotated[
        int | None, Query(ge=0, le=32, description="Neighbours to ask (clamped by the peer).")
    ] = None,
    ttl: Annotated[
        int | None, Query(ge=0, le=16, description="Hops the query may still travel.")
    ] = None,
    timeout_ms: Annotated[
        int | None, Query(ge=1, le=_MAX_TIMEOUT_MS, description="Deadline for the answer.")
    ] = None,
    qid: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="Query id (set by forwarding peers)."),
    ] = None,
    sender: Annotated[
        str | None,
        Query(pattern=_PEER_ID_PATTERN, description="Peer id of the forwarding peer."),
    ] = None,
) -> Response:
    """Search this peer's index, then forward to up to `fanout` known peers.

    A peer that fails or times out never fails the search: it is listed in
    `peers_failed` and `partial` is true.
    """
    if sender or qid:  # a forwarded search: peers only
        check_peer_token(request, node)
    settings = node.settings
    params = SearchParams(
        query=_check_query(query),
        fanout=min(settings.default_fanout if fanout is None else fanout, settings.max_fanout),
        ttl=min(settings.default_ttl if ttl is None else ttl, settings.max_ttl),
        timeout_s=(settings.search_timeout_ms if timeout_ms is None else timeout_ms) / 1000,
        query_id=qid or new_query_id(),
        sender=sender or None,
    )
    answer = await node.router.search(params)
    # The same JSON FastAPI would write for `response_model=SearchResponse`, without
    # validating our own answer a second time (bench/: ~5% of a search's CPU).
    return Response(answer.model_dump_json(), media_type="application/json")
