# The frequency sketch of W-TinyLFU: a count-min sketch of 4-bit counters with
# periodic halving (TinyLFU's "reset" aging), over Table.sketch.
#
# Owns: sketch sizing, increment, estimate and halving. The sketch is an array of
# 64-bit words, each holding sixteen 4-bit counters, grouped in blocks of eight
# words (one 64-byte cache line). A key touches exactly one block: its four
# counters sit in four different word pairs of that block, so an increment or
# an estimate reads one cache line. The estimate is the smallest of the four.
#
# What a key is hashed from: the 30 key bits the policy keeps per slot, which
# are the low 32 bits of the key's index hash (the digest mixed with the process
# key, core/keyhash.h) shifted right by 2. Those bits are spread to 64
# with the SplitMix64 finalizer; the block comes from the low bits, the word
# choices from bits 32-35 and the counters from bits 36-51. tests/model_tinylfu.py
# computes exactly this from embcache._core.hash_key() and key_hash().
#
# Halving: after `sketch_period` (10 x the policy capacity) increments that
# changed a counter, every counter is halved and the increment count too, so
# the sketch forgets old popularity (the paper's reset operation).

DEF SKETCH_BLOCK_WORDS = 8
DEF SKETCH_PERIOD_PER_ENTRY = 10
DEF COUNTER_MAX = 15


cdef size_t sketch_words_for(Py_ssize_t capacity, Py_ssize_t budget) noexcept nogil:
    """Words for a cache of `capacity` entries: the power of two >= capacity (one
    word, sixteen counters, per entry), at least one block, and halved while it
    would take more than an eighth of the byte budget."""
    cdef size_t words = SKETCH_BLOCK_WORDS
    while words < <size_t>capacity:
        words *= 2
    while words > SKETCH_BLOCK_WORDS and words * 8 > <size_t>(budget // 8):
        words //= 2
    return words


cdef inline uint64_t sketch_spread(uint32_t bits) noexcept nogil:
    cdef uint64_t z = <uint64_t>bits + 0x9E3779B97F4A7C15ULL
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline int sketch_frequency(const Table *t, uint32_t bits) noexcept nogil:
    """The estimated recent accesses of the key with these bits (0 to 15)."""
    cdef uint64_t z = sketch_spread(bits)
    cdef const uint64_t *block = t.sketch + ((<size_t>z & (t.sketch_words - 1))
                                             & ~(<size_t>SKETCH_BLOCK_WORDS - 1))
    cdef int i, count, least = COUNTER_MAX
    cdef uint64_t word
    for i in range(4):
        word = block[2 * i + ((z >> (32 + i)) & 1)]
        count = <int>((word >> (((z >> (36 + 4 * i)) & 15) << 2)) & 15)
        if count < least:
            least = count
    return least


cdef void sketch_halve(Table *t) noexcept nogil:
    cdef size_t i
    for i in range(t.sketch_words):
        t.sketch[i] = (t.sketch[i] >> 1) & 0x7777777777777777ULL
    t.sketch_added >>= 1


cdef inline void sketch_increment(Table *t, uint32_t bits) noexcept nogil:
    """Count one access of the key with these bits (saturating at 15 each)."""
    cdef uint64_t z = sketch_spread(bits)
    cdef uint64_t *block = t.sketch + ((<size_t>z & (t.sketch_words - 1))
                                       & ~(<size_t>SKETCH_BLOCK_WORDS - 1))
    cdef int i
    cdef unsigned int shift
    cdef bint added = False
    cdef uint64_t *word
    for i in range(4):
        word = &block[2 * i + ((z >> (32 + i)) & 1)]
        shift = <unsigned int>(((z >> (36 + 4 * i)) & 15) << 2)
        if ((word[0] >> shift) & 15) != COUNTER_MAX:
            word[0] += (<uint64_t>1) << shift
            added = True
    if added:
        t.sketch_added += 1
        if t.sketch_added >= t.sketch_period:
            sketch_halve(t)
