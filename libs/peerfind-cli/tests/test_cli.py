"""The `peerfind` command, driven by typer's CliRunner, `main()` and the installed script."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner, Result

import peerfind_cli
from peerfind import __version__
from peerfind.api import FailedPeer, FileInfo, SearchHit, SearchResponse, Skipped, TraceNode
from peerfind.config import DEFAULT_CHUNK_SIZE
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from peerfind_cli import _commands, _output, app, main, parse_size
from peerfind_devnet.fakes import Pki

HitFactory = Callable[..., SearchHit]
SCRIPT = Path(sys.executable).with_name("peerfind")


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "PEERFIND_PEER": None, **(env or {})})
    return runner.invoke(app, list(args))


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    out, err = capsys.readouterr()
    code = caught.value.code
    return (code if isinstance(code, int) else 1), out, err


def assert_one_error_line(err: str, start: str = "peerfind: ") -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(start), err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("10MiB", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("500kB", 500_000),
        ("500KB", 500_000),
        ("4K", 4096),
        ("1.5KiB", 1536),
        ("2 MB", 2_000_000),
        ("7b", 7),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "10XB", "-5", "1.5", "0.0001kB", "1e6", "10 MiB s"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


# --------------------------------------------------------------------------- basics


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"peerfind {__version__}"


def test_installed_script_version_and_unreachable_peer(dead_port: int) -> None:
    done = subprocess.run(
        [str(SCRIPT), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"peerfind {__version__}")
    done = subprocess.run(
        [str(SCRIPT), "peers"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PEERFIND_PEER": f"http://127.0.0.1:{dead_port}", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"peerfind: cannot reach http://127.0.0.1:{dead_port}: connection refused\n"
    )


def test_main_without_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys)
    assert code == 0
    assert "download" in out
    assert err == ""


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "search")
    assert code == 2
    assert_one_error_line(err, "peerfind: Missing argument 'query'.")
    assert "peerfind search --help" in err
    assert out == ""


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "fetch")
    assert code == 2
    assert_one_error_line(err, "peerfind: No such command 'fetch'")


def test_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "upload", "--to", "127.0.0.1:1", "--size", "10XB")
    assert code == 2
    assert_one_error_line(err, "peerfind: --size: invalid size '10XB'")
    assert out == ""
    result = invoke("upload", "--to", "127.0.0.1:1", "--size", "ten")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr)


def test_chunk_size_out_of_range_is_a_usage_error() -> None:
    result = invoke("download", "x", "--chunk-size", "5MiB")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "peerfind: --chunk-size: 5242880 bytes is out of range")


def test_invalid_file_name_is_a_usage_error() -> None:
    result = invoke("download", "../etc/passwd")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "peerfind: invalid file name '../etc/passwd'")


def test_invalid_peer_url_is_one_line() -> None:
    result = invoke("health", "--peer", "ftp://peer")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "peerfind: invalid peer URL 'ftp://peer'")


@pytest.mark.parametrize("command", ["health", "peers", "files", "search x", "download x.txt"])
def test_unreachable_peer_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], dead_port: int, command: str
) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    code, out, err = run_main(capsys, *command.split(), "--peer", url)
    assert code == 1
    assert out == ""
    assert err == f"peerfind: cannot reach {url}: connection refused\n"


def test_peer_defaults_to_the_environment(dead_port: int) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    result = invoke("health", env={"PEERFIND_PEER": url})
    assert result.exit_code == 1
    assert result.stderr == f"peerfind: cannot reach {url}: connection refused\n"


def test_default_peer() -> None:
    assert peerfind_cli.DEFAULT_PEER == "http://127.0.0.1:8001"


def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(_commands, "locate", broken)
    result = invoke("download", "x.txt")
    assert result.exit_code == 1
    assert result.stderr == "peerfind: unexpected error: RuntimeError: boom second line\n"


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    async def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(_commands, "locate", interrupted)
    result = invoke("download", "x.txt")
    assert result.exit_code == 130
    assert result.stderr == "peerfind: interrupted\n"


def test_errors_outside_commands_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(work: Any, **_: Any) -> Any:
        work.close()
        raise OSError("disk on fire")

    monkeypatch.setattr(_commands, "run", broken)
    code, _, err = run_main(capsys, "health")
    assert code == 1
    assert err == "peerfind: unexpected error: OSError: disk on fire\n"


# --------------------------------------------------------------------------- REST commands


def test_health_json_and_table(directory: Any) -> None:
    result = invoke("health", "--peer", directory.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["peer_id"] == "peer1"
    result = invoke("health", "--peer", directory.url)
    assert result.exit_code == 0
    assert "peer1 at http://127.0.0.1:8001" in result.stdout
    assert "3 files, 1.2 kB" in result.stdout
    assert "k" * 52 in result.stdout  # the key id, whole: to compare out of band


def test_peers_table_shows_both_views(directory: Any) -> None:
    from peerfind.api import PeerInfo, PeerRef

    directory.state.peers = [
        PeerInfo(
            peer_id="peer2",
            url="http://127.0.0.1:8002",
            grpc_address="127.0.0.1:50052",
            state="suspect",
            last_seen=0,
            friend=True,
            key_id="abcdefghijklmnop" + "q" * 36,
        ),
    ]
    directory.state.passive = [PeerRef(peer_id="peer7", url="http://127.0.0.1:8007")]
    result = invoke("peers", "--peer", directory.url)
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "peer2" in line)
    assert all(word in row for word in ("suspect", "127.0.0.1:50052", "never", "yes"))
    assert "abcdefghijklmnop..." in row and "q" * 20 not in row  # a key id's first 16
    lines = result.stdout.splitlines()
    active_at = next(i for i, line in enumerate(lines) if "active view" in line)
    passive_at = next(i for i, line in enumerate(lines) if "passive view" in line)
    peer7_at = next(i for i, line in enumerate(lines) if "peer7" in line)
    assert active_at < passive_at < peer7_at  # each peer under the view it is in
    words = " ".join(result.stdout.split())  # a title may wrap
    assert "(1 of 6)" in words and "(1 of 36)" in words
    assert "1 neighbour(s), 1 passive peer(s)" in result.stdout
    data = json.loads(invoke("peers", "--peer", directory.url, "--json").stdout)
    assert data["peers"][0]["state"] == "suspect"
    assert data["passive"] == [{"peer_id": "peer7", "url": "http://127.0.0.1:8007"}]


def test_files_table_shows_the_next_page(directory: Any) -> None:
    directory.state.files = [
        FileInfo(
            name=f"[bold]{n}",
            path=f"d/[bold]{n}",
            size=2000,
            mtime=0,
            peer_id="peer1",
            rest_url="http://127.0.0.1:8001",
            grpc_address="127.0.0.1:50051",
        )
        for n in "abc"
    ]
    result = invoke("files", "--peer", directory.url, "--limit", "2")
    assert result.exit_code == 0
    assert "[bold]a" in result.stdout  # data is never read as rich markup
    assert "2.0 kB" in result.stdout
    assert "2 of 3 file(s)" in result.stdout
    assert 'more: --after "d/[bold]b"' in result.stdout
    data = json.loads(
        invoke("files", "--peer", directory.url, "--json", "--after", "d/[bold]b").stdout
    )
    assert [f["name"] for f in data["files"]] == ["[bold]c"]
    assert data["next_after"] is None


def test_search_table_and_partial_line(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("hello3.txt", "peer3", "127.0.0.1:50053", size=6)]
    directory.state.failed = [FailedPeer(peer_id="peer4", url="http://x:1", error="timed out")]
    result = invoke("search", "hello", "--peer", directory.url, "--fanout", "2")
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "hello3.txt" in line)
    assert all(word in row for word in ("6 bytes", "peer3", "127.0.0.1:50053"))
    assert "1 hit from 2 peers in 3 ms, mode flood, 0 messages" in result.stdout
    assert "partial: peer4 (timed out)" in result.stdout
    assert directory.state.requests[-1][2] == {"query": "hello", "fanout": "2"}


def test_search_json(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("hello3.txt", "peer3", "127.0.0.1:50053")]
    result = invoke("search", "hello", "--peer", directory.url, "--json", "--timeout-ms", "900")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["hits"][0]["grpc_address"] == "127.0.0.1:50053"
    assert data["partial"] is False
    assert directory.state.requests[-1][2]["timeout_ms"] == "900"


def test_search_error_detail_is_one_line(directory: Any) -> None:
    body = {"error": "invalid_request", "detail": "fanout must be\nat most 8"}
    directory.state.override["/search"] = (422, json.dumps(body))
    result = invoke("search", "x", "--peer", directory.url)
    assert result.exit_code == 1
    assert result.stderr == (
        f"peerfind: fanout must be at most 8 (HTTP 422 from {directory.url})\n"
    )


# --------------------------------------------------------------------------- gRPC commands


async def invoke_async(*args: str) -> Result:
    """Run the CLI in a worker thread: its asyncio.run must not share the test's loop."""
    return await asyncio.to_thread(invoke, *args)


async def test_download_prints_the_summary(directory: Any, transfer: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("hello3.txt", "peer3", transfer.address, size=6)]
    result = await invoke_async("download", "hello3.txt", "--peer", directory.url)
    assert result.exit_code == 0, result.output
    pattern = (
        rf"^downloaded hello3\.txt from peer3 \({re.escape(transfer.address)}\): "
        r"6 bytes in 1 chunks, \d+\.\d\d s, \d+\.\d\d MB/s$"
    )
    assert re.match(pattern, result.stdout.strip()), result.stdout
    assert result.stderr == ""


async def test_download_from_a_chosen_owner_as_json(
    directory: Any, transfer: Any, hit: HitFactory
) -> None:
    directory.state.hits = [
        hit("big.bin", "peer2", "127.0.0.1:1", size=10_000),
        hit("big.bin", "peer3", transfer.address, size=10_000),
    ]
    result = await invoke_async(
        "download",
        "big.bin",
        "--peer",
        directory.url,
        "--from-peer",
        "peer3",
        "--chunk-size",
        "4KiB",
        "--json",
        "--fanout",
        "1",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["peer_id"] == "peer3"
    assert data["address"] == transfer.address
    assert (data["bytes"], data["chunks"], data["expected_bytes"]) == (10_000, 3, 10_000)
    assert transfer.servicer.requests[-1].chunk_size == 4096


async def test_download_notes_a_size_that_differs_from_the_index(
    directory: Any, transfer: Any, hit: HitFactory
) -> None:
    directory.state.hits = [hit("hello3.txt", "peer3", transfer.address, size=9)]
    result = await invoke_async("download", "hello3.txt", "--peer", directory.url)
    assert result.exit_code == 0
    assert result.stdout.strip().endswith("(the index listed 9 bytes)")


async def test_download_of_an_unknown_name(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("hello3.txt.old", "peer3", "127.0.0.1:1")]
    result = await invoke_async("download", "hello3.txt", "--peer", directory.url)
    assert result.exit_code == 1
    assert result.stderr == (
        f"peerfind: no peer in reach has 'hello3.txt' (searched via {directory.url})\n"
    )
    assert result.stdout == ""


async def test_download_from_a_peer_that_lost_the_file(
    directory: Any, transfer: Any, hit: HitFactory
) -> None:
    directory.state.hits = [hit("gone.txt", "peer3", transfer.address)]
    result = await invoke_async("download", "gone.txt", "--peer", directory.url)
    assert result.exit_code == 1
    assert result.stderr == "peerfind: NOT_FOUND: no file named 'gone.txt'\n"


async def test_download_from_an_unknown_owner(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("a.txt", "peer3", "127.0.0.1:1")]
    result = await invoke_async("download", "a.txt", "--peer", directory.url, "--from-peer", "p9")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "peerfind: peer 'p9' does not hold 'a.txt'")


async def test_upload_to_a_grpc_address(transfer: Any) -> None:
    result = await invoke_async(
        "upload",
        "--to",
        transfer.address,
        "--size",
        "10KiB",
        "--chunk-size",
        "4KiB",
        "--name",
        "bench",
    )
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith(f"uploaded 10240 bytes to {transfer.address} in 3 chunks")
    assert line.endswith("verified: yes")
    seen = transfer.servicer.uploads[-1]
    assert (seen.name, seen.bytes, seen.chunks) == ("bench", 10240, 3)


async def test_upload_through_a_peer_url_as_json(directory: Any, transfer: Any) -> None:
    directory.advertise(transfer.address)
    result = await invoke_async("upload", "--to", directory.url, "--size", "3MB", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["address"] == transfer.address
    assert data["verified"] is True
    assert data["bytes_sent"] == 3_000_000
    assert data["chunks_sent"] == -(-3_000_000 // DEFAULT_CHUNK_SIZE)
    assert data["receipt"]["bytes_received"] == 3_000_000


async def test_upload_with_a_checksum_mismatch_fails(transfer: Any) -> None:
    transfer.servicer.corrupt_checksum = True
    result = await invoke_async("upload", "--to", transfer.address, "--size", "1000")
    assert result.exit_code == 1
    assert result.stdout.strip().endswith("verified: no")
    assert_one_error_line(result.stderr, "peerfind: checksum mismatch: sent 1000 bytes")


async def test_upload_to_a_closed_port(dead_port: int) -> None:
    result = await invoke_async("upload", "--to", f"127.0.0.1:{dead_port}", "--size", "1")
    assert result.exit_code == 1
    assert result.stderr == f"peerfind: cannot reach 127.0.0.1:{dead_port}: connection refused\n"


def test_search_query_is_never_read_as_markup(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("[red]x", "peer3", "127.0.0.1:50053")]
    result = invoke("search", "[red]", "--peer", directory.url)
    assert result.exit_code == 0
    assert "'[red]' via peer1" in result.stdout
    assert "[red]x" in result.stdout


# --------------------------------------------------------------------------- TLS


def tls_options(pki: Pki, *, client_cert: bool = True) -> list[str]:
    options = ["--ca-file", str(pki.client.ca_file)]
    if client_cert:
        options += ["--cert-file", str(pki.client.cert_file)]
        options += ["--key-file", str(pki.client.key_file)]
    return options


def test_the_ca_file_reaches_the_rest_client(https_directory: Any, pki: Pki) -> None:
    result = invoke(*tls_options(pki), "health", "--peer", https_directory.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["peer_id"] == "peer1"
    result = invoke("health", "--peer", https_directory.url)  # the system's CAs
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, f"peerfind: cannot reach {https_directory.url}: ")


async def test_the_client_certificate_reaches_the_transfer_client(
    https_directory: Any, mtls_transfer: Any, hit: HitFactory, pki: Pki
) -> None:
    https_directory.state.hits = [hit("hello3.txt", "peer3", mtls_transfer.address)]
    https_directory.advertise(mtls_transfer.address)
    peer = ["--peer", https_directory.url, "--json"]
    result = await invoke_async(*tls_options(pki), "download", "hello3.txt", *peer)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bytes"] == 6
    to = ["--to", https_directory.url, "--size", "3000", "--json"]
    result = await invoke_async(*tls_options(pki), "upload", *to)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"] is True
    result = await invoke_async(*tls_options(pki, client_cert=False), "upload", *to)
    assert result.exit_code == 1  # the server requires a client certificate
    assert_one_error_line(result.stderr)


def test_cert_file_needs_key_file(pki: Pki) -> None:
    result = invoke("--cert-file", str(pki.client.cert_file), "health")
    assert result.exit_code == 2
    assert result.stderr == "peerfind: --cert-file and --key-file go together\n"


# --------------------------------------------------------------------------- an owner that stalls
# `peerfind download` and `get` waited for ever on an owner that stops mid-stream: a gRPC
# stream has no deadline of its own and the owner still answers keepalive pings.

FIRST = 4096  # what the owner sends before it stalls
SIZE = 1_000_000
WITHIN_S = 30.0  # how long a test lets the CLI run before calling it hung


class StallingOwner(transfer_pb2_grpc.FileTransferServicer):  # type: ignore[misc]
    """Sends one chunk of any file, then nothing, for as long as the call lasts."""

    async def DummyDownload(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield transfer_pb2.FileChunk(data=bytes(FIRST), offset=request.offset, name=request.name)
        await asyncio.Event().wait()  # until the client or the server's stop cancels us

    async def Download(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield transfer_pb2.FileChunk(data=bytes(FIRST), offset=request.offset, name=request.name)
        await asyncio.Event().wait()


@pytest.fixture
async def stalling() -> AsyncIterator[str]:
    server = grpc.aio.server()
    transfer_pb2_grpc.add_FileTransferServicer_to_server(StallingOwner(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def cli(*args: str) -> Any:
    """The CLI in a worker thread, called hung (a failure) after WITHIN_S."""
    return await asyncio.wait_for(asyncio.to_thread(invoke, *args), WITHIN_S)


async def test_download_from_an_owner_that_stalls_fails_with_one_line(
    directory: Any, stalling: str, hit: HitFactory
) -> None:
    directory.state.hits = [hit("big.bin", "peer3", stalling, size=SIZE)]
    result = await cli("download", "big.bin", "--peer", directory.url, "--stall-timeout", "0.5")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr)
    assert result.stderr == (
        f"peerfind: {stalling} stopped sending: nothing for 0.5 s after {FIRST} bytes\n"
    )
    assert result.stdout == ""


async def test_get_from_an_owner_that_stalls_fails_and_keeps_the_part(
    directory: Any, stalling: str, hit: HitFactory, tmp_path: Path
) -> None:
    owner = hit("big.bin", "peer3", stalling, size=SIZE).model_copy(update={"sha256": "ab" * 32})
    directory.state.hits = [owner]
    output = tmp_path / "big.bin"
    result = await cli(
        "get", "big.bin", "--peer", directory.url, "-o", str(output), "--stall-timeout", "0.5"
    )
    assert result.exit_code == 1
    assert_one_error_line(result.stderr)
    assert "every owner failed (peer3: " in result.stderr
    assert f"stopped sending: nothing for 0.5 s after {FIRST} bytes" in result.stderr
    assert "run again to resume" in result.stderr
    assert not output.exists()


async def test_the_stall_timeout_must_be_positive(directory: Any) -> None:
    result = await cli("download", "big.bin", "--peer", directory.url, "--stall-timeout", "0")
    assert result.exit_code == 2
    assert "--stall-timeout" in result.stderr


# --------------------------------------------------------------------------- --json errors
# With --json an error was plain text on stderr only: a script reading stdout got nothing.


@pytest.mark.parametrize("command", ["health", "peers", "files", "search x", "download x.txt"])
def test_json_errors_are_a_json_object_on_stdout(
    capsys: pytest.CaptureFixture[str], dead_port: int, command: str
) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    code, out, err = run_main(capsys, *command.split(), "--peer", url, "--json")
    assert code == 1
    assert json.loads(out) == {
        "error": f"cannot reach {url}: connection refused",
        "exit_code": 1,
    }
    assert err == f"peerfind: cannot reach {url}: connection refused\n"  # people still read it


def test_json_usage_errors_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "download", "x.txt", "--json", "--stall-timeout", "0")
    assert code == 2
    error = json.loads(out)
    assert error["exit_code"] == 2
    assert "--stall-timeout" in error["error"]
    assert_one_error_line(err)
    code, out, _ = run_main(capsys, "search", "", "--json")  # the command's own check
    assert code == 2
    assert json.loads(out)["error"].startswith("invalid search: ")


async def test_json_error_of_a_name_nobody_has(directory: Any) -> None:
    result = await invoke_async("download", "nope.txt", "--peer", directory.url, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "error": f"no peer in reach has 'nope.txt' (searched via {directory.url})",
        "exit_code": 1,
    }


async def test_json_upload_with_a_checksum_mismatch_is_one_object(transfer: Any) -> None:
    transfer.servicer.corrupt_checksum = True
    result = await invoke_async("upload", "--to", transfer.address, "--size", "1000", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # one object: the summary, saying what failed
    assert data["verified"] is False
    assert data["error"].startswith("checksum mismatch: sent 1000 bytes")
    assert data["exit_code"] == 1
    assert_one_error_line(result.stderr, "peerfind: checksum mismatch")


# --------------------------------------------------------------------------- escapes
# A file name with an escape sequence went raw to the terminal (one set the window title).

TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the window title
CLEAR = "\x1b[2J"  # erase the screen


def test_safe_escapes_control_characters_and_bidi_overrides() -> None:
    assert _output.safe(f"a{TITLE}b") == "a\\x1b]0;pwned\\x07b"
    assert _output.safe("line\nbreak\ttab\r") == "line\\nbreak\\ttab\\r"
    assert _output.safe("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert _output.safe("\x9b31m") == "\\x9b31m"  # the one-byte CSI of C1
    for kept in ("été.txt", "日本語.pdf", "emoji 👨‍👩‍👧.png", "[bold]x"):
        assert _output.safe(kept) == kept


def _hostile_info(name: str) -> FileInfo:
    return FileInfo(
        name=name,
        path=f"d/{name}",
        size=10,
        mtime=0,
        peer_id="peer1",
        rest_url="http://127.0.0.1:8001",
        grpc_address="127.0.0.1:50051",
    )


def test_files_and_search_escape_what_peers_send(directory: Any, hit: HitFactory) -> None:
    name = f"x{TITLE}{CLEAR}.txt"
    directory.state.files = [_hostile_info(name)]
    directory.state.hits = [hit(name, "peer1", "127.0.0.1:1", size=10)]
    for command in (["files"], ["search", "x"]):
        result = invoke(*command, "--peer", directory.url)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout
        assert "\x07" not in result.stdout
        assert "x\\x1b]0;pwned\\x07\\x1b[2J.txt" in result.stdout
    # --json is for programs: the name as it is, JSON-escaped.
    result = invoke("files", "--peer", directory.url, "--json")
    assert json.loads(result.stdout)["files"][0]["name"] == name


def test_error_details_from_a_peer_are_escaped(directory: Any) -> None:
    detail = f"index gone{TITLE}"
    body = json.dumps({"error": "index_unavailable", "detail": detail})
    directory.state.override = {"/files": (503, body)}
    result = invoke("files", "--peer", directory.url)
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr
    assert_one_error_line(result.stderr, "peerfind: index gone\\x1b]0;pwned\\x07")


# --------------------------------------------------------------------------- modes and --explain


def explained(trace: TraceNode | None, hits: list[SearchHit]) -> str:
    """A walk's answer as a peer would send it, with `trace`."""
    return SearchResponse(
        query="hello",
        query_id="q-1",
        peer_id="peer1",
        hits=hits,
        peers_answered=["peer1", "peer4", "peer7"],
        peers_failed=[FailedPeer(peer_id="peer2", url="http://x:1", error="timed out")],
        partial=True,
        truncated=False,
        took_ms=12.0,
        mode="walk",
        messages=42,
        trace=trace,
    ).model_dump_json()


HOSTILE_ID = f"evil{TITLE}"
TRACE = TraceNode(
    peer_id="peer1",
    ttl=10,
    hits=0,
    children=[
        TraceNode(
            peer_id="peer4", ttl=9, hits=0, children=[TraceNode(peer_id="peer7", ttl=8, hits=1)]
        ),
        TraceNode(peer_id="peer2", ttl=9, hits=0, error="timed out"),
        TraceNode(peer_id=HOSTILE_ID, ttl=9, hits=2, duplicate=True, error=None),
        TraceNode(peer_id="peer6", ttl=9, hits=0, error=f"refused{CLEAR}\nby peer"),
    ],
    skipped=[
        Skipped(peer_id="peer3", reason="summary_miss"),
        Skipped(peer_id="peer5", reason="visited"),
        Skipped(peer_id=f"x{CLEAR}", reason="budget"),
    ],
)
TREE = """\
peer1 (ttl 10, 0 hits)
├── peer4 (ttl 9, 0 hits)
│   └── peer7 (ttl 8, 1 hit)
├── peer2 failed: timed out
├── evil\\x1b]0;pwned\\x07 (ttl 9, 2 hits, duplicate)
├── peer6 failed: refused\\x1b[2J by peer
└── skipped: peer3 (summary_miss), peer5 (visited), x\\x1b[2J (budget)
"""


def test_search_sends_mode_max_results_budget_and_explain(directory: Any) -> None:
    options = ["--mode", "walk", "--max-results", "3", "--budget", "200", "--explain"]
    result = invoke("search", "hello", "--peer", directory.url, *options)
    assert result.exit_code == 0, result.output
    assert directory.state.requests[-1][2] == {
        "query": "hello",
        "mode": "walk",
        "max_results": "3",
        "budget": "200",
        "explain": "true",
    }
    result = invoke("search", "hello", "--peer", directory.url, "--mode", "dynamic")
    assert result.exit_code == 0, result.output
    assert directory.state.requests[-1][2] == {"query": "hello", "mode": "dynamic"}  # no explain


def test_search_summary_names_the_mode_and_the_messages(directory: Any, hit: HitFactory) -> None:
    hits = [hit("hello7.txt", "peer7", "127.0.0.1:50057"), hit("hello4.txt", "peer4", "x:1")]
    directory.state.override["/search"] = (200, explained(None, hits))
    result = invoke("search", "hello", "--peer", directory.url, "--mode", "walk")
    assert result.exit_code == 0, result.output
    assert "2 hits from 3 peers in 12 ms, mode walk, 42 messages\n" in result.stdout
    assert "partial: peer2 (timed out)" in result.stdout
    assert "peer1 (ttl" not in result.stdout  # no tree without --explain


def test_explain_draws_the_trace_after_the_hits(directory: Any, hit: HitFactory) -> None:
    directory.state.override["/search"] = (
        200,
        explained(TRACE, [hit("hello7.txt", "peer7", "127.0.0.1:50057")]),
    )
    result = invoke("search", "hello", "--peer", directory.url, "--mode", "walk", "--explain")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("\n" + TREE), result.stdout
    assert result.stdout.index("hello7.txt") < result.stdout.index("peer1 (ttl 10")
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout


def test_explain_of_a_peer_that_sends_no_trace(directory: Any) -> None:
    directory.state.override["/search"] = (200, explained(None, []))
    result = invoke("search", "hello", "--peer", directory.url, "--explain")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("no trace: peer1 did not explain (an older peer?)\n")


def test_json_carries_the_trace_as_it_is(directory: Any) -> None:
    directory.state.override["/search"] = (200, explained(TRACE, []))
    result = invoke("search", "hello", "--peer", directory.url, "--explain", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["mode"], data["messages"]) == ("walk", 42)
    assert TraceNode.model_validate(data["trace"]) == TRACE
    assert data["trace"]["children"][2]["peer_id"] == HOSTILE_ID  # data for programs, unescaped
    assert data["trace"]["skipped"][0] == {"peer_id": "peer3", "reason": "summary_miss"}


@pytest.mark.parametrize(
    ("options", "start"),
    [
        (["--mode", "bogus"], "peerfind: Invalid value for '--mode'"),
        (["--mode", ""], "peerfind: Invalid value for '--mode'"),
        (["--budget", "-1"], "peerfind: invalid search: budget: "),
        (["--budget", "100001"], "peerfind: invalid search: budget: "),
        (["--budget", "many"], "peerfind: Invalid value for '--budget'"),
        (["--max-results", "0"], "peerfind: invalid search: max_results: "),
        (["--max-results", "-3"], "peerfind: invalid search: max_results: "),
    ],
)
def test_bad_search_values_are_one_line(
    capsys: pytest.CaptureFixture[str], dead_port: int, options: list[str], start: str
) -> None:
    url = f"http://127.0.0.1:{dead_port}"  # refused before any call: no peer is asked
    code, out, err = run_main(capsys, "search", "hello", "--peer", url, *options)
    assert code == 2
    assert_one_error_line(err, start)
    assert out == ""
    code, out, err = run_main(capsys, "search", "hello", "--peer", url, *options, "--json")
    assert code == 2
    assert json.loads(out)["exit_code"] == 2
    assert_one_error_line(err, start)


# --------------------------------------------------------------------------- names and paths
# Issue 17, item 16: names with tabs, newlines or '..' were listed but refused, and of two
# files of one name in different folders only the first by path could ever be fetched.

DUP_A, DUP_B = b"the dup.txt of folder a", b"the dup.txt of folder b, not the same"


def owned(hit: HitFactory, name: str, peer_id: str, address: str, path: str, data: bytes) -> Any:
    """A hit for `data` at `path`, hashed, as a peer lists it."""
    found = hit(name, peer_id, address, size=len(data))
    return found.model_copy(update={"path": path, "sha256": hashlib.sha256(data).hexdigest()})


def dups(directory: Any, transfer: Any, hit: HitFactory) -> None:
    """peer3 shares a/dup.txt and b/dup.txt, two different files."""
    transfer.servicer.shared = {"a/dup.txt": DUP_A, "b/dup.txt": DUP_B}
    directory.state.hits = [
        owned(hit, "dup.txt", "peer3", transfer.address, "a/dup.txt", DUP_A),
        owned(hit, "dup.txt", "peer3", transfer.address, "b/dup.txt", DUP_B),
    ]


async def test_get_chooses_among_same_named_files_by_path(
    directory: Any, transfer: Any, hit: HitFactory, tmp_path: Path
) -> None:
    dups(directory, transfer, hit)
    for path, data in (("b/dup.txt", DUP_B), ("a/dup.txt", DUP_A)):
        out = tmp_path / path.replace("/", "-")
        result = await cli(
            "get", "dup.txt", "--path", path, "-o", str(out), "--peer", directory.url
        )
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == data
        assert {r.path for r in transfer.servicer.requests} == {path}
        transfer.servicer.requests.clear()
        assert result.stdout.startswith(f"got dup.txt -> {out}: {len(data)} bytes"), result.stdout


async def test_get_of_a_name_in_two_folders_lists_them_and_fetches_nothing(
    directory: Any, transfer: Any, hit: HitFactory, tmp_path: Path
) -> None:
    dups(directory, transfer, hit)
    out = tmp_path / "dup.txt"
    for command in ("get", "download"):
        args = ["-o", str(out)] if command == "get" else []
        result = await cli(command, "dup.txt", *args, "--peer", directory.url)
        assert result.exit_code == 1, result.output
        assert_one_error_line(result.stderr)
        assert result.stderr == (
            "peerfind: 'dup.txt' is at 2 paths that may hold different files: "
            "'a/dup.txt' (peer3), 'b/dup.txt' (peer3); choose one with --path PATH\n"
        )
    assert transfer.servicer.requests == []
    assert not out.exists()


async def test_get_of_one_file_in_two_folders_needs_no_path(
    directory: Any, transfer: Any, hit: HitFactory, tmp_path: Path
) -> None:
    """Same bytes at different paths on two owners: one file, fetched from both, each
    asked for its own path."""
    transfer.servicer.shared = {"x/same.bin": DUP_A * 1000, "y/same.bin": DUP_A * 1000}
    directory.state.hits = [
        owned(hit, "same.bin", "peer2", transfer.address, "x/same.bin", DUP_A * 1000),
        owned(hit, "same.bin", "peer3", transfer.address, "y/same.bin", DUP_A * 1000),
    ]
    out = tmp_path / "same.bin"
    result = await cli(
        "get", "same.bin", "-o", str(out), "--peer", directory.url, "--sources", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == DUP_A * 1000
    summary = json.loads(result.stdout)
    assert summary["owner_paths"] == {"peer2": "x/same.bin", "peer3": "y/same.bin"}
    assert {r.path for r in transfer.servicer.requests} <= {"x/same.bin", "y/same.bin"}


async def test_get_of_a_name_with_a_newline_needs_output(
    directory: Any, transfer: Any, hit: HitFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "new\nline\tname.txt"
    data = b"a name a shell would split"
    transfer.servicer.shared = {f"odd/{name}": data}
    directory.state.hits = [owned(hit, name, "peer3", transfer.address, f"odd/{name}", data)]
    monkeypatch.chdir(tmp_path)
    refused = await cli("get", name, "--peer", directory.url)
    assert refused.exit_code == 2
    assert refused.stderr == (
        "peerfind: 'new\\nline\\tname.txt' has control or bidirectional characters: choose "
        "the file to write with --output FILE\n"
    )
    assert os.listdir(tmp_path) == []
    out = tmp_path / "newline.txt"
    result = await cli("get", name, "--output", str(out), "--peer", directory.url)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == data
    assert transfer.servicer.requests[-1].path == f"odd/{name}"
    # The search asked for the longest piece without a control character (a query may
    # hold none); the exact name was kept from the hits.
    assert directory.state.requests[-1][2]["query"] == "name.txt"
    assert "\n" not in result.stdout.strip()  # the name is escaped in the summary
    assert result.stdout.startswith("got new\\nline\\tname.txt -> ")


async def test_download_sends_the_hit_path_and_takes_path(
    directory: Any, transfer: Any, hit: HitFactory
) -> None:
    directory.state.hits = [hit("hello3.txt", "peer3", transfer.address, size=6)]
    result = await invoke_async("download", "hello3.txt", "--peer", directory.url, "--json")
    assert result.exit_code == 0, result.output
    assert transfer.servicer.requests[-1].path == "docs/hello3.txt"
    assert json.loads(result.stdout)["path"] == "docs/hello3.txt"
    dups(directory, transfer, hit)
    result = await invoke_async(
        "download", "dup.txt", "--path", "b/dup.txt", "--peer", directory.url
    )
    assert result.exit_code == 0, result.output
    assert transfer.servicer.requests[-1].path == "b/dup.txt"
    assert f"{len(DUP_B)} bytes in 1 chunks" in result.stdout


async def test_a_path_nobody_has_names_the_paths_there_are(
    directory: Any, transfer: Any, hit: HitFactory, tmp_path: Path
) -> None:
    dups(directory, transfer, hit)
    out = tmp_path / "dup.txt"
    for command in (["get", "-o", str(out)], ["download"]):
        result = await cli(
            command[0], "dup.txt", *command[1:], "--path", "c/dup.txt", "--peer", directory.url
        )
        assert result.exit_code == 1
        assert result.stderr == (
            "peerfind: no peer in reach has 'dup.txt' at 'c/dup.txt' "
            "(it is at 'a/dup.txt', 'b/dup.txt')\n"
        )


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["dup.txt", "--path", "a/other.txt"], "peerfind: --path 'a/other.txt' is not a path of"),
        (["dup.txt", "--path", "../dup.txt"], "peerfind: invalid --path '../dup.txt'"),
        (["dup.txt", "--path", "/a/dup.txt"], "peerfind: invalid --path '/a/dup.txt'"),
        (["..", "--path", "a/.."], "peerfind: invalid file name '..'"),
        (["a/dup.txt"], "peerfind: invalid file name 'a/dup.txt'"),
    ],
)
@pytest.mark.parametrize("command", ["get", "download"])
def test_bad_names_and_paths_are_usage_errors(
    capsys: pytest.CaptureFixture[str], dead_port: int, command: str, args: list[str], start: str
) -> None:
    url = f"http://127.0.0.1:{dead_port}"  # refused before any call
    code, _, err = run_main(capsys, command, *args, "--peer", url)
    assert code == 2
    assert_one_error_line(err, start)


@pytest.mark.parametrize("name", ["tab\there.txt", "a..b", "back\\slash", "..x"])
async def test_names_a_file_may_have_are_downloaded(
    directory: Any, transfer: Any, hit: HitFactory, name: str
) -> None:
    transfer.servicer.shared = {f"d/{name}": b"12345"}
    directory.state.hits = [owned(hit, name, "peer3", transfer.address, f"d/{name}", b"12345")]
    result = await invoke_async("download", name, "--peer", directory.url)
    assert result.exit_code == 0, result.output
    assert transfer.servicer.requests[-1].path == f"d/{name}"
