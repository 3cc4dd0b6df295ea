"""The PNG written beside latest.json: transfer curves and every aim's margin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench.core import Result

__all__ = ["draw"]


def _curve(ax: Any, result: Result | None, raw: Result | None, title: str) -> None:
    ax.set_title(title, fontsize=10)
    if result is None or "curve_mb_s" not in result.context:
        ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    curve: dict[str, dict[str, float]] = result.context["curve_mb_s"]
    sizes = sorted(int(k) for k in curve)
    kib = [s / 1024 for s in sizes]
    ax.plot(kib, [curve[str(s)]["peer"] for s in sizes], "o-", label="peer (same bare client)")
    ax.plot(kib, [curve[str(s)]["bare"] for s in sizes], "s--", label="(a) bare grpc.aio")
    if raw is not None and raw.baseline_value:
        ax.axhline(raw.baseline_value, color="grey", linestyle=":", label="(b) raw socket, 1 MiB")
    ax.set_xscale("log", base=2)
    ax.set_xticks(kib)
    ax.set_xticklabels([f"{k:g}" if k < 1024 else f"{k / 1024:g}M" for k in kib], fontsize=8)
    ax.set_xlabel("chunk size (KiB)")
    ax.set_ylabel("MB/s (best of runs)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def _margins(ax: Any, results: list[Result]) -> None:
    ax.set_title("margin against each aim (>= 1: met; context figures are not drawn)", fontsize=10)
    results = [r for r in results if r.met is not None]
    names = [r.name for r in results][::-1]
    margins = [max(min(r.margin, 1000.0), 1e-3) for r in results][::-1]
    colors = ["tab:green" if r.met else "tab:red" for r in results][::-1]
    ax.barh(names, margins, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.tick_params(axis="y", labelsize=8)
    for y, (margin, r) in enumerate(zip(margins, results[::-1], strict=True)):
        ratio = "" if r.ratio is None else f"  {r.ratio:.3g}x"
        ax.text(margin, y, f" {r.aim}{ratio}", va="center", fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)


def draw(results: list[Result], path: Path, title: str) -> None:
    by_name = {r.name: r for r in results}
    fig = plt.figure(figsize=(13, 9), constrained_layout=True)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.2])
    _curve(
        fig.add_subplot(grid[0, 0]),
        by_name.get("download.vs_bare_grpc"),
        by_name.get("download.vs_raw_socket"),
        "DummyDownload throughput by chunk size",
    )
    _curve(
        fig.add_subplot(grid[0, 1]),
        by_name.get("upload.vs_bare_grpc"),
        by_name.get("upload.vs_raw_socket"),
        "DummyUpload throughput by chunk size",
    )
    _margins(fig.add_subplot(grid[1, :]), results)
    fig.suptitle(title)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)
