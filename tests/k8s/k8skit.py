"""Helpers of tests/k8s: render the kustomizations, and turn the rendered StatefulSet's pod
into what `podman kube play` (Podman 4.3) can run.

Two steps, kept apart so that the tests can say which of them they check:

- `pod_for(statefulset, ordinal)` is the Pod the StatefulSet controller would create for
  ordinal K: the template, named `<set>-K`, with the volumeClaimTemplates as volumes. Pure
  Kubernetes, nothing changed.
- `PodmanRun.adapt(pod)` makes that Pod playable by Podman 4.3, and each change is one
  that Podman needs (docs/kubernetes.md, "What the Podman run changes"), never one that
  hides a fault of the manifest: the probes Podman cannot run are run by the test itself,
  as the kubelet would (`http_probe`, `grpc_probe`, `exec_probe`).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev group

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "compose"))  # the Podman fallback of `make up`

from podman_fallback import reap_exec_monitors  # noqa: E402

K8S_DIR = ROOT / "deploy" / "k8s"
BASE_DIR = K8S_DIR / "base"
OVERLAYS_DIR = K8S_DIR / "overlays"
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KUBERNETES_VERSION = "1.37.0"  # the schemas kubernetes-validate bundles (and kubectl's)
IMAGE_USER = 10001  # USER of services/*/Dockerfile
PODMAN_LOCK = Path("/tmp/peerfind-podman.lock")  # shared with `make up` / `make test-compose`
# The Podman settings `make up` uses (runc, explicit ulimits): scripts/stack.py.
CONTAINERS_CONF = ROOT / "deploy" / "compose" / "podman" / "containers.conf"

Manifest = dict[str, Any]


def kustomize(path: Path) -> list[Manifest]:
    """`kubectl kustomize PATH` (kustomize built into kubectl), parsed."""
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(docs: list[Manifest], kind: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def all_containers(pod_spec: Manifest) -> list[Manifest]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def sidecars(pod_spec: Manifest) -> list[Manifest]:
    """The native sidecars: init containers that keep running (restartPolicy: Always)."""
    return [c for c in pod_spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]


def pod_for(statefulset: Manifest, ordinal: int) -> Manifest:
    """The Pod the StatefulSet controller makes for `ordinal`: the template, named
    `<set>-<ordinal>` in the set's namespace, each volumeClaimTemplate bound to a claim
    `<template>-<set>-<ordinal>`."""
    name = statefulset["metadata"]["name"]
    template = copy.deepcopy(statefulset["spec"]["template"])
    spec = template["spec"]
    spec.setdefault("volumes", [])
    for claim in statefulset["spec"].get("volumeClaimTemplates", []):
        claim_name = claim["metadata"]["name"]
        spec["volumes"].append(
            {
                "name": claim_name,
                "persistentVolumeClaim": {"claimName": f"{claim_name}-{name}-{ordinal}"},
            }
        )
    metadata = template.get("metadata", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **metadata,
            "name": f"{name}-{ordinal}",
            "namespace": statefulset["metadata"]["namespace"],
            "labels": {
                **metadata.get("labels", {}),
                "statefulset.kubernetes.io/pod-name": f"{name}-{ordinal}",
                "apps.kubernetes.io/pod-index": str(ordinal),
            },
        },
        "spec": spec,
    }


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def podman_lock(wait_s: float = 900.0) -> Iterator[None]:
    """Hold the lock every Podman user of this project takes (`flock /tmp/peerfind-podman.lock`),
    waiting up to `wait_s` for another engineer's run to finish."""
    with PODMAN_LOCK.open("a") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{PODMAN_LOCK} still held after {wait_s:.0f} s") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    result = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}: {result.stderr.strip()[-600:]}")
    return result


# What `podman healthcheck run` executes in place of the probes Podman 4.3 cannot run
# (it turns httpGet into `curl http://localhost:<named port unresolved: 0>` and ignores
# grpc): the images' own HEALTHCHECK, which checks the same endpoint.
IMAGE_CHECKS = {
    "directory": ["peerfind-directory", "--check"],  # GET /health on its own port
    "transfer": ["peerfind-transfer", "--check"],  # grpc.health.v1 Check, service ""
    "indexer": ["peerfind-indexer", "--check"],  # the index heartbeat
}


@dataclass
class PodmanPod:
    name: str
    ip: str
    kube_file: Path
    dirs: dict[str, Path]  # volume name -> host directory standing in for it
    host_ports: dict[tuple[str, str | int], int]  # (container, port name or number) -> host

    def host_port(self, container: str, port: str | int) -> int:
        return self.host_ports[(container, port)]

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"


@dataclass
class PodmanRun:
    """One run of rendered pods under Podman, and everything it created, removed by
    `cleanup` whatever happened: the pods (`podman kube down`, then by name), the network,
    the ConfigMap volume Podman makes, the host directories, leftover exec monitors."""

    set_name: str
    workdir: Path
    network: str = ""
    subnet_prefix: str = ""
    pods: list[PodmanPod] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def create_network(self) -> None:
        name = f"{self.set_name}-net"
        # Not --internal: Podman forwards no published port into an internal network.
        podman("network", "create", name)
        self.network = name
        info = json.loads(podman("network", "inspect", name).stdout)[0]
        subnet = info["subnets"][0]["subnet"]  # e.g. 10.89.3.0/24, chosen free by Podman
        assert subnet.endswith(".0/24"), f"unexpected subnet {subnet}"
        self.subnet_prefix = subnet.removesuffix("0/24")

    def ip(self, ordinal: int) -> str:
        return f"{self.subnet_prefix}{10 + ordinal}"

    def adapt(
        self,
        pod: Manifest,
        configmap: Manifest,
        ordinal: int,
        shared_files: dict[str, str],
        peers: int,
    ) -> tuple[list[Manifest], dict[str, Path], dict[tuple[str, str | int], int]]:
        """`pod` (from `pod_for`) made playable by Podman 4.3, with its ConfigMap; the
        host directories and ports it uses. Each change, and why:"""
        pod = copy.deepcopy(pod)
        configmap = copy.deepcopy(configmap)
        meta, spec = pod["metadata"], pod["spec"]
        namespace = meta["namespace"]
        # Unique names: other Podman users (make test-compose) share this engine.
        meta["name"] = f"{self.set_name}-{ordinal}"
        cm_name = f"{self.set_name}-{configmap['metadata']['name']}"
        configmap["metadata"] = {"name": cm_name}
        self.volumes.append(cm_name)  # Podman keeps a ConfigMap as a volume of that name

        # 1. Native sidecars (init containers with restartPolicy: Always) are refused
        #    ("cannot create an init container that has ... probes"): they become
        #    regular containers, started with the others.
        side = sidecars(spec)
        spec["initContainers"] = [c for c in spec.get("initContainers", []) if c not in side]
        for container in side:
            del container["restartPolicy"]
        spec["containers"] = [*side, *spec["containers"]]
        # 2. The Pod's restartPolicy (Always) would re-run the finished init container
        #    for ever: OnFailure restarts a failed service and leaves peer-config done.
        spec["restartPolicy"] = "OnFailure"
        # Keep the init container after it ran: Podman 4.3 fails to remove a "once" one
        # while it restarts ("cannot remove container ... as it is running").
        meta.setdefault("annotations", {})["io.podman.annotations.init.container.type"] = "always"

        host_ports: dict[tuple[str, str | int], int] = {}
        for container in all_containers(spec):
            # 3. fieldRef metadata.namespace is "not valid or not supported": the value.
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if ref == "metadata.namespace":
                    del env["valueFrom"]
                    env["value"] = namespace
            # 4. Podman publishes every containerPort on 0.0.0.0 (the same port for
            #    every pod): each goes to a free port on 127.0.0.1 instead.
            for port in container.get("ports", []):
                host = free_port()
                port.update(hostIP="127.0.0.1", hostPort=host)
                host_ports[(container["name"], port["containerPort"])] = host
                if "name" in port:
                    host_ports[(container["name"], port["name"])] = host
            # 5. Probes: Podman turns only the liveness probe into a healthcheck, and
            #    cannot run httpGet or grpc ones; the image's own check stands in, and
            #    the test runs the manifest's probes itself (http_probe, grpc_probe).
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                container.pop(kind, None)
            if container["name"] in IMAGE_CHECKS:
                container["livenessProbe"] = {
                    "exec": {"command": IMAGE_CHECKS[container["name"]]},
                    "periodSeconds": 10,
                    "timeoutSeconds": 5,
                    "failureThreshold": 3,
                }

        # 6. Volumes: the claims (no provisioner here) and the emptyDirs (Podman 4.3
        #    makes them volumes named after the volume, `state`, shared by every pod) are
        #    host directories of this run, owned by the image's user as fsGroup would.
        dirs: dict[str, Path] = {}
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume or "emptyDir" in volume:
                path = self.workdir / meta["name"] / volume["name"]
                path.mkdir(parents=True)
                os.chown(path, IMAGE_USER, IMAGE_USER)
                for key in ("persistentVolumeClaim", "emptyDir"):
                    volume.pop(key, None)
                volume["hostPath"] = {"path": str(path), "type": "Directory"}
                dirs[volume["name"]] = path
            elif "configMap" in volume:
                volume["configMap"]["name"] = cm_name
        for name, text in shared_files.items():
            (dirs["shared"] / name).write_text(text)

        # 7. The headless Service's names (no cluster DNS here): /etc/hosts entries to
        #    the static addresses of this run's pods.
        domain = next(
            e["value"]
            for e in spec["initContainers"][0]["env"]
            if e["name"] == "PEERFIND_K8S_CLUSTER_DOMAIN"
        )
        service = next(
            e["value"]
            for e in spec["initContainers"][0]["env"]
            if e["name"] == "PEERFIND_K8S_SERVICE"
        )
        spec["hostAliases"] = [
            {
                "ip": self.ip(k),
                "hostnames": [f"{self.set_name}-{k}.{service}.{namespace}.svc.{domain}"],
            }
            for k in range(peers)
        ]
        return [configmap, pod], dirs, host_ports

    def play(
        self,
        pod: Manifest,
        configmap: Manifest,
        ordinal: int,
        shared_files: dict[str, str],
        peers: int,
    ) -> PodmanPod:
        docs, dirs, ports = self.adapt(pod, configmap, ordinal, shared_files, peers)
        kube_file = self.workdir / f"pod-{ordinal}.yaml"
        kube_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        played = PodmanPod(f"{self.set_name}-{ordinal}", self.ip(ordinal), kube_file, dirs, ports)
        self.pods.append(played)  # before playing: a failed play leaves a pod behind
        podman(
            "kube",
            "play",
            "--network",
            self.network,
            "--ip",
            played.ip,
            "--quiet",
            str(kube_file),
            timeout=180,
        )
        return played

    def cleanup(self) -> list[str]:
        """Remove everything this run created; returns what could not be removed."""
        for pod in reversed(self.pods):
            podman("kube", "down", str(pod.kube_file), timeout=120, check=False)
            if podman("pod", "exists", pod.name, check=False).returncode == 0:
                podman("pod", "rm", "--force", "--time", "10", pod.name, check=False)
        for volume in self.volumes:
            if podman("volume", "exists", volume, check=False).returncode == 0:
                podman("volume", "rm", "--force", volume, check=False)
        if self.network:
            podman("network", "rm", "--force", self.network, check=False)
        self.reap_exec_monitors()
        left = [
            p.name
            for p in self.pods
            if podman("pod", "exists", p.name, check=False).returncode == 0
        ]
        left += [
            v for v in self.volumes if podman("volume", "exists", v, check=False).returncode == 0
        ]
        if self.network and podman("network", "exists", self.network, check=False).returncode == 0:
            left.append(self.network)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return left

    def reap_exec_monitors(self) -> None:
        """Stop the exec-session monitors of this run's containers, and only those."""
        reap_exec_monitors(f"{self.set_name}-")


# --------------------------------------------------------------------------- probes, as the kubelet runs them


def http_probe(probe: Manifest, pod: PodmanPod, container: str) -> bool:
    """httpGet: GET the path on the port (name or number); 200-399 is a success."""
    get = probe["httpGet"]
    url = f"http://127.0.0.1:{pod.host_port(container, get['port'])}{get.get('path', '/')}"
    try:
        response = httpx.get(url, timeout=probe.get("timeoutSeconds", 1))
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 400


def grpc_probe(probe: Manifest, pod: PodmanPod, container: str) -> bool:
    """grpc: grpc.health.v1.Health/Check with the probe's service (default "")."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"127.0.0.1:{pod.host_port(container, probe['grpc']['port'])}"
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                timeout=probe.get("timeoutSeconds", 1),
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def exec_probe(probe: Manifest, pod: PodmanPod, container: str) -> bool:
    """exec: the command in the container; exit 0 is a success."""
    result = podman(
        "exec", pod.container(container), *probe["exec"]["command"], timeout=30, check=False
    )
    return result.returncode == 0


def run_probe(probe: Manifest, pod: PodmanPod, container: str) -> bool:
    if "httpGet" in probe:
        return http_probe(probe, pod, container)
    if "grpc" in probe:
        return grpc_probe(probe, pod, container)
    if "exec" in probe:
        return exec_probe(probe, pod, container)
    raise AssertionError(f"{container}: a probe kind the test does not run: {sorted(probe)}")
