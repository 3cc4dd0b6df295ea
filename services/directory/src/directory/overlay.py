"""A bounded-degree overlay: HyParView's active and passive views (Leitão et al., 2007).

Every peer keeps a small **active view** (the neighbours it searches through and watches)
and a larger **passive view** (peers it knows of, to replace active ones that fail):

    join         a newcomer asks a contact; the contact takes it as a neighbour and sends
                 a FORWARD_JOIN random walk of `active_walk` hops through its own active
                 view: the peer where the walk ends takes the newcomer as a neighbour too,
                 and the peer `passive_walk` hops from the end keeps it as a passive entry
                 (joins spread through the overlay instead of landing on the contact alone)
    full view    a peer whose active view is full makes room: a random neighbour is moved
                 to the passive view (DISCONNECT), never refused
    failure      an active neighbour that fails (a ping, or a search that timed out on it)
                 is dropped to nothing and replaced from the passive view: NEIGHBOR with
                 high priority when the active view is empty (cannot be refused), low
                 otherwise (refused by a full peer; the next passive entry is tried)
    shuffle      every `shuffle_interval_s` a peer sends a few active and passive entries on
                 a random walk; the peer at its end answers with as many of its own; both
                 merge them into their passive views (fresh knowledge, bounded)

The cost of failure detection is the active view's size, not the network's. Framework-free:
the calls to other peers are an injected `OverlayLink`, randomness an injected
`random.Random`, so the simulator runs this class unchanged over thousands of peers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Descriptor", "Overlay", "OverlayConfig", "OverlayLink", "OverlayStats"]

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


class OverlayLink(Protocol):
    """The overlay's messages to one other peer. Each raises ConnectionError (or
    OSError, TimeoutError) when the peer cannot be reached."""

    async def join(self, target: Descriptor, new: Descriptor) -> None: ...
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
    async def ping(self, target: Descriptor) -> None: ...


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
    ) -> None:
        self.me = me
        self.link = link
        self.config = config or OverlayConfig()
        self.rng = rng or random.Random()
        self.active: dict[str, Descriptor] = {}
        self.passive: dict[str, Descriptor] = {}
        self.stats = OverlayStats()
        self._repairing = False
        self._repair_again = False
        self._sent_in_shuffle: list[str] = []  # what our last shuffle gave away

    # -- views ------------------------------------------------------------------------

    def neighbours(self) -> list[Descriptor]:
        return list(self.active.values())

    def _add_passive(self, peer: Descriptor, *, avoid: Sequence[str] = ()) -> None:
        if peer.peer_id == self.me.peer_id or peer.peer_id in self.active:
            return
        if peer.peer_id in self.passive:
            self.passive[peer.peer_id] = peer  # a newer address wins
            return
        if len(self.passive) >= self.config.passive_size:
            victims = [p for p in self.passive if p in avoid] or list(self.passive)
            del self.passive[self.rng.choice(victims)]
        self.passive[peer.peer_id] = peer

    async def _add_active(self, peer: Descriptor) -> None:
        """Take `peer` as a neighbour, making room by demoting a random one if full.

        The views change before any message goes out, so a concurrent change never finds
        them over their bounds.
        """
        if peer.peer_id == self.me.peer_id or peer.peer_id in self.active:
            return
        dropped = []
        while len(self.active) >= self.config.active_size:
            dropped.append(self.active.pop(self.rng.choice(list(self.active))))
        self.passive.pop(peer.peer_id, None)
        self.active[peer.peer_id] = peer
        for old in dropped:
            self._add_passive(old)
            await self._send("disconnect", self.link.disconnect(old, self.me))

    async def _send(self, kind: str, call: Awaitable[object]) -> bool:
        self.stats.count(kind)
        try:
            await call
        except _FAILED:
            return False
        return True

    # -- join -------------------------------------------------------------------------

    async def join(self, contact: Descriptor) -> bool:
        """Join through `contact` (a friend). True if it answered."""
        if not await self._send("join", self.link.join(contact, self.me)):
            return False
        await self._add_active(contact)
        return True

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
        if await self._send("neighbor", self.link.neighbor(peer, self.me, True)):
            await self._add_active(peer)

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
        if self.active.pop(peer.peer_id, None) is not None:
            self._add_passive(peer)
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
        if not await self._send(
            "shuffle", self.link.shuffle(target, self.me, entries, config.shuffle_walk, self.me)
        ):
            await self.failed(target.peer_id)

    async def ping_neighbours(self) -> None:
        """Failure detection: one ping per active neighbour (the cost is the view's size)."""
        for peer in list(self.active.values()):
            if not await self._send("ping", self.link.ping(peer)):
                await self.failed(peer.peer_id)

    async def failed(self, peer_id: str) -> None:
        """`peer_id` did not answer (a ping, a forward, a search that timed out on it)."""
        if self.active.pop(peer_id, None) is None:
            self.passive.pop(peer_id, None)
            return
        self.stats.failures += 1
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
        tried: set[str] = set()
        while len(self.active) < self.config.active_size:
            candidates = [p for p in self.passive.values() if p.peer_id not in tried]
            if not candidates:
                return
            peer = self.rng.choice(candidates)
            tried.add(peer.peer_id)
            high = not self.active
            try:
                self.stats.count("neighbor")
                accepted = await self.link.neighbor(peer, self.me, high)
            except _FAILED:
                self.passive.pop(peer.peer_id, None)  # gone: forget it
                continue
            if accepted:
                await self._add_active(peer)
                self.stats.replacements += 1
            elif self.active:
                return  # refused at low priority: the next round tries again

    async def run(self) -> None:
        """Pings and shuffles for ever, each on its own period (jittered)."""
        config = self.config

        async def every(period: float, work: Callable[[], Awaitable[None]]) -> None:
            await asyncio.sleep(self.rng.uniform(0, period))
            while True:
                await work()
                await asyncio.sleep(period * self.rng.uniform(0.9, 1.1))

        await asyncio.gather(
            every(config.ping_interval_s, self.ping_neighbours),
            every(config.shuffle_interval_s, self.shuffle),
        )
