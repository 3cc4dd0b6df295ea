"""Membership: a bounded overlay (HyParView, `directory.overlay`) kept over REST.

    N starts -> POST F/register {url: N}       (JOIN through a friend, primary then backup)
    F -> GET N/health                          (verify the id at that URL before taking N)
    F answers with its active view             (N keeps those peers as passive entries)
    F -> POST X/overlay {forward_join N}       (the join walks F's neighbours; where it
    X -> POST N/overlay {neighbor X, high}      ends, X connects to N; N verifies X first)

Every peer keeps an **active view** (`active_view` neighbours: the search table, each
pinged every `heartbeat_interval_s`) and a **passive view** (`passive_view` peers heard
of, refreshed by shuffles every `shuffle_interval_s`). A full peer makes room for a
newcomer instead of refusing it. A neighbour that fails a ping is dropped and replaced
from the passive view; a search that times out on a neighbour makes it suspect and
triggers a ping at once, so a hung peer is found by the searches it stalls. A peer that
finds itself with no neighbour and no passive entry joins through its friends again,
every `bootstrap_retry_s`: friends are the way in, not permanent neighbours.

Nothing enters the active view unverified: a peer that asks us (JOIN, NEIGHBOR) is
called back at its URL, through the URL guard, and must answer `/health` with the id it
claimed; a peer we ask answers as itself, at the address the guard pinned. Every one of
those answers, and every ping's, carries a proof: a signature over our fresh challenge
by the key that holds its id here (`directory.identity`; the first key to prove an id
binds it, and no other key ever takes it). A DISCONNECT is believed only once a ping to
the sender, at its verified address, shows that it no longer holds us. Passive entries
are hearsay: they are contacted (through the guard) only to be promoted.

Framework-free: the REST calls (`PeerCalls`), the URL guard, the peer memory and the
clock are injected; the overlay's decisions are `directory.overlay`'s, which the
simulator runs unchanged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from directory import metrics
from directory.identity import (
    Claim,
    IdentityConflict,
    KeyBook,
    PeerKey,
    ProofError,
    check_proof,
    new_challenge,
)
from directory.lru import BoundedLru
from directory.overlay import Descriptor, Overlay, OverlayConfig
from directory.peers import PeerTable, TableFullError, load_remembered, save_remembered
from directory.urlguard import PinnedUrl, UrlRefused
from peerfind.api import (
    PEER_ID_PATTERN,
    BootstrapResponse,
    Disconnect,
    ForwardJoin,
    Neighbor,
    OverlayAnswer,
    OverlayMessage,
    PeerInfo,
    PeerRef,
    Ping,
    Proof,
    RegisterResponse,
    Shuffle,
    ShuffleReply,
    validate_http_url,
)
from peerfind.config import PeerSettings

__all__ = [
    "MAX_PENDING_MESSAGES",
    "FilePeerMemory",
    "Membership",
    "PeerCalls",
    "PeerMemory",
    "PeerUnavailable",
    "RegistrationError",
    "UrlGuard",
    "network_of",
    "overlay_config",
]

logger = logging.getLogger(__name__)

_PEER_ID = re.compile(PEER_ID_PATTERN)
MAX_PENDING_MESSAGES = 256
"""One-way overlay messages being handled at once; more are answered 503 `busy`."""
_VERIFIED_CAPACITY = 1024


def network_of(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to: the unit of the per-network bound."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def overlay_config(settings: PeerSettings) -> OverlayConfig:
    """The overlay's sizes and periods from a peer's settings (walks: the defaults)."""
    return OverlayConfig(
        active_size=settings.active_view,
        passive_size=settings.passive_view,
        shuffle_interval_s=settings.shuffle_interval_s,
        ping_interval_s=settings.heartbeat_interval_s,
    )


class RegistrationError(Exception):
    """A registration or overlay message was refused; `reason` is a metric label,
    `status` an HTTP code."""

    def __init__(self, reason: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


class PeerUnavailable(ConnectionError):
    """A peer did not answer, or answered with a server error: worth another try."""


class PeerCalls(Protocol):
    """The calls membership makes to another peer (REST in a peer).

    With `pinned`, the call goes to the address the URL guard checked.
    """

    async def health(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> tuple[Claim, Proof | None]:
        """GET url/health: who answered, and its proof for `challenge` (None if it gave
        none). Raises RegistrationError."""
        ...

    async def register(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> RegisterResponse:
        """POST url/register {our url}. Raises PeerUnavailable or RegistrationError."""
        ...

    async def overlay(
        self,
        url: str,
        message: OverlayMessage,
        pinned: PinnedUrl | None = None,
        challenge: str | None = None,
    ) -> OverlayAnswer:
        """POST url/overlay {message}. Raises PeerUnavailable or RegistrationError."""
        ...


class UrlGuard(Protocol):
    async def check(self, url: str) -> PinnedUrl: ...


class PeerMemory(Protocol):
    """Where the peers we know are kept across restarts."""

    def load(self) -> list[tuple[str, str, str]]: ...
    def save(self, peers: Iterable[Descriptor]) -> None: ...


class FilePeerMemory:
    """Peer memory in a JSON file (`peers_path`), written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[tuple[str, str, str]]:
        return load_remembered(self.path)

    def save(self, peers: Iterable[Descriptor]) -> None:
        save_remembered(self.path, peers)


def _bootstrap_retry(attempts: int) -> AsyncRetrying:
    """The one retry policy for joining through a friend."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        retry=retry_if_exception_type(PeerUnavailable),
        reraise=True,
    )


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


@dataclass(frozen=True, slots=True)
class _Verified:
    url: str
    grpc_address: str
    network: str | None
    key_id: str


def _check_urls(message: OverlayMessage) -> None:
    refs: list[PeerRef] = [
        getattr(message, name) for name in ("new", "sender", "origin", "peer")
        if hasattr(message, name)
    ]  # fmt: skip
    refs += getattr(message, "entries", [])
    for ref in refs:
        try:
            ref.url = validate_http_url(ref.url)
        except ValueError as exc:
            raise RegistrationError("invalid_url", f"{ref.peer_id}: url: {exc}") from None


def _ref(peer: Descriptor) -> PeerRef:
    return PeerRef.model_construct(peer_id=peer.peer_id, url=peer.url)


def _descriptor(ref: PeerRef) -> Descriptor:
    return Descriptor(ref.peer_id, ref.url)


def _claim(answer: OverlayAnswer | RegisterResponse) -> Claim:
    return Claim(answer.peer_id, answer.url, answer.grpc_address)


class _Refused(ConnectionRefusedError):
    """A peer refused an overlay message or failed verification: a failure to the overlay."""


class _RestLink:
    """`overlay.OverlayLink` over `PeerCalls`: every call goes through the URL guard, and
    every answer that makes a peer a neighbour is checked to come from that peer."""

    def __init__(self, membership: Membership) -> None:
        self.m = membership

    async def _pin(self, target: Descriptor) -> PinnedUrl:
        try:
            return await self.m.guard_url(target.url)
        except RegistrationError as exc:
            raise _Refused(exc.detail) from None

    async def _send(self, target: Descriptor, message: OverlayMessage) -> OverlayAnswer:
        pinned = await self._pin(target)
        try:
            answer = await self.m.calls.overlay(target.url, message, pinned)
        except RegistrationError as exc:
            raise _Refused(exc.detail) from None
        metrics.MEMBERSHIP_MESSAGES.labels(kind=message.kind, direction="sent").inc()
        return answer

    async def join(
        self, target: Descriptor, new: Descriptor
    ) -> tuple[Descriptor, list[Descriptor]]:
        pinned = await self._pin(target)
        challenge = new_challenge()
        try:
            answer = await self.m.calls.register(target.url, pinned, challenge)
        except RegistrationError as exc:
            raise _Refused(exc.detail) from None
        metrics.MEMBERSHIP_MESSAGES.labels(kind="join", direction="sent").inc()
        contact = self.m.confirmed(target, _claim(answer), answer.proof, challenge, pinned)
        offered = []
        for info in answer.peers:
            try:
                offered.append(Descriptor(info.peer_id, validate_http_url(info.url)))
            except ValueError:
                continue
        return contact, [p for p in offered if _PEER_ID.match(p.peer_id)]

    async def forward_join(
        self, target: Descriptor, new: Descriptor, ttl: int, sender: Descriptor
    ) -> None:
        await self._send(
            target,
            ForwardJoin(kind="forward_join", new=_ref(new), ttl=ttl, sender=_ref(sender)),
        )

    async def neighbor(self, target: Descriptor, me: Descriptor, high: bool) -> bool:
        return await self.ask(target, me, high) is not None

    async def ask(self, target: Descriptor, me: Descriptor, high: bool) -> Descriptor | None:
        """NEIGHBOR: the target as verified if it accepted, None if it refused."""
        pinned = await self._pin(target)
        challenge = new_challenge()
        message = Neighbor(kind="neighbor", peer=_ref(me), high=high)
        try:
            answer = await self.m.calls.overlay(target.url, message, pinned, challenge)
        except RegistrationError as exc:
            raise _Refused(exc.detail) from None
        metrics.MEMBERSHIP_MESSAGES.labels(kind="neighbor", direction="sent").inc()
        peer = self.m.confirmed(target, _claim(answer), answer.proof, challenge, pinned)
        return peer if answer.accepted else None

    async def disconnect(self, target: Descriptor, me: Descriptor) -> None:
        await self._send(target, Disconnect(kind="disconnect", peer=_ref(me)))

    async def shuffle(
        self,
        target: Descriptor,
        origin: Descriptor,
        entries: list[Descriptor],
        ttl: int,
        sender: Descriptor,
    ) -> None:
        await self._send(
            target,
            Shuffle(
                kind="shuffle",
                origin=_ref(origin),
                entries=[_ref(p) for p in entries],
                ttl=ttl,
                sender=_ref(sender),
            ),
        )

    async def shuffle_reply(
        self, target: Descriptor, me: Descriptor, entries: list[Descriptor]
    ) -> None:
        await self._send(
            target,
            ShuffleReply(kind="shuffle_reply", peer=_ref(me), entries=[_ref(p) for p in entries]),
        )

    async def ping(self, target: Descriptor, me: Descriptor) -> bool:
        # To the address verified when it became a neighbour; it must answer as itself,
        # with the key that holds its id.
        challenge = new_challenge()
        try:
            answer = await self.m.calls.overlay(
                target.url, Ping(kind="ping", peer=_ref(me)), None, challenge
            )
        except RegistrationError as exc:
            raise _Refused(exc.detail) from None
        metrics.MEMBERSHIP_MESSAGES.labels(kind="ping", direction="sent").inc()
        if answer.peer_id != target.peer_id:
            raise _Refused(f"{target.url} now answers as {answer.peer_id}")
        try:
            key_id = self.m.proven(target.url, _claim(answer), answer.proof, challenge)
            self.m.keys.bind(target.peer_id, key_id)
        except RegistrationError as exc:
            raise _Refused(exc.detail) from None
        except IdentityConflict as exc:
            raise _Refused(str(exc)) from None
        self.m.seen(target.peer_id, answer.grpc_address)
        return bool(answer.accepted)


class Membership:
    """Keeps this peer in the overlay, and its search table equal to its active view.

    It is the overlay's `OverlayEvents`: a peer entering the active view enters the
    table (with the gRPC address it was verified with), one leaving it leaves.
    """

    def __init__(
        self,
        settings: PeerSettings,
        table: PeerTable,
        calls: PeerCalls,
        guard: UrlGuard,
        memory: PeerMemory,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        *,
        key: PeerKey | None = None,
        keys: KeyBook | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or _loop_time
        self.table = table
        self.calls = calls
        self.guard = guard
        self.memory = memory
        self.key = key or PeerKey.generate()
        self.keys = keys if keys is not None else KeyBook()
        self.keys.keep = self._in_view
        self._claim = Claim(settings.peer_id, settings.self_url, settings.grpc_advertise)
        self.me = Descriptor(settings.peer_id, settings.self_url)
        self._link = _RestLink(self)
        self.overlay = Overlay(
            self.me,
            self._link,
            overlay_config(settings),
            rng or random.Random(),
            self,
            keep=lambda peer: table.is_friend_url(peer.url),  # friends keep their place
        )
        self._friend_asked: dict[str, float] = {}
        self._verified: BoundedLru[str, _Verified] = BoundedLru(_VERIFIED_CAPACITY)
        self._last_bootstrap = float("-inf")
        self._bootstrapping: asyncio.Task[BootstrapResponse] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._confirming: set[str] = set()
        self._dirty = False
        table.on_suspect = self.suspect

    # -- identity -----------------------------------------------------------------------

    def prove(self, challenge: str | None) -> Proof | None:
        """Our proof for a caller's challenge (None when it sent none)."""
        return self.key.prove(challenge, self._claim) if challenge else None

    def proven(self, url: str, claim: Claim, proof: Proof | None, challenge: str) -> str:
        """The key id that proved `claim` for our `challenge`, answered from `url`, if no
        other key holds the id here. Raises RegistrationError (409) otherwise; binds
        nothing (the caller binds once every other check has passed)."""
        try:
            claimed_url = validate_http_url(claim.url)
        except ValueError:
            claimed_url = ""
        if claimed_url != url:
            outcome, detail = "wrong_url", f"{url} answers for {claim.url!r}, not for itself"
        elif proof is None:
            outcome, detail = "no_proof", f"{url} did not prove its id {claim.peer_id}"
        else:
            try:
                key_id = check_proof(proof, challenge, claim)
            except ProofError as exc:
                outcome, detail = "bad_proof", f"{url}: proof of {claim.peer_id}: {exc}"
            else:
                held = self.keys.holder(claim.peer_id)
                if held is None or held == key_id:
                    metrics.IDENTITY_CHECKS.labels(outcome="proven").inc()
                    return key_id
                outcome = "peer_id_taken"
                detail = f"{url}: {IdentityConflict(claim.peer_id, held, key_id)}"
        metrics.IDENTITY_CHECKS.labels(outcome=outcome).inc()
        logger.warning("identity refused: %s", detail)
        raise RegistrationError(outcome, detail, 409)

    def _in_view(self, peer_id: str) -> bool:
        overlay = self.overlay
        return peer_id in overlay.active or peer_id in overlay.passive or peer_id in self.table

    # -- verification -------------------------------------------------------------------

    async def guard_url(self, url: str) -> PinnedUrl:
        """The SSRF check for a URL someone else gave us. Raises RegistrationError."""
        try:
            return await self.guard.check(url)
        except UrlRefused as exc:
            raise RegistrationError(exc.reason, str(exc)) from None

    async def verify(self, url: str, claimed: str | None = None) -> Descriptor:
        """Call back a peer that asked us something: GET url/health through the guard.

        Returns it as verified; raises RegistrationError if it does not answer as a peer,
        answers with another id than `claimed`, or comes from a network at its bound.
        """
        try:
            url = validate_http_url(url)
        except ValueError as exc:
            raise RegistrationError("invalid_url", f"url: {exc}") from None
        if url == self.settings.self_url:
            raise RegistrationError("self", "a peer cannot register itself", 409)
        pinned = await self.guard_url(url)
        challenge = new_challenge()
        claim, proof = await self.calls.health(url, pinned, challenge)
        peer_id = claim.peer_id
        if claimed is not None and peer_id != claimed:
            raise RegistrationError("wrong_peer", f"{url} answers as {peer_id}, not {claimed}", 409)
        if peer_id == self.settings.peer_id:
            raise RegistrationError("self", "that URL answers with this peer's own id", 409)
        key_id = self.proven(url, claim, proof, challenge)
        return self._record(peer_id, url, claim.grpc_address, pinned, key_id)

    def confirmed(
        self,
        target: Descriptor,
        claim: Claim,
        proof: Proof | None,
        challenge: str,
        pinned: PinnedUrl,
    ) -> Descriptor:
        """A peer we called at `target.url` answered as `claim.peer_id`: verified, if that
        is who we meant (a friend is known by its URL only) and it proved it. Raises
        ConnectionError if not."""
        peer_id = claim.peer_id
        if not _PEER_ID.match(peer_id) or (target.peer_id and peer_id != target.peer_id):
            raise _Refused(f"{target.url} answered as {peer_id!r}, not {target.peer_id!r}")
        try:
            if peer_id == self.settings.peer_id:
                raise RegistrationError("self", "that URL answers with this peer's own id", 409)
            key_id = self.proven(target.url, claim, proof, challenge)
            return self._record(peer_id, target.url, claim.grpc_address, pinned, key_id)
        except RegistrationError as exc:
            raise _Refused(exc.detail) from None

    def _record(
        self, peer_id: str, url: str, grpc_address: str, pinned: PinnedUrl, key_id: str
    ) -> Descriptor:
        if peer_id == self.settings.peer_id:
            raise RegistrationError("self", "that URL answers with this peer's own id", 409)
        network = None if self.table.is_friend_url(url) else network_of(pinned.address)
        if (
            network is not None
            and peer_id not in self.table
            and self.table.network_count(network) >= self.table.max_per_network
        ):
            raise RegistrationError(
                "network_full",
                f"too many neighbours from {network} ({self.table.max_per_network} at most)",
                503,
            )
        self.keys.bind(peer_id, key_id)  # proven() found no other holder, and no await since
        self._verified.put(peer_id, _Verified(url, grpc_address, network, key_id))
        return Descriptor(peer_id, url)

    def seen(self, peer_id: str, grpc_address: str) -> None:
        """A neighbour answered a ping as itself."""
        peer = self.table.get(peer_id)
        if peer is not None:
            peer.grpc_address = grpc_address or peer.grpc_address
        self.table.mark_alive(peer_id)

    # -- OverlayEvents: the search table follows the active view -------------------------

    def sent(self, kind: str) -> None:
        pass  # counted by the link once the message is delivered

    def activated(self, peer: Descriptor) -> None:
        known = self._verified.get(peer.peer_id)
        grpc_address, network, key_id = (
            ("", None, "") if known is None else (known.grpc_address, known.network, known.key_id)
        )
        try:
            self.table.upsert(peer.peer_id, peer.url, grpc_address, network=network, key_id=key_id)
        except (ValueError, TableFullError) as exc:
            logger.warning("cannot take %s as a neighbour: %s", peer.peer_id, exc)
            self._spawn(self.overlay.failed(peer.peer_id))
            return
        logger.info("neighbour %s at %s", peer.peer_id, peer.url)
        self._changed()

    def deactivated(self, peer: Descriptor) -> None:
        if self.table.remove(peer.peer_id) is not None:
            logger.info("%s is no longer a neighbour", peer.peer_id)
        self._changed()

    def failed(self, peer: Descriptor) -> None:
        metrics.OVERLAY_FAILURES.inc()

    def replaced(self) -> None:
        metrics.OVERLAY_REPLACEMENTS.inc()

    def shuffled(self) -> None:
        metrics.OVERLAY_SHUFFLES.inc()

    def suspect(self, peer_id: str) -> None:
        """A search timed out or failed on a neighbour: ping it now, drop it if it fails."""
        if peer_id in self._confirming:
            return
        self._confirming.add(peer_id)
        self._spawn(self._confirm(peer_id))

    async def _confirm(self, peer_id: str) -> None:
        try:
            peer = self.overlay.active.get(peer_id)
            if peer is not None and not await self.overlay.ping(peer):
                logger.info("neighbour %s failed a search and a ping", peer_id)
                await self.overlay.failed(peer_id)
        finally:
            self._confirming.discard(peer_id)

    # -- incoming -----------------------------------------------------------------------

    async def welcome(self, url: str, challenge: str | None = None) -> RegisterResponse:
        """POST /register (JOIN): verify the peer at `url`, take it in, offer our view
        (with our proof for the caller's `challenge`)."""
        try:
            new = await self.verify(url)
        except RegistrationError as exc:
            metrics.REGISTRATIONS.labels(result="refused", reason=exc.reason).inc()
            raise
        metrics.REGISTRATIONS.labels(result="accepted", reason="ok").inc()
        metrics.MEMBERSHIP_MESSAGES.labels(kind="join", direction="received").inc()
        offered = [p for p in self.table.peers() if p.peer_id != new.peer_id]
        self._spawn(self.overlay.on_join(new))
        settings = self.settings
        known = self._verified.get(new.peer_id)
        return RegisterResponse(
            registered=PeerInfo(
                peer_id=new.peer_id,
                url=new.url,
                grpc_address=known.grpc_address if known else "",
                state="alive",
                last_seen=self.table.now(),
                friend=self.table.is_friend_url(new.url),
                key_id=known.key_id if known else "",
            ),
            peer_id=settings.peer_id,
            url=settings.self_url,
            grpc_address=settings.grpc_advertise,
            peers=[p.info() for p in offered],
            proof=self.prove(challenge),
        )

    async def receive(self, message: OverlayMessage, challenge: str | None = None) -> OverlayAnswer:
        """POST /overlay: one HyParView message from another peer, answered with our proof
        for its `challenge`. Raises RegistrationError (400 `invalid_url`) before anything
        changes if any URL it names is malformed."""
        _check_urls(message)
        metrics.MEMBERSHIP_MESSAGES.labels(kind=message.kind, direction="received").inc()
        settings = self.settings
        answer = OverlayAnswer(
            kind=message.kind,
            peer_id=settings.peer_id,
            url=settings.self_url,
            grpc_address=settings.grpc_advertise,
            proof=self.prove(challenge),
        )
        config = self.overlay.config
        if isinstance(message, Ping):
            current = self.overlay.active.get(message.peer.peer_id)
            answer.accepted = current is not None and current.url == message.peer.url
            return answer
        if isinstance(message, Neighbor):
            peer = await self.verify(message.peer.url, message.peer.peer_id)
            answer.accepted = await self.overlay.on_neighbor(peer, message.high)
            return answer
        if len(self._background) >= MAX_PENDING_MESSAGES:
            raise RegistrationError("busy", "too many overlay messages in progress", 503)
        if isinstance(message, ForwardJoin):
            self._spawn(
                self.overlay.on_forward_join(
                    self._heard(message.new),
                    min(message.ttl, config.active_walk),
                    _descriptor(message.sender),
                )
            )
        elif isinstance(message, Disconnect):
            current = self.overlay.active.get(message.peer.peer_id)
            if current is not None and current.url == message.peer.url:
                self._spawn(self._disconnected(current))
        elif isinstance(message, Shuffle):
            self._spawn(
                self.overlay.on_shuffle(
                    self._heard(message.origin),
                    self._hearsay(message.entries),
                    min(message.ttl, config.shuffle_walk),
                    _descriptor(message.sender),
                )
            )
        elif isinstance(message, ShuffleReply):
            self._spawn(self.overlay.on_shuffle_reply(self._hearsay(message.entries)))
        return answer

    async def _disconnected(self, peer: Descriptor) -> None:
        """A DISCONNECT names `peer`, but anyone can send one: ask `peer` itself, at its
        verified address (a proven ping), and demote it only if it no longer holds us."""
        try:
            mutual = await self._link.ping(peer, self.me)
        except (ConnectionError, OSError, TimeoutError) as exc:
            logger.info("%s sent a disconnect and then failed a ping: %s", peer.peer_id, exc)
            await self.overlay.failed(peer.peer_id)
            return
        if mutual:
            metrics.IDENTITY_CHECKS.labels(outcome="disconnect_ignored").inc()
            logger.warning("ignored a disconnect for %s: it still holds us", peer.peer_id)
            return
        if self.overlay.active.get(peer.peer_id) is peer:  # not taken in again meanwhile
            await self.overlay.on_disconnect(peer)

    def _heard(self, ref: PeerRef) -> Descriptor:
        """A peer named by another: kept as it was named (never over a verified address)."""
        known = self.overlay.active.get(ref.peer_id)
        return known if known is not None else _descriptor(ref)

    def _hearsay(self, refs: list[PeerRef]) -> list[Descriptor]:
        me = self.settings
        return [self._heard(r) for r in refs if r.peer_id != me.peer_id and r.url != me.self_url]

    # -- bootstrap ----------------------------------------------------------------------

    async def bootstrap(self) -> BootstrapResponse:
        """Join through the primary friend, else the backup.

        One bootstrap at a time: a call that arrives while one runs gets that one's answer
        (shielded: a caller that gives up does not cancel it for the others) instead of
        queueing for a run of its own behind a friend that is slow to answer.
        """
        running = self._bootstrapping
        if running is None or running.done():
            running = self._bootstrapping = asyncio.create_task(self._bootstrap())
        return await asyncio.shield(running)

    async def _bootstrap(self) -> BootstrapResponse:
        self._last_bootstrap = self._clock()
        tried: list[str] = []
        errors: list[str] = []
        friends = [u for u in self.settings.friends if u != self.settings.self_url]
        if not friends:
            return BootstrapResponse(
                ok=False, friend=None, tried=[], errors=["no friends configured"]
            )
        for url in friends:
            tried.append(url)
            try:
                contact, offered = await self._join_through(url)
            except (ConnectionError, OSError, TimeoutError, RegistrationError) as exc:
                errors.append(f"{url}: {exc}")
                logger.warning("bootstrap via %s failed: %s", url, exc)
                continue
            logger.info("joined via %s (%s); it offered %d peers", url, contact.peer_id,
                        len(offered))  # fmt: skip
            return BootstrapResponse(
                ok=True,
                friend=url,
                friend_peer_id=contact.peer_id,
                tried=tried,
                errors=errors,
                learned=len(offered),
            )
        return BootstrapResponse(ok=False, friend=None, tried=tried, errors=errors)

    async def _join_through(self, url: str) -> tuple[Descriptor, list[Descriptor]]:
        async for attempt in _bootstrap_retry(self.settings.bootstrap_attempts):
            with attempt:
                return await self.overlay.join(Descriptor("", url))
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    # -- periodic work ------------------------------------------------------------------

    async def heartbeat_once(self) -> None:
        """One round: ping the active view (and top up), then drop any neighbour still
        unheard for `peer_ttl_s`; when isolated, repair from the passive view or join
        through a friend again."""
        await self.overlay.ping_neighbours()
        ttl = self.settings.peer_ttl_s
        for peer in self.table.unseen(ttl):
            # Still the same entry, still unheard (each drop awaits: views move meanwhile).
            still = self.table.get(peer.peer_id) is peer and peer.last_seen < self.table.now() - ttl
            if still and peer.peer_id in self.overlay.active:
                logger.info("dropping %s: no answer for %.0f s", peer.peer_id,
                            self.settings.peer_ttl_s)  # fmt: skip
                await self.overlay.failed(peer.peer_id)
        if not self.overlay.active:
            await self.overlay.repair()
        else:
            await self._reach_friends()
        if (
            not self.overlay.active
            and self.settings.friends
            and self._clock() - self._last_bootstrap >= self.settings.bootstrap_retry_s
            and (self._bootstrapping is None or self._bootstrapping.done())
        ):
            logger.info("no neighbour and no passive peer answers; joining again")
            self._spawn(self._bootstrap_quietly())
        self._save_if_changed()
        self._update_gauges()

    async def _reach_friends(self) -> None:
        """With room in the active view, ask each friend that is not a neighbour (once per
        `bootstrap_retry_s`) to become one, at low priority: a full friend refuses and
        nothing moves; one that was cut off, or started late, is found again. This heals
        partitions the passive view forgot; a peer with a full view sends nothing."""
        overlay = self.overlay
        if len(overlay.active) >= overlay.config.active_size:
            return
        now = self._clock()
        neighbours = {p.url for p in overlay.active.values()}
        for url in self.settings.friends:
            if url in neighbours or url == self.settings.self_url:
                continue
            if now - self._friend_asked.get(url, float("-inf")) < self.settings.bootstrap_retry_s:
                continue
            self._friend_asked[url] = now
            self._spawn(self._ask_friend(url))

    async def _ask_friend(self, url: str) -> None:
        asked_at = asyncio.get_running_loop().time()
        try:
            friend = await self._link.ask(Descriptor("", url), self.me, False)
        except (ConnectionError, OSError, TimeoutError) as exc:
            logger.debug("friend %s is not reachable: %s", url, exc)
            return
        if friend is not None and self.overlay.still_wanted(friend, asked_at):
            await self.overlay.adopt(friend)

    async def _bootstrap_quietly(self) -> None:
        await self.bootstrap()

    async def run(self) -> None:
        """Background life of a peer: remember, join, then ping and shuffle for ever."""
        await self.start()
        await self.overlay.run(self.heartbeat_once)

    async def start(self) -> None:
        """Remembered peers become passive entries; join through a friend, or else
        through them."""
        for peer_id, url, _grpc in self.memory.load():
            if peer_id != self.settings.peer_id and url != self.settings.self_url:
                self.overlay.remember(Descriptor(peer_id, url))
        if self.settings.friends:
            await self.bootstrap()
        if not self.overlay.active:
            await self.overlay.repair()
        self._update_gauges()

    # -- helpers ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _changed(self) -> None:
        self._dirty = True
        self._update_gauges()

    def _save_if_changed(self) -> None:
        if self._dirty:
            self._dirty = False
            self.memory.save([*self.overlay.active.values(), *self.overlay.passive.values()])
        try:
            self.keys.save()
        except OSError as exc:
            logger.warning("cannot save the peers' keys: %s", exc)

    def _update_gauges(self) -> None:
        for state, count in self.table.counts().items():
            metrics.PEERS.labels(state=state).set(count)
        metrics.OVERLAY_VIEW.labels(view="active").set(len(self.overlay.active))
        metrics.OVERLAY_VIEW.labels(view="passive").set(len(self.overlay.passive))

    @property
    def busy(self) -> bool:
        """True while messages or joins spawned by this peer are still being handled."""
        return bool(self._background)

    async def settle(self) -> None:
        """Wait until the messages and joins spawned so far have been handled."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
            # Drop the finished ones here: their done callbacks may not have run yet, and
            # a gather of finished tasks need not yield to the loop (3.13's does not).
            self._background.difference_update([t for t in self._background if t.done()])

    async def close(self) -> None:
        self._save_if_changed()
        tasks = [*self._background, *([self._bootstrapping] if self._bootstrapping else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
