"""The REST contract of the directory service, as pydantic models.

The directory serves these (they are its OpenAPI schema at /docs) and the typed
client parses them, so both sides share one definition.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ADAPTIVE_SEARCH_TIMEOUT_MS",
    "CHALLENGE_HEADER",
    "CHALLENGE_HEADER_PATTERN",
    "CHALLENGE_PATTERN",
    "DEFAULT_SEARCH_BUDGET",
    "DEFAULT_WALK_TTL",
    "KEY_ID_PATTERN",
    "MAX_BUDGET_PARAM",
    "MAX_FANOUT_PARAM",
    "MAX_OVERLAY_ENTRIES",
    "MAX_OVERLAY_WALK",
    "MAX_QUERY_LENGTH",
    "MAX_SEARCH_BUDGET",
    "MAX_TIMEOUT_MS",
    "MAX_TTL_PARAM",
    "MAX_WALK_TTL",
    "OVERLAY_KINDS",
    "PEER_ID_PATTERN",
    "QUERY_ID_PATTERN",
    "SEARCH_MODES",
    "SKIP_REASONS",
    "VISITED_BITS",
    "BloomDoc",
    "BootstrapResponse",
    "Disconnect",
    "ErrorResponse",
    "FailedPeer",
    "FileInfo",
    "FilesResponse",
    "ForwardJoin",
    "HealthResponse",
    "IndexHealth",
    "Neighbor",
    "OverlayAnswer",
    "OverlayMessage",
    "OverlayRequest",
    "PeerInfo",
    "PeerRef",
    "PeerState",
    "PeersResponse",
    "Ping",
    "Proof",
    "RegisterRequest",
    "RegisterResponse",
    "SearchHit",
    "SearchMode",
    "SearchRequest",
    "SearchResponse",
    "Shuffle",
    "ShuffleReply",
    "SkipReason",
    "Skipped",
    "SummaryDoc",
    "TraceNode",
    "TransferHealth",
    "validate_http_url",
]

MAX_QUERY_LENGTH = 256
MAX_FANOUT_PARAM = 32
MAX_TTL_PARAM = 16
MAX_TIMEOUT_MS = 60000
PEER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""What a peer id looks like, everywhere one is read (health answers, search senders)."""
QUERY_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
CHALLENGE_HEADER = "X-Peerfind-Challenge"
"""A nonce sent with `/health`, `/register` and `/overlay`: the answer then carries a
`proof` that its peer id's key signed it (directory.identity)."""
CHALLENGE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
CHALLENGE_HEADER_PATTERN = r"^(?:[A-Za-z0-9_-]{16,64})?$"
"""The header as sent: a challenge, or empty (no challenge)."""
KEY_ID_PATTERN = r"^[a-z2-7]{52}$"
MAX_BUDGET_PARAM = 100000
DEFAULT_SEARCH_BUDGET = 1024
"""Messages (requests plus answers) a walk or a dynamic query may cost unless asked."""
MAX_SEARCH_BUDGET = 4096
"""The clamp on every query's budget (the largest flood of docs/scale.md fits)."""
DEFAULT_WALK_TTL = 10
MAX_WALK_TTL = 16
ADAPTIVE_SEARCH_TIMEOUT_MS = 5000
"""A walk's or a dynamic query's deadline unless one is asked for (a flood's is the peer's
`search_timeout_ms`): they go on, walker after walker or neighbour after neighbour, until
enough is found."""
VISITED_BITS = 4096
"""Size of the visited-peers filter a search carries (`visited`, base64url, no padding)."""
_VISITED_PATTERN = r"^[A-Za-z0-9_-]{683}$"
SEARCH_MODES = ("auto", "flood", "walk", "dynamic")
SearchMode = Literal["auto", "flood", "walk", "dynamic"]
SKIP_REASONS = ("summary_miss", "visited", "budget", "down", "not_chosen")
SkipReason = Literal["summary_miss", "visited", "budget", "down", "not_chosen"]
# A query has no control characters (Cc) and at least one character that is not white
# space; lone surrogates (Cs) are refused by pydantic's str itself. (Rust's and
# Python's \s agree outside Cc.)
_NOT_CC = r"\x00-\x1f\x7f-\x9f"
_QUERY_PATTERN = rf"^[^{_NOT_CC}]*[^\s{_NOT_CC}][^{_NOT_CC}]*$"
PeerState = Literal["alive", "suspect", "down"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Proof(_Model):
    """An Ed25519 signature by the answering peer's key over the caller's challenge and
    the answer's `peer_id`, `url` and `grpc_address` (docs/architecture.md, "Identity")."""

    key: str = Field(
        pattern=r"^[A-Za-z0-9_-]{43}$", description="The raw public key, base64url (32 bytes)."
    )
    signature: str = Field(
        pattern=r"^[A-Za-z0-9_-]{86}$", description="The signature, base64url (64 bytes)."
    )


def validate_http_url(value: str) -> str:
    """Return `value` without a trailing slash if it is an absolute http(s) URL.

    Raises ValueError otherwise. Paths, queries and fragments are refused: a peer
    is addressed by scheme, host and port only.
    """
    value = value.strip()
    if len(value) > 2048:
        raise ValueError("URL longer than 2048 characters")
    # urlsplit silently drops tabs and newlines, so it would check another URL than
    # the one stored and later used (httpx refuses those characters outright).
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("URL must not contain white space or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if "@" in parts.netloc:
        raise ValueError("URL must not carry credentials")
    if parts.path not in ("", "/") or "?" in value or "#" in value:
        raise ValueError("URL must be scheme://host[:port] with no path, query or fragment")
    if port == 0:
        raise ValueError("URL port must be 1-65535")
    return value.rstrip("/")


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
    key_id: str = Field(
        "",
        description="Fingerprint of this peer's identity key (base32 of its SHA-256): what "
        "holds `peer_id` at the peers that know it.",
    )
    proof: Proof | None = Field(
        None, description=f"Present when the request carried `{CHALLENGE_HEADER}`."
    )


class RegisterRequest(_Model):
    url: str = Field(min_length=1, max_length=2048, description="REST URL of the peer to register.")


class PeerInfo(_Model):
    peer_id: str
    url: str
    grpc_address: str = ""
    state: PeerState
    last_seen: float = Field(description="Epoch seconds of the last successful contact.")
    friend: bool = Field(description="Configured as this peer's primary or backup friend.")
    key_id: str = Field("", description="Fingerprint of the key that proved this peer's id.")


class RegisterResponse(_Model):
    registered: PeerInfo = Field(description="The peer just registered, as verified.")
    peer_id: str = Field(description="Id of the peer that accepted the registration.")
    url: str = Field(description="REST URL of the peer that accepted the registration.")
    grpc_address: str = ""
    peers: list[PeerInfo] = Field(
        description="The accepting peer's active view (the newcomer's first passive entries)."
    )
    proof: Proof | None = Field(
        None,
        description=f"The accepting peer's proof, when the request carried `{CHALLENGE_HEADER}`.",
    )


class BootstrapResponse(_Model):
    ok: bool
    friend: str | None = Field(description="URL of the friend that accepted us, if any.")
    friend_peer_id: str | None = None
    tried: list[str] = Field(description="Friend URLs tried, in order.")
    errors: list[str] = Field(default_factory=list, description="Why each failed friend failed.")
    learned: int = Field(0, description="Peers the friend offered for the passive view.")


MAX_OVERLAY_ENTRIES = 32
"""Most peer entries one overlay message may carry (a shuffle sends 1 + ka + kp)."""
MAX_OVERLAY_WALK = 16


class PeerRef(_Model):
    """A peer as the overlay passes it around: an id and a REST URL, not yet verified.

    The URL's shape is checked by the receiving peer (`validate_http_url`: 400
    `invalid_url`), as `/register`'s is: whether it names a peer is a fact about the
    network, not about the request."""

    peer_id: str = Field(pattern=PEER_ID_PATTERN)
    url: str = Field(min_length=1, max_length=2048)


class PeersResponse(_Model):
    peer_id: str
    peers: list[PeerInfo] = Field(
        description="The active view: the neighbours this peer searches through and pings."
    )
    passive: list[PeerRef] = Field(
        default_factory=list,
        description="The passive view: peers known but not connected, the replacements "
        "for neighbours that fail (learned second-hand; verified only when promoted).",
    )
    active_size: int = Field(0, description="Bound on the active view.")
    passive_size: int = Field(0, description="Bound on the passive view.")


class ForwardJoin(_Model):
    """A newcomer's join on its random walk: the peer where it ends takes it in."""

    kind: Literal["forward_join"]
    new: PeerRef
    ttl: int = Field(ge=0, le=MAX_OVERLAY_WALK)
    sender: PeerRef


class Neighbor(_Model):
    """`peer` asks to become a neighbour; `high` (its view is empty) cannot be refused."""

    kind: Literal["neighbor"]
    peer: PeerRef
    high: bool


class Ping(_Model):
    """A neighbour checks we are alive, and still hold it as a neighbour (`accepted`)."""

    kind: Literal["ping"]
    peer: PeerRef


class Disconnect(_Model):
    """`peer` moved us to its passive view."""

    kind: Literal["disconnect"]
    peer: PeerRef


class Shuffle(_Model):
    """A sample of `origin`'s views on a random walk; the peer at its end answers."""

    kind: Literal["shuffle"]
    origin: PeerRef
    entries: list[PeerRef] = Field(max_length=MAX_OVERLAY_ENTRIES)
    ttl: int = Field(ge=0, le=MAX_OVERLAY_WALK)
    sender: PeerRef


class ShuffleReply(_Model):
    """The end of a shuffle's walk answers its origin with as many entries of its own."""

    kind: Literal["shuffle_reply"]
    peer: PeerRef
    entries: list[PeerRef] = Field(max_length=MAX_OVERLAY_ENTRIES)


OverlayMessage = Annotated[
    ForwardJoin | Neighbor | Ping | Disconnect | Shuffle | ShuffleReply,
    Field(discriminator="kind"),
]
OVERLAY_KINDS = (
    "join", "forward_join", "neighbor", "ping", "disconnect", "shuffle", "shuffle_reply"
)  # fmt: skip
"""Every membership message by kind (`join` is POST /register, the others POST /overlay)."""


class OverlayRequest(_Model):
    """The body of `POST /overlay`: one HyParView message."""

    message: OverlayMessage


class OverlayAnswer(_Model):
    """`POST /overlay`'s answer: who answered, and for `neighbor`, whether it accepted."""

    kind: str
    peer_id: str
    url: str
    grpc_address: str = ""
    accepted: bool | None = Field(
        None,
        description="`neighbor`: taken as a neighbour; `ping`: the pinger is still one.",
    )
    proof: Proof | None = Field(
        None,
        description=f"The answering peer's proof, when the request carried `{CHALLENGE_HEADER}`.",
    )


class FileInfo(_Model):
    name: str
    path: str = Field(description="Path relative to the shared folder.")
    size: int
    mtime: float
    peer_id: str
    rest_url: str = Field(description="Owner's REST URL.")
    grpc_address: str = Field(description="Owner's gRPC address for Download.")
    sha256: str | None = Field(
        None,
        description="Hex SHA-256 of the content; null until the owner's indexer has hashed it.",
    )
    content_url: str = Field(
        "",
        description="The owner's HTTP URL of this file's bytes (`GET`, `Range` supported), "
        "for a browser or curl: `/files/{name}/content?path={path}`, both percent-encoded.",
    )


class FilesResponse(_Model):
    peer_id: str
    files: list[FileInfo]
    total: int = Field(description="Files in the whole index.")
    next_after: str | None = Field(description="Pass as `after` for the next page, if any.")


class SearchRequest(BaseModel):
    """The query string of `GET /search`, for every side: the client that writes it, the
    route that reads it, the peer that forwards it, and the metrics that count it.

    Unknown parameters are ignored. `qid` and `sender` are set only by forwarding peers:
    a request with either is a forwarded search (`is_forwarded`), authenticated and
    counted as one.
    """

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
        int | None,
        Field(ge=0, le=MAX_FANOUT_PARAM, description="Neighbours to ask (clamped by the peer)."),
    ] = None
    ttl: Annotated[
        int | None,
        Field(ge=0, le=MAX_TTL_PARAM, description="Hops the query may still travel."),
    ] = None
    timeout_ms: Annotated[
        int | None, Field(ge=1, le=MAX_TIMEOUT_MS, description="Deadline for the answer.")
    ] = None
    qid: Annotated[
        str | None,
        Field(pattern=QUERY_ID_PATTERN, description="Query id (set by forwarding peers)."),
    ] = None
    sender: Annotated[
        str | None,
        Field(pattern=PEER_ID_PATTERN, description="Peer id of the forwarding peer."),
    ] = None
    mode: Annotated[
        SearchMode | None,
        Field(
            description="How the query travels: `flood` (every hop to `fanout` neighbours), "
            "`walk` (`fanout` random walkers of up to `ttl` hops, steered by summaries, sent "
            "in waves while results are short), `dynamic` (a summary-guided probe, then one "
            "neighbour at a time with a growing TTL), `auto` (the peer's choice, see "
            "docs/scale.md)."
        ),
    ] = None
    max_results: Annotated[
        int | None,
        Field(
            ge=1,
            le=100000,
            description="Stop once this many hits are in (walk, dynamic); also caps the hits "
            "returned.",
        ),
    ] = None
    budget: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_BUDGET_PARAM,
            description="Messages (requests plus answers) the query may cost below this peer "
            "(clamped by the peer).",
        ),
    ] = None
    visited: Annotated[
        str | None,
        Field(
            pattern=_VISITED_PATTERN,
            description="Peers the query has been to (a Bloom filter; set by forwarding peers).",
        ),
    ] = None
    explain: Annotated[bool | None, Field(description="Answer with the hop tree (`trace`).")] = None

    @property
    def is_forwarded(self) -> bool:
        """True for a search forwarded by a peer (it carries a query id or a sender)."""
        return self.qid is not None or self.sender is not None

    def to_params(self) -> dict[str, str | int]:
        """The query string that `SearchRequest.model_validate` reads back: set fields only
        (a bool as "true" or "false": HTTP clients disagree on how to write one)."""
        return {
            k: ("true" if v else "false") if isinstance(v, bool) else v
            for k, v in self.__dict__.items()
            if v is not None
        }


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
    mode: SearchMode = Field("flood", description="The mode the query ran in.")
    messages: int = Field(
        0, description="Messages (requests plus answers) the query cost below this peer."
    )
    visited: str | None = Field(
        None, description="Peers the query went to below this peer (the `visited` filter)."
    )
    trace: TraceNode | None = Field(None, description="The hop tree, with `explain=true`.")


class Skipped(_Model):
    peer_id: str
    reason: SkipReason


class TraceNode(_Model):
    """One peer in the hop tree of an explained search."""

    peer_id: str
    ttl: int = Field(description="Hops the query had left on arrival.")
    hits: int = Field(description="Local hits of this peer.")
    duplicate: bool = False
    error: str | None = Field(None, description="Why the forward to this peer failed.")
    children: list[TraceNode] = Field(default_factory=list)
    skipped: list[Skipped] = Field(
        default_factory=list, description="Neighbours not asked, and why."
    )


class BloomDoc(_Model):
    bits: int = Field(ge=8, le=1 << 24, description="m, a power of two.")
    hashes: int = Field(ge=1, le=16, description="k, probes per trigram.")
    data: str = Field(
        max_length=(1 << 24) // 6 + 4, description="The m bits, little-endian, base64."
    )


class SummaryDoc(_Model):
    """`GET /summary`: a Bloom filter of the trigrams of this peer's file names (`own`),
    and the union of it with its neighbours' (`merged`)."""

    peer_id: str
    version: str = Field(description="Changes with either filter; also the ETag.")
    own: BloomDoc
    merged: BloomDoc
