"""peerfind.wire.read_file_chunk against the protobuf runtime itself.

Two claims, both checked with generated input:
- every message the runtime writes (with unknown fields, repeated fields, any
  values) is read with the runtime's own values;
- on any bytes at all, whatever `read_file_chunk` accepts the runtime accepts with
  the same values (it refuses rather than guess).
"""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from peerfind.v1 import transfer_pb2
from peerfind.wire import WireError, read_file_chunk

PROPERTY = settings(max_examples=1000, deadline=None)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire_type) + payload


def runtime(buf: bytes) -> tuple[bytes, int, str]:
    message = transfer_pb2.FileChunk.FromString(buf)
    return message.data, message.offset, message.name


def ours(buf: bytes) -> tuple[bytes, int, str]:
    chunk = read_file_chunk(buf)
    return bytes(chunk.data), chunk.offset, chunk.name


unknown_field = st.one_of(
    st.builds(
        lambda n, v: field(n, 0, varint(v)), st.integers(4, 2**29 - 1), st.integers(0, 2**64 - 1)
    ),
    st.builds(
        lambda n, b: field(n, 2, varint(len(b)) + b),
        st.integers(4, 2**29 - 1),
        st.binary(max_size=20),
    ),
    st.builds(
        lambda n, b: field(n, 1, b), st.integers(4, 2**29 - 1), st.binary(min_size=8, max_size=8)
    ),
    st.builds(
        lambda n, b: field(n, 5, b), st.integers(4, 2**29 - 1), st.binary(min_size=4, max_size=4)
    ),
    # A known number with another wire type is an unknown field too.
    st.builds(lambda v: field(1, 0, varint(v)), st.integers(0, 2**64 - 1)),
    st.builds(lambda b: field(2, 2, varint(len(b)) + b), st.binary(max_size=8)),
)
message = st.builds(
    lambda data, offset, name: transfer_pb2.FileChunk(
        data=data, offset=offset, name=name
    ).SerializeToString(),
    st.binary(max_size=300),
    st.integers(0, 2**64 - 1),
    st.text(max_size=20),
)


@PROPERTY
@given(st.lists(st.one_of(message, unknown_field), max_size=6))
def test_reads_what_the_runtime_writes_with_its_values(parts: list[bytes]) -> None:
    # Concatenated messages merge (last value wins), unknown fields are skipped.
    buf = b"".join(parts)
    assert ours(buf) == runtime(buf)


@PROPERTY
@given(st.binary(max_size=64))
@example(b"\x08")  # a truncated varint
@example(b"\x0a\x05ab")  # a length past the end
@example(b"\x00\x00")  # field number 0
@example(b"\x1a\x02\xff\xfe")  # a name that is not UTF-8
@example(b"\x0b\x0c")  # a group
@example(b"\x10" + b"\xff" * 10 + b"\x01")  # an 11-byte varint
@example(b"\x10" + b"\xff" * 9 + b"\x7f")  # a 10-byte varint past 64 bits
def test_accepts_nothing_the_runtime_refuses(buf: bytes) -> None:
    try:
        mine = ours(buf)
    except WireError:
        return
    try:
        theirs = runtime(buf)
    except DecodeError:
        pytest.fail(f"read_file_chunk accepted {buf!r}, which the runtime refuses")
    assert mine == theirs


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"\x08", "truncated varint"),
        (b"\x0a\x05ab", "past the end"),
        (b"\x00\x00", "invalid field tag"),
        (b"\x1a\x02\xff\xfe", "UTF-8"),
        (b"\x0b\x0c", "wire type 3"),
        (b"\x10" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x09abc", "past the end"),
    ],
)
def test_malformed_chunks_are_refused_with_a_reason(buf: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        read_file_chunk(buf)


def test_data_is_a_view_of_the_message_not_a_copy() -> None:
    buf = transfer_pb2.FileChunk(data=b"x" * 1000, offset=7).SerializeToString()
    chunk = read_file_chunk(buf)
    assert chunk.data.obj is buf
    assert (len(chunk.data), chunk.offset, chunk.name) == (1000, 7, "")
