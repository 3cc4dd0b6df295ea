"""`peerfind-directory`: run one peer's REST directory service, or check it.

    PEER_CONFIG=peer1.json peerfind-directory
    PEER_CONFIG=peer1.json peerfind-directory --check   # the container healthcheck

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT) or a healthy check, 1 when
the server cannot start (port taken) or the check fails, 2 for an invalid
configuration.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import sys

import uvicorn

from directory.app import create_app
from directory.connguard import ConnectionCounter, guarded_protocol
from peerfind.config import PeerSettings, service_start
from peerfind.logging import setup_logging
from peerfind.tls import client_ssl_context

__all__ = ["check", "main", "serve"]

PROG = "peerfind-directory"
_CHECK_TIMEOUT_S = 3.0

logger = logging.getLogger(__name__)

_STARTUP_POLL_S = 0.02


def bind(host: str, port: int) -> socket.socket:
    """Bind the REST socket ourselves, so a taken port is one clear line, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio sets TCP_NODELAY only on sockets it creates as IPPROTO_TCP; without it
    # every answer (head and body written separately) waits out the client's delayed
    # ACK. Accepted connections inherit it from the listening socket.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


async def serve(settings: PeerSettings, sock: socket.socket) -> int:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.rest_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
        # uvicorn's h11 protocol with a header deadline and a per-client connection cap
        # (Slowloris, docs/security.md); h11 is what "auto" picks here anyway (no httptools).
        http=guarded_protocol(
            ConnectionCounter(settings.rest_max_connections_per_client),
            settings.rest_header_timeout_s,
        ),
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers no "started" event; poll its flag until it binds or gives up.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(_STARTUP_POLL_S)
    if server.started:
        logger.info(
            "directory %s serving on %s (advertised %s)",
            settings.peer_id,
            f"{settings.host}:{settings.rest_port}",
            settings.self_url,
        )
        app.state.node.start_background()
    await task
    return 0 if server.started else 1


def check(settings: PeerSettings) -> int:
    """The healthcheck: 0 if this peer's own `/health` answers 200, else 1 (one line)."""
    # Imported here: the check runs in a process of its own, and the server never
    # needs httpx (with rich and pygments installed it also imports its CLI's).
    import httpx

    scheme = "https" if settings.tls else "http"
    url = f"{scheme}://{settings.local_host}:{settings.rest_port}/health"
    verify: ssl.SSLContext | bool = False
    if settings.tls:
        # The certificate names the advertised host, not loopback: verify the chain only.
        verify = client_ssl_context(settings.tls_files)
        verify.check_hostname = False
    try:
        response = httpx.get(url, timeout=_CHECK_TIMEOUT_S, verify=verify)
    except httpx.HTTPError as exc:
        print(f"{PROG}: {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"{PROG}: {url}: HTTP {response.status_code}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = service_start(
        PROG, "Serve the peer's REST directory.", "this peer's /health answers", check, argv
    )
    if isinstance(settings, int):
        return settings
    setup_logging("directory", settings.peer_id, settings.log_level, settings.log_format)
    try:
        sock = bind(settings.host, settings.rest_port)
    except OSError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(serve(settings, sock))


if __name__ == "__main__":
    sys.exit(main())
