"""The directory's FastAPI application factory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from directory import metrics
from directory.errors import install_error_handlers
from directory.node import Node
from directory.routers import content, files, health, peers, search, summary
from peerfind import __version__
from peerfind.api import ErrorResponse
from peerfind.config import PeerSettings
from peerfind.metrics import Children, set_build_info

__all__ = ["create_app"]


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_HTTP_REQUESTS = Children(metrics.HTTP_REQUESTS)
_HTTP_REQUEST_DURATION = Children(metrics.HTTP_REQUEST_DURATION)


class MetricsMiddleware:
    """Count requests and time them by route template (pure ASGI: no body buffering).

    Labels come from small fixed sets: route templates (or "unmatched"), the standard
    methods (anything else is "other") and our own status codes.
    """

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
            method = scope["method"] if scope["method"] in _METHODS else "other"
            code = str(status)
            _HTTP_REQUESTS(path, method, code).inc()
            _HTTP_REQUEST_DURATION(path, method, code).observe(time.perf_counter() - started)


class HotRoute(Route):
    """A plain Starlette route for an endpoint that takes only the request.

    FastAPI's per-request dependency solving and endpoint wrapping cost time even for a
    `(request: Request)` endpoint (docs/benchmarks.md, "Search at one client, part 2"). `create_app`
    puts this route first for `GET /search`, with the very function FastAPI
    documents under the same path, so the contract and the behaviour stay one.
    Errors raised by the endpoint reach the app's exception handlers as before.
    """

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(path, endpoint, methods=["GET"], include_in_schema=False)
        self.methods = {"GET"}  # Starlette adds HEAD; the contract (and FastAPI) has none

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self  # as FastAPI's routes do: MetricsMiddleware reads it
        return match, child_scope


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
    for module in (health, peers, files, content, search, summary):
        app.include_router(module.router)
    # Matched before everything else: the hot route, served without FastAPI's wrapping.
    app.router.routes.insert(0, HotRoute("/search", search.search))

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware)
    return app
