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
 * Huge pages: a reservation of 2 MiB or more is aligned to 2 MiB and advised
 * NOT to use transparent huge pages, so that one written row costs one 4 KiB
 * page, never a whole 2 MiB one the accounting cannot see. Each 2 MiB chunk is
 * advised for huge pages once rows fill it completely (embcache_slab_fill_huge):
 * the kernel may then back it by one huge page (fewer TLB misses on lookups)
 * without any memory becoming resident that is not written.
 *
 * embcache_slab_forget returns a range's pages to the OS (they read back as
 * zeros), for slabs whose rows are all free.
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
#if defined(MADV_NOHUGEPAGE)
    (void)madvise(start, bytes, MADV_NOHUGEPAGE);  /* advice only */
#endif
    return start;
}

static inline void embcache_slab_release(void *p, size_t bytes) {
    if (p != NULL) munmap(p, bytes == 0 ? 1 : bytes);
}

/* Rows now fill bytes [0, filled) of the slab at p, up from [0, before): advise
 * the 2 MiB chunks completed in between for huge pages. */
static inline void embcache_slab_fill_huge(void *p, size_t before, size_t filled) {
#if defined(MADV_HUGEPAGE)
    size_t from = before & ~(EMBCACHE_HUGE_PAGE - 1);
    size_t to = filled & ~(EMBCACHE_HUGE_PAGE - 1);
    if (to > from && ((uintptr_t)p & (EMBCACHE_HUGE_PAGE - 1)) == 0)
        (void)madvise((char *)p + from, to - from, MADV_HUGEPAGE);
#else
    (void)p; (void)before; (void)filled;
#endif
}

/* Give the pages of bytes [0, bytes) of the slab at p back to the OS. */
static inline void embcache_slab_forget(void *p, size_t bytes) {
    if (bytes) (void)madvise(p, bytes, MADV_DONTNEED);
}

/* The memory resident for bytes [0, bytes) written of a slab: whole pages. */
static inline size_t embcache_slab_resident(size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (bytes + page - 1) / page * page;
}

#else  /* no mmap */

static inline void *embcache_slab_reserve(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }
static inline void embcache_slab_release(void *p, size_t bytes) { (void)bytes; free(p); }
static inline void embcache_slab_fill_huge(void *p, size_t before, size_t filled) {
    (void)p; (void)before; (void)filled;
}
static inline void embcache_slab_forget(void *p, size_t bytes) { (void)p; (void)bytes; }
static inline size_t embcache_slab_resident(size_t bytes) { return bytes; }

#endif

#endif /* EMBCACHE_SLAB_H */
