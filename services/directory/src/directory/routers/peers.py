"""Membership: POST /register, POST /bootstrap, GET /peers."""

from __future__ import annotations

from fastapi import APIRouter

from directory.deps import NodeDep, PeerAuth, RateLimited
from directory.errors import ApiError
from directory.membership import RegistrationError
from peerfind.api import (
    BootstrapResponse,
    ErrorResponse,
    PeersResponse,
    RegisterRequest,
    RegisterResponse,
)

router = APIRouter(tags=["peers"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 409, 422, 429, 503)
}


@router.post(
    "/register",
    response_model=RegisterResponse,
    responses=_ERRORS,
    dependencies=[RateLimited, PeerAuth],
)
async def register(body: RegisterRequest, node: NodeDep) -> RegisterResponse:
    """Register a remote peer after checking that its URL answers `/health` as a peer.

    Answers with the peers this peer knows, so newcomers learn the network.
    """
    try:
        return await node.membership.welcome(body.url)
    except RegistrationError as exc:
        raise ApiError(exc.status, exc.reason, exc.detail) from None


@router.post(
    "/bootstrap",
    response_model=BootstrapResponse,
    responses={code: {"model": ErrorResponse} for code in (401, 429)},
    dependencies=[RateLimited, PeerAuth],
)
async def bootstrap(node: NodeDep) -> BootstrapResponse:
    """Register this peer with its primary friend, or its backup if the primary fails."""
    return await node.membership.bootstrap()


@router.get("/peers", response_model=PeersResponse)
async def peers(node: NodeDep) -> PeersResponse:
    """Known peers with their state and when they were last seen."""
    return PeersResponse(
        peer_id=node.settings.peer_id, peers=[p.info() for p in node.table.peers()]
    )
