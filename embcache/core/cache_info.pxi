# The CacheInfo snapshot of one cache (SyncEmbeddingCache.get_cache_info).
#
# Owns: reading the table's counts, bounds and memory (resident pages included)
# under the cache's lock, C values only, and building the CacheInfo after the
# lock is released.


cdef object cache_info(SyncEmbeddingCache cache):
    """A CacheInfo snapshot of `cache`: size, bounds, exact memory accounting and stats."""
    cdef double given = cache.now_unlocked()
    cdef Table *t = &cache.table
    cdef int32_t i, n_dims = 0
    cdef Py_ssize_t allocated, reserved = 0, size, used
    cdef Stats stats
    cdef unsigned long long rejections
    cdef dim_t *live_dims
    # Only C values are gathered under the lock: creating Python objects there
    # could start a garbage collection whose finalizers re-enter the cache.
    embcache_lock_acquire(&cache.lock)
    purge_expired(t, cache.now_locked(given))
    # the entry table and the index: whole pages once they have mappings of their own
    allocated = (<Py_ssize_t>embcache_table_footprint(<size_t>t.entry_capacity * sizeof(Entry))
                 + <Py_ssize_t>embcache_table_footprint((t.cell_mask + 1) * sizeof(Cell))
                 + <Py_ssize_t>t.slab_capacity * (sizeof(Slab) + 2 * sizeof(int32_t))
                 + policy_allocated_bytes(t))
    live_dims = <dim_t *>malloc((t.n_slabs + 1) * sizeof(dim_t))
    for i in range(t.n_slabs):
        # the kernel says which of the pages the written rows may hold are in
        allocated += <Py_ssize_t>resident_bytes(&t.slabs[i])
        reserved += <Py_ssize_t>slab_bytes(&t.slabs[i])
        if t.slabs[i].used and live_dims != NULL:
            live_dims[n_dims] = t.slabs[i].dim
            n_dims += 1
    size = t.size
    used = t.used_bytes
    stats = t.stats
    rejections = t.admission_rejections
    embcache_lock_release(&cache.lock)
    if live_dims == NULL:
        raise MemoryError()
    dims = sorted([live_dims[i] for i in range(n_dims)])
    free(live_dims)
    lookups = stats.hits + stats.misses
    return CacheInfo(
        size=size,
        max_entries=t.max_entries,
        memory_usage_bytes=used,
        memory_usage_mb=used / 1048576.0,
        max_memory_mb=cache.max_memory_mb_arg,
        hits=stats.hits,
        misses=stats.misses,
        hit_rate=stats.hits / lookups if lookups else 0.0,
        evictions=stats.evictions,
        expirations=stats.expirations,
        puts=stats.puts,
        overwrites=stats.overwrites,
        removals=stats.removals,
        ttl_seconds=cache.ttl_seconds_arg,
        dim=t.dim or None,
        dims=tuple(dims),
        entry_overhead_bytes=ENTRY_OVERHEAD + t.policy_entry_bytes,
        memory_budget_bytes=t.memory_budget_bytes,
        allocated_bytes=allocated,
        reserved_bytes=reserved,
        policy=POLICY_NAMES[t.policy],
        admission_rejections=rejections,
        policy_bytes=t.policy_fixed_bytes,
        storage=CODEC_STORAGES[t.storage],
    )
