"""Download: the real bytes of shared files, and every file it must refuse."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from peerfind.index import FileEntry, IndexWriter
from peerfind.v1 import transfer_pb2

from .conftest import Peer, PeerFactory

MiB = 1024 * 1024


def index_files(peer: Peer, *names: str, extra: list[FileEntry] | None = None) -> None:
    """Index `names` (files in the peer's shared folder) as the scanner would."""
    root = peer.settings.shared_dir
    found = []
    for name in names:
        st = os.stat(root / name)
        found.append(FileEntry(name, name.rpartition("/")[2], st.st_size, st.st_mtime, st.st_ino))
    writer = IndexWriter(peer.settings.index_path)
    try:
        writer.replace_all(found + (extra or []))
    finally:
        writer.close()


async def fetch(peer: Peer, name: str, **fields: object) -> bytes:
    request = transfer_pb2.FileRequest(name=name, **fields)
    chunks = [c async for c in peer.stub.Download(request, timeout=30)]
    return b"".join(c.data for c in chunks)


async def code_of(peer: Peer, name: str, **fields: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fetch(peer, name, **fields)
    return err.value.code()


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("peerfind_transfer_refusals_total", {"reason": reason}) or 0


async def test_streams_the_real_bytes_and_ranges(make_peer: PeerFactory) -> None:
    peer = await make_peer(index=False)
    data = os.urandom(3 * MiB + 12_345)
    (peer.settings.shared_dir / "sub").mkdir()
    (peer.settings.shared_dir / "sub" / "movie.mkv").write_bytes(data)
    (peer.settings.shared_dir / "empty.txt").write_bytes(b"")
    index_files(peer, "sub/movie.mkv", "empty.txt")
    sent = REGISTRY.get_sample_value("peerfind_transfer_file_bytes_sent_total") or 0

    assert await fetch(peer, "movie.mkv") == data
    assert (
        await fetch(peer, "movie.mkv", chunk_size=4096, offset=100, length=10_000)
        == (data[100:10_100])
    )
    assert await fetch(peer, "movie.mkv", offset=len(data)) == b""
    assert await fetch(peer, "empty.txt") == b""
    assert REGISTRY.get_sample_value("peerfind_transfer_file_bytes_sent_total") == (
        sent + len(data) + 10_000
    )
    assert await code_of(peer, "movie.mkv", offset=len(data) + 1) == grpc.StatusCode.OUT_OF_RANGE
    assert await code_of(peer, "movie.mkv", chunk_size=10) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(peer, "../movie.mkv") == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(peer, "absent.bin") == grpc.StatusCode.NOT_FOUND


async def test_sha256_pins_one_version(make_peer: PeerFactory) -> None:
    peer = await make_peer(index=False)
    (peer.settings.shared_dir / "a.txt").write_bytes(b"version one")
    index_files(peer, "a.txt")
    # Not hashed yet: a pinned request is refused, an unpinned one served.
    digest = hashlib.sha256(b"version one").hexdigest()
    assert await code_of(peer, "a.txt", sha256=digest) == grpc.StatusCode.FAILED_PRECONDITION
    writer = IndexWriter(peer.settings.index_path)
    st = os.stat(peer.settings.shared_dir / "a.txt")
    writer.set_hashes([FileEntry("a.txt", "a.txt", st.st_size, st.st_mtime, st.st_ino, digest)])
    writer.close()
    assert await fetch(peer, "a.txt", sha256=digest.upper()) == b"version one"
    assert await code_of(peer, "a.txt", sha256="0" * 64) == grpc.StatusCode.FAILED_PRECONDITION


async def test_refuses_what_points_out_or_is_not_a_regular_file(
    make_peer: PeerFactory, tmp_path: Path
) -> None:
    peer = await make_peer(index=False)
    root = peer.settings.shared_dir
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"secret")
    (root / "out.txt").symlink_to(outside)
    (root / "outdir").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(root / "pipe")
    (root / "inside.txt").write_bytes(b"ok")
    os.link(root / "inside.txt", root / "twin.txt")
    os.link(outside, root / "hardlink-out.txt")
    doctored = [
        FileEntry("out.txt", "out.txt", 6, 0.0),
        FileEntry("outdir/secret.txt", "via-dir.txt", 6, 0.0),
        FileEntry("../secret.txt", "traversal.txt", 6, 0.0),
        FileEntry("pipe", "pipe", 0, 0.0),
        FileEntry("twin.txt", "twin.txt", 2, 0.0),
        FileEntry("hardlink-out.txt", "hardlink-out.txt", 6, 0.0),
    ]
    try:
        os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        doctored.append(FileEntry("null", "null", 0, 0.0))
    except PermissionError:
        pass  # not root: the FIFO covers special files
    index_files(peer, extra=doctored)
    before = {r: refusals(r) for r in ("outside", "path", "special", "hard_link")}

    for entry in doctored:
        code = await asyncio.wait_for(code_of(peer, entry.name), timeout=10)  # a FIFO never blocks
        assert code == grpc.StatusCode.PERMISSION_DENIED, entry

    assert refusals("outside") == before["outside"] + 2
    assert refusals("path") == before["path"] + 1
    assert refusals("special") >= before["special"] + 1
    assert refusals("hard_link") == before["hard_link"] + 2


async def test_a_file_changed_since_indexing_is_refused(make_peer: PeerFactory) -> None:
    peer = await make_peer(index=False)
    path = peer.settings.shared_dir / "a.txt"
    path.write_bytes(b"indexed")
    index_files(peer, "a.txt")
    os.unlink(path)
    path.write_bytes(b"replaced")  # a new inode
    assert await code_of(peer, "a.txt") == grpc.StatusCode.FAILED_PRECONDITION
    os.unlink(path)
    assert await code_of(peer, "a.txt") == grpc.StatusCode.NOT_FOUND


async def test_a_file_written_while_streaming_ends_the_stream(make_peer: PeerFactory) -> None:
    peer = await make_peer(index=False)
    path = peer.settings.shared_dir / "big.bin"
    path.write_bytes(b"\x01" * (64 * MiB))
    index_files(peer, "big.bin")
    request = transfer_pb2.FileRequest(name="big.bin", chunk_size=64 * 1024)
    received = 0

    async def consume() -> None:
        nonlocal received
        async for chunk in peer.stub.Download(request, timeout=30):
            if received == 0:
                with path.open("r+b") as f:  # written in place, mid-stream
                    f.write(b"\x02")
            received += len(chunk.data)
            assert set(chunk.data) == {1}  # never a byte of the new version

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await consume()
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert received < 64 * MiB


async def test_same_named_files_in_two_folders_are_each_served_by_path(
    make_peer: PeerFactory,
) -> None:
    """Issue 17, item 16: of a/dup.txt and b/dup.txt, only the first could be fetched."""
    peer = await make_peer(index=False)
    root = peer.settings.shared_dir
    contents = {"a/dup.txt": b"the first dup", "b/dup.txt": b"the second, longer dup"}
    for path, data in contents.items():
        (root / path).parent.mkdir()
        (root / path).write_bytes(data)
    index_files(peer, *contents)
    for path, data in contents.items():
        assert await fetch(peer, "dup.txt", path=path) == data
        assert await fetch(peer, "", path=path, offset=4, length=5) == data[4:9]
    assert await fetch(peer, "dup.txt") == contents["a/dup.txt"]  # by name: first by path
    # The pin and the path together: each path has its own sha256.
    writer = IndexWriter(peer.settings.index_path)
    hashed = []
    for path, data in contents.items():
        st = os.stat(root / path)
        digest = hashlib.sha256(data).hexdigest()
        hashed.append(FileEntry(path, "dup.txt", st.st_size, st.st_mtime, st.st_ino, digest))
    writer.set_hashes(hashed)
    writer.close()
    second = hashlib.sha256(contents["b/dup.txt"]).hexdigest()
    assert await fetch(peer, "dup.txt", path="b/dup.txt", sha256=second) == contents["b/dup.txt"]
    assert (
        await code_of(peer, "dup.txt", path="a/dup.txt", sha256=second)
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert await code_of(peer, "dup.txt", path="c/dup.txt") == grpc.StatusCode.NOT_FOUND
    assert await code_of(peer, "a.txt", path="a/dup.txt") == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(peer, "", path="a/../b/dup.txt") == grpc.StatusCode.INVALID_ARGUMENT


async def test_names_with_tabs_newlines_and_dots_are_served(make_peer: PeerFactory) -> None:
    peer = await make_peer(index=False)
    root = peer.settings.shared_dir
    (root / "odd").mkdir()
    names = ["tab\there.txt", "new\nline.txt", "a..b.txt", "..hidden", "back\\slash"]
    for i, name in enumerate(names):
        (root / "odd" / name).write_bytes(b"%d: %s" % (i, name.encode()))
    index_files(peer, *(f"odd/{n}" for n in names))
    for i, name in enumerate(names):
        expected = b"%d: %s" % (i, name.encode())
        assert await fetch(peer, name) == expected
        assert await fetch(peer, name, path=f"odd/{name}") == expected
