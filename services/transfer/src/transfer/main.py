"""`peerfind-transfer`: run one peer's FileTransfer gRPC service.

    PEER_CONFIG=deploy/local/peer1.json peerfind-transfer

Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 1 when a port cannot be
bound, 2 when the configuration is invalid. Errors are one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from peerfind.config import load_settings
from peerfind.errors import ConfigError
from peerfind.logging import setup_logging
from peerfind.metrics import serve_metrics, set_build_info
from transfer.server import BindError, serve

__all__ = ["main"]

logger = logging.getLogger(__name__)

PROG = "peerfind-transfer"


def main() -> int:
    """Load the peer config, start metrics and the gRPC server, run until signalled."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    setup_logging("transfer", settings.peer_id, settings.log_level, settings.log_format)
    set_build_info(settings.peer_id, "transfer")
    if settings.transfer_metrics_port:
        host = settings.metrics_host or settings.host
        try:
            serve_metrics(host, settings.transfer_metrics_port)
        except OSError as exc:
            logger.error(
                "cannot serve metrics on %s:%d: %s",
                host,
                settings.transfer_metrics_port,
                exc.strerror or exc,
            )
            return 1
    try:
        asyncio.run(serve(settings))
    except BindError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
