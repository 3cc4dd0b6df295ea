"""The README cannot drift from the code: every command it shows is run.

Each line of a README code block that starts with `curl`, `grpcurl` or `peerfind` is
run against a real three-peer local network. The README's addresses (127.0.0.1:800N
and :5005N, those of `make up` and `make local-up`) are mapped to this network's, and
`peerfind` gets its entry peer from $PEERFIND_PEER as a user's default would. A
command passes when it exits 0 (curl runs with `--fail`, so an HTTP error fails it).

`peerfind get` is checked further: its `--output` under /tmp goes to the test's own
folder, it runs once every owner has hashed the file (before that `get` says "retry in
a moment", as the README tells), and what it wrote must be the owner's bytes (of the
file at `--path`, when the command names one).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import RUNNABLE, readme_commands

from peerfind_devnet import Devnet, wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


COMMANDS = readme_commands()


def test_the_readme_shows_every_kind_of_command() -> None:
    kinds = {c.split(" ", 1)[0] for c in COMMANDS}
    assert kinds == set(RUNNABLE), f"README commands found: {COMMANDS}"


def localize(command: str, network: Devnet, scratch: Path) -> list[str]:
    for i in (1, 2, 3):
        spec = network[f"peer{i}"].spec
        command = command.replace(f"http://127.0.0.1:800{i}", spec.url)
        command = command.replace(f"127.0.0.1:5005{i}", spec.grpc_address)
    argv = [
        f"{scratch}/{a[len('/tmp/') :]}" if a.startswith("/tmp/") else a
        for a in shlex.split(command)
    ]
    local = BIN / argv[0]
    argv[0] = str(local) if local.exists() else argv[0]
    if Path(argv[0]).name == "curl":
        argv.insert(1, "--fail")
    return argv


def owners_of(name: str, network: Devnet, path: str | None = None) -> list[Path]:
    """The shared copies of `name` (at `path` only, when given), once every owner's hit
    carries its sha256."""
    entry = network["peer1"].spec.url

    def hashed() -> list[Path] | None:
        body = httpx.get(f"{entry}/search", params={"query": name}, timeout=10).json()
        hits = [h for h in body["hits"] if h["name"] == name and path in (None, h["path"])]
        if not hits or any(h["sha256"] is None for h in hits):
            return None
        return [network[h["peer_id"]].spec.shared_dir / h["path"] for h in hits]

    found: list[Path] = wait_for(hashed, 60, what=f"{name} hashed by its owners")
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_succeeds(command: str, network: Devnet, tmp_path: Path) -> None:
    argv = localize(command, network, tmp_path)
    assert "127.0.0.1:80" not in " ".join(argv[1:]), "an address the test did not map"
    is_get = Path(argv[0]).name == "peerfind" and argv[1:2] == ["get"]
    path = argv[argv.index("--path") + 1] if "--path" in argv else None
    copies = owners_of(argv[2], network, path) if is_get else []
    env = {**os.environ, "PEERFIND_PEER": network["peer1"].spec.url}
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert result.stdout.strip(), f"{command} printed nothing"
    if is_get:
        written = Path(argv[argv.index("--output") + 1]) if "--output" in argv else None
        assert (written or tmp_path / argv[2]).read_bytes() in {c.read_bytes() for c in copies}
