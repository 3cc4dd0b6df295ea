"""Forwarded searches: a `SearchParams` sent to a neighbour's `GET /search`."""

from __future__ import annotations

from directory.auth import PeerAuth
from directory.peers import Peer
from directory.search import SearchParams
from directory.transport import PeerCallError, PeerHttp
from peerfind.api import SearchResponse

__all__ = ["SearchForwarder"]


class SearchForwarder:
    """The router's `forward`: one request, bounded by the router's hop budget."""

    def __init__(self, http: PeerHttp, auth: PeerAuth, *, max_answer_bytes: int | None = None):
        self.http = http
        self.auth = auth
        self.max_answer_bytes = max_answer_bytes

    async def __call__(self, peer: Peer, params: SearchParams) -> SearchResponse:
        # No deadline of its own: SearchRouter._forward_within bounds each forward.
        answer = await self.http.request(
            "GET",
            f"{peer.url}/search",
            params=params.to_request().to_params(),
            headers=self.auth.headers,
            max_bytes=self.max_answer_bytes,
        )
        if answer.status != 200:
            raise PeerCallError(f"HTTP {answer.status}")
        return SearchResponse.model_validate_json(answer.body)
