/*
 * The shared segment: one file (in /dev/shm, or a given path) mapped by every
 * process of a host that uses the same SharedEmbeddingCache. Linux only.
 *
 * Layout (every offset is fixed by the limits, recomputed by each process from
 * them and compared with the header before anything past the header is mapped):
 *
 *   [0, 4096)     header: magic "EMBCSHM\0", format version, ABI sizes (mutex,
 *                 stripe, entry, cell) and a byte-order mark, the file size, the
 *                 limits as given (max_entries, max_memory_mb, ttl), dim, storage,
 *                 row bytes, the derived layout (capacity, stripes, cells per
 *                 stripe, offsets), the segment's secret hash key, a ready flag, the
 *                 kernel's boot id (a segment kept on disk across a reboot is
 *                 refused: its lock words and clock readings are stale), and a
 *                 checksum of all of it.
 *   stripes       n_stripes x embc_stripe (64-byte aligned, each its own lines):
 *                 a robust process-shared mutex and the stripe's mutable state
 *                 (size, free-slot head, CLOCK hand, put sequence, counters).
 *   entries       per stripe, cap_s + 1 slots of embc_entry (64 B): digest,
 *                 expiry, publication sequence, state word, free link, CLOCK
 *                 reference bit. The one spare slot lets an overwrite copy into
 *                 a fresh slot before the old one goes, with the stripe full.
 *   cells         per stripe, a power-of-two open-addressing index (tag, slot),
 *                 linear probing, backward-shift deletion.
 *   pending       per stripe, EMBC_PENDING_PER_STRIPE single-flight markers
 *                 (embcache/shared/flight.h: owner pid and thread, futex word).
 *   rows          one fixed-size row per slot (dim is fixed, so rows never move),
 *                 page aligned.
 *
 * A key's digest (BLAKE2b-256, the same in every process) is hashed with the
 * segment's own secret key (embc_hash in stripe.h): bits 32.. pick the stripe,
 * the low 32 bits are the cell tag and home. Stripes are independent caches with bounds that sum to the
 * limits: capacity = min(max_entries, budget // (row bytes + entry overhead)),
 * split evenly over a power-of-two number of stripes (at most 256, at least 256
 * entries each, so small caches have one stripe and evict exactly as one).
 * memory_usage_bytes = live entries x (row bytes + EMBC_ENTRY_OVERHEAD), which
 * is what each live entry costs in the segment (entry, its share of cells).
 *
 * Recency: CLOCK per stripe. A hit sets the entry's reference bit only when it
 * is clear (no store at all on most hits); eviction sweeps the stripe's hand,
 * dropping expired entries first, clearing set bits, evicting the first clear one.
 * Nothing is shared between stripes on the hot path, so processes on different
 * cores touching different stripes never write the same line; the number of
 * stripes grows with the capacity, so 16-64 cores spread over up to 256 locks.
 *
 * Crash safety (any process may be SIGKILLed at any instruction):
 *  - Every stripe mutex is PTHREAD_PROCESS_SHARED and PTHREAD_MUTEX_ROBUST. When
 *    its holder dies the kernel marks it; the next locker gets EOWNERDEAD, repairs
 *    the stripe, then marks the mutex consistent. A locker killed during the
 *    repair leaves it EOWNERDEAD again, so the repair reruns.
 *  - The only published fact is an entry's state word. A slot becomes LIVE by a
 *    release store made after its row, digest, expiry and sequence are written;
 *    a LIVE slot is never written again until it is FREE (a put of an existing key
 *    copies into a free slot, publishes it, swaps the cell, then frees the old
 *    slot). So a LIVE entry always holds a complete row, whatever instant a
 *    writer died at, and readers copy rows only under the stripe lock: no reader
 *    sees a torn row.
 *  - Everything else in a stripe (cells, free list, size, hand) is derived. The
 *    repair rebuilds it from the state words: non-LIVE slots are freed, the index
 *    is rebuilt from the LIVE ones, two LIVE slots of one digest (a death between
 *    publish and free) keep the higher sequence, size and free list are
 *    recounted, the hand is clamped. The repair reads nothing it must trust: slot
 *    numbers it follows come from its own loop. The same repair runs when a slot
 *    number read from the segment on the normal path is out of range.
 *  - Layout fields are never read back from the segment after attach: each
 *    process derives them from the checked header, so a stray write cannot make
 *    a process index outside the mapping.
 *  - Creation is atomic: the file is built under a temporary name (O_EXCL, the
 *    given mode) and link()ed to its name only when complete; a loser of the race
 *    attaches to the winner's segment. Attach reads the header with pread, checks
 *    magic, version, ABI, checksum, layout and file size, and only then maps the
 *    file, so a truncated or foreign file is refused, never a SIGBUS.
 */
#ifndef EMBCACHE_SHARED_SEGMENT_H
#define EMBCACHE_SHARED_SEGMENT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/snapshot/checksum.h"

#if defined(__linux__)
#include <pthread.h>
#define EMBC_SHM_SUPPORTED 1
#else
#define EMBC_SHM_SUPPORTED 0    /* robust process-shared mutexes: Linux only */
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#else
typedef struct { char opaque[40]; } pthread_mutex_t;
#endif
#endif

#define EMBC_SHM_VERSION 2u      /* 2: keys placed by embc_hash's multiply mix (1: SipHash) */
#define EMBC_SHM_HEADER_BYTES 4096u
#define EMBC_SHM_PAGE 4096u
#define EMBC_SHM_BOM 0x01020304u
#define EMBC_MAX_STRIPES 256u
#define EMBC_MIN_PER_STRIPE 256u
#define EMBC_NO_SLOT 0xffffffffu
#define EMBC_MAX_CAPACITY 0x40000000u   /* 2^30 entries */
#define EMBC_MAX_DIM (1u << 20)     /* the largest dim a segment takes */

enum { EMBC_FREE = 0, EMBC_LIVE = 2 };

typedef struct {
    uint64_t digest[4];
    double expires_at;          /* CLOCK_MONOTONIC seconds; +inf without TTL */
    uint64_t seq;               /* stripe put sequence at publication */
    uint32_t state;             /* EMBC_FREE / EMBC_LIVE; LIVE stored last (release) */
    uint32_t next_free;         /* free-slot chain (derived) */
    uint32_t ref;               /* CLOCK reference bit */
    uint32_t pad;
} embc_entry;

typedef struct {
    uint32_t tag;               /* low 32 bits of the key's segment hash */
    uint32_t slot;              /* stripe-local slot, EMBC_NO_SLOT when empty */
} embc_cell;

typedef struct __attribute__((aligned(64))) {
    pthread_mutex_t mutex;
    uint32_t size;              /* LIVE slots (derived) */
    uint32_t free_head;         /* (derived) */
    uint32_t hand;              /* CLOCK hand (derived, clamped on repair) */
    uint32_t pad;
    uint64_t seq;               /* puts published in this stripe */
    uint64_t repairs;
    uint64_t hits, misses, puts, overwrites, evictions, expirations, removals;
} embc_stripe;

#define EMBC_PENDING_PER_STRIPE 32

/* A pending marker of cross-process single flight (embcache/shared/flight.h). */
typedef struct {
    uint64_t digest[4];
    uint64_t thread;            /* the owner's thread id */
    double started;             /* CLOCK_MONOTONIC seconds when claimed */
    int32_t pid;                /* the owner's process */
    uint32_t word;              /* futex word: bumped at every claim and release */
    uint32_t busy;              /* 1 while a flight holds it */
    uint32_t start;             /* the low 32 bits of the owner process's start time
                                   (clock ticks since boot, /proc/PID/stat), so that
                                   another process given the same pid later is not
                                   taken for the owner; 0: not known (pid alone) */
} embc_pending;

/* what one live entry costs besides its row: its entry and its two cells */
#define EMBC_ENTRY_OVERHEAD (sizeof(embc_entry) + 2 * sizeof(embc_cell))

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t header_bytes;
    uint32_t abi_mutex, abi_stripe, abi_entry, abi_cell;
    uint32_t bom;
    uint32_t ready;
    uint64_t total_bytes;
    uint32_t dim, storage, row_bytes, row_stride;
    uint64_t max_entries;       /* the limits as given */
    double max_memory_mb;
    double ttl_seconds;         /* <= 0: no TTL */
    uint64_t budget_bytes;
    uint64_t capacity;          /* live entries the limits allow */
    uint32_t n_stripes, cells_per_stripe;
    uint64_t stripes_at, entries_at, cells_at, rows_at, pending_at;
    uint64_t k0, k1;            /* the segment's secret hash key (embc_hash) */
    unsigned char boot_id[16];  /* the kernel's boot id when made: locks and
                                   CLOCK_MONOTONIC readings mean nothing after a reboot */
    uint64_t checksum;          /* mix64 of every byte before it */
} embc_header;

/* A segment's geometry: derived from the limits, never read from the segment. */
typedef struct {
    uint32_t dim, storage, row_bytes, row_stride;
    uint64_t max_entries, budget_bytes, capacity;
    double max_memory_mb, ttl_seconds;
    uint32_t n_stripes, cells_per_stripe;
    uint32_t stripe_shift;      /* log2(n_stripes): the hot path divides by shifting */
    uint64_t stripes_at, entries_at, cells_at, pending_at, rows_at, total_bytes;
} embc_layout;

static inline uint64_t embc_align(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Entries of stripe s: capacity split evenly, the first (capacity % n) one more
   (n is a power of two: shifts and masks, no division on the hot path). */
static inline uint32_t embc_stripe_cap(const embc_layout *L, uint32_t s) {
    return (uint32_t)((L->capacity >> L->stripe_shift) + (s < (L->capacity & (L->n_stripes - 1))));
}

/* First global slot of stripe s (each stripe has cap + 1 slots). */
static inline uint64_t embc_stripe_first(const embc_layout *L, uint32_t s) {
    uint64_t base = L->capacity >> L->stripe_shift, extra = L->capacity & (L->n_stripes - 1);
    return (uint64_t)s * (base + 1) + (s < extra ? s : extra);
}

static inline uint64_t embc_total_slots(const embc_layout *L) {
    return L->capacity + L->n_stripes;
}

/* Fill L from the limits; 0 on success, else a static message. */
static const char *embc_layout_make(embc_layout *L, uint32_t dim, uint32_t storage,
                                    uint32_t row_bytes, uint64_t max_entries,
                                    double max_memory_mb, double ttl_seconds) {
    uint64_t per_entry, cap, cells, n = 1, max_cap;
    double budget = max_memory_mb * 1048576.0;
    memset(L, 0, sizeof(*L));
    if (dim == 0 || row_bytes == 0) return "dim must be at least 1";
    /* bounds every row size (float32: 4 MiB) and the 32-bit row stride; a header
       read from a file is checked against it too (embc_header_check) */
    if (dim > EMBC_MAX_DIM) return "dim is out of range";
    if (!(budget >= 0.0) || budget > 1.0e18) return "max_memory_mb is out of range";
    L->dim = dim;
    L->storage = storage;
    L->row_bytes = row_bytes;
    L->row_stride = (uint32_t)embc_align(row_bytes, 8);
    L->max_entries = max_entries;
    L->max_memory_mb = max_memory_mb;
    L->ttl_seconds = ttl_seconds;
    L->budget_bytes = (uint64_t)budget;
    per_entry = (uint64_t)row_bytes + EMBC_ENTRY_OVERHEAD;
    cap = L->budget_bytes / per_entry;
    if (max_entries < cap) cap = max_entries;
    if (cap == 0) return "the limits leave room for no entry of this dim";
    if (cap > EMBC_MAX_CAPACITY) return "the limits allow more than 2^30 entries";
    L->capacity = cap;
    while (n * 2 <= EMBC_MAX_STRIPES && cap / (n * 2) >= EMBC_MIN_PER_STRIPE) {
        n *= 2;
        L->stripe_shift++;
    }
    L->n_stripes = (uint32_t)n;
    max_cap = cap / n + (cap % n != 0);
    cells = 8;
    while (cells < 2 * (max_cap + 1)) cells *= 2;
    L->cells_per_stripe = (uint32_t)cells;
    L->stripes_at = EMBC_SHM_HEADER_BYTES;
    L->entries_at = embc_align(L->stripes_at + n * sizeof(embc_stripe), 64);
    L->cells_at = embc_align(L->entries_at + embc_total_slots(L) * sizeof(embc_entry), 64);
    L->pending_at = embc_align(L->cells_at + n * cells * sizeof(embc_cell), 64);
    L->rows_at = embc_align(L->pending_at + n * EMBC_PENDING_PER_STRIPE * sizeof(embc_pending),
                            EMBC_SHM_PAGE);
    L->total_bytes = embc_align(L->rows_at + embc_total_slots(L) * L->row_stride, EMBC_SHM_PAGE);
    return 0;
}

static inline uint64_t embc_header_checksum(const embc_header *h) {
    return embcache_mix64(h, offsetof(embc_header, checksum), 0x656d6263736d3031ULL);
}

static void embc_header_fill(embc_header *h, const embc_layout *L, uint64_t k0, uint64_t k1,
                             const unsigned char boot_id[16]) {
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, "EMBCSHM", 8);
    h->version = EMBC_SHM_VERSION;
    h->header_bytes = EMBC_SHM_HEADER_BYTES;
    h->abi_mutex = sizeof(pthread_mutex_t);
    h->abi_stripe = sizeof(embc_stripe);
    h->abi_entry = sizeof(embc_entry);
    h->abi_cell = sizeof(embc_cell);
    h->bom = EMBC_SHM_BOM;
    h->ready = 1;
    h->total_bytes = L->total_bytes;
    h->dim = L->dim;
    h->storage = L->storage;
    h->row_bytes = L->row_bytes;
    h->row_stride = L->row_stride;
    h->max_entries = L->max_entries;
    h->max_memory_mb = L->max_memory_mb;
    h->ttl_seconds = L->ttl_seconds;
    h->budget_bytes = L->budget_bytes;
    h->capacity = L->capacity;
    h->n_stripes = L->n_stripes;
    h->cells_per_stripe = L->cells_per_stripe;
    h->stripes_at = L->stripes_at;
    h->entries_at = L->entries_at;
    h->cells_at = L->cells_at;
    h->rows_at = L->rows_at;
    h->pending_at = L->pending_at;
    h->k0 = k0;
    h->k1 = k1;
    memcpy(h->boot_id, boot_id, 16);
    h->checksum = embc_header_checksum(h);
}

/*
 * Check a header read (with pread) from a file of `file_size` bytes, before
 * anything is mapped; on success fill L from it. Returns 0, or a message naming
 * what is wrong. `row_bytes_of(storage, dim)` must give the storage's row size,
 * or 0 for an unknown storage.
 */
static const char *embc_header_check(const embc_header *h, uint64_t file_size,
                                     size_t (*row_bytes_of)(int, size_t),
                                     const unsigned char boot_id[16], embc_layout *L) {
    const char *why;
    size_t rb;
    if (file_size < EMBC_SHM_HEADER_BYTES) return "the file is shorter than a segment header (truncated, or not an embcache segment)";
    if (memcmp(h->magic, "EMBCSHM", 8) != 0) return "the file is not an embcache shared segment (no magic)";
    if (h->bom != EMBC_SHM_BOM) return "the segment was made on a machine of another byte order";
    if (h->version != EMBC_SHM_VERSION) return "the segment has another format version";
    if (h->header_bytes != EMBC_SHM_HEADER_BYTES || h->abi_mutex != sizeof(pthread_mutex_t)
        || h->abi_stripe != sizeof(embc_stripe) || h->abi_entry != sizeof(embc_entry)
        || h->abi_cell != sizeof(embc_cell))
        return "the segment was made by a build with another ABI (structure sizes differ)";
    if (h->checksum != embc_header_checksum(h)) return "the segment header is corrupt (checksum mismatch)";
    if (h->ready != 1) return "the segment was never completed";
    if (h->dim > EMBC_MAX_DIM) return "the segment's dim is out of range (forged or corrupt header)";
    rb = row_bytes_of((int)h->storage, h->dim);
    if (rb == 0 || rb != h->row_bytes) return "the segment names an unknown storage or a wrong row size";
    why = embc_layout_make(L, h->dim, h->storage, h->row_bytes, h->max_entries,
                           h->max_memory_mb, h->ttl_seconds);
    if (why) return "the segment's limits are invalid";
    if (L->capacity != h->capacity || L->n_stripes != h->n_stripes
        || L->cells_per_stripe != h->cells_per_stripe || L->stripes_at != h->stripes_at
        || L->entries_at != h->entries_at || L->cells_at != h->cells_at
        || L->rows_at != h->rows_at || L->pending_at != h->pending_at
        || L->total_bytes != h->total_bytes
        || L->row_stride != h->row_stride || L->budget_bytes != h->budget_bytes)
        return "the segment's layout does not follow from its limits (forged or corrupt header)";
    if (file_size != h->total_bytes) return "the segment file's size differs from its header's (truncated or resized)";
    if (memcmp(h->boot_id, boot_id, 16) != 0)
        return "the segment was made before the machine last started (its locks and clock readings mean nothing now; unlink it)";
    return 0;
}

#endif /* EMBCACHE_SHARED_SEGMENT_H */
