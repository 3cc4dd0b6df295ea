"""Membership's calls to other peers, over REST (`membership.PeerCalls`)."""

from __future__ import annotations

import logging
import re

from pydantic import ValidationError

from directory.auth import PeerAuth
from directory.identity import Claim
from directory.membership import PeerUnavailable, RegistrationError
from directory.transport import PeerCallError, PeerHttp
from directory.urlguard import PinnedUrl
from peerfind.api import (
    CHALLENGE_HEADER,
    PEER_ID_PATTERN,
    ErrorResponse,
    OverlayAnswer,
    OverlayMessage,
    Proof,
    RegisterResponse,
)

__all__ = ["MAX_HEALTH_BYTES", "MAX_REGISTER_BYTES", "RestPeerCalls"]

logger = logging.getLogger(__name__)
_PEER_ID = re.compile(PEER_ID_PATTERN)
# A /health answer is well under 2 KiB; a /register answer lists an active view at most.
MAX_HEALTH_BYTES = 64 * 1024
MAX_REGISTER_BYTES = 256 * 1024


def _target(
    url: str, pinned: PinnedUrl | None, challenge: str | None
) -> tuple[str, dict[str, str], str | None]:
    """Where to connect, the headers (Host, the challenge) and the TLS server name for a
    (pinned) URL."""
    headers = {CHALLENGE_HEADER: challenge} if challenge else {}
    if pinned is None:
        return url, headers, None
    sni = pinned.host if pinned.scheme == "https" else None
    return pinned.base, {"Host": pinned.host_header, **headers}, sni


def _text(body: dict[str, object], key: str) -> str:
    value = body.get(key, "")
    return value if isinstance(value, str) else ""


def _not_a_peer(url: str, cause: str) -> RegistrationError:
    logger.info("%s/health: %s", url, cause)
    return RegistrationError("not_a_peer", f"{url} did not answer /health as a peer")


class RestPeerCalls:
    def __init__(self, http: PeerHttp, auth: PeerAuth, *, self_url: str, timeout_s: float):
        self.http = http
        self.auth = auth
        self.self_url = self_url
        self.timeout_s = timeout_s

    async def health(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> tuple[Claim, Proof | None]:
        """GET url/health: who answers, and its proof of that when `challenge` is given
        (None if it gave none, or a malformed one: the caller refuses either).

        Every failure reads the same to whoever asked us to call (`not_a_peer`): a closed
        port, a service that is not HTTP, one that is not JSON and one that is not a peer
        are told apart only in this peer's log, so /register cannot serve as a port scanner.
        """
        base, headers, sni = _target(url, pinned, challenge)
        try:
            answer = await self.http.call(
                "GET",
                f"{base}/health",
                headers=headers,
                server_hostname=sni,
                timeout_s=self.timeout_s,
                max_bytes=MAX_HEALTH_BYTES,
            )
            if answer.status != 200:
                raise PeerCallError(f"answered HTTP {answer.status}")
            body = answer.json()
        except PeerCallError as exc:
            raise _not_a_peer(url, str(exc)) from None
        peer_id = body.get("peer_id") if isinstance(body, dict) else None
        if not isinstance(peer_id, str) or not _PEER_ID.match(peer_id):
            raise _not_a_peer(url, "no valid peer_id")
        claim = Claim(peer_id, _text(body, "url"), _text(body, "grpc_address"))
        try:
            proof = Proof.model_validate(body["proof"]) if body.get("proof") else None
        except ValidationError:
            proof = None
        return claim, proof

    async def register(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> RegisterResponse:
        body = await self._post(url, "/register", {"url": self.self_url}, pinned, challenge)
        try:
            return RegisterResponse.model_validate_json(body)
        except ValidationError:
            raise RegistrationError("not_a_peer", f"{url} gave a malformed answer") from None

    async def overlay(
        self,
        url: str,
        message: OverlayMessage,
        pinned: PinnedUrl | None = None,
        challenge: str | None = None,
    ) -> OverlayAnswer:
        body = await self._post(
            url, "/overlay", {"message": message.model_dump(mode="json")}, pinned, challenge
        )
        try:
            return OverlayAnswer.model_validate_json(body)
        except ValidationError:
            raise RegistrationError("not_a_peer", f"{url} gave a malformed answer") from None

    async def _post(
        self,
        url: str,
        path: str,
        body: dict[str, object],
        pinned: PinnedUrl | None,
        challenge: str | None,
    ) -> bytes:
        """POST a membership message; the answer's body if 2xx. A peer that cannot be
        reached or fails (5xx) raises PeerUnavailable; one that refuses, RegistrationError."""
        base, headers, sni = _target(url, pinned, challenge)
        try:
            answer = await self.http.call(
                "POST",
                f"{base}{path}",
                json_body=body,
                headers={**headers, **self.auth.headers},
                server_hostname=sni,
                # The peer may verify us (one /health call of its own) before it answers.
                timeout_s=self.timeout_s * 2 + 1,
                max_bytes=MAX_REGISTER_BYTES,
            )
        except PeerCallError as exc:
            raise PeerUnavailable(f"cannot reach {url}: {exc}") from None
        if answer.status >= 500:
            raise PeerUnavailable(f"{url} answered HTTP {answer.status}")
        if not 200 <= answer.status < 300:
            try:
                detail = ErrorResponse.model_validate_json(answer.body).detail
            except ValidationError:
                detail = answer.body[:200].decode(errors="replace")
            raise RegistrationError("refused", f"{url} refused us: {detail}")
        return answer.body
