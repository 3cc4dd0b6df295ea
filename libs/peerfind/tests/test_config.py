"""Peer config: file + environment, derived defaults, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerfind.config import PeerSettings, load_settings, validate_http_url
from peerfind.errors import ConfigError


def write(tmp_path: Path, **fields: object) -> Path:
    data = {"peer_id": "peer1", "shared_dir": str(tmp_path), "state_dir": str(tmp_path / "s")}
    data.update(fields)
    path = tmp_path / "peer.json"
    path.write_text(json.dumps(data))
    return path


def test_file_loads_and_derives_addresses(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, host="127.0.0.2", rest_port=8001, grpc_port=50051))
    assert settings.self_url == "http://127.0.0.2:8001"
    assert settings.grpc_advertise == "127.0.0.2:50051"
    assert settings.transfer_address == "127.0.0.2:50051"
    assert settings.index_path == tmp_path / "s" / "index.sqlite3"
    assert settings.friends == []


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERFIND_REST_PORT", "9001")
    monkeypatch.setenv("PEERFIND_FRIEND_PRIMARY", "http://peer2:8000/")
    monkeypatch.setenv("PEER_CONFIG", str(write(tmp_path, rest_port=8001)))
    settings = load_settings()
    assert settings.rest_port == 9001
    assert settings.friends == ["http://peer2:8000"]


def test_wildcard_host_needs_explicit_addresses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="self_url is required"):
        load_settings(write(tmp_path, host="0.0.0.0"))
    settings = load_settings(
        write(tmp_path, host="0.0.0.0", self_url="http://p1:8000", grpc_advertise="p1:50051")
    )
    assert settings.transfer_address == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"rest_port": 70000}, "rest_port"),
        ({"grpc_port": "x"}, "grpc_port"),
        ({"peer_id": "no spaces"}, "peer_id"),
        ({"friend_primary": "ftp://x"}, "friend_primary"),
        ({"self_url": "http://x:1/path"}, "self_url"),
        ({"grpc_advertise": "nohost"}, "grpc_advertise"),
        ({"peer_ttl_s": 1, "heartbeat_interval_s": 5}, "peer_ttl_s"),
        ({"typo_field": 1}, "typo_field: unknown field"),
        ({"log_level": "LOUD"}, "log_level"),
    ],
)
def test_invalid_field_is_one_line_naming_it(
    tmp_path: Path, fields: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, **fields))
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_missing_required_field(tmp_path: Path) -> None:
    path = tmp_path / "peer.json"
    path.write_text(json.dumps({"peer_id": "p"}))
    with pytest.raises(ConfigError, match="shared_dir"):
        load_settings(path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), (None, "does not exist")],
)
def test_unreadable_files(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "peer.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_settings(path)


def test_no_config_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEER_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="PEER_CONFIG"):
        load_settings()


def test_fanout_and_ttl_defaults_clamped(tmp_path: Path) -> None:
    settings = PeerSettings(
        peer_id="p",
        shared_dir=tmp_path,
        state_dir=tmp_path,
        default_fanout=9,
        max_fanout=3,
        default_ttl=9,
        max_ttl=2,
    )
    assert (settings.default_fanout, settings.default_ttl) == (3, 2)


def test_walk_ttl_and_search_budget_defaults_clamped(tmp_path: Path) -> None:
    settings = PeerSettings(
        peer_id="p",
        shared_dir=tmp_path,
        state_dir=tmp_path,
        walk_ttl=12,
        max_walk_ttl=4,
        search_budget=1000,
        max_search_budget=100,
    )
    assert (settings.walk_ttl, settings.search_budget) == (4, 100)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "x",
        "ftp://h",
        "http://",
        "http://h:0",
        "http://h:99999",
        "http://u:p@h",
        "http://h/p",
        "http://h?q=1",
        "http://h#f",
        "http://" + "a" * 3000,
    ],
)
def test_validate_http_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        validate_http_url(url)


def test_validate_http_url_accepts() -> None:
    assert validate_http_url(" https://peer-1.example:8443/ ") == "https://peer-1.example:8443"
    assert validate_http_url("http://[::1]:8001") == "http://[::1]:8001"
