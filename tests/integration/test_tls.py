"""TLS end to end: HTTPS between peers, gRPC with mutual TLS, the CLI with certificates."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trustme
from helpers import FAST, HOSTS, make_shared

from peerfind_devnet import Devnet, PeerSpec, free_port, wait_for

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "peerfind_cli"]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    server = ca.issue_cert(*HOSTS[:2])
    client = ca.issue_cert("peerfind-client")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "peer.pem",
        "key": tmp_path / "peer.key",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    return files


def test_tls_network_search_and_mtls_download(tmp_path: Path, pki: dict[str, Path]) -> None:
    shared = make_shared(tmp_path, 2)
    tls = {
        **FAST,
        "peer_networks": ["127.0.0.0/8"],
        "tls_cert_file": str(pki["cert"]),
        "tls_key_file": str(pki["key"]),
        "tls_ca_file": str(pki["ca"]),
    }
    specs = []
    for i, host in enumerate(HOSTS[:2]):
        specs.append(
            PeerSpec(
                peer_id=f"peer{i + 1}",
                host=host,
                rest_port=free_port(host),
                grpc_port=free_port(host),
                shared_dir=shared[i],
                state_dir=tmp_path / f"state{i}",
                friend_primary=specs[0].url if i else "",
                extra=dict(tls),
            )
        )
    net = Devnet(tmp_path / "net", specs)
    with net.running():
        entry = specs[0].url
        assert entry.startswith("https://")
        body = httpx.get(
            f"{entry}/search",
            params={"query": "hello"},
            verify=ssl.create_default_context(cafile=pki["ca"]),
            trust_env=False,
        ).json()
        assert {h["peer_id"] for h in body["hits"]} == {"peer1", "peer2"}
        health = httpx.get(
            f"{entry}/health", verify=ssl.create_default_context(cafile=pki["ca"]), trust_env=False
        ).json()
        assert health["transfer"]["serving"] is True  # the directory's own mTLS check

        with pytest.raises(httpx.HTTPError):  # plain HTTP to an HTTPS port
            httpx.get(f"http://{specs[0].host}:{specs[0].rest_port}/health", trust_env=False)

        env = {**os.environ, "PEERFIND_PEER": entry, "PEERFIND_CA_FILE": str(pki["ca"])}
        certs = ["--cert-file", str(pki["client_cert"]), "--key-file", str(pki["client_key"])]
        ok = subprocess.run(
            [*CLI, *certs, "download", "hello2.txt", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["bytes"] == (shared[1] / "hello2.txt").stat().st_size

        # gRPC requires a client certificate signed by the CA: none -> refused, one line
        refused = subprocess.run(
            [*CLI, "download", "hello2.txt"], capture_output=True, text=True, timeout=60, env=env
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith("peerfind:")
        assert "Traceback" not in refused.stderr

        wait_for(lambda: net["peer1"].health()["peers"] == 1, 10, what="peer1 to know peer2")
