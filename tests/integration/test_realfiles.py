"""Real files between real peers: `peerfind get` from several owners, resumed, verified."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from helpers import NetworkFactory

from peerfind_devnet import Devnet, wait_for

CLI = [sys.executable, "-m", "peerfind_cli"]
MiB = 1024 * 1024


def share_everywhere(net: Devnet, name: str, data: bytes) -> str:
    """Put the same file in every peer's shared folder; wait until all have hashed it."""
    for peer in net.peers.values():
        (peer.spec.shared_dir / name).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    first = next(iter(net.peers.values())).spec.url

    def hashed_everywhere() -> bool:
        hits = httpx.get(f"{first}/search", params={"query": name}, timeout=10).json()["hits"]
        return sum(h["sha256"] == digest for h in hits) == len(net.peers)

    wait_for(hashed_everywhere, 60, what=f"{name} hashed by every peer")
    return digest


def get(net: Devnet, *args: str, env: dict[str, str] | None = None) -> Any:
    entry = next(iter(net.peers.values())).spec.url
    done = subprocess.run(
        [*CLI, "get", *args, "--peer", entry, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_get_from_three_owners_one_dead_verifies_and_renames(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    net = make_network()
    net.start()
    data = os.urandom(40 * MiB + 123)
    digest = share_everywhere(net, "big.bin", data)
    # One owner's transfer service is gone: its first range goes back to the others.
    net["peer2"].kill(["transfer"])
    out = tmp_path / "big.bin"
    summary = get(net, "big.bin", "--output", str(out), "--sources", "3")
    assert out.read_bytes() == data
    assert summary["sha256"] == digest
    assert summary["failed_owners"] == ["peer2"]
    assert set(summary["owners"]) == {"peer1", "peer2", "peer3"}
    assert not (tmp_path / "big.bin.part").exists()
    assert not (tmp_path / "big.bin.part.json").exists()

    # No overwrite without --force; a name nobody has: one line, non-zero.
    for args in (["big.bin", "--output", str(out)], ["absent.bin", "--output", str(tmp_path)]):
        refused = subprocess.run(
            [*CLI, "get", *args, "--peer", net["peer1"].spec.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith("peerfind:")
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert get(net, "big.bin", "--output", str(out), "--force")["sha256"] == digest


def test_get_resumes_after_the_cli_is_killed(make_network: NetworkFactory, tmp_path: Path) -> None:
    net = make_network(count=1)
    net.start()
    data = os.urandom(160 * MiB)
    digest = share_everywhere(net, "resume.bin", data)
    out = tmp_path / "resume.bin"
    state = tmp_path / "resume.bin.part.json"
    owner = net["peer1"]
    cli = subprocess.Popen(
        [*CLI, "get", "resume.bin", "-o", str(out), "--peer", owner.spec.url, "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def some_pieces_done() -> bool:
            try:
                return bool(json.loads(state.read_text())["done"])
            except (OSError, ValueError):
                return False

        wait_for(some_pieces_done, 60, step_s=0.01, what="a first piece recorded")
        owner.signal("transfer", signal.SIGSTOP)  # hold the stream: the CLI cannot finish
        cli.kill()
        cli.wait(30)
    finally:
        owner.signal("transfer", signal.SIGCONT)
        if cli.poll() is None:
            cli.kill()
            cli.wait(30)
    assert not out.exists()
    done_before = len(json.loads(state.read_text())["done"])
    assert done_before > 0

    summary = get(net, "resume.bin", "-o", str(out))
    assert summary["resumed_bytes"] >= done_before * 8 * MiB
    assert summary["bytes_fetched"] + summary["resumed_bytes"] == len(data)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
