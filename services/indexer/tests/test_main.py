"""Tests of the command line: config errors, signals, --check and /metrics, on real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer.main import check
from peerfind.config import PeerSettings
from peerfind.index import IndexReader, IndexWriter


def env_for(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERFIND_")}
    env["PEER_CONFIG"] = str(config)
    return env


def write_config(path: Path, **values: Any) -> Path:
    path.write_text(json.dumps(values, default=str), encoding="utf-8")
    return path


def indexer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "indexer.main", *args]


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        indexer_cmd(*args), env=env_for(config), capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def config(tmp_path: Path, shared: Path) -> Path:
    return write_config(
        tmp_path / "peer.json",
        peer_id="p1",
        shared_dir=shared,
        state_dir=tmp_path / "state",
        index_stale_after_s=1.0,
        log_format="text",
    )


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    """Start the indexer as a real process; every process started is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(config: Path) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"indexer-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            indexer_cmd(), env=env_for(config), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        procs.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_invalid_config_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = write_config(
        tmp_path / "bad.json",
        peer_id="p1",
        shared_dir="/tmp",
        state_dir=str(tmp_path / "x"),
        rest_port=70000,
    )
    result = run_cli(bad)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("peerfind-indexer: ")
    assert "rest_port" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "absent.json")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "does not exist" in result.stderr


def test_shared_dir_that_is_not_a_directory_exits_2(tmp_path: Path) -> None:
    not_dir = tmp_path / "file.txt"
    not_dir.write_text("x")
    cfg = write_config(
        tmp_path / "peer.json", peer_id="p1", shared_dir=not_dir, state_dir=tmp_path / "s"
    )
    result = run_cli(cfg)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"peerfind-indexer: shared_dir: {not_dir} is not a directory"
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_process_with_exit_0(
    config: Path,
    tmp_path: Path,
    start: Callable[[Path], subprocess.Popen[bytes]],
    eventually_sync: Callable[..., Any],
    sig: signal.Signals,
) -> None:
    reader = IndexReader(tmp_path / "state" / "index.sqlite3")
    proc = start(config)
    eventually_sync(lambda: reader.stats().heartbeat_at > 0 or proc.poll() is not None)
    assert proc.poll() is None, (tmp_path / "indexer-0.log").read_text()

    sent = time.monotonic()
    proc.send_signal(sig)
    eventually_sync(lambda: proc.poll() is not None, within=5, what="exit after signal")
    assert proc.returncode == 0, (tmp_path / "indexer-0.log").read_text()
    assert time.monotonic() - sent < 5
    assert "Traceback" not in (tmp_path / "indexer-0.log").read_text()


def test_check_follows_the_heartbeat_of_a_real_process(
    config: Path,
    tmp_path: Path,
    start: Callable[[Path], subprocess.Popen[bytes]],
    eventually_sync: Callable[..., Any],
) -> None:
    before = run_cli(config, "--check")
    assert before.returncode == 1
    assert before.stderr.startswith("peerfind-indexer: no heartbeat")

    proc = start(config)
    eventually_sync(lambda: run_cli(config, "--check").returncode == 0, what="check passes")
    # Still passing a few staleness periods later: the heartbeat keeps coming.
    time_alive = time.monotonic() + 1.5
    eventually_sync(lambda: time.monotonic() > time_alive)
    assert run_cli(config, "--check").returncode == 0
    assert proc.poll() is None

    proc.send_signal(signal.SIGTERM)
    eventually_sync(lambda: proc.poll() is not None, within=5)
    stale = eventually_sync(
        lambda: (r := run_cli(config, "--check")).returncode == 1 and r, what="check fails"
    )
    assert "stale after 1.0 s" in stale.stderr


def test_metrics_port_serves_indexer_metrics(
    tmp_path: Path,
    shared: Path,
    start: Callable[[Path], subprocess.Popen[bytes]],
    eventually_sync: Callable[..., Any],
) -> None:
    (shared / "one.txt").write_bytes(b"1234")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(
        tmp_path / "peer.json",
        peer_id="p1",
        shared_dir=shared,
        state_dir=tmp_path / "state",
        indexer_metrics_port=port,
    )
    proc = start(cfg)

    def scrape() -> str:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "indexer-0.log").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                body: str = resp.read().decode()
        except OSError:
            return ""
        return body if "peerfind_indexer_files 1.0" in body else ""

    body = eventually_sync(scrape, what="metrics after the first scan")
    assert "peerfind_indexer_bytes 4.0" in body
    assert 'peerfind_indexer_scans_total{result="ok"} 1.0' in body
    assert 'peerfind_build_info{peer="p1",service="indexer"' in body
    assert 'peerfind_indexer_skipped_total{reason="symlink_outside"} 0.0' in body


def test_check_in_process(make_settings: Callable[..., PeerSettings], tmp_path: Path) -> None:
    settings = make_settings(index_stale_after_s=0.2)
    assert check(settings) == 1  # no index at all
    writer = IndexWriter(settings.index_path)
    try:
        assert check(settings) == 1  # an index, never a heartbeat
        writer.heartbeat()
        assert check(settings) == 0
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            time.sleep(0.05)
        assert check(settings) == 1
    finally:
        writer.close()


def test_a_corrupt_index_does_not_keep_the_process_down(
    config: Path,
    tmp_path: Path,
    start: Callable[[Path], subprocess.Popen[bytes]],
    eventually_sync: Callable[..., Any],
) -> None:
    """Issue 17, item 13: it exited 1 with 'file is not a database' and stayed down."""
    index = tmp_path / "state" / "index.sqlite3"
    index.parent.mkdir(parents=True)
    index.write_bytes(b"\x00garbage" * 1000)
    proc = start(config)
    eventually_sync(lambda: run_cli(config, "--check").returncode == 0, what="check passes")
    assert proc.poll() is None
    assert [p.name for p in index.parent.glob("index.sqlite3.corrupt-*")] != []
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    log = (tmp_path / "indexer-0.log").read_text()
    assert log.count("is corrupt (file is not a database); moved it to") == 1, log
