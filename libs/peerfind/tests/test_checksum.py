"""The shared CRC-32: whichever implementation is picked, it is zlib's CRC-32."""

from __future__ import annotations

import os
import zlib

from peerfind.checksum import crc32


def test_crc32_is_zlibs_crc32_chunk_by_chunk() -> None:
    chunks = [b"", b"a", os.urandom(1000), os.urandom(1 << 20)]
    crc = 0
    for chunk in chunks:
        crc = crc32(chunk, crc)
    assert crc == zlib.crc32(b"".join(chunks))
