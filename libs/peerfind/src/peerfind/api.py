"""The REST contract of the directory service, as pydantic models.

The directory serves these (they are its OpenAPI schema at /docs) and the typed
client parses them, so both sides share one definition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_QUERY_LENGTH",
    "BootstrapResponse",
    "ErrorResponse",
    "FailedPeer",
    "FileInfo",
    "FilesResponse",
    "HealthResponse",
    "IndexHealth",
    "PeerInfo",
    "PeerState",
    "PeersResponse",
    "RegisterRequest",
    "RegisterResponse",
    "SearchHit",
    "SearchResponse",
    "TransferHealth",
]

MAX_QUERY_LENGTH = 256
PeerState = Literal["alive", "suspect", "down"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(_Model):
    """Body of every error answer: 4xx for bad input, 5xx when the peer cannot serve."""

    error: str = Field(description="Machine-readable error kind, e.g. `invalid_request`.")
    detail: str = Field(description="One line for a human.")


class IndexHealth(_Model):
    available: bool = Field(description="The index database exists and is readable.")
    files: int
    bytes: int
    last_scan_at: float = Field(description="Epoch seconds of the last full scan (0: never).")
    age_s: float | None = Field(description="Seconds since the indexer's last heartbeat.")
    stale: bool = Field(description="True when the indexer has not been heard from lately.")


class TransferHealth(_Model):
    address: str = Field(description="Where the directory reaches the local transfer service.")
    serving: bool = Field(description="The transfer service answers its gRPC health check.")


class HealthResponse(_Model):
    status: Literal["ok", "degraded"]
    peer: str = Field(description="This peer's id (the seed's `{status, peer}`).")
    peer_id: str
    url: str = Field(description="This peer's REST URL as other peers reach it.")
    grpc_address: str = Field(description="Where clients reach this peer's gRPC service.")
    version: str
    uptime_s: float
    peers: int = Field(description="Peers currently in the table.")
    index: IndexHealth
    transfer: TransferHealth


class RegisterRequest(_Model):
    url: str = Field(min_length=1, max_length=2048, description="REST URL of the peer to register.")


class PeerInfo(_Model):
    peer_id: str
    url: str
    grpc_address: str = ""
    state: PeerState
    last_seen: float = Field(description="Epoch seconds of the last successful contact.")
    friend: bool = Field(description="Configured as this peer's primary or backup friend.")


class RegisterResponse(_Model):
    registered: PeerInfo = Field(description="The peer just registered, as verified.")
    peer_id: str = Field(description="Id of the peer that accepted the registration.")
    url: str = Field(description="REST URL of the peer that accepted the registration.")
    grpc_address: str = ""
    peers: list[PeerInfo] = Field(description="Peers the accepting peer knows.")


class BootstrapResponse(_Model):
    ok: bool
    friend: str | None = Field(description="URL of the friend that accepted us, if any.")
    friend_peer_id: str | None = None
    tried: list[str] = Field(description="Friend URLs tried, in order.")
    errors: list[str] = Field(default_factory=list, description="Why each failed friend failed.")
    learned: int = Field(0, description="Peers learned from the friend's answer.")


class PeersResponse(_Model):
    peer_id: str
    peers: list[PeerInfo]


class FileInfo(_Model):
    name: str
    path: str = Field(description="Path relative to the shared folder.")
    size: int
    mtime: float
    peer_id: str
    rest_url: str = Field(description="Owner's REST URL.")
    grpc_address: str = Field(description="Owner's gRPC address for DummyDownload.")


class FilesResponse(_Model):
    peer_id: str
    files: list[FileInfo]
    total: int = Field(description="Files in the whole index.")
    next_after: str | None = Field(description="Pass as `after` for the next page, if any.")


class SearchHit(FileInfo):
    """A file found by a search, named by its owner."""


class FailedPeer(_Model):
    peer_id: str
    url: str
    error: str


class SearchResponse(_Model):
    query: str
    query_id: str
    peer_id: str = Field(description="The peer that answered (the entry point).")
    hits: list[SearchHit]
    peers_answered: list[str] = Field(description="Peer ids whose results are included.")
    peers_failed: list[FailedPeer]
    partial: bool = Field(description="True when some peer failed or the deadline cut it.")
    truncated: bool = Field(description="True when hits were capped at the result limit.")
    duplicate: bool = Field(
        False,
        description="This peer had already seen the query id: it answered from its "
        "local index only and did not forward the query again.",
    )
    took_ms: float
