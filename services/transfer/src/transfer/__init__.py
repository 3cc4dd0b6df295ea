"""peerfind transfer service: the gRPC `peerfind.v1.FileTransfer` of one peer.

    PEER_CONFIG=deploy/local/peer1.json peerfind-transfer

Modules: `servicer` (DummyDownload / DummyUpload), `server` (grpc.aio server with
health and reflection, graceful shutdown), `metrics` (Prometheus), `main` (the
console script).
"""

__all__: list[str] = []
