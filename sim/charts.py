"""The charts of a run set: recall against messages, and the per-peer load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["draw"]


def draw(result: dict[str, Any], loads: dict[str, list[int]], out: Path) -> None:
    _recall_vs_messages(result["runs"], out / "recall_vs_messages.png")
    _load(loads, out / "load.png")


def _recall_vs_messages(runs: list[dict[str, Any]], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    series: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        if run["replication"] != 0.01 or run["churn"] or run["popularity"] != "uniform":
            continue
        if run["group"] == "load":
            continue
        mode = run.get("resolved", {}).get("mode", run.get("mode", "flood"))
        if run["group"] in ("adaptive", "modes"):
            mode = f"{run['mode']} ({mode}), want {run['wanted'] or 'default'}"
        elif not run.get("summaries", True):
            mode = "flood before summaries"
        key = (mode, run["peers"], run["topology"])
        series.setdefault(key, []).append(run)
    for (mode, peers, topology), points in sorted(series.items()):
        points.sort(key=lambda r: r["messages_per_query"])
        label = f"{mode}, {topology}, {peers:,} peers"
        xs = [r["messages_per_query"] for r in points]
        style = "none" if len(points) > 1 else "-"  # a grid is a cloud of points, not a line
        for axis, metric in ((left, "recall"), (right, "success_rate")):
            axis.plot(xs, [r[metric] for r in points], marker="o", linestyle=style, label=label)
        if len(points) > 1:
            for r in points:
                right.annotate(
                    f"f{r['fanout']}t{r['ttl']}",
                    (r["messages_per_query"], r["success_rate"]),
                    fontsize=7,
                    xytext=(3, -8),
                    textcoords="offset points",
                )
    for axis, title in ((left, "recall (share of copies found)"), (right, "success (>= 1 hit)")):
        axis.set_xscale("log")
        axis.set_xlabel("messages per query (forwards + answers)")
        axis.set_title(f"{title}, file on 1% of peers")
        axis.set_ylim(0, 1.02)
        axis.grid(True, alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load(loads: dict[str, list[int]], path: Path) -> None:
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for label, values in sorted(loads.items()):
        ordered = sorted(values, reverse=True)
        axis.plot(range(1, len(ordered) + 1), [max(v, 0.5) for v in ordered], label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("peers, busiest first")
    axis.set_ylabel("messages handled in the run")
    axis.set_title("per-peer load, default flood (fanout 2, ttl 3), 1,000 queries")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
