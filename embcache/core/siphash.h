/*
 * SipHash-2-4 with 64- and 128-bit output, streaming, written from the
 * specification (Aumasson & Bernstein, "SipHash: a fast short-input PRF",
 * 2012, and the 128-bit variant of the reference implementation).
 *
 * The state absorbs bytes in any split: the core feeds it a key's canonical
 * encoding piece by piece (length prefixes and UTF-8 bodies) without ever
 * building the encoding in a buffer, so hashing a key allocates nothing.
 * Everything here is static inline and touches no Python object.
 */
#ifndef EMBCACHE_SIPHASH_H
#define EMBCACHE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t v0, v1, v2, v3;
    uint64_t tail;      /* bytes not yet absorbed, little-endian in the low bits */
    uint64_t total;     /* bytes absorbed so far (only its low 8 bits reach the hash) */
    int out128;         /* 1: the 128-bit variant */
} embcache_sip_state;

#define EMBCACHE_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline uint64_t embcache_load64_le(const unsigned char *p) {
    return ((uint64_t)p[0]) | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

#define EMBCACHE_SIPROUND(s)                                                   \
    do {                                                                       \
        (s)->v0 += (s)->v1; (s)->v1 = EMBCACHE_ROTL((s)->v1, 13);              \
        (s)->v1 ^= (s)->v0; (s)->v0 = EMBCACHE_ROTL((s)->v0, 32);              \
        (s)->v2 += (s)->v3; (s)->v3 = EMBCACHE_ROTL((s)->v3, 16);              \
        (s)->v3 ^= (s)->v2;                                                    \
        (s)->v0 += (s)->v3; (s)->v3 = EMBCACHE_ROTL((s)->v3, 21);              \
        (s)->v3 ^= (s)->v0;                                                    \
        (s)->v2 += (s)->v1; (s)->v1 = EMBCACHE_ROTL((s)->v1, 17);              \
        (s)->v1 ^= (s)->v2; (s)->v2 = EMBCACHE_ROTL((s)->v2, 32);              \
    } while (0)

static inline void embcache_sip_compress(embcache_sip_state *s, uint64_t m) {
    s->v3 ^= m;
    EMBCACHE_SIPROUND(s);
    EMBCACHE_SIPROUND(s);
    s->v0 ^= m;
}

static inline void embcache_sip_init(embcache_sip_state *s, uint64_t k0, uint64_t k1, int out128) {
    s->v0 = k0 ^ 0x736f6d6570736575ULL;   /* "somepseu" */
    s->v1 = k1 ^ 0x646f72616e646f6dULL;   /* "dorandom" */
    s->v2 = k0 ^ 0x6c7967656e657261ULL;   /* "lygenera" */
    s->v3 = k1 ^ 0x7465646279746573ULL;   /* "tedbytes" */
    if (out128) s->v1 ^= 0xee;
    s->tail = 0;
    s->total = 0;
    s->out128 = out128;
}

static inline void embcache_sip_update(embcache_sip_state *s, const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    size_t have = (size_t)(s->total & 7);
    s->total += len;
    if (have) {                       /* top up the pending partial word */
        while (len && have < 8) {
            s->tail |= (uint64_t)(*p++) << (8 * have++);
            len--;
        }
        if (have < 8) return;
        embcache_sip_compress(s, s->tail);
        s->tail = 0;
    }
    for (; len >= 8; len -= 8, p += 8)
        embcache_sip_compress(s, embcache_load64_le(p));
    for (have = 0; have < len; have++)
        s->tail |= (uint64_t)p[have] << (8 * have);
}

static inline void embcache_sip_update_u64(embcache_sip_state *s, uint64_t x) {
    unsigned char b[8];
    int i;
    for (i = 0; i < 8; i++) b[i] = (unsigned char)(x >> (8 * i));
    embcache_sip_update(s, b, 8);
}

/* Finishes the hash: out[0] is the first 64-bit word of the output (the whole
 * output for SipHash-2-4-64), out[1] the second word of the 128-bit variant. */
static inline void embcache_sip_final(embcache_sip_state *s, uint64_t out[2]) {
    uint64_t b = (s->total << 56) | s->tail;
    int i;
    embcache_sip_compress(s, b);
    s->v2 ^= s->out128 ? 0xee : 0xff;
    for (i = 0; i < 4; i++) EMBCACHE_SIPROUND(s);
    out[0] = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
    out[1] = 0;
    if (s->out128) {
        s->v1 ^= 0xdd;
        for (i = 0; i < 4; i++) EMBCACHE_SIPROUND(s);
        out[1] = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
    }
}

/* SipHash-2-4-64 of exactly 32 bytes (a key's digest), the same function as
 * init/update/final over those bytes, without the streaming bookkeeping: this
 * runs for every key created and every entry removed. */
static inline uint64_t embcache_siphash24_32(uint64_t k0, uint64_t k1, const void *data) {
    const unsigned char *p = (const unsigned char *)data;
    embcache_sip_state s;
    int i;
    embcache_sip_init(&s, k0, k1, 0);
    for (i = 0; i < 4; i++) embcache_sip_compress(&s, embcache_load64_le(p + 8 * i));
    embcache_sip_compress(&s, (uint64_t)32 << 56);
    s.v2 ^= 0xff;
    for (i = 0; i < 4; i++) EMBCACHE_SIPROUND(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

#endif /* EMBCACHE_SIPHASH_H */
