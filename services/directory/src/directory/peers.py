"""The peer table: the neighbours a peer searches through, and how recently each answered.

In a running peer the table is the overlay's active view (`directory.membership` keeps the
two equal); the simulator also fills it from generated graphs. Framework-free: plain data
and methods, driven by unit tests with a fake clock.

States:
    alive    answered the last contact
    suspect  the last contact failed (still tried by searches, after alive peers);
             membership pings it at once (`on_suspect`) and drops it if that fails
    down     a friend unseen for longer than the TTL (`prune`, used by tables that are
             not an overlay view: the simulator's)
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from peerfind.api import PeerInfo, PeerState

__all__ = ["Peer", "PeerTable", "TableFullError", "load_remembered", "save_remembered"]

logger = logging.getLogger(__name__)


class TableFullError(Exception):
    """The table is at its bound; newcomers never evict known peers."""


@dataclass(slots=True)
class Peer:
    peer_id: str
    url: str
    grpc_address: str = ""
    friend: bool = False
    state: PeerState = "alive"
    last_seen: float = 0.0
    failures: int = 0
    network: str | None = None  # /24 or /64 it was admitted from (None: friend or memory)
    key_id: str = ""  # the key that proved peer_id (directory.identity)

    def info(self) -> PeerInfo:
        return PeerInfo(
            peer_id=self.peer_id,
            url=self.url,
            grpc_address=self.grpc_address,
            state=self.state,
            last_seen=self.last_seen,
            friend=self.friend,
            key_id=self.key_id,
        )


class PeerTable:
    """Known peers, keyed by peer id, bounded to `max_peers` entries.

    Registration's operations are O(1): URLs and per-network counts are indexed (a
    simulator builds thousands of these). Which neighbours a search goes to is the
    router's choice (`directory.search`), over the table's few entries.
    """

    def __init__(
        self,
        self_id: str,
        ttl_s: float,
        max_peers: int,
        friend_urls: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        max_per_network: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.self_id = self_id
        self.ttl_s = ttl_s
        self.max_peers = max_peers
        self.max_per_network = max_per_network or max_peers
        self.friend_urls = {u.rstrip("/") for u in friend_urls if u}
        self._clock = clock
        self._rng = rng or random.Random()
        self._peers: dict[str, Peer] = {}
        self._ids: list[str] = []  # the keys of _peers, for O(1) random picks
        self._slot: dict[str, int] = {}  # peer id -> its index in _ids
        self._by_url: dict[str, str] = {}
        self._per_network: Counter[str] = Counter()
        self.on_suspect: Callable[[str], None] | None = None
        """Told when a peer goes from alive to suspect (membership confirms with a ping)."""

    def _add(self, peer: Peer) -> None:
        self._peers[peer.peer_id] = peer
        self._slot[peer.peer_id] = len(self._ids)
        self._ids.append(peer.peer_id)
        self._by_url[peer.url] = peer.peer_id
        if peer.network:
            self._per_network[peer.network] += 1

    def _drop(self, peer_id: str) -> Peer | None:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return None
        slot, last = self._slot.pop(peer_id), self._ids.pop()
        if last != peer_id:
            self._ids[slot], self._slot[last] = last, slot
        if self._by_url.get(peer.url) == peer_id:
            del self._by_url[peer.url]
        if peer.network:
            self._per_network[peer.network] -= 1
            if not self._per_network[peer.network]:
                del self._per_network[peer.network]
        return peer

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def get(self, peer_id: str) -> Peer | None:
        return self._peers.get(peer_id)

    def by_url(self, url: str) -> Peer | None:
        peer_id = self._by_url.get(url.rstrip("/"))
        return None if peer_id is None else self._peers[peer_id]

    def now(self) -> float:
        """The table's clock (last_seen is on it)."""
        return self._clock()

    def unseen(self, age_s: float) -> list[Peer]:
        """Peers with no successful contact for longer than `age_s`."""
        cutoff = self._clock() - age_s
        return [p for p in self._peers.values() if p.last_seen < cutoff]

    def network_count(self, network: str) -> int:
        """Peers admitted from `network` (a /24 or /64)."""
        return self._per_network[network]

    def is_friend_url(self, url: str) -> bool:
        return url.rstrip("/") in self.friend_urls

    def upsert(
        self,
        peer_id: str,
        url: str,
        grpc_address: str = "",
        *,
        seen: bool = True,
        network: str | None = None,
        key_id: str = "",
    ) -> tuple[Peer, bool]:
        """Add or refresh a peer verified at `url`. Returns (peer, was_added).

        A peer id that moved to a new URL is updated in place; a URL that now
        answers with another peer id replaces the old entry. Raises ValueError
        for our own id and TableFullError when a newcomer finds the table full,
        in total or for its source `network` (friends are always admitted).
        """
        if peer_id == self.self_id:
            raise ValueError("a peer cannot register itself")
        url = url.rstrip("/")
        now = self._clock()
        friend = self.is_friend_url(url)
        stale = self.by_url(url)
        if stale is not None and stale.peer_id != peer_id:
            self._drop(stale.peer_id)
        peer = self._peers.get(peer_id)
        if peer is not None:
            if peer.url != url:
                if self._by_url.get(peer.url) == peer_id:
                    del self._by_url[peer.url]
                self._by_url[url] = peer_id
            peer.url = url
            peer.grpc_address = grpc_address or peer.grpc_address
            peer.friend = peer.friend or friend
            peer.key_id = key_id or peer.key_id
            if seen:
                peer.state, peer.last_seen, peer.failures = "alive", now, 0
            return peer, False
        if not friend:
            if len(self._peers) >= self.max_peers:
                raise TableFullError(f"peer table is full ({self.max_peers} peers)")
            if network and self._per_network[network] >= self.max_per_network:
                raise TableFullError(
                    f"too many peers from {network} ({self.max_per_network} at most)"
                )
        peer = Peer(
            peer_id=peer_id,
            url=url,
            grpc_address=grpc_address,
            friend=friend,
            state="alive" if seen else "suspect",
            last_seen=now,
            network=None if friend else network,
            key_id=key_id,
        )
        self._add(peer)
        return peer, True

    def mark_alive(self, peer_id: str) -> bool:
        """Record a successful contact. Returns True if the peer was not alive before."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        recovered = peer.state != "alive"
        peer.state, peer.last_seen, peer.failures = "alive", self._clock(), 0
        return recovered

    def mark_failed(self, peer_id: str) -> None:
        """Record a failed contact (the peer becomes suspect; the TTL decides the rest)."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return
        peer.failures += 1
        if peer.state == "alive":
            peer.state = "suspect"
            if self.on_suspect is not None:
                self.on_suspect(peer_id)

    def prune(self) -> list[Peer]:
        """Drop non-friends unseen for longer than the TTL; friends become `down`."""
        cutoff = self._clock() - self.ttl_s
        pruned = []
        for peer in list(self._peers.values()):
            if peer.last_seen >= cutoff:
                continue
            if peer.friend:
                peer.state = "down"
            else:
                pruned.append(peer)
                self._drop(peer.peer_id)
        return pruned

    def remove(self, peer_id: str) -> Peer | None:
        return self._drop(peer_id)

    def peers(self) -> list[Peer]:
        return sorted(self._peers.values(), key=lambda p: p.peer_id)

    def reachable(self) -> list[Peer]:
        """Peers worth contacting: alive and suspect (not down)."""
        return [p for p in self._peers.values() if p.state != "down"]

    def counts(self) -> dict[str, int]:
        counts = {"alive": 0, "suspect": 0, "down": 0}
        for peer in self._peers.values():
            counts[peer.state] += 1
        return counts


class _Known(Protocol):
    @property
    def peer_id(self) -> str: ...
    @property
    def url(self) -> str: ...


def save_remembered(path: Path, peers: Iterable[_Known]) -> None:
    """Persist the peers we know (id, URL) atomically, for restarts."""
    data = [{"peer_id": p.peer_id, "url": p.url} for p in peers]
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot save known peers to %s: %s", path, exc)


def load_remembered(path: Path) -> list[tuple[str, str, str]]:
    """Peers remembered from a previous run: [(peer_id, url, grpc_address)]. Never raises."""
    try:
        data = json.loads(path.read_text())
        return [
            (str(d["peer_id"]), str(d["url"]), str(d.get("grpc_address", "")))
            for d in data
            if isinstance(d, dict) and "peer_id" in d and "url" in d
        ]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable peer memory %s: %s", path, exc)
        return []
