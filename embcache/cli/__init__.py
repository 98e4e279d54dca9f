"""Tools built on embcache, never imported by the runtime package.

``embcache check`` (``cli``: the command line; ``criteria``, ``concurrency``
and ``limits``: the pass/fail criteria; ``compare``: the side-by-side
comparison with peer caches; ``redis_compare``: its Redis-tier rows, over the
contenders of ``redis_peers``; ``report``: its text and JSON), the peer adapters
and timed loops (``peers``), timing helpers (``measure``) and the workloads
shared by the check, the asv suites in benchmarks/ and the tests
(``workloads``). Layers point one way: these modules import embcache's public
API, and nothing in embcache imports them (tests/test_layers.py checks it).
"""
