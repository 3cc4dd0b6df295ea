"""deploy/k8s renders, every object is valid for the Kubernetes API (strict: no unknown
field), and the pod is what docs/kubernetes.md says: one peer of three processes, each
checked by its own health check, hardened to the restricted Pod Security Standard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed
import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev group
from k8skit import (
    BASE_DIR,
    IMAGE_USER,
    KUBECTL,
    KUBERNETES_VERSION,
    ROOT,
    Manifest,
    all_containers,
    only,
    sidecars,
)

SERVICES = ("directory", "transfer", "indexer")
COMPOSE_SERVICES = ROOT / "deploy" / "compose" / "services.yaml"


def statefulset_spec(docs: list[Manifest]) -> Manifest:
    spec: Manifest = only(docs, "StatefulSet")["spec"]
    return spec


def pod_spec(docs: list[Manifest]) -> Manifest:
    spec: Manifest = statefulset_spec(docs)["template"]["spec"]
    return spec


def container(docs: list[Manifest], name: str) -> Manifest:
    found = [c for c in all_containers(pod_spec(docs)) if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


# --------------------------------------------------------------------------- render and schema


def test_renders_the_objects_of_one_peer_network(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "peerfind", doc["kind"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "peerfind"


def test_every_object_passes_strict_schema_validation(
    rendered: tuple[str, list[Manifest]],
) -> None:
    _, docs = rendered
    for doc in docs:
        # Raises ValidationError on a wrong type, a missing field, or (strict) a field
        # the API does not know, which the API server would drop or refuse.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_an_unknown_field(base_docs: list[Manifest]) -> None:
    """The validation above is not vacuous: a misspelt field fails it."""
    statefulset = json.loads(json.dumps(only(base_docs, "StatefulSet")))
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def test_the_overlay_sets_n_replicas_and_the_base_one(
    base_docs: list[Manifest], peers_docs: list[Manifest]
) -> None:
    assert statefulset_spec(base_docs)["replicas"] == 1
    overlay = yaml.safe_load(
        (BASE_DIR.parent / "overlays" / "peers" / "kustomization.yaml").read_text()
    )
    assert statefulset_spec(peers_docs)["replicas"] == overlay["replicas"][0]["count"] > 1


# --------------------------------------------------------------------------- images


def test_images_are_the_compose_images_by_tag(rendered: tuple[str, list[Manifest]]) -> None:
    """The same names and tags as `make up` builds (deploy/compose/services.yaml, with its
    defaults), never `latest`."""
    _, docs = rendered
    compose = yaml.safe_load(COMPOSE_SERVICES.read_text())["services"]
    # ${VAR:-default} -> default: what `make up` tags when nothing is overridden.
    expected = {
        name: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", compose[name]["image"]) for name in SERVICES
    }
    assert container(docs, "directory")["image"] == expected["directory"]
    assert container(docs, "transfer")["image"] == expected["transfer"]
    assert container(docs, "indexer")["image"] == expected["indexer"]
    # peer-config runs the directory image's Python (peerfind.config validates the file).
    assert container(docs, "peer-config")["image"] == expected["directory"]
    for c in all_containers(pod_spec(docs)):
        assert not c["image"].endswith(":latest") and ":" in c["image"], c["name"]
        assert c["imagePullPolicy"] == "IfNotPresent", c["name"]


# --------------------------------------------------------------------------- the pod


def test_one_pod_is_one_peer_with_the_indexer_as_a_native_sidecar(
    base_docs: list[Manifest],
) -> None:
    spec = pod_spec(base_docs)
    assert [c["name"] for c in spec["containers"]] == ["directory", "transfer"]
    init = spec["initContainers"]
    # peer-config first (runs to completion: the services need its peer.json), then the
    # indexer, which keeps running: a sidecar started before the main containers.
    assert [c["name"] for c in init] == ["peer-config", "indexer"]
    assert "restartPolicy" not in init[0]
    assert [c["name"] for c in sidecars(spec)] == ["indexer"]


def test_every_service_reads_the_pod_config_written_by_peer_config(
    base_docs: list[Manifest],
) -> None:
    spec = pod_spec(base_docs)
    writer = container(base_docs, "peer-config")
    assert writer["command"][-1] == "/run/peerfind/peer.json"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["peer-config"]
    for name in SERVICES:
        c = container(base_docs, name)
        assert {"name": "PEER_CONFIG", "value": "/run/peerfind/peer.json"} in c["env"], name
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["peer-config"] == {
            "name": "peer-config",
            "mountPath": "/run/peerfind",
            "readOnly": True,
        }
        assert mounts["state"]["mountPath"] == "/var/lib/peerfind", name
    # The writer gets its identity from the downward API, never from per-pod files.
    env = {e["name"]: e for e in writer["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["PEERFIND_K8S_SERVICE"]["value"] == statefulset_spec(base_docs)["serviceName"]


def test_the_configmap_carries_the_shared_settings_and_the_script(
    base_docs: list[Manifest],
) -> None:
    configmap = only(base_docs, "ConfigMap")
    assert json.loads(configmap["data"]["peer.json"]) == json.loads(
        (BASE_DIR / "peer.json").read_text()
    )
    assert configmap["data"]["peer_config.py"] == (BASE_DIR / "peer_config.py").read_text()
    spec = pod_spec(base_docs)
    volume = next(v for v in spec["volumes"] if v["name"] == "k8s-config")
    # kustomize's hashed name, so that a change of either rolls the pods.
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert configmap["metadata"]["name"].startswith("peerfind-peer-")


def test_probes_are_the_services_own_health_checks(base_docs: list[Manifest]) -> None:
    directory = container(base_docs, "directory")
    transfer = container(base_docs, "transfer")
    indexer = container(base_docs, "indexer")
    http_port = next(p for p in directory["ports"] if p["name"] == "http")
    assert http_port["containerPort"] == 8000
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert directory[kind]["httpGet"] == {"path": "/health", "port": "http"}, kind
        assert transfer[kind]["grpc"] == {"port": 50051}, kind  # grpc.health.v1, service ""
        assert indexer[kind]["exec"]["command"] == ["peerfind-indexer", "--check"], kind
        for c in (directory, transfer, indexer):
            assert c[kind]["timeoutSeconds"] >= 2, (c["name"], kind)
    # The startup probes give a first scan minutes; liveness then acts within 30 s.
    startup = indexer["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    live = indexer["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] <= 30


def test_ports_are_named_and_match_the_peer_config(base_docs: list[Manifest]) -> None:
    config = json.loads((BASE_DIR / "peer.json").read_text())
    ports = {
        (c["name"], p["name"]): p["containerPort"]
        for c in all_containers(pod_spec(base_docs))
        for p in c.get("ports", [])
    }
    assert ports == {
        ("directory", "http"): config["rest_port"],
        ("transfer", "grpc"): config["grpc_port"],
        ("transfer", "metrics-xfer"): config["transfer_metrics_port"],
        ("indexer", "metrics-idx"): config["indexer_metrics_port"],
    }
    assert config["host"] == config["metrics_host"] == "0.0.0.0"


def test_every_container_is_restricted(rendered: tuple[str, list[Manifest]]) -> None:
    """The restricted Pod Security Standard, on every container, and the image's user."""
    _, docs = rendered
    spec = pod_spec(docs)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == pod_security["fsGroup"] == IMAGE_USER
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
    containers = all_containers(spec)
    assert len(containers) == 4
    for c in containers:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["runAsUser"] == IMAGE_USER, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["privileged"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert "ports" not in c or all("hostPort" not in p for p in c["ports"]), c["name"]
        # A read-only root: /tmp is an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts["/tmp"] == "tmp", c["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tmp"]["emptyDir"]["sizeLimit"]
    allowed = {"configMap", "emptyDir", "persistentVolumeClaim"}  # restricted's volume types
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= allowed, volume["name"]


def test_namespace_enforces_restricted_pod_security(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    labels = only(docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_every_container_has_requests_and_limits(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    compose = yaml.safe_load(COMPOSE_SERVICES.read_text())["services"]
    for c in all_containers(pod_spec(docs)):
        resources = c["resources"]
        for part in ("requests", "limits"):
            assert set(resources[part]) == {"cpu", "memory"}, (c["name"], part)
        if c["name"] in SERVICES:
            # The same memory ceiling as the compose stack (mem_limit 256m -> 256Mi).
            assert resources["limits"]["memory"] == compose[c["name"]]["mem_limit"].replace(
                "m", "Mi"
            )


def _quantity(value: str) -> float:
    """CPU in cores or memory in Mi, from a Kubernetes quantity."""
    if value.endswith("m"):
        return int(value[:-1]) / 1000
    if value.endswith("Mi"):
        return float(value[:-2])
    if value.endswith("Gi"):
        return float(value[:-2]) * 1024
    return float(value)


def test_per_peer_resources_are_the_documented_ones(base_docs: list[Manifest]) -> None:
    """docs/kubernetes.md and the overlay quote these sums: requests 250m and 352Mi, limits
    2.5 CPU and 1Gi for the three services."""
    services = [container(base_docs, name)["resources"] for name in SERVICES]
    total = {
        (part, what): sum(_quantity(r[part][what]) for r in services)
        for part in ("requests", "limits")
        for what in ("cpu", "memory")
    }
    assert total == {
        ("requests", "cpu"): 0.25,
        ("requests", "memory"): 352,
        ("limits", "cpu"): 2.5,
        ("limits", "memory"): 1024,
    }
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "requests 0.25 CPU and 352 Mi, limits 2.5 CPU and 1 Gi" in docs


def test_state_and_shared_folder_are_per_peer_volumes(base_docs: list[Manifest]) -> None:
    templates = {
        t["metadata"]["name"]: t for t in statefulset_spec(base_docs)["volumeClaimTemplates"]
    }
    assert set(templates) == {"state", "shared"}
    for template in templates.values():
        assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    shared_mounts = {
        c["name"]: m
        for c in all_containers(pod_spec(base_docs))
        for m in c["volumeMounts"]
        if m["name"] == "shared"
    }
    # The indexer sees the shared folder writable (`kubectl cp -c indexer`); the transfer
    # service reads the files it serves (Download) read-only; the directory never sees it.
    assert shared_mounts == {
        "indexer": {"name": "shared", "mountPath": "/srv/peerfind/shared"},
        "transfer": {"name": "shared", "mountPath": "/srv/peerfind/shared", "readOnly": True},
    }


def test_headless_service_names_every_pod(base_docs: list[Manifest]) -> None:
    service = only(base_docs, "Service")
    statefulset = only(base_docs, "StatefulSet")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "grpc"}
    template_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert statefulset["spec"]["podManagementPolicy"] == "OrderedReady"


def test_pdb_allows_one_peer_down_at_a_time(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    pdb = only(docs, "PodDisruptionBudget")
    labels = statefulset_spec(docs)["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _rule_ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule["ports"]}


def test_network_policy_lets_peers_talk_and_prometheus_scrape(
    base_docs: list[Manifest],
) -> None:
    policy = only(base_docs, "NetworkPolicy")["spec"]
    peer_labels = statefulset_spec(base_docs)["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= peer_labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    peer_selector = {"podSelector": {"matchLabels": policy["podSelector"]["matchLabels"]}}

    ingress = policy["ingress"]
    from_peers = [r for r in ingress if peer_selector in r["from"]]
    assert len(from_peers) == 1 and _rule_ports(from_peers[0]) == {8000, 50051}
    scrape = [
        r
        for r in ingress
        if any(
            f.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "prometheus"}
            for f in r["from"]
        )
    ]
    assert len(scrape) == 1 and _rule_ports(scrape[0]) == {8000, 9100, 9200}
    assert all("namespaceSelector" in f for f in scrape[0]["from"])

    egress = policy["egress"]
    to_peers = [r for r in egress if peer_selector in r["to"]]
    assert len(to_peers) == 1 and _rule_ports(to_peers[0]) == {8000, 50051}
    dns = [r for r in egress if _rule_ports(r) == {53}]
    assert len(dns) == 1 and {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}
    # Nothing else goes out: every egress rule names its destination.
    assert all(r.get("to") for r in egress)


def test_prometheus_scrape_annotations(base_docs: list[Manifest]) -> None:
    """The common kubernetes-pods convention: one port per pod, the directory's /metrics;
    the other two metrics ports are named for a PodMonitor or a pod-role job to pick."""
    annotations = statefulset_spec(base_docs)["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    directory = container(base_docs, "directory")
    http = next(p for p in directory["ports"] if p["name"] == "http")
    assert annotations["prometheus.io/port"] == str(http["containerPort"])
    names = {p["name"] for c in all_containers(pod_spec(base_docs)) for p in c.get("ports", [])}
    assert {"metrics-xfer", "metrics-idx"} <= names


def test_checkov_skips_carry_their_reasons(base_docs: list[Manifest]) -> None:
    for doc in base_docs:
        for key, value in doc["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert check.startswith("CKV"), value
                assert len(reason.split()) >= 8, f"{check}: give the reason"


def test_manifest_files_are_yaml_with_a_header_comment() -> None:
    for path in sorted((BASE_DIR.parent).rglob("*.yaml")) + sorted(
        (BASE_DIR.parent).rglob("*.yml")
    ):
        text = path.read_text()
        assert text.startswith("#"), f"{path.relative_to(ROOT)}: say what it is in a comment"
        list(yaml.safe_load_all(text))


def test_no_per_pod_files(rendered: tuple[str, list[Manifest]]) -> None:
    """Every pod is the same template: nothing in the output names a pod ordinal."""
    _, docs = rendered
    text = yaml.safe_dump_all(docs)
    for k in range(10):
        assert f"peerfind-{k}." not in text


def test_render_and_validation_need_no_network(tmp_path: Path) -> None:
    """kubectl kustomize and kubernetes-validate --strict in a network namespace with no
    interface up: nothing is fetched (schemas bundled, kustomize built in)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) for an empty network namespace")
    overlay = BASE_DIR.parent / "overlays" / "peers"
    rendered = subprocess.run(
        [unshare, "--net", str(KUBECTL), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    manifest = tmp_path / "peers.yaml"
    manifest.write_text(rendered.stdout)
    validate = KUBECTL.parent / "kubernetes-validate"
    result = subprocess.run(
        [unshare, "--net", str(validate), "--strict", "-k", KUBERNETES_VERSION, str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(
        [d for d in yaml.safe_load_all(rendered.stdout) if d]
    )
