"""Exceptions raised by peerfind code.

PeerfindError
├── ConfigError         an invalid peer config (file or environment); services exit 2
├── InvalidNameError    a file name that looks like a path (INVALID_ARGUMENT on the wire)
├── IndexUnavailable    the peer's index database cannot be opened or read
└── ClientError         the CLI / typed client could not complete a call
    ├── PeerUnreachable     the peer did not answer (connect error, timeout)
    ├── PeerRefused         the peer answered with a 4xx/5xx or a gRPC error status
    └── FileNotLocated      no peer in reach holds the requested name
"""

from __future__ import annotations

__all__ = [
    "ClientError",
    "ConfigError",
    "FileNotLocated",
    "IndexUnavailable",
    "InvalidNameError",
    "PeerRefused",
    "PeerUnreachable",
    "PeerfindError",
]


class PeerfindError(Exception):
    """Base class of every error peerfind raises on purpose."""


class ConfigError(PeerfindError):
    """The peer configuration is invalid; the message names the field."""


class InvalidNameError(PeerfindError, ValueError):
    """A file name that is empty, too long, or resembles a path."""


class IndexUnavailable(PeerfindError):
    """The index database is missing or unreadable."""


class ClientError(PeerfindError):
    """A client-side call failed; the message is one line meant for a user."""


class PeerUnreachable(ClientError):
    """The peer did not answer."""


class PeerRefused(ClientError):
    """The peer answered with an error."""


class FileNotLocated(ClientError):
    """No reachable peer holds the requested file."""
