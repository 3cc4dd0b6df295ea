"""FastAPI dependencies, as `Annotated` aliases, and the checks they run."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from directory.auth import TOKEN_HEADER
from directory.errors import ApiError
from directory.node import Node
from peerfind.api import CHALLENGE_HEADER, CHALLENGE_HEADER_PATTERN

__all__ = [
    "ChallengeDep",
    "NodeDep",
    "PeerAuth",
    "PeerTraffic",
    "RateLimited",
    "check_peer_token",
    "check_rate_limit",
    "node_of",
]


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def _node(request: Request) -> Node:
    return node_of(request)


NodeDep = Annotated[Node, Depends(_node)]


def check_rate_limit(request: Request, node: Node, *, forwarded: bool = False) -> None:
    """Refuse (429) a client past its request budget; forwarded searches have their own."""
    client = request.client.host if request.client else "unknown"
    limiter = node.forward_limiter if forwarded else node.limiter
    wait = limiter.acquire(client)
    if wait > 0:
        retry = limiter.retry_after(wait)
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests from {client}; retry in {retry} s",
            headers={"Retry-After": retry},
        )


async def _rate_limited(request: Request, node: NodeDep) -> None:
    check_rate_limit(request, node)


def check_peer_token(request: Request, node: Node) -> None:
    """Refuse a peer-to-peer call without the cluster token (when one is configured)."""
    if not node.auth.accepts(request.headers.get(TOKEN_HEADER)):
        raise ApiError(401, "unauthorized", f"missing or wrong {TOKEN_HEADER} header")


async def _peer_auth(request: Request, node: NodeDep) -> None:
    check_peer_token(request, node)


async def _peer_traffic(request: Request, node: NodeDep) -> None:
    check_peer_token(request, node)  # the token first: the larger budget is for peers
    check_rate_limit(request, node, forwarded=True)


RateLimited = Depends(_rate_limited)
PeerAuth = Depends(_peer_auth)
PeerTraffic = Depends(_peer_traffic)
"""Token, then the peers' (larger) rate budget: overlay messages."""


async def _challenge(
    challenge: Annotated[
        str,
        Header(
            alias=CHALLENGE_HEADER,
            pattern=CHALLENGE_HEADER_PATTERN,
            description="A nonce: the answer then carries `proof`, this peer's signature "
            "over it and its own peer_id, url and grpc_address (422 if malformed; empty or "
            "absent: no proof).",
        ),
    ] = "",
) -> str | None:
    return challenge or None


ChallengeDep = Annotated[str | None, Depends(_challenge)]
"""The caller's identity challenge, if it sent one (422 `invalid_request` if malformed)."""
