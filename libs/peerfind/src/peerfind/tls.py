"""Optional TLS for REST and gRPC, from PEM files named in the peer config.

    tls_cert_file + tls_key_file   the peer serves HTTPS and gRPC over TLS
    tls_ca_file                    peers' HTTPS is verified against it, and the gRPC
                                   server requires client certificates it signed (mTLS)

Off by default (the local demo runs in plain text); see docs/security.md.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Imported where credentials are made: the config (and so the indexer, which has
    # no gRPC at all) loads this module, and grpc costs a process ~25 MiB (bench.footprint).
    import grpc

__all__ = [
    "TlsFiles",
    "channel_credentials",
    "client_ssl_context",
    "grpc_channel",
    "server_credentials",
]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS client or server; any may be absent."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.ca_file is not None or self.cert_file is not None


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials | None:
    """gRPC server credentials, requiring client certificates when a CA is given."""
    if files.cert_file is None or files.key_file is None:
        return None
    import grpc

    return grpc.ssl_server_credentials(
        [(files.key_file.read_bytes(), files.cert_file.read_bytes())],
        root_certificates=_read(files.ca_file),
        require_client_auth=files.ca_file is not None,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """gRPC client credentials: trust `ca_file`, present `cert_file` when given (mTLS)."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=_read(files.ca_file),
        private_key=_read(files.key_file),
        certificate_chain=_read(files.cert_file),
    )


def grpc_channel(
    address: str,
    tls: TlsFiles | None = None,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """An asyncio gRPC channel: plain text, or TLS with `tls` (mTLS when it has a cert).

    `server_name` overrides the name the server's certificate is checked against (a
    peer's own transfer, reached at an internal address, presents the advertised name).
    """
    import grpc.aio

    opts = list(options)
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(address, options=opts)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=opts)


def client_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSL context for HTTPS clients: verify against `ca_file` (else the system CAs)."""
    context = ssl.create_default_context(
        cafile=str(files.ca_file) if files.ca_file is not None else None
    )
    if files.cert_file is not None and files.key_file is not None:
        context.load_cert_chain(str(files.cert_file), str(files.key_file))
    return context
