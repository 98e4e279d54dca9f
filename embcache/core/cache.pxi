# SyncEmbeddingCache: the public, thread-safe face of one Table.
#
# Owns: argument checking, the lock, the clock, and the calls into the table.
# Every method follows one pattern: check and convert its arguments (raising
# leaves the cache untouched), read a user clock, take the lock, call table
# functions that cannot fail (or fail before changing anything), drop the lock,
# then build whatever Python objects it returns.


# embcache.flight.registry.Flights, imported on the first get_or_compute: single
# flight is a layer below the core (it imports nothing of it), loaded only when used
cdef object _Flights = None


cdef object _flights_of(SyncEmbeddingCache cache):
    """The cache's single-flight registry, made now if it has none yet."""
    global _Flights
    if _Flights is None:
        from embcache.flight.registry import Flights
        _Flights = Flights
    flights = _Flights(cache, CacheKey, PutBatch, as_key_tuple)
    # threads racing on a new cache share one: the first one set wins (the
    # check and the assignment run without releasing the GIL)
    if cache._flights is None:
        cache._flights = flights
    return cache._flights


# policy= names -> POLICY_* kinds (core/policy.pxi), and back
cdef dict POLICIES = {"lru": POLICY_LRU, "tinylfu": POLICY_TINYLFU}
cdef tuple POLICY_NAMES = ("lru", "tinylfu")


cdef inline double monotonic_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef str name_dims(const dim_t *named, int n_dims):
    listed = ", ".join([str(named[i]) for i in range(min(n_dims, NAMED_DIMS))])
    if n_dims > NAMED_DIMS:
        return f"more than {NAMED_DIMS} different dimensions ({listed}, ...)"
    return f"{n_dims} different dimensions ({listed})"


@cython.final
cdef class SyncEmbeddingCache:
    """Thread-safe, synchronous embedding cache: the core behind EmbeddingCache.

    SyncEmbeddingCache(max_entries=100_000, ttl_seconds=None, max_memory_mb=512.0,
                       *, dim=None, clock=None, policy="lru", storage="float32", name=None)

    Vectors are stored as rows of a slab, one per distinct dimension,
    each reserving at once every row it may ever need (the OS maps pages in as
    rows are written); with `dim` given, that slab is reserved here. The entry
    table and the index grow with use, so large bounds cost nothing up front.
    When `max_entries` or `max_memory_mb` would be exceeded, expired entries go
    first, then the policy's victims: least-recently-used ones under
    ``policy="lru"``; under ``policy="tinylfu"`` (W-TinyLFU: an admission window,
    a segmented main region and a frequency sketch, docs/guide/policies.md)
    the window's oldest entry enters the main region only if it was accessed
    more often than the entries it would displace. `ttl_seconds` expires an entry that
    long after its last write (None: never). `clock` is a zero-argument callable
    returning monotonic seconds (tests); by default the C monotonic clock is read.

    `storage` is how rows hold vectors: "float32" (dim x 4 bytes, exact),
    "float16" or "bfloat16" (dim x 2 bytes, rounded to nearest even) or "int8"
    (dim + 4 bytes: one float32 scale, absmax / 127, and dim values rounded half
    to even; an all-zero vector stays exact). Lookups always return float32,
    decoded; the memory bound counts each entry's row bytes in its storage. A
    value the storage cannot hold (|x| > 65504 for float16) is rejected like NaN.
    `name` labels the cache in monitoring (embcache.metrics), never in keys:
    1 to 64 characters from ``A-Za-z0-9_.:-``; None: a generated ``embcache-N``
    (embcache.core.names). Bad arguments raise ArgumentTypeError / ArgumentValueError.
    """

    def __cinit__(self, max_entries=100_000, ttl_seconds=None, max_memory_mb=512.0,
                  *, dim=None, clock=None, policy="lru", storage="float32", name=None):
        # the Table is zeroed with the object, so __dealloc__ is safe from here on
        cdef Py_ssize_t max_entries_ = as_count(max_entries, "max_entries", 1, MAX_SLOTS)
        cdef double ttl = 0.0
        if ttl_seconds is not None:
            ttl = as_positive_number(ttl_seconds, "ttl_seconds")
            if ttl == INFINITY:
                ttl = 0.0
        mb = as_positive_number(max_memory_mb, "max_memory_mb")
        if mb >= 2.0 ** 42:
            raise ArgumentValueError(f"max_memory_mb must be finite and below 2**42, got {max_memory_mb!r}")
        cdef dim_t dim_ = 0
        if dim is not None:
            dim_ = as_count(dim, "dim", 1, 2 ** 40)
        if clock is not None:
            if not callable(clock):
                raise ArgumentTypeError(
                    f"clock must be a callable returning seconds, got {type(clock).__name__}")
            read_clock(clock)     # fail now, not at the first put
        if not isinstance(policy, str):
            raise ArgumentTypeError(f"policy must be a str, got {type(policy).__name__}")
        if policy not in POLICIES:
            raise ArgumentValueError(
                f"policy must be one of {', '.join(map(repr, POLICIES))}, got {policy!r}")
        cdef int policy_kind = POLICIES[policy]
        cdef int storage_kind = codec_storage(storage)
        cdef Py_ssize_t budget = <Py_ssize_t>math.floor(mb * 1048576.0)
        cdef Py_ssize_t fixed = 0, per_entry = 0
        if policy_kind == POLICY_TINYLFU:
            fixed = <Py_ssize_t>(sketch_words_for(
                tinylfu_capacity(<slot_t>max_entries_, budget, dim_, storage_kind), budget) * 8)
            per_entry = POLICY_SLOT_BYTES
        if dim_ and entry_bytes(storage_kind, dim_) + per_entry + fixed > budget:
            raise EntryTooLargeError(
                f"max_memory_mb={max_memory_mb!r} cannot hold even one vector of dim {dim_} "
                f"({entry_bytes(storage_kind, dim_) + per_entry} bytes with metadata"
                + (f", after the policy's {fixed} bytes)" if fixed else ")"))
        self.clock = clock
        self.max_memory_mb_arg = max_memory_mb
        self.ttl_seconds_arg = ttl_seconds
        table_init(&self.table, <slot_t>max_entries_, budget, ttl, dim_, clock is not None,
                   storage_kind)
        if policy_init(&self.table, policy_kind) != 0:
            raise MemoryError("could not allocate the W-TinyLFU frequency sketch")
        self.max_fit_dim = largest_fitting_dim(&self.table)
        # The tables start small and grow with use (up to the bounds), whatever the
        # limits: a huge max_entries costs nothing until entries arrive. A fixed
        # dim's slab reserves its address space now; pages map in as rows are written.
        if resize_index(&self.table, MIN_INDEX_CELLS) != 0:
            raise MemoryError()
        if dim_ and add_slab(&self.table, dim_) < 0:
            raise MemoryError(f"could not reserve the slab for vectors of dim {dim_}")
        self.name = check_name(name)
        _live_caches.add(self)
        track_named("cache", self)

    def __dealloc__(self):
        table_free(&self.table)

    # -- time ----------------------------------------------------------------------

    cdef double now_unlocked(self) except? -1.0:
        """A user clock's reading, taken before the lock (0 when nothing expires)."""
        if self.table.ttl_seconds > 0 and self.table.user_clock:
            return read_clock(self.clock)
        return 0.0

    cdef double now_locked(self, double given) noexcept nogil:
        cdef Table *t = &self.table
        if t.ttl_seconds <= 0:
            return 0.0
        if not t.user_clock:
            return monotonic_now()
        # A user clock is read before the lock is taken, so a thread may arrive
        # with an older reading than one already used: never go back in time
        # (write order must stay expiry order).
        if given < t.last_now:
            return t.last_now
        t.last_now = given
        return given

    # -- checks shared by the methods --------------------------------------------------

    cdef int check_dim(self, dim_t dim, str what) except -1:
        if self.table.dim and dim != self.table.dim:
            raise DimensionMismatchError(
                f"{what} has dim {dim}, but this cache stores dim {self.table.dim}")
        cdef Py_ssize_t need, room
        if dim > self.max_fit_dim:
            need = entry_bytes(self.table.storage, dim) + self.table.policy_entry_bytes
            room = self.table.memory_budget_bytes - self.table.policy_fixed_bytes
            raise EntryTooLargeError(
                f"{what}: a vector of dim {dim} needs {need} bytes with metadata, "
                f"more than the whole budget of {room} bytes "
                f"(max_memory_mb={self.max_memory_mb_arg!r}"
                + (f", less the policy's {self.table.policy_fixed_bytes} bytes)"
                   if self.table.policy_fixed_bytes else ")"))
        self.last_dim = dim  # the next batch lookup's guess (core/lookup.pxi): the dim last stored
        return 0

    # -- single entries ------------------------------------------------------------

    def put(self, key, vector):
        """Store a float32 copy of `vector` under `key` (encoded in the cache's
        `storage`).

        `vector` is any 1-D array-like of real numbers (lists, tuples, any real
        dtype, any strides); the caller may reuse its buffer at once. Overwriting
        a key replaces the vector, renews its TTL and makes it most recent. When
        the cache is full (entries or memory), expired entries go first, then
        the policy's victims: least-recently-used ones under "lru"; under
        "tinylfu" the new key always enters the admission window, and the
        window's oldest entry either displaces colder main-region entries or is
        itself evicted (an admission rejection, counted in CacheInfo, never an
        error). A rejected call leaves the cache unchanged:
        KeyTypeError for a key that is not a CacheKey, VectorTypeError for data
        that is not real numbers, InvalidVectorError for a vector that is not
        1-D, is empty, holds NaN/inf or a value the storage cannot hold (naming
        its position and the storage), DimensionMismatchError for a dimension
        other than the fixed `dim`, EntryTooLargeError when one entry exceeds the
        whole memory budget.
        """
        check_key(key)
        cdef Source src
        owner = read_vector(vector, &src)     # keeps the memory src points at alive
        self.check_dim(src.n, "vector")       # before any pass over the values
        cdef bint long_copy = <size_t>src.n * 4 >= GIL_FREE_COPY_BYTES
        cdef Py_ssize_t bad
        if long_copy:
            with nogil:
                bad = first_unstorable_in(self.table.storage, &src)
        elif self.table.storage == EMBCACHE_STORE_F32:
            bad = first_unstorable(&src)
        else:
            bad = first_unstorable_in(self.table.storage, &src)
        if bad >= 0:
            raise unstorable_error(f"vector[{bad}]", &src, bad, self.table.storage)
        cdef double given = self.now_unlocked()
        cdef int32_t slab_index
        cdef const KeyId *k = &(<CacheKey>key).ident
        embcache_lock_acquire(&self.lock)
        slab_index = prepare_put(&self.table, src.n, 1)
        if slab_index >= 0:
            if long_copy:
                with nogil:
                    store(&self.table, k, &src, slab_index, self.now_locked(given))
            else:
                store(&self.table, k, &src, slab_index, self.now_locked(given))
        embcache_lock_release(&self.lock)
        if slab_index < 0:
            raise MemoryError(f"could not allocate room for a vector of dim {src.n}")

    def get(self, key):
        """The vector stored under `key` as a new float32 array of shape (dim,)
        (decoded from the cache's `storage`),
        owned by the caller; None on a miss. A hit makes the entry most recent
        (its TTL is unchanged); an expired entry is a miss and is reclaimed."""
        check_key(key)
        cdef double given = self.now_unlocked()
        cdef slot_t s
        cdef cnp.npy_intp dim
        cdef cnp.ndarray out = None
        cdef Table *t = &self.table
        embcache_lock_acquire(&self.lock)
        try:
            s = find(t, &(<CacheKey>key).ident)
            if s != NO_SLOT and t.ttl_seconds > 0 and expired(t, s, self.now_locked(given)):
                t.stats.expirations += 1
                discard(t, s)
                s = NO_SLOT
            if s == NO_SLOT:
                t.stats.misses += 1
                policy_on_miss(t, &(<CacheKey>key).ident)
                return None
            # The one object built under the lock: numpy arrays are not tracked by
            # the garbage collector, so allocating one cannot run code that
            # re-enters; if it fails (MemoryError), the finally drops the lock.
            dim = dim_of(t, s)
            out = embc_row_array(dim)
            copy_row_out(t, <float32_t *>cnp.PyArray_DATA(out), row_of(t, s), dim)
            t.stats.hits += 1
            policy_on_hit(t, s)
            return out
        finally:
            embcache_lock_release(&self.lock)

    def remove(self, key):
        """Delete `key`; True if a live entry was removed (expired counts as absent)."""
        check_key(key)
        cdef double given = self.now_unlocked()
        cdef slot_t s
        embcache_lock_acquire(&self.lock)
        s = find_live(&self.table, &(<CacheKey>key).ident, self.now_locked(given))
        if s != NO_SLOT:
            self.table.stats.removals += 1
            discard(&self.table, s)
        embcache_lock_release(&self.lock)
        return s != NO_SLOT

    def __contains__(self, key):
        """Whether `key` has a live entry. No stats, no recency change."""
        check_key(key)
        cdef double given = self.now_unlocked()
        cdef slot_t s
        cdef bint live
        embcache_lock_acquire(&self.lock)
        s = find(&self.table, &(<CacheKey>key).ident)
        live = s != NO_SLOT and not expired(&self.table, s, self.now_locked(given))
        embcache_lock_release(&self.lock)
        return live

    # -- batches -------------------------------------------------------------------

    def get_many(self, keys, out=None):
        """Look up many keys at once: returns ``(matrix, found)``.

        `matrix` is a C-contiguous float32 array of shape (len(keys), dim) whose
        row i is the vector of keys[i], or zeros when keys[i] missed; `found` is a
        bool array of shape (len(keys),). Duplicated keys are fine; every key
        counts as one hit or one miss, and hits become most recent. When nothing
        fixes the dimension (no hit, no fixed `dim`, no `out`), matrix has shape
        (len(keys), 0). With `out` (a writable, C-contiguous float32 array of shape
        (len(keys), dim)) the rows are written there and `out` is returned.

        Raises KeyTypeError for a key that is not a CacheKey,
        DimensionMismatchError when live entries of several dimensions are
        requested together (naming them) or `out` has the wrong dimension, and
        ArgumentTypeError / ArgumentValueError for a bad `out`; the cache is then
        unchanged. Row copies of large batches run without the GIL.
        """
        cdef tuple seq = as_key_tuple(keys, "get_many")
        cdef Py_ssize_t n = len(seq)
        cdef dim_t dim
        cdef int outcome
        if out is None and not self.table.dim and self.last_dim:
            # no fixed dim: guess the last lookup's, checked and read under one lock
            matrix = np.empty((n, self.last_dim), dtype=np.float32)
            found = np.empty(n, dtype=np.bool_)
            outcome = read_guessed(self, seq, matrix, found)
            if outcome == 1:
                return matrix, found
            if outcome == 2:
                return np.empty((n, 0), dtype=np.float32), found
        dim = check_out(self, out, n) if out is not None else -1
        dim = decide_dim(self, seq, dim)
        matrix = out if out is not None else np.empty((n, dim), dtype=np.float32)
        found = np.empty(n, dtype=np.bool_)
        read_rows(self, seq, 0, n, matrix, found)
        return matrix, found

    def put_many(self, keys, matrix):
        """Store row i of `matrix` under keys[i], as if by put() in order.

        `matrix` is any (len(keys), dim) real array-like (any real dtype, any
        strides). Everything is checked before anything is stored, so a bad row
        stores nothing; errors are those of put(), naming the row and element.
        Rows are copied without the GIL when the batch is large.
        """
        cdef tuple seq = as_key_tuple(keys, "put_many")
        cdef Py_ssize_t n = len(seq)
        cdef Source first
        cdef Py_ssize_t row_stride
        owner = read_matrix(matrix, n, "matrix", &first, &row_stride)
        if n == 0:
            return
        self.check_dim(first.n, "matrix")
        check_rows(&first, row_stride, 0, n, "matrix", self.table.storage)
        store_matrix(self, seq, 0, n, &first, row_stride)

    def put_batch(self, keys, matrix, *, str what not None="matrix", dim=None):
        """A PutBatch of `matrix`'s rows under `keys`, bound to this cache: the
        keys, the matrix's type and shape and its dimension (against this
        cache's `dim`, its budget and `dim` if given) are checked now; nothing is
        stored. ``take()`` then checks the values into a private copy (in slices
        if wanted) and ``store()`` stores them. Error messages start with `what`."""
        return PutBatch.create(self, keys, matrix, what, dim)

    def get_batch(self, keys, out=None):
        """A GetBatch for `keys`, bound to this cache: the keys and `out` are
        checked and the batch's dimension decided now (as get_many would, raising
        what it would raise); nothing changes and nothing is counted until
        ``read()`` looks keys up (in slices if wanted)."""
        return GetBatch.create(self, keys, out)

    def get_or_compute(self, keys, compute, *, timeout=None):
        """The (len(keys), dim) float32 matrix for `keys`, computing only what is
        missing: ``compute(missing_keys)`` is called at most once, with the
        distinct missing keys in order, and must return an (m, dim) array-like;
        its rows are stored. Single flight: a key another caller is already
        computing is waited for, not computed again. If compute raises, nothing
        is stored and every waiter for those keys gets (a copy of) the exception.
        `timeout` (seconds, or None) bounds the whole call: a caller still waiting
        then raises FlightTimeoutError (a TimeoutError); a compute running in
        this thread is never interrupted."""
        flights = self._flights
        if flights is None:
            flights = _flights_of(self)
        return flights.get_or_compute(keys, compute, timeout=timeout)

    @property
    def flights(self):
        """The single-flight registry behind get_or_compute (made on first use;
        embcache.flight.registry.Flights)."""
        flights = self._flights
        if flights is None:
            flights = _flights_of(self)
        return flights

    # -- the whole cache -------------------------------------------------------------

    def clear(self):
        """Remove every entry. Statistics (hits, misses, ...) are kept. A cache
        with a fixed `dim` keeps its slab's memory for refilling; one without
        returns its slabs to the OS."""
        embcache_lock_acquire(&self.lock)
        clear_table(&self.table)
        embcache_lock_release(&self.lock)

    def __len__(self):
        """Live entries (expired ones are reclaimed first and not counted)."""
        cdef double given = self.now_unlocked()
        cdef slot_t size
        embcache_lock_acquire(&self.lock)
        purge_expired(&self.table, self.now_locked(given))
        size = self.table.size
        embcache_lock_release(&self.lock)
        return size

    def get_cache_info(self):
        """A CacheInfo snapshot: size, bounds, exact memory accounting and stats."""
        return cache_info(self)

    # -- snapshots (core/snapshot/save.pxi, core/snapshot/load.pxi) ------------------------------

    def save(self, path):
        """Write every live entry to the snapshot file `path`; returns how many.

        The file names each entry by its stable ``CacheKey.digest`` and keeps its
        vector, its remaining TTL (as a wall-clock expiry) and the recency order;
        the limits are recorded too. It is written to a temporary file in the same
        folder, fsynced and renamed over `path` (the folder fsynced after), so a
        crash or a full disk leaves the previous snapshot intact; a failure raises
        OSError and leaves no temporary file. A `path` that is a symbolic link is
        written through: the file it names is replaced the same way, the link kept.
        A folder that is missing raises FileNotFoundError, one that is a file
        SnapshotFolderError (an OSError, errno ENOTDIR). The cache lock is held only in short
        steps (rows are copied ~4 MiB at a time, file writes and checksums run
        without the lock and the GIL): other threads keep using the cache, and an
        entry they remove or rewrite meanwhile is left out or saved as rewritten.
        """
        return snapshot_save(self, path)

    @classmethod
    def load(cls, path, *, max_entries=UNSET, ttl_seconds=UNSET, max_memory_mb=UNSET,
             dim=UNSET, clock=None, policy="lru", storage=UNSET, name=None):
        """A new cache holding the entries of the snapshot file `path`.

        Every keyword is optional: a limit not given is the one the snapshot
        recorded (``ttl_seconds=None`` / ``dim=None`` given explicitly mean no
        TTL / any dimension). Entries whose expiry passed while on disk are
        dropped; the rest keep their remaining TTL (cut to `ttl_seconds` if that
        is shorter; a snapshot without TTL loaded with one gives every entry a
        fresh TTL) and their recency order. When the limits are smaller, the most
        recent entries that fit are kept, under any policy. Statistics start at zero. `clock` and
        `policy` are the constructor's (the snapshot records neither; under
        "tinylfu" the loaded entries start with an empty frequency sketch), and
        so is `name`.

        `storage` not given is the snapshot's: its rows are restored byte for
        byte, nothing rounded again. Given another, every vector is converted
        (decoded to float32, then encoded in `storage`): InvalidVectorError names
        the first entry whose values the new storage cannot hold (a float16 load
        of values beyond 65504), and no cache is returned. Snapshots of format
        versions 1 and 2 (before storage=) hold float32 rows.

        Everything is checked before a cache is returned: SnapshotError (a
        ValueError) says what is wrong with an empty, truncated, corrupt, spliced
        (mixing two saves' bytes), foreign or other-version file, FileNotFoundError
        for a missing one,
        DimensionMismatchError when `dim` differs from the snapshot's vectors,
        and the constructor's errors for bad limits.
        """
        named = None if name is None else check_name(name)  # checked before reading
        cache = snapshot_load(path, max_entries, ttl_seconds, max_memory_mb, dim, clock, policy,
                              storage)
        if named is not None:
            cache.name = named
        return cache

    @property
    def max_entries(self):
        """The bound on the number of entries."""
        return self.table.max_entries

    @property
    def max_memory_mb(self):
        """The memory budget in MiB, as given."""
        return self.max_memory_mb_arg

    @property
    def ttl_seconds(self):
        """Seconds an entry lives after its last write, or None."""
        return self.ttl_seconds_arg

    @property
    def policy(self):
        """The eviction policy: "lru" or "tinylfu"."""
        return POLICY_NAMES[self.table.policy]

    @property
    def storage(self):
        """How rows hold vectors: "float32", "float16", "bfloat16" or "int8"."""
        return CODEC_STORAGES[self.table.storage]

    @property
    def dim(self):
        """The fixed vector dimension, or None when any dimension is accepted."""
        return self.table.dim or None

    def __repr__(self):
        return (f"SyncEmbeddingCache(size={self.table.size}, max_entries={self.table.max_entries}, "
                f"memory={self.table.used_bytes} of {self.table.memory_budget_bytes} bytes, "
                f"ttl_seconds={self.ttl_seconds_arg!r}, dim={self.table.dim or None}, "
                f"policy={POLICY_NAMES[self.table.policy]!r}, "
                f"storage={CODEC_STORAGES[self.table.storage]!r})")

    def _probe_lengths(self):
        """``(mean, longest)`` cells a lookup of a live key visits (1.0 is every key
        in its home cell); for tests and benchmarks of hostile key sets."""
        cdef size_t total, longest
        cdef slot_t size
        embcache_lock_acquire(&self.lock)
        probe_lengths(&self.table, &total, &longest)
        size = self.table.size
        embcache_lock_release(&self.lock)
        return (<double>total / size if size else 0.0), longest

    def _check_invariants(self):
        """Walk every structure and raise AssertionError on the first broken
        invariant (index <-> policy <-> expiry list <-> free slots <-> slab rows <->
        accounting). O(capacity); for tests and debugging."""
        cdef Violation v
        cdef int broken
        embcache_lock_acquire(&self.lock)
        broken = check_table(&self.table, &v)
        embcache_lock_release(&self.lock)
        if broken:
            raise AssertionError(VIOLATIONS[v.code].format(a=v.a, b=v.b, c=v.c))
