"""`python -m peerfind_devnet`: the local network of `make local-up`, by its recorded pids.

    python -m peerfind_devnet up   --root .run/local    # three peers, returns when healthy
    python -m peerfind_devnet up   --peers 12           # twelve (1-50), same layout rule
    python -m peerfind_devnet down --root .run/local    # stops exactly those processes and
                                                        # removes their configs, state, shares
    python -m peerfind_devnet status --root .run/local
    python -m peerfind_devnet stop --peer peer3         # one peer's processes (the demo)
    python -m peerfind_devnet start --peer peer3        # ... and back

The layout is `local_specs`: the standard wiring, peerK's REST on :(8000+K), gRPC on
:(50050+K); peers beyond the third share a generated `.run/local/shares/peerK`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

import httpx

from peerfind_devnet._peers import (
    MAX_PEERS,
    MODULES,
    REPO_ROOT,
    Devnet,
    PeerProcesses,
    local_specs,
    make_local_shares,
    peer_count,
)
from peerfind_devnet._wait import wait_for

__all__ = ["main"]


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"peerfind" in cmdline or any(m.encode() in cmdline for m in MODULES.values())


def _peers_of(recorded: dict[str, int]) -> int:
    """How many peers `up` started, from the names it recorded (peerK-service)."""
    return max((int(name.split("-")[0].removeprefix("peer")) for name in recorded), default=0)


def _remove_files(root: Path, count: int) -> None:
    """What `up` wrote for `count` peers: configs, state and generated shares."""
    for spec in local_specs(root, count):
        PeerProcesses(spec, root).config_path.unlink(missing_ok=True)
        shutil.rmtree(spec.state_dir, ignore_errors=True)
        if spec.shared_dir.is_relative_to(root):
            shutil.rmtree(spec.shared_dir, ignore_errors=True)
    for folder in (root / "state", root / "shares"):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: nothing of anyone else's goes


def _up(root: Path, count: int) -> int:
    state_file = root / "pids.json"
    if state_file.exists() and any(_alive(p) for p in json.loads(state_file.read_text()).values()):
        print(f"a local network is already running (see {state_file}); `make local-down` first")
        return 1
    specs = local_specs(root, count)
    make_local_shares(specs, root)
    net = Devnet(root, specs)
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
        _remove_files(root, count)
        return 1
    print(f"{count} peers up; logs in {root / 'logs'}; stop with `make local-down`")
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
    _remove_files(root, _peers_of(recorded))
    print(f"stopped {len(alive)} processes")
    return 0


def _known(recorded: dict[str, int], peer_id: str) -> bool:
    if any(name.startswith(f"{peer_id}-") for name in recorded):
        return True
    print(f"no {peer_id} in the local network ({_peers_of(recorded)} peers)", file=sys.stderr)
    return False


def _stop_peer(root: Path, peer_id: str) -> int:
    """Stop one peer's three processes (the demo's "a peer goes away")."""
    recorded = _recorded_pids(root)
    if recorded is None or not _known(recorded, peer_id):
        return 1
    alive = [v for k, v in recorded.items() if k.startswith(f"{peer_id}-") and _alive(v)]
    _terminate(alive)
    print(f"stopped {peer_id} ({len(alive)} processes)")
    return 0


def _start_peer(root: Path, peer_id: str) -> int:
    """Start one peer of the local network again and record its pids."""
    recorded = _recorded_pids(root)
    if recorded is None or not _known(recorded, peer_id):
        return 1
    if any(_alive(v) for k, v in recorded.items() if k.startswith(f"{peer_id}-")):
        print(f"{peer_id} is already running")
        return 1
    peer = Devnet(root, local_specs(root, _peers_of(recorded)))[peer_id]
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
    parser = argparse.ArgumentParser(prog="python -m peerfind_devnet", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "stop", "start"])
    parser.add_argument("--root", type=Path, default=REPO_ROOT / ".run" / "local")
    parser.add_argument(
        "--peers", default="3", help=f"how many peers `up` starts (1-{MAX_PEERS}; default 3)"
    )
    parser.add_argument("--peer", help="the peer to stop or start (peer1, peer2, ...)")
    args = parser.parse_args(argv)
    try:
        count = peer_count(args.peers)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.command in ("stop", "start") and args.peer is None:
        parser.error(f"{args.command} needs --peer")
    try:
        if args.command == "stop":
            return _stop_peer(root, args.peer)
        if args.command == "start":
            return _start_peer(root, args.peer)
        if args.command == "up":
            return _up(root, count)
        return {"down": _down, "status": _status}[args.command](root)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
