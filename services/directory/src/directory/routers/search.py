"""GET /search: local lookup, then forwards as the query's mode decides.

The hottest route of a peer (every search reaches it once per peer on its way), so
it reads its query string in one pass: `peerfind.api.SearchRequest` validates every
parameter in a single pydantic call, where FastAPI's per-parameter solving and two
dependencies cost more than the rest of the route (docs/benchmarks.md, "search path").
The OpenAPI contract is generated from the same model, so it is what FastAPI would
have written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from directory import metrics
from directory.deps import check_peer_token, check_rate_limit, node_of
from peerfind.api import ErrorResponse, SearchRequest, SearchResponse
from peerfind.metrics import Children

__all__ = ["read_search_request", "router"]

router = APIRouter(tags=["search"])
_SEARCH_MESSAGES = Children(metrics.SEARCH_MESSAGES)


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


async def _hung_up(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_hung_up(
    request: Request, search: Coroutine[Any, Any, SearchResponse]
) -> SearchResponse | None:
    """`search`'s answer, or None (and `search` cancelled) if the client hangs up first."""
    task = asyncio.ensure_future(search)
    watch = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(watch, task, return_exceptions=True)
    return None if task.cancelled() else task.result()


def read_search_request(request: Request) -> SearchRequest:
    """The query string as a SearchRequest; a 422 naming the parameter when invalid."""
    try:
        # The last value wins for a repeated parameter, as with FastAPI's Query().
        return SearchRequest.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [{**err, "loc": ("query", *err["loc"])} for err in exc.errors()]
        raise RequestValidationError(errors) from None


@router.get(
    "/search",
    response_model=SearchResponse,
    responses={code: {"model": ErrorResponse} for code in (401, 422, 429)},
    openapi_extra={"parameters": query_parameters(SearchRequest)},
)
async def search(request: Request) -> Response:
    """Search this peer's index, then forward to up to `fanout` known peers.

    A peer that fails or times out never fails the search: it is listed in
    `peers_failed` and `partial` is true.
    """
    node = node_of(request)
    args = read_search_request(request)
    if args.is_forwarded:  # peers only: the token first, then the peers' rate budget
        check_peer_token(request, node)
    check_rate_limit(request, node, forwarded=args.is_forwarded)
    params = node.search_policy.params(args)
    if params.mode == "walk" and params.forwarded:
        # A walker is called back by hanging up on it: stop walking when our asker does.
        found = await _unless_hung_up(request, node.router.search(params))
        if found is None:
            return Response(status_code=499)  # nobody is listening (nginx's "closed")
        answer = found
    else:
        answer = await node.router.search(params)
    if not args.is_forwarded:  # what a client's search cost the network, by mode
        _SEARCH_MESSAGES(answer.mode).observe(answer.messages)
    # The same JSON FastAPI would write for `response_model=SearchResponse`, without
    # validating our own answer a second time (docs/benchmarks.md, "search path").
    return Response(answer.model_dump_json(), media_type="application/json")
