/*
 * A key's place in an index: its digest (BLAKE2b-256 of the key, the same in
 * every process) mixed with a secret 128-bit key by three 64 x 64 -> 128-bit
 * multiplies, each folded (the mixing step of wyhash and of Go's map hash).
 *
 * No caller chooses a digest's bits, and the secret is drawn per process (the
 * core, core/key.pxi) or per segment (embcache.shared): without it nobody can
 * pick keys that crowd one cell or stripe, since trying keys offline needs it.
 * About 15 instructions where SipHash-2-4 of the 32 bytes, the core's hash
 * before, took about 300: a put that evicts hashes its victim's digest again to
 * find its cell, and embcache.shared's get_many hashes every key it is given.
 * The segment format (shared/segment.h, version 2) fixes this function's
 * output: changing it changes the format.
 */
#ifndef EMBCACHE_KEYHASH_H
#define EMBCACHE_KEYHASH_H

#include <stdint.h>

static inline uint64_t embcache_mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t embcache_key_hash(uint64_t k0, uint64_t k1, const uint64_t digest[4])
{
    uint64_t x = embcache_mum(digest[0] ^ k0, digest[1] ^ k1 ^ 0xa0761d6478bd642fULL);
    uint64_t y = embcache_mum(digest[2] ^ k1, digest[3] ^ k0 ^ 0xe7037ed1a0b428dbULL);
    return embcache_mum(x ^ 0x8ebc6af09c88c6e3ULL, y ^ 0x589965cc75374cc3ULL);
}

#endif
