"""Real servers for the CLI tests: the fake peers of `peerfind_devnet.fakes`."""

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
]
