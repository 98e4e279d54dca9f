/*
 * Per-element vector kernels: finiteness checks and float64 -> float32 copies.
 *
 * Plain loops the compiler vectorizes. On x86-64 Linux each is also built for
 * AVX2 and the loader picks the best clone for the CPU at import (GCC/Clang
 * target_clones); elsewhere the portable build is used. None touches Python.
 */
#ifndef EMBCACHE_KERNELS_H
#define EMBCACHE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <float.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && !defined(EMBCACHE_NO_CLONES)
#define EMBCACHE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EMBCACHE_CLONES
#endif

/* The largest double that still rounds to a finite float32 is just below this. */
#define EMBCACHE_F32_ROUND_LIMIT 3.4028235677973366e38

/* All ones when |x| <= FLT_MAX (x finite), else zero (NaN, infinity). */
#define EMBCACHE_F32_FINITE_MASK(x) (-(int32_t)(__builtin_fabsf(x) <= FLT_MAX))

/* 1 when every value is finite (no NaN, no infinity). The masks of 32 values
 * are ANDed into eight lanes per step (four vector compares, one AND into the
 * accumulator): half the instructions of one compare and AND per 8 values. */
EMBCACHE_CLONES
static int embcache_f32_all_finite(const float *p, size_t n) {
    int32_t acc[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    int32_t ok;
    size_t i = 0, j;
    for (; i + 32 <= n; i += 32)
        for (j = 0; j < 8; j++)
            acc[j] &= EMBCACHE_F32_FINITE_MASK(p[i + j]) & EMBCACHE_F32_FINITE_MASK(p[i + 8 + j])
                      & EMBCACHE_F32_FINITE_MASK(p[i + 16 + j])
                      & EMBCACHE_F32_FINITE_MASK(p[i + 24 + j]);
    ok = acc[0] & acc[1] & acc[2] & acc[3] & acc[4] & acc[5] & acc[6] & acc[7];
    for (; i < n; i++)
        ok &= EMBCACHE_F32_FINITE_MASK(p[i]);
    return ok != 0;
}

/* 1 when every value is finite and rounds to a finite float32. */
EMBCACHE_CLONES
static int embcache_f64_all_storable(const double *p, size_t n) {
    int ok = 1;
    size_t i;
    for (i = 0; i < n; i++)
        ok &= (__builtin_fabs(p[i]) < EMBCACHE_F32_ROUND_LIMIT);
    return ok;
}

EMBCACHE_CLONES
static void embcache_f64_to_f32(float *restrict dst, const double *restrict src, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

#endif /* EMBCACHE_KERNELS_H */
