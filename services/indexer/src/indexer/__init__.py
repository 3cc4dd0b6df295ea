"""peerfind indexer: scans and watches the shared folder; the single writer of the peer's index.

    PEER_CONFIG=deploy/local/peer1.json peerfind-indexer          # run until SIGTERM
    PEER_CONFIG=deploy/local/peer1.json peerfind-indexer --check  # healthcheck: exit 0 or 1

Modules: `scanner` (walk the tree, decide what is indexable), `service` (the
`Indexer`: full scans, watcher, heartbeat, rescans), `metrics`, `main` (CLI).
"""

from __future__ import annotations

__all__: list[str] = []
