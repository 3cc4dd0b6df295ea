"""`python -m sim --quick` writes the results JSON with every figure, and the charts."""

from __future__ import annotations

import json
from pathlib import Path

from sim.__main__ import main
from sim.topology import TOPOLOGIES

REQUIRED = {
    "mode", "peers", "topology", "replication", "churn", "queries", "success_rate",
    "recall", "messages_per_query", "p50_ms", "p99_ms", "max_peer_load", "fanout", "ttl",
    "bytes_per_query", "first_hit_p50_ms", "hops_mean", "p99_peer_load", "duplicate_share",
    "lost_to_deadline_per_query",
}  # fmt: skip


def test_quick_run_writes_every_figure_and_the_charts(tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "latest.json").read_text())
    runs = result["runs"]
    assert runs and all(run.keys() >= REQUIRED for run in runs)
    assert {r["topology"] for r in runs} == set(TOPOLOGIES)
    assert {r["churn"] for r in runs} == {0.0, 0.1, 0.2, 0.3}
    assert {r["replication"] for r in runs} == {0.001, 0.01, 0.1}
    assert any(r["group"] == "grid" for r in runs)
    groups = {r["group"] for r in runs}
    assert {"adaptive", "modes", "load"} <= groups
    assert {r["resolved"]["mode"] for r in runs if r["mode"] == "auto"} == {"walk"}
    assert not any(r["summaries"] for r in runs if r["group"] == "grid")  # the baseline
    from sim.report import tables

    assert "met" in tables(result)["sim-goals"]  # the goals table renders from a run
    assert all(0 <= r["success_rate"] <= 1 and 0 <= r["recall"] <= 1 for r in runs)
    assert {w["topology"] for w in result["worlds"]} == set(TOPOLOGIES)
    overlay = result["overlay"]
    keys = {"peers", "churn", "components", "max_degree", "mean_degree", "mean_path_length",
            "membership_messages_per_peer_s"}  # fmt: skip
    assert overlay and all(keys <= row.keys() for row in overlay)
    assert {row["churn"] for row in overlay} == {0.0, 0.3}
    for chart in ("recall_vs_messages.png", "load.png"):
        assert (tmp_path / chart).read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments_are_one_line_errors(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    with pytest.raises(SystemExit) as info:
        main(["--peers", "ten"])
    assert info.value.code == 2
    assert "comma-separated numbers" in capsys.readouterr().err


def test_docs_scale_shows_the_committed_results() -> None:
    from sim import report

    assert report.main(["--check"]) == 0, "run `python -m sim.report` after `make sim`"
