"""peer_config.py, the first init container: each pod's peer.json from its ordinal.

Run here with the repository's own peerfind (the directory image's Python runs the same
file from the ConfigMap), for a network of N pods as the overlay renders it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import peer_config
import pytest
from k8skit import BASE_DIR, Manifest, only

from peerfind.config import load_settings

NAMESPACE = "peerfind"


def fqdn(k: int) -> str:
    return f"peerfind-{k}.peerfind.{NAMESPACE}.svc.cluster.local"


def environ_of(pod: str) -> dict[str, str]:
    return {"POD_NAME": pod, "POD_NAMESPACE": NAMESPACE}


def render(tmp_path: Path, docs: list[Manifest], ordinal: int) -> Path:
    """Run the rendered ConfigMap's script on its peer.json, as the init container does
    (same arguments, same environment from the downward API and the manifest)."""
    configmap = only(docs, "ConfigMap")["data"]
    statefulset = only(docs, "StatefulSet")
    init = statefulset["spec"]["template"]["spec"]["initContainers"][0]
    mounts = tmp_path / f"k8s-{ordinal}"
    mounts.mkdir()
    for name, text in configmap.items():
        (mounts / name).write_text(text)
    env = {e["name"]: e.get("value", "") for e in init["env"]}
    env.update(environ_of(f"{statefulset['metadata']['name']}-{ordinal}"))
    out = tmp_path / f"peer-{ordinal}.json"
    command = [sys.executable, str(mounts / "peer_config.py"), str(mounts / "peer.json"), str(out)]
    assert init["command"][1:3] == [
        "/etc/peerfind/k8s/peer_config.py",
        "/etc/peerfind/k8s/peer.json",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"peer-config: peerfind-{ordinal} at http://{fqdn(ordinal)}:8000"
    )
    return out


def test_friends_follow_the_ordinals_of_n_pods(tmp_path: Path, peers_docs: list[Manifest]) -> None:
    replicas = only(peers_docs, "StatefulSet")["spec"]["replicas"]
    assert replicas >= 3
    for k in range(replicas):
        settings = load_settings(render(tmp_path, peers_docs, k))
        assert settings.peer_id == f"peerfind-{k}"
        assert settings.self_url == f"http://{fqdn(k)}:8000"
        assert settings.grpc_advertise == f"{fqdn(k)}:50051"
        assert settings.transfer_address == "127.0.0.1:50051"
        expected = {0: [], 1: [f"http://{fqdn(0)}:8000"]}.get(
            k, [f"http://{fqdn(k - 1)}:8000", f"http://{fqdn(0)}:8000"]
        )
        assert settings.friends == expected, k
        # Every friend is an earlier pod: up before K (OrderedReady), kept on scale-down.
        # The shared settings come through unchanged.
        assert str(settings.shared_dir) == "/srv/peerfind/shared"
        assert str(settings.state_dir) == "/var/lib/peerfind"
        assert settings.transfer_metrics_port == 9100


def test_base_fields_are_kept_and_derived_ones_win() -> None:
    base = json.loads((BASE_DIR / "peer.json").read_text())
    config = peer_config.derive({**base, "peer_id": "x", "active_view": 9}, environ_of("net-4"))
    assert config["active_view"] == 9
    assert config["peer_id"] == "net-4"
    assert config["friend_primary"] == "http://net-3.peerfind.peerfind.svc.cluster.local:8000"
    assert config["friend_backup"] == "http://net-0.peerfind.peerfind.svc.cluster.local:8000"


def test_service_and_cluster_domain_come_from_the_environment() -> None:
    env = {
        **environ_of("p-2"),
        "PEERFIND_K8S_SERVICE": "peers",
        "PEERFIND_K8S_CLUSTER_DOMAIN": "k.example",
    }
    config = peer_config.derive({"rest_port": 8080, "grpc_port": 9000}, env)
    assert config["self_url"] == "http://p-2.peers.peerfind.svc.k.example:8080"
    assert config["grpc_advertise"] == "p-2.peers.peerfind.svc.k.example:9000"
    assert config["friend_primary"] == "http://p-1.peers.peerfind.svc.k.example:8080"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"POD_NAMESPACE": NAMESPACE}, "POD_NAME is not set"),
        ({"POD_NAME": "nodash", "POD_NAMESPACE": NAMESPACE}, "is not <statefulset>-<ordinal>"),
        ({"POD_NAME": "peerfind-x", "POD_NAMESPACE": NAMESPACE}, "is not <statefulset>-<ordinal>"),
    ],
)
def test_a_pod_without_an_ordinal_stops_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environ: dict[str, str],
    message: str,
) -> None:
    for name in ("POD_NAME", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    rc = peer_config.main([str(BASE_DIR / "peer.json"), str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_an_invalid_setting_stops_the_pod_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = json.loads((BASE_DIR / "peer.json").read_text())
    bad = tmp_path / "base.json"
    bad.write_text(json.dumps({**base, "rest_port": 0}))
    for name, value in environ_of("peerfind-1").items():
        monkeypatch.setenv(name, value)
    rc = peer_config.main([str(bad), str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "rest_port" in err and len(err.strip().splitlines()) == 1
