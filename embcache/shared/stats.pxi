# What a segment reports about itself: get_cache_info's CacheInfo (the
# statistics of every process attached, summed over the stripes), verify's
# walk of the invariants, and the count of stripe repairs. Included by
# _segment.pyx at module level; each function takes the cache it reports on.


cdef object segment_info(SharedEmbeddingCache c):
    """The CacheInfo of `c`: each stripe locked in turn while its counters are read."""
    cdef uint32_t s
    cdef embc_stripe *st
    cdef uint64_t size = 0, hits = 0, misses = 0, puts = 0, overwrites = 0
    cdef uint64_t evictions = 0, expirations = 0, removals = 0
    for s in range(c.seg.L.n_stripes if c.seg.base != NULL else 1):
        c.lock(s)
        st = embc_stripe_at(&c.seg, s)
        size += st.size
        hits += st.hits
        misses += st.misses
        puts += st.puts
        overwrites += st.overwrites
        evictions += st.evictions
        expirations += st.expirations
        removals += st.removals
        embc_unlock(&c.seg, s)
    used = size * (c.seg.L.row_bytes + EMBC_ENTRY_OVERHEAD)
    return CacheInfo(
        size=size, max_entries=c.seg.L.max_entries,
        memory_usage_bytes=used, memory_usage_mb=used / 1048576.0,
        max_memory_mb=c.max_memory_mb_arg, hits=hits, misses=misses,
        hit_rate=hits / <double>(hits + misses) if hits + misses else 0.0,
        evictions=evictions, expirations=expirations, puts=puts,
        overwrites=overwrites, removals=removals, ttl_seconds=c.ttl_seconds_arg,
        dim=c.seg.L.dim, dims=(c.seg.L.dim,) if size else (),
        entry_overhead_bytes=EMBC_ENTRY_OVERHEAD,
        memory_budget_bytes=c.seg.L.budget_bytes,
        allocated_bytes=c.seg.L.total_bytes, reserved_bytes=c.seg.L.total_bytes,
        policy="clock", admission_rejections=0, policy_bytes=0, storage=c.storage)


cdef list segment_verify(SharedEmbeddingCache c):
    """What is broken in `c`'s stripes (each locked in turn), empty when sound."""
    cdef uint32_t s
    cdef const char *why
    problems = []
    for s in range(c.seg.L.n_stripes if c.seg.base != NULL else 1):
        c.lock(s)
        why = embc_verify(&c.seg, s)
        embc_unlock(&c.seg, s)
        if why != NULL:
            problems.append(f"stripe {s}: {why.decode()}")
    return problems


cdef uint64_t segment_repairs(SharedEmbeddingCache c) except? 0:
    """Stripe repairs made in `c` so far, by any process."""
    cdef uint32_t s
    cdef uint64_t n = 0
    for s in range(c.seg.L.n_stripes if c.seg.base != NULL else 1):
        c.lock(s)
        n += embc_stripe_at(&c.seg, s).repairs
        embc_unlock(&c.seg, s)
    return n
