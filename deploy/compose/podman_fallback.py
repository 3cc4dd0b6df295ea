"""The Podman fallback of scripts/stack.py: a container engine where Docker has none.

`stack.py` uses it when no Docker engine answers (or PEERFIND_ENGINE=podman). It sets
up a rootful Podman (installing podman, runc and debootstrap with apt-get when
missing), serves Podman's Docker API on a socket under .run/podman/ (with
podman/containers.conf), builds `python:3.11-slim` locally with debootstrap when no
registry can be reached, and, since Podman runs no healthchecks without systemd,
keeps a small background loop running them (`podman healthcheck run`) while the
stack is up:

    python deploy/compose/podman_fallback.py health-loop   # what start_health_loop runs

Why each step: docs/operations.md ("No Docker engine: the Podman fallback"). Standard
library only, like stack.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stack_common import PROJECT, ROOT, StackError, run, say, wait_until

__all__ = ["BASE_IMAGE", "Podman"]

RUN_DIR = ROOT / ".run" / "podman"
CONTAINERS_CONF = Path(__file__).resolve().parent / "podman" / "containers.conf"
BASE_IMAGE = "docker.io/library/python:3.11-slim"
DEBIAN_MIRROR = os.environ.get("PEERFIND_DEBIAN_MIRROR", "http://deb.debian.org/debian")
APT_PACKAGES = ("podman", "runc", "debootstrap")
HEALTH_LOOP_S = 5.0
PULL_TIMEOUT_S = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Podman:
    """The fallback: a rootful Podman serving Docker's API on a socket of ours."""

    def __init__(self) -> None:
        self.socket_path = RUN_DIR / "podman.sock"
        if len(str(self.socket_path)) > 100:  # sun_path holds 108 bytes
            self.socket_path = Path(f"/run/peerfind-podman-{os.getuid()}.sock")
        self.pid_file = RUN_DIR / "service.pid"
        self.loop_pid_file = RUN_DIR / "health-loop.pid"
        self.env = {"CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def compose_env(self) -> dict[str, str]:
        """The environment that points a Docker client (compose) at this engine."""
        return {**self.env, "DOCKER_HOST": f"unix://{self.socket_path}"}

    def prepare(self, *, setup: bool) -> None:
        """Make the engine answer; with `setup`, install what is missing and get the
        base image too (`up`), else only restart the API service of what exists."""
        if setup:
            self.ensure_packages()
        elif shutil.which("podman") is None:
            raise StackError(
                "no Docker engine answers and Podman is not installed: nothing is running"
            )
        self.start_service()
        if setup:
            self.ensure_base_image()

    def podman(
        self, *args: str, timeout: float | None = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], env={**os.environ, **self.env}, timeout=timeout, check=check)

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
        if run(cmd, env=env, timeout=900).returncode != 0:
            run(["apt-get", "update", "-q"], env=env, timeout=300)
            run(cmd, env=env, timeout=900, check=True)

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
        proc = self._spawn(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket_path}"],
            self.pid_file,
        )
        # Done when it answers, or when it exited (then it never will).
        wait_until(lambda: self.answers() or proc.poll() is not None, 30, 0.2)
        if not self.answers():
            raise StackError(f"podman system service did not start: see {RUN_DIR / 'service.log'}")

    def _spawn(self, cmd: Sequence[str], pid_file: Path) -> subprocess.Popen[bytes]:
        """Start `cmd` in a session of its own, outliving us; output to NAME.log beside
        its pid file NAME.pid."""
        with pid_file.with_suffix(".log").open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
        return proc

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
        run(
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
        self._spawn(
            [sys.executable, str(Path(__file__).resolve()), "health-loop"], self.loop_pid_file
        )

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
        if not wait_until(lambda: not _alive(pid), 10, 0.1):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop_service(self) -> None:
        self.stop_pid(self.loop_pid_file)
        self.stop_pid(self.pid_file)
        self.reap_exec_monitors()

    @staticmethod
    def reap_exec_monitors() -> None:
        """Stop the exec-session monitors of our project's containers (see below)."""
        reap_exec_monitors(f"{PROJECT}-")


if __name__ == "__main__":
    if sys.argv[1:] != ["health-loop"]:
        print("usage: podman_fallback.py health-loop", file=sys.stderr)
        sys.exit(2)
    sys.exit(Podman().health_loop())


def reap_exec_monitors(prefix: str) -> None:
    """Podman keeps the monitor (conmon) of each finished `exec` (and healthcheck) session
    alive for 300 s after it ends, so that its exit code can be read. Once the containers
    are down nobody will read them: stop those of the containers named `prefix*` now."""
    wanted = prefix.encode()
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
        if name.startswith(wanted):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGTERM)
