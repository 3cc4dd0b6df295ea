"""The README cannot drift from the code: every command it shows is run.

Each line of a README code block that starts with `curl`, `grpcurl` or `peerfind` is
run against a real three-peer local network. The README's addresses (127.0.0.1:800N
and :5005N, those of `make up` and `make local-up`) are mapped to this network's, and
`peerfind` gets its entry peer from $PEERFIND_PEER as a user's default would. A
command passes when it exits 0 (curl runs with `--fail`, so an HTTP error fails it).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import RUNNABLE, readme_commands

from peerfind_devnet import Devnet

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


COMMANDS = readme_commands()


def test_the_readme_shows_every_kind_of_command() -> None:
    kinds = {c.split(" ", 1)[0] for c in COMMANDS}
    assert kinds == set(RUNNABLE), f"README commands found: {COMMANDS}"


def localize(command: str, network: Devnet) -> list[str]:
    for i in (1, 2, 3):
        spec = network[f"peer{i}"].spec
        command = command.replace(f"http://127.0.0.1:800{i}", spec.url)
        command = command.replace(f"127.0.0.1:5005{i}", spec.grpc_address)
    argv = shlex.split(command)
    local = BIN / argv[0]
    argv[0] = str(local) if local.exists() else argv[0]
    if Path(argv[0]).name == "curl":
        argv.insert(1, "--fail")
    return argv


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_succeeds(command: str, network: Devnet) -> None:
    argv = localize(command, network)
    assert "127.0.0.1:80" not in " ".join(argv[1:]), "an address the test did not map"
    env = {**os.environ, "PEERFIND_PEER": network["peer1"].spec.url}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert result.stdout.strip(), f"{command} printed nothing"
