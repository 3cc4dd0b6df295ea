"""Membership: POST /register (join), POST /overlay, POST /bootstrap, GET /peers."""

from __future__ import annotations

from fastapi import APIRouter

from directory.deps import ChallengeDep, NodeDep, PeerAuth, PeerTraffic, RateLimited
from directory.errors import ApiError
from directory.membership import RegistrationError
from peerfind.api import (
    BootstrapResponse,
    ErrorResponse,
    OverlayAnswer,
    OverlayRequest,
    PeerRef,
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
async def register(
    body: RegisterRequest, node: NodeDep, challenge: ChallengeDep
) -> RegisterResponse:
    """A peer joins through this one (HyParView's JOIN), after its URL answered `/health`
    as a peer. It becomes a neighbour (a full active view makes room: one neighbour moves
    to the passive view), and the join walks on through the overlay.

    Answers with this peer's active view: the newcomer's first passive entries.
    """
    try:
        return await node.membership.welcome(body.url, challenge)
    except RegistrationError as exc:
        raise ApiError(exc.status, exc.reason, exc.detail) from None


@router.post(
    "/overlay",
    response_model=OverlayAnswer,
    responses=_ERRORS,
    dependencies=[PeerTraffic],
)
async def overlay(body: OverlayRequest, node: NodeDep, challenge: ChallengeDep) -> OverlayAnswer:
    """One overlay message from another peer: `forward_join`, `neighbor`, `disconnect`,
    `shuffle` or `shuffle_reply` (docs/architecture.md, "Membership"). A `neighbor` request
    is verified (its URL must answer `/health` with its id) and answered with `accepted`;
    the others are taken in and handled in the background.
    """
    try:
        return await node.membership.receive(body.message, challenge)
    except RegistrationError as exc:
        raise ApiError(exc.status, exc.reason, exc.detail) from None


@router.post(
    "/bootstrap",
    response_model=BootstrapResponse,
    responses={code: {"model": ErrorResponse} for code in (401, 429)},
    dependencies=[RateLimited, PeerAuth],
)
async def bootstrap(node: NodeDep) -> BootstrapResponse:
    """Join the overlay through the primary friend, or the backup if the primary fails."""
    return await node.membership.bootstrap()


@router.get("/peers", response_model=PeersResponse)
async def peers(node: NodeDep) -> PeersResponse:
    """Both overlay views: `peers`, the active view (neighbours, with their state and when
    they last answered), and `passive`, the peers known as replacements."""
    overlay = node.membership.overlay
    return PeersResponse(
        peer_id=node.settings.peer_id,
        peers=[p.info() for p in node.table.peers()],
        passive=[
            PeerRef.model_construct(peer_id=p.peer_id, url=p.url)
            for p in sorted(overlay.passive.values(), key=lambda p: p.peer_id)
        ],
        active_size=overlay.config.active_size,
        passive_size=overlay.config.passive_size,
    )
