"""schemathesis against a real directory process: every operation, every check.

The peer under test is a real `directory` (with its indexer and transfer service)
on 127.0.0.x. `/register` makes a peer call the URL it is given, so the peer runs
with `peer_networks=["127.0.0.0/8"]` and `resolve_hostnames=false`: a fuzzed URL is
either an IP literal inside 127.0.0.0/8 or refused before any connection, so no
packet and no DNS query leaves this machine. On a code base without those
settings, `/register` is left out rather than fuzzed unguarded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES

from directory.app import create_app
from peerfind.config import PeerSettings
from peerfind_devnet import PeerProcesses, PeerSpec

pytestmark = pytest.mark.integration

HOST = "127.0.0.9"
MAX_EXAMPLES = 300
GUARDED = {"peer_networks", "resolve_hostnames"} <= set(PeerSettings.model_fields)


def _fuzzed_settings() -> dict[str, Any]:
    """Config that keeps every call the fuzzed peer makes on this machine."""
    extra: dict[str, Any] = {"log_format": "text", "request_timeout_s": 0.5}
    if GUARDED:
        extra |= {"peer_networks": ["127.0.0.0/8"], "resolve_hostnames": False}
    if "rate_limit_rps" in PeerSettings.model_fields:
        extra["rate_limit_rps"] = 0  # fuzzing is a flood by design; 429s would hide bugs
    return extra


@pytest.fixture(scope="module")
def fuzzed_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcesses]:
    root = tmp_path_factory.mktemp("fuzzed")
    shared = root / "shared"
    (shared / "sub").mkdir(parents=True)
    for name in ("hello.txt", "weird 'quote\".txt", "100%_done.csv", "ünïcødé.md", "sub/deep.bin"):
        (shared / name).write_text("x" * 10)
    spec = PeerSpec.on_free_ports(
        "fuzzed",
        HOST,
        shared,
        root / "state",
        **_fuzzed_settings(),
    )
    peer = PeerProcesses(spec, root)
    try:
        peer.start()
        peer.wait_healthy(30)
        yield peer
    finally:
        peer.stop()


def _contract() -> dict[str, Any]:
    """The directory's OpenAPI document, as the code builds it (no server needed).

    Loaded at import so that pytest collects one test per operation;
    `test_the_running_peer_serves_this_contract` checks that the process under
    test serves exactly this document.
    """
    probe = Path(tempfile.gettempdir()) / "peerfind-openapi-probe"
    app = create_app(PeerSettings(peer_id="probe", shared_dir=probe, state_dir=probe))
    return app.openapi()


# Every check runs with its defaults, with one addition: a schema-valid /register or
# /overlay body names URLs, and whether a URL answers as a peer (or is one at all) is a
# fact about the network, not about the request's shape. Refusing such a URL (400:
# invalid, unreachable, not a peer, outside peer_networks, a host name) is the right
# answer to valid input.
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-path": path,
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "400"]
                    }
                },
            }
            for path in ("/register", "/overlay")
        ]
    }
)
CONTRACT = _contract()
schema = schemathesis.openapi.from_dict(CONTRACT, config=CONFIG)
if not GUARDED:
    schema = schema.exclude(path="/register").exclude(path="/overlay")


def test_the_running_peer_serves_this_contract(fuzzed_peer: PeerProcesses) -> None:
    served = httpx.get(f"{fuzzed_peer.spec.url}/openapi.json", trust_env=False, timeout=10)
    assert served.status_code == 200
    assert served.json() == CONTRACT


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_directory_api_conforms_to_its_openapi_schema(
    case: schemathesis.Case, fuzzed_peer: PeerProcesses
) -> None:
    """All checks: no 5xx, status codes / content types / bodies as the schema says,
    valid input accepted, invalid input rejected."""
    case.call_and_validate(base_url=fuzzed_peer.spec.url, timeout=30)


def test_fuzzed_peer_is_still_healthy_and_alone(fuzzed_peer: PeerProcesses) -> None:
    """After the run: still serving, and nothing the fuzzer sent made it join anyone."""
    assert fuzzed_peer.running("directory")
    health = fuzzed_peer.health()
    assert health["status"] == "ok"
    peers = fuzzed_peer.health()["peers"]
    # A fuzzed /register can only name 127.0.0.0/8; nothing there answers as a peer.
    assert peers == 0, peers
    log = (fuzzed_peer.log_dir / "fuzzed-directory.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert "unhandled error" not in log


def test_register_is_fuzzed_only_with_the_network_guard() -> None:
    """The guard settings exist, so /register is part of the run (see the module doc)."""
    assert GUARDED, "PeerSettings lacks peer_networks/resolve_hostnames: /register excluded"
