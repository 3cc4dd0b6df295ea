"""Prometheus metrics of the transfer service, defined once.

Counters are incremented once per stream, when it ends (also when it fails or
is cancelled part-way: they count what actually went over the wire), so the
per-chunk path does no metric work at all. The series of every method and of the
status codes the servicer ends RPCs with exist (at 0) from the start, so rate()
and increase() also count their first increment (the error-ratio alert its first
error).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ACTIVE_STREAMS",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "CHUNKS_RECEIVED",
    "CHUNKS_SENT",
    "CODES",
    "FILE_BYTES_SENT",
    "FILE_CHUNKS_SENT",
    "LIMITED",
    "LIMITS",
    "METHODS",
    "REFUSALS",
    "REFUSAL_REASONS",
    "RPCS",
    "STREAM_DURATION",
]

METHODS = ("Download", "DummyDownload", "DummyUpload")
# Why Download refused a file (peerfind.sharedfile's reasons, and the version checks).
REFUSAL_REASONS = (
    "outside",
    "special",
    "hard_link",
    "unreadable",
    "path",
    "missing",
    "changed_since_indexed",
    "changed_while_streaming",
    "sha256_mismatch",
)
# The limits that refuse or end a transfer whatever the file (servicer.py, slots.py).
LIMITS = ("total_slots", "client_slots", "stall")
# Every code servicer.py documents, plus OK and the two of a client going away.
CODES = (
    "OK",
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "OUT_OF_RANGE",
    "PERMISSION_DENIED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "INTERNAL",
)

BYTES_SENT = Counter(
    "peerfind_transfer_bytes_sent_total",
    "Payload bytes streamed to clients by DummyDownload.",
)
FILE_BYTES_SENT = Counter(
    "peerfind_transfer_file_bytes_sent_total",
    "Payload bytes of shared files streamed to clients by Download.",
)
FILE_CHUNKS_SENT = Counter(
    "peerfind_transfer_file_chunks_sent_total",
    "FileChunk messages streamed to clients by Download.",
)
REFUSALS = Counter(
    "peerfind_transfer_refusals_total",
    "Download requests refused or ended because of the file itself, by reason.",
    ["reason"],
)
LIMITED = Counter(
    "peerfind_transfer_limited_total",
    "Transfers refused because every slot or the client's share was taken "
    "(total_slots, client_slots), or ended because no chunk moved for "
    "stream_stall_timeout_s (stall).",
    ["limit"],
)
BYTES_RECEIVED = Counter(
    "peerfind_transfer_bytes_received_total",
    "Payload bytes received from clients by DummyUpload.",
)
CHUNKS_SENT = Counter(
    "peerfind_transfer_chunks_sent_total",
    "FileChunk messages streamed to clients by DummyDownload.",
)
CHUNKS_RECEIVED = Counter(
    "peerfind_transfer_chunks_received_total",
    "FileChunk messages received from clients by DummyUpload.",
)
ACTIVE_STREAMS = Gauge(
    "peerfind_transfer_active_streams",
    "Transfer RPCs in progress, by method.",
    ["method"],
)
RPCS = Counter(
    "peerfind_transfer_rpcs_total",
    "Finished transfer RPCs by method and gRPC status code name (OK, NOT_FOUND, ...).",
    ["method", "code"],
)
STREAM_DURATION = Histogram(
    "peerfind_transfer_stream_duration_seconds",
    "Wall time of a transfer RPC, from the handler's start to its end, by method.",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)

for _method in METHODS:
    ACTIVE_STREAMS.labels(_method)
    STREAM_DURATION.labels(_method)
    for _code in CODES:
        RPCS.labels(_method, _code)
for _limit in LIMITS:
    LIMITED.labels(_limit)
for _reason in REFUSAL_REASONS:
    REFUSALS.labels(_reason)
