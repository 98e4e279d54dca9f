/*
 * Slab memory: one anonymous mapping per slab, reserved whole and never moved.
 *
 * A slab reserves room for every row its dimension may ever need (bounded by
 * the memory budget), but the kernel maps pages only as rows are first
 * written, so resident memory follows the rows in use, not the reservation.
 * MAP_NORESERVE keeps a large budget from being refused up front by overcommit
 * accounting. Reservations of 2 MiB or more are aligned to 2 MiB and advised
 * for transparent huge pages: filling a slab then faults once per 2 MiB rather
 * than once per 4 KiB (at dim 768, three rows in four would fault), and random
 * lookups across a large slab miss the TLB far less. A slab that never moves
 * needs no copy on growth and keeps row pointers stable.
 *
 * Where mmap is unavailable, a plain calloc stands in.
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

#ifdef EMBCACHE_SLAB_MMAP

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

/* Reserve `bytes` of zero-filled, lazily mapped memory; NULL on failure. */
static inline void *embcache_slab_reserve(size_t bytes) {
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
#if defined(MADV_HUGEPAGE)
    (void)madvise(start, bytes & ~(EMBCACHE_HUGE_PAGE - 1), MADV_HUGEPAGE);  /* advice only */
#endif
    return start;
}

static inline void embcache_slab_release(void *p, size_t bytes) {
    if (p != NULL) munmap(p, bytes == 0 ? 1 : bytes);
}

#else  /* no mmap */

static inline void *embcache_slab_reserve(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }
static inline void embcache_slab_release(void *p, size_t bytes) { (void)bytes; free(p); }

#endif

#endif /* EMBCACHE_SLAB_H */
