"""Slowloris guard for the REST server: a header deadline and a per-client connection cap.

    counter = ConnectionCounter(per_client=64)
    config = uvicorn.Config(app, http=guarded_protocol(counter, header_timeout_s=10.0), ...)

uvicorn (h11) never closes a connection whose request headers stay unfinished, nor one
that opens and sends nothing: its keep-alive timer only starts after an answer. A few
thousand such connections from one address use up the server's file descriptors and
`/health` stops answering. The protocol here, uvicorn's own H11Protocol with two checks,
closes a connection whose request headers are not complete `header_timeout_s` after it
opened or after its previous answer (dripping bytes does not push the deadline back), and
answers a client's connection past `per_client` open ones with a 429 and closes it.

Chosen over a server in front (one more process in every deployment) and over uvicorn's
`limit_concurrency` (global: the attacker's connections would get everyone else 503s).
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from directory.metrics import CONNECTIONS_CLOSED
from peerfind.clients import client_of

__all__ = ["ConnectionCounter", "guarded_protocol"]

logger = logging.getLogger(__name__)


class ConnectionCounter:
    """Open connections per client (peerfind.clients.client_of), at most `per_client`."""

    def __init__(self, per_client: int) -> None:
        if per_client < 1:
            raise ValueError("per_client must be at least 1")
        self.per_client = per_client
        self._open: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def open_from(self, client: str) -> int:
        """Connections open now from `client`."""
        return self._open.get(client, 0)

    def add(self, client: str) -> bool:
        """Count one more connection of `client`; False (and nothing counted) past the cap."""
        held = self._open.get(client, 0)
        if held >= self.per_client:
            self.refused += 1
            return False
        self._open[client] = held + 1
        return True

    def remove(self, client: str) -> None:
        """A connection `add` counted is closed."""
        held = self._open.get(client, 0)
        if held <= 0:
            raise RuntimeError(f"remove without add for {client}")
        if held == 1:
            del self._open[client]  # only clients with open connections are kept
        else:
            self._open[client] = held - 1


def _too_many(per_client: int) -> bytes:
    body = json.dumps(
        {
            "error": "too_many_connections",
            "detail": f"more than {per_client} open connections from your address; "
            "close some and retry",
        }
    ).encode()
    head = (
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(counter: ConnectionCounter, header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's H11Protocol with the header deadline and `counter`'s cap (one class per
    server: the counter is this server's, not the process's)."""
    refusal = _too_many(counter.per_client)
    capped = CONNECTIONS_CLOSED.labels("per_client_cap")
    timed_out = CONNECTIONS_CLOSED.labels("header_timeout")

    class GuardedH11Protocol(H11Protocol):
        _client_key: str | None = None
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            key = client_of(host)
            if not counter.add(key):
                capped.inc()
                logger.warning(
                    "refused a connection from %s: %d already open", host, counter.per_client
                )
                self.transport.write(refusal)
                self.transport.close()
                return
            self._client_key = key
            self._check_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._client_key is not None:
                counter.remove(self._client_key)
                self._client_key = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._check_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._check_headers()

        def _check_headers(self) -> None:
            """Armed while a request's headers are awaited, from the moment the
            connection is ready for it; disarmed once they are in."""
            if self.transport.is_closing():
                self._disarm()
            elif self.conn.their_state is h11.IDLE:
                if self._header_timer is None:
                    self._header_timer = self.loop.call_later(header_timeout_s, self._expired)
            else:
                self._disarm()

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            counter.timed_out += 1
            timed_out.inc()
            logger.info(
                "closed a connection from %s: no complete request headers in %g s",
                self.client[0] if self.client else "?",
                header_timeout_s,
            )
            self.transport.close()

    return GuardedH11Protocol
