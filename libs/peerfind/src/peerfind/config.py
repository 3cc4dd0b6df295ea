"""Peer configuration: one JSON file per peer, environment variables override it.

    PEER_CONFIG=deploy/local/peer1.json peerfind-directory
    PEERFIND_REST_PORT=8005 PEER_CONFIG=... peerfind-directory   # env wins over the file

Every service of a peer (directory, transfer, indexer) reads the same file, so a
peer is described once. An invalid file or field raises `ConfigError` with one
line naming the field; the services turn that into exit code 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from peerfind.api import (
    ADAPTIVE_SEARCH_TIMEOUT_MS,
    DEFAULT_SEARCH_BUDGET,
    DEFAULT_WALK_TTL,
    MAX_BUDGET_PARAM,
    MAX_SEARCH_BUDGET,
    MAX_TTL_PARAM,
    MAX_WALK_TTL,
    PEER_ID_PATTERN,
    validate_http_url,
)
from peerfind.errors import ConfigError, describe_errors
from peerfind.tls import TlsFiles

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CHUNK_SIZE",
    "ENV_PREFIX",
    "MAX_CHUNK_SIZE",
    "PeerSettings",
    "load_settings",
    "service_start",
    "validate_http_url",
]

CONFIG_ENV = "PEER_CONFIG"
ENV_PREFIX = "PEERFIND_"
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
_PEER_ID = re.compile(PEER_ID_PATTERN)


def _validate_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT with a port in 1-65535")
    return value


class PeerSettings(BaseSettings):
    """Everything one peer needs to know about itself and its friends."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    peer_id: str = Field(description="Unique name of this peer in the network.")
    host: str = Field("127.0.0.1", description="Address the REST and gRPC servers bind to.")
    rest_port: int = Field(8000, ge=1, le=65535, description="REST (directory) port.")
    grpc_port: int = Field(50051, ge=1, le=65535, description="gRPC (transfer) port.")
    self_url: str = Field("", description="How other peers reach my REST API.")
    grpc_advertise: str = Field("", description="How clients reach my gRPC service.")
    transfer_address: str = Field(
        "", description="How the directory reaches this peer's transfer service (health)."
    )
    shared_dir: Path = Field(description="Folder whose index this peer shares.")
    state_dir: Path = Field(description="Folder for the index database and peer state.")
    friend_primary: str = Field("", description="URL of the primary friend (titular).")
    friend_backup: str = Field("", description="URL of the backup friend (suplente).")
    peer_ttl_s: float = Field(
        30.0, gt=0, le=86400, description="Drop a neighbour with no successful contact this long."
    )
    heartbeat_interval_s: float = Field(
        5.0, gt=0, le=3600, description="Pings to each active neighbour (failure detection)."
    )
    bootstrap_attempts: int = Field(4, ge=1, le=100, description="Tries per friend at start.")
    bootstrap_retry_s: float = Field(
        10.0, gt=0, le=3600, description="Re-bootstrap through the friends while isolated."
    )
    search_timeout_ms: int = Field(
        2000, ge=50, le=60000, description="Default deadline of a flood search."
    )
    adaptive_search_timeout_ms: int = Field(
        ADAPTIVE_SEARCH_TIMEOUT_MS,
        ge=50,
        le=60000,
        description="Default deadline of a walk or dynamic search (and of auto).",
    )
    default_fanout: int = Field(2, ge=0, le=32, description="Neighbours a search goes to.")
    max_fanout: int = Field(8, ge=0, le=32, description="Server-side clamp for fanout.")
    default_ttl: int = Field(3, ge=0, le=16, description="Hops a search travels by default.")
    max_ttl: int = Field(5, ge=0, le=16, description="Server-side clamp for the hop count.")
    max_results: int = Field(1000, ge=1, le=100000, description="Hits returned per search.")
    walk_ttl: int = Field(
        DEFAULT_WALK_TTL,
        ge=0,
        le=MAX_TTL_PARAM,
        description="Hops a walker travels by default (walk, auto).",
    )
    max_walk_ttl: int = Field(
        MAX_WALK_TTL,
        ge=0,
        le=MAX_TTL_PARAM,
        description="Server-side clamp for a walker's hop count.",
    )
    search_budget: int = Field(
        DEFAULT_SEARCH_BUDGET,
        ge=0,
        le=MAX_BUDGET_PARAM,
        description="Messages (requests plus answers) a walk or a dynamic search may cost "
        "by default.",
    )
    max_search_budget: int = Field(
        MAX_SEARCH_BUDGET,
        ge=0,
        le=MAX_BUDGET_PARAM,
        description="Server-side clamp for the message budget of every search, floods too.",
    )
    summary_refresh_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="How often the neighbours' routing summaries are fetched again "
        "(If-None-Match) and ours is rebuilt if the index changed.",
    )
    active_view: int = Field(
        6, ge=1, le=64, description="Active view: neighbours searched through and pinged."
    )
    passive_view: int = Field(
        36, ge=1, le=4096, description="Passive view: known peers, replacements for neighbours."
    )
    shuffle_interval_s: float = Field(
        10.0, gt=0, le=3600, description="Passive-view exchanges with a random-walk peer."
    )
    request_timeout_s: float = Field(2.0, gt=0, le=60, description="Peer-to-peer HTTP timeout.")
    chunk_size: int = Field(
        DEFAULT_CHUNK_SIZE, ge=1024, le=MAX_CHUNK_SIZE, description="Default download chunk."
    )
    max_upload_bytes: int = Field(8 * 1024**3, ge=0, description="DummyUpload cap per stream.")
    max_concurrent_streams: int = Field(
        64, ge=1, le=10000, description="Transfers in progress at once (more: refused)."
    )
    max_streams_per_client: int = Field(
        16,
        ge=1,
        le=10000,
        description="Transfers in progress at once from one client IPv4 address or IPv6 /64 "
        "(more: refused).",
    )
    stream_stall_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A transfer that moves no chunk for this long ends (DEADLINE_EXCEEDED).",
    )
    rescan_interval_s: float = Field(60.0, gt=0, le=86400, description="Safety-net rescan.")
    index_stale_after_s: float = Field(15.0, gt=0, description="Index heartbeat age = stale.")
    hash_rate_mib_s: float = Field(
        200.0, ge=0, description="Read budget of the indexer's SHA-256 hasher (0: no limit)."
    )
    peer_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs peer URLs must resolve into; empty: any address but loopback, "
        "link-local, multicast, unspecified, reserved and cloud metadata ones (SSRF guard).",
    )
    resolve_hostnames: bool = Field(
        True, description="Accept host names in peer URLs (false: IP literals only)."
    )
    max_peers_per_network: int = Field(
        64, ge=1, le=100000, description="Bound on peers from one /24 (IPv4) or /64 (IPv6)."
    )
    rate_limit_rps: float = Field(
        100.0, ge=0, description="Per-client requests/s on /search, /register, /bootstrap (0: off)."
    )
    rate_limit_burst: int = Field(200, ge=1, description="Per-client burst above the rate.")
    rest_header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A REST connection whose request headers are not complete this long "
        "after it opened (or after its previous answer) is closed.",
    )
    rest_max_connections_per_client: int = Field(
        64,
        ge=1,
        le=100000,
        description="Open REST connections from one client IPv4 address or IPv6 /64 "
        "(more: 429 and closed).",
    )
    cluster_token: SecretStr = Field(
        SecretStr(""),
        description="Shared secret peers must present to register, bootstrap and forward.",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate for REST and gRPC.")
    tls_key_file: Path | None = Field(None, description="PEM private key for REST and gRPC.")
    tls_ca_file: Path | None = Field(
        None, description="PEM CA: verifies peers' HTTPS, and requires client certs on gRPC."
    )
    transfer_metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of transfer (0: off)."
    )
    indexer_metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of indexer (0: off)."
    )
    metrics_host: str = Field("", description="Bind address of those ports (default: host).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="json (one object per line) or text."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The JSON file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @field_validator("peer_id")
    @classmethod
    def _peer_id(cls, value: str) -> str:
        if not _PEER_ID.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-'")
        return value

    @field_validator("self_url", "friend_primary", "friend_backup")
    @classmethod
    def _urls(cls, value: str) -> str:
        return validate_http_url(value) if value.strip() else ""

    @field_validator("grpc_advertise", "transfer_address")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        return _validate_host_port(value) if value else ""

    @field_validator("peer_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a CIDR network") from None
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be an address or host name")
        return value

    @model_validator(mode="after")
    def _derive(self) -> PeerSettings:
        reachable = self.host
        wildcard = _is_wildcard(self.host)
        if wildcard and not self.self_url:
            raise ValueError("self_url is required when host binds every interface")
        if wildcard and not self.grpc_advertise:
            raise ValueError("grpc_advertise is required when host binds every interface")
        if ":" in reachable and not reachable.startswith("["):
            reachable = f"[{reachable}]"
        if not self.self_url:
            self.self_url = f"http://{reachable}:{self.rest_port}"
        if not self.grpc_advertise:
            self.grpc_advertise = f"{reachable}:{self.grpc_port}"
        if not self.transfer_address:
            local = "127.0.0.1" if wildcard else reachable
            self.transfer_address = f"{local}:{self.grpc_port}"
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        if self.peer_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("peer_ttl_s must be larger than heartbeat_interval_s")
        self.default_fanout = min(self.default_fanout, self.max_fanout)
        self.default_ttl = min(self.default_ttl, self.max_ttl)
        self.walk_ttl = min(self.walk_ttl, self.max_walk_ttl)
        self.search_budget = min(self.search_budget, self.max_search_budget)
        return self

    @property
    def index_path(self) -> Path:
        """The SQLite index database (written by the indexer, read by the others)."""
        return self.state_dir / "index.sqlite3"

    @property
    def peers_path(self) -> Path:
        """Where the directory remembers known peers across restarts."""
        return self.state_dir / "peers.json"

    @property
    def identity_path(self) -> Path:
        """This peer's identity key (Ed25519, PEM), made on first start: what holds
        `peer_id` at the peers that know it. Losing it means taking a new id."""
        return self.state_dir / "identity.key"

    @property
    def keys_path(self) -> Path:
        """Which key holds which peer id, as peers proved them to this one."""
        return self.state_dir / "keys.json"

    @property
    def local_host(self) -> str:
        """Where a process on this host reaches the peer's own listeners: the loopback
        address when `host` is a wildcard (containers bind 0.0.0.0)."""
        host = self.host.strip("[]")
        if host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_tls_name(self) -> str:
        """The host name the peer's gRPC certificate is issued for (the advertised one):
        what a client reaching the transfer service by another address must verify."""
        return self.grpc_advertise.rpartition(":")[0].strip("[]")

    @property
    def tls(self) -> bool:
        """REST and gRPC are served over TLS."""
        return self.tls_cert_file is not None

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)

    @property
    def friends(self) -> list[str]:
        """Friend URLs in order of preference (primary, then backup), no blanks."""
        return [u for u in (self.friend_primary, self.friend_backup) if u]


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def load_settings(path: str | os.PathLike[str] | None = None) -> PeerSettings:
    """Load the peer config from `path` (default: $PEER_CONFIG), env overriding.

    Raises ConfigError with a one-line message naming the offending field.
    """
    env = os.environ
    raw_path = path if path is not None else env.get(CONFIG_ENV, "")
    data: dict[str, Any] = {}
    where = "environment"
    if raw_path:
        file = Path(raw_path)
        where = str(file)
        try:
            loaded = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a JSON object")
        data = loaded
    elif not any(k.startswith(ENV_PREFIX) for k in env):
        raise ConfigError(f"no config: set {CONFIG_ENV}=/path/to/peer.json")
    try:
        return PeerSettings(**data)
    except ValidationError as exc:
        detail = describe_errors(exc.errors(), where="config")
        raise ConfigError(f"invalid config ({where}): {detail}") from None


def service_start(
    prog: str,
    does: str,
    check_what: str,
    check: Callable[[PeerSettings], int],
    argv: Sequence[str] | None = None,
) -> PeerSettings | int:
    """The start every peer service shares: its command line (`--check`, its container
    healthcheck: exit 0 when `check_what` holds, else 1 with one line) and its settings
    (from the environment). Returns the settings to serve with, or the exit code: 2 with
    one line for a bad config, `check`'s for `--check`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{does} The peer config comes from ${CONFIG_ENV} "
        f"({ENV_PREFIX}* variables override it).",
    )
    parser.add_argument("--check", action="store_true", help=f"exit 0 if {check_what}, else 1")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return check(settings) if args.check else settings
