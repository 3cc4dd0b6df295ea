"""The rendered pod runs: two pods of the overlay's StatefulSet (ordinals 0 and 1) under
`podman kube play`, with the images `make up` builds.

What it shows: peer-config writes each pod's peer.json from its ordinal; the three
services start and turn healthy; every startup, readiness and liveness probe of the
manifest succeeds when run as the kubelet runs it (HTTP GET on the named port, the gRPC
health service, exec); the directory answers /health and /search; pod 1 joins pod 0, its
primary friend, by the headless Service's name, and a search from pod 1 finds pod 0's file.
What Podman 4.3 needs changed, and why, is in k8skit.PodmanRun.adapt and docs/kubernetes.md.

Needs root, Podman and the three images (`make up` or `make test-compose` builds them;
CI runs `make k8s-check` after `make test-compose`). Without them it skips, by hand; under
CI it fails. Runs under /tmp/peerfind-podman.lock with names and ports of its own, and
removes all it created, whatever happens.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from k8skit import (
    Manifest,
    PodmanPod,
    PodmanRun,
    all_containers,
    in_ci,
    only,
    pod_for,
    podman,
    podman_lock,
    run_probe,
)

pytestmark = pytest.mark.timeout(900)

DEADLINE_S = 120.0
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(1.0)


def healthy(container: str) -> bool:
    """`podman healthcheck run`: Podman runs no healthchecks without systemd timers."""
    return podman("healthcheck", "run", container, check=False).returncode == 0


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason}, and CI must run this test (after `make test-compose`)")
    pytest.skip(reason)


def images(statefulset: Manifest) -> set[str]:
    return {c["image"] for c in all_containers(statefulset["spec"]["template"]["spec"])}


@pytest.fixture(scope="module")
def played(
    peers_docs: list[Manifest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PodmanRun, list[PodmanPod], Manifest]]:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        unavailable("needs root and Podman (`make up` installs Podman where no Docker answers)")
    statefulset = only(peers_docs, "StatefulSet")
    configmap = only(peers_docs, "ConfigMap")
    missing = sorted(
        i for i in images(statefulset) if podman("image", "exists", i, check=False).returncode
    )
    if missing:
        unavailable(f"images {', '.join(missing)} not built: run `make up` then `make down` first")
    run = PodmanRun(f"pfk8s{secrets.token_hex(3)}", tmp_path_factory.mktemp("podman-kube"))
    with podman_lock():
        try:
            run.create_network()
            pods = [
                run.play(
                    pod_for(statefulset, k),
                    configmap,
                    k,
                    {f"k8s-hello-{k}.txt": f"hello from pod {k}\n"},
                    peers=2,
                )
                for k in range(2)
            ]
            yield run, pods, statefulset
        finally:
            for pod in run.pods:
                for name in ("peer-config", "indexer", "directory", "transfer"):
                    logs = podman("logs", "--tail", "5", pod.container(name), check=False)
                    print(f"--- {pod.container(name)}\n{logs.stdout}{logs.stderr}")
            left = run.cleanup()
            assert left == [], f"left behind: {left}"


def test_peer_config_writes_each_pods_config_from_its_ordinal(
    played: tuple[PodmanRun, list[PodmanPod], Manifest],
) -> None:
    run, pods, _ = played
    configs: list[dict[str, Any]] = []
    for pod in pods:
        path = pod.dirs["peer-config"] / "peer.json"
        wait_for(f"{path}", path.exists, 60)
        configs.append(json.loads(path.read_text()))
    domain = "peerfind.peerfind.svc.cluster.local"
    assert configs[0]["peer_id"] == f"{run.set_name}-0"
    assert configs[0]["friend_primary"] == configs[0]["friend_backup"] == ""
    assert configs[1]["peer_id"] == f"{run.set_name}-1"
    assert configs[1]["friend_primary"] == f"http://{run.set_name}-0.{domain}:8000"
    assert configs[1]["friend_backup"] == ""
    assert configs[1]["self_url"] == f"http://{run.set_name}-1.{domain}:8000"


def test_the_three_services_run_as_the_image_user_and_turn_healthy(
    played: tuple[PodmanRun, list[PodmanPod], Manifest],
) -> None:
    _, pods, _ = played
    for pod in pods:
        for name in ("indexer", "directory", "transfer"):
            container = pod.container(name)
            wait_for(
                f"{container} healthy",
                functools.partial(healthy, container),
            )
            state = json.loads(podman("inspect", container).stdout)[0]
            assert state["State"]["Running"] is True, container
            assert state["Config"]["User"].split(":")[0] == "10001", container
            assert state["HostConfig"]["ReadonlyRootfs"] is True, container
            assert state["HostConfig"]["CapDrop"], container
            assert state["HostConfig"]["CapAdd"] in (None, []), container


def test_every_probe_of_the_manifest_succeeds_as_the_kubelet_runs_it(
    played: tuple[PodmanRun, list[PodmanPod], Manifest],
) -> None:
    _, pods, statefulset = played
    spec = statefulset["spec"]["template"]["spec"]
    ran = []
    for pod in pods:
        for container in all_containers(spec):
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if kind in container:
                    probe = container[kind]
                    wait_for(
                        f"{pod.name} {container['name']} {kind}",
                        functools.partial(run_probe, probe, pod, container["name"]),
                    )
                    ran.append(
                        (container["name"], kind, sorted(set(probe) & {"httpGet", "grpc", "exec"}))
                    )
    assert ("directory", "readinessProbe", ["httpGet"]) in ran
    assert ("transfer", "livenessProbe", ["grpc"]) in ran
    assert ("indexer", "startupProbe", ["exec"]) in ran


def test_the_directory_answers_health_and_search(
    played: tuple[PodmanRun, list[PodmanPod], Manifest],
) -> None:
    _, pods, _ = played
    pod = pods[0]
    rest = f"http://127.0.0.1:{pod.host_port('directory', 'http')}"

    def indexed() -> dict[str, Any] | None:
        health: dict[str, Any] = httpx.get(f"{rest}/health", timeout=5).json()
        ok = health["status"] == "ok" and health["index"]["files"] == 1
        return health if ok and health["transfer"]["serving"] else None

    health = wait_for("pod 0 /health ok with its file indexed", indexed)
    assert health["peer_id"] == pod.name
    search = httpx.get(f"{rest}/search", params={"query": "k8s-hello", "fanout": 0}, timeout=5)
    assert search.status_code == 200
    hits = search.json()["hits"]
    assert [(h["name"], h["peer_id"]) for h in hits] == [("k8s-hello-0.txt", pod.name)]
    for port_name in (("transfer", "metrics-xfer"), ("indexer", "metrics-idx")):
        metrics = httpx.get(f"http://127.0.0.1:{pod.host_port(*port_name)}/metrics", timeout=5)
        assert metrics.status_code == 200 and "peerfind_" in metrics.text, port_name
    assert "peerfind_" in httpx.get(f"{rest}/metrics", timeout=5).text


def test_pod_1_joins_its_friend_pod_0_and_searches_reach_it(
    played: tuple[PodmanRun, list[PodmanPod], Manifest],
) -> None:
    _, pods, _ = played
    first, second = (f"http://127.0.0.1:{p.host_port('directory', 'http')}" for p in pods)

    def listed(rest: str, peer_id: str) -> dict[str, Any] | None:
        rows = httpx.get(f"{rest}/peers", timeout=5).json()["peers"]
        return next((p for p in rows if p["peer_id"] == peer_id and p["state"] == "alive"), None)

    friend = wait_for("pod 1 lists pod 0", lambda: listed(second, pods[0].name))
    assert friend["friend"] is True  # its friend_primary, by the headless Service's name
    assert friend["url"] == f"http://{pods[0].name}.peerfind.peerfind.svc.cluster.local:8000"
    assert wait_for("pod 0 lists pod 1", lambda: listed(first, pods[1].name))["friend"] is False

    def found() -> set[str] | None:
        answer = httpx.get(
            f"{second}/search", params={"query": "k8s-hello", "fanout": 2}, timeout=10
        )
        names = {h["name"] for h in answer.json()["hits"]}
        return names if len(names) == 2 else None

    assert wait_for("a search from pod 1 finds both files", found) == {
        "k8s-hello-0.txt",
        "k8s-hello-1.txt",
    }


def test_cleanup_of_a_run_that_created_nothing(tmp_path: Path) -> None:
    """PodmanRun.cleanup of the real run is asserted by the fixture above (nothing left);
    one that failed before creating anything must clean up too, without errors."""
    run = PodmanRun("pfk8s-empty", tmp_path / "run")
    (tmp_path / "run").mkdir()
    if shutil.which("podman") is None:
        pytest.skip("no Podman")
    assert run.cleanup() == []
    assert not (tmp_path / "run").exists()
