"""Membership: registration, bootstrap through friends, heartbeat and pruning.

    P2 starts -> POST P4/register {url: P2}     (bootstrap, primary then backup friend)
    P4 -> GET P2/health                         (verify the peer id before adding it)
    P4 answers with the peers it knows          (P2 adds P4, then introduces itself to them)

A heartbeat checks every known peer; peers unseen for `peer_ttl_s` are pruned
(friends are kept as `down` and keep being checked). When a peer comes back,
we register with it again so it knows us after its restart. Until a friend is
reached, bootstrap runs again in the background every `bootstrap_retry_s`: live
peers met otherwise do not count, because with simultaneous starts (compose) peer3
can register with peer2 before peer1 is up, and peer2 must still find peer1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Protocol

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from directory import metrics
from directory.peers import Peer, PeerTable, TableFullError, load_remembered, save_remembered
from directory.urlguard import PinnedUrl, UrlRefused
from peerfind.api import BootstrapResponse, RegisterResponse
from peerfind.config import PeerSettings, validate_http_url

__all__ = [
    "FilePeerMemory",
    "Membership",
    "PeerCalls",
    "PeerMemory",
    "PeerUnavailable",
    "RegistrationError",
    "UrlGuard",
    "network_of",
]

logger = logging.getLogger(__name__)

_MAX_INTRODUCTIONS = 16


def network_of(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to: the unit of the per-network bound."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class RegistrationError(Exception):
    """A registration was refused; `reason` is a metric label, `status` an HTTP code."""

    def __init__(self, reason: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


class PeerUnavailable(Exception):
    """A peer did not answer, or answered with a server error: worth another try."""


class PeerCalls(Protocol):
    """The two calls membership makes to another peer (REST in a peer, virtual in sim/).

    With `pinned`, the call goes to the address the URL guard checked.
    """

    async def health(self, url: str, pinned: PinnedUrl | None = None) -> tuple[str, str]:
        """GET url/health: (peer_id, grpc_address). Raises RegistrationError."""
        ...

    async def register(self, url: str, pinned: PinnedUrl | None = None) -> RegisterResponse:
        """POST url/register {our url}. Raises PeerUnavailable or RegistrationError."""
        ...


class UrlGuard(Protocol):
    async def check(self, url: str) -> PinnedUrl: ...


class PeerMemory(Protocol):
    """Where the peers we know are kept across restarts."""

    def load(self) -> list[tuple[str, str, str]]: ...
    def save(self, peers: Iterable[Peer]) -> None: ...


class FilePeerMemory:
    """Peer memory in a JSON file (`peers_path`), written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[tuple[str, str, str]]:
        return load_remembered(self.path)

    def save(self, peers: Iterable[Peer]) -> None:
        save_remembered(self.path, peers)


def _bootstrap_retry(attempts: int) -> AsyncRetrying:
    """The one retry policy for registering with a friend."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        retry=retry_if_exception_type(PeerUnavailable),
        reraise=True,
    )


def _loop_time() -> float:
    # The loop's clock: real in a peer, virtual in the simulator.
    return asyncio.get_running_loop().time()


class Membership:
    """Keeps the peer table true: who we know, and who knows us.

    Framework-free: the calls to other peers, the URL guard and the peer memory are
    injected, and time is the event loop's, so the simulator runs this class unchanged.
    """

    def __init__(
        self,
        settings: PeerSettings,
        table: PeerTable,
        calls: PeerCalls,
        guard: UrlGuard,
        memory: PeerMemory,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or _loop_time
        self.table = table
        self.calls = calls
        self.guard = guard
        self.memory = memory
        self._last_bootstrap = 0.0
        self._announced: dict[str, float] = {}
        self._bootstrap_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # -- contacts ---------------------------------------------------------

    async def verify(self, url: str, pinned: PinnedUrl | None = None) -> tuple[str, str]:
        """GET url/health and return (peer_id, grpc_address). Raises RegistrationError."""
        return await self.calls.health(url, pinned)

    async def guard_url(self, url: str) -> PinnedUrl:
        """The SSRF check for a URL someone else gave us. Raises RegistrationError."""
        try:
            return await self.guard.check(url)
        except UrlRefused as exc:
            raise RegistrationError(exc.reason, str(exc)) from None

    async def register(self, url: str) -> Peer:
        """Handle an incoming POST /register: verify the URL answers as a peer, add it."""
        try:
            url = validate_http_url(url)
        except ValueError as exc:
            metrics.REGISTRATIONS.labels(result="refused", reason="invalid_url").inc()
            raise RegistrationError("invalid_url", f"url: {exc}") from None
        if url == self.settings.self_url:
            metrics.REGISTRATIONS.labels(result="refused", reason="self").inc()
            raise RegistrationError("self", "a peer cannot register itself", 409)
        try:
            pinned = await self.guard_url(url)
            peer_id, grpc_address = await self.verify(url, pinned)
            peer = self._admit(peer_id, url, grpc_address, network_of(pinned.address))
        except RegistrationError as exc:
            metrics.REGISTRATIONS.labels(result="refused", reason=exc.reason).inc()
            raise
        metrics.REGISTRATIONS.labels(result="accepted", reason="ok").inc()
        return peer

    async def welcome(self, url: str) -> RegisterResponse:
        """POST /register's answer: register the peer at `url`, then tell it whom we know."""
        peer = await self.register(url)
        settings = self.settings
        return RegisterResponse(
            registered=peer.info(),
            peer_id=settings.peer_id,
            url=settings.self_url,
            grpc_address=settings.grpc_advertise,
            peers=[p.info() for p in self.table.peers() if p.state != "down"],
        )

    def _admit(self, peer_id: str, url: str, grpc_address: str, network: str | None = None) -> Peer:
        try:
            peer, added = self.table.upsert(peer_id, url, grpc_address, network=network)
        except ValueError:
            raise RegistrationError(
                "self", "that URL answers with this peer's own id", 409
            ) from None
        except TableFullError as exc:
            raise RegistrationError("table_full", str(exc), 503) from None
        if added:
            logger.info("peer %s joined at %s", peer_id, url)
            self._changed()
        return peer

    async def announce(self, url: str, pinned: PinnedUrl | None = None) -> RegisterResponse:
        """POST url/register {self_url}: ask a peer to add us. Returns its answer."""
        return await self.calls.register(url, pinned)

    async def introduce(self, url: str, *, learn: bool = False) -> None:
        """Meet a peer learned second-hand: register with it, add it from its answer.

        With `learn`, also meet the peers it knows that we do not (one level deep).
        """
        try:
            pinned = await self.guard_url(url)
            answer = await self.announce(url, pinned)
            self._admit(answer.peer_id, url, answer.grpc_address, network_of(pinned.address))
        except (PeerUnavailable, RegistrationError) as exc:
            logger.info("could not introduce ourselves to %s: %s", url, exc)
            return
        if learn:
            await self._learn(answer.peers)

    # -- bootstrap --------------------------------------------------------

    async def bootstrap(self) -> BootstrapResponse:
        """Register with the primary friend, else the backup; learn their peers."""
        async with self._bootstrap_lock:
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
                    answer = await self._register_with_friend(url)
                except (PeerUnavailable, RegistrationError) as exc:
                    errors.append(f"{url}: {exc}")
                    logger.warning("bootstrap via %s failed: %s", url, exc)
                    continue
                learned = await self._learn(answer.peers)
                logger.info(
                    "bootstrapped via %s (%s), learned %d peers", url, answer.peer_id, learned
                )
                return BootstrapResponse(
                    ok=True,
                    friend=url,
                    friend_peer_id=answer.peer_id,
                    tried=tried,
                    errors=errors,
                    learned=learned,
                )
            return BootstrapResponse(ok=False, friend=None, tried=tried, errors=errors)

    async def _register_with_friend(self, url: str) -> RegisterResponse:
        async for attempt in _bootstrap_retry(self.settings.bootstrap_attempts):
            with attempt:
                answer = await self.announce(url)
                self._admit(answer.peer_id, url, answer.grpc_address)
                return answer
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _learn(self, peers: Iterable[object]) -> int:
        urls = []
        for info in peers:
            peer_id, url = getattr(info, "peer_id", ""), getattr(info, "url", "")
            if peer_id == self.settings.peer_id or peer_id in self.table or not url:
                continue
            if getattr(info, "state", "alive") == "down":
                continue
            urls.append(url)
        urls = urls[:_MAX_INTRODUCTIONS]
        await asyncio.gather(*(self.introduce(u) for u in urls))
        return sum(1 for u in urls if self.table.by_url(u) is not None)

    # -- heartbeat --------------------------------------------------------

    async def check(self, peer: Peer) -> None:
        """One heartbeat contact with `peer`."""
        try:
            peer_id, grpc_address = await self.verify(peer.url)
        except RegistrationError as exc:
            logger.debug("heartbeat: %s failed: %s", peer.peer_id, exc.detail)
            self.table.mark_failed(peer.peer_id)
            return
        if peer_id != peer.peer_id:  # a different peer now answers at that URL
            self.table.remove(peer.peer_id)
            self._admit(peer_id, peer.url, grpc_address)
            return
        peer.grpc_address = grpc_address or peer.grpc_address
        if self.table.mark_alive(peer.peer_id):
            logger.info("peer %s is back; registering with it again", peer.peer_id)
            self._announced[peer.peer_id] = self._clock()
            self._spawn(self.introduce(peer.url, learn=True))
        elif self._announce_due(peer.peer_id):
            # Reachability can be one-way, and a partition can leave both sides with
            # live peers: re-register now and then, so that a peer which pruned us
            # takes us back, and learn whom it knows that we lost.
            self._spawn(self.introduce(peer.url, learn=True))

    def _announce_due(self, peer_id: str) -> bool:
        """True every peer_ttl_s / 2 per peer (we must be back before it prunes again)."""
        now = self._clock()
        if now - self._announced.setdefault(peer_id, now) < self.settings.peer_ttl_s / 2:
            return False
        self._announced[peer_id] = now
        return True

    async def heartbeat_once(self) -> None:
        peers = self.table.peers()
        results = await asyncio.gather(*(self.check(p) for p in peers), return_exceptions=True)
        for peer, result in zip(peers, results, strict=True):
            if isinstance(result, Exception):  # one bad entry must not stop pruning
                logger.warning("heartbeat of %s failed: %r", peer.peer_id, result)
                self.table.mark_failed(peer.peer_id)
        pruned = self.table.prune()
        for peer in pruned:
            self._announced.pop(peer.peer_id, None)
            logger.info("pruned peer %s (unseen for %.0f s)", peer.peer_id, self.table.ttl_s)
        if pruned:
            metrics.PRUNES.inc(len(pruned))
            self._changed()
        self._update_gauges()
        if (
            any(u != self.settings.self_url for u in self.settings.friends)
            and not any(p.friend and p.state == "alive" for p in self.table.peers())
            and self._clock() - self._last_bootstrap >= self.settings.bootstrap_retry_s
            and not self._bootstrap_lock.locked()  # one bootstrap at a time: no pile-up
        ):
            logger.info("no friend reachable yet; bootstrapping again")
            self._spawn(self._bootstrap_quietly())

    async def _bootstrap_quietly(self) -> None:
        await self.bootstrap()

    async def run(self) -> None:
        """Background life of a peer: remember, bootstrap, then heartbeat forever."""
        for peer_id, url, grpc_address in self.memory.load():
            if peer_id != self.settings.peer_id and url != self.settings.self_url:
                try:
                    self.table.upsert(peer_id, url, grpc_address, seen=False)
                except (ValueError, TableFullError):
                    continue
        remembered = [p.url for p in self.table.peers()]
        if self.settings.friends:
            await self.bootstrap()
        await asyncio.gather(
            *(self.introduce(u) for u in remembered if not self.table.is_friend_url(u))
        )
        self._update_gauges()
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self.heartbeat_once()
            except Exception:
                logger.exception("heartbeat round failed")

    # -- helpers ----------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _changed(self) -> None:
        self.memory.save(self.table.peers())
        self._update_gauges()

    def _update_gauges(self) -> None:
        for state, count in self.table.counts().items():
            metrics.PEERS.labels(state=state).set(count)

    async def settle(self) -> None:
        """Wait until the introductions and bootstraps spawned so far have finished."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
