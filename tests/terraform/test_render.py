"""What `terraform apply` computes for the peers, evaluated by a real Terraform with the
root module's own variables.tf and peers.tf: fixed addresses, friend wiring, the peer
configs (loaded with the project's config loader) and the cloud-init of every host
(checked with `cloud-init schema` and `shellcheck`)."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tfkit import (
    COMPOSE_DIR,
    SAMPLES_DIR,
    TEST_CLUSTER_TOKEN,
    TEST_PUBLIC_NET,
    Evaluate,
    PlanCheck,
    cloud_config,
    require_tool,
    written_files,
)

from peerfind.config import load_settings

# AWS refuses user_data above 16 KiB (before base64).
USER_DATA_LIMIT = 16 * 1024
HOST_SCRIPT = "/usr/local/sbin/peerfind-host"
SYSTEMD_UNIT = "/etc/systemd/system/peerfind.service"
TARGET_FILES = {
    f"/etc/peerfind/prometheus/{service}.json": (service, port)
    for service, port in (("directory", 8000), ("transfer", 9100), ("indexer", 9200))
}


def expected_wiring(count: int) -> dict[str, tuple[str, str]]:
    """The rule of the issue: peer N -> peer N-1, backup peer1 (from peer3 on)."""
    wiring = {}
    for n in range(1, count + 1):
        primary = f"peer{n - 1}" if n >= 2 else ""
        backup = "peer1" if n >= 3 else ""
        wiring[f"peer{n}"] = (primary, backup)
    return wiring


def _peer_of(url: str, by_url: dict[str, str]) -> str:
    return by_url[url] if url else ""


@pytest.mark.parametrize("count", [1, 3, 5])
def test_fixed_addresses_and_friend_wiring(evaluate: Evaluate, count: int) -> None:
    out = evaluate(peer_count=count)
    peers: dict[str, Any] = out["peers"]
    assert list(peers) == sorted(f"peer{n}" for n in range(1, count + 1))
    subnet = ipaddress.ip_network(out["subnet_cidr"])
    assert subnet == ipaddress.ip_network("10.42.1.0/24")
    by_url = {p["self_url"]: peer_id for peer_id, p in peers.items()}
    wiring = {}
    for peer_id, p in peers.items():
        n = p["number"]
        assert peer_id == f"peer{n}"
        assert p["private_ip"] == f"10.42.1.{10 + n}"
        assert ipaddress.ip_address(p["private_ip"]) in subnet
        assert p["self_url"] == f"http://{p['private_ip']}:8000"
        assert p["grpc_private"] == f"{p['private_ip']}:50051"
        wiring[peer_id] = (
            _peer_of(p["friend_primary"], by_url),
            _peer_of(p["friend_backup"], by_url),
        )
    assert wiring == expected_wiring(count)


def test_addresses_follow_vpc_cidr(evaluate: Evaluate) -> None:
    out = evaluate(peer_count=3, vpc_cidr="172.20.0.0/20")
    assert out["subnet_cidr"] == "172.20.1.0/24"
    assert [p["private_ip"] for p in out["peers"].values()] == [
        "172.20.1.11",
        "172.20.1.12",
        "172.20.1.13",
    ]
    assert all(c["peer_networks"] == ["172.20.0.0/20"] for c in out["configs"].values())


def test_wiring_matches_the_compose_peers(evaluate: Evaluate) -> None:
    """Three AWS peers are the compose network with IPs for names: same ids, ports,
    paths, metrics and friend topology as deploy/compose/peers/peerN.json."""
    configs: dict[str, Any] = evaluate(peer_count=3)["configs"]
    aws_by_url = {c["self_url"]: peer_id for peer_id, c in configs.items()}
    for peer_id, aws in configs.items():
        compose = json.loads((COMPOSE_DIR / "peers" / f"{peer_id}.json").read_text())
        compose_by_url = {
            json.loads(p.read_text())["self_url"]: p.stem
            for p in (COMPOSE_DIR / "peers").glob("peer*.json")
        }
        for field in (
            "peer_id",
            "host",
            "rest_port",
            "grpc_port",
            "shared_dir",
            "state_dir",
            "transfer_metrics_port",
            "indexer_metrics_port",
            "metrics_host",
        ):
            assert aws[field] == compose[field], (peer_id, field)
        for field in ("friend_primary", "friend_backup"):
            assert _peer_of(aws[field], aws_by_url) == _peer_of(compose[field], compose_by_url)
        # Same service name scheme as the compose stack, one peer per host.
        assert compose["transfer_address"] == f"{peer_id}-transfer:50051"
        assert aws["transfer_address"] == "transfer:50051"


@pytest.mark.parametrize("count", [3, 5])
@pytest.mark.usefixtures("clean_peerfind_env")
def test_peer_json_loads_with_the_project_loader(
    evaluate: Evaluate, count: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = evaluate(peer_count=count)
    for peer_id, user_data in out["user_data"].items():
        entry = written_files(user_data)["/etc/peerfind/peer.json"]
        assert entry["permissions"] == "0600"  # it holds the cluster token
        path = tmp_path / f"{peer_id}.json"
        path.write_text(entry["content"], encoding="utf-8")
        settings = load_settings(path)
        peer = out["peers"][peer_id]
        assert settings.peer_id == peer_id
        assert settings.host == "0.0.0.0"
        assert settings.self_url == peer["self_url"]
        assert settings.friend_primary == peer["friend_primary"]
        assert settings.friend_backup == peer["friend_backup"]
        assert settings.grpc_advertise == peer["grpc_private"]
        assert settings.transfer_address == "transfer:50051"
        assert settings.peer_networks == ["10.42.0.0/16"]
        assert settings.resolve_hostnames is False
        assert settings.cluster_token.get_secret_value() == TEST_CLUSTER_TOKEN
        assert settings.transfer_metrics_port == 9100
        assert settings.indexer_metrics_port == 9200
        assert str(settings.shared_dir) == "/srv/peerfind/shared"
        assert str(settings.state_dir) == "/var/lib/peerfind"
        # Every friend is another peer of this deployment, inside peer_networks.
        for friend in settings.friends:
            assert friend in {p["self_url"] for p in out["peers"].values()} - {settings.self_url}

        # At every start the host advertises its public address through the environment.
        monkeypatch.setenv("PEERFIND_GRPC_ADVERTISE", "198.51.100.23:50051")
        assert load_settings(path).grpc_advertise == "198.51.100.23:50051"
        monkeypatch.delenv("PEERFIND_GRPC_ADVERTISE")


@pytest.mark.parametrize("count", [3, 5])
def test_cloud_init_is_valid(evaluate: Evaluate, count: int, tmp_path: Path) -> None:
    cloud_init = require_tool("cloud-init", "cloud-init")
    for peer_id, user_data in evaluate(peer_count=count)["user_data"].items():
        assert len(user_data.encode()) < USER_DATA_LIMIT, peer_id
        config = cloud_config(user_data)
        assert set(config) == {
            "package_update",
            "package_upgrade",
            "packages",
            "write_files",
            "runcmd",
        }
        assert {"docker.io", "docker-buildx", "docker-compose-v2", "git"} <= set(config["packages"])
        assert config["runcmd"] == [[HOST_SCRIPT, "install"]]
        path = tmp_path / f"{peer_id}.yaml"
        path.write_text(user_data, encoding="utf-8")
        done = subprocess.run(
            [cloud_init, "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{peer_id}: {done.stdout}{done.stderr}"
        assert "Valid cloud-config" in done.stdout


def test_cloud_init_schema_catches_a_broken_config(evaluate: Evaluate, tmp_path: Path) -> None:
    """The schema check above can fail: a wrong type in the same file is refused."""
    cloud_init = require_tool("cloud-init", "cloud-init")
    user_data = evaluate(peer_count=3)["user_data"]["peer2"]
    broken = user_data.replace('permissions: "0755"', "permissions: [7, 5, 5]", 1)
    assert broken != user_data
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    done = subprocess.run(
        [cloud_init, "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0


@pytest.mark.parametrize("image_source", ["build", "pull"])
def test_shell_parts_pass_shellcheck(evaluate: Evaluate, image_source: str, tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck", "shellcheck")
    variables: dict[str, object] = {"peer_count": 3, "image_source": image_source}
    if image_source == "pull":
        variables["image_registry_prefix"] = "ghcr.io/example/peerfind"
    for peer_id, user_data in evaluate(**variables)["user_data"].items():
        files = written_files(user_data)
        scripts = {p: e for p, e in files.items() if e["content"].startswith("#!")}
        assert set(scripts) == {HOST_SCRIPT}
        assert scripts[HOST_SCRIPT]["permissions"] == "0755"
        # host.env is sourced by the script: check it as shell too (its variables are
        # used by the script that sources it, hence SC2034 "appears unused" is moot).
        parts = {
            "peerfind-host": (scripts[HOST_SCRIPT]["content"], []),
            "host.env": (files["/etc/peerfind/host.env"]["content"], ["--exclude=SC2034"]),
        }
        for name, (text, extra) in parts.items():
            path = tmp_path / f"{peer_id}-{name}"
            path.write_text(text, encoding="utf-8")
            done = subprocess.run(
                [shellcheck, "--severity=style", "--shell=bash", *extra, str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, f"{peer_id} {name}:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize(
    ("variables", "prefix"),
    [
        ({}, "peerfind"),
        ({"image_registry_prefix": "ghcr.io/example/ignored"}, "peerfind"),
        (
            {"image_source": "pull", "image_registry_prefix": "ghcr.io/example/peerfind"},
            "ghcr.io/example/peerfind",
        ),
    ],
    ids=["build", "build-ignores-prefix", "pull"],
)
def test_host_env(
    evaluate: Evaluate, variables: dict[str, object], prefix: str, tmp_path: Path
) -> None:
    """host.env, sourced by bash as peerfind-host does, gives back exactly the inputs."""
    inputs: dict[str, object] = {"peer_count": 2, "git_ref": "v0.1.0", **variables}
    out = evaluate(**inputs)
    for peer_id, user_data in out["user_data"].items():
        path = tmp_path / f"{peer_id}.env"
        path.write_text(written_files(user_data)["/etc/peerfind/host.env"]["content"])
        done = subprocess.run(
            ["bash", "-c", 'set -a; . "$1"; env', "bash", str(path)],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
            check=True,
        )
        env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        assert env["DEPLOY_PEER_ID"] == peer_id
        assert env["DEPLOY_REPO_URL"] == "https://github.com/example/peerfind.git"
        assert env["DEPLOY_GIT_REF"] == "v0.1.0"
        assert env["DEPLOY_IMAGE_SOURCE"] == inputs.get("image_source", "build")
        assert env["DEPLOY_SEED_SAMPLES"] == "true"
        assert env["DEPLOY_GRPC_PORT"] == "50051"
        assert env["PEERFIND_IMAGE_PREFIX"] == prefix
        assert env["PEERFIND_VERSION"] == "0.1.0"


def test_prometheus_targets_label_each_peer(evaluate: Evaluate) -> None:
    out = evaluate(peer_count=3)
    for peer_id, user_data in out["user_data"].items():
        files = written_files(user_data)
        for path, (service, port) in TARGET_FILES.items():
            assert files[path]["permissions"] == "0644"
            assert json.loads(files[path]["content"]) == [
                {"targets": [f"{service}:{port}"], "labels": {"peer": peer_id, "service": service}}
            ]
        assert files[SYSTEMD_UNIT]["content"].startswith("[Unit]")
        assert f"ExecStart={HOST_SCRIPT} start" in files[SYSTEMD_UNIT]["content"]
        assert "WantedBy=multi-user.target" in files[SYSTEMD_UNIT]["content"]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"allowed_cidr": "0.0.0.0/0"}, "allow_public"),
        ({"allowed_cidr": "0.0.0.0/1"}, "allow_public"),
        ({"allowed_cidr": "203.0.113.7/24"}, "host bits zero"),
        ({"allowed_cidr": "not-a-cidr"}, "IPv4 network"),
        ({"allowed_cidr": "2001:db8::/32"}, "IPv4 network"),
        ({"peer_count": 0}, "peer_count"),
        ({"peer_count": 51}, "peer_count"),
        ({"peer_count": 2.5}, "peer_count"),
        ({"vpc_cidr": "11.0.0.0/16"}, "vpc_cidr"),
        ({"vpc_cidr": "10.0.0.0/8"}, "vpc_cidr"),
        ({"image_source": "pull"}, "needs image_registry_prefix"),
        ({"image_source": "docker"}, "image_source"),
        ({"image_version": "latest"}, "image_version"),
        ({"repo_url": "http://github.com/example/peerfind.git"}, "repo_url"),
        ({"repo_url": "https://github.com/x/y;reboot"}, "repo_url"),
        ({"git_ref": "-upload-pack=evil"}, "git_ref"),
        ({"git_ref": "main..dev"}, "git_ref"),
        ({"instance_type": "huge"}, "instance_type"),
        ({"region": "mars-1"}, "region"),
        ({"flow_log_retention_days": 10}, "flow_log_retention_days"),
        ({"root_volume_size_gb": 4}, "root_volume_size_gb"),
        ({"name": "Peer_Find"}, "name"),
    ],
)
def test_validations_refuse(plan: PlanCheck, variables: dict[str, object], message: str) -> None:
    done = plan(**variables)
    assert done.returncode != 0, f"{variables} was accepted"
    text = " ".join((done.stdout + done.stderr).split())
    assert "Invalid value for variable" in text, text
    assert message in text, text


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"allowed_cidr": "0.0.0.0/0", "allow_public": True},
        {"allowed_cidr": "10.0.0.0/8"},
        {"peer_count": 50, "vpc_cidr": "192.168.0.0/23"},
        {"image_source": "pull", "image_registry_prefix": "registry.example.com:5000/team/pf"},
        {"git_ref": "3f2c1a9d8e7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d", "image_version": "0.1.0-rc.1"},
    ],
)
def test_validations_accept(plan: PlanCheck, variables: dict[str, object]) -> None:
    done = plan(**variables)
    assert done.returncode == 0, done.stdout + done.stderr


def test_scaling_up_leaves_existing_hosts_alone(evaluate: Evaluate) -> None:
    """A peer's config depends only on lower-numbered peers: going from 3 to 5 peers adds
    two hosts and changes no user_data (user_data changes replace a host)."""
    three = evaluate(peer_count=3)["user_data"]
    five = evaluate(peer_count=5)["user_data"]
    assert set(five) - set(three) == {"peer4", "peer5"}
    for peer_id, user_data in three.items():
        assert five[peer_id] == user_data, peer_id


def _public(n: int) -> str:
    return f"{TEST_PUBLIC_NET}.{n}"


@pytest.mark.parametrize("count", [3, 5, 11])
def test_outputs_print_urls_and_commands(evaluate: Evaluate, count: int) -> None:
    outputs = evaluate(peer_count=count)["outputs"]
    ids = [f"peer{n}" for n in range(1, count + 1)]
    assert outputs["rest_urls"] == {
        f"peer{n}": f"http://{_public(n)}:8000" for n in range(1, count + 1)
    }
    assert outputs["grpc_addresses"] == {
        f"peer{n}": f"{_public(n)}:50051" for n in range(1, count + 1)
    }
    assert outputs["prometheus_urls"] == {
        f"peer{n}": f"http://{_public(n)}:9090" for n in range(1, count + 1)
    }
    assert outputs["cluster_token"] == TEST_CLUSTER_TOKEN
    for n, peer_id in enumerate(ids, start=1):
        peer = outputs["peers"][peer_id]
        assert peer["private_ip"] == f"10.42.1.{10 + n}"
        expected_friends = [f"http://10.42.1.{10 + n - 1}:8000"] if n >= 2 else []
        if n >= 3:
            expected_friends.append("http://10.42.1.11:8000")
        assert peer["friends"] == expected_friends
        assert f"curl -s http://{_public(n)}:8000/health" in outputs["curl_commands"][peer_id]
        grpcurl = outputs["grpcurl_commands"][peer_id]
        assert f"grpcurl -plaintext {_public(n)}:50051 list" in grpcurl
        # A peer whose deploy/samples folder has helloN.txt gets a download to paste.
        has_sample = (SAMPLES_DIR / peer_id / f"hello{n}.txt").is_file()
        downloads = [c for c in grpcurl if "DummyDownload" in c]
        assert len(downloads) == (1 if has_sample else 0), downloads
        for command in downloads:
            words = shlex.split(command)
            assert json.loads(words[words.index("-d") + 1]) == {"name": f"hello{n}.txt"}
        assert outputs["ssm_sessions"][peer_id].endswith(f"--target i-0standin{n}")
    # The download goes to the farthest peer that has a sample file.
    farthest = max(
        n for n in range(1, len(ids) + 1) if (SAMPLES_DIR / f"peer{n}" / f"hello{n}.txt").is_file()
    )
    assert outputs["peerfind_cli"] == [
        f"peerfind search hello --peer http://{_public(1)}:8000",
        f"peerfind download hello{farthest}.txt --peer http://{_public(1)}:8000",
    ]
    # One block to paste, peers in number order, every line a valid shell command.
    try_it: str = outputs["try_it"]
    headers = [
        line.split(":")[0] for line in try_it.splitlines() if re.match(r"# peer[0-9]+:", line)
    ]
    assert headers == [f"# {peer_id}" for peer_id in ids]
    done = subprocess.run(["bash", "-n"], input=try_it, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_outputs_without_sample_files(evaluate: Evaluate) -> None:
    outputs = evaluate(peer_count=3, seed_sample_files=False)["outputs"]
    assert not any("DummyDownload" in c for cs in outputs["grpcurl_commands"].values() for c in cs)
    assert outputs["peerfind_cli"] == [f"peerfind search hello --peer http://{_public(1)}:8000"]
