/*
 * x86-64 row codec kernels for core/convert.h (included from it, after its portable code):
 * AVX2 + F16C and AVX-512F versions of first_unstorable / encode_row / decode_row.
 */
#ifndef EMBCACHE_CONVERT_X86_H
#define EMBCACHE_CONVERT_X86_H

/*
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

#endif /* EMBCACHE_CONVERT_X86_H */
