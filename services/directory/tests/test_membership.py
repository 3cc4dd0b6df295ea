"""Membership (the overlay over REST) with in-memory peer calls and a fake clock: joins,
verification, full views, failure detection, re-bootstrap, memory."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY

from directory.identity import Claim, PeerKey
from directory.membership import (
    MAX_PENDING_MESSAGES,
    Membership,
    PeerUnavailable,
    RegistrationError,
)
from directory.overlay import Descriptor
from directory.peers import PeerTable
from directory.urlguard import PinnedUrl, UrlRefused
from peerfind.api import (
    Disconnect,
    Neighbor,
    OverlayAnswer,
    OverlayMessage,
    OverlayRequest,
    PeerRef,
    Proof,
    RegisterResponse,
)
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

    def save(self, peers: Iterable[Descriptor]) -> None:
        self.saved.append(sorted(p.peer_id for p in peers))


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
        self.gate = asyncio.Event()  # joins to `held` URLs wait for it
        self.held: set[str] = set()

    def url(self, n: int) -> str:
        return f"http://10.0.{n}.1:8000"

    def add(
        self,
        n: int,
        friends: tuple[int, ...] = (),
        *,
        peer_id: str | None = None,
        key: PeerKey | None = None,
        **extra: Any,
    ) -> Membership:
        settings = PeerSettings(
            peer_id=peer_id or f"p{n}",
            host=f"10.0.{n}.1",
            rest_port=8000,
            self_url=self.url(n),
            grpc_port=50051,
            shared_dir=self.tmp,
            state_dir=self.tmp / f"state{n}",
            friend_primary=self.url(friends[0]) if friends else "",
            friend_backup=self.url(friends[1]) if len(friends) > 1 else "",
            bootstrap_attempts=1,
            **extra,
        )
        table = PeerTable(
            settings.peer_id,
            ttl_s=settings.peer_ttl_s,
            max_peers=settings.active_view,
            friend_urls=settings.friends,
            clock=self.clock,
            max_per_network=settings.max_peers_per_network,
        )
        member = Membership(
            settings,
            table,
            Calls(self, settings.self_url),
            Guard(),
            Memory(),
            clock=self.clock,
            rng=random.Random(n),
            key=key,
        )
        self.nodes[settings.self_url] = member
        return member

    def reach(self, url: str, kind: str, caller: str) -> Membership:
        self.calls.append((caller, kind, url))
        node = self.nodes.get(url)
        if node is None or url in self.down:
            raise PeerUnavailable(f"cannot reach {url}: connection refused")
        return node

    async def settle(self) -> None:
        """Until no peer has a message left to handle."""
        for _ in range(100):
            busy = [m for m in self.nodes.values() if m._background]
            if not busy:
                return
            for member in busy:
                await member.settle()
        raise AssertionError("the messages never settled")


class Calls:
    """`PeerCalls` in memory; overlay messages go through their JSON form, as on the wire."""

    def __init__(self, net: Net, self_url: str) -> None:
        self.net = net
        self.self_url = self_url

    async def health(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> tuple[Claim, Proof | None]:
        try:
            node = self.net.reach(url, "health", self.self_url)
        except PeerUnavailable as exc:
            raise RegistrationError("unreachable", str(exc)) from None
        settings = node.settings
        claim = Claim(settings.peer_id, settings.self_url, settings.grpc_advertise)
        return claim, node.prove(challenge)

    async def register(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> RegisterResponse:
        node = self.net.reach(url, "register", self.self_url)
        if url in self.net.held:
            await self.net.gate.wait()
        answer = await node.welcome(self.self_url, challenge)
        return RegisterResponse.model_validate_json(answer.model_dump_json())

    async def overlay(
        self,
        url: str,
        message: OverlayMessage,
        pinned: PinnedUrl | None = None,
        challenge: str | None = None,
    ) -> OverlayAnswer:
        node = self.net.reach(url, message.kind, self.self_url)
        wire = OverlayRequest.model_validate({"message": message.model_dump(mode="json")})
        answer = await node.receive(wire.message, challenge)
        return OverlayAnswer.model_validate_json(answer.model_dump_json())


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return Net(tmp_path)


def shuffle_from(net: Net, n: int, entries: list[dict[str, str]]) -> OverlayMessage:
    """A shuffle from peer n as it arrives on the wire (validated from JSON)."""
    origin = {"peer_id": f"p{n}", "url": net.url(n)}
    body = {"kind": "shuffle", "origin": origin, "entries": entries, "ttl": 0, "sender": origin}
    return OverlayRequest.model_validate({"message": body}).message


def active(member: Membership) -> set[str]:
    assert set(member.overlay.active) == {p.peer_id for p in member.table.peers()}
    return set(member.overlay.active)


async def test_a_join_walks_the_overlay_so_three_peers_become_a_mesh(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    p3 = net.add(3, (2, 1))
    assert (await p2.bootstrap()).ok
    await net.settle()
    answer = await p3.bootstrap()
    await net.settle()
    assert answer.ok and answer.friend == net.url(2) and answer.friend_peer_id == "p2"
    assert answer.learned == 1  # p2 offered p1
    # p2 forwarded the join to p1, whose walk ended there: p1 connected to p3.
    assert (active(p1), active(p2), active(p3)) == ({"p2", "p3"}, {"p1", "p3"}, {"p1", "p2"})
    assert p3.table.get("p2").friend  # type: ignore[union-attr]
    assert p3.table.get("p1").grpc_address == p1.settings.grpc_advertise  # type: ignore[union-attr]
    p3._save_if_changed()
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


async def test_bootstraps_that_arrive_while_one_runs_share_its_answer(net: Net) -> None:
    net.add(1)
    p2 = net.add(2, (1,))
    net.held.add(net.url(1))  # the friend is slow to answer
    calls = [asyncio.create_task(p2.bootstrap()) for _ in range(3)]
    await asyncio.sleep(0)
    net.gate.set()
    answers = await asyncio.gather(*calls)
    assert all(a.ok for a in answers) and answers[0] == answers[1] == answers[2]
    assert [k for _, k, _ in net.calls].count("register") == 1  # one join, not three
    assert (await p2.bootstrap()).ok  # and the next one runs anew
    assert [k for _, k, _ in net.calls].count("register") == 2


async def test_a_join_refused_by_the_guard_adds_nobody(net: Net) -> None:
    p1 = net.add(1)
    net.add(2)
    p1.guard.refused.add(net.url(2))  # type: ignore[attr-defined]
    with pytest.raises(RegistrationError) as info:
        await p1.welcome(net.url(2))
    assert info.value.reason == "forbidden_address"
    await net.settle()
    assert active(p1) == set() and not p1.overlay.passive


async def test_a_full_peer_makes_room_and_leaves_no_newcomer_isolated(net: Net) -> None:
    tiny = {"active_view": 2, "passive_view": 3}
    p1 = net.add(1, **tiny)
    members = [p1]
    for n in range(2, 7):  # every newcomer joins through p1, full from the third on
        member = net.add(n, (1,), **tiny)
        assert (await member.bootstrap()).ok
        await net.settle()
        members.append(member)
    assert len(active(p1)) == 2 and p1.overlay.passive  # made room, refused nobody
    for member in members:  # nobody isolated, no view over its bound, views symmetric
        assert 1 <= len(active(member)) <= 2 and len(member.overlay.passive) <= 3
        for other in active(member):
            assert member.me.peer_id in active(net.nodes[net.url(int(other[1:]))])
    reached, todo = {"p1"}, ["p1"]
    while todo:  # and the overlay is one component
        for other in active(net.nodes[net.url(int(todo.pop()[1:]))]) - reached:
            reached.add(other)
            todo.append(other)
    assert reached == {m.me.peer_id for m in members}


async def test_a_neighbour_must_answer_as_the_peer_it_claims_to_be(net: Net) -> None:
    p1 = net.add(1)
    net.add(2)
    impostor = Neighbor(kind="neighbor", peer=PeerRef(peer_id="p2", url=net.url(9)), high=True)
    net.add(9)  # answers /health as p9
    with pytest.raises(RegistrationError) as info:
        await p1.receive(impostor)
    assert (info.value.reason, info.value.status) == ("wrong_peer", 409)
    assert active(p1) == set()


async def test_a_failed_ping_drops_the_neighbour_and_the_passive_view_replaces_it(
    net: Net,
) -> None:
    net.add(1)
    p2 = net.add(2, (1,))
    p3 = net.add(3, (1,))
    p4 = net.add(4, (1,), active_view=2)
    for member in (p2, p3):
        await member.bootstrap()
        await net.settle()
    await p4.bootstrap()
    await net.settle()
    assert len(active(p4)) == 2
    gone = next(iter(p4.overlay.active))
    net.down.add(net.url(int(gone[1:])))
    await p4.heartbeat_once()
    await net.settle()
    assert gone not in active(p4) and len(active(p4)) == 2
    assert p4.overlay.stats.replacements >= 1


async def test_a_search_failure_makes_a_neighbour_suspect_and_a_failed_ping_drops_it(
    net: Net,
) -> None:
    net.add(1)
    p2 = net.add(2, (1,))
    await p2.bootstrap()
    await net.settle()
    net.down.add(net.url(1))  # hung: searches time out on it, and so does a ping
    p2.table.mark_failed("p1")  # what the router does when a forward times out
    await net.settle()
    assert active(p2) == set()
    # A neighbour that is only slow answers the ping and stays.
    net.down.clear()
    await p2.bootstrap()
    await net.settle()
    p2.table.mark_failed("p1")
    await net.settle()
    assert active(p2) == {"p1"} and p2.table.get("p1").state == "alive"  # type: ignore[union-attr]


async def test_an_isolated_peer_joins_again_through_its_friends(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    net.down.add(net.url(1))
    assert not (await p2.bootstrap()).ok
    net.down.clear()
    await p2.heartbeat_once()  # not yet: bootstrap_retry_s has not passed
    await net.settle()
    assert active(p2) == set()
    net.clock.now += p2.settings.bootstrap_retry_s
    await p2.heartbeat_once()
    await net.settle()
    assert active(p2) == {"p1"} and active(p1) == {"p2"}


async def test_a_neighbour_is_dropped_for_silence_only_if_this_round_s_ping_fails_too(
    net: Net,
) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    await p2.bootstrap()
    await net.settle()
    net.clock.now += p2.settings.peer_ttl_s + 1  # nothing heard for that long...
    await p2.heartbeat_once()  # ...but it answers this round's ping: kept
    await net.settle()
    assert active(p2) == {"p1"} and p2.overlay.stats.failures == 0
    p1.overlay.active.clear()  # p1 forgot p2 (a DISCONNECT lost on the way)
    p1.table.remove("p2")
    net.clock.now += p2.settings.peer_ttl_s + 1
    await p2.heartbeat_once()  # the ping says p1 no longer holds p2: passive, not failed
    await net.settle()
    assert "p1" in p2.overlay.passive or "p1" in active(p2)
    assert p2.overlay.stats.failures == 0


async def test_remembered_peers_are_passive_entries_promoted_when_friends_are_gone(
    net: Net,
) -> None:
    net.add(1)
    p2 = net.add(2)
    p3 = net.add(3, (9,))  # its friend never answers
    p3.memory.remembered = [("p2", net.url(2), "")]  # type: ignore[attr-defined]
    await p3.start()
    await net.settle()
    assert active(p3) == {"p2"} and "p3" in active(p2)


async def test_one_way_messages_are_refused_when_too_many_are_in_progress(net: Net) -> None:
    p1 = net.add(1)
    never = asyncio.Event()
    for _ in range(MAX_PENDING_MESSAGES):
        p1._spawn(never.wait())  # type: ignore[arg-type]
    with pytest.raises(RegistrationError) as info:
        await p1.receive(shuffle_from(net, 2, entries=[]))
    assert (info.value.reason, info.value.status) == ("busy", 503)
    await p1.close()


async def test_a_message_naming_a_malformed_url_is_refused_and_changes_nothing(net: Net) -> None:
    p1 = net.add(1)
    entries = [{"peer_id": "p3", "url": net.url(3)}, {"peer_id": "p4", "url": "0"}]
    with pytest.raises(RegistrationError) as info:
        await p1.receive(shuffle_from(net, 2, entries))
    assert (info.value.reason, info.value.status) == ("invalid_url", 400)
    await net.settle()
    assert not p1.overlay.passive and not p1.overlay.active


# -- identity: ids bound to keys -----------------------------------------------------------


def identity_checks(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("peerfind_directory_identity_checks_total", {"outcome": outcome})
        or 0.0
    )


async def test_an_id_held_by_one_key_is_never_taken_by_another(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    assert (await p2.bootstrap()).ok
    await net.settle()
    impostor = net.add(9, (1,), peer_id="p2")  # a peer of its own, claiming p2's id
    taken = identity_checks("peer_id_taken")
    with pytest.raises(RegistrationError) as info:
        await p1.welcome(net.url(9))  # JOIN
    assert (info.value.reason, info.value.status) == ("peer_id_taken", 409)
    assert "p2 is held by key" in info.value.detail
    claim = Neighbor(kind="neighbor", peer=PeerRef(peer_id="p2", url=net.url(9)), high=True)
    with pytest.raises(RegistrationError, match="held by key"):
        await p1.receive(claim)  # NEIGHBOR
    assert not (await impostor.bootstrap()).ok  # and its own join through p1 is refused
    await net.settle()
    entry = p1.table.get("p2")
    assert entry is not None and entry.url == net.url(2) and entry.key_id == p2.key.key_id
    assert p1.keys.holder("p2") == p2.key.key_id
    assert identity_checks("peer_id_taken") >= taken + 3
    # Even once the real p2 is gone from p1's views, the id stays its key's.
    net.down.add(net.url(2))
    await p1.heartbeat_once()
    await net.settle()
    assert "p2" not in p1.overlay.active
    with pytest.raises(RegistrationError, match="held by key"):
        await p1.welcome(net.url(9))


async def test_the_holder_of_an_id_proves_it_from_a_new_address(net: Net) -> None:
    p1 = net.add(1)
    key = PeerKey.generate()
    net.add(2, (1,), key=key)
    assert (await p1.verify(net.url(2))).peer_id == "p2"
    net.down.add(net.url(2))
    net.add(7, (1,), peer_id="p2", key=key)  # p2 restarted elsewhere, with its key
    moved = await p1.verify(net.url(7))
    assert moved.url == net.url(7) and p1.keys.holder("p2") == key.key_id


async def test_a_proof_relayed_from_another_address_is_refused(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2)
    net.nodes[net.url(9)] = p2  # 10.0.9.1 relays every call to p2, which proves itself
    with pytest.raises(RegistrationError) as info:
        await p1.verify(net.url(9))
    assert (info.value.reason, info.value.status) == ("wrong_url", 409)
    assert "p2" not in p1.keys


async def test_a_peer_that_proves_nothing_is_refused(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    p1 = net.add(1)
    p2 = net.add(2)
    monkeypatch.setattr(p2, "prove", lambda challenge: None)
    with pytest.raises(RegistrationError) as info:
        await p1.welcome(net.url(2))
    assert (info.value.reason, info.value.status) == ("no_proof", 409)
    liar = PeerKey.generate()  # signs, but with a key that is not the one it shows
    monkeypatch.setattr(
        p2, "prove", lambda challenge: liar.prove(challenge, Claim("p3", net.url(2), ""))
    )
    with pytest.raises(RegistrationError) as info:
        await p1.welcome(net.url(2))
    assert info.value.reason == "bad_proof"
    assert active(p1) == set() and "p2" not in p1.keys


async def test_a_forged_disconnect_is_ignored_and_a_real_one_honoured(net: Net) -> None:
    p1 = net.add(1)
    p2 = net.add(2, (1,))
    assert (await p2.bootstrap()).ok
    await net.settle()
    assert active(p1) == {"p2"} and active(p2) == {"p1"}
    ignored = identity_checks("disconnect_ignored")
    forged = Disconnect(kind="disconnect", peer=PeerRef(peer_id="p2", url=net.url(2)))
    await p1.receive(forged)  # from anyone who read p1's /peers: p2 still holds p1
    await net.settle()
    assert active(p1) == {"p2"}
    assert identity_checks("disconnect_ignored") == ignored + 1
    assert (net.url(1), "neighbor", net.url(2)) not in net.calls
    p2.overlay.active.pop("p1")  # p2 really lets p1 go (as a full view makes room)
    p2.table.remove("p1")
    await p1.receive(forged)
    await net.settle()
    # p1 demoted p2, and (p2 being all it knows) repaired its view through it: the two
    # views are symmetric again.
    assert (net.url(1), "neighbor", net.url(2)) in net.calls
    assert active(p1) == {"p2"} and active(p2) == {"p1"}
    assert identity_checks("disconnect_ignored") == ignored + 1
