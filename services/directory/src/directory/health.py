"""This peer's health: its index's freshness and its transfer service's gRPC health."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from directory.peers import PeerTable
from peerfind import __version__
from peerfind.api import HealthResponse, IndexHealth, TransferHealth
from peerfind.config import PeerSettings
from peerfind.index import IndexReader
from peerfind.tls import grpc_channel

__all__ = ["HealthReport", "TransferProbe"]

_CHECK_TTL_S = 2.0
_CHECK_TIMEOUT_S = 0.5


class TransferProbe:
    """The local transfer service's gRPC health, cached for a couple of seconds."""

    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._ok = False
        self._checked = 0.0

    async def serving(self) -> bool:
        now = time.monotonic()
        if now - self._checked < _CHECK_TTL_S:
            return self._ok
        if self._channel is None:
            settings = self.settings
            # The local transfer presents the peer's certificate, issued for the
            # advertised name; we present the same certificate as a client (mTLS).
            self._channel = grpc_channel(
                settings.transfer_address,
                settings.tls_files if settings.tls else None,
                server_name=settings.grpc_tls_name,
            )
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=_CHECK_TIMEOUT_S
            )
            ok = bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.aio.AioRpcError:
            ok = False
        self._ok, self._checked = ok, time.monotonic()
        return ok

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)


class HealthReport:
    """Builds `GET /health`'s answer."""

    def __init__(
        self,
        settings: PeerSettings,
        reader: IndexReader,
        table: PeerTable,
        probe: TransferProbe,
        key_id: str,
    ) -> None:
        self.settings = settings
        self.key_id = key_id
        self.reader = reader
        self.table = table
        self.probe = probe
        self.started_at = time.time()

    async def __call__(self) -> HealthResponse:
        settings = self.settings
        stats = await asyncio.to_thread(self.reader.stats)
        age = time.time() - stats.heartbeat_at if stats.heartbeat_at else None
        stale = not stats.available or age is None or age > settings.index_stale_after_s
        serving = await self.probe.serving()
        return HealthResponse(
            status="ok" if serving and not stale else "degraded",
            peer=settings.peer_id,
            peer_id=settings.peer_id,
            url=settings.self_url,
            grpc_address=settings.grpc_advertise,
            version=__version__,
            uptime_s=round(time.time() - self.started_at, 3),
            peers=len(self.table),
            index=IndexHealth(
                available=stats.available,
                files=stats.files,
                bytes=stats.bytes,
                last_scan_at=stats.last_scan_at,
                age_s=round(age, 3) if age is not None else None,
                stale=stale,
            ),
            transfer=TransferHealth(address=settings.transfer_address, serving=serving),
            key_id=self.key_id,
        )
