"""GET /health: liveness of this peer, its index and its transfer service."""

from __future__ import annotations

from fastapi import APIRouter

from directory.deps import ChallengeDep, NodeDep
from peerfind.api import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health(node: NodeDep, challenge: ChallengeDep) -> HealthResponse:
    """`status` is `ok`, or `degraded` when the index is stale or transfer is down.
    With an identity challenge, the answer carries this peer's `proof`."""
    answer = await node.health()
    answer.proof = node.membership.prove(challenge)
    return answer
