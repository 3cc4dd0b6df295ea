"""Write this pod's peer config: the shared settings plus what the pod's ordinal decides.

    python peer_config.py BASE.json OUT.json

Run by the StatefulSet's first init container (`peer-config`, statefulset.yaml) with the
directory image's Python, before any service starts; the three services then read OUT
(`PEER_CONFIG`). From the pod's name `<set>-<K>` (downward API: POD_NAME, POD_NAMESPACE) and
the headless Service (PEERFIND_K8S_SERVICE, PEERFIND_K8S_CLUSTER_DOMAIN) it sets:

    peer_id           <set>-K
    self_url          http://<set>-K.<service>.<namespace>.svc.<domain>:<rest_port>
    grpc_advertise    <set>-K.<service>.<namespace>.svc.<domain>:<grpc_port>
    transfer_address  127.0.0.1:<grpc_port>      (same pod: the directory checks it there)
    friend_primary    pod K-1's self_url         (none for pod 0)
    friend_backup     pod 0's self_url           (pods 2 and up; pod 1 has only pod 0)

the repository's convention (docs/operations.md, "Adding a peer": peer N's primary is
peer N-1, its backup peer 1). Both friends are earlier pods, so they exist before pod K
starts (OrderedReady) and outlive it when the set is scaled down (highest ordinals go first).
Fields already in BASE other than these are kept; PEERFIND_* variables of a service's
container still override the file, as everywhere. OUT is validated with the services' own
settings model: a bad value stops the pod here with one line naming the field (exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from peerfind.config import load_settings
from peerfind.errors import ConfigError

PROG = "peer-config"


def derive(base: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """The config of the pod named in `environ`: `base` plus the ordinal-derived fields."""
    pod = environ["POD_NAME"]
    namespace = environ["POD_NAMESPACE"]
    service = environ.get("PEERFIND_K8S_SERVICE", "peerfind")
    domain = environ.get("PEERFIND_K8S_CLUSTER_DOMAIN", "cluster.local")
    stateful_set, _, ordinal = pod.rpartition("-")
    if not stateful_set or not ordinal.isdigit():
        raise ConfigError(f"POD_NAME {pod!r} is not <statefulset>-<ordinal>")
    index = int(ordinal)
    rest_port = int(base.get("rest_port", 8000))
    grpc_port = int(base.get("grpc_port", 50051))

    def host(k: int) -> str:
        return f"{stateful_set}-{k}.{service}.{namespace}.svc.{domain}"

    def url(k: int) -> str:
        return f"http://{host(k)}:{rest_port}"

    return {
        **base,
        "peer_id": pod,
        "self_url": url(index),
        "grpc_advertise": f"{host(index)}:{grpc_port}",
        "transfer_address": f"127.0.0.1:{grpc_port}",
        "friend_primary": url(index - 1) if index >= 1 else "",
        "friend_backup": url(0) if index >= 2 else "",
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {PROG} BASE.json OUT.json", file=sys.stderr)
        return 2
    base_path, out_path = Path(argv[0]), Path(argv[1])
    try:
        base = json.loads(base_path.read_text(encoding="utf-8"))
        config = derive(base, dict(os.environ))
        out_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        settings = load_settings(out_path)
    except KeyError as exc:
        print(f"{PROG}: {exc.args[0]} is not set (downward API)", file=sys.stderr)
        return 2
    except (OSError, ValueError, ConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    friends = ", ".join(settings.friends) or "none (the first peer)"
    print(f"{PROG}: {settings.peer_id} at {settings.self_url}; friends: {friends}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
