"""The SSRF guard: what a peer may be told to call."""

from __future__ import annotations

import ipaddress

import pytest

from directory.membership import network_of
from directory.urlguard import PeerUrlGuard, UrlRefused, forbidden_reason


def resolver_for(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000", "loopback"),
        ("http://127.9.9.9:8000", "loopback"),
        ("http://[::1]:8000", "loopback"),
        ("http://169.254.169.254", "link_local"),
        ("http://[fe80::1]:80", "link_local"),
        ("http://224.0.0.1", "multicast"),
        ("http://0.0.0.0:80", "unspecified"),
        ("http://[::]:80", "unspecified"),
        ("http://240.0.0.1", "reserved"),
        ("http://255.255.255.255", "reserved"),
        ("http://[::ffff:127.0.0.1]:80", "loopback"),
        ("http://[::ffff:169.254.169.254]:80", "link_local"),
        ("http://[fd00:ec2::254]:80", "metadata"),  # AWS, IPv6
        ("http://100.100.100.200", "metadata"),  # Alibaba
        ("http://[::ffff:100.100.100.200]:80", "metadata"),
        ("http://168.63.129.16", "metadata"),  # Azure WireServer
        ("ftp://10.0.0.1", "invalid_url"),
        ("http://10.0.0.1/admin", "invalid_url"),
    ],
)
async def test_default_policy_refuses_special_addresses(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as info:
        await PeerUrlGuard().check(url)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3:8000",
        "https://192.168.1.9",
        "http://8.8.8.8",
        "http://100.100.100.201",  # the metadata addresses' neighbours are ordinary
        "http://[fd00:ec2::253]:80",
        "http://[fd00:1::5]:8000",
    ],
)
async def test_default_policy_allows_private_and_public(url: str) -> None:
    pinned = await PeerUrlGuard().check(url)
    assert pinned.url == url


async def test_allowlist_admits_only_its_networks() -> None:
    guard = PeerUrlGuard(["127.0.0.0/8", "10.89.0.0/16"])
    assert (await guard.check("http://127.0.0.3:8001")).address == "127.0.0.3"
    assert (await guard.check("http://10.89.3.4:8000")).address == "10.89.3.4"
    for url in ("http://10.90.0.1", "http://8.8.8.8", "http://[::1]:80", "http://169.254.169.254"):
        with pytest.raises(UrlRefused) as info:
            await guard.check(url)
        assert info.value.reason == "not_allowed"


async def test_hostname_is_resolved_once_and_pinned() -> None:
    resolve = resolver_for({"peer2": ["10.0.0.2"]})
    guard = PeerUrlGuard(resolver=resolve)
    pinned = await guard.check("http://peer2:8000")
    assert pinned.base == "http://10.0.0.2:8000"
    assert pinned.host_header == "peer2:8000"
    assert resolve.calls == ["peer2"]  # type: ignore[attr-defined]
    https = await guard.check("https://peer2")
    assert https.base == "https://10.0.0.2:443"
    assert https.host_header == "peer2"


async def test_name_with_any_forbidden_address_is_refused() -> None:
    guard = PeerUrlGuard(resolver=resolver_for({"sneaky": ["10.0.0.2", "127.0.0.1"]}))
    with pytest.raises(UrlRefused) as info:
        await guard.check("http://sneaky:8000")
    assert info.value.reason == "loopback"


async def test_unresolvable_and_hostnames_off() -> None:
    guard = PeerUrlGuard(resolver=resolver_for({}))
    with pytest.raises(UrlRefused) as info:
        await guard.check("http://nowhere:8000")
    assert info.value.reason == "unresolvable"
    strict = PeerUrlGuard(resolve_hostnames=False, resolver=resolver_for({"a": ["10.0.0.1"]}))
    with pytest.raises(UrlRefused) as info:
        await strict.check("http://a:8000")
    assert info.value.reason == "hostname"
    assert strict.resolver.calls == []  # type: ignore[attr-defined]


def test_forbidden_reason_and_networks() -> None:
    assert forbidden_reason(ipaddress.ip_address("10.0.0.1")) is None
    assert network_of("10.1.2.3") == "10.1.2.0/24"
    assert network_of("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert network_of("2001:db8::1") == "2001:db8::/64"
