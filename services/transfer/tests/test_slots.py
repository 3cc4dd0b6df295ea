"""StreamSlots and client_key, without a server: the total bound and the per-client share."""

from __future__ import annotations

import pytest

from transfer.slots import StreamSlots, client_key


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:127.0.0.1:50000", "127.0.0.1"),
        ("ipv4:10.1.2.3:1", "10.1.2.3"),
        ("ipv6:[::ffff:10.1.2.3]:443", "10.1.2.3"),  # IPv4-mapped: the IPv4 address
        ("ipv6:[2001:db8:1:2:aaaa::1]:5000", "2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2:bbbb::9]:5001", "2001:db8:1:2::/64"),  # same /64, same client
        ("ipv6:[fe80::1%eth0]:5000", "fe80::/64"),
        ("unix:/run/peerfind.sock", "unix:/run/peerfind.sock"),
        ("ipv4:not-an-address:1", "not-an-address"),
        ("", ""),
    ],
)
def test_client_key(peer: str, key: str) -> None:
    assert client_key(peer) == key


def test_one_client_gets_its_share_and_no_more() -> None:
    slots = StreamSlots(total=4, per_client=2)
    assert slots.acquire("a") is None
    assert slots.acquire("a") is None
    refusal = slots.acquire("a")
    assert refusal is not None
    assert "from a" in refusal
    assert "limit 2 per client" in refusal
    assert (slots.active, slots.held_by("a")) == (2, 2)  # a refusal changes nothing
    # Another client still gets in: the first cannot take every slot.
    assert slots.acquire("b") is None
    assert slots.acquire("b") is None
    assert slots.active == 4


def test_the_total_bound_holds_across_clients() -> None:
    slots = StreamSlots(total=3, per_client=2)
    for client in ("a", "a", "b"):
        assert slots.acquire(client) is None
    refusal = slots.acquire("c")
    assert refusal is not None
    assert "limit 3" in refusal
    assert slots.held_by("c") == 0
    slots.release("a")
    assert slots.acquire("c") is None


def test_release_gives_the_slot_back_and_forgets_idle_clients() -> None:
    slots = StreamSlots(total=2, per_client=1)
    assert slots.acquire("a") is None
    assert slots.acquire("a") is not None
    slots.release("a")
    assert (slots.active, slots.held_by("a")) == (0, 0)
    assert slots._by_client == {}  # bounded by the clients with streams, not all seen
    assert slots.acquire("a") is None


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="without acquire"):
        StreamSlots(total=1, per_client=1).release("a")


def test_a_stream_given_up_on_leaves_the_total_but_keeps_its_share() -> None:
    slots = StreamSlots(total=2, per_client=2)
    assert slots.acquire("a") is None
    assert slots.acquire("a") is None
    slots.release_total("a")  # stalled: no longer blocks anyone else
    assert (slots.active, slots.lingering, slots.held_by("a")) == (1, 1, 2)
    assert slots.acquire("b") is None  # another client gets the freed place
    assert slots.acquire("a") is not None  # but a's stalled stream still counts for a
    slots.release_share("a")
    assert (slots.lingering, slots.held_by("a")) == (0, 1)
    with pytest.raises(RuntimeError, match="without release_total"):
        slots.release_share("a")


def test_per_client_share_never_exceeds_the_total() -> None:
    assert StreamSlots(total=2, per_client=16).per_client == 2
    with pytest.raises(ValueError, match="at least 1"):
        StreamSlots(total=0, per_client=1)
