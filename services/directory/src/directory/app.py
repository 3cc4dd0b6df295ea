"""The directory's FastAPI application factory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from directory import metrics
from directory.errors import install_error_handlers
from directory.node import Node
from directory.routers import files, health, peers, search
from peerfind import __version__
from peerfind.api import ErrorResponse
from peerfind.config import PeerSettings
from peerfind.metrics import set_build_info

__all__ = ["create_app"]


class MetricsMiddleware:
    """Count requests and time them by route template (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(route=path, method=method, status=str(status)).inc()
            metrics.HTTP_REQUEST_DURATION.labels(
                route=path, method=method, status=str(status)
            ).observe(time.perf_counter() - started)


def create_app(settings: PeerSettings, *, background: bool = False) -> FastAPI:
    """Build the app. `background=True` starts bootstrap and heartbeat at startup;
    the server entry point instead starts them once the socket accepts connections."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        node = Node(settings)
        app.state.node = node
        set_build_info(settings.peer_id, "directory")
        if background:
            node.start_background()
        try:
            yield
        finally:
            await node.close()

    app = FastAPI(
        title="peerfind directory",
        version=__version__,
        summary="Registration, membership and distributed search of one peerfind peer.",
        lifespan=lifespan,
        # Every 422 is an ErrorResponse (errors.py), not FastAPI's HTTPValidationError.
        responses={422: {"model": ErrorResponse}},
    )
    install_error_handlers(app)
    for module in (health, peers, files, search):
        app.include_router(module.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware)
    return app
