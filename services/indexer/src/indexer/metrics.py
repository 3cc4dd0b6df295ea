"""Prometheus metrics of the indexer, defined once (default registry).

Served on `indexer_metrics_port` by `peerfind.metrics.serve_metrics` when that is
non-zero. Label values are created up front so every series exists from the start.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from indexer.scanner import SkipReason

__all__ = [
    "HASHED_BYTES",
    "HASHED_FILES",
    "HASH_FAILURES",
    "INDEXED_BYTES",
    "INDEXED_FILES",
    "INDEX_REBUILDS",
    "LAST_SCAN_TIMESTAMP",
    "SCANS",
    "SCAN_DURATION",
    "SKIPPED",
    "WATCH_EVENTS",
    "WATCH_KINDS",
]

WATCH_KINDS = ("added", "modified", "deleted")

INDEXED_FILES = Gauge("peerfind_indexer_files", "Files in the peer's index now.")
INDEXED_BYTES = Gauge(
    "peerfind_indexer_bytes", "Total size in bytes of the files in the peer's index now."
)
HASHED_BYTES = Counter(
    "peerfind_indexer_hashed_bytes_total", "Bytes read and hashed (SHA-256) by the hasher."
)
HASHED_FILES = Counter(
    "peerfind_indexer_hashed_files_total", "Files whose SHA-256 was stored in the index."
)
HASH_FAILURES = Counter(
    "peerfind_indexer_hash_failures_total",
    "Files the hasher could not hash: changed while read, gone, refused or unreadable.",
)
SCAN_DURATION = Histogram(
    "peerfind_indexer_scan_duration_seconds",
    "Time a full scan of the shared folder took, walk and index write together.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
LAST_SCAN_TIMESTAMP = Gauge(
    "peerfind_indexer_last_scan_timestamp_seconds",
    "Unix time at which the last successful full scan finished.",
)
WATCH_EVENTS = Counter(
    "peerfind_indexer_watch_events_total",
    "File system changes reported by the watcher, by kind.",
    ["kind"],
)
SKIPPED = Counter(
    "peerfind_indexer_skipped_total",
    "Entries of the shared folder left out of the index, by reason (counted at each scan).",
    ["reason"],
)
INDEX_REBUILDS = Counter(
    "peerfind_indexer_index_rebuilds_total",
    "Times the index was found corrupt, moved aside and rebuilt from a full scan.",
)
SCANS = Counter(
    "peerfind_indexer_scans_total",
    "Full scans of the shared folder, by result.",
    ["result"],
)

for _kind in WATCH_KINDS:
    WATCH_EVENTS.labels(kind=_kind)
for _reason in SkipReason:
    SKIPPED.labels(reason=_reason.value)
for _result in ("ok", "error"):
    SCANS.labels(result=_result)
