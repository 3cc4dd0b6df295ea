"""GET /search: local lookup, then a bounded flood to neighbours.

The hottest route of a peer (every search reaches it once per peer on its way), so
it reads its query string in one pass: `SearchQuery` validates the parameters in a
single pydantic call, where FastAPI's per-parameter solving and two dependencies
cost ~150 us per request (bench/, docs/benchmarks.md). The OpenAPI contract is
generated from the same model, so it is what FastAPI would have written.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from directory.deps import check_peer_token, check_rate_limit, node_of
from directory.errors import ApiError
from directory.search import SearchParams, new_query_id
from peerfind.api import MAX_QUERY_LENGTH, ErrorResponse, SearchResponse

__all__ = ["SearchQuery", "router"]

router = APIRouter(tags=["search"])

_PEER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_MAX_TIMEOUT_MS = 60000
# What _check_query enforces, stated in the contract: no control characters (Cc) and
# at least one character that is not white space. (Rust's and Python's \s agree
# outside Cc.)
_NOT_CC = r"\x00-\x1f\x7f-\x9f"
_QUERY_PATTERN = rf"^[^{_NOT_CC}]*[^\s{_NOT_CC}][^{_NOT_CC}]*$"


class SearchQuery(BaseModel):
    """The query string of `GET /search`. Unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    query: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            pattern=_QUERY_PATTERN,
            description="Case-insensitive substring of the file name.",
        ),
    ]
    fanout: Annotated[
        int | None, Field(ge=0, le=32, description="Neighbours to ask (clamped by the peer).")
    ] = None
    ttl: Annotated[
        int | None, Field(ge=0, le=16, description="Hops the query may still travel.")
    ] = None
    timeout_ms: Annotated[
        int | None, Field(ge=1, le=_MAX_TIMEOUT_MS, description="Deadline for the answer.")
    ] = None
    qid: Annotated[
        str | None,
        Field(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="Query id (set by forwarding peers)."),
    ] = None
    sender: Annotated[
        str | None, Field(pattern=_PEER_ID_PATTERN, description="Peer id of the forwarding peer.")
    ] = None


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """`model`'s fields as OpenAPI query parameters, as FastAPI writes them for `Query()`."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if not (k == "default" and v is None)}
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameter["schema"] = prop
        parameters.append(parameter)
    return parameters


def _read_query(request: Request) -> SearchQuery:
    try:
        # The last value wins for a repeated parameter, as with FastAPI's Query().
        return SearchQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [{**err, "loc": ("query", *err["loc"])} for err in exc.errors()]
        raise RequestValidationError(errors) from None


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
    openapi_extra={"parameters": query_parameters(SearchQuery)},
)
async def search(request: Request) -> Response:
    """Search this peer's index, then forward to up to `fanout` known peers.

    A peer that fails or times out never fails the search: it is listed in
    `peers_failed` and `partial` is true.
    """
    node = node_of(request)
    check_rate_limit(request, node)
    args = _read_query(request)
    if args.sender or args.qid:  # a forwarded search: peers only
        check_peer_token(request, node)
    settings = node.settings
    fanout, ttl, timeout_ms = args.fanout, args.ttl, args.timeout_ms
    params = SearchParams(
        query=_check_query(args.query),
        fanout=min(settings.default_fanout if fanout is None else fanout, settings.max_fanout),
        ttl=min(settings.default_ttl if ttl is None else ttl, settings.max_ttl),
        timeout_s=(settings.search_timeout_ms if timeout_ms is None else timeout_ms) / 1000,
        query_id=args.qid or new_query_id(),
        sender=args.sender or None,
    )
    answer = await node.router.search(params)
    # The same JSON FastAPI would write for `response_model=SearchResponse`, without
    # validating our own answer a second time (bench/: ~5% of a search's CPU).
    return Response(answer.model_dump_json(), media_type="application/json")
