"""Peer authentication: the cluster token peers present to each other.

With no token configured every caller is accepted (the local demo); with one, the
peer-to-peer routes (register, bootstrap, forwarded searches) require it, compared in
constant time, and this peer sends it on every call it makes to a peer.
"""

from __future__ import annotations

import hmac

__all__ = ["TOKEN_HEADER", "PeerAuth"]

TOKEN_HEADER = "X-Peerfind-Token"  # noqa: S105 (a header name, not a secret)


class PeerAuth:
    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self.headers: dict[str, str] = {TOKEN_HEADER: token} if token else {}
        """Headers to send with every call to a peer."""

    @property
    def required(self) -> bool:
        return bool(self._token)

    def accepts(self, presented: str | None) -> bool:
        """True when no token is set, or `presented` matches it."""
        if not self._token:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)
