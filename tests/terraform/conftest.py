"""Fixtures of tests/terraform (the helpers are in tfkit.py, beside this file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# tfkit sits beside this file; the tests import it by name (like tests/integration's helpers).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tfkit import (
    EVAL_FILES,
    EVAL_FIXTURE,
    MODULE_DIR,
    MODULE_OUTPUTS,
    REQUIRED_VARS,
    SAMPLES_DIR,
    TF_DIR,
    Evaluate,
    PlanCheck,
    blocks,
    load_hcl,
    standin_outputs,
    terraform,
    var_args,
)


@pytest.fixture(scope="session")
def root_tf() -> dict[str, dict[str, Any]]:
    """Every .tf file of the root module, parsed: {file name: parsed}."""
    return {path.name: load_hcl(path) for path in sorted(TF_DIR.glob("*.tf"))}


@pytest.fixture(scope="session")
def module_tf() -> dict[str, dict[str, Any]]:
    return {path.name: load_hcl(path) for path in sorted(MODULE_DIR.glob("*.tf"))}


@pytest.fixture(scope="session")
def root_resources(root_tf: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for parsed in root_tf.values():
        found.update(blocks(parsed, "resource"))
    return found


@pytest.fixture(scope="session")
def eval_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root module made of the real variables.tf, peers.tf, modules/peers and
    outputs.tf (provider-made values stood in for, tfkit.EVAL_FIXTURE), laid out as in
    the repository (outputs.tf looks for deploy/samples); `terraform init` done."""
    repo = tmp_path_factory.mktemp("tf-eval")
    root = repo / "deploy" / "aws" / "terraform"
    root.mkdir(parents=True)
    shutil.copytree(SAMPLES_DIR, repo / "deploy" / "samples")
    for name in EVAL_FILES:
        shutil.copy2(TF_DIR / name, root / name)
    shutil.copytree(TF_DIR / "modules", root / "modules")
    outputs = standin_outputs((TF_DIR / "outputs.tf").read_text(encoding="utf-8"))
    (root / "outputs.tf").write_text(outputs, encoding="utf-8")
    (root / "eval_fixture.tf").write_text(EVAL_FIXTURE, encoding="utf-8")
    done = terraform("init", "-input=false", "-no-color", "-backend=false", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture(scope="session")
def evaluate(eval_root: Path) -> Evaluate:
    """evaluate(peer_count=5, ...) -> what `terraform apply` computes: the peers module's
    outputs ({name: value}) and, under "outputs", the root module's outputs.
    REQUIRED_VARS fill in what is not given. Cached per input."""
    cache: dict[str, dict[str, Any]] = {}

    def run(**variables: object) -> dict[str, Any]:
        merged = {**REQUIRED_VARS, **variables}
        key = json.dumps(merged, sort_keys=True)
        if key not in cache:
            state = eval_root / f"state-{len(cache)}.tfstate"
            done = terraform(
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                f"-state={state}",
                *var_args(merged),
                cwd=eval_root,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            out = terraform("output", "-json", f"-state={state}", cwd=eval_root)
            assert out.returncode == 0, out.stderr
            values = {name: item["value"] for name, item in json.loads(out.stdout).items()}
            result = {name: values.pop(f"module__{name}") for name in MODULE_OUTPUTS}
            result["outputs"] = values
            cache[key] = result
        return cache[key]

    return run


@pytest.fixture(scope="session")
def plan(eval_root: Path) -> PlanCheck:
    """plan(**variables) -> the finished `terraform plan` (validations run for real)."""

    def run(**variables: object) -> subprocess.CompletedProcess[str]:
        merged = {**REQUIRED_VARS, **variables}
        return terraform(
            "plan", "-input=false", "-no-color", "-refresh=false", *var_args(merged), cwd=eval_root
        )

    return run


@pytest.fixture
def clean_peerfind_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PEERFIND_* or PEER_CONFIG variable of the caller leaks into the config loader."""
    for name in list(os.environ):
        if name.startswith("PEERFIND_") or name == "PEER_CONFIG":
            monkeypatch.delenv(name)
