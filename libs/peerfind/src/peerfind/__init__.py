"""peerfind: a decentralized, unstructured peer-to-peer file locator.

Shared code for the three per-peer services (directory, transfer, indexer)
and the `peerfind` command line client.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
