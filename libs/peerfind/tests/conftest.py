"""Real servers for the client tests: the fake peers of `peerfind_devnet.fakes`.

`directory`: a fake REST directory (uvicorn on 127.0.0.1, one per session, state
reset for each test). `transfer`: a real `grpc.aio` server on port 0 with a fake
FileTransfer servicer, started on the test's event loop and stopped after it.
`https_directory`, `mtls_transfer`: the same on TLS, certificates from `pki`.
"""

from peerfind_devnet.fakes import (
    dead_port,
    directory,
    fake_directory_server,
    fake_https_directory_server,
    hit,
    https_directory,
    mtls_transfer,
    pki,
    transfer,
    transfer_default_limits,
)

__all__ = [
    "dead_port",
    "directory",
    "fake_directory_server",
    "fake_https_directory_server",
    "hit",
    "https_directory",
    "mtls_transfer",
    "pki",
    "transfer",
    "transfer_default_limits",
]
