"""Generated gRPC stubs for package peerfind.v1."""
