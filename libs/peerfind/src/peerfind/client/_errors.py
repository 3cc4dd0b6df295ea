"""How a failed call becomes one `peerfind.errors.ClientError` with a one-line message.

    PeerUnreachable   connect error, timeout, gRPC UNAVAILABLE or DEADLINE_EXCEEDED
    PeerRefused       HTTP 4xx/5xx (with the ErrorResponse detail), a malformed
                      answer, or any other gRPC status ("NOT_FOUND: no file named ...")

The messages name the peer, so a user can tell which hop failed.
"""

from __future__ import annotations

import grpc
import grpc.aio
import httpx
from pydantic import ValidationError

from peerfind.api import ErrorResponse
from peerfind.errors import ClientError, PeerRefused, PeerUnreachable, describe_errors, short_error

__all__ = ["first_error", "reason", "refusal", "rpc_error"]

_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_GRPC_REASONS = (
    ("connection refused", "connection refused"),
    ("dns resolution failed", "name or service not known"),
    ("name or service not known", "name or service not known"),
    ("deadline exceeded", "timed out"),
    ("timeout", "timed out"),
)


def reason(exc: BaseException) -> str:
    """A short lower-case reason for a transport error, from its cause chain."""
    text = short_error(exc)
    return text[:1].lower() + text[1:]


def first_error(exc: ValidationError) -> str:
    """`where: what` of the first error in a malformed answer."""
    return describe_errors(exc.errors(), where="body")


def refusal(base_url: str, response: httpx.Response) -> str:
    """`<detail> (HTTP <status> from <base_url>)`, the detail from the ErrorResponse body."""
    status = response.status_code
    detail = ""
    try:
        detail = ErrorResponse.model_validate_json(response.content).detail
    except ValidationError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            detail = body["detail"]
    detail = " ".join(detail.split()) or response.reason_phrase or "error"
    return f"{detail} (HTTP {status} from {base_url})"


def rpc_error(exc: grpc.aio.AioRpcError, address: str) -> ClientError:
    """PeerUnreachable for UNAVAILABLE and DEADLINE_EXCEEDED, PeerRefused for the rest."""
    code = exc.code()
    details = " ".join((exc.details() or "").split())
    if code in _UNREACHABLE:
        lowered = details.lower()
        short = next((short for key, short in _GRPC_REASONS if key in lowered), details)
        return PeerUnreachable(f"cannot reach {address}: {short or code.name.lower()}")
    return PeerRefused(f"{code.name}: {details}" if details else f"{code.name} from {address}")
