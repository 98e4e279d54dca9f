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

/* --- x86-64 kernels, chosen per CPU at run time ---------------------------------------------------
 *
 * The wheel targets baseline x86-64, so these are compiled with GCC/Clang `target` attributes and
 * used only when the running CPU has the instructions (__builtin_cpu_supports, which also checks
 * that the OS saves the wider registers). AVX2 + F16C: 8 values a step; AVX-512F: 16. Each gives
 * the bytes and floats of the portable kernels bit for bit for every storable row: float16 through
 * the hardware conversion (round to nearest even, subnormals exact), bfloat16 and the int8 packing
 * with the same integer arithmetic, x / scale by IEEE division, rounding by the current (nearest)
 * rounding mode, as the portable code's magic-number rounding does. Tails run the scalar code.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(EMBCACHE_NO_SIMD)
#define EMBCACHE_CONVERT_X86 1
#include <immintrin.h>

#define EMBCACHE_AVX2 __attribute__((target("avx2,f16c")))
#define EMBCACHE_AVX512 __attribute__((target("avx512f,avx2,f16c")))

/* index of the first value at or after `from` that fails `bad`, else -1 (the scalar tail) */
#define EMBCACHE_SCAN_TAIL(from, bad)                                                               \
    do {                                                                                            \
        size_t j_;                                                                                  \
        for (j_ = (from); j_ < dim; j_++) {                                                         \
            float v_ = src[j_];                                                                     \
            (void)v_;                                                                               \
            if (bad)                                                                                \
                return (ptrdiff_t)j_;                                                               \
        }                                                                                           \
        return -1;                                                                                  \
    } while (0)

#define EMBCACHE_BAD_F16 (!(__builtin_fabsf(v_) <= 65504.0f))
#define EMBCACHE_BAD_BF16 ((embcache_f32_bits(v_) & 0x7fffffffu) >= 0x7f7f8000u)
#define EMBCACHE_BAD_F32 (!(__builtin_fabsf(v_) <= 3.4028234663852886e38f))

EMBCACHE_AVX2 static ptrdiff_t embcache_first_unstorable_avx2(int storage, const float *src, size_t dim) {
    size_t i = 0;
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    if (storage == EMBCACHE_STORE_BF16) {
        const __m256i limit = _mm256_set1_epi32(0x7f7f7fff);
        for (; i + 8 <= dim; i += 8) {
            __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(src + i)), _mm256_castps_si256(sign));
            int m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(a, limit)));
            if (m)
                return (ptrdiff_t)(i + (size_t)__builtin_ctz((unsigned)m));
        }
        EMBCACHE_SCAN_TAIL(i, EMBCACHE_BAD_BF16);
    }
    {
        const __m256 limit = _mm256_set1_ps(storage == EMBCACHE_STORE_F16 ? 65504.0f : 3.4028234663852886e38f);
        for (; i + 8 <= dim; i += 8) {
            __m256 a = _mm256_and_ps(_mm256_loadu_ps(src + i), sign);
            int ok = _mm256_movemask_ps(_mm256_cmp_ps(a, limit, _CMP_LE_OQ)); /* NaN: not ok */
            if (ok != 0xff)
                return (ptrdiff_t)(i + (size_t)__builtin_ctz((unsigned)~ok & 0xffu));
        }
        if (storage == EMBCACHE_STORE_F16)
            EMBCACHE_SCAN_TAIL(i, EMBCACHE_BAD_F16);
        EMBCACHE_SCAN_TAIL(i, EMBCACHE_BAD_F32);
    }
}

EMBCACHE_AVX2 static float embcache_absmax_avx2(const float *src, size_t dim) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
    __m128 h;
    float m;
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + i), sign), m0);
        m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + i + 8), sign), m1);
    }
    for (; i + 8 <= dim; i += 8)
        m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + i), sign), m0);
    m0 = _mm256_max_ps(m0, m1);
    h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    m = _mm_cvtss_f32(h);
    for (; i < dim; i++) {
        float a = __builtin_fabsf(src[i]);
        m = a > m ? a : m;
    }
    return m;
}

/* 8 values of x / scale, clamped to [-127, 127] (NaN: -127) and rounded to int32 */
EMBCACHE_AVX2 static inline __m256i embcache_quantize8_avx2(const float *src, __m256 scale) {
    __m256 v = _mm256_div_ps(_mm256_loadu_ps(src), scale);
    v = _mm256_max_ps(v, _mm256_set1_ps(-127.0f)); /* maxps gives its second operand for NaN */
    v = _mm256_min_ps(v, _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(v);
}

EMBCACHE_AVX2 static void embcache_encode_row_avx2(int storage, const float *src, size_t dim, void *dst) {
    unsigned char *d = (unsigned char *)dst;
    size_t i = 0;
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (; i + 8 <= dim; i += 8)
            _mm_storeu_si128((__m128i *)(d + 2 * i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; i < dim; i++)
            embcache_store_u16_le(d + 2 * i, embcache_f32_to_f16(src[i]));
        return;
    case EMBCACHE_STORE_BF16: {
        const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
        for (; i + 16 <= dim; i += 16) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
            __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 8));
            a = _mm256_add_epi32(a, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(a, 16), one)));
            b = _mm256_add_epi32(b, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(b, 16), one)));
            a = _mm256_packus_epi32(_mm256_srli_epi32(a, 16), _mm256_srli_epi32(b, 16)); /* per 128-bit lane */
            _mm256_storeu_si256((__m256i *)(d + 2 * i), _mm256_permute4x64_epi64(a, 0xd8));
        }
        for (; i < dim; i++)
            embcache_store_u16_le(d + 2 * i, embcache_f32_to_bf16(src[i]));
        return;
    }
    case EMBCACHE_STORE_I8: {
        float scale = embcache_i8_scale_of(embcache_absmax_avx2(src, dim));
        __m256 s;
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        embcache_store_u32_le(d, embcache_f32_bits(scale));
        d += 4;
        if (scale == 0.0f) {
            memset(d, 0, dim);
            return;
        }
        s = _mm256_set1_ps(scale);
        for (; i + 32 <= dim; i += 32) {
            __m256i ab = _mm256_packs_epi32(embcache_quantize8_avx2(src + i, s), embcache_quantize8_avx2(src + i + 8, s));
            __m256i cd = _mm256_packs_epi32(embcache_quantize8_avx2(src + i + 16, s), embcache_quantize8_avx2(src + i + 24, s));
            /* lane 0: a0-3 b0-3 c0-3 d0-3, lane 1: a4-7 b4-7 c4-7 d4-7 -> in order */
            __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
            _mm256_storeu_si256((__m256i *)(d + i), q);
        }
        for (; i < dim; i++)
            d[i] = (unsigned char)embcache_quantize(src[i], scale);
        return;
    }
    default:
        memcpy(d, src, 4 * dim);
        return;
    }
}

EMBCACHE_AVX2 static void embcache_decode_row_avx2(int storage, const void *src, size_t dim, float *dst) {
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0;
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (; i + 8 <= dim; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
        for (; i < dim; i++)
            dst[i] = embcache_f16_to_f32(embcache_load_u16_le(s + 2 * i));
        return;
    case EMBCACHE_STORE_BF16:
        for (; i + 8 <= dim; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + 2 * i)));
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
        }
        for (; i < dim; i++)
            dst[i] = embcache_bf16_to_f32(embcache_load_u16_le(s + 2 * i));
        return;
    case EMBCACHE_STORE_I8: {
        float scale = embcache_bits_f32(embcache_load_u32_le(s));
        __m256 sc = _mm256_set1_ps(scale);
        s += 4;
        for (; i + 8 <= dim; i += 8) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(q), sc));
        }
        for (; i < dim; i++)
            dst[i] = (float)(int8_t)s[i] * scale;
        return;
    }
    default:
        memcpy(dst, s, 4 * dim);
        return;
    }
}

EMBCACHE_AVX512 static ptrdiff_t embcache_first_unstorable_avx512(int storage, const float *src, size_t dim) {
    size_t i = 0;
    if (storage == EMBCACHE_STORE_BF16) {
        const __m512i limit = _mm512_set1_epi32(0x7f7f7fff), sign = _mm512_set1_epi32(0x7fffffff);
        for (; i + 16 <= dim; i += 16) {
            __m512i a = _mm512_and_si512(_mm512_loadu_si512((const void *)(src + i)), sign);
            __mmask16 m = _mm512_cmpgt_epi32_mask(a, limit);
            if (m)
                return (ptrdiff_t)(i + (size_t)__builtin_ctz((unsigned)m));
        }
        EMBCACHE_SCAN_TAIL(i, EMBCACHE_BAD_BF16);
    }
    {
        const __m512 limit = _mm512_set1_ps(storage == EMBCACHE_STORE_F16 ? 65504.0f : 3.4028234663852886e38f);
        for (; i + 16 <= dim; i += 16) {
            __m512 a = _mm512_abs_ps(_mm512_loadu_ps(src + i));
            unsigned ok = (unsigned)_mm512_cmp_ps_mask(a, limit, _CMP_LE_OQ);
            if (ok != 0xffffu)
                return (ptrdiff_t)(i + (size_t)__builtin_ctz(~ok & 0xffffu));
        }
        if (storage == EMBCACHE_STORE_F16)
            EMBCACHE_SCAN_TAIL(i, EMBCACHE_BAD_F16);
        EMBCACHE_SCAN_TAIL(i, EMBCACHE_BAD_F32);
    }
}

EMBCACHE_AVX512 static float embcache_absmax_avx512(const float *src, size_t dim) {
    __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
    float m;
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(src + i)), m0);
        m1 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(src + i + 16)), m1);
    }
    for (; i + 16 <= dim; i += 16)
        m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(src + i)), m0);
    m = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    for (; i < dim; i++) {
        float a = __builtin_fabsf(src[i]);
        m = a > m ? a : m;
    }
    return m;
}

EMBCACHE_AVX512 static void embcache_encode_row_avx512(int storage, const float *src, size_t dim, void *dst) {
    unsigned char *d = (unsigned char *)dst;
    size_t i = 0;
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (; i + 16 <= dim; i += 16)
            _mm256_storeu_si256((__m256i *)(d + 2 * i),
                                _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; i < dim; i++)
            embcache_store_u16_le(d + 2 * i, embcache_f32_to_f16(src[i]));
        return;
    case EMBCACHE_STORE_BF16: {
        const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
        for (; i + 16 <= dim; i += 16) {
            __m512i a = _mm512_loadu_si512((const void *)(src + i));
            a = _mm512_add_epi32(a, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(a, 16), one)));
            _mm256_storeu_si256((__m256i *)(d + 2 * i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(a, 16)));
        }
        for (; i < dim; i++)
            embcache_store_u16_le(d + 2 * i, embcache_f32_to_bf16(src[i]));
        return;
    }
    case EMBCACHE_STORE_I8: {
        float scale = embcache_i8_scale_of(embcache_absmax_avx512(src, dim));
        __m512 s, lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
        embcache_store_u32_le(d, embcache_f32_bits(scale));
        d += 4;
        if (scale == 0.0f) {
            memset(d, 0, dim);
            return;
        }
        s = _mm512_set1_ps(scale);
        for (; i + 16 <= dim; i += 16) {
            __m512 v = _mm512_div_ps(_mm512_loadu_ps(src + i), s);
            v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            _mm_storeu_si128((__m128i *)(d + i), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
        }
        for (; i < dim; i++)
            d[i] = (unsigned char)embcache_quantize(src[i], scale);
        return;
    }
    default:
        memcpy(d, src, 4 * dim);
        return;
    }
}

EMBCACHE_AVX512 static void embcache_decode_row_avx512(int storage, const void *src, size_t dim, float *dst) {
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0;
    switch (storage) {
    case EMBCACHE_STORE_F16:
        for (; i + 16 <= dim; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + 2 * i))));
        for (; i < dim; i++)
            dst[i] = embcache_f16_to_f32(embcache_load_u16_le(s + 2 * i));
        return;
    case EMBCACHE_STORE_BF16:
        for (; i + 16 <= dim; i += 16) {
            __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + 2 * i)));
            _mm512_storeu_si512((void *)(dst + i), _mm512_slli_epi32(w, 16));
        }
        for (; i < dim; i++)
            dst[i] = embcache_bf16_to_f32(embcache_load_u16_le(s + 2 * i));
        return;
    case EMBCACHE_STORE_I8: {
        float scale = embcache_bits_f32(embcache_load_u32_le(s));
        __m512 sc = _mm512_set1_ps(scale);
        s += 4;
        for (; i + 16 <= dim; i += 16) {
            __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_cvtepi32_ps(q), sc));
        }
        for (; i < dim; i++)
            dst[i] = (float)(int8_t)s[i] * scale;
        return;
    }
    default:
        memcpy(dst, s, 4 * dim);
        return;
    }
}
#endif /* EMBCACHE_CONVERT_X86 */

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
