"""Run a network of real peers as local processes (three processes per peer).

Used by `make local-up` / `make local-down`, the integration tests, the
benchmarks and the demo:

    python -m peerfind.devnet up   --root .run/local    # three peers, returns when healthy
    python -m peerfind.devnet down --root .run/local    # stops exactly those processes
    python -m peerfind.devnet status --root .run/local
    python -m peerfind.devnet stop --peer peer3         # one peer's processes (the demo)
    python -m peerfind.devnet start --peer peer3        # ... and back

The standard layout matches the compose stack: peerN's REST on 127.0.0.1:800N,
gRPC on 127.0.0.1:5005N; peer1 has no friends, peer2's primary friend is peer1,
peer3's primary is peer2 and its backup peer1; peerN shares deploy/samples/peerN.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "SERVICES",
    "Devnet",
    "PeerProcesses",
    "PeerSpec",
    "accepts",
    "free_port",
    "standard_specs",
    "wait_for",
]

SERVICES = ("indexer", "transfer", "directory")
_MODULES = {"indexer": "indexer.main", "transfer": "transfer.main", "directory": "directory.main"}
REPO_ROOT = Path(__file__).resolve().parents[4]
# Measured in the benchmarks: glibc otherwise hands every large per-message
# buffer back to the kernel and pays first-touch page faults on the next one.
PERF_ENV = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
DEFAULT_DEADLINE_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any],
    deadline_s: float = DEFAULT_DEADLINE_S,
    step_s: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `condition` until it returns a truthy value; TimeoutError after the deadline."""
    end = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # polled conditions may fail until ready
            last_error = exc
        if time.monotonic() >= end:
            hint = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what}{hint}")
        time.sleep(step_s)


@dataclass
class PeerSpec:
    """One peer's configuration, as written to its JSON file."""

    peer_id: str
    host: str
    rest_port: int
    grpc_port: int
    shared_dir: Path
    state_dir: Path
    friend_primary: str = ""
    friend_backup: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def on_free_ports(
        cls, peer_id: str, host: str, shared_dir: Path, state_dir: Path, **extra: Any
    ) -> PeerSpec:
        """A friendless peer on `host`, with REST and gRPC ports free right now."""
        return cls(
            peer_id=peer_id,
            host=host,
            rest_port=free_port(host),
            grpc_port=free_port(host),
            shared_dir=shared_dir,
            state_dir=state_dir,
            extra=extra,
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.extra.get("tls_cert_file") else "http"
        return f"{scheme}://{self.host}:{self.rest_port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTPS client of this peer should trust."""
        ca = self.extra.get("tls_ca_file")
        return ssl.create_default_context(cafile=str(ca)) if ca else True

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def config(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "host": self.host,
            "rest_port": self.rest_port,
            "grpc_port": self.grpc_port,
            "self_url": self.url,
            "grpc_advertise": self.grpc_address,
            "shared_dir": str(self.shared_dir),
            "state_dir": str(self.state_dir),
            "friend_primary": self.friend_primary,
            "friend_backup": self.friend_backup,
            **self.extra,
        }


class PeerProcesses:
    """The three processes of one peer, with their config file and logs."""

    def __init__(self, spec: PeerSpec, root: Path, env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.root = root
        self.env = env or {}
        self.config_path = root / f"{spec.peer_id}.json"
        self.log_dir = root / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.spec.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.spec.config(), indent=2) + "\n")

    def start(self, services: Iterable[str] = SERVICES) -> None:
        self.write_config()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **PERF_ENV, "PEER_CONFIG": str(self.config_path), **self.env}
        for service in services:
            if service in self.procs and self.procs[service].poll() is None:
                continue
            log = open(self.log_dir / f"{self.spec.peer_id}-{service}.log", "ab")  # noqa: SIM115
            self.procs[service] = subprocess.Popen(
                [sys.executable, "-m", _MODULES[service]],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log.close()

    def running(self, service: str) -> bool:
        proc = self.procs.get(service)
        return proc is not None and proc.poll() is None

    def signal(self, service: str, sig: int) -> None:
        proc = self.procs.get(service)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def stop(self, services: Iterable[str] | None = None, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; in reverse start order."""
        names = list(services) if services is not None else list(reversed(SERVICES))
        for name in names:
            self.signal(name, signal.SIGTERM)
        for name in names:
            proc = self.procs.get(name)
            if proc is None:
                continue
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)

    def kill(self, services: Iterable[str] = SERVICES) -> None:
        """kill -9, as a crash would."""
        for name in services:
            self.signal(name, signal.SIGKILL)
        for name in services:
            proc = self.procs.get(name)
            if proc is not None:
                proc.wait(timeout=10)

    def health(self, timeout_s: float = 2.0) -> dict[str, Any]:
        response = httpx.get(
            f"{self.spec.url}/health", timeout=timeout_s, trust_env=False, verify=self.spec.verify
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_healthy(self, deadline_s: float = DEFAULT_DEADLINE_S) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = self.log_dir / f"{self.spec.peer_id}-{name}.log"
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    raise RuntimeError(
                        f"{self.spec.peer_id} {name} exited with {proc.returncode}: "
                        + " | ".join(tail)
                    )
            body = self.health()
            if body.get("status") != "ok":
                return None
            # /health caches the transfer's gRPC health for a moment: right after a
            # restart of the transfer alone it may still say "serving" from before.
            if "transfer" in self.procs and not accepts(self.spec.host, self.spec.grpc_port):
                return None
            return body

        result: dict[str, Any] = wait_for(
            ready, deadline_s, what=f"{self.spec.peer_id} to be healthy"
        )
        return result

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items() if proc.poll() is None}


def accepts(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Devnet:
    """Several peers started and stopped together."""

    def __init__(self, root: Path, specs: list[PeerSpec], env: dict[str, str] | None = None):
        self.root = root
        self.peers = {s.peer_id: PeerProcesses(s, root, env) for s in specs}

    def __getitem__(self, peer_id: str) -> PeerProcesses:
        return self.peers[peer_id]

    def start(self, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        """Start peers in order, each healthy before the next (friends come first)."""
        for peer in self.peers.values():
            peer.start()
            peer.wait_healthy(deadline_s)

    def wait_converged(self, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        """Until every running peer lists every other running peer as alive."""
        live = [p for p in self.peers.values() if p.running("directory")]

        def converged() -> bool:
            for peer in live:
                body = httpx.get(
                    f"{peer.spec.url}/peers", timeout=2, trust_env=False, verify=peer.spec.verify
                ).json()
                alive = {p["peer_id"] for p in body["peers"] if p["state"] == "alive"}
                if alive != {q.spec.peer_id for q in live} - {peer.spec.peer_id}:
                    return False
            return True

        wait_for(converged, deadline_s, what="the peer tables to converge")

    def stop(self) -> None:
        for peer in reversed(list(self.peers.values())):
            peer.stop()

    @contextlib.contextmanager
    def running(self, deadline_s: float = DEFAULT_DEADLINE_S) -> Iterator[Devnet]:
        try:
            self.start(deadline_s)
            self.wait_converged(deadline_s)
            yield self
        finally:
            self.stop()


def standard_specs(
    root: Path,
    *,
    count: int = 3,
    hosts: list[str] | None = None,
    rest_ports: list[int] | None = None,
    grpc_ports: list[int] | None = None,
    shared_dirs: list[Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[PeerSpec]:
    """The standard wiring: peer1 no friends; peerN primary peerN-1, backup peer1."""
    hosts = hosts or ["127.0.0.1"] * count
    rest_ports = rest_ports or [8000 + i for i in range(1, count + 1)]
    grpc_ports = grpc_ports or [50050 + i for i in range(1, count + 1)]
    shared_dirs = shared_dirs or [
        REPO_ROOT / "deploy" / "samples" / f"peer{i}" for i in range(1, count + 1)
    ]
    specs: list[PeerSpec] = []
    for i in range(count):
        primary = specs[i - 1].url if i >= 1 else ""
        backup = specs[0].url if i >= 2 else ""
        specs.append(
            PeerSpec(
                peer_id=f"peer{i + 1}",
                host=hosts[i],
                rest_port=rest_ports[i],
                grpc_port=grpc_ports[i],
                shared_dir=shared_dirs[i],
                state_dir=root / "state" / f"peer{i + 1}",
                friend_primary=primary,
                friend_backup=backup,
                # Loopback peers: allowed explicitly, as the SSRF guard wants.
                extra={"peer_networks": ["127.0.0.0/8"], **(extra or {})},
            )
        )
    return specs


def _local_specs(root: Path) -> list[PeerSpec]:
    specs = standard_specs(root)
    for i, spec in enumerate(specs, start=1):
        spec.extra.update(
            {
                "transfer_metrics_port": 9100 + i,
                "indexer_metrics_port": 9200 + i,
                "log_format": "text",
            }
        )
    return specs


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"peerfind" in cmdline or any(m.encode() in cmdline for m in _MODULES.values())


def _up(root: Path) -> int:
    state_file = root / "pids.json"
    if state_file.exists() and any(_alive(p) for p in json.loads(state_file.read_text()).values()):
        print(f"a local network is already running (see {state_file}); `make local-down` first")
        return 1
    net = Devnet(root, _local_specs(root))
    pids: dict[str, int] = {}
    try:
        for peer in net.peers.values():
            print(
                f"starting {peer.spec.peer_id}: REST {peer.spec.url}, gRPC {peer.spec.grpc_address}"
            )
            peer.start()
            pids.update({f"{peer.spec.peer_id}-{k}": v for k, v in peer.pids().items()})
            state_file.write_text(json.dumps(pids, indent=2))
            peer.wait_healthy()
        net.wait_converged()
    except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
        print(f"local network failed to start: {exc}; logs in {root / 'logs'}", file=sys.stderr)
        net.stop()
        state_file.unlink(missing_ok=True)
        return 1
    print(f"three peers up; logs in {root / 'logs'}; stop with `make local-down`")
    return 0


def _recorded_pids(root: Path) -> dict[str, int] | None:
    """The pids `up` recorded, or None (and a message) when no network is running."""
    state_file = root / "pids.json"
    if not state_file.exists():
        print("no local network is running")
        return None
    recorded: dict[str, int] = json.loads(state_file.read_text())
    return recorded


def _terminate(pids: Iterable[int], timeout_s: float = 10.0) -> None:
    """SIGTERM the processes, and SIGKILL those still alive after `timeout_s`."""
    pids = [p for p in pids if _alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not any(_alive(p) for p in pids), timeout_s, what="processes to exit")
    except TimeoutError:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _down(root: Path) -> int:
    recorded = _recorded_pids(root)
    if recorded is None:
        return 0
    alive = [p for p in recorded.values() if _alive(p)]
    _terminate(alive)
    (root / "pids.json").unlink(missing_ok=True)
    print(f"stopped {len(alive)} processes")
    return 0


def _stop_peer(root: Path, peer_id: str) -> int:
    """Stop one peer's three processes (the demo's "a peer goes away")."""
    recorded = _recorded_pids(root)
    if recorded is None:
        return 1
    alive = [v for k, v in recorded.items() if k.startswith(f"{peer_id}-") and _alive(v)]
    _terminate(alive)
    print(f"stopped {peer_id} ({len(alive)} processes)")
    return 0


def _start_peer(root: Path, peer_id: str) -> int:
    """Start one peer of the local network again and record its pids."""
    recorded = _recorded_pids(root)
    if recorded is None:
        return 1
    if any(_alive(v) for k, v in recorded.items() if k.startswith(f"{peer_id}-")):
        print(f"{peer_id} is already running")
        return 1
    peer = Devnet(root, _local_specs(root))[peer_id]
    peer.start()
    recorded.update({f"{peer_id}-{k}": v for k, v in peer.pids().items()})
    (root / "pids.json").write_text(json.dumps(recorded, indent=2))
    try:
        peer.wait_healthy()
    except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
        print(f"{peer_id} failed to start: {exc}; logs in {root / 'logs'}", file=sys.stderr)
        return 1
    print(f"started {peer_id}: REST {peer.spec.url}, gRPC {peer.spec.grpc_address}")
    return 0


def _status(root: Path) -> int:
    pids = _recorded_pids(root)
    if pids is None:
        return 1
    for name, pid in sorted(pids.items()):
        print(f"{name:22} pid {pid:>7}  {'running' if _alive(pid) else 'stopped'}")
    return 0 if all(_alive(p) for p in pids.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peerfind.devnet", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "stop", "start"])
    parser.add_argument("--root", type=Path, default=REPO_ROOT / ".run" / "local")
    parser.add_argument(
        "--peer", choices=[f"peer{i}" for i in (1, 2, 3)], help="the peer to stop or start"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.command in ("stop", "start") and args.peer is None:
        parser.error(f"{args.command} needs --peer")
    try:
        if args.command == "stop":
            return _stop_peer(root, args.peer)
        if args.command == "start":
            return _start_peer(root, args.peer)
        return {"up": _up, "down": _down, "status": _status}[args.command](root)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
