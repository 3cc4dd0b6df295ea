"""peerfind directory service: REST for registration, membership and distributed search."""
