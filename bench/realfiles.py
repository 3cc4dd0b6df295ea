"""Real files: Download against DummyDownload and nginx, `peerfind get` from 1-3 owners, hashing.

Processes (all with PERF_ENV, all on 127.0.0.x, all stopped at the end):

    peers     three real peers (directory, indexer, transfer), `peerfind_devnet`, on
              127.0.0.61-63, hashing with no read budget; peer1 shares REAL_NAME
              (1 GiB) and every peer shares a copy of MULTI_NAME (512 MiB)
    client    `bench.worker`: the bare grpc.aio client of the Download runs, and the
              indexer's hasher (`indexer.hasher.Hasher`) for the hashing runs
    nginx     the Debian nginx, one process (`master_process off`), `sendfile on`,
              serving peer1's shared folder on 127.0.0.64; fetched by curl to /dev/null
    get       `peerfind get NAME --sources K --json`, the product's CLI, a process per run
    sha256sum coreutils, a process per run, over the same files as the hasher

Figures (every ratio from runs interleaved in this run):

    download.real_vs_dummy   Download of REAL_NAME (pinned to its sha256) against
                             DummyDownload of the same name from the same peer, the
                             same bare client and chunk size; the median of the per-pair
                             ratios, aim >= 0.85x: what reading the file (pread from the
                             page cache) and checking it is unchanged cost the stream
    download.real_vs_nginx   the same Download against curl fetching the same file from
                             nginx with sendfile; context (no aim): a C server handing
                             the kernel a file descriptor to a C client, against grpc.aio
                             in Python, says what the runtime costs, not our code
    get.two_owners_vs_one,   `peerfind get` with --sources 2 and 3 against --sources 1,
    get.three_owners_vs_one  the owners all on this machine (see run() for the aim)
    hash.vs_sha256sum        the indexer's hasher over REAL_NAME and MULTI_NAME against
                             `sha256sum` of the same files (time ratio, inverted so that
                             higher is better), aim >= 0.9x

The files are written once from a repeated random block: neither gRPC nor nginx nor
SHA-256 compresses or deduplicates, so the content only has to be real bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.core import (
    MB,
    MIB,
    PERF_ENV,
    Context,
    Helpers,
    Result,
    Worker,
    free_port,
    wait_for,
    wait_tcp,
)
from peerfind_devnet import Devnet, PeerProcesses, loopback_specs

__all__ = ["run"]

GIB = 1024 * MIB
PEER_HOSTS = ["127.0.0.61", "127.0.0.62", "127.0.0.63"]
NGINX_HOST = "127.0.0.64"
REAL_NAME = "real.bin"
MULTI_NAME = "multi.bin"
CHUNK = 512 * 1024
BLOCK = 16 * MIB
DOWNLOAD_AIM = 0.85
HASH_AIM = 0.9
GET_AIM = 0.9


@dataclass(frozen=True)
class Plan:
    real_bytes: int
    multi_bytes: int
    download_runs: int
    nginx_runs: int
    get_runs: int
    hash_runs: int

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if quick:
            return cls(256 * MIB, 128 * MIB, 2, 2, 1, 2)
        return cls(GIB, 512 * MIB, 7, 7, 3, 5)


@dataclass
class Rig:
    ctx: Context
    net: Devnet
    worker: Worker
    digests: dict[str, str]
    sizes: dict[str, int]
    out_dir: Path
    nginx_url: str | None
    nginx_why: str = ""
    busy: list[float] = field(default_factory=list)

    @property
    def owner(self) -> PeerProcesses:
        return self.net["peer1"]

    def _quiet(self) -> None:
        self.busy.append(self.ctx.quiet())

    def grpc_rate(self, method: str) -> float:
        """MB/s of one 1 GiB download of REAL_NAME from peer1 by the bare client."""
        self._quiet()
        args: dict[str, Any] = {
            "client": "bare",
            "address": self.owner.spec.grpc_address,
            "name": REAL_NAME,
            "size": self.sizes[REAL_NAME],
            "chunk_size": CHUNK,
            "method": method,
        }
        if method == "Download":
            args["sha256"] = self.digests[REAL_NAME]
        answer = self.worker.call("download", **args)
        return float(answer["bytes"]) / float(answer["seconds"]) / MB

    def nginx_rate(self) -> float:
        """MB/s of curl fetching REAL_NAME from nginx (curl's own transfer time)."""
        assert self.nginx_url is not None
        self._quiet()
        done = subprocess.run(
            [
                "curl",
                "-sS",
                "--fail",
                "--noproxy",
                "*",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{time_total}",
                f"{self.nginx_url}/{REAL_NAME}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        size, seconds = done.stdout.split()
        if int(size) != self.sizes[REAL_NAME]:
            raise RuntimeError(f"curl got {size} bytes of {REAL_NAME}")
        return int(size) / float(seconds) / MB

    def get_rate(self, sources: int) -> dict[str, float]:
        """One `peerfind get MULTI_NAME --sources N`: MB/s by its own clock, and by the wall."""
        out = self.out_dir / MULTI_NAME
        self._quiet()
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "peerfind_cli",
                "get",
                MULTI_NAME,
                "--output",
                str(out),
                "--sources",
                str(sources),
                "--force",
                "--json",
                "--peer",
                self.owner.spec.url,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **PERF_ENV},
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"peerfind get failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        summary = json.loads(done.stdout)
        if summary["sha256"] != self.digests[MULTI_NAME] or len(summary["owners"]) != sources:
            raise RuntimeError(f"peerfind get: unexpected summary {summary}")
        out.unlink()
        size = self.sizes[MULTI_NAME]
        return {"mb_s": size / summary["seconds"] / MB, "wall_mb_s": size / wall / MB}

    def hash_times(self) -> tuple[float, float]:
        """Seconds of the indexer's hasher, then of sha256sum, over the same files."""
        root = self.owner.spec.shared_dir
        names = [REAL_NAME, MULTI_NAME]
        self._quiet()
        ours = self.worker.call("hash", root=str(root), names=names)
        if ours["digests"] != {n: self.digests[n] for n in names}:
            raise RuntimeError(f"the hasher's digests differ from the index: {ours['digests']}")
        self._quiet()
        started = time.perf_counter()
        done = subprocess.run(
            ["sha256sum", *names], cwd=root, capture_output=True, text=True, check=True
        )
        theirs = time.perf_counter() - started
        sums: dict[str, str] = {}
        for line in done.stdout.splitlines():
            digest, name = line.split(maxsplit=1)
            sums[name] = digest
        if sums != {n: self.digests[n] for n in names}:
            raise RuntimeError(f"sha256sum disagrees: {done.stdout}")
        return float(ours["seconds"]), theirs


def _write(path: Path, size: int, block: bytes) -> None:
    with open(path, "wb") as f:
        full, rest = divmod(size, len(block))
        for _ in range(full):
            f.write(block)
        f.write(block[:rest])


def _nginx_conf(root: Path, shared: Path, port: int) -> Path:
    conf = root / "nginx.conf"
    # One process, as each of our services is; it runs as whoever runs the benchmark
    # (the scratch folder is private to that user).
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    types {{ application/octet-stream bin; }}
    server {{
        listen {NGINX_HOST}:{port};
        root {shared};
    }}
}}
"""
    )
    return conf


@contextlib.contextmanager
def _nginx(root: Path, shared: Path) -> Iterator[tuple[str | None, str]]:
    """nginx serving `shared`, or (None, why) when nginx or curl is not installed."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if nginx is None or shutil.which("curl") is None:
        missing = "nginx" if nginx is None else "curl"
        yield None, f"{missing} is not installed (Debian: apt-get install nginx-light curl)"
        return
    port = free_port(NGINX_HOST)
    conf = _nginx_conf(root, shared, port)
    with open(root / "nginx.log", "ab") as log:
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(root)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_tcp(NGINX_HOST, port, what="nginx")
        yield f"http://{NGINX_HOST}:{port}", ""
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def rig(ctx: Context, plan: Plan) -> Iterator[Rig]:
    root = ctx.scratch("realfiles")
    shares = [root / f"share{i}" for i in (1, 2, 3)]
    block = os.urandom(BLOCK)
    sizes = {REAL_NAME: plan.real_bytes, MULTI_NAME: plan.multi_bytes}
    for share in shares:
        share.mkdir(exist_ok=True)
        # A copy each, not a hard link: the safe reader refuses files with several links.
        _write(share / MULTI_NAME, plan.multi_bytes, block)
    _write(shares[0] / REAL_NAME, plan.real_bytes, block)
    out_dir = root / "out"
    out_dir.mkdir(exist_ok=True)
    specs = loopback_specs(
        root,
        PEER_HOSTS,
        shares,
        {"log_format": "text", "log_level": "WARNING", "hash_rate_mib_s": 0},
    )
    net = Devnet(root, specs)
    with Helpers(root / "logs") as helpers, net.running():
        worker = Worker(helpers, "client")
        entry = net["peer1"].spec.url

        def hashed() -> dict[str, str] | None:
            found: dict[str, str] = {}
            for name, owners in ((REAL_NAME, 1), (MULTI_NAME, 3)):
                hits = httpx.get(
                    f"{entry}/search", params={"query": name}, timeout=10, trust_env=False
                ).json()["hits"]
                digests = {h["sha256"] for h in hits if h["name"] == name and h["sha256"]}
                if len(digests) != 1 or sum(h["name"] == name for h in hits) != owners:
                    return None
                found[name] = digests.pop()
                if len([h for h in hits if h["sha256"] == found[name]]) != owners:
                    return None
            return found

        digests = wait_for(hashed, 300, step_s=0.2, what="every copy hashed by its owner")
        with _nginx(root, shares[0]) as (nginx_url, why):
            yield Rig(ctx, net, worker, digests, sizes, out_dir, nginx_url, why)


def _paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def _summary(values: list[float]) -> dict[str, Any]:
    return {"best": max(values), "median": statistics.median(values), "runs": values}


def run(ctx: Context) -> list[Result]:
    plan = Plan.for_run(ctx.quick)
    rows: list[Result] = []
    with rig(ctx, plan) as r:
        # Warm both paths (imports, the page cache for the file, the heap).
        r.grpc_rate("Download")
        r.grpc_rate("DummyDownload")
        real, dummy, nginx = [], [], []
        for _ in range(plan.download_runs):
            real.append(r.grpc_rate("Download"))
            dummy.append(r.grpc_rate("DummyDownload"))
            if r.nginx_url is not None:
                nginx.append(r.nginx_rate())
        ctx.log(
            f"{REAL_NAME} {plan.real_bytes // MIB} MiB x {plan.download_runs}: Download "
            f"{statistics.median(real):.0f}, DummyDownload {statistics.median(dummy):.0f}"
            + (f", nginx+curl {statistics.median(nginx):.0f}" if nginx else "")
            + " MB/s (medians)"
        )
        what = (
            f"{plan.real_bytes // MIB} MiB from one peer, chunk {CHUNK // 1024} KiB, the same "
            "bare grpc.aio client; Download pinned to the file's sha256"
        )
        rows.append(
            Result.relative(
                "download.real_vs_dummy",
                statistics.median(real),
                "MB/s",
                "DummyDownload of the same name from the same peer (zeros, no file read); "
                "medians, ratio = median of the per-pair ratios",
                statistics.median(dummy),
                at_least=DOWNLOAD_AIM,
                aim=f">= {DOWNLOAD_AIM:g}x (paired median)",
                ratio=_paired(real, dummy),
                context={
                    "what": what,
                    "download_mb_s": _summary(real),
                    "dummy_download_mb_s": _summary(dummy),
                    "best_of_ratio": max(real) / max(dummy),
                },
            )
        )
        if nginx:
            rows.append(
                Result.context_only(
                    "download.real_vs_nginx",
                    statistics.median(real),
                    "MB/s",
                    "nginx (sendfile on, one process) serving the same file, fetched by curl "
                    "to /dev/null; medians, ratio = median of the per-pair ratios",
                    statistics.median(nginx),
                    why="context: C and sendfile against grpc.aio in Python",
                    ratio=_paired(real, nginx),
                    context={
                        "what": what,
                        "download_mb_s": _summary(real),
                        "nginx_curl_mb_s": _summary(nginx),
                        "ratio_of_medians": statistics.median(real) / statistics.median(nginx),
                    },
                )
            )
        else:
            ctx.log(f"download.real_vs_nginx skipped: {r.nginx_why}")

        # Multi-source: every run of the round sees much the same machine.
        gets: dict[int, list[dict[str, float]]] = {1: [], 2: [], 3: []}
        r.get_rate(1)  # warm-up: the CLI's imports, the output's pages
        for _ in range(plan.get_runs):
            for sources in (1, 2, 3):
                gets[sources].append(r.get_rate(sources))
        rates = {k: [g["mb_s"] for g in v] for k, v in gets.items()}
        ctx.log(
            f"peerfind get {plan.multi_bytes // MIB} MiB x {plan.get_runs}: "
            + ", ".join(f"{k} owner(s) {statistics.median(v):.0f}" for k, v in rates.items())
            + " MB/s (medians)"
        )
        for sources, name in ((2, "get.two_owners_vs_one"), (3, "get.three_owners_vs_one")):
            # On one machine every owner shares the client's two CPUs and the loopback:
            # more owners cannot add bandwidth here, so the aim is that fetching from
            # several costs little (pieces handed out, a stream and a connection per
            # owner, the record written per piece), which the code can miss.
            rows.append(
                Result.relative(
                    name,
                    statistics.median(rates[sources]),
                    "MB/s",
                    "`peerfind get --sources 1` of the same file, same run; medians, "
                    "ratio = median of the per-round ratios",
                    statistics.median(rates[1]),
                    at_least=GET_AIM,
                    aim=f">= {GET_AIM:g}x (paired median; owners on this machine)",
                    ratio=_paired(rates[sources], rates[1]),
                    context={
                        "what": f"`peerfind get` of a {plan.multi_bytes // MIB} MiB file, "
                        f"--sources {sources}, 8 MiB pieces, owners on 127.0.0.61-63, "
                        "output on tmpfs; MB/s by the CLI's own clock (fetch, the final "
                        "SHA-256 check, the rename)",
                        "mb_s": _summary(rates[sources]),
                        "one_owner_mb_s": _summary(rates[1]),
                        "wall_mb_s_with_cli_start_and_search": _summary(
                            [g["wall_mb_s"] for g in gets[sources]]
                        ),
                    },
                )
            )

        ours, theirs = [], []
        r.hash_times()  # warm-up
        for _ in range(plan.hash_runs):
            o, t = r.hash_times()
            ours.append(o)
            theirs.append(t)
        total = plan.real_bytes + plan.multi_bytes
        ctx.log(
            f"hashing {total // MIB} MiB x {plan.hash_runs}: hasher {min(ours):.3f} s, "
            f"sha256sum {min(theirs):.3f} s (best)"
        )
        rows.append(
            Result.relative(
                "hash.vs_sha256sum",
                total / statistics.median(ours) / MB,
                "MB/s",
                "coreutils `sha256sum` of the same files, a process per run; medians, "
                "ratio = median of the per-pair ratios",
                total / statistics.median(theirs) / MB,
                at_least=HASH_AIM,
                aim=f">= {HASH_AIM:g}x (paired median)",
                ratio=_paired([total / o for o in ours], [total / t for t in theirs]),
                context={
                    "what": f"indexer.hasher.Hasher (no read budget) over {REAL_NAME} and "
                    f"{MULTI_NAME}, {total // MIB} MiB in the page cache, in its own process",
                    "hasher_s": {"best": min(ours), "runs": ours},
                    "sha256sum_s": {"best": min(theirs), "runs": theirs},
                },
            )
        )
        quiet = {
            "busy_cpus_before_runs_median": statistics.median(r.busy),
            "busy_cpus_before_runs_max": max(r.busy),
            "runs": len(r.busy),
        }
    for row in rows:
        row.context["other_load"] = quiet
    return rows
