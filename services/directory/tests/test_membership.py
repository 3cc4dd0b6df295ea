"""Membership with fake peer calls and a fake clock: bootstrap, introductions, heartbeat."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from directory.membership import Membership, PeerUnavailable, RegistrationError
from directory.peers import Peer, PeerTable
from directory.urlguard import PinnedUrl, UrlRefused
from peerfind.api import RegisterResponse
from peerfind.config import PeerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Memory:
    def __init__(self, remembered: list[tuple[str, str, str]] | None = None) -> None:
        self.remembered = remembered or []
        self.saved: list[list[str]] = []

    def load(self) -> list[tuple[str, str, str]]:
        return list(self.remembered)

    def save(self, peers: Iterable[Peer]) -> None:
        self.saved.append([p.peer_id for p in peers])


class Guard:
    """Lets every URL through except those in `refused`; pins to the URL's host."""

    def __init__(self) -> None:
        self.refused: set[str] = set()

    async def check(self, url: str) -> PinnedUrl:
        if url in self.refused:
            raise UrlRefused("forbidden_address", f"{url} is refused")
        parts = urlsplit(url)
        host = parts.hostname or ""
        return PinnedUrl(url, host, host, parts.port or 80, parts.scheme)


class Net:
    """Peers wired in memory: each peer's calls reach the others' Membership directly."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.nodes: dict[str, Membership] = {}
        self.down: set[str] = set()
        self.calls: list[tuple[str, str, str]] = []

    def url(self, n: int) -> str:
        return f"http://10.0.{n}.1:8000"

    def add(self, n: int, friends: tuple[int, ...] = (), max_peers: int = 64) -> Membership:
        settings = PeerSettings(
            peer_id=f"p{n}",
            host=f"10.0.{n}.1",
            rest_port=8000,
            self_url=self.url(n),
            grpc_port=50051,
            shared_dir=self.tmp,
            state_dir=self.tmp / f"state{n}",
            friend_primary=self.url(friends[0]) if friends else "",
            friend_backup=self.url(friends[1]) if len(friends) > 1 else "",
            max_peers=max_peers,
            bootstrap_attempts=1,
        )
        table = PeerTable(
            settings.peer_id,
            ttl_s=settings.peer_ttl_s,
            max_peers=max_peers,
            friend_urls=settings.friends,
            clock=self.clock,
        )
        member = Membership(
            settings, table, Calls(self, settings.self_url), Guard(), Memory(), clock=self.clock
        )
        self.nodes[settings.self_url] = member
        return member

    def reach(self, url: str, kind: str, caller: str) -> Membership:
        self.calls.append((caller, kind, url))
        node = self.nodes.get(url)
        if node is None or url in self.down:
            raise PeerUnavailable(f"cannot reach {url}: connection refused")
        return node


class Calls:
    def __init__(self, net: Net, self_url: str) -> None:
        self.net = net
        self.self_url = self_url

    async def health(self, url: str, pinned: PinnedUrl | None = None) -> tuple[str, str]:
        try:
            node = self.net.reach(url, "health", self.self_url)
        except PeerUnavailable as exc:
            raise RegistrationError("unreachable", str(exc)) from None
        return node.settings.peer_id, node.settings.grpc_advertise

    async def register(self, url: str, pinned: PinnedUrl | None = None) -> RegisterResponse:
        return await self.net.reach(url, "register", self.self_url).welcome(self.self_url)


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return Net(tmp_path)


def known(member: Membership) -> set[str]:
    return {p.peer_id for p in member.table.peers()}


async def test_bootstrap_registers_with_the_primary_and_meets_its_peers(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    p3 = net.add(3, (2, 1))
    assert (await p2.bootstrap()).ok
    answer = await p3.bootstrap()
    assert answer.ok and answer.friend == net.url(2) and answer.learned == 1
    assert known(p3) == {"p1", "p2"}
    assert known(p1) == {"p2", "p3"}  # p3 introduced itself to p1
    assert p3.table.get("p2") is not None and p3.table.get("p2").friend  # type: ignore[union-attr]
    assert p3.memory.saved[-1] == ["p1", "p2"]  # type: ignore[attr-defined]


async def test_bootstrap_falls_back_to_the_backup_friend(net: Net) -> None:
    net.add(1)
    net.add(2)
    p3 = net.add(3, (2, 1))
    net.down.add(net.url(2))
    answer = await p3.bootstrap()
    assert answer.ok and answer.friend == net.url(1)
    assert answer.tried == [net.url(2), net.url(1)]
    assert "connection refused" in answer.errors[0]


async def test_registration_refused_by_the_guard_adds_nobody(net: Net) -> None:
    p1 = net.add(1)
    net.add(2)
    p1.guard.refused.add(net.url(2))  # type: ignore[attr-defined]
    with pytest.raises(RegistrationError) as info:
        await p1.register(net.url(2))
    assert info.value.reason == "forbidden_address"
    assert known(p1) == set()


async def test_a_full_table_refuses_a_newcomer(net: Net) -> None:
    p1 = net.add(1, max_peers=1)
    net.add(2)
    net.add(3)
    await p1.register(net.url(2))
    with pytest.raises(RegistrationError) as info:
        await p1.register(net.url(3))
    assert (info.value.reason, info.value.status) == ("table_full", 503)


async def test_heartbeat_marks_failures_prunes_after_the_ttl_and_keeps_friends(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    net.add(3)
    await p2.bootstrap()
    await p2.register(net.url(3))
    net.down.update({net.url(1), net.url(3)})
    await p2.heartbeat_once()
    assert {p.peer_id: p.state for p in p2.table.peers()} == {"p1": "suspect", "p3": "suspect"}
    net.clock.now += p2.settings.peer_ttl_s + 1
    await p2.heartbeat_once()
    # The friend is kept as down (and keeps being checked); the other is pruned.
    assert {p.peer_id: p.state for p in p2.table.peers()} == {"p1": "down"}
    net.down.clear()
    p1.table.remove("p2")  # p1 restarted and forgot p2
    await p2.heartbeat_once()
    assert p2.table.get("p1").state == "alive"  # type: ignore[union-attr]
    await p2.settle()  # "is back": registers with it again
    assert "p2" in known(p1)


async def test_heartbeat_reannounces_once_per_half_ttl(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    await p2.bootstrap()
    net.calls.clear()
    await p2.heartbeat_once()
    await p2.settle()
    assert [k for caller, k, _ in net.calls if caller == net.url(2)] == ["health"]
    net.clock.now += p2.settings.peer_ttl_s / 2
    await p2.heartbeat_once()
    await p2.settle()
    calls = [k for caller, k, _ in net.calls if caller == net.url(2)]
    assert calls == ["health", "health", "register"]
    assert "p2" in known(p1)


async def test_a_new_peer_at_a_known_url_replaces_the_old_entry(net: Net) -> None:
    p1 = net.add(1)
    net.add(2)
    await p1.register(net.url(2))
    impostor = net.add(9)
    net.nodes[net.url(2)] = impostor  # p9 now answers at p2's address
    await p1.heartbeat_once()
    assert known(p1) == {"p9"}
