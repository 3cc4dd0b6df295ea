"""`make up PEERS=N`: the compose stack rendered for N peers by deploy/compose/render.py.

Each rendering goes through the real Docker Compose CLI (`docker compose config`, no
engine needed), so extends, paths and networks are checked as the engine sees them.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from peerfind_devnet import REPO_ROOT, standard_specs

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
sys.path.insert(0, str(COMPOSE_DIR))

import render  # noqa: E402

COMPOSE_BIN = Path(sys.executable).parent / "docker-compose"
SERVICES = ("directory", "transfer", "indexer")
STACK = [sys.executable, str(REPO_ROOT / "scripts" / "stack.py")]
# Docker's default pools: 172.17-31.0.0/16 and 192.168.0.0/16; Podman's 10.89.0.0/16.
DEFAULT_POOLS = [ipaddress.IPv4Network(n) for n in ("172.16.0.0/12", "192.168.0.0/16")]
DEFAULT_POOLS.append(ipaddress.IPv4Network("10.89.0.0/16"))


def config_of(compose_file: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(compose_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_the_committed_three_peer_files_are_the_template_byte_for_byte() -> None:
    assert render.check() == []
    assert (COMPOSE_DIR / "compose.yaml").read_text() == render.render_compose(3)


@pytest.mark.parametrize("count", [1, 3, 20, 50])
def test_n_peers_render_to_a_valid_stack_with_the_standard_layout(
    tmp_path: Path, count: int
) -> None:
    out = tmp_path / "compose"
    config = config_of(render.write_stack(count, out))
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
