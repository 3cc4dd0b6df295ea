"""The compose stack from the host, as a user sees it after `make up`.

Run by `make test-compose`, which brings the stack up first and always takes it
down after (not part of `make test`: it needs a container engine and minutes).
Everything goes to the ports the stack publishes on 127.0.0.1, through the real
curl, grpcurl and `peerfind` commands. The tests run in file order: the last one
stops peer3's containers and starts them again.
"""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import readme_commands

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STACK = [sys.executable, str(ROOT / "scripts" / "stack.py")]
REST = {f"peer{i}": f"http://127.0.0.1:800{i}" for i in (1, 2, 3)}
GRPC = {f"peer{i}": f"127.0.0.1:5005{i}" for i in (1, 2, 3)}
PROMETHEUS = "http://127.0.0.1:9090"
PEER_SERVICES = ("directory", "transfer", "indexer")
DEADLINE_S = 90.0

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def tool(name: str) -> str:
    path = shutil.which(name) or str(BIN / name)
    assert Path(path).exists(), f"{name} is not installed (make install brings it)"
    return path


def curl_json(url: str) -> Any:
    result = run(tool("curl"), "-sS", "--fail-with-body", "--max-time", "10", url)
    assert result.returncode == 0, f"curl {url}: {result.stderr or result.stdout}"
    return json.loads(result.stdout)


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return run(*STACK, "compose", *args, timeout=180)


def poll(probe: Callable[[], T | None], what: str, deadline_s: float = DEADLINE_S) -> T:
    """Call `probe` until it returns something other than None, or fail after the deadline."""
    deadline = time.monotonic() + deadline_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired) as exc:
            last_error, value = exc, None
        if value is not None:
            return value
        time.sleep(1.0)
    pytest.fail(f"{what}: not within {deadline_s:.0f} s (last error: {last_error})")


def search(peer: str, query: str = ".txt", fanout: int = 2) -> dict[str, Any]:
    result: dict[str, Any] = curl_json(f"{REST[peer]}/search?query={query}&fanout={fanout}")
    return result


def owners(result: dict[str, Any]) -> set[str]:
    return {hit["peer_id"] for hit in result["hits"]}


def test_health_on_all_three() -> None:
    for peer, url in REST.items():
        health = curl_json(f"{url}/health")
        assert health["peer_id"] == peer
        assert health["grpc_address"] == GRPC[peer]
        assert health["transfer"]["serving"] is True
        assert health["index"]["available"] is True


def tables_converged() -> bool | None:
    """True when every peer lists the other two as alive."""
    for peer, url in REST.items():
        peers = curl_json(f"{url}/peers")["peers"]
        if {p["peer_id"] for p in peers if p["state"] == "alive"} != set(REST) - {peer}:
            return None
    return True


def test_peer_tables_converge() -> None:
    poll(tables_converged, "every peer knowing the other two")


def test_search_from_peer1_finds_files_of_all_three() -> None:
    def all_three() -> dict[str, Any] | None:
        result = search("peer1")
        return result if owners(result) == set(REST) else None

    result = poll(all_three, "a search from peer1 reaching all three peers")
    assert result["partial"] is False
    names = {hit["name"] for hit in result["hits"]}
    assert {"hello1.txt", "hello2.txt", "hello3.txt"} <= names
    # Each hit advertises the owner's gRPC address as published on the host.
    assert {hit["grpc_address"] for hit in result["hits"]} == set(GRPC.values())


def test_grpcurl_lists_transfer_and_health() -> None:
    result = run(tool("grpcurl"), "-plaintext", GRPC["peer2"], "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {"peerfind.v1.FileTransfer", "grpc.health.v1.Health"} <= services


def test_grpcurl_dummy_download_returns_the_indexed_size() -> None:
    size = next(
        f["size"] for f in curl_json(f"{REST['peer3']}/files")["files"] if f["path"] == "hello3.txt"
    )
    result = run(
        tool("grpcurl"),
        "-plaintext",
        "-d",
        '{"name": "hello3.txt"}',
        GRPC["peer3"],
        "peerfind.v1.FileTransfer/DummyDownload",
    )
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    text, pos, received = result.stdout, 0, 0
    while pos < len(text.rstrip()):
        chunk, end = decoder.raw_decode(text, pos)
        received += len(base64.b64decode(chunk.get("data", "")))
        pos = end + (len(text[end:]) - len(text[end:].lstrip()))
    assert received == size


def test_cli_download_through_peer1_streams_from_the_owner() -> None:
    result = run(tool("peerfind"), "download", "video3.mp4", "--peer", REST["peer1"], "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["peer_id"] == "peer3"
    assert summary["bytes"] == summary["expected_bytes"] == 3_000_000


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_works_verbatim_against_the_stack(command: str) -> None:
    """The README's examples, exactly as written: `make up` gives the documented addresses."""
    argv = shlex.split(command)
    argv[0] = tool(argv[0])
    if Path(argv[0]).name == "curl":
        argv.insert(1, "--fail")
    result = run(*argv, timeout=120)
    assert result.returncode == 0, f"{command}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
    assert result.stdout.strip(), f"{command} printed nothing"


def ps(*args: str) -> list[dict[str, Any]]:
    result = compose("ps", "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    if not out:
        return []
    rows: list[dict[str, Any]] = (
        json.loads(out) if out.startswith("[") else [json.loads(x) for x in out.splitlines()]
    )
    return rows


def test_ports_are_published_on_loopback_only() -> None:
    rows = ps()
    published = {
        (row["Service"], p["URL"], p["PublishedPort"])
        for row in rows
        for p in row.get("Publishers") or []
        if p.get("PublishedPort")
    }
    assert published, "no published ports"
    assert {url for _, url, _ in published} == {"127.0.0.1"}
    assert {port for _, _, port in published} == {8001, 8002, 8003, 50051, 50052, 50053, 9090}


@pytest.mark.parametrize("service", [f"peer1-{s}" for s in PEER_SERVICES])
def test_containers_run_unprivileged_on_a_read_only_root(service: str) -> None:
    uid = compose("exec", "-T", service, "python3", "-c", "import os; print(os.getuid())")
    assert uid.returncode == 0, uid.stderr
    assert uid.stdout.strip() == "10001"
    write = compose("exec", "-T", service, "python3", "-c", "open('/opt/venv/x', 'w')")
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr + write.stdout


def test_prometheus_scrapes_every_service_of_every_peer() -> None:
    expected = {(f"peer{i}", s) for i in (1, 2, 3) for s in PEER_SERVICES}

    def all_up() -> set[tuple[str, str]] | None:
        targets = curl_json(f"{PROMETHEUS}/api/v1/targets?state=active")["data"]["activeTargets"]
        up = {(t["labels"]["peer"], t["labels"]["service"]) for t in targets if t["health"] == "up"}
        return up if up == expected else None

    poll(all_up, "Prometheus reporting all nine targets up")


def test_stopping_peer3_leaves_partial_searches_then_it_comes_back() -> None:
    peer3 = [f"peer3-{s}" for s in PEER_SERVICES]
    stopped = compose("stop", *peer3)
    assert stopped.returncode == 0, stopped.stderr
    try:
        # Graceful SIGTERM handling: exit code 0, not 137 (killed after the grace period).
        exits = {row["Service"]: row["ExitCode"] for row in ps("--all", *peer3)}
        assert exits == dict.fromkeys(peer3, 0)

        def partial() -> dict[str, Any] | None:
            result = search("peer1")
            return result if result["partial"] and "peer3" not in owners(result) else None

        result = poll(partial, "a partial search with peer3 stopped")
        assert {"peer1", "peer2"} <= owners(result)
    finally:
        started = compose("start", *peer3)
        assert started.returncode == 0, started.stderr

    # Restarted alone, peer3 rejoins: no other container needs a restart.
    def back() -> bool | None:
        result = search("peer1")
        return True if owners(result) == set(REST) and not result["partial"] else None

    poll(back, "peer3 found again after its restart")


def test_restarting_the_friend_of_all_alone_needs_nothing_else() -> None:
    """peer1 is everyone's friend; restart its directory alone, as a user would."""
    restarted = compose("restart", "peer1-directory")
    assert restarted.returncode == 0, restarted.stderr

    def converged() -> bool | None:
        result = search("peer1")
        full = owners(result) == set(REST) and not result["partial"]
        return tables_converged() if full else None

    poll(converged, "all three peers meeting again after peer1-directory restarted")
