"""The transfer gRPC server: FileTransfer, health and reflection on one grpc.aio server.

    asyncio.run(serve(settings))        # binds settings.host:settings.grpc_port until SIGTERM

Tests and embedders start it on a free port and stop it themselves:

    running = await start_server(settings, port=0)
    ...  # 127.0.0.1:running.port
    await running.stop()

Stopping is graceful: health turns NOT_SERVING for every service, new RPCs are
refused, and transfers in flight get `GRACE_S` seconds to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from peerfind.config import MAX_CHUNK_SIZE, PeerSettings
from peerfind.tls import server_credentials
from transfer.memory import heap_trimmer
from transfer.servicer import IDLE_DELAY_S, SERVICE_NAME, FileTransferServicer, add_to_server

__all__ = [
    "GRACE_S",
    "MAX_MESSAGE_BYTES",
    "SERVICE_NAME",
    "BindError",
    "TransferServer",
    "serve",
    "server_options",
    "start_server",
]

logger = logging.getLogger(__name__)

GRACE_S = 5.0
# One chunk plus room for the other fields and framing.
MAX_MESSAGE_BYTES = MAX_CHUNK_SIZE + 64 * 1024


class BindError(Exception):
    """The gRPC address could not be bound (in use, or not an address of this host)."""


def server_options(settings: PeerSettings) -> list[tuple[str, int]]:
    """Channel arguments of the transfer server."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # Fail to bind a port another process already serves, instead of sharing it.
        ("grpc.so_reuseport", 0),
        # Ping idle clients every minute and drop those that do not answer in 20 s.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Let clients keep idle connections alive, but no more than one ping per
        # 10 s without data; two pings too many and the connection gets GOAWAY.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(slots=True)
class TransferServer:
    """A started transfer server and the parts needed to stop it gracefully."""

    server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped in grpc-stubs)
    servicer: FileTransferServicer
    address: str
    port: int

    async def stop(self, grace: float | None = GRACE_S) -> None:
        """Report NOT_SERVING, refuse new RPCs, give running ones `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(
    settings: PeerSettings, port: int | None = None, *, bind: str | None = None
) -> TransferServer:
    """Build, bind and start the server; `port=0` picks a free port.

    Binds `bind` ("host:port") if given, else settings.host and `port` (default
    settings.grpc_port). Raises BindError if the address cannot be bound.
    """
    address = bind or _address(settings.host, settings.grpc_port if port is None else port)
    server = grpc.aio.server(options=server_options(settings))
    servicer = FileTransferServicer(settings, on_idle=heap_trimmer(), idle_delay_s=IDLE_DELAY_S)
    add_to_server(servicer, server)

    # grpc-stubs has no `health.aio`; the servicer is untyped (Any) from here on.
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        credentials = server_credentials(settings.tls_files)
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        raise BindError(
            f"cannot bind gRPC address {address}: in use, or not an address of this host"
        ) from None
    await server.start()
    logger.info(
        "FileTransfer serving on %s (port %d, %s)",
        address,
        bound,
        "TLS" if settings.tls else "plaintext",
    )
    return TransferServer(server, health_servicer, servicer, address, bound)


async def serve(
    settings: PeerSettings, stop: asyncio.Event | None = None, *, bind: str | None = None
) -> None:
    """Serve until `stop` is set or SIGTERM/SIGINT arrives, then shut down gracefully.

    Raises BindError if the address cannot be bound.
    """
    stop = stop if stop is not None else asyncio.Event()
    running = await start_server(settings, bind=bind)
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            continue
        handled.append(sig)
    try:
        await stop.wait()
        logger.info("shutting down: %d transfers in flight", running.servicer.active_streams)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await running.stop(GRACE_S)
    logger.info("stopped")
