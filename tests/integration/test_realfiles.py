"""Real files between real peers: `peerfind get` from several owners, resumed, verified."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


def test_http_content_with_range_for_curl_and_a_browser(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    net = make_network(count=1)
    net.start()
    text = b"".join(b"line %05d of a shared text file\n" % i for i in range(2000))
    share_everywhere(net, "notes.txt", text)
    peer = net["peer1"].spec
    hit = httpx.get(f"{peer.url}/search", params={"query": "notes.txt"}, timeout=10).json()
    link = hit["hits"][0]["content_url"]
    assert link == f"{peer.url}/files/notes.txt/content"
    curl = shutil.which("curl")
    if curl is not None:
        part = subprocess.run(
            [curl, "-sS", "-f", "-r", "100-199", link], capture_output=True, timeout=60
        )
        assert part.returncode == 0, part.stderr
        assert part.stdout == text[100:200]
        whole = subprocess.run([curl, "-sS", "-f", link], capture_output=True, timeout=60)
        assert whole.stdout == text
    ranged = httpx.get(link, headers={"Range": "bytes=-10"}, timeout=10)
    assert ranged.status_code == 206
    assert ranged.content == text[-10:]
    assert ranged.headers["content-range"] == f"bytes {len(text) - 10}-{len(text) - 1}/{len(text)}"
    beyond = httpx.get(link, headers={"Range": f"bytes={len(text)}-"}, timeout=10)
    assert beyond.status_code == 416
    assert beyond.json()["error"] == "range_not_satisfiable"
    assert httpx.get(f"{peer.url}/files/absent.txt/content", timeout=10).status_code == 404
    browser = shutil.which("chromium")
    if browser is not None:
        dom = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--dump-dom",
                link,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "line 01999 of a shared text file" in dom.stdout, dom.stderr[-2000:]
