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
 * far less. Other slabs are advised against huge pages at first, so that a
 * dimension with a few rows costs a few 4 KiB pages, never a whole 2 MiB one;
 * once a slab's rows pass its first 2 MiB, each further chunk is advised for
 * huge pages as rows enter it (embcache_slab_grow). The table counts a slab's
 * resident memory with that rounding (embcache_slab_resident).
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

static inline void embcache_slab_release(void *p, size_t bytes) {
    if (p != NULL) munmap(p, bytes == 0 ? 1 : bytes);
}

/* Rows written to the slab at p (`reserved` bytes) grew from [0, before) to
 * [0, filled): advise the 2 MiB chunks they entered, past the first one, for
 * huge pages. The chunk holding byte `before` was entered already unless
 * `before` starts it. Nothing beyond the reservation is ever advised. */
static inline void embcache_slab_grow(void *p, size_t reserved, size_t before, size_t filled) {
#if defined(MADV_HUGEPAGE)
    const size_t chunk = EMBCACHE_HUGE_PAGE;
    size_t from = (before + chunk - 1) & ~(chunk - 1);   /* first chunk starting at or after */
    size_t to = (filled + chunk - 1) & ~(chunk - 1);
    size_t end = reserved & ~(chunk - 1);
    if (from < chunk) from = chunk;
    if (to > end) to = end;
    if (reserved >= chunk && to > from && ((uintptr_t)p & (chunk - 1)) == 0)
        (void)madvise((char *)p + from, to - from, MADV_HUGEPAGE);
#else
    (void)p; (void)reserved; (void)before; (void)filled;
#endif
}

/* Give the pages of bytes [0, bytes) of the slab at p back to the OS. */
static inline void embcache_slab_forget(void *p, size_t bytes) {
    if (bytes) (void)madvise(p, bytes, MADV_DONTNEED);
}

/* The memory resident at most for bytes [0, written) of a slab of `reserved`
 * bytes (huge: advised whole): whole pages, and whole 2 MiB chunks where huge
 * pages are advised. */
static inline size_t embcache_slab_resident(size_t written, size_t reserved, int huge) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (written + page - 1) / page * page;
    size_t chunks = (written + EMBCACHE_HUGE_PAGE - 1) & ~(EMBCACHE_HUGE_PAGE - 1);
    size_t whole = (reserved + page - 1) / page * page;
    if (reserved < EMBCACHE_HUGE_PAGE || !(huge || written > EMBCACHE_HUGE_PAGE)) return pages;
    return chunks < whole ? chunks : whole;
}

#else  /* no mmap */

static inline void *embcache_slab_reserve(size_t bytes, int huge) {
    (void)huge;
    return calloc(bytes ? bytes : 1, 1);
}
static inline void embcache_slab_release(void *p, size_t bytes) { (void)bytes; free(p); }
static inline void embcache_slab_grow(void *p, size_t reserved, size_t before, size_t filled) {
    (void)p; (void)reserved; (void)before; (void)filled;
}
static inline void embcache_slab_forget(void *p, size_t bytes) { (void)p; (void)bytes; }
static inline size_t embcache_slab_resident(size_t written, size_t reserved, int huge) {
    (void)reserved; (void)huge;
    return written;
}

#endif

#endif /* EMBCACHE_SLAB_H */
