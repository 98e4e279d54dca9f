/*
 * Table memory: the entry table and the index, which grow and shrink with the
 * number of entries (core/table.pxi).
 *
 * A block of EMBCACHE_OWN_MAP_BYTES or more has an anonymous mapping of its
 * own: shrinking it unmaps its tail, so the pages go back to the kernel at
 * once, and growing it moves the pages (mremap on Linux) instead of copying
 * them into a second block. malloc would keep a freed block of this size in its
 * heap once its mapping threshold has risen past it, so the process would hold
 * the table's largest size for good. A smaller block comes from malloc (a small
 * cache costs no whole page). Which a block is follows from its size alone:
 * every function takes the block's size in bytes. A mapped block is page
 * aligned, a smaller one aligned to `align` (a power of two: 64 for the entry
 * table's cache lines; up to malloc's own alignment, a plain malloc).
 *
 * Where mmap is unavailable, every block comes from posix_memalign.
 */
#ifndef EMBCACHE_TABLE_MEM_H
#define EMBCACHE_TABLE_MEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define EMBCACHE_TABLE_MMAP 1
#endif

#define EMBCACHE_OWN_MAP_BYTES ((size_t)64 << 10)

static inline size_t embcache_table_page(void) {
#ifdef EMBCACHE_TABLE_MMAP
    return (size_t)sysconf(_SC_PAGESIZE);
#else
    return 1;
#endif
}

/* 1 when a block of `bytes` has a mapping of its own. */
static inline int embcache_table_mapped(size_t bytes) {
#ifdef EMBCACHE_TABLE_MMAP
    return bytes >= EMBCACHE_OWN_MAP_BYTES;
#else
    (void)bytes;
    return 0;
#endif
}

/* What a block of `bytes` holds resident once written: whole pages when mapped. */
static inline size_t embcache_table_footprint(size_t bytes) {
    size_t page = embcache_table_page();
    return embcache_table_mapped(bytes) ? (bytes + page - 1) / page * page : bytes;
}

/* A block of `bytes`, aligned to `align`, contents undefined; NULL on failure. */
static inline void *embcache_table_alloc(size_t bytes, size_t align) {
    void *p = NULL;
#ifdef EMBCACHE_TABLE_MMAP
    if (embcache_table_mapped(bytes)) {
        p = mmap(NULL, embcache_table_footprint(bytes), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
#endif
    if (align <= 16) return malloc(bytes ? bytes : 1);
    if (posix_memalign(&p, align, bytes ? bytes : 1) != 0) return NULL;
    return p;
}

/* Free the block p of `bytes` (NULL: nothing). */
static inline void embcache_table_free(void *p, size_t bytes) {
    if (p == NULL) return;
#ifdef EMBCACHE_TABLE_MMAP
    if (embcache_table_mapped(bytes)) {
        munmap(p, embcache_table_footprint(bytes));
        return;
    }
#endif
    free(p);
}

/* The block p of `old` bytes resized to `bytes`, keeping its first
 * min(old, bytes) bytes: p itself or a new block (p is then freed). NULL on
 * failure, p left as it was. p may be NULL (old 0): a new block. */
static inline void *embcache_table_resize(void *p, size_t old, size_t bytes, size_t align) {
    void *q;
    if (p == NULL) return embcache_table_alloc(bytes, align);
#ifdef EMBCACHE_TABLE_MMAP
    if (embcache_table_mapped(old) && embcache_table_mapped(bytes)) {
        size_t from = embcache_table_footprint(old), to = embcache_table_footprint(bytes);
        if (to == from) return p;
        if (to < from) return munmap((char *)p + to, from - to) == 0 ? p : NULL;
#if defined(__linux__) && defined(MREMAP_MAYMOVE)
        q = mremap(p, from, to, MREMAP_MAYMOVE);
        return q == MAP_FAILED ? NULL : q;
#endif
    }
#endif
    q = embcache_table_alloc(bytes, align);
    if (q == NULL) return NULL;
    memcpy(q, p, old < bytes ? old : bytes);
    embcache_table_free(p, old);
    return q;
}

#endif /* EMBCACHE_TABLE_MEM_H */
