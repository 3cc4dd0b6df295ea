"""The CRC-32 that uploads are checked with (`UploadStatus.checksum` is "crc32:%08x").

    crc = crc32(data, crc)

zlib-ng's crc32 when it is installed (the transfer service depends on it), else
zlib's: the same CRC-32, faster. Measured here (docs/benchmarks.md): zlib's runs at
~3.6 GB/s and was the largest cost of DummyUpload on both ends; zlib-ng's (SIMD) at
~45 GB/s.
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
