"""`peerfind-transfer`: run one peer's FileTransfer gRPC service, or check it.

    PEER_CONFIG=deploy/local/peer1.json peerfind-transfer
    PEER_CONFIG=deploy/local/peer1.json peerfind-transfer --check   # the container healthcheck

Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT) or a SERVING check, 1 when a
port cannot be bound or the check fails, 2 when the configuration is invalid. Errors
are one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peerfind.config import PeerSettings, service_start
from peerfind.logging import setup_logging
from peerfind.metrics import serve_metrics, set_build_info
from peerfind.tls import channel_credentials
from transfer.memory import few_arenas
from transfer.server import BindError, serve

__all__ = ["check", "main"]

logger = logging.getLogger(__name__)

PROG = "peerfind-transfer"
_CHECK_TIMEOUT_S = 3.0


def check(settings: PeerSettings) -> int:
    """The healthcheck: 0 if the standard gRPC health service says SERVING, else 1."""
    address = f"{settings.local_host}:{settings.grpc_port}"
    if settings.tls:
        # The certificate names the advertised host, not loopback.
        channel = grpc.secure_channel(
            address,
            channel_credentials(settings.tls_files),
            options=[("grpc.ssl_target_name_override", settings.grpc_tls_name)],
        )
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=_CHECK_TIMEOUT_S)
        except grpc.RpcError as exc:
            print(f"{PROG}: {address}: {exc.code().name}", file=sys.stderr)
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"{PROG}: {address}: {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Load the peer config, start metrics and the gRPC server, run until signalled."""
    few_arenas()  # before any thread: the metrics server's, gRPC's (transfer.memory)
    settings = service_start(
        PROG,
        "Serve the peer's FileTransfer gRPC service.",
        "the gRPC health check says SERVING",
        check,
        argv,
    )
    if isinstance(settings, int):
        return settings
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
