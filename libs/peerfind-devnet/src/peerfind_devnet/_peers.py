"""A peer as local processes: its config, its three services, and several peers together.

The standard layout matches the compose stack: peerK's REST on 127.0.0.1:(8000+K),
gRPC on 127.0.0.1:(50050+K); peer1 has no friends, peer2's primary friend is peer1,
every later peerK's primary is peer(K-1) and its backup peer1 (a user bootstrapping
peers one by one); peers 1-3 share deploy/samples/peerK, later ones a folder of their
own under the run root (`make_local_shares`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from peerfind_devnet._wait import DEFAULT_DEADLINE_S, accepts, free_port, wait_for

__all__ = [
    "MAX_PEERS",
    "MODULES",
    "PERF_ENV",
    "REPO_ROOT",
    "SERVICES",
    "Devnet",
    "PeerProcesses",
    "PeerSpec",
    "local_specs",
    "loopback_specs",
    "make_local_shares",
    "peer_count",
    "standard_specs",
]

SERVICES = ("indexer", "transfer", "directory")
MODULES = {"indexer": "indexer.main", "transfer": "transfer.main", "directory": "directory.main"}
REPO_ROOT = Path(__file__).resolve().parents[4]
"""The checkout: the harness runs from it (an editable install), never from a wheel."""
# Measured in the benchmarks: glibc otherwise hands every large per-message
# buffer back to the kernel and pays first-touch page faults on the next one.
PERF_ENV = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
MAX_PEERS = 50
"""The most peers of one machine's standard layout (ports 8001-8050, 50051-50100)."""
SAMPLE_PEERS = 3
"""Peers 1-3 share the committed deploy/samples/peerK; later ones get a generated share."""


def peer_count(text: str) -> int:
    """`text` as a number of peers for the standard layout, or ValueError (one line)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PEERS:
        raise ValueError(f"PEERS must be a whole number from 1 to {MAX_PEERS}, not {text!r}")
    return int(text)


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
                [sys.executable, "-m", MODULES[service]],
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
        """Until the running peers' overlay has settled: every active view lists running
        peers only, all alive; views are symmetric and form one component; and a network
        no larger than a view is a full mesh."""
        live = [p for p in self.peers.values() if p.running("directory")]
        ids = {p.spec.peer_id for p in live}

        def converged() -> bool:
            views: dict[str, set[str]] = {}
            for peer in live:
                body = httpx.get(
                    f"{peer.spec.url}/peers", timeout=2, trust_env=False, verify=peer.spec.verify
                ).json()
                view = {p["peer_id"] for p in body["peers"] if p["state"] == "alive"}
                if len(view) != len(body["peers"]) or not view <= ids:
                    return False
                if len(ids) - 1 <= body["active_size"] and view != ids - {peer.spec.peer_id}:
                    return False
                views[peer.spec.peer_id] = view
            if any(me not in views[other] for me, view in views.items() for other in view):
                return False
            reached, todo = set(), [next(iter(views))] if views else []
            while todo:
                me = todo.pop()
                if me not in reached:
                    reached.add(me)
                    todo.extend(views[me] - reached)
            return reached == ids

        wait_for(converged, deadline_s, what="the overlay to converge")

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


def loopback_specs(
    root: Path, hosts: list[str], shared_dirs: list[Path], extra: dict[str, Any] | None = None
) -> list[PeerSpec]:
    """The standard wiring, one peer per host, each on ports free right now (the
    harness's peers: tests and benchmarks)."""
    return standard_specs(
        root,
        count=len(hosts),
        hosts=hosts,
        rest_ports=[free_port(h) for h in hosts],
        grpc_ports=[free_port(h) for h in hosts],
        shared_dirs=shared_dirs,
        extra=extra,
    )


def local_shares(root: Path, count: int) -> list[Path]:
    """Where the peers of `make local-up` share from: the samples, then root/shares/peerK."""
    samples = REPO_ROOT / "deploy" / "samples"
    return [
        samples / f"peer{k}" if k <= SAMPLE_PEERS else root / "shares" / f"peer{k}"
        for k in range(1, count + 1)
    ]


def make_local_shares(specs: Iterable[PeerSpec], root: Path) -> list[Path]:
    """Create the generated shares (those under `root`) with a helloK.txt; return them."""
    made: list[Path] = []
    for spec in specs:
        if spec.shared_dir.is_relative_to(root):
            spec.shared_dir.mkdir(parents=True, exist_ok=True)
            number = spec.peer_id.removeprefix("peer")
            (spec.shared_dir / f"hello{number}.txt").write_text(f"hello from {spec.peer_id}\n")
            made.append(spec.shared_dir)
    return made


def local_specs(root: Path, count: int = SAMPLE_PEERS) -> list[PeerSpec]:
    """The peers of `make local-up`: the standard wiring, fixed metrics ports, text logs."""
    specs = standard_specs(root, count=count, shared_dirs=local_shares(root, count))
    for i, spec in enumerate(specs, start=1):
        spec.extra.update(
            {
                "transfer_metrics_port": 9100 + i,
                "indexer_metrics_port": 9200 + i,
                "log_format": "text",
            }
        )
    return specs
