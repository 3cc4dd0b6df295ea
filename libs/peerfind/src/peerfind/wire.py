"""`FileChunk` read straight from its protobuf wire bytes, without copying the data.

The upload hot path: parsing a 512 KiB chunk with the protobuf runtime copies its
payload twice (into upb's arena, then into a new `bytes` on `.data`); this reader
returns a `memoryview` of the bytes gRPC handed over. It reads exactly the proto3
wire format of `peerfind.v1.FileChunk`:

    1  data    bytes   (length-delimited)
    2  offset  uint64  (varint)
    3  name    string  (length-delimited, UTF-8)

As the protobuf runtime does, it takes the last value of a field that appears more
than once, and skips unknown fields (and known field numbers with another wire
type). It refuses what the runtime refuses: truncated or over-long varints, lengths
past the end, field number 0, invalid UTF-8 in `name`, and groups (wire types 3
and 4, which no proto3 sender writes). `tests/test_wire.py` checks both claims
against the runtime with generated messages and random bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChunkView", "WireError", "read_file_chunk"]

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_DATA_TAG = 1 << 3 | _LENGTH
_OFFSET_TAG = 2 << 3 | _VARINT
_NAME_TAG = 3 << 3 | _LENGTH
_U64 = (1 << 64) - 1
_EMPTY = memoryview(b"")


class WireError(ValueError):
    """The bytes are not a valid FileChunk."""


@dataclass(frozen=True, slots=True)
class ChunkView:
    data: memoryview  # a view of the message bytes: valid while they are
    offset: int
    name: str


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    value = 0
    shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")
    raise WireError("truncated varint")


def read_file_chunk(buf: bytes) -> ChunkView:
    """Parse one serialized FileChunk; raises WireError on malformed input."""
    end = len(buf)
    view = memoryview(buf)
    data, offset, name = _EMPTY, 0, ""
    pos = 0
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag > 0xFFFFFFFF or tag >> 3 == 0:
            raise WireError(f"invalid field tag {tag}")
        wire_type = tag & 7
        if wire_type == _VARINT:
            value, pos = _varint(buf, pos, end)
            if tag == _OFFSET_TAG:
                offset = value & _U64
        elif wire_type == _LENGTH:
            length, pos = _varint(buf, pos, end)
            start, pos = pos, pos + length
            if pos > end:
                raise WireError("length-delimited field runs past the end")
            if tag == _DATA_TAG:
                data = view[start:pos]
            elif tag == _NAME_TAG:
                try:
                    name = str(view[start:pos], "utf-8")
                except UnicodeDecodeError:
                    raise WireError("name is not valid UTF-8") from None
        elif wire_type in (_FIXED64, _FIXED32):
            pos += 8 if wire_type == _FIXED64 else 4
            if pos > end:
                raise WireError("fixed-width field runs past the end")
        else:
            raise WireError(f"unsupported wire type {wire_type}")
    return ChunkView(data, offset, name)
