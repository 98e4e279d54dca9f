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
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && !defined(EMBCACHE_NO_CLONES)
#define EMBCACHE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EMBCACHE_CLONES
#endif

/* The largest double that still rounds to a finite float32 is just below this. */
#define EMBCACHE_F32_ROUND_LIMIT 3.4028235677973366e38

/* 1 when every value is finite (no NaN, no infinity): a float is finite when
 * its bits less the sign, read as an unsigned integer, are at most FLT_MAX's
 * (0x7f7fffff), so the largest of them is kept. Vectorized, that is one AND and
 * one unsigned max per 8 values (AVX2: vpand, vpmaxud; unrolled by 4): 11
 * instructions per 32 values where a float compare and an AND of its mask took
 * 16. The bits are read through memcpy (no aliasing rule broken; the compiler
 * makes it a plain load). */
EMBCACHE_CLONES
static int embcache_f32_all_finite(const float *p, size_t n) {
    uint32_t most = 0, m;
    size_t i;
#if defined(__GNUC__)
#pragma GCC unroll 4
#endif
    for (i = 0; i < n; i++) {
        memcpy(&m, &p[i], sizeof m);
        m &= 0x7fffffffu;
        most = most > m ? most : m;
    }
    return most <= 0x7f7fffffu;
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
