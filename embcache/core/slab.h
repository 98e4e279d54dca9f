/*
 * Slab memory: one anonymous mapping per slab, reserved whole and never moved.
 *
 * A slab reserves room for every row its dimension may ever need (bounded by
 * the memory budget), but the kernel maps pages only as rows are first
 * written, so resident memory follows the rows written, not the reservation.
 * MAP_NORESERVE keeps a large budget from being refused up front by overcommit
 * accounting. A slab that never moves needs no copy on growth and keeps row
 * pointers stable.
 *
 * Huge pages: a reservation of 2 MiB or more is aligned to 2 MiB. The slab of
 * a cache's fixed dimension is advised for transparent huge pages whole: filling
 * it faults once per 2 MiB rather than once per 4 KiB, and lookups miss the TLB
 * far less. The slabs of a cache that takes any dimension are reserved advised
 * against huge pages: a dimension with a few rows costs a few 4 KiB pages, never
 * a whole 2 MiB one. The table then advises such a slab's later chunks for huge
 * pages one at a time as its writer reaches them (embcache_slab_advise), for one
 * slab at a time (core/table.pxi), so at most one dimension holds a huge page
 * partly past its rows.
 *
 * embcache_slab_trim returns the pages past a slab's live rows to the OS (they
 * read back as zeros), 4 KiB at a time: a huge page cut by the boundary is
 * split, and its chunk advised against huge pages so that the kernel does not
 * gather it whole again behind the cache's back.
 *
 * embcache_slab_resident asks the kernel (mincore) what part of a range is
 * resident, so the table reports what it holds, huge-page rounding included.
 *
 * Where mmap is unavailable, a plain calloc stands in (no advice, no forgetting).
 */
#ifndef EMBCACHE_SLAB_H
#define EMBCACHE_SLAB_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define EMBCACHE_SLAB_MMAP 1
#endif

#define EMBCACHE_HUGE_PAGE ((size_t)2 << 20)

/* Ask the CPU to start loading bytes [p, p + n) for reading, so that their
 * trip from memory overlaps other work. A hint: it never faults, whatever the
 * address. */
static inline void embcache_prefetch(const void *p, size_t n) {
#if defined(__GNUC__) || defined(__clang__)
    const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63);
    const char *end = (const char *)p + n;
    for (; c < end; c += 64) __builtin_prefetch(c, 0, 3);
#else
    (void)p; (void)n;
#endif
}

#ifdef EMBCACHE_SLAB_MMAP

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

/* Reserve `bytes` of zero-filled, lazily mapped memory, advised for huge pages
 * whole when `huge`; NULL on failure. */
static inline void *embcache_slab_reserve(size_t bytes, int huge) {
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    size_t extra = bytes >= EMBCACHE_HUGE_PAGE ? EMBCACHE_HUGE_PAGE : 0;
    char *base, *start;
    if (bytes == 0) bytes = 1;
    base = (char *)mmap(NULL, bytes + extra, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (base == (char *)MAP_FAILED) return NULL;
    if (!extra) return base;
    /* keep the 2 MiB-aligned window of the mapping, give back the rest */
    {
        uintptr_t b = (uintptr_t)base;
        uintptr_t s = (b + EMBCACHE_HUGE_PAGE - 1) & ~(uintptr_t)(EMBCACHE_HUGE_PAGE - 1);
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t end = (s + bytes + page - 1) & ~(page - 1);
        uintptr_t map_end = b + bytes + extra;
        if (s > b) munmap(base, (size_t)(s - b));
        if (map_end > end) munmap((void *)end, (size_t)(map_end - end));
        start = (char *)s;
    }
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
    (void)madvise(start, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);  /* advice only */
#endif
    return start;
}

/* Advise whole 2 MiB chunks [from, to) of the 2 MiB-aligned slab at p (of
 * `reserved` bytes) for huge pages (`huge`) or against them; a chunk the
 * reservation ends inside is left as it is (it can never be a huge page). */
static inline void embcache_slab_advise(void *p, size_t reserved, size_t from, size_t to, int huge) {
    const size_t chunk = EMBCACHE_HUGE_PAGE;
    size_t whole = reserved & ~(chunk - 1);
    if (to > whole) to = whole;
    if (((uintptr_t)p & (chunk - 1)) || (from & (chunk - 1)) || to <= from) return;
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
    (void)madvise((char *)p + from, to - from, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#else
    (void)huge;
#endif
}

static inline void embcache_slab_release(void *p, size_t bytes) {
    if (p != NULL) munmap(p, bytes == 0 ? 1 : bytes);
}

static inline size_t embcache_page_round(size_t n) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

/* The end of what may be resident for bytes [0, written) of a slab of
 * `reserved` bytes: the 2 MiB chunk holding the last byte may be whole. */
static inline size_t embcache_slab_extent(size_t written, size_t reserved) {
    size_t end = embcache_page_round(reserved);
    size_t chunks = (written + EMBCACHE_HUGE_PAGE - 1) & ~(EMBCACHE_HUGE_PAGE - 1);
    return chunks < end ? chunks : end;
}

/* Give back the pages of the slab at p from byte `keep` (rounded up to a page)
 * to the end of what rows [0, written) may hold resident. */
static inline void embcache_slab_trim(void *p, size_t reserved, size_t keep, size_t written) {
    const size_t chunk = EMBCACHE_HUGE_PAGE;
    size_t from = embcache_page_round(keep);
    size_t to = embcache_slab_extent(written, reserved);
    if (to <= from) return;
#if defined(MADV_NOHUGEPAGE)
    if ((from & (chunk - 1)) && reserved >= chunk && ((uintptr_t)p & (chunk - 1)) == 0) {
        size_t start = from & ~(chunk - 1);
        size_t stop = start + chunk <= embcache_page_round(reserved)
                      ? start + chunk : embcache_page_round(reserved);
        (void)madvise((char *)p + start, stop - start, MADV_NOHUGEPAGE);
    }
#endif
    (void)madvise((char *)p + from, to - from, MADV_DONTNEED);
}

/* Bytes of the slab at p resident now, of those rows [0, written) may hold
 * (`reserved`: the slab's size). Asks the kernel page by page (mincore); where
 * it cannot say, counts every page up to the extent. */
static inline size_t embcache_slab_resident(const void *p, size_t written, size_t reserved) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t end = embcache_slab_extent(written, reserved);
    size_t at, n, i, resident = 0;
#if defined(__APPLE__)
    char vec[4096];
#else
    unsigned char vec[4096];
#endif
    for (at = 0; at < end; at += n * page) {
        n = (end - at) / page;
        if (n > sizeof(vec)) n = sizeof(vec);
        if (mincore((char *)p + at, n * page, vec) != 0) return end;
        for (i = 0; i < n; i++) resident += (size_t)(vec[i] & 1) * page;
    }
    return resident;
}

#else  /* no mmap */

static inline void *embcache_slab_reserve(size_t bytes, int huge) {
    (void)huge;
    return calloc(bytes ? bytes : 1, 1);
}
static inline void embcache_slab_release(void *p, size_t bytes) { (void)bytes; free(p); }
static inline void embcache_slab_trim(void *p, size_t reserved, size_t keep, size_t written) {
    (void)p; (void)reserved; (void)keep; (void)written;
}
static inline void embcache_slab_advise(void *p, size_t reserved, size_t from, size_t to, int huge) {
    (void)p; (void)reserved; (void)from; (void)to; (void)huge;
}
static inline size_t embcache_slab_resident(const void *p, size_t written, size_t reserved) {
    (void)p; (void)reserved;
    return written;
}

#endif

#endif /* EMBCACHE_SLAB_H */
