"""Prometheus metrics of the directory service, defined once.

Names follow `peerfind_directory_<what>_<unit>`; they are served on the REST
port at /metrics together with the process and Python collectors. Label values
known in advance are created up front: every series exists (at 0) from the
start, so rate() and increase() also count its first increment.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from directory.summary import SummaryEvents
from peerfind.api import OVERLAY_KINDS
from peerfind.metrics import Children

__all__ = [
    "CONNECTIONS_CLOSED",
    "CONNECTION_CLOSE_REASONS",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "IDENTITY_CHECKS",
    "IDENTITY_OUTCOMES",
    "MEMBERSHIP_MESSAGES",
    "OVERLAY_FAILURES",
    "OVERLAY_REPLACEMENTS",
    "OVERLAY_SHUFFLES",
    "OVERLAY_VIEW",
    "PEERS",
    "PEER_STATES",
    "REGISTRATIONS",
    "SEARCHES_ANSWERED",
    "SEARCHES_RECEIVED",
    "SEARCH_DUPLICATES",
    "SEARCH_DURATION",
    "SEARCH_FORWARDS",
    "SEARCH_FORWARD_FAILURES",
    "SEARCH_HITS",
    "SEARCH_MESSAGES",
    "SEARCH_MODES",
    "SEARCH_OUTCOMES",
    "SEARCH_PEERS_FAILED",
    "SEARCH_ROLES",
    "SUMMARY_BITS",
    "SUMMARY_FETCHES",
    "SUMMARY_FETCH_OUTCOMES",
    "SUMMARY_REBUILD_DURATION",
    "SearchMetrics",
    "SummaryMetrics",
]

SEARCH_ROLES = ("entry", "forwarded")
SEARCH_OUTCOMES = ("complete", "partial")
PEER_STATES = ("alive", "suspect", "down")
CONNECTION_CLOSE_REASONS = ("per_client_cap", "header_timeout")
SEARCH_MODES = ("flood", "walk", "dynamic")  # what an entry runs (`auto` is one of them)
SUMMARY_FETCH_OUTCOMES = ("changed", "unchanged", "refused", "failed")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

CONNECTIONS_CLOSED = Counter(
    "peerfind_directory_connections_closed_total",
    "REST connections the server closed itself (connguard.py): per_client_cap (a 429 on "
    "a connection past rest_max_connections_per_client), header_timeout (no complete "
    "request headers within rest_header_timeout_s).",
    ["reason"],
)
for _reason in CONNECTION_CLOSE_REASONS:
    CONNECTIONS_CLOSED.labels(_reason)

HTTP_REQUESTS = Counter(
    "peerfind_directory_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "peerfind_directory_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status code.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
SEARCHES_RECEIVED = Counter(
    "peerfind_directory_searches_received_total",
    "Searches received; role=entry from a client, role=forwarded from a peer.",
    ["role"],
)
SEARCH_FORWARDS = Counter(
    "peerfind_directory_search_forwards_total",
    "Searches this peer forwarded to neighbours (one per neighbour).",
)
SEARCH_FORWARD_FAILURES = Counter(
    "peerfind_directory_search_forward_failures_total",
    "Forwarded searches that failed or missed their deadline.",
)
SEARCHES_ANSWERED = Counter(
    "peerfind_directory_searches_answered_total",
    "Searches answered (duplicates excluded), by role and outcome: complete, or partial "
    "when some peer failed or missed the deadline.",
    ["role", "outcome"],
)
SEARCH_DUPLICATES = Counter(
    "peerfind_directory_search_duplicates_total",
    "Forwarded searches whose query id was already seen: answered from the local index, "
    "not forwarded again.",
)
SEARCH_HITS = Counter(
    "peerfind_directory_search_hits_total",
    "Hits returned in search answers.",
)
SEARCH_PEERS_FAILED = Histogram(
    "peerfind_directory_search_peers_failed",
    "Peers listed as failed per answered search.",
    buckets=(0, 1, 2, 4, 8, 16),
)
SEARCH_DURATION = Histogram(
    "peerfind_directory_search_duration_seconds",
    "End-to-end time to answer a search (local plus neighbours), by role.",
    ["role"],
    buckets=_LATENCY_BUCKETS,
)
SEARCH_MESSAGES = Histogram(
    "peerfind_directory_search_messages",
    "Messages (requests plus answers) an entry search cost the network, by the mode it ran.",
    ["mode"],
    buckets=(0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
SUMMARY_FETCHES = Counter(
    "peerfind_directory_summary_fetches_total",
    "Neighbours' routing summaries fetched (GET /summary with If-None-Match), by outcome: "
    "changed (a new one taken), unchanged (304), refused (malformed or oversized: the "
    "neighbour then has none), failed (unreachable, timed out or an error status).",
    ["outcome"],
)
SUMMARY_BITS = Gauge(
    "peerfind_directory_summary_bits",
    "Size of this peer's own routing summary (a Bloom filter of its names' trigrams), in bits.",
)
SUMMARY_REBUILD_DURATION = Histogram(
    "peerfind_directory_summary_rebuild_seconds",
    "Time to rebuild this peer's own routing summary after its index changed (names read "
    "and filter built).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PEERS = Gauge(
    "peerfind_directory_peers",
    "Neighbours (the active view) by state: alive, or suspect after a failed search.",
    ["state"],
)
REGISTRATIONS = Counter(
    "peerfind_directory_registrations_total",
    "Registrations received, by result (accepted, refused) and reason.",
    ["result", "reason"],
)
MEMBERSHIP_MESSAGES = Counter(
    "peerfind_directory_membership_messages_total",
    "Membership messages by kind (join, forward_join, neighbor, ping, disconnect, shuffle, "
    "shuffle_reply) and direction (sent: delivered to a peer; received).",
    ["kind", "direction"],
)
OVERLAY_VIEW = Gauge(
    "peerfind_directory_overlay_view_peers",
    "Peers in each overlay view: active (neighbours searched through) and passive.",
    ["view"],
)
OVERLAY_SHUFFLES = Counter(
    "peerfind_directory_overlay_shuffles_total",
    "Shuffles this peer started (a sample of its views on a random walk).",
)
OVERLAY_REPLACEMENTS = Counter(
    "peerfind_directory_overlay_replacements_total",
    "Neighbours taken from the passive view to replace one that failed or left.",
)
OVERLAY_FAILURES = Counter(
    "peerfind_directory_overlay_neighbour_failures_total",
    "Neighbours dropped because a ping failed (after a search timed out on them, or in a "
    "round) or nothing was heard from them for peer_ttl_s.",
)

IDENTITY_OUTCOMES = (
    "proven",
    "no_proof",
    "bad_proof",
    "wrong_url",
    "peer_id_taken",
    "disconnect_ignored",
)
IDENTITY_CHECKS = Counter(
    "peerfind_directory_identity_checks_total",
    "Proofs of identity checked, by outcome: proven, refused (no_proof, bad_proof, "
    "wrong_url: signed for another URL, peer_id_taken: another key holds the id), and "
    "disconnect_ignored (a DISCONNECT its supposed sender denied).",
    ["outcome"],
)
for _outcome in IDENTITY_OUTCOMES:
    IDENTITY_CHECKS.labels(outcome=_outcome)

for _role in SEARCH_ROLES:
    SEARCHES_RECEIVED.labels(role=_role)
    SEARCH_DURATION.labels(role=_role)
    for _outcome in SEARCH_OUTCOMES:
        SEARCHES_ANSWERED.labels(role=_role, outcome=_outcome)
for _state in PEER_STATES:
    PEERS.labels(state=_state)
for _kind in OVERLAY_KINDS:
    for _direction in ("sent", "received"):
        MEMBERSHIP_MESSAGES.labels(kind=_kind, direction=_direction)
for _view in ("active", "passive"):
    OVERLAY_VIEW.labels(view=_view)
for _mode in SEARCH_MODES:
    SEARCH_MESSAGES.labels(mode=_mode)
for _outcome in SUMMARY_FETCH_OUTCOMES:
    SUMMARY_FETCHES.labels(outcome=_outcome)


class SearchMetrics:
    """`search.SearchEvents` counted in the series above (the router knows no Prometheus)."""

    def __init__(self) -> None:
        self._received = Children(SEARCHES_RECEIVED)
        self._duration = Children(SEARCH_DURATION)
        self._answered = Children(SEARCHES_ANSWERED)

    def received(self, role: str) -> None:
        self._received(role).inc()

    def duplicate(self) -> None:
        SEARCH_DUPLICATES.inc()

    def forwarded(self, count: int) -> None:
        SEARCH_FORWARDS.inc(count)

    def forward_failed(self) -> None:
        SEARCH_FORWARD_FAILURES.inc()

    def answered(self, role: str, outcome: str, *, seconds: float, hits: int, failed: int) -> None:
        SEARCH_HITS.inc(hits)
        SEARCH_PEERS_FAILED.observe(failed)
        self._duration(role).observe(seconds)
        self._answered(role, outcome).inc()


class SummaryMetrics(SummaryEvents):
    """`summary.SummaryEvents` counted in the series above."""

    def __init__(self) -> None:
        self._fetched = Children(SUMMARY_FETCHES)

    def fetched(self, outcome: str) -> None:
        self._fetched(outcome).inc()

    def rebuilt(self, seconds: float, bits: int) -> None:
        SUMMARY_REBUILD_DURATION.observe(seconds)
        SUMMARY_BITS.set(bits)
