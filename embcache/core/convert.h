/*
 * Row codecs: float32 rows to and from their stored encodings.
 *
 *   float32   dim x 4 bytes (a plain copy)
 *   float16   dim x 2 bytes, little-endian IEEE binary16, round to nearest even
 *   bfloat16  dim x 2 bytes, little-endian, the top half of the float32 rounded to nearest even
 *   int8      a little-endian float32 scale (absmax / 127), then dim int8 values
 *             (one ulp less when 127 x scale would round to infinity, so decoding never overflows)
 *             q = round-half-to-even(x / scale) clamped to [-127, 127]; a row whose scale is 0
 *             (all zeros, or every |value| below about 9e-44) stores q = 0 and decodes to zeros
 *
 * encode/decode take any alignment for the encoded side. embcache_first_unstorable names the
 * values an encoding cannot hold: NaN and infinity everywhere, |x| > 65504 for float16, values
 * that round to infinity for bfloat16. Encoding a row that holds such a value gives unspecified
 * bytes (never undefined behaviour); callers check first.
 *
 * The portable C below is the reference; faster kernels for the running CPU are chosen at run
 * time and give bit-identical bytes and floats. The portable code assumes the FPU rounds to
 * nearest even (the C default; so do the hardware conversions). None of these functions touches
 * Python.
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

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define EMBCACHE_LITTLE_ENDIAN 1
#endif

static inline void embcache_store_u16_le(unsigned char *p, uint16_t v) {
#ifdef EMBCACHE_LITTLE_ENDIAN
    memcpy(p, &v, 2);
#else
    p[0] = (unsigned char)(v & 0xffu);
    p[1] = (unsigned char)(v >> 8);
#endif
}

static inline uint16_t embcache_load_u16_le(const unsigned char *p) {
#ifdef EMBCACHE_LITTLE_ENDIAN
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
#else
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
#endif
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

/* float32 -> binary16 bits, round to nearest even; subnormals, signed zeros, overflow to infinity.
 * Branch-free, so the compiler vectorizes the portable loops: a normal result rounds its 13 dropped
 * bits in integer arithmetic (a carry into the exponent is the right answer); a subnormal one is
 * |f| + 0.5f, whose float32 ulp (2^-24) is the binary16 subnormal step, rounded by the FPU to
 * nearest even. */
static inline uint16_t embcache_f32_to_f16(float f) {
    uint32_t x = embcache_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    uint32_t normal = ((ax + 0x0fffu + ((ax >> 13) & 1u)) >> 13) - (112u << 10);
    uint32_t subnormal = embcache_f32_bits(embcache_bits_f32(ax) + 0.5f) - 0x3f000000u;
    uint32_t h = ax < 0x38800000u ? subnormal : normal; /* below 2^-14: a subnormal result */
    h = ax >= 0x477ff000u ? 0x7c00u : h;                 /* 65520 and above: infinity */
    h = ax > 0x7f800000u ? 0x7e00u : h;                  /* NaN: a quiet NaN */
    return (uint16_t)(h | sign);
}

/* binary16 bits -> float32 (exact), branch-free: a subnormal m * 2^-24 is made as the float32
 * 2^-14 * (1 + m / 1024) less 2^-14. */
static inline float embcache_f16_to_f32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t bits = ((uint32_t)h & 0x7fffu) << 13;
    uint32_t e = bits & 0x0f800000u;
    uint32_t normal = bits + (112u << 23);
    uint32_t special = bits + (224u << 23); /* infinity and NaN keep their mantissa */
    uint32_t subnormal = embcache_f32_bits(embcache_bits_f32(bits + (113u << 23)) - 6.103515625e-05f);
    uint32_t out = e == 0u ? subnormal : (e == 0x0f800000u ? special : normal);
    return embcache_bits_f32(out | sign);
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

/* Whether value `v` is one `storage` cannot hold (NaN, infinity, out of its range). */
static inline int embcache_unstorable(int storage, float v) {
    switch (storage) {
    case EMBCACHE_STORE_F16:
        return !(__builtin_fabsf(v) <= 65504.0f);
    case EMBCACHE_STORE_BF16:
        /* 0x7f7f8000 is halfway between the largest bfloat16 and infinity; it rounds up (even) */
        return (embcache_f32_bits(v) & 0x7fffffffu) >= 0x7f7f8000u;
    default:
        return !(__builtin_fabsf(v) <= 3.4028234663852886e38f);
    }
}

EMBCACHE_MAYBE_UNUSED
static ptrdiff_t embcache_first_unstorable_portable(int storage, const float *src, size_t dim) {
    size_t i;
    int bad = 0;
    /* one pass without early exit (the compiler vectorizes it), then the culprit if any */
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (i = 0; i < dim; i++)
            bad |= embcache_unstorable(EMBCACHE_STORE_F16, src[i]);
        break;
    case EMBCACHE_STORE_BF16:
        for (i = 0; i < dim; i++)
            bad |= embcache_unstorable(EMBCACHE_STORE_BF16, src[i]);
        break;
    default:
        for (i = 0; i < dim; i++)
            bad |= embcache_unstorable(EMBCACHE_STORE_F32, src[i]);
        break;
    }
    if (!bad)
        return -1;
    for (i = 0; i < dim; i++)
        if (embcache_unstorable(storage, src[i]))
            return (ptrdiff_t)i;
    return -1;
}

/* The int8 scale of a row whose largest magnitude is `absmax`: absmax / 127 (0 for an
 * all-zero row). */
static inline float embcache_i8_scale_of(float absmax) {
    float scale = absmax / 127.0f;
    /* near FLT_MAX, 127 x scale can round up to infinity: one ulp less keeps every decoded value finite */
    if (scale * 127.0f > 3.4028234663852886e38f)
        scale = embcache_bits_f32(embcache_f32_bits(scale) - 1u);
    return scale;
}

static inline float embcache_absmax_portable(const float *src, size_t dim) {
    float m = 0.0f;
    size_t i;
    for (i = 0; i < dim; i++) {
        float a = __builtin_fabsf(src[i]);
        m = a > m ? a : m;
    }
    return m;
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
        float scale = embcache_i8_scale_of(embcache_absmax_portable(src, dim));
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
#ifdef EMBCACHE_LITTLE_ENDIAN
        memcpy(d, src, 4 * dim);
#else
        for (i = 0; i < dim; i++)
            embcache_store_u32_le(d + 4 * i, embcache_f32_bits(src[i]));
#endif
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
#ifdef EMBCACHE_LITTLE_ENDIAN
        memcpy(dst, s, 4 * dim);
#else
        for (i = 0; i < dim; i++)
            dst[i] = embcache_bits_f32(embcache_load_u32_le(s + 4 * i));
#endif
        return;
    }
}

/* --- x86-64 kernels, chosen per CPU at run time (defines EMBCACHE_CONVERT_X86) ------------------ */
#include "core/convert_x86.h"


/* --- the interface (dispatches to the best kernels for the CPU) ---------------------------------- */

enum { EMBCACHE_KERNELS_UNKNOWN = -1, EMBCACHE_KERNELS_PORTABLE = 0, EMBCACHE_KERNELS_AVX2 = 1, EMBCACHE_KERNELS_AVX512 = 2 };

static int embcache_kernel_cap = EMBCACHE_KERNELS_AVX512; /* the best kernels allowed (tests lower it) */
static int embcache_cpu_kernels = EMBCACHE_KERNELS_UNKNOWN; /* the best the CPU runs, found once */

/* The best kernels the CPU runs (EMBCACHE_KERNELS_*). */
EMBCACHE_MAYBE_UNUSED
static int embcache_cpu_kernel_level(void) {
    if (embcache_cpu_kernels == EMBCACHE_KERNELS_UNKNOWN) {
        int k = EMBCACHE_KERNELS_PORTABLE;
#ifdef EMBCACHE_CONVERT_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))
            k = __builtin_cpu_supports("avx512f") ? EMBCACHE_KERNELS_AVX512 : EMBCACHE_KERNELS_AVX2;
#endif
        embcache_cpu_kernels = k;
    }
    return embcache_cpu_kernels;
}

/* The kernels in use: the CPU's best, but no better than the cap. */
static inline int embcache_kernels(void) {
    int k = embcache_cpu_kernels != EMBCACHE_KERNELS_UNKNOWN ? embcache_cpu_kernels : embcache_cpu_kernel_level();
    return k < embcache_kernel_cap ? k : embcache_kernel_cap;
}

/* Tests: use no better kernels than `cap` (EMBCACHE_KERNELS_*); returns the kernels now in use. */
EMBCACHE_MAYBE_UNUSED
static int embcache_limit_kernels(int cap) {
    embcache_kernel_cap = cap < EMBCACHE_KERNELS_PORTABLE ? EMBCACHE_KERNELS_PORTABLE : cap;
    return embcache_kernels();
}

/* 1 to force the portable kernels (tests), 0 for the CPU's best; returns the previous setting. */
EMBCACHE_MAYBE_UNUSED
static int embcache_force_portable_kernels(int on) {
    int was = embcache_kernel_cap == EMBCACHE_KERNELS_PORTABLE;
    embcache_kernel_cap = on ? EMBCACHE_KERNELS_PORTABLE : EMBCACHE_KERNELS_AVX512;
    return was;
}

/* -1 when every value is storable (finite, in range), else the index of the first that is not. */
EMBCACHE_MAYBE_UNUSED
static ptrdiff_t embcache_first_unstorable(int storage, const float *src, size_t dim) {
#ifdef EMBCACHE_CONVERT_X86
    switch (embcache_kernels()) {
    case EMBCACHE_KERNELS_AVX512:
        return embcache_first_unstorable_avx512(storage, src, dim);
    case EMBCACHE_KERNELS_AVX2:
        return embcache_first_unstorable_avx2(storage, src, dim);
    }
#endif
    return embcache_first_unstorable_portable(storage, src, dim);
}

EMBCACHE_MAYBE_UNUSED
static void embcache_encode_row(int storage, const float *src, size_t dim, void *dst) {
#ifdef EMBCACHE_CONVERT_X86
    switch (embcache_kernels()) {
    case EMBCACHE_KERNELS_AVX512:
        embcache_encode_row_avx512(storage, src, dim, dst);
        return;
    case EMBCACHE_KERNELS_AVX2:
        embcache_encode_row_avx2(storage, src, dim, dst);
        return;
    }
#endif
    embcache_encode_row_portable(storage, src, dim, dst);
}

EMBCACHE_MAYBE_UNUSED
static void embcache_decode_row(int storage, const void *src, size_t dim, float *dst) {
#ifdef EMBCACHE_CONVERT_X86
    switch (embcache_kernels()) {
    case EMBCACHE_KERNELS_AVX512:
        embcache_decode_row_avx512(storage, src, dim, dst);
        return;
    case EMBCACHE_KERNELS_AVX2:
        embcache_decode_row_avx2(storage, src, dim, dst);
        return;
    }
#endif
    embcache_decode_row_portable(storage, src, dim, dst);
}

#endif /* EMBCACHE_CONVERT_H */
