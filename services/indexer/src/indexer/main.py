"""`peerfind-indexer`: run the indexer of one peer, or check that it is alive.

    PEER_CONFIG=peer1.json peerfind-indexer           # index until SIGTERM / SIGINT, exit 0
    PEER_CONFIG=peer1.json peerfind-indexer --check   # exit 0 if the heartbeat is fresh, else 1

Exit codes: 0 clean stop (or a fresh heartbeat with --check), 1 runtime failure
(or a stale / missing heartbeat), 2 invalid configuration. Errors are one line
on stderr, prefixed with the program name.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from indexer.service import run, shared_root
from peerfind.config import PeerSettings, service_start
from peerfind.errors import ConfigError, IndexUnavailable
from peerfind.index import IndexReader
from peerfind.logging import setup_logging
from peerfind.metrics import serve_metrics, set_build_info

__all__ = ["PROG", "check", "main"]

logger = logging.getLogger(__name__)

PROG = "peerfind-indexer"


def _fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def check(settings: PeerSettings) -> int:
    """The healthcheck: 0 if the index heartbeat is fresh, else 1 (one line on stderr)."""
    try:
        stats = IndexReader(settings.index_path).stats()
    except IndexUnavailable as exc:
        _fail(str(exc))
        return 1
    if not stats.available or not stats.heartbeat_at:
        _fail(f"no heartbeat in index {settings.index_path}")
        return 1
    age = time.time() - stats.heartbeat_at
    if age > settings.index_stale_after_s:
        _fail(f"index heartbeat is {age:.1f} s old (stale after {settings.index_stale_after_s} s)")
        return 1
    return 0


async def _serve(settings: PeerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        logger.info("received %s, shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await run(settings, stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `peerfind-indexer` console script; returns the exit code."""
    settings = service_start(
        PROG,
        "Scan and watch the peer's shared folder; the single writer of its index.",
        "the index heartbeat is younger than index_stale_after_s",
        check,
        argv,
    )
    if isinstance(settings, int):
        return settings
    try:
        shared_root(settings)
    except ConfigError as exc:
        _fail(str(exc))
        return 2
    setup_logging("indexer", settings.peer_id, settings.log_level, settings.log_format)
    if settings.indexer_metrics_port:
        host = settings.metrics_host or settings.host
        try:
            serve_metrics(host, settings.indexer_metrics_port)
        except OSError as exc:
            _fail(f"cannot serve metrics on {host}:{settings.indexer_metrics_port}: {exc}")
            return 1
        set_build_info(settings.peer_id, "indexer")
    try:
        asyncio.run(_serve(settings))
    except ConfigError as exc:  # the shared folder went away before the start
        _fail(str(exc))
        return 2
    except IndexUnavailable as exc:
        _fail(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
