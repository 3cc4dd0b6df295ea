"""The dev harness without starting peers: polling, probes, the standard wiring, the CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from peerfind_devnet import (
    REPO_ROOT,
    PeerSpec,
    accepts,
    free_port,
    local_specs,
    make_local_shares,
    standard_specs,
    wait_for,
)
from peerfind_devnet._cli import main


def test_wait_for_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "", "ready"])
    assert wait_for(lambda: next(answers), 5, step_s=0) == "ready"


def test_wait_for_names_what_it_waited_for_and_the_last_error() -> None:
    def broken() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(TimeoutError, match=r"waiting for the peer \(last error: refused\)$"):
        wait_for(broken, 0.05, step_s=0.01, what="the peer")


def test_accepts_only_a_listening_port() -> None:
    port = free_port()
    assert not accepts("127.0.0.1", port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert accepts("127.0.0.1", listener.getsockname()[1])


def test_standard_wiring(tmp_path: Path) -> None:
    peer1, peer2, peer3 = standard_specs(tmp_path)
    assert [p.url for p in (peer1, peer2, peer3)] == [
        "http://127.0.0.1:8001",
        "http://127.0.0.1:8002",
        "http://127.0.0.1:8003",
    ]
    assert peer3.grpc_address == "127.0.0.1:50053"
    assert (peer1.friend_primary, peer1.friend_backup) == ("", "")
    assert (peer2.friend_primary, peer2.friend_backup) == (peer1.url, "")
    assert (peer3.friend_primary, peer3.friend_backup) == (peer2.url, peer1.url)
    assert peer3.shared_dir == REPO_ROOT / "deploy" / "samples" / "peer3"
    assert peer3.state_dir == tmp_path / "state" / "peer3"
    assert peer3.config()["peer_networks"] == ["127.0.0.0/8"]


def test_local_specs_fix_the_metrics_ports(tmp_path: Path) -> None:
    configs = [spec.config() for spec in local_specs(tmp_path)]
    assert [c["transfer_metrics_port"] for c in configs] == [9101, 9102, 9103]
    assert [c["indexer_metrics_port"] for c in configs] == [9201, 9202, 9203]
    assert {c["log_format"] for c in configs} == {"text"}


def test_a_peer_with_a_certificate_is_https(tmp_path: Path) -> None:
    spec = PeerSpec.on_free_ports("p", "127.0.0.1", tmp_path, tmp_path, tls_cert_file="c.pem")
    assert spec.url.startswith("https://127.0.0.1:")
    assert spec.config()["self_url"] == spec.url
    assert spec.verify is True  # no CA named: the system's


def test_status_and_down_without_a_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--root", str(tmp_path)]) == 1
    assert main(["down", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "no local network is running\n" * 2


def test_stop_needs_a_peer(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["stop", "--root", str(tmp_path)])
    assert caught.value.code == 2


def test_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "peerfind_devnet", "status", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "no local network is running\n")


def test_local_up_gives_peers_beyond_the_third_a_share_of_their_own(tmp_path: Path) -> None:
    specs = local_specs(tmp_path, 12)
    assert make_local_shares(specs, tmp_path) == [
        tmp_path / "shares" / f"peer{k}" for k in range(4, 13)
    ]
    assert [s.rest_port for s in specs] == [8000 + k for k in range(1, 13)]
    assert [s.grpc_port for s in specs] == [50050 + k for k in range(1, 13)]
    assert (specs[11].friend_primary, specs[11].friend_backup) == (specs[10].url, specs[0].url)
    assert (tmp_path / "shares" / "peer12" / "hello12.txt").read_text() == "hello from peer12\n"
    assert specs[2].shared_dir == REPO_ROOT / "deploy" / "samples" / "peer3"


@pytest.mark.parametrize("bad", ["0", "51", "abc", ""])
def test_up_refuses_a_bad_count_in_one_line_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    root = tmp_path / "run"
    assert main(["up", "--root", str(root), "--peers", bad]) == 2
    err = capsys.readouterr().err
    assert err == f"PEERS must be a whole number from 1 to 50, not {bad!r}\n"
    assert not root.exists()
