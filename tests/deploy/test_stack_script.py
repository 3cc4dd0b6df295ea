"""scripts/stack.py where it cannot work: one clear line and exit 1, never a traceback.

The working paths (Docker, or Podman set up from nothing) are run for real by
`make test-compose`; these are the refusals a user on another machine would meet.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from peerfind_devnet import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "stack.py"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("stack_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


def run_main(
    stack: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    code = stack.main(argv)
    return code, capsys.readouterr().err


def test_no_engine_and_not_root_asks_for_docker_in_one_line(
    stack: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PEERFIND_ENGINE", raising=False)
    monkeypatch.setattr(stack, "docker_answers", lambda: False)
    monkeypatch.setattr(stack.os, "geteuid", lambda: 1000)
    code, err = run_main(stack, ["up"], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert "needs root" in err and "https://docs.docker.com/engine/install/" in err


def test_no_engine_no_podman_and_no_apt_asks_for_docker(
    stack: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PEERFIND_ENGINE", "podman")
    monkeypatch.setattr(stack.os, "geteuid", lambda: 0)
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    code, err = run_main(stack, ["up"], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert "podman, runc, debootstrap missing, with no apt-get" in err


def test_an_unknown_engine_is_refused(
    stack: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PEERFIND_ENGINE", "lxc")
    code, err = run_main(stack, ["ps"], capsys)
    assert (code, err) == (1, "stack: PEERFIND_ENGINE must be docker or podman, not 'lxc'\n")


def test_down_without_podman_has_nothing_to_remove(
    stack: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PEERFIND_ENGINE", "podman")
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    code, err = run_main(stack, ["down"], capsys)
    assert code == 0
    assert "nothing to remove" in err


def test_unknown_command_prints_usage(
    stack: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(stack, ["launch"], capsys)
    assert code == 2
    assert err.startswith("usage: stack.py up [--peers N] | down")


def test_each_image_is_built_once(stack: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three peers share an image per service: build one service per image, not nine."""
    calls: list[tuple[str, ...]] = []

    compose_bin = str(Path(sys.executable).parent / "docker-compose")

    class FakeEngine:
        """Answers `config` with the real CLI; records the rest."""

        def compose(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
            calls.append(args)
            if args[0] != "config":
                return subprocess.CompletedProcess(args, 0, "", "")
            cmd = [compose_bin, "-f", str(stack.COMPOSE_FILE), *args]
            return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)

    stack.build(FakeEngine())
    built = calls[-1]
    assert built[0] == "build"
    assert sorted(built[1:]) == ["peer1-directory", "peer1-indexer", "peer1-transfer", "prometheus"]


def test_compose_ps_json_in_both_shapes(stack: ModuleType) -> None:
    """Compose prints `ps --format json` as one array (older) or one object per line."""

    class Engine:
        def __init__(self, out: str) -> None:
            self.out = out

        def compose(self, *args: Any, capture: bool = False) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(args, 0, self.out, "")

    rows = [{"Service": "a", "State": "running"}, {"Service": "b", "State": "exited"}]
    assert stack._ps(Engine(json.dumps(rows))) == rows
    assert stack._ps(Engine("\n".join(json.dumps(r) for r in rows))) == rows
    assert stack._ps(Engine("")) == []


def test_wait_until_answers_true_when_done_and_false_past_the_timeout(stack: ModuleType) -> None:
    asked: list[int] = []

    def third_time() -> bool:
        asked.append(1)
        return len(asked) == 3

    assert stack.wait_until(third_time, 5.0, 0.001)
    assert len(asked) == 3
    assert not stack.wait_until(lambda: False, 0.02, 0.005)


def test_docker_host_of_our_own_podman_is_not_taken_for_docker(
    stack: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stack.py env` exports DOCKER_HOST for our Podman; `make up` must still run the
    Podman path (its healthcheck loop), not the Docker one."""
    monkeypatch.delenv("PEERFIND_ENGINE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{stack.Podman().socket_path}")

    def no_docker_probe() -> bool:
        raise AssertionError("docker info must not decide this")

    monkeypatch.setattr(stack, "docker_answers", no_docker_probe)
    assert stack.choose_engine() == "podman"
    monkeypatch.setenv("DOCKER_HOST", "tcp://build-host.example:2376")
    monkeypatch.setattr(stack, "docker_answers", lambda: True)
    assert stack.choose_engine() == "docker"
