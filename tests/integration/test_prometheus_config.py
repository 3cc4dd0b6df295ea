"""The monitoring files of deploy/compose: Prometheus configs, alert rules, Grafana.

promtool checks both scrape configs and runs the alert rules' unit tests; the
rest is read with PyYAML and json: the compose and local configs must differ only
in their addresses, every alert must be tested firing and quiet, and every
metric the dashboard and the rules query must be one the services define.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    GRAFANA_DIR,
    METRICS_SERVICES,
    PROMETHEUS_DIR,
    documented_queries,
    load_yaml,
    prometheus_config,
    require_binary,
    scrape_targets,
)
from prometheus_client import REGISTRY

import directory.metrics
import indexer.metrics
import peerfind.metrics
import transfer.metrics
from peerfind_devnet import local_specs

# The compose naming (fixed for the containers issue): service peerN-<service>,
# metrics on these container ports.
COMPOSE_PORTS = {"directory": 8000, "transfer": 9100, "indexer": 9200}
CONFIGS = ["prometheus.yml", "prometheus.local.yml"]
DASHBOARD = GRAFANA_DIR / "dashboards" / "peerfind.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "peerfind.yml"
ALERTS = {
    "PeerfindPeerDown",
    "PeerfindSearchFailureRatioHigh",
    "PeerfindIndexStale",
    "PeerfindTransferErrorRatioHigh",
}
# Imported for what importing them does: register every metric in REGISTRY.
METRICS_MODULES = (directory.metrics, transfer.metrics, indexer.metrics, peerfind.metrics)
# Series Prometheus makes itself for every target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def exposed_metric_names() -> set[str]:
    """Every series name the services can expose: their metrics modules (METRICS_MODULES),
    the default process and Python collectors, and what Prometheus adds (`up`)."""
    names = set(SCRAPE_SERIES)
    for family in REGISTRY.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(0).lower() not in _PROMQL_WORDS:
            names.add(match.group(0))
    return names


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t) for p in board["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    rules = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    return [r for group in rules["groups"] for r in group["rules"] if "alert" in r]


# -- promtool -------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_promtool_check_config(name: str) -> None:
    result = promtool("check", "config", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_check_config_of_the_integration_tests_generated_config(
    tmp_path: Path,
) -> None:
    targets = {
        (f"peer{i}", service): f"127.0.0.{i + 1}:{9000 + i}"
        for i in (1, 2, 3)
        for service in METRICS_SERVICES
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(targets)))  # JSON is YAML
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_when_a_threshold_drifts(tmp_path: Path) -> None:
    """The unit tests pin the thresholds: a rule file with another one fails them."""
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert rules.count("> 300") == 1
    (tmp_path / "alerts.yml").write_text(rules.replace("> 300", "> 900"))
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    assert "PeerfindIndexStale" in result.stdout + result.stderr


# -- the configs' structure -------------------------------------------------------


def test_every_alert_is_tested_firing_and_quiet() -> None:
    assert {r["alert"] for r in alert_rules()} == ALERTS
    tests = load_yaml(PROMETHEUS_DIR / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    cases = [c for t in tests["tests"] for c in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert firing == ALERTS, f"never tested firing: {ALERTS - firing}"
    assert quiet == ALERTS, f"never tested quiet: {ALERTS - quiet}"


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert "for" in rule, rule["alert"]


def test_compose_targets_follow_the_compose_service_names() -> None:
    targets = scrape_targets(load_yaml(PROMETHEUS_DIR / "prometheus.yml"))
    assert targets == {
        (f"peer{i}", s): f"peer{i}-{s}:{COMPOSE_PORTS[s]}"
        for i in (1, 2, 3)
        for s in METRICS_SERVICES
    }


def test_local_targets_are_the_addresses_of_make_up(tmp_path: Path) -> None:
    targets = scrape_targets(load_yaml(PROMETHEUS_DIR / "prometheus.local.yml"))
    expected = {}
    for spec in local_specs(tmp_path):
        expected[(spec.peer_id, "directory")] = f"{spec.host}:{spec.rest_port}"
        for service in ("transfer", "indexer"):
            expected[(spec.peer_id, service)] = (
                f"{spec.host}:{spec.extra[f'{service}_metrics_port']}"
            )
    assert targets == expected


def test_compose_and_local_configs_differ_only_in_addresses() -> None:
    def without_addresses(config: dict[str, Any]) -> dict[str, Any]:
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = ["..."]
        return config

    compose = without_addresses(load_yaml(PROMETHEUS_DIR / "prometheus.yml"))
    local = without_addresses(load_yaml(PROMETHEUS_DIR / "prometheus.local.yml"))
    assert compose == local
    assert compose["rule_files"] == ["alerts.yml"]
    for job in compose["scrape_configs"]:
        services = {s["labels"]["service"] for s in job["static_configs"]}
        assert job["job_name"] == f"peerfind-{services.pop()}" and not services
        assert job["metric_relabel_configs"] == [
            {"action": "labeldrop", "regex": "exported_(peer|service)"}
        ]


# -- PromQL against the metrics the services define ---------------------------------


def test_promql_metric_names_extracts_only_metric_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(foo_bucket{role="entry", peer=~"$peer"}'
        "[$__rate_interval]))) / on (peer) group_left (x) bar_total offset 5m > 1e3 "
        "and time() - baz"
    )
    assert promql_metric_names(expr) == {"foo_bucket", "bar_total", "baz"}


def test_dashboard_queries_only_metrics_the_services_expose() -> None:
    exposed = exposed_metric_names()
    used: set[str] = set()
    for title, target in dashboard_targets():
        names = promql_metric_names(target["expr"])
        assert names, f"{title}: no metric in {target['expr']}"
        assert names <= exposed, f"{title}: unknown metrics {names - exposed}"
        used |= names
    # what issue 5 asks the dashboard to show
    assert {
        "up",
        "peerfind_directory_searches_received_total",
        "peerfind_directory_search_duration_seconds_bucket",
        "peerfind_transfer_bytes_sent_total",
        "peerfind_indexer_files",
        "peerfind_indexer_bytes",
    } <= used


def test_alert_rules_query_only_metrics_the_services_expose() -> None:
    exposed = exposed_metric_names()
    for rule in alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names and names <= exposed, f"{rule['alert']}: {names - exposed}"


def test_dashboard_has_p50_p95_p99_of_the_search_latency() -> None:
    exprs = [t["expr"] for _, t in dashboard_targets()]
    for q in ("0.5", "0.95", "0.99"):
        assert any(
            e.startswith(f"histogram_quantile({q},") and "search_duration_seconds_bucket" in e
            for e in exprs
        ), q


# -- Grafana --------------------------------------------------------------------------


def test_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    datasource = load_yaml(DATASOURCES)["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    assert "id" not in board or board["id"] is None  # provisioning assigns it
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["peer"]["datasource"]["uid"] == datasource["uid"]
    assert variables["peer"]["definition"] == "label_values(peerfind_build_info, peer)"


def test_dashboard_provider_loads_the_dashboards_folder() -> None:
    providers = load_yaml(DASHBOARD_PROVIDERS)
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_transfer_metric_labels_are_the_servicers_methods() -> None:
    from transfer import servicer

    assert (servicer.FILE_DOWNLOAD, servicer.DOWNLOAD, servicer.UPLOAD) == transfer.metrics.METHODS


def test_the_five_documented_queries_use_exposed_metrics() -> None:
    queries = documented_queries()
    assert len(queries) == 5
    exposed = exposed_metric_names()
    for expr in queries:
        names = promql_metric_names(expr)
        assert names and names <= exposed, f"{expr}: {names - exposed}"
