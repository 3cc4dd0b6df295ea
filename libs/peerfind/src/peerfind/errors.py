"""Exceptions raised by peerfind code.

PeerfindError
├── ConfigError         an invalid peer config (file or environment); services exit 2
├── InvalidNameError    a file name or shared path no index can hold (INVALID_ARGUMENT on the wire)
├── IndexUnavailable    the peer's index database cannot be opened or read
│   └── IndexCorrupt        it is not a database, or a damaged one (the indexer rebuilds it)
└── ClientError         the CLI / typed client could not complete a call
    ├── PeerUnreachable     the peer did not answer (connect error, timeout)
    │   └── PeerStalled         it stopped sending in the middle of a stream
    ├── PeerRefused         the peer answered with a 4xx/5xx or a gRPC error status
    ├── FileNotLocated      no peer in reach holds the requested name
    └── AmbiguousName       the name is at several paths that hold different files
"""

from __future__ import annotations

import errno as errno_codes
import os
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "AmbiguousName",
    "ClientError",
    "ConfigError",
    "FileNotLocated",
    "IndexCorrupt",
    "IndexUnavailable",
    "InvalidNameError",
    "PeerRefused",
    "PeerStalled",
    "PeerUnreachable",
    "PeerfindError",
    "describe_errors",
    "short_error",
]


class PeerfindError(Exception):
    """Base class of every error peerfind raises on purpose."""


class ConfigError(PeerfindError):
    """The peer configuration is invalid; the message names the field."""


class InvalidNameError(PeerfindError, ValueError):
    """A file name that no file can have ('', '.', '..', '/' or NUL in it, too long), a
    shared path that is not a plain relative one, or a name and a path that disagree."""


class IndexUnavailable(PeerfindError):
    """The index database is missing or unreadable."""


class IndexCorrupt(IndexUnavailable):
    """The index file is not a database, or fails SQLite's integrity check."""


class ClientError(PeerfindError):
    """A client-side call failed; the message is one line meant for a user."""


class PeerUnreachable(ClientError):
    """The peer did not answer."""


class PeerStalled(PeerUnreachable):
    """The peer stopped sending mid-stream for longer than the stall deadline."""


class PeerRefused(ClientError):
    """The peer answered with an error."""


class FileNotLocated(ClientError):
    """No reachable peer holds the requested file."""


class AmbiguousName(ClientError):
    """The name is at several paths that hold (or may hold) different files; `paths`
    lists them, each as (peer id, path). Choose one by path."""

    def __init__(self, message: str, paths: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.paths = paths


def short_error(exc: BaseException | None) -> str:
    """One short line for a failure, for a user or a `peers_failed` entry.

    Timeouts read "timeout"; an OS error anywhere in the cause chain reads as its
    errno's text ("connection refused"); anything else is its first line, or its type.
    """
    seen: set[int] = set()
    current = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TimeoutError):
            return "timeout"
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError):  # an OSError whose errno is OpenSSL's, not the OS's
            return f"TLS error: {current.reason or current}"
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno == errno_codes.ECONNREFUSED:
                return "connection refused"
            if current.errno > 0:
                return os.strerror(current.errno).lower()
            if current.strerror:
                return current.strerror.lower()  # getaddrinfo errors: negative errno
        current = current.__cause__ or current.__context__
    if exc is None:
        return "error"
    text = " ".join(str(exc).split("\n", 1)[0].split())
    return text or type(exc).__name__


def describe_errors(
    errors: Iterable[Mapping[str, Any]],
    *,
    limit: int = 1,
    skip: Iterable[str] = (),
    where: str = "",
) -> str:
    """pydantic's validation errors as one line: `loc: msg; loc: msg` (the first `limit`).

    `skip` drops location parts that mean nothing to the reader ("body"); `where` names
    an error with no location.
    """
    skipped = set(skip)
    parts = []
    for error in list(errors)[:limit]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p not in skipped) or where
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
