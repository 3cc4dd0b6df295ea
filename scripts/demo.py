"""`make demo`: replay the seed's test plan against a running three-peer network.

    make up && make demo          # the compose stack
    make local-up && make demo    # local processes (same addresses)

Six steps, each announced by a caption, run with the real curl, grpcurl and
`peerfind` commands a user would type, and each checked: if a step does not show
what its caption claims, the demo says why and exits 1. Step 5 stops peer3 and
step 6 starts it again (also when step 5 fails), so the network ends as it began.

    python scripts/demo.py [--stack auto|compose|local]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REST = {f"peer{i}": f"http://127.0.0.1:800{i}" for i in (1, 2, 3)}
GRPC = {f"peer{i}": f"127.0.0.1:5005{i}" for i in (1, 2, 3)}
LOCAL_ROOT = ROOT / ".run" / "local"
SHOWN_LINES = 12
T = TypeVar("T")


class StepFailed(Exception):
    """A step did not show what its caption claims."""


def tool(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if found is None:
        raise StepFailed(f"{name} is not installed (make install brings it)")
    return found


def show(cmd: Sequence[str]) -> None:
    printable = " ".join(f"'{c}'" if (" " in c or "&" in c or "{" in c) else c for c in cmd)
    # Show commands as a user types them: `curl`, not /usr/bin/curl.
    printable = printable.replace(str(BIN) + "/", "").replace(str(Path(cmd[0]).parent) + "/", "")
    print(f"  $ {printable}", flush=True)


def run(cmd: Sequence[str], *, echo: bool = True, quiet: bool = False) -> str:
    """Run a user-facing command, print it and (the start of) its output; fail on non-zero."""
    if echo:
        show(cmd)
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    if not quiet:
        lines = result.stdout.rstrip().splitlines()
        for line in lines[:SHOWN_LINES]:
            print(f"    {line[:150]}")
        if len(lines) > SHOWN_LINES:
            print(f"    ... ({len(lines) - SHOWN_LINES} more lines)")
    if result.returncode != 0:
        raise StepFailed(
            f"`{cmd[0]}` exited with {result.returncode}: {result.stderr.strip()[:300]}"
        )
    return result.stdout


def curl_json(url: str, *, echo: bool = True, quiet: bool = True) -> Any:
    cmd = [tool("curl"), "-sS", "--fail-with-body", "--max-time", "10", url]
    out = run(cmd, echo=echo, quiet=quiet)
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise StepFailed(f"{url} did not answer JSON: {out[:200]}") from None


def poll(probe: Callable[[], T | None], what: str, deadline_s: float) -> T:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            value = probe()
        except StepFailed:
            value = None
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(1.0)


def owners(result: dict[str, Any]) -> list[str]:
    return sorted({hit["peer_id"] for hit in result["hits"]})


def summarize(result: dict[str, Any]) -> None:
    for hit in result["hits"][:SHOWN_LINES]:
        where = f"gRPC {hit['grpc_address']}"
        print(f"    {hit['peer_id']:6} {hit['path']:28} {hit['size']:>9} B  {where}")
    partial = str(result["partial"]).lower()
    failed = ", ".join(f"{p['peer_id']} ({p['error']})" for p in result.get("peers_failed", []))
    print(f"    partial: {partial}  peers_failed: {failed or 'none'}")


# --------------------------------------------------------------------------- stacks


@dataclass(frozen=True)
class Stack:
    """The running network, and the command that stops or starts one of its peers."""

    name: str
    command: Callable[[str, str], list[str]]  # (verb "stop"/"start", peer) -> argv

    def stop(self, peer: str) -> None:
        run(self.command("stop", peer), quiet=True)

    def start(self, peer: str) -> None:
        run(self.command("start", peer), quiet=True)


def _compose_command(verb: str, peer: str) -> list[str]:
    services = [f"{peer}-{s}" for s in ("directory", "transfer", "indexer")]
    return [sys.executable, "scripts/stack.py", "compose", verb, *services]


def _devnet_command(verb: str, peer: str) -> list[str]:
    root = str(LOCAL_ROOT)
    return [sys.executable, "-m", "peerfind_devnet", verb, "--peer", peer, "--root", root]


COMPOSE = Stack("compose (make up)", _compose_command)
LOCAL = Stack("local processes (make local-up)", _devnet_command)


def detect(kind: str) -> Stack:
    if kind != "auto":
        return LOCAL if kind == "local" else COMPOSE
    status = subprocess.run(
        [sys.executable, "-m", "peerfind_devnet", "status", "--root", str(LOCAL_ROOT)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return LOCAL if status.returncode == 0 else COMPOSE


# --------------------------------------------------------------------------- steps


def step_files() -> None:
    for peer, url in REST.items():
        files = curl_json(f"{url}/files")["files"]
        for f in files[:SHOWN_LINES]:
            print(f"    {peer:6} {f['path']:28} {f['size']:>9} B")
        if not any(f["name"].startswith("hello") for f in files):
            raise StepFailed(f"{peer} lists no hello file")


def step_search() -> None:
    result = curl_json(f"{REST['peer1']}/search?query=.txt&fanout=2")
    summarize(result)
    if len(owners(result)) < 2:
        raise StepFailed(f"hits came from {owners(result)} only")
    print(f"  -> hits from {', '.join(owners(result))}, entering at peer1 only")


def step_download() -> None:
    out = run([tool("peerfind"), "download", "hello1.txt", "--peer", REST["peer2"]])
    if "downloaded hello1.txt from peer1" not in out:
        raise StepFailed("the download did not come from peer1")
    out = run(
        [
            tool("grpcurl"),
            "-plaintext",
            "-d",
            '{"name": "video3.mp4", "chunk_size": 1048576}',
            GRPC["peer3"],
            "peerfind.v1.FileTransfer/DummyDownload",
        ],
        quiet=True,
    )
    chunks = out.count('"data"')
    print(f"    ... {chunks} FileChunk messages of up to 1 MiB streamed by peer3")
    if chunks != 3:
        raise StepFailed(f"expected 3 chunks of video3.mp4 (3,000,000 bytes), got {chunks}")


def step_concurrent() -> None:
    searches = [
        [
            tool("curl"),
            "-sS",
            "--fail",
            "--max-time",
            "10",
            f"{REST[p]}/search?query=hello&fanout=2",
        ]
        for p in ("peer1", "peer2", "peer3")
        for _ in range(4)
    ]
    downloads = [
        [tool("peerfind"), "download", name, "--peer", REST["peer1"], "--json"]
        for name in ("hello1.txt", "hello2.txt", "hello3.txt", "video3.mp4")
        for _ in range(2)
    ]
    print(
        f"  $ {len(searches)} x curl .../search?query=hello  and  "
        f"{len(downloads)} x peerfind download ...  (all at once)"
    )
    started = time.monotonic()
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in searches + downloads
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    elapsed = time.monotonic() - started
    failed = [c for c, p in zip(searches + downloads, procs, strict=True) if p.returncode != 0]
    if failed:
        raise StepFailed(
            f"{len(failed)} of {len(procs)} commands failed, e.g. {' '.join(failed[0][-3:])}"
        )
    hits = [len(json.loads(out)["hits"]) for out, _ in outputs[: len(searches)]]
    total = sum(json.loads(out)["bytes"] for out, _ in outputs[len(searches) :])
    print(
        f"    {len(searches)} searches ({min(hits)}-{max(hits)} hits each) and "
        f"{len(downloads)} downloads ({total:,} bytes) in {elapsed:.2f} s, none failed"
    )
    if min(hits) < 3:
        raise StepFailed("a concurrent search missed a peer's hello file")


def step_stop(stack: Stack) -> None:
    stack.stop("peer3")

    def partial() -> dict[str, Any] | None:
        result: dict[str, Any] = curl_json(
            f"{REST['peer1']}/search?query=.txt&fanout=2", echo=False
        )
        return result if result["partial"] and "peer3" not in owners(result) else None

    show([tool("curl"), "-s", f"{REST['peer1']}/search?query=.txt&fanout=2"])
    result = poll(partial, "a partial answer without peer3", 30)
    summarize(result)
    if not {"peer1", "peer2"} <= set(owners(result)):
        raise StepFailed(f"with peer3 down, hits came from {owners(result)} only")
    print("  -> still answered, from peer1 and peer2, marked partial")


def step_restart(stack: Stack) -> None:
    stack.start("peer3")

    def back() -> dict[str, Any] | None:
        result: dict[str, Any] = curl_json(
            f"{REST['peer1']}/search?query=.txt&fanout=2", echo=False
        )
        return result if "peer3" in owners(result) and not result["partial"] else None

    show([tool("curl"), "-s", f"{REST['peer1']}/search?query=.txt&fanout=2"])
    result = poll(back, "peer3 found again", 90)
    summarize(result)
    print("  -> peer3 rejoined by itself; nothing else was restarted")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/demo.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--stack", choices=["auto", "compose", "local"], default="auto")
    args = parser.parse_args(argv)
    try:
        curl_json(f"{REST['peer1']}/health", echo=False)
    except StepFailed:
        print(
            "demo: no peer answers at http://127.0.0.1:8001: "
            "run `make up` or `make local-up` first",
            file=sys.stderr,
        )
        return 1
    stack = detect(args.stack)
    print(f"peerfind demo against {stack.name}\n")
    steps: list[tuple[str, Callable[[], None]]] = [
        ("Each peer shares only an index of its folder: GET /files on each peer", step_files),
        (
            "Any peer is an entry point: a search at peer1 (fanout 2) "
            "returns hits from several peers",
            step_search,
        ),
        (
            "peerfind download locates a file through any peer, "
            "then receives gRPC chunks from its owner",
            step_download,
        ),
        ("Several searches and downloads at once: nothing blocks", step_concurrent),
        (
            "peer3 stops: the search goes on and says its answer is partial",
            lambda: step_stop(stack),
        ),
        ("peer3 starts again and is found again", lambda: step_restart(stack)),
    ]
    stopped = False
    try:
        for number, (caption, step) in enumerate(steps, start=1):
            print(f"== {number}/{len(steps)}  {caption}", flush=True)
            stopped = stopped or number == 5
            step()
            print("   ok\n", flush=True)
            if number == 6:
                stopped = False
    except StepFailed as exc:
        print(f"   FAILED: {exc}", flush=True)
        if stopped:
            print("   (starting peer3 again)")
            try:
                stack.start("peer3")
            except StepFailed as again:
                print(f"   could not: {again}")
        return 1
    print("demo: every step showed what it claims")
    return 0


if __name__ == "__main__":
    sys.exit(main())
