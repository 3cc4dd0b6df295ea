"""The .tf files as written: formatting, layout, and the security settings the issue
asks for, read with python-hcl2 (no provider needed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from tfkit import (
    AWS_DIR,
    MODULE_DIR,
    TF_DIR,
    blocks,
    load_hcl,
    named_blocks,
    terraform,
    unquote,
)

ROOT_FILES = {
    "versions.tf",
    "variables.tf",
    "main.tf",
    "peers.tf",
    "network.tf",
    "compute.tf",
    "outputs.tf",
}
# Ports the security group opens, and to whom.
PEER_SG = "aws_security_group.peer.id"
ALLOWED = "var.allowed_cidr"
EXPECTED_INGRESS = {
    ("module.peers.ports.rest", PEER_SG),
    ("module.peers.ports.grpc", PEER_SG),
    ("module.peers.ports.rest", ALLOWED),
    ("module.peers.ports.grpc", ALLOWED),
    ("module.peers.ports.prometheus", ALLOWED),
}
EXPECTED_EGRESS = {
    ("module.peers.ports.rest", PEER_SG),
    ("module.peers.ports.grpc", PEER_SG),
    (443, "0.0.0.0/0"),
    (80, "0.0.0.0/0"),
}


def test_terraform_fmt_is_clean(tmp_path: Path) -> None:
    done = terraform("fmt", "-check", "-diff", "-recursive", "-no-color", ".", cwd=TF_DIR)
    assert done.returncode == 0, f"terraform fmt would change:\n{done.stdout}{done.stderr}"
    # fmt skips *.example: check the example under a name it reads.
    shutil.copy2(TF_DIR / "terraform.tfvars.example", tmp_path / "example.tfvars")
    done = terraform("fmt", "-check", "-diff", "-no-color", "example.tfvars", cwd=tmp_path)
    assert done.returncode == 0, f"terraform fmt would change:\n{done.stdout}{done.stderr}"


def test_split_by_file(root_tf: dict[str, dict[str, Any]]) -> None:
    assert set(root_tf) == ROOT_FILES
    for extra in ("terraform.tfvars.example", "README.md", ".gitignore"):
        assert (TF_DIR / extra).is_file(), extra
    # No resources hiding in the wrong file.
    assert not blocks(root_tf["variables.tf"], "resource")
    assert not blocks(root_tf["outputs.tf"], "resource")
    assert {k.split(".")[0] for k in blocks(root_tf["compute.tf"], "resource")} >= {
        "aws_instance",
        "aws_iam_role",
        "aws_iam_instance_profile",
    }


def test_versions_pin_terraform_and_providers(root_tf: dict[str, dict[str, Any]]) -> None:
    (settings,) = root_tf["versions.tf"]["terraform"]
    assert unquote(settings["required_version"]) == ">= 1.9.0"
    (providers,) = settings["required_providers"]
    assert unquote(providers["aws"]["source"]) == "hashicorp/aws"
    assert unquote(providers["random"]["source"]) == "hashicorp/random"
    for name in ("aws", "random"):
        assert "<" in providers[name]["version"], f"{name}: give the provider an upper bound"


@pytest.mark.parametrize("directory", [TF_DIR, MODULE_DIR], ids=["root", "module"])
def test_every_variable_is_typed_described_and_validated(directory: Path) -> None:
    variables = named_blocks(load_hcl(directory / "variables.tf"), "variable")
    assert variables
    for name, body in variables.items():
        assert "type" in body, f"variable {name} has no type"
        assert len(unquote(body.get("description", ""))) >= 20, f"variable {name}: describe it"
        if unquote(body["type"]) != "bool":
            assert body.get("validation"), f"variable {name} has no validation"
        for validation in body.get("validation", []):
            assert unquote(validation["error_message"]).endswith("."), name


def test_required_variables_and_defaults() -> None:
    variables = named_blocks(load_hcl(TF_DIR / "variables.tf"), "variable")
    required = {name for name, body in variables.items() if "default" not in body}
    assert required == {"allowed_cidr", "repo_url"}
    assert variables["peer_count"]["default"] == 3
    assert variables["allow_public"]["default"] is False
    assert unquote(variables["instance_type"]["default"]) == "t3.small"
    # No default opens anything to the internet.
    for name, body in variables.items():
        assert "0.0.0.0/0" not in str(body.get("default", "")), name


@pytest.mark.parametrize("directory", [TF_DIR, MODULE_DIR], ids=["root", "module"])
def test_every_output_is_described(directory: Path) -> None:
    outputs = named_blocks(load_hcl(directory / "outputs.tf"), "output")
    assert outputs
    for name, body in outputs.items():
        assert len(unquote(body.get("description", ""))) >= 20, f"output {name}: describe it"


def test_outputs_give_urls_and_commands() -> None:
    outputs = named_blocks(load_hcl(TF_DIR / "outputs.tf"), "output")
    assert {
        "peers",
        "rest_urls",
        "grpc_addresses",
        "prometheus_urls",
        "curl_commands",
        "grpcurl_commands",
    } <= set(outputs)
    assert outputs["cluster_token"]["sensitive"] is True


def test_instances(root_resources: dict[str, dict[str, Any]]) -> None:
    instance = root_resources["aws_instance.peer"]
    # One per peer of the module, keyed by peer id, each at its fixed private address.
    assert instance["for_each"] == "${module.peers.peers}"
    assert instance["private_ip"] == "${each.value.private_ip}"
    assert instance["user_data"] == "${module.peers.user_data[each.key]}"
    assert instance["user_data_replace_on_change"] is True
    assert instance["instance_type"] == "${var.instance_type}"
    assert instance["ami"] == "${data.aws_ami.ubuntu.id}"
    assert instance["monitoring"] is True
    assert "key_name" not in instance, "no SSH key: Session Manager through the instance role"
    assert instance["iam_instance_profile"] == "${aws_iam_instance_profile.peer.name}"
    (metadata,) = instance["metadata_options"]
    assert unquote(metadata["http_tokens"]) == "required"
    assert metadata["http_put_response_hop_limit"] == 1
    assert unquote(metadata["http_endpoint"]) == "enabled"
    (root,) = instance["root_block_device"]
    assert root["encrypted"] is True
    assert root["delete_on_termination"] is True
    # No other disk, launch template or instance resource that could escape these checks.
    kinds = {key.split(".")[0] for key in root_resources}
    assert not kinds & {"aws_ebs_volume", "aws_launch_template", "aws_spot_instance_request"}
    assert [k for k in root_resources if k.startswith("aws_instance.")] == ["aws_instance.peer"]


def test_ami_is_a_current_ubuntu_lts(root_tf: dict[str, dict[str, Any]]) -> None:
    ami = blocks(root_tf["main.tf"], "data")["aws_ami.ubuntu"]
    assert ami["most_recent"] is True
    assert ami["owners"] == ["099720109477"]
    names = [f["values"] for f in ami["filter"] if unquote(f["name"]) == "name"]
    assert names
    assert "ubuntu-noble-24.04" in names[0][0]


def test_instance_role_is_ssm_only(root_resources: dict[str, dict[str, Any]]) -> None:
    attachments = [
        v for k, v in root_resources.items() if k.startswith("aws_iam_role_policy_attachment.")
    ]
    assert len(attachments) == 1
    assert attachments[0]["role"] == "${aws_iam_role.peer.name}"
    assert attachments[0]["policy_arn"].endswith("policy/AmazonSSMManagedInstanceCore")
    inline = [v for k, v in root_resources.items() if k.startswith("aws_iam_role_policy.")]
    assert all(v["role"] != "${aws_iam_role.peer.id}" for v in inline)


def _rules(resources: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if k.startswith(f"{kind}.")}


def _source(rule: dict[str, Any]) -> Any:
    if "referenced_security_group_id" in rule:
        return unquote(rule["referenced_security_group_id"])
    return unquote(rule["cidr_ipv4"])


def test_security_group_ingress_is_least_privilege(
    root_resources: dict[str, dict[str, Any]],
) -> None:
    group = root_resources["aws_security_group.peer"]
    assert "ingress" not in group
    assert "egress" not in group
    assert unquote(group["description"])
    rules = _rules(root_resources, "aws_vpc_security_group_ingress_rule")
    assert not _rules(root_resources, "aws_security_group_rule")
    found = set()
    for name, rule in rules.items():
        assert rule["security_group_id"] == f"${{{PEER_SG}}}", name
        assert len(unquote(rule.get("description", ""))) >= 10, f"{name} has no description"
        assert unquote(rule["ip_protocol"]) == "tcp", name
        assert rule["from_port"] == rule["to_port"], name
        source = _source(rule)
        assert source in (PEER_SG, ALLOWED), f"{name}: ingress from {source}"
        assert "cidr_ipv6" not in rule
        assert "prefix_list_id" not in rule
        found.add((unquote(rule["from_port"]), source))
    assert found == EXPECTED_INGRESS


def test_security_group_egress_is_documented(root_resources: dict[str, dict[str, Any]]) -> None:
    rules = _rules(root_resources, "aws_vpc_security_group_egress_rule")
    found = set()
    for name, rule in rules.items():
        assert len(unquote(rule.get("description", ""))) >= 10, f"{name} has no description"
        assert unquote(rule["ip_protocol"]) == "tcp", f"{name}: no all-protocol egress"
        found.add((unquote(rule["from_port"]), _source(rule)))
    assert found == EXPECTED_EGRESS


def test_network_is_its_own(root_resources: dict[str, dict[str, Any]]) -> None:
    vpc = root_resources["aws_vpc.main"]
    assert vpc["cidr_block"] == "${var.vpc_cidr}"
    subnet = root_resources["aws_subnet.public"]
    assert subnet["cidr_block"] == "${module.peers.subnet_cidr}"
    assert subnet["map_public_ip_on_launch"] is False
    route = root_resources["aws_route.internet"]
    assert unquote(route["destination_cidr_block"]) == "0.0.0.0/0"
    assert route["gateway_id"] == "${aws_internet_gateway.main.id}"
    assert "aws_route_table_association.public" in root_resources
    default_group = root_resources["aws_default_security_group.default"]
    assert "ingress" not in default_group
    assert "egress" not in default_group
    flow_log = root_resources["aws_flow_log.main"]
    assert unquote(flow_log["traffic_type"]) == "ALL"
    assert flow_log["vpc_id"] == "${aws_vpc.main.id}"


def test_module_call_passes_the_variables(root_tf: dict[str, dict[str, Any]]) -> None:
    module = named_blocks(root_tf["peers.tf"], "module")["peers"]
    assert unquote(module["source"]) == "./modules/peers"
    for name in ("peer_count", "vpc_cidr", "repo_url", "git_ref", "image_source", "image_version"):
        assert module[name] == f"${{var.{name}}}", name
    assert module["cluster_token"] == "${local.cluster_token}"
    module_inputs = named_blocks(load_hcl(MODULE_DIR / "variables.tf"), "variable")
    assert set(module) - {"source"} == set(module_inputs)


def test_checkov_skips_carry_reasons() -> None:
    skips = []
    for path in sorted(TF_DIR.rglob("*.tf")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "checkov:skip" in line:
                match = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+): (\S.{30,})", line)
                assert match, f"{path.name}: a skip needs an id and a reason: {line.strip()}"
                skips.append(match.group(1))
    assert sorted(skips) == ["CKV_AWS_158", "CKV_AWS_88"]


def test_tfvars_example_sets_known_variables() -> None:
    example = load_hcl(TF_DIR / "terraform.tfvars.example")
    variables = named_blocks(load_hcl(TF_DIR / "variables.tf"), "variable")
    assert set(example) <= set(variables)
    assert {"allowed_cidr", "repo_url"} <= set(example)
    assert example["allowed_cidr"] != "0.0.0.0/0"


def test_no_placeholders_left() -> None:
    for path in sorted(AWS_DIR.rglob("*")):
        if path.is_file() and ".terraform" not in path.parts:
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"\b(TODO|FIXME|XXX)\b", text), path
