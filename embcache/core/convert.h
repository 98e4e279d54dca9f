/*
 * Row codecs: float32 rows to and from their stored encodings.
 *
 *   float32   dim x 4 bytes (a plain copy)
 *   float16   dim x 2 bytes, little-endian IEEE binary16, round to nearest even
 *   bfloat16  dim x 2 bytes, little-endian, the top half of the float32 rounded to nearest even
 *   int8      a little-endian float32 scale (absmax / 127), then dim int8 values
 *             (one ulp less when 127 x scale would round to infinity, so decoding never overflows)
 *             q = round-half-to-even(x / scale) clamped to [-127, 127]; a row whose scale is 0
 *             (all zeros, or every value below about 1.8e-43) stores q = 0 and decodes to zeros
 *
 * encode/decode take any alignment for the encoded side. embcache_first_unstorable names the
 * values an encoding cannot hold: NaN and infinity everywhere, |x| > 65504 for float16, values
 * that round to infinity for bfloat16. Encoding a row that holds such a value gives unspecified
 * bytes (never undefined behaviour); callers check first.
 *
 * The portable C below is the reference; faster kernels for the running CPU are chosen at run
 * time and give bit-identical bytes and floats. None of these functions touches Python.
 */
#ifndef EMBCACHE_CONVERT_H
#define EMBCACHE_CONVERT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define EMBCACHE_MAYBE_UNUSED __attribute__((unused))
#else
#define EMBCACHE_MAYBE_UNUSED
#endif

enum { EMBCACHE_STORE_F32 = 0, EMBCACHE_STORE_F16 = 1, EMBCACHE_STORE_BF16 = 2, EMBCACHE_STORE_I8 = 3 };

/* --- scalar helpers --------------------------------------------------------------------------- */

static inline uint32_t embcache_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float embcache_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline void embcache_store_u16_le(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v & 0xffu);
    p[1] = (unsigned char)(v >> 8);
}

static inline uint16_t embcache_load_u16_le(const unsigned char *p) {
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}

static inline void embcache_store_u32_le(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v & 0xffu);
    p[1] = (unsigned char)((v >> 8) & 0xffu);
    p[2] = (unsigned char)((v >> 16) & 0xffu);
    p[3] = (unsigned char)(v >> 24);
}

static inline uint32_t embcache_load_u32_le(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* float32 -> binary16 bits, round to nearest even; subnormals, signed zeros, overflow to infinity. */
static inline uint16_t embcache_f32_to_f16(float f) {
    uint32_t x = embcache_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    uint32_t h;
    if (ax >= 0x7f800000u) /* infinity stays infinity, NaN stays a quiet NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x0200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) /* 65520 and above round to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) { /* the result is normal: |f| >= 2^-14 */
        uint32_t rem = ax & 0x1fffu;
        h = (ax >> 13) - (112u << 10);
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
            h += 1u; /* a carry into the exponent is the right answer */
        return (uint16_t)(sign | h);
    }
    if (ax <= 0x33000000u) /* at most half the smallest subnormal (2^-25): rounds to zero */
        return (uint16_t)sign;
    {
        /* subnormal result: value = m * 2^(e - 150), in units of 2^-24 that is m >> (126 - e) */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14 .. 24 */
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        h = m >> shift;
        if (rem > half || (rem == half && (h & 1u)))
            h += 1u; /* may become 0x400, the smallest normal */
        return (uint16_t)(sign | h);
    }
}

/* binary16 bits -> float32 (exact). */
static inline float embcache_f16_to_f32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t m = (uint32_t)h & 0x3ffu;
    if (e == 0u) {
        /* zero or subnormal: m * 2^-24, exact in float32 */
        float v = (float)m * 5.9604644775390625e-8f;
        return embcache_bits_f32(embcache_f32_bits(v) | sign);
    }
    if (e == 31u)
        return embcache_bits_f32(sign | 0x7f800000u | (m << 13));
    return embcache_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* float32 -> bfloat16 bits, round to nearest even; a NaN stays a quiet NaN. */
static inline uint16_t embcache_f32_to_bf16(float f) {
    uint32_t x = embcache_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline float embcache_bf16_to_f32(uint16_t b) {
    return embcache_bits_f32((uint32_t)b << 16);
}

/* 1.5 * 2^23: adding it to |v| <= 2^22 leaves round-half-to-even(v) in the low mantissa bits. */
#define EMBCACHE_ROUND_MAGIC 12582912.0f

/* round-half-to-even(x / scale) clamped to [-127, 127]; NaN gives -127 (never undefined behaviour). */
static inline int8_t embcache_quantize(float x, float scale) {
    float v = x / scale;
    v = (v >= -127.0f) ? v : -127.0f;
    v = (v <= 127.0f) ? v : 127.0f;
    return (int8_t)(int32_t)(embcache_f32_bits(v + EMBCACHE_ROUND_MAGIC) - 0x4b400000u);
}

/* --- portable row kernels ----------------------------------------------------------------------- */

EMBCACHE_MAYBE_UNUSED
static size_t embcache_row_bytes(int storage, size_t dim) {
    switch (storage) {
    case EMBCACHE_STORE_F16:
    case EMBCACHE_STORE_BF16:
        return 2 * dim;
    case EMBCACHE_STORE_I8:
        return dim + 4;
    default:
        return 4 * dim;
    }
}

EMBCACHE_MAYBE_UNUSED
static ptrdiff_t embcache_first_unstorable_portable(int storage, const float *src, size_t dim) {
    size_t i;
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (i = 0; i < dim; i++)
            if (!(__builtin_fabsf(src[i]) <= 65504.0f))
                return (ptrdiff_t)i;
        return -1;
    case EMBCACHE_STORE_BF16:
        /* 0x7f7f8000 is halfway between the largest bfloat16 and infinity; it rounds up (even) */
        for (i = 0; i < dim; i++)
            if ((embcache_f32_bits(src[i]) & 0x7fffffffu) >= 0x7f7f8000u)
                return (ptrdiff_t)i;
        return -1;
    default:
        for (i = 0; i < dim; i++)
            if (!(__builtin_fabsf(src[i]) <= 3.4028234663852886e38f))
                return (ptrdiff_t)i;
        return -1;
    }
}

/* The int8 scale of a row: absmax / 127 (0 for an all-zero row). */
EMBCACHE_MAYBE_UNUSED
static float embcache_i8_scale_portable(const float *src, size_t dim) {
    float m = 0.0f;
    size_t i;
    for (i = 0; i < dim; i++) {
        float a = __builtin_fabsf(src[i]);
        m = a > m ? a : m;
    }
    float scale = m / 127.0f;
    /* near FLT_MAX, 127 x scale can round up to infinity: one ulp less keeps every decoded value finite */
    if (scale * 127.0f > 3.4028234663852886e38f)
        scale = embcache_bits_f32(embcache_f32_bits(scale) - 1u);
    return scale;
}

EMBCACHE_MAYBE_UNUSED
static void embcache_encode_row_portable(int storage, const float *src, size_t dim, void *dst) {
    unsigned char *d = (unsigned char *)dst;
    size_t i;
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (i = 0; i < dim; i++)
            embcache_store_u16_le(d + 2 * i, embcache_f32_to_f16(src[i]));
        return;
    case EMBCACHE_STORE_BF16:
        for (i = 0; i < dim; i++)
            embcache_store_u16_le(d + 2 * i, embcache_f32_to_bf16(src[i]));
        return;
    case EMBCACHE_STORE_I8: {
        float scale = embcache_i8_scale_portable(src, dim);
        embcache_store_u32_le(d, embcache_f32_bits(scale));
        if (scale == 0.0f) {
            memset(d + 4, 0, dim);
            return;
        }
        for (i = 0; i < dim; i++)
            d[4 + i] = (unsigned char)embcache_quantize(src[i], scale);
        return;
    }
    default:
        for (i = 0; i < dim; i++)
            embcache_store_u32_le(d + 4 * i, embcache_f32_bits(src[i]));
        return;
    }
}

EMBCACHE_MAYBE_UNUSED
static void embcache_decode_row_portable(int storage, const void *src, size_t dim, float *dst) {
    const unsigned char *s = (const unsigned char *)src;
    size_t i;
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (i = 0; i < dim; i++)
            dst[i] = embcache_f16_to_f32(embcache_load_u16_le(s + 2 * i));
        return;
    case EMBCACHE_STORE_BF16:
        for (i = 0; i < dim; i++)
            dst[i] = embcache_bf16_to_f32(embcache_load_u16_le(s + 2 * i));
        return;
    case EMBCACHE_STORE_I8: {
        float scale = embcache_bits_f32(embcache_load_u32_le(s));
        for (i = 0; i < dim; i++)
            dst[i] = (float)(int8_t)s[4 + i] * scale;
        return;
    }
    default:
        for (i = 0; i < dim; i++)
            dst[i] = embcache_bits_f32(embcache_load_u32_le(s + 4 * i));
        return;
    }
}

/* --- the interface (dispatches to the best kernels for the CPU) ---------------------------------- */

static int embcache_portable_forced = 0;

/* 1 to force the portable kernels (tests), 0 for the CPU's best; returns the previous setting. */
EMBCACHE_MAYBE_UNUSED
static int embcache_force_portable_kernels(int on) {
    int was = embcache_portable_forced;
    embcache_portable_forced = on ? 1 : 0;
    return was;
}

/* -1 when every value is storable (finite, in range), else the index of the first that is not. */
EMBCACHE_MAYBE_UNUSED
static ptrdiff_t embcache_first_unstorable(int storage, const float *src, size_t dim) {
    return embcache_first_unstorable_portable(storage, src, dim);
}

EMBCACHE_MAYBE_UNUSED
static void embcache_encode_row(int storage, const float *src, size_t dim, void *dst) {
    embcache_encode_row_portable(storage, src, dim, dst);
}

EMBCACHE_MAYBE_UNUSED
static void embcache_decode_row(int storage, const void *src, size_t dim, float *dst) {
    embcache_decode_row_portable(storage, src, dim, dst);
}

#endif /* EMBCACHE_CONVERT_H */
