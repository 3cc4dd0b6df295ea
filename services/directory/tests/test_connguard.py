"""ConnectionCounter without a server (the protocol itself: tests/integration/test_slowloris.py)."""

from __future__ import annotations

import pytest

from directory.connguard import ConnectionCounter, guarded_protocol


def test_a_client_gets_its_cap_and_others_are_unaffected() -> None:
    counter = ConnectionCounter(per_client=2)
    assert counter.add("10.0.0.1")
    assert counter.add("10.0.0.1")
    assert not counter.add("10.0.0.1")
    assert (counter.open_from("10.0.0.1"), counter.refused) == (2, 1)  # refusals count nothing
    assert counter.add("10.0.0.2")
    counter.remove("10.0.0.1")
    assert counter.add("10.0.0.1")


def test_closed_clients_are_forgotten() -> None:
    counter = ConnectionCounter(per_client=1)
    assert counter.add("a")
    counter.remove("a")
    assert counter._open == {}  # bounded by the open connections, not by every client seen
    with pytest.raises(RuntimeError, match="without add"):
        counter.remove("a")


def test_each_server_gets_its_own_protocol_class() -> None:
    first = guarded_protocol(ConnectionCounter(1), 1.0)
    assert first is not guarded_protocol(ConnectionCounter(1), 1.0)
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionCounter(0)
