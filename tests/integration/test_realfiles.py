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
from helpers import NetworkFactory, add_metrics_ports, build_specs
from prometheus_client.parser import text_string_to_metric_families

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


def start_get(net: Devnet, name: str, out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "get", name, "-o", str(out), "--peer", net["peer1"].spec.url, "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_first_piece(out: Path) -> None:
    state = out.with_name(out.name + ".part.json")

    def some_pieces_done() -> bool:
        try:
            return bool(json.loads(state.read_text())["done"])
        except (OSError, ValueError):
            return False

    wait_for(some_pieces_done, 60, step_s=0.01, what="a first piece recorded")


def finish(cli: subprocess.Popen[str]) -> Any:
    try:
        stdout, stderr = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(30)
    assert cli.returncode == 0, stderr
    return json.loads(stdout)


def refusals(net: Devnet, peer_id: str) -> float:
    """Download requests `peer_id` refused or ended because of the file itself."""
    spec = net[peer_id].spec
    url = f"http://{spec.host}:{spec.extra['transfer_metrics_port']}/metrics"
    text = httpx.get(url, timeout=5, trust_env=False).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "peerfind_transfer_refusals_total"
    )


def test_get_survives_an_owner_killed_mid_transfer(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    net = make_network()
    net.start()
    data = os.urandom(120 * MiB + 77)
    digest = share_everywhere(net, "killed.bin", data)
    out = tmp_path / "killed.bin"
    cli = start_get(net, "killed.bin", out, "--sources", "3")
    try:
        wait_first_piece(out)
        # Hold the other two owners' streams, so that pieces are still to come when
        # peer2's transfer dies with one of its own in flight (or about to start).
        for peer in ("peer1", "peer3"):
            net[peer].signal("transfer", signal.SIGSTOP)
        net["peer2"].kill(["transfer"])
    finally:
        for peer in ("peer1", "peer3"):
            net[peer].signal("transfer", signal.SIGCONT)
    summary = finish(cli)
    assert summary["failed_owners"] == ["peer2"]
    assert set(summary["owners"]) == {"peer1", "peer2", "peer3"}
    assert summary["sha256"] == digest
    assert out.read_bytes() == data
    assert not out.with_name("killed.bin.part").exists()


def test_get_detects_a_file_replaced_mid_download(
    tmp_path: Path, make_network: NetworkFactory
) -> None:
    root = tmp_path / "net"
    net = make_network(add_metrics_ports(build_specs(root, count=2)))
    net.start()
    data = os.urandom(160 * MiB + 5)
    digest = share_everywhere(net, "moving.bin", data)
    out = tmp_path / "moving.bin"
    shared = net["peer2"].spec.shared_dir
    newer = shared.parent / "moving.bin.new"  # the next version, outside the share
    newer.write_bytes(os.urandom(len(data)))
    refused_before = refusals(net, "peer2")
    cli = start_get(net, "moving.bin", out, "--sources", "2")
    try:
        wait_first_piece(out)
        for peer in ("peer1", "peer2"):  # nothing moves while the file is replaced
            net[peer].signal("transfer", signal.SIGSTOP)
        # peer2's copy is replaced by rename, as an editor or a sync tool saves. The
        # old inode loses its name (its ctime moves): a stream in flight ends ABORTED
        # at its next chunk; a range asked for after it is FAILED_PRECONDITION (not
        # the indexed file, or not the pinned sha256).
        os.replace(newer, shared / "moving.bin")
        net["peer2"].signal("transfer", signal.SIGCONT)  # peer2 alone takes pieces now
        wait_for(
            lambda: refusals(net, "peer2") > refused_before,
            60,
            what="peer2 to refuse the replaced file",
        )
    finally:
        for peer in ("peer1", "peer2"):
            net[peer].signal("transfer", signal.SIGCONT)
    summary = finish(cli)
    assert summary["failed_owners"] == ["peer2"]
    assert summary["sha256"] == digest
    assert out.read_bytes() == data  # every byte from the version asked for


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
    assert link == f"{peer.url}/files/notes.txt/content?path=notes.txt"
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


def test_same_named_files_and_odd_names_are_each_fetched_by_path(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    """Issue 17, item 16: of a/dup.txt and b/dup.txt only the first by path could ever be
    fetched, and a name with a tab was listed but refused."""
    net = make_network(count=2)
    net.start()
    first, second = os.urandom(3 * MiB + 1), os.urandom(2 * MiB + 7)
    tabbed = "tab\there..txt"
    placed = {
        ("peer2", "a/dup.txt"): first,
        ("peer2", "b/dup.txt"): second,
        ("peer1", "elsewhere/dup.txt"): first,  # the same bytes in another folder
        ("peer2", f"odd/{tabbed}"): b"a name with a tab\n",
    }
    for (peer_id, path), data in placed.items():
        target = net[peer_id].spec.shared_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    entry = net["peer1"].spec.url
    digest = {path: hashlib.sha256(data).hexdigest() for (_, path), data in placed.items()}

    def hashed(query: str, count: int) -> list[Any] | None:
        params = {"query": query, "mode": "flood"}  # every hit, not the first a walk finds
        body = httpx.get(f"{entry}/search", params=params, timeout=10).json()
        hits = [h for h in body["hits"] if h["sha256"] == digest.get(h["path"])]
        return hits if len(hits) == count else None

    dups = wait_for(lambda: hashed("dup.txt", 3), 60, what="the three dup.txt hashed")
    wait_for(lambda: hashed("here..txt", 1), 60, what=f"{tabbed!r} hashed")

    # Each folder's file, by its path; the one in two folders from both of its owners,
    # each asked for its own path.
    out_a, out_b = tmp_path / "a-dup.txt", tmp_path / "b-dup.txt"
    summary = get(net, "dup.txt", "--path", "a/dup.txt", "-o", str(out_a), "--sources", "2")
    assert summary["sha256"] == digest["a/dup.txt"]
    assert summary["owner_paths"] == {"peer2": "a/dup.txt", "peer1": "elsewhere/dup.txt"}
    assert out_a.read_bytes() == first
    summary = get(net, "dup.txt", "--path", "b/dup.txt", "-o", str(out_b))
    assert (summary["sha256"], summary["owners"]) == (digest["b/dup.txt"], ["peer2"])
    assert out_b.read_bytes() == second

    # Without --path: one line naming the paths, nothing written.
    refused = subprocess.run(
        [*CLI, "get", "dup.txt", "-o", str(tmp_path / "x"), "--peer", entry],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("peerfind: 'dup.txt' is at 3 paths that may hold")
    assert "'b/dup.txt' (peer2)" in refused.stderr
    assert not (tmp_path / "x").exists()

    # A name with a tab: fetched where --output says, and listed with a link to it.
    out_t = tmp_path / "tabbed.txt"
    assert get(net, tabbed, "--output", str(out_t))["sha256"] == digest[f"odd/{tabbed}"]
    assert out_t.read_bytes() == b"a name with a tab\n"
    dummy = subprocess.run(
        [*CLI, "download", "dup.txt", "--path", "b/dup.txt", "--peer", entry, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dummy.returncode == 0, dummy.stderr
    assert (json.loads(dummy.stdout)["bytes"], json.loads(dummy.stdout)["path"]) == (
        len(second),
        "b/dup.txt",
    )

    # Every hit's content_url opens its own file, whatever its name holds.
    for hit in [*dups, *(hashed("here..txt", 1) or [])]:
        body = httpx.get(hit["content_url"], timeout=30)
        assert body.status_code == 200, body.text
        assert hashlib.sha256(body.content).hexdigest() == hit["sha256"], hit["path"]
