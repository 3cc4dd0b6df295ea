"""A bounded-degree overlay: HyParView's active and passive views (Leitão et al., 2007).

Every peer keeps a small **active view** (the neighbours it searches through and watches)
and a larger **passive view** (peers it knows of, to replace active ones that fail):

    join         a newcomer asks a contact; the contact takes it as a neighbour and sends
                 a FORWARD_JOIN random walk of `active_walk` hops through its own active
                 view: the peer where the walk ends takes the newcomer as a neighbour too,
                 and the peer `passive_walk` hops from the end keeps it as a passive entry
                 (joins spread through the overlay instead of landing on the contact alone)
    full view    a peer whose active view is full makes room: a random neighbour is moved
                 to the passive view (DISCONNECT), never refused; but never one of its
                 `protected` longest-serving neighbours or a `keep` peer (its friends), so
                 a flood of joins (sybils) churns only the rest of the view
    tried / new  passive entries that served as neighbours for a ping period or more, or
                 accepted our request ("tried", as Bitcoin's addrman calls them), are never
                 evicted for hearsay ("new": learned from joins and shuffles), and repair
                 tries them first
    failure      an active neighbour that fails (a ping, or a search that timed out on it)
                 is dropped to nothing and replaced from the passive view: NEIGHBOR with
                 high priority when the active view is empty (cannot be refused), low
                 otherwise (refused by a full peer; the next passive entry is tried)
    shuffle      every `shuffle_interval_s` a peer sends a few active and passive entries on
                 a random walk; the peer at its end answers with as many of its own; both
                 merge them into their passive views (fresh knowledge, bounded)
    top up       a peer whose active view is not full asks one passive peer a round (low
                 priority), so small networks become full meshes and views stay near full

The cost of failure detection is the active view's size, not the network's. Framework-free:
the calls to other peers are an injected `OverlayLink`, randomness an injected
`random.Random`, what happens to the views is reported to injected `OverlayEvents` (a
peer keeps its search table and its metrics with them), so the simulator runs this class
unchanged over thousands of peers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "NO_OVERLAY_EVENTS",
    "Descriptor",
    "Overlay",
    "OverlayConfig",
    "OverlayEvents",
    "OverlayLink",
    "OverlayStats",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A peer as the overlay knows it: its id and where to reach it."""

    peer_id: str
    url: str


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    """View sizes and walk lengths; docs/scale.md says how the defaults were chosen."""

    active_size: int = 6
    passive_size: int = 36
    active_walk: int = 6  # ARWL
    passive_walk: int = 3  # PRWL
    shuffle_active: int = 3  # ka: active entries sent in a shuffle
    shuffle_passive: int = 4  # kp: passive entries sent in a shuffle
    shuffle_walk: int = 6
    shuffle_interval_s: float = 10.0
    ping_interval_s: float = 5.0
    protected: int = 3  # longest-serving neighbours a newcomer never displaces


class OverlayLink(Protocol):
    """The overlay's messages to one other peer. Each raises ConnectionError (or
    OSError, TimeoutError) when the peer cannot be reached."""

    async def join(
        self, target: Descriptor, new: Descriptor
    ) -> tuple[Descriptor, list[Descriptor]]:
        """Ask `target` to take `new` in. Returns the target as it answered (a friend is
        known by its URL only until then) and the peers it offers for the passive view."""
        ...

    async def forward_join(
        self, target: Descriptor, new: Descriptor, ttl: int, sender: Descriptor
    ) -> None: ...
    async def neighbor(self, target: Descriptor, me: Descriptor, high: bool) -> bool: ...
    async def disconnect(self, target: Descriptor, me: Descriptor) -> None: ...
    async def shuffle(
        self, target: Descriptor, origin: Descriptor, entries: list[Descriptor], ttl: int,
        sender: Descriptor,
    ) -> None: ...  # fmt: skip
    async def shuffle_reply(
        self, target: Descriptor, me: Descriptor, entries: list[Descriptor]
    ) -> None: ...
    async def ping(self, target: Descriptor, me: Descriptor) -> bool:
        """Whether `target`, which answered, still holds `me` as its neighbour."""
        ...


class OverlayEvents(Protocol):
    """What the overlay reports as it works (a peer: its search table and metrics)."""

    def sent(self, kind: str) -> None: ...
    def activated(self, peer: Descriptor) -> None: ...
    def deactivated(self, peer: Descriptor) -> None: ...
    def failed(self, peer: Descriptor) -> None: ...
    def replaced(self) -> None: ...
    def shuffled(self) -> None: ...


class _NoEvents:
    def sent(self, kind: str) -> None:
        pass

    def activated(self, peer: Descriptor) -> None:
        pass

    def deactivated(self, peer: Descriptor) -> None:
        pass

    def failed(self, peer: Descriptor) -> None:
        pass

    def replaced(self) -> None:
        pass

    def shuffled(self) -> None:
        pass


NO_OVERLAY_EVENTS: OverlayEvents = _NoEvents()


@dataclass(slots=True)
class OverlayStats:
    """Messages this peer sent, by kind, and what it did to its views."""

    sent: dict[str, int] = field(default_factory=dict)
    replacements: int = 0
    failures: int = 0
    shuffles: int = 0

    def count(self, kind: str) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + 1


_FAILED = (ConnectionError, OSError, TimeoutError)


class Overlay:
    """One peer's views and the HyParView decisions that keep them."""

    def __init__(
        self,
        me: Descriptor,
        link: OverlayLink,
        config: OverlayConfig | None = None,
        rng: random.Random | None = None,
        events: OverlayEvents = NO_OVERLAY_EVENTS,
        keep: Callable[[Descriptor], bool] | None = None,
    ) -> None:
        self.me = me
        self.keep = keep or (lambda peer: False)
        self.link = link
        self.config = config or OverlayConfig()
        self.rng = rng or random.Random()
        self.events = events
        self.active: dict[str, Descriptor] = {}
        self.passive: dict[str, Descriptor] = {}
        self.stats = OverlayStats()
        self._repairing = False
        self._repair_again = False
        self._sent_in_shuffle: list[str] = []  # what our last shuffle gave away
        self._left: dict[str, float] = {}  # peer id -> when it last disconnected us
        self._since: dict[str, float] = {}  # active peer id -> when it became one
        self._tried: set[str] = set()  # passive ids that were verified neighbours

    # -- views ------------------------------------------------------------------------

    def neighbours(self) -> list[Descriptor]:
        return list(self.active.values())

    def _add_passive(
        self, peer: Descriptor, *, avoid: Sequence[str] = (), tried: bool = False
    ) -> None:
        """Keep `peer` as a passive entry. Hearsay (`tried` false) never evicts a tried
        entry and never changes a tried entry's address."""
        if peer.peer_id == self.me.peer_id or peer.peer_id in self.active:
            return
        if peer.peer_id in self.passive:
            if tried or peer.peer_id not in self._tried:
                self.passive[peer.peer_id] = peer  # a newer address wins
            if tried:
                self._tried.add(peer.peer_id)
            return
        if len(self.passive) >= self.config.passive_size:
            pool = [p for p in self.passive if p not in self._tried]
            if not pool and not tried:
                return  # all tried: hearsay does not displace them
            pool = pool or list(self.passive)
            victim = self.rng.choice([p for p in pool if p in avoid] or pool)
            del self.passive[victim]
            self._tried.discard(victim)
        self.passive[peer.peer_id] = peer
        if tried:
            self._tried.add(peer.peer_id)

    def remember(self, peer: Descriptor) -> None:
        """A peer known from elsewhere (this peer's memory of a previous run): hearsay."""
        self._add_passive(peer)

    def _forget(self, peer_id: str) -> None:
        self.passive.pop(peer_id, None)
        self._tried.discard(peer_id)

    def _victim(self) -> str:
        """The neighbour a newcomer displaces: a random one, but not a `keep` peer nor one
        of the `protected` longest-serving (unless nothing else is left)."""
        ids = list(self.active)
        movable = [i for i in ids if not self.keep(self.active[i])]
        protected = min(self.config.protected, len(movable) - 1)
        if protected > 0:
            oldest = sorted(movable, key=lambda i: self._since.get(i, 0.0))[:protected]
            movable = [i for i in movable if i not in oldest]
        return self.rng.choice(movable or ids)

    async def _add_active(self, peer: Descriptor) -> None:
        """Take `peer` as a neighbour, making room by demoting a random one if full.

        The views change before any message goes out, so a concurrent change never finds
        them over their bounds.
        """
        if peer.peer_id == self.me.peer_id or peer.peer_id in self.active:
            return
        now = asyncio.get_running_loop().time()
        dropped = []  # (peer, served a ping period or more: a tried entry)
        while len(self.active) >= self.config.active_size:
            old = self.active.pop(self._victim())
            served = now - self._since.pop(old.peer_id, now) >= self.config.ping_interval_s
            dropped.append((old, served))
        self._forget(peer.peer_id)
        self.active[peer.peer_id] = peer
        self._since[peer.peer_id] = now
        for old, _ in dropped:
            self.events.deactivated(old)
        self.events.activated(peer)
        for old, served in dropped:
            self._add_passive(old, tried=served)
            await self._send("disconnect", self.link.disconnect(old, self.me))

    def _count(self, kind: str) -> None:
        self.stats.count(kind)
        self.events.sent(kind)

    async def _send(self, kind: str, call: Awaitable[object]) -> bool:
        self._count(kind)
        try:
            await call
        except _FAILED:
            return False
        return True

    # -- join -------------------------------------------------------------------------

    async def join(self, contact: Descriptor) -> tuple[Descriptor, list[Descriptor]]:
        """Join through `contact` (a friend): it becomes a neighbour, the peers it offers
        passive entries. Returns both; raises what the link raises if it does not answer."""
        self._count("join")
        contact, offered = await self.link.join(contact, self.me)
        await self._add_active(contact)
        for peer in offered:
            self._add_passive(peer)
        return contact, offered

    async def on_join(self, new: Descriptor) -> None:
        await self._add_active(new)
        for peer in [p for p in self.active.values() if p.peer_id != new.peer_id]:
            await self._send(
                "forward_join",
                self.link.forward_join(peer, new, self.config.active_walk, self.me),
            )

    async def on_forward_join(self, new: Descriptor, ttl: int, sender: Descriptor) -> None:
        if new.peer_id == self.me.peer_id:
            return
        if ttl <= 0 or len(self.active) <= 1:
            await self._connect(new)
            return
        if ttl == self.config.passive_walk:
            self._add_passive(new)
        others = [p for p in self.active.values() if p.peer_id not in (sender.peer_id, new.peer_id)]
        if not others:
            await self._connect(new)
            return
        target = self.rng.choice(others)
        if not await self._send(
            "forward_join", self.link.forward_join(target, new, ttl - 1, self.me)
        ):
            await self.failed(target.peer_id)
            await self._connect(new)

    async def _connect(self, peer: Descriptor) -> None:
        """Become `peer`'s neighbour: it takes us with high priority (it just joined)."""
        if peer.peer_id in self.active or peer.peer_id == self.me.peer_id:
            return
        try:
            accepted = await self._request(peer, True)
        except _FAILED:
            return
        if accepted:
            await self._add_active(peer)

    async def _request(self, peer: Descriptor, high: bool) -> bool:
        """NEIGHBOR: True if `peer` accepted and has not disconnected us since (its
        DISCONNECT can overtake its answer; then it is only a passive entry)."""
        self._count("neighbor")
        asked_at = asyncio.get_running_loop().time()
        accepted = await self.link.neighbor(peer, self.me, high)
        return accepted and self.still_wanted(peer, asked_at)

    def still_wanted(self, peer: Descriptor, asked_at: float) -> bool:
        """False if `peer` disconnected us after `asked_at` (it is kept as passive)."""
        if self._left.get(peer.peer_id, float("-inf")) < asked_at:
            return True
        self._add_passive(peer, tried=True)
        return False

    # -- the other messages -------------------------------------------------------------

    async def on_neighbor(self, peer: Descriptor, high: bool) -> bool:
        """A passive peer of someone asks to be its neighbour: accept unless full and low."""
        if peer.peer_id in self.active:
            return True
        if not high and len(self.active) >= self.config.active_size:
            self._add_passive(peer)
            return False
        await self._add_active(peer)
        return True

    async def on_disconnect(self, peer: Descriptor) -> None:
        self._left[peer.peer_id] = asyncio.get_running_loop().time()
        while len(self._left) > self.config.passive_size:
            del self._left[next(iter(self._left))]
        await self._demote(peer.peer_id)

    async def _demote(self, peer_id: str) -> None:
        """Move a neighbour that no longer holds us to the passive view, and repair."""
        gone = self.active.pop(peer_id, None)
        if gone is not None:
            now = asyncio.get_running_loop().time()
            served = now - self._since.pop(peer_id, now) >= self.config.ping_interval_s
            self.events.deactivated(gone)
            self._add_passive(gone, tried=served)
            await self.repair()

    async def on_shuffle(
        self, origin: Descriptor, entries: list[Descriptor], ttl: int, sender: Descriptor
    ) -> None:
        others = [
            p for p in self.active.values() if p.peer_id not in (sender.peer_id, origin.peer_id)
        ]
        if ttl > 0 and others:
            target = self.rng.choice(others)
            if await self._send(
                "shuffle", self.link.shuffle(target, origin, entries, ttl - 1, self.me)
            ):
                return
            await self.failed(target.peer_id)
        if origin.peer_id == self.me.peer_id:
            return
        pool = list(self.passive.values())
        reply = self.rng.sample(pool, min(len(entries), len(pool)))
        await self._send("shuffle_reply", self.link.shuffle_reply(origin, self.me, reply))
        for entry in [origin, *entries]:
            self._add_passive(entry, avoid=[p.peer_id for p in reply])

    async def on_shuffle_reply(self, entries: list[Descriptor]) -> None:
        for entry in entries:
            self._add_passive(entry, avoid=self._sent_in_shuffle)

    # -- periodic work ------------------------------------------------------------------

    async def shuffle(self) -> None:
        """One shuffle round: a sample of our views on a random walk."""
        if not self.active:
            await self.repair()
            return
        config = self.config
        active = self.rng.sample(
            list(self.active.values()), min(config.shuffle_active, len(self.active))
        )
        passive = self.rng.sample(
            list(self.passive.values()), min(config.shuffle_passive, len(self.passive))
        )
        entries = [self.me, *active, *passive]
        self._sent_in_shuffle = [p.peer_id for p in entries]
        target = self.rng.choice(list(self.active.values()))
        self.stats.shuffles += 1
        self.events.shuffled()
        if not await self._send(
            "shuffle", self.link.shuffle(target, self.me, entries, config.shuffle_walk, self.me)
        ):
            await self.failed(target.peer_id)

    async def ping_neighbours(self) -> None:
        """Failure detection: one ping per active neighbour (the cost is the view's size),
        then one low-priority top-up request if the view is not full."""
        peers = list(self.active.values())
        answers = await asyncio.gather(*(self.ping(p) for p in peers))
        for peer, ok in zip(peers, answers, strict=True):
            if not ok:
                await self.failed(peer.peer_id)
        await self.top_up()

    async def ping(self, peer: Descriptor) -> bool:
        """One ping: True if `peer` answered (as itself). One that answers but no longer
        holds us as its neighbour (a DISCONNECT overtook the answer that made it one) is
        moved to the passive view: the views become symmetric again."""
        self._count("ping")
        sent = asyncio.get_running_loop().time()
        try:
            mutual = await self.link.ping(peer, self.me)
        except _FAILED:
            return False
        if not mutual and self._since.get(peer.peer_id, sent) < sent:
            await self._demote(peer.peer_id)  # not if it became a neighbour again since
        return True

    async def top_up(self) -> None:
        """Ask one random passive peer to become a neighbour, if the active view has room.

        Low priority, so a full peer refuses (and keeps us as a passive entry): views grow
        to full where there is room, and a network smaller than the view becomes a mesh.
        """
        if not self.active or len(self.active) >= self.config.active_size or self._repairing:
            return
        candidates = list(self.passive.values())
        if not candidates:
            return
        peer = self.rng.choice(candidates)
        try:
            accepted = await self._request(peer, False)
        except _FAILED:
            self._forget(peer.peer_id)
            return
        if accepted:
            await self.adopt(peer)

    async def adopt(self, peer: Descriptor) -> None:
        """Take `peer`, which accepted our NEIGHBOR request, as a neighbour (even if the view
        filled meanwhile: a random one makes room, so the views stay symmetric)."""
        await self._add_active(peer)

    async def failed(self, peer_id: str) -> None:
        """`peer_id` did not answer (a ping, a forward, a search that timed out on it)."""
        gone = self.active.pop(peer_id, None)
        if gone is None:
            self._forget(peer_id)
            return
        self._since.pop(peer_id, None)
        self.stats.failures += 1
        self.events.deactivated(gone)
        self.events.failed(gone)
        await self.repair()

    async def repair(self) -> None:
        """Fill the active view from the passive one: high priority when it is empty.

        One repair at a time; a call that arrives meanwhile (another neighbour left) makes
        the running one look again when it is done, so no loss goes unanswered.
        """
        if self._repairing:
            self._repair_again = True
            return
        self._repairing = True
        try:
            while True:
                self._repair_again = False
                await self._fill()
                if not self._repair_again:
                    return
        finally:
            self._repairing = False

    async def _fill(self) -> None:
        asked: set[str] = set()
        while len(self.active) < self.config.active_size:
            candidates = [p for p in self.passive.values() if p.peer_id not in asked]
            if not candidates:
                return
            known = [p for p in candidates if p.peer_id in self._tried]
            peer = self.rng.choice(known or candidates)  # tried entries first
            asked.add(peer.peer_id)
            high = not self.active
            try:
                accepted = await self._request(peer, high)
            except _FAILED:
                self._forget(peer.peer_id)  # gone: forget it
                continue
            if accepted:
                await self._add_active(peer)
                self.stats.replacements += 1
                self.events.replaced()
            elif self.active:
                return  # refused at low priority: the next round tries again

    async def run(self, ping_round: Callable[[], Awaitable[None]] | None = None) -> None:
        """Pings (or `ping_round`, a caller's round that includes them) and shuffles for
        ever, each on its own period (jittered); a round that raises is logged, not fatal."""
        config = self.config

        async def every(period: float, work: Callable[[], Awaitable[None]]) -> None:
            await asyncio.sleep(self.rng.uniform(0, period))
            while True:
                try:
                    await work()
                except Exception:
                    logger.exception("overlay round failed")
                await asyncio.sleep(period * self.rng.uniform(0.9, 1.1))

        await asyncio.gather(
            every(config.ping_interval_s, ping_round or self.ping_neighbours),
            every(config.shuffle_interval_s, self.shuffle),
        )
