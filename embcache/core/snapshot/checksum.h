/*
 * The snapshot checksum, "mix64 v1": a 64-bit streaming checksum fast enough
 * that checksumming never limits a snapshot's bandwidth (several GB/s per core).
 *
 * The input is read as little-endian 64-bit words in stripes of 32 bytes; word
 * j of a stripe goes to lane j, each lane being updated by
 *     acc = rotl64(acc + word * P2, 31) * P1
 * (a bijection of acc for a fixed word, so a change confined to one word always
 * changes its lane; four independent lanes keep the multiplier busy). The tail
 * (fewer than 32 bytes) is zero-padded into one last stripe, and the lanes,
 * the byte length and a final avalanche make the 64-bit result. It detects
 * corruption (bit flips, truncation, swapped blocks); it is not a MAC and is not
 * meant to resist someone who forges a file (the loader's bounds checks are what
 * keep a forged file harmless).
 *
 * Plain portable C: no intrinsics, so no per-architecture fallback is needed;
 * on a big-endian host the words are byte-swapped so the checksum of the same
 * bytes is the same everywhere.
 */
#ifndef EMBCACHE_CHECKSUM_H
#define EMBCACHE_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EMBCACHE_MIX_P1 0x9E3779B185EBCA87ULL
#define EMBCACHE_MIX_P2 0xC2B2AE3D27D4EB4FULL
#define EMBCACHE_MIX_P3 0x165667B19E3779F9ULL

typedef struct {
    uint64_t lane[4];
    uint64_t length;             /* bytes absorbed */
    unsigned char pending[32];   /* bytes of an incomplete stripe */
    size_t n_pending;
} embcache_mix_state;

static inline uint64_t embcache_mix_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t embcache_mix_word(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

static inline uint64_t embcache_mix_round(uint64_t acc, uint64_t w) {
    acc += w * EMBCACHE_MIX_P2;
    acc = embcache_mix_rotl(acc, 31);
    return acc * EMBCACHE_MIX_P1;
}

static inline void embcache_mix_init(embcache_mix_state *s, uint64_t seed) {
    s->lane[0] = seed + EMBCACHE_MIX_P1 + EMBCACHE_MIX_P2;
    s->lane[1] = seed + EMBCACHE_MIX_P2;
    s->lane[2] = seed;
    s->lane[3] = seed - EMBCACHE_MIX_P1;
    s->length = 0;
    s->n_pending = 0;
}

static inline void embcache_mix_stripes(uint64_t lane[4], const unsigned char *p, size_t n_stripes) {
    uint64_t a = lane[0], b = lane[1], c = lane[2], d = lane[3];
    size_t i;
    for (i = 0; i < n_stripes; i++, p += 32) {
        a = embcache_mix_round(a, embcache_mix_word(p));
        b = embcache_mix_round(b, embcache_mix_word(p + 8));
        c = embcache_mix_round(c, embcache_mix_word(p + 16));
        d = embcache_mix_round(d, embcache_mix_word(p + 24));
    }
    lane[0] = a; lane[1] = b; lane[2] = c; lane[3] = d;
}

static inline void embcache_mix_update(embcache_mix_state *s, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    size_t take;
    s->length += n;
    if (s->n_pending) {
        take = 32 - s->n_pending;
        if (take > n) take = n;
        memcpy(s->pending + s->n_pending, p, take);
        s->n_pending += take;
        p += take;
        n -= take;
        if (s->n_pending < 32) return;
        embcache_mix_stripes(s->lane, s->pending, 1);
        s->n_pending = 0;
    }
    embcache_mix_stripes(s->lane, p, n / 32);
    p += (n / 32) * 32;
    n %= 32;
    if (n) {
        memcpy(s->pending, p, n);
        s->n_pending = n;
    }
}

static inline uint64_t embcache_mix_final(const embcache_mix_state *s) {
    uint64_t lane[4];
    unsigned char last[32];
    uint64_t h;
    memcpy(lane, s->lane, sizeof(lane));
    if (s->n_pending) {
        memset(last, 0, sizeof(last));
        memcpy(last, s->pending, s->n_pending);
        embcache_mix_stripes(lane, last, 1);
    }
    h = embcache_mix_rotl(lane[0], 1) + embcache_mix_rotl(lane[1], 7)
        + embcache_mix_rotl(lane[2], 12) + embcache_mix_rotl(lane[3], 18);
    h = (h ^ embcache_mix_round(0, lane[0])) * EMBCACHE_MIX_P1 + EMBCACHE_MIX_P3;
    h = (h ^ embcache_mix_round(0, lane[1])) * EMBCACHE_MIX_P1 + EMBCACHE_MIX_P3;
    h = (h ^ embcache_mix_round(0, lane[2])) * EMBCACHE_MIX_P1 + EMBCACHE_MIX_P3;
    h = (h ^ embcache_mix_round(0, lane[3])) * EMBCACHE_MIX_P1 + EMBCACHE_MIX_P3;
    h ^= s->length * EMBCACHE_MIX_P3;
    h ^= h >> 33;
    h *= EMBCACHE_MIX_P2;
    h ^= h >> 29;
    h *= EMBCACHE_MIX_P3;
    h ^= h >> 32;
    return h;
}

/* One-shot checksum of `n` bytes. */
static inline uint64_t embcache_mix64(const void *data, size_t n, uint64_t seed) {
    embcache_mix_state s;
    embcache_mix_init(&s, seed);
    embcache_mix_update(&s, data, n);
    return embcache_mix_final(&s);
}

#endif /* EMBCACHE_CHECKSUM_H */
