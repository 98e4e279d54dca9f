# Keys: CacheKey, its stable digest and its per-process hash, and key sequences.
#
# Owns: the secret per-process hash key (core/keyhash.h), the canonical encoding of a key
# (docs/guide/keys.md), CacheKey and as_key_tuple. Nothing here touches
# a cache.

# A key's canonical encoding, fed to BLAKE2b piece by piece (nothing is built in
# a buffer): for content_hash then model_version, the UTF-8 length as u64 LE and
# the UTF-8 bytes; then for chunk_id one byte 0x00 if it is None, else 0x01, its
# length as u64 LE and its bytes.
DEF DIGEST_BYTES = 32

# Index positions come from the digest mixed with a key drawn once per process
# (core/keyhash.h), so keys chosen by an attacker cannot be made to collide in
# the index. It never leaves the process: snapshots and tiers name entries by
# digest.
_HASH_KEY = os.urandom(16)
cdef uint64_t K0 = int.from_bytes(_HASH_KEY[:8], "little")
cdef uint64_t K1 = int.from_bytes(_HASH_KEY[8:], "little")


def hash_key() -> bytes:
    """The 16-byte secret key this process uses to place keys in the index."""
    return _HASH_KEY


def key_hash(bytes key not None, bytes digest not None) -> int:
    """The index hash (unsigned 64-bit) of a 32-byte key `digest` under the
    16-byte `key`: core/keyhash.h, which places keys in the core's index
    (under hash_key()) and in a shared segment (under its own key)."""
    cdef uint64_t words[4]
    if len(key) != 16:
        raise ArgumentValueError("a key hash's key is 16 bytes")
    if len(digest) != DIGEST_BYTES:
        raise ArgumentValueError(f"a key digest is {DIGEST_BYTES} bytes")
    memcpy(words, <const char *>digest, DIGEST_BYTES)
    return embcache_key_hash(int.from_bytes(key[:8], "little"),
                             int.from_bytes(key[8:], "little"), words)


def blake2b(bytes data not None, int digest_size=64, bytes key not None=b"") -> bytes:
    """BLAKE2b (RFC 7693) of `data`: `digest_size` bytes (1-64), keyed by `key`
    (at most 64 bytes). The implementation behind CacheKey.digest."""
    cdef embcache_blake2b_state s
    cdef unsigned char out[64]
    if embcache_blake2b_init(&s, digest_size, <const char *>key, len(key)) != 0:
        raise ArgumentValueError("BLAKE2b takes a digest_size of 1-64 and a key of at most 64 bytes")
    embcache_blake2b_update(&s, <const char *>data, len(data))
    embcache_blake2b_final(&s, out)
    return out[:digest_size]


cdef inline uint64_t digest_hash(const uint64_t *digest) noexcept nogil:
    """A key's place in the index: its digest mixed with the process key."""
    return embcache_key_hash(K0, K1, digest)


cdef inline int absorb_str(embcache_blake2b_state *s, str text) except -1:
    cdef Py_ssize_t n
    cdef const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n)
    embcache_blake2b_update_u64le(s, <uint64_t>n)
    embcache_blake2b_update(s, utf8, <size_t>n)
    return 0


cdef inline str required_field(object value, str name):
    if not isinstance(value, str):
        raise KeyTypeError(f"CacheKey {name} must be a str, got {type(value).__name__}")
    if PyUnicode_GET_LENGTH(value) == 0:
        raise InvalidKeyError(f"CacheKey {name} must be a non-empty str")
    return <str>value


cdef object not_utf8(str name, object exc):
    return InvalidKeyError(f"CacheKey {name} is not valid text: it holds a lone surrogate, "
                           f"which has no UTF-8 encoding ({exc})")


@cython.final
@cython.freelist(256)      # keys are made by the thousand and dropped as fast
cdef class CacheKey:
    """Immutable, hashable identity of one embedding: which content, which model,
    which chunk.

    `content_hash` and `model_version` are non-empty strings; `chunk_id` is a
    string or None (None and "" are different keys). `digest` is BLAKE2b-256 of
    the key's length-prefixed UTF-8 encoding, so ("a:b", "c") and ("a", "b:c")
    never meet; it is the same in every process, machine and release.
    """

    def __cinit__(self, content_hash, model_version, chunk_id=None):
        self.content_hash = required_field(content_hash, "content_hash")
        self.model_version = required_field(model_version, "model_version")
        if chunk_id is not None and not isinstance(chunk_id, str):
            raise KeyTypeError(
                f"CacheKey chunk_id must be a str or None, got {type(chunk_id).__name__}")
        self.chunk_id = chunk_id

        cdef embcache_blake2b_state b
        cdef unsigned char tag
        embcache_blake2b_init(&b, DIGEST_BYTES, NULL, 0)
        try:
            absorb_str(&b, self.content_hash)
        except UnicodeEncodeError as exc:
            raise not_utf8("content_hash", exc) from None
        try:
            absorb_str(&b, self.model_version)
        except UnicodeEncodeError as exc:
            raise not_utf8("model_version", exc) from None
        tag = 0 if chunk_id is None else 1
        embcache_blake2b_update(&b, &tag, 1)
        if chunk_id is not None:
            try:
                absorb_str(&b, <str>chunk_id)
            except UnicodeEncodeError as exc:
                raise not_utf8("chunk_id", exc) from None
        embcache_blake2b_final(&b, self.ident.digest)
        self.ident.hash = digest_hash(self.ident.digest)

    @classmethod
    def from_text(cls, text, model_version, chunk_id=None):
        """Key for `text` embedded by `model_version`: content_hash is the SHA-256
        hex digest of the text's UTF-8 encoding."""
        if not isinstance(text, str):
            raise KeyTypeError(f"text must be a str, got {type(text).__name__}")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(f"text holds a lone surrogate, which has no UTF-8 encoding "
                                  f"({exc})") from None
        return CacheKey(hashlib.sha256(data).hexdigest(), model_version, chunk_id)

    @property
    def digest(self):
        """32 bytes: BLAKE2b-256 of the key's canonical encoding, stable across
        processes, machines and releases (it names the entry outside the process)."""
        return (<char *>self.ident.digest)[:DIGEST_BYTES]

    def __hash__(self):
        cdef Py_hash_t h = <Py_hash_t>self.ident.hash
        return -2 if h == -1 else h

    def __eq__(self, other):
        if type(other) is not CacheKey:
            return NotImplemented
        return digests_equal(self.ident.digest, (<CacheKey>other).ident.digest)

    def __ne__(self, other):
        if type(other) is not CacheKey:
            return NotImplemented
        return not digests_equal(self.ident.digest, (<CacheKey>other).ident.digest)

    def __repr__(self):
        return (f"CacheKey(content_hash={self.content_hash!r}, "
                f"model_version={self.model_version!r}, chunk_id={self.chunk_id!r})")

    def __reduce__(self):
        return (CacheKey, (self.content_hash, self.model_version, self.chunk_id))


cdef inline bint digests_equal(const uint64_t *a, const uint64_t *b) noexcept nogil:
    return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0


cdef CacheKey _probe_key = CacheKey("probe", "probe")
KEY_IDENT_OFFSET = <char *>&_probe_key.ident - <char *><PyObject *>_probe_key
_probe_key = None


def as_key_tuple(keys, str caller not None):
    """`keys` as a tuple of CacheKey (a tuple cannot change under a loop that has
    dropped the GIL). KeyTypeError, naming `caller`, for a single key, a string
    or a non-iterable, and naming the first item that is not a CacheKey."""
    if type(keys) is CacheKey:
        raise KeyTypeError(f"{caller} takes a sequence of CacheKey, got a single CacheKey")
    if isinstance(keys, (str, bytes)):
        raise KeyTypeError(f"{caller} takes a sequence of CacheKey, got {type(keys).__name__}")
    cdef tuple seq
    try:
        seq = keys if type(keys) is tuple else tuple(keys)
    except TypeError:
        raise KeyTypeError(
            f"{caller} takes a sequence of CacheKey, got {type(keys).__name__}") from None
    cdef Py_ssize_t i
    for i in range(len(seq)):
        if type(seq[i]) is not CacheKey:
            raise KeyTypeError(f"keys[{i}] must be a CacheKey, got {type(seq[i]).__name__}")
    return seq


cdef inline int check_key(object key) except -1:
    if type(key) is not CacheKey:
        raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
    return 0
