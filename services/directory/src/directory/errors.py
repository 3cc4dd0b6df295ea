"""Every error answer is `ErrorResponse` JSON: 4xx for bad input, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from peerfind.api import ErrorResponse
from peerfind.errors import IndexUnavailable, describe_errors

__all__ = ["ApiError", "install_error_handlers"]

logger = logging.getLogger(__name__)


class ApiError(HTTPException):
    """An error with a machine-readable kind and a one-line detail."""

    def __init__(
        self, status_code: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.error = error


def _json(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=error, detail=detail).model_dump(), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = describe_errors(exc.errors(), limit=3, skip=("body",), where="body")
        return _json(422, "invalid_request", detail)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = getattr(exc, "error", None) or {
            404: "not_found",
            405: "method_not_allowed",
            429: "rate_limited",
        }.get(exc.status_code, "http_error")
        response = _json(exc.status_code, error, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def index_unavailable(_: Request, exc: Exception) -> JSONResponse:
        return _json(503, "index_unavailable", str(exc))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json(500, "internal", "internal error; see the peer's log")

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(IndexUnavailable, index_unavailable)
    app.add_exception_handler(Exception, unexpected)
