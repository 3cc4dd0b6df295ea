"""Download's chunks go out as wire bytes built by hand (`chunk_frame`): they must parse
as the FileChunk they stand for, for every payload, offset and name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peerfind.v1 import transfer_pb2
from transfer.servicer import chunk_frame


@given(
    data=st.binary(max_size=70_000),
    offset=st.integers(min_value=0, max_value=2**64 - 1),
    name=st.text(max_size=300),
)
def test_a_chunk_frame_parses_as_the_file_chunk_it_stands_for(
    data: bytes, offset: int, name: str
) -> None:
    parsed = transfer_pb2.FileChunk.FromString(chunk_frame(data, offset, name))
    assert parsed == transfer_pb2.FileChunk(data=data, offset=offset, name=name)


def test_a_chunk_frame_is_as_long_as_the_serialized_message() -> None:
    for data, offset, name in [(b"", 0, ""), (b"x" * 524_288, 2**40, "été.txt"), (b"ab", 1, "")]:
        message = transfer_pb2.FileChunk(data=data, offset=offset, name=name)
        assert len(chunk_frame(data, offset, name)) == len(message.SerializeToString())
