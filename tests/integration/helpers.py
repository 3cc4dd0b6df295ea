"""Shared helpers of the integration tests (on pytest's pythonpath)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from directory.identity import Claim, PeerKey
from peerfind.api import CHALLENGE_HEADER
from peerfind_devnet import REPO_ROOT, Devnet, PeerSpec, free_port, loopback_specs, wait_for

# Fast clocks so pruning and staleness happen within a test's deadline.
FAST = {
    "heartbeat_interval_s": 0.5,
    "peer_ttl_s": 3.0,
    "bootstrap_retry_s": 1.0,
    "shuffle_interval_s": 1.0,
    "bootstrap_attempts": 2,
    "index_stale_after_s": 5.0,
    "request_timeout_s": 1.0,
    "search_timeout_ms": 2000,
    "rescan_interval_s": 30.0,
    "log_format": "text",
}
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]

NetworkFactory = Callable[..., Devnet]


def make_shared(root: Path, count: int) -> list[Path]:
    """A copy of the sample folders (tests write into them)."""
    dirs = []
    for i in range(1, count + 1):
        target = root / f"shared{i}"
        sample = REPO_ROOT / "deploy" / "samples" / f"peer{i}"
        if sample.exists():
            shutil.copytree(sample, target)
        else:
            target.mkdir(parents=True)
            (target / f"hello{i}.txt").write_text(f"hello from peer{i}\n")
        dirs.append(target)
    return dirs


def build_specs(
    root: Path, count: int = 3, hosts: list[str] | None = None, **extra: Any
) -> list[PeerSpec]:
    hosts = hosts or HOSTS[:count]
    return loopback_specs(root, hosts, make_shared(root, count), {**FAST, **extra})


def get(url: str, **params: Any) -> Any:
    """GET `url`; a search floods unless the test names a mode: these tests hold the flood's
    reach (every peer within fanout and TTL), test_adaptive_search.py the other modes."""
    if urlsplit(url).path == "/search":
        params.setdefault("mode", "flood")
    response = httpx.get(url, params=params, timeout=10, trust_env=False)
    assert response.status_code == 200, response.text
    return response.json()


class DelayProxy:
    """A TCP proxy on loopback that delays requests or answers, for fault tests.

    It runs an asyncio loop in a daemon thread and forwards every connection made to
    `url` to `target` (host, port). `delay(seconds, match)` holds each chunk a client
    sends whose first line contains `match` (every chunk when `match` is empty; an
    HTTP request's first line is `GET /search?query=...`) for `seconds` before
    passing it on; with `replies=True` the request passes at once and the
    target's answer to it is held instead. `held` counts what is being held right now,
    `dropped` what was held and never passed on. Either side closing ends the
    connection at once, dropping whatever is held: a client that gave up never gets
    a late answer, and a target that dies (kill -9) drops the requests held for it. `stop()` closes everything; `lifetime_s` bounds
    the thread even if a test forgets to.
    """

    def __init__(
        self, listen_host: str, target: tuple[str, int], lifetime_s: float = 300.0
    ) -> None:
        self.listen_host = listen_host
        self.port = free_port(listen_host)
        self.target = target
        self.lifetime_s = lifetime_s
        self.delay_s = 0.0
        self.match = b""
        self.replies = False
        self.held = 0
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"proxy-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    def delay(self, seconds: float, match: bytes = b"", *, replies: bool = False) -> None:
        """Hold matching requests (or, with `replies`, their answers) for `seconds`."""
        self.match, self.replies, self.delay_s = match, replies, seconds

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"proxy on {self.url} did not start: {self._error}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop just ended on its own
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                pass  # the proxy is stopping
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(on_client, self.listen_host, self.port)
        self._ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lifetime_s):
                    await self._stop.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        reply_due = [0.0]  # when the answer to the last matching request may pass
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, reply_due, to_target=True)),
            asyncio.create_task(self._pump(up_reader, writer, reply_due, to_target=False)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    async def _hold(self, seconds: float) -> None:
        self.held += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.dropped += 1
            raise
        finally:
            self.held -= 1

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply_due: list[float],
        *,
        to_target: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                delay = self.delay_s
                if to_target and delay > 0 and self.match in data.split(b"\r\n", 1)[0]:
                    if self.replies:
                        reply_due[0] = loop.time() + delay
                    else:
                        await self._hold(delay)
                elif not to_target and reply_due[0] > loop.time():
                    await self._hold(reply_due[0] - loop.time())
                writer.write(data)
                await writer.drain()


# -- Prometheus: configs, promtool and a real server (test_observability, test_prometheus_config)

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "compose" / "prometheus"
GRAFANA_DIR = REPO_ROOT / "deploy" / "compose" / "grafana"
METRICS_SERVICES = ("directory", "transfer", "indexer")
Target = tuple[str, str]  # (peer, service), the labels every scrape target carries


RUNNABLE = ("curl", "grpcurl", "peerfind")  # the README commands a test runs


def readme_commands() -> list[str]:
    """Each line of a README code block that starts with curl, grpcurl or peerfind."""
    text = (REPO_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.split(" ", 1)[0] in RUNNABLE:
                commands.append(line)
    return commands


def require_binary(name: str) -> str:
    """Path of a Prometheus binary. Missing, it skips the test (the only reason to skip
    one), except under CI (`$CI` set), where it fails it."""
    path = shutil.which(name)
    if path is None and os.environ.get("CI"):
        pytest.fail(f"`{name}` is not on the PATH, and CI must run this test (.ci/run installs it)")
    if path is None:
        pytest.skip(
            f"`{name}` is not on the PATH: install the Debian package `prometheus` "
            "(.ci/run does, so CI always runs this test)"
        )
    return path


def documented_queries() -> list[str]:
    """The PromQL blocks of docs/observability.md's "five queries" section, in order."""
    text = (REPO_ROOT / "docs" / "observability.md").read_text()
    section = text.split("## The five queries an operator needs", 1)[1].split("\n## ", 1)[0]
    return [" ".join(b.split()) for b in re.findall(r"```promql\n(.*?)```", section, re.S)]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def add_metrics_ports(specs: list[PeerSpec]) -> list[PeerSpec]:
    """Give every peer's transfer and indexer a free metrics port on the peer's host."""
    for spec in specs:
        spec.extra["transfer_metrics_port"] = free_port(spec.host)
        spec.extra["indexer_metrics_port"] = free_port(spec.host)
    return specs


def metrics_targets(specs: list[PeerSpec]) -> dict[Target, str]:
    """Where each service of each peer serves /metrics (host:port)."""
    targets: dict[Target, str] = {}
    for spec in specs:
        targets[(spec.peer_id, "directory")] = f"{spec.host}:{spec.rest_port}"
        for service in ("transfer", "indexer"):
            targets[(spec.peer_id, service)] = (
                f"{spec.host}:{spec.extra[f'{service}_metrics_port']}"
            )
    return targets


def scrape_targets(config: dict[str, Any]) -> dict[Target, str]:
    """(peer, service) -> address of every static target of a Prometheus config."""
    found: dict[Target, str] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            key = (static["labels"]["peer"], static["labels"]["service"])
            assert key not in found, f"{key} is scraped twice"
            assert len(static["targets"]) == 1, f"{key}: one target per labelled group"
            found[key] = static["targets"][0]
    return found


def prometheus_config(
    targets: dict[Target, str],
    *,
    interval: str = "1s",
    base: Path = PROMETHEUS_DIR / "prometheus.local.yml",
) -> dict[str, Any]:
    """`base` (jobs, labels, relabelling, rules) with its addresses replaced by `targets`,
    its intervals by `interval` and its rule files made absolute."""
    config: dict[str, Any] = load_yaml(base)
    config["global"] = {
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "evaluation_interval": interval,
    }
    config["rule_files"] = [str(base.parent / f) for f in config["rule_files"]]
    missing = dict(targets)
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            key = (static["labels"]["peer"], static["labels"]["service"])
            if key not in missing:
                raise KeyError(f"{base.name} scrapes {key}, which is not in the network")
            static["targets"] = [missing.pop(key)]
    if missing:
        raise KeyError(f"{base.name} has no target for {sorted(missing)}")
    return config


class Prometheus:
    """A real Prometheus server on a loopback port, with its own config and storage.

    `with Prometheus(root, config) as prom:` starts it and waits until it is ready;
    the process is always killed on the way out.
    """

    def __init__(self, root: Path, config: dict[str, Any], host: str = "127.0.0.1") -> None:
        self.binary = require_binary("prometheus")
        self.root = root
        self.config = config
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.config_path = root / "prometheus.yml"
        self.log_path = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, deadline_s: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_for(self._ready, deadline_s, step_s=0.1, what="prometheus to be ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
        response = httpx.get(f"{self.url}/-/ready", timeout=2, trust_env=False)
        return response.status_code == 200

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer."""
        response = httpx.get(
            f"{self.url}/api/v1/{path}", params=params, timeout=10, trust_env=False
        )
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the result vector as [{"metric": {...}, "value": [t, "v"]}]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def scalar(self, expr: str) -> float:
        """The value of a query that returns one series (`sum(...)`); 0 when it returns none."""
        result = self.query(f"({expr}) or vector(0)")
        assert len(result) == 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def wait_scraped_after(self, when: float, deadline_s: float = 15.0) -> None:
        """Until every peerfind target has been scraped after the Unix time `when`."""
        wait_for(
            lambda: self.scalar('min(timestamp(up{job=~"peerfind-.+"}))') > when,
            deadline_s,
            what="prometheus to scrape every target again",
        )


@contextlib.contextmanager
def aiohttp_in_thread(app: Any, sockets: list[Any], what: str) -> Any:
    """Serve the aiohttp `app` on already-bound `sockets` from a loop in a daemon thread
    (fake peers for tests), until the block ends; a failure to start fails the test."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            for sock in sockets:
                loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:  # reported by the waiting test, not lost in a thread
            failed.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30) and not failed, f"{what} did not start: {failed}"
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


class FakeIdentities:
    """Identity keys for fake peers, one per peer id, and the answers a real peer gives:
    `/health` and `/overlay` bodies carrying the proof for the caller's challenge
    (directory.identity), so a fake is refused or admitted for what it does, not for
    lacking a key."""

    def __init__(self) -> None:
        self._keys: dict[str, PeerKey] = {}

    def key(self, peer_id: str) -> PeerKey:
        if peer_id not in self._keys:
            self._keys[peer_id] = PeerKey.generate()
        return self._keys[peer_id]

    def answer(
        self, headers: Any, peer_id: str, url: str, grpc_address: str = "", **fields: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "peer_id": peer_id, "url": url, "grpc_address": grpc_address, **fields
        }  # fmt: skip
        challenge = headers.get(CHALLENGE_HEADER)
        if challenge:
            proof = self.key(peer_id).prove(challenge, Claim(peer_id, url, grpc_address))
            body["proof"] = proof.model_dump()
        return body
