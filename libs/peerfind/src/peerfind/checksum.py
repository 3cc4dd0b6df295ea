"""The CRC-32 that uploads are checked with (`UploadStatus.checksum` is "crc32:%08x").

    crc = crc32(data, crc)

zlib-ng's crc32 when it is installed (the transfer service depends on it), else
zlib's: the same CRC-32, an order of magnitude faster (SIMD); zlib's was the largest
cost of DummyUpload on both ends (docs/benchmarks.md, "DummyUpload: crc32 was the
server's largest cost").
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable

__all__ = ["crc32"]


def _crc32_function() -> Callable[[bytes | memoryview, int], int]:
    try:
        module = importlib.import_module("zlib_ng.zlib_ng")
    except ImportError:
        return zlib.crc32
    function: Callable[[bytes | memoryview, int], int] = module.crc32
    return function


crc32 = _crc32_function()
