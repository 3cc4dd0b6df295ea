"""Three real peers scraped by a real Prometheus server (Debian package `prometheus`).

The server runs with deploy/compose/prometheus/prometheus.local.yml rewritten to
this network's free ports, a 1 s scrape and evaluation interval and the real
alerts.yml. Every assertion goes through Prometheus' HTTP API: targets and their
labels, counters moving by exactly what the test did, the alert rules evaluating,
and every query of the Grafana dashboard returning data.

The network is private to this module and nothing but the tests searches it or
transfers from it, so search and transfer counters move only by what a test does.
Rescans are off (once an hour) so the indexer's scan count is exactly the first scan.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from helpers import (
    GRAFANA_DIR,
    METRICS_SERVICES,
    PROMETHEUS_DIR,
    Prometheus,
    add_metrics_ports,
    build_specs,
    documented_queries,
    get,
    load_yaml,
    metrics_targets,
    prometheus_config,
    require_binary,
)

from peerfind import __version__
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from peerfind_devnet import Devnet, wait_for

pytestmark = pytest.mark.integration
PEERS = ["peer1", "peer2", "peer3"]
CHUNK = 1024 * 1024  # the transfer service's default chunk size
# Deadline for Prometheus to show a change: a few 1 s scrapes.
SEEN_S = 20.0


@dataclass
class Stack:
    net: Devnet
    prom: Prometheus
    started_at: float


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binary("prometheus")
    root = tmp_path_factory.mktemp("observability")
    started_at = time.time()
    specs = add_metrics_ports(build_specs(root, rescan_interval_s=3600.0))
    # one entry the indexer must skip, counted by peerfind_indexer_skipped_total
    os.symlink(root / "no-such-target", specs[0].shared_dir / "dangling-link.txt")
    net = Devnet(root, specs)
    with net.running():
        prom = Prometheus(root / "prometheus", prometheus_config(metrics_targets(specs)))
        try:
            prom.start()
            wait_for(
                lambda: prom.scalar('sum(up{job=~"peerfind-.+"})') == 9,
                SEEN_S,
                what="prometheus to scrape all 9 targets successfully",
            )
            yield Stack(net, prom, started_at)
        finally:
            prom.stop()


# -- helpers -----------------------------------------------------------------------


def search(stack: Stack, peer: str, **params: object) -> Any:
    return get(f"{stack.net[peer].spec.url}/search", **params)


async def _download(address: str, name: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = transfer_pb2_grpc.FileTransferStub(channel)
        return sum(
            [len(c.data) async for c in stub.DummyDownload(transfer_pb2.FileRequest(name=name))]
        )


def download(stack: Stack, peer: str, name: str) -> int:
    return asyncio.run(_download(stack.net[peer].spec.grpc_address, name))


def upload(stack: Stack, peer: str, payload: bytes) -> transfer_pb2.UploadStatus:
    async def run() -> transfer_pb2.UploadStatus:
        async with grpc.aio.insecure_channel(stack.net[peer].spec.grpc_address) as channel:
            stub = transfer_pb2_grpc.FileTransferStub(channel)

            async def chunks():  # type: ignore[no-untyped-def]
                for off in range(0, len(payload), CHUNK):
                    yield transfer_pb2.FileChunk(data=payload[off : off + CHUNK], offset=off)

            return await stub.DummyUpload(chunks())

    return asyncio.run(run())


def assert_moves(stack: Stack, action: Callable[[], None], expected: dict[str, float]) -> None:
    """Run `action`; every query in `expected` (one series, `sum(...)`) must move by exactly
    its value, as Prometheus sees it, and stay there one scrape later."""
    prom = stack.prom
    prom.wait_scraped_after(time.time())  # so the baseline is what the processes hold now
    before = {expr: prom.scalar(expr) for expr in expected}
    action()
    want = {expr: before[expr] + delta for expr, delta in expected.items()}

    def mismatches() -> dict[str, tuple[float, float]]:
        got = {expr: prom.scalar(expr) for expr in expected}
        return {e: (got[e] - before[e], want[e] - before[e]) for e in want if got[e] != want[e]}

    try:
        wait_for(lambda: not mismatches(), SEEN_S, step_s=0.2, what="the counters to move")
    except TimeoutError:
        lines = [f"{e}: moved by {g:g}, expected {w:g}" for e, (g, w) in mismatches().items()]
        raise AssertionError("\n".join(["counters did not move as expected:", *lines])) from None
    prom.wait_scraped_after(time.time())
    assert not mismatches(), "a counter moved further one scrape later"


def files_of(shared: Path) -> tuple[int, int]:
    """(files, bytes) the indexer should hold for a folder: regular files, no symlinks."""
    found = [p for p in shared.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(found), sum(p.stat().st_size for p in found)


# -- targets -------------------------------------------------------------------------


def test_every_service_of_every_peer_is_up_with_peer_and_service_labels(stack: Stack) -> None:
    up = stack.prom.query('up{job=~"peerfind-.+"}')
    got = {(s["metric"]["peer"], s["metric"]["service"]): s["value"][1] for s in up}
    assert got == {(p, s): "1" for p in PEERS for s in METRICS_SERVICES}
    for series in up:
        assert series["metric"]["job"] == f"peerfind-{series['metric']['service']}"
    targets = stack.prom.api("targets", state="active")["activeTargets"]
    assert len(targets) == 9
    assert all(t["health"] == "up" and not t["lastError"] for t in targets), targets


def test_every_process_exports_build_info_and_the_default_collectors(stack: Stack) -> None:
    every = {(p, s) for p in PEERS for s in METRICS_SERVICES}
    info = stack.prom.query("peerfind_build_info")
    assert {(s["metric"]["peer"], s["metric"]["service"]) for s in info} == every
    for series in info:
        assert series["metric"]["version"] == __version__
        assert series["value"][1] == "1"
        assert not {"exported_peer", "exported_service"} & series["metric"].keys()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        found = stack.prom.query(name)
        assert {(s["metric"]["peer"], s["metric"]["service"]) for s in found} == every, name


# -- counters moving by what the test did --------------------------------------------


def wait_for_summaries(stack: Stack) -> None:
    """Until peer1 holds peer2's routing summary (peer2 has no hello3: a one-hop query
    for it skips peer2)."""

    def ruled_out() -> bool:
        body = search(stack, "peer1", query="hello3", mode="flood", ttl=1, explain=True)
        skipped = body["trace"]["skipped"]
        return {"peer_id": "peer2", "reason": "summary_miss"} in skipped

    wait_for(ruled_out, SEEN_S, step_s=0.5, what="peer1 to hold peer2's summary")


def test_search_counters_of_one_hop_pruned_by_summaries(stack: Stack) -> None:
    """A flood with ttl=1: peer1 asks only peer3, whose routing summary says it may hold
    hello3 (peer2's rules it out); peer3 answers without forwarding further."""
    n = 4
    searches = 'peerfind_directory_searches_received_total{peer="%s", role="%s"}'
    answered = 'peerfind_directory_searches_answered_total{peer="%s", role="%s", outcome="%s"}'
    messages = 'peerfind_directory_search_messages_%s{peer="peer1", mode="flood"}'
    wait_for_summaries(stack)

    def act() -> None:
        for _ in range(n):
            body = search(stack, "peer1", query="hello3", mode="flood", fanout=2, ttl=1)
            assert [h["peer_id"] for h in body["hits"]] == ["peer3"]
            assert body["partial"] is False and body["messages"] == 2

    assert_moves(
        stack,
        act,
        {
            f"sum({searches % ('peer1', 'entry')})": n,
            f"sum({searches % ('peer2', 'forwarded')})": 0,
            f"sum({searches % ('peer3', 'forwarded')})": n,
            f"sum({searches % ('peer1', 'forwarded')})": 0,
            f"sum({answered % ('peer1', 'entry', 'complete')})": n,
            f"sum({answered % ('peer3', 'forwarded', 'complete')})": n,
            'sum(peerfind_directory_searches_answered_total{outcome="partial"})': 0,
            'sum(peerfind_directory_search_forwards_total{peer="peer1"})': n,
            'sum(peerfind_directory_search_forwards_total{peer=~"peer2|peer3"})': 0,
            "sum(peerfind_directory_search_forward_failures_total)": 0,
            "sum(peerfind_directory_search_duplicates_total)": 0,
            # hello3 is on peer3 only: peer3 returns it to peer1, peer1 to the client
            'sum(peerfind_directory_search_hits_total{peer="peer1"})': n,
            'sum(peerfind_directory_search_hits_total{peer="peer2"})': 0,
            'sum(peerfind_directory_search_hits_total{peer="peer3"})': n,
            'sum(peerfind_directory_search_duration_seconds_count{peer="peer1", role="entry"})': n,
            'sum(peerfind_directory_search_peers_failed_count{peer="peer1"})': n,
            "sum(peerfind_directory_search_peers_failed_sum)": 0,
            # one forward each: its request and its answer
            f"sum({messages % 'count'})": n,
            f"sum({messages % 'sum'})": 2 * n,
            'sum(peerfind_directory_search_messages_count{mode=~"walk|dynamic"})': 0,
            # the client's n requests to peer1 plus peer1's n forwards
            'sum(peerfind_directory_http_requests_total{route="/search", status="200"})': 2 * n,
            'sum(peerfind_directory_http_requests_total{peer="peer1", route="/search", '
            'method="GET", status="200"})': n,
        },
    )


def test_search_counters_of_a_flood_and_of_a_duplicate(stack: Stack) -> None:
    """Default ttl (3) in a triangle: peer1 forwards to both neighbours, and the query
    carries both in its visited filter, so neither asks the other. A query id seen again
    (sent to peer2 twice here) is a duplicate: answered from the local index only."""
    n = 3

    def act() -> None:
        for _ in range(n):
            body = search(stack, "peer1", query="hello3", mode="flood", fanout=2)
            assert [h["peer_id"] for h in body["hits"]] == ["peer3"]
            assert body["partial"] is False
        again = {"query": "hello3", "qid": "observability-dup", "sender": "peer1", "ttl": 0}
        assert search(stack, "peer2", **again)["duplicate"] is False
        assert search(stack, "peer2", **again)["duplicate"] is True
        bad = httpx.get(
            f"{stack.net['peer1'].spec.url}/search", params={"query": ""}, trust_env=False
        )
        assert bad.status_code == 422

    assert_moves(
        stack,
        act,
        {
            'sum(peerfind_directory_searches_received_total{peer="peer1", role="entry"})': n,
            'sum(peerfind_directory_searches_received_total{role="forwarded"})': 2 * n + 2,
            "sum(peerfind_directory_search_forwards_total)": 2 * n,
            'sum(peerfind_directory_search_forwards_total{peer="peer1"})': 2 * n,
            "sum(peerfind_directory_search_duplicates_total)": 1,
            'sum(peerfind_directory_search_duplicates_total{peer="peer2"})': 1,
            # duplicates are answered too (from the local index, never forwarded)
            'sum(peerfind_directory_searches_answered_total{role="forwarded"})': 2 * n + 2,
            'sum(peerfind_directory_searches_answered_total{peer="peer1", role="entry", '
            'outcome="complete"})': n,
            'sum(peerfind_directory_searches_answered_total{outcome="partial"})': 0,
            'sum(peerfind_directory_search_hits_total{peer="peer1"})': n,
            "sum(peerfind_directory_search_forward_failures_total)": 0,
            'sum(peerfind_directory_http_requests_total{route="/search", status="200"})': 3 * n + 2,
            'sum(peerfind_directory_http_requests_total{peer="peer1", route="/search", '
            'status="422"})': 1,
        },
    )


def test_summary_series(stack: Stack) -> None:
    """Every peer built its own summary, took its two neighbours' and refused none; the
    labelled series exist for every outcome and mode."""
    prom = stack.prom
    fetches = 'sum(peerfind_directory_summary_fetches_total{peer="%s", outcome="%s"})'
    wait_for_summaries(stack)

    def problems() -> list[str]:
        found = []
        for peer in PEERS:
            if prom.scalar(f'sum(peerfind_directory_summary_bits{{peer="{peer}"}})') < 8192:
                found.append(f"{peer}: no summary bits")
            rebuilds = f'sum(peerfind_directory_summary_rebuild_seconds_count{{peer="{peer}"}})'
            if prom.scalar(rebuilds) < 1:
                found.append(f"{peer}: no rebuild")
            if prom.scalar(fetches % (peer, "changed")) < 2:
                found.append(f"{peer}: fewer than two summaries taken")
        return found

    try:
        wait_for(lambda: not problems(), SEEN_S, step_s=0.5, what="the summary series")
    except TimeoutError:
        raise AssertionError(problems()) from None
    for peer in PEERS:
        assert prom.scalar(fetches % (peer, "refused")) == 0, peer
        series = prom.query(f'peerfind_directory_summary_fetches_total{{peer="{peer}"}}')
        outcomes = {s["metric"]["outcome"] for s in series}
        assert outcomes == {"changed", "unchanged", "refused", "failed"}, peer
        modes = prom.query(f'peerfind_directory_search_messages_count{{peer="{peer}"}}')
        assert {s["metric"]["mode"] for s in modes} == {"flood", "walk", "dynamic"}, peer


def test_transfer_counters(stack: Stack) -> None:
    owner = stack.net["peer3"].spec
    small = (owner.shared_dir / "hello3.txt").stat().st_size
    video = (owner.shared_dir / "media" / "video3.mp4").stat().st_size
    payload = os.urandom(3 * CHUNK + 7)
    rpcs = 'sum(peerfind_transfer_rpcs_total{peer="%s", method="%s", code="%s"})'

    def act() -> None:
        for _ in range(3):
            assert download(stack, "peer3", "hello3.txt") == small
        assert download(stack, "peer3", "video3.mp4") == video
        with pytest.raises(grpc.aio.AioRpcError) as info:
            download(stack, "peer3", "missing.txt")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        status = upload(stack, "peer2", payload)
        assert (status.bytes_received, status.chunks) == (len(payload), 4)

    assert_moves(
        stack,
        act,
        {
            'sum(peerfind_transfer_bytes_sent_total{peer="peer3"})': 3 * small + video,
            "sum(peerfind_transfer_bytes_sent_total)": 3 * small + video,
            'sum(peerfind_transfer_chunks_sent_total{peer="peer3"})': 3 + -(-video // CHUNK),
            'sum(peerfind_transfer_bytes_received_total{peer="peer2"})': len(payload),
            "sum(peerfind_transfer_bytes_received_total)": len(payload),
            'sum(peerfind_transfer_chunks_received_total{peer="peer2"})': 4,
            rpcs % ("peer3", "DummyDownload", "OK"): 4,
            rpcs % ("peer3", "DummyDownload", "NOT_FOUND"): 1,
            rpcs % ("peer2", "DummyUpload", "OK"): 1,
            "sum(peerfind_transfer_rpcs_total)": 6,
            'sum(peerfind_transfer_stream_duration_seconds_count{peer="peer3", '
            'method="DummyDownload"})': 5,
            "sum(peerfind_transfer_active_streams)": 0,
        },
    )


def test_indexer_gauges_and_first_scan(stack: Stack) -> None:
    prom = stack.prom
    for i, peer in enumerate(PEERS):
        files, size = files_of(stack.net[peer].spec.shared_dir)
        assert prom.scalar(f'sum(peerfind_indexer_files{{peer="{peer}"}})') == files, peer
        assert prom.scalar(f'sum(peerfind_indexer_bytes{{peer="{peer}"}})') == size, peer
        scans = f'sum(peerfind_indexer_scans_total{{peer="{peer}", result="ok"}})'
        assert prom.scalar(scans) == 1, peer
        assert (
            prom.scalar(f'sum(peerfind_indexer_scan_duration_seconds_count{{peer="{peer}"}})') == 1
        )
        last = prom.scalar(f'max(peerfind_indexer_last_scan_timestamp_seconds{{peer="{peer}"}})')
        assert stack.started_at <= last <= time.time(), peer
        dangling = 1 if i == 0 else 0
        assert (
            prom.scalar(
                f'sum(peerfind_indexer_skipped_total{{peer="{peer}", reason="dangling_symlink"}})'
            )
            == dangling
        ), peer
        assert prom.scalar(f'sum(peerfind_indexer_skipped_total{{peer="{peer}"}})') == dangling


def test_indexer_counters_follow_the_watcher(stack: Stack) -> None:
    shared = stack.net["peer2"].spec.shared_dir
    staged = shared.parent / "staged-arrival.bin"
    arrived = shared / "arrival.bin"
    events = 'sum(peerfind_indexer_watch_events_total{peer="peer2", kind="%s"})'
    files = 'sum(peerfind_indexer_files{peer="peer2"})'
    size = 'sum(peerfind_indexer_bytes{peer="peer2"})'

    def arrive() -> None:
        staged.write_bytes(b"x" * 1234)
        staged.rename(arrived)  # one inotify event: the file appears whole

    assert_moves(
        stack,
        arrive,
        {
            events % "added": 1,
            events % "modified": 0,
            events % "deleted": 0,
            files: 1,
            size: 1234,
            'sum(peerfind_indexer_watch_events_total{peer=~"peer1|peer3"})': 0,
            'sum(peerfind_indexer_scans_total{peer="peer2"})': 0,
        },
    )
    assert_moves(
        stack,
        arrived.unlink,
        {events % "added": 0, events % "deleted": 1, files: -1, size: -1234},
    )


# -- rules and the dashboard against the real server ----------------------------------


def test_alert_rules_are_loaded_evaluated_and_quiet(stack: Stack) -> None:
    def rules() -> list[dict[str, object]]:
        groups = stack.prom.api("rules", type="alert")["groups"]
        found = [r for g in groups for r in g["rules"]]
        return found if all(r["health"] == "ok" for r in found) else []

    found = wait_for(rules, SEEN_S, what="every alert rule to be evaluated")
    configured = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"][0]["rules"]
    assert {r["name"] for r in found} == {r["alert"] for r in configured}
    assert [(r["name"], r["state"]) for r in found if r["state"] != "inactive"] == []


def test_a_killed_service_makes_peer_down_pending_for_it_only(stack: Stack) -> None:
    peer = stack.net["peer3"]
    prom = stack.prom

    def pending() -> list[dict[str, str]]:
        alerts = prom.api("alerts")["alerts"]
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == "PeerfindPeerDown"]

    peer.kill(["indexer"])
    try:
        labels = wait_for(pending, SEEN_S, what="PeerfindPeerDown to go pending")
        assert [(a["peer"], a["service"], a["severity"]) for a in labels] == [
            ("peer3", "indexer", "critical")
        ]
        assert prom.scalar('sum(up{job=~"peerfind-.+"})') == 8
    finally:
        peer.start(["indexer"])
    wait_for(lambda: not pending(), SEEN_S, what="PeerfindPeerDown to clear")
    assert prom.scalar('sum(up{job=~"peerfind-.+"})') == 9


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    board = json.loads((GRAFANA_DIR / "dashboards" / "peerfind.json").read_text())
    queries = {
        f"{p['title']} / {t['refId']}": t["expr"]
        .replace("$__rate_interval", "30s")
        .replace("$peer", ".*")
        for p in board["panels"]
        for t in p.get("targets", [])
    }
    assert len(queries) >= 10
    # something to show on every panel: a search and a download now
    search(stack, "peer2", query="hello1", fanout=2)
    assert download(stack, "peer1", "hello1.txt") > 0

    def empty() -> list[str]:
        return [name for name, expr in queries.items() if not stack.prom.query(expr)]

    try:
        wait_for(lambda: not empty(), SEEN_S, step_s=0.5, what="every panel to have data")
    except TimeoutError:
        raise AssertionError(f"panels without data: {empty()}") from None
    assert stack.prom.scalar(queries["Peers up / A"]) == 3
    files = stack.prom.query(queries["Indexed files / A"])
    assert {s["metric"]["peer"] for s in files} == set(PEERS)


def test_the_five_documented_queries_run(stack: Stack) -> None:
    down, *others = documented_queries()
    search(stack, "peer3", query="hello2", fanout=2)  # so the latency histogram has data
    assert stack.prom.query(down) == []  # nothing is down
    for expr in others:
        assert stack.prom.query(expr), f"no data for {expr}"
