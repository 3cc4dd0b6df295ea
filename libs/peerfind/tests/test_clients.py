"""peerfind.clients: what one client is for the per-client limits."""

from __future__ import annotations

import pytest

from peerfind.clients import client_of


@pytest.mark.parametrize(
    ("address", "client"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.1.2.3", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2:bbbb::9]", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/peerfind.sock", "/run/peerfind.sock"),
        ("", ""),
    ],
)
def test_client_of(address: str, client: str) -> None:
    assert client_of(address) == client
