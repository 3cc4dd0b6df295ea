"""checkov's Kubernetes checks pass on every rendered kustomization: zero failures, and
every skip is one of the annotations in the manifest, with its reason.

The command comes from deploy/aws/tf.mk's pin (`make k8s-check` passes it as
PEERFIND_CHECKOV; by hand the same pin is read from that file)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev group
from k8skit import ROOT, Manifest

pytestmark = pytest.mark.timeout(600)

# Checks the manifests must pass, by what docs/kubernetes.md promises.
MUST_PASS = {
    "CKV_K8S_8",  # liveness probes
    "CKV_K8S_9",  # readiness probes
    "CKV_K8S_10",  # CPU requests
    "CKV_K8S_11",  # CPU limits
    "CKV_K8S_12",  # memory requests
    "CKV_K8S_13",  # memory limits
    "CKV_K8S_20",  # allowPrivilegeEscalation false
    "CKV_K8S_22",  # read-only root file system
    "CKV_K8S_23",  # no root containers
    "CKV_K8S_28",  # NET_RAW dropped
    "CKV_K8S_31",  # seccomp RuntimeDefault
    "CKV_K8S_37",  # capabilities dropped
    "CKV_K8S_38",  # service account token not mounted
    "CKV_K8S_40",  # high UID
}
SKIPPED = {"CKV_K8S_15", "CKV_K8S_43"}  # the annotations in statefulset.yaml


def checkov_command() -> list[str]:
    configured = os.environ.get("PEERFIND_CHECKOV")
    if configured:
        return shlex.split(configured)
    pin = re.search(r"^CHECKOV_VERSION \?= (\S+)$", (ROOT / "deploy/aws/tf.mk").read_text(), re.M)
    assert pin, "deploy/aws/tf.mk pins CHECKOV_VERSION"
    # The Makefile's $(UV): python3 -m uv (the venv has no uv of its own).
    return ["python3", "-m", "uv", "tool", "run", "--from", f"checkov=={pin[1]}", "checkov"]


def test_checkov_passes_on_the_rendered_manifests(
    tmp_path: Path, rendered: tuple[str, list[Manifest]]
) -> None:
    name, docs = rendered
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [
            *checkov_command(),
            "--file",
            str(manifest),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.stdout.strip().startswith("{"), result.stderr[-2000:]
    report = json.loads(result.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == [], failed
    assert result.returncode == 0
    passed = {c["check_id"] for c in results["passed_checks"]}
    assert passed >= MUST_PASS, MUST_PASS - passed
    skipped = {c["check_id"]: c for c in results["skipped_checks"]}
    assert set(skipped) == SKIPPED
    for check in skipped.values():
        assert len(check["check_result"]["suppress_comment"].split()) >= 8, check["check_id"]
