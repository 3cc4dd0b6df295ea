"""The server around the servicer: health, reflection, options, shutdown, and the process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from peerfind.config import MAX_CHUNK_SIZE, PeerSettings
from peerfind.v1 import transfer_pb2
from transfer.server import (
    MAX_MESSAGE_BYTES,
    SERVICE_NAME,
    BindError,
    serve,
    server_options,
    start_server,
)

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def health_status(port: int, service: str = "", within: float = 2.0) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=within)
        return int(reply.status)


async def wait_serving(port: int, within: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll the health service until it answers SERVING (or fail after `within` s)."""
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            pytest.fail("the server exited before it answered health checks")
        try:
            if await health_status(port, within=0.5) == SERVING:
                return
        except grpc.aio.AioRpcError as exc:
            last = exc
        await asyncio.sleep(0.05)
    pytest.fail(f"no SERVING health answer on port {port} within {within}s: {last}")


# --- in-process server ---------------------------------------------------------------


async def test_health_reports_serving(peer: Any) -> None:
    assert await health_status(peer.running.port) == SERVING
    assert await health_status(peer.running.port, SERVICE_NAME) == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_status(peer.running.port, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(peer: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{peer.running.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
        names = {s.name for s in replies[0].list_services_response.service}
        assert names == {SERVICE_NAME, HEALTH, REFLECTION}
        # Enough for grpcurl to describe the service: the file defining it.
        symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
        replies = [r async for r in stub.ServerReflectionInfo(iter([symbol]), timeout=5)]
        assert replies[0].file_descriptor_response.file_descriptor_proto


def test_service_name_matches_the_proto() -> None:
    assert SERVICE_NAME == "peerfind.v1.FileTransfer"


def test_server_options(settings_for: Callable[..., PeerSettings]) -> None:
    options = dict(server_options(settings_for("opts", max_concurrent_streams=7)))
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
    assert MAX_CHUNK_SIZE < MAX_MESSAGE_BYTES <= MAX_CHUNK_SIZE + 64 * 1024
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.min_ping_interval_without_data_ms"] >= 1000
    assert options["grpc.so_reuseport"] == 0


async def test_port_in_use_is_a_bind_error(peer: Any) -> None:
    with pytest.raises(BindError, match=str(peer.running.port)):
        await start_server(peer.settings, port=peer.running.port)


async def local_health(servicer: Any, service: str = "") -> int:
    """Ask the health servicer directly (the server refuses new RPCs while stopping)."""
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return int(reply.status)


async def test_graceful_stop_finishes_streams_in_flight(peer: Any) -> None:
    port = peer.running.port
    call = peer.stub.DummyDownload(transfer_pb2.FileRequest(name="movie.mkv", chunk_size=1024))
    first = await call.read()  # running, held back by flow control while we do not read
    stopping = asyncio.create_task(peer.running.stop(5.0))
    deadline = time.monotonic() + 5
    while await local_health(peer.running.health) != NOT_SERVING:
        assert time.monotonic() < deadline, "health never turned NOT_SERVING"
        await asyncio.sleep(0.01)
    total = len(first.data)
    while (chunk := await call.read()) is not grpc.aio.EOF:
        total += len(chunk.data)
    await asyncio.wait_for(stopping, 10)
    assert total == 3 * 1024 * 1024 + 12_345
    assert await call.code() == grpc.StatusCode.OK
    with pytest.raises(grpc.aio.AioRpcError):
        await health_status(port, within=1.0)  # the server is gone


async def test_serve_until_stop_event(settings_for: Callable[..., PeerSettings]) -> None:
    port = free_port()
    settings = settings_for("serve", grpc_port=port)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    try:
        await wait_serving(port, within=10, alive=lambda: not task.done())
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
    with pytest.raises(grpc.aio.AioRpcError):
        await health_status(port, within=1.0)


# --- the peerfind-transfer process ---------------------------------------------------


def command() -> list[str]:
    script = Path(sys.executable).with_name("peerfind-transfer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "transfer.main"]


def process_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERFIND_")}
    env["PEER_CONFIG"] = str(config)
    return env


def write_config(tmp_path: Path, **fields: Any) -> Path:
    data = {
        "peer_id": "p1",
        "shared_dir": str(tmp_path),
        "state_dir": str(tmp_path / "state"),
        "log_format": "text",
        **fields,
    }
    path = tmp_path / "peer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run_to_exit(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(), env=process_env(config), capture_output=True, text=True, timeout=30
    )


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes a test starts; any still running at teardown are killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.communicate(), 10)


def test_invalid_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, grpc_port="x")
    result = run_to_exit(config)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("peerfind-transfer: invalid config")
    assert "grpc_port" in lines[0]


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_to_exit(tmp_path / "absent.json")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "does not exist" in result.stderr


def test_metrics_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, grpc_port=free_port(), transfer_metrics_port=port)
        result = run_to_exit(config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in errors[0]


def test_grpc_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_to_exit(write_config(tmp_path, grpc_port=port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert f"cannot bind gRPC address 127.0.0.1:{port}" in errors[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_process_serves_then_exits_0_on_signal(
    tmp_path: Path, processes: list[asyncio.subprocess.Process], sig: signal.Signals
) -> None:
    port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path, grpc_port=port, transfer_metrics_port=metrics_port)
    proc = await asyncio.create_subprocess_exec(
        *command(), env=process_env(config), stderr=subprocess.PIPE
    )
    processes.append(proc)
    await wait_serving(port, within=20, alive=lambda: proc.returncode is None)

    def scrape() -> str:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    exposition = await asyncio.to_thread(scrape)
    build_info = [line for line in exposition.splitlines() if line.startswith("peerfind_build")]
    assert len(build_info) == 1
    assert 'peer="p1"' in build_info[0]
    assert 'service="transfer"' in build_info[0]
    assert "peerfind_transfer_bytes_sent_total" in exposition

    proc.send_signal(sig)
    _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
