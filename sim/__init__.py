"""peerfind's simulator: the product's own search and membership code over thousands of
virtual peers, on virtual time. `python -m sim` (or `make sim`) runs the default set.

    vloop      an asyncio event loop whose clock only moves when nothing is ready
    network    virtual peers (the real SearchRouter, PeerTable, SeenQueries, Membership)
               behind a virtual transport: latency, loss, processing time, churn
    topology   the overlays: built by peerfind's membership, random regular, power law
    workload   files, replication, query popularity
    runner     one run: queries in, the figures out
"""
