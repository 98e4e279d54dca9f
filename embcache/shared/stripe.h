/*
 * One stripe of the shared segment (embcache/shared/segment.h has the layout and
 * the crash-safety argument): its robust lock and repair, its index, CLOCK
 * eviction, and the operations the cache runs with the stripe locked. Nothing
 * here touches Python; every slot number read from the segment is range-checked,
 * and a bad one sends the stripe through the same repair as a dead owner.
 */
#ifndef EMBCACHE_SHARED_STRIPE_H
#define EMBCACHE_SHARED_STRIPE_H

#include <errno.h>
#include <math.h>
#include <time.h>

#include "core/keyhash.h"
#include "shared/segment.h"

#define EMBC_BAD 0xfffffffeu     /* an out-of-range slot was met: repair, retry */

/* One process's view of a segment: the mapping and the geometry it derived. */
typedef struct {
    char *base;
    embc_layout L;
    uint64_t k0, k1;
} embc_seg;

static inline embc_stripe *embc_stripe_at(const embc_seg *g, uint32_t s) {
    return (embc_stripe *)(g->base + g->L.stripes_at) + s;
}
static inline embc_entry *embc_entries(const embc_seg *g, uint32_t s) {
    return (embc_entry *)(g->base + g->L.entries_at) + embc_stripe_first(&g->L, s);
}
static inline embc_cell *embc_cells(const embc_seg *g, uint32_t s) {
    return (embc_cell *)(g->base + g->L.cells_at) + (uint64_t)s * g->L.cells_per_stripe;
}
static inline char *embc_row(const embc_seg *g, uint32_t s, uint32_t slot) {
    return g->base + g->L.rows_at + (embc_stripe_first(&g->L, s) + slot) * (uint64_t)g->L.row_stride;
}
static inline uint32_t embc_slots(const embc_seg *g, uint32_t s) { return embc_stripe_cap(&g->L, s) + 1; }

/* A key's place in the segment: its digest mixed with the segment's secret key
   (core/keyhash.h). */
static inline uint64_t embc_hash(const embc_seg *g, const uint64_t digest[4]) {
    return embcache_key_hash(g->k0, g->k1, digest);
}
static inline uint32_t embc_stripe_of(const embc_seg *g, uint64_t h) {
    return (uint32_t)(h >> 32) & (g->L.n_stripes - 1);
}

static inline double embc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline uint32_t embc_state(const embc_entry *e) { return __atomic_load_n(&e->state, __ATOMIC_ACQUIRE); }

/* --- index ------------------------------------------------------------------------ */

static inline int embc_same_digest(const uint64_t a[4], const uint64_t b[4]) {
    return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

/* The slot holding `digest`, EMBC_NO_SLOT, or EMBC_BAD; *cell_at gets its cell. */
static uint32_t embc_find(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t digest[4],
                          uint32_t *cell_at) {
    embc_cell *cells = embc_cells(g, s);
    embc_entry *ents = embc_entries(g, s);
    uint32_t mask = g->L.cells_per_stripe - 1, slots = embc_slots(g, s);
    uint32_t tag = (uint32_t)h, i = tag & mask, n;
    for (n = 0; n <= mask; n++, i = (i + 1) & mask) {
        uint32_t slot = cells[i].slot;
        if (slot == EMBC_NO_SLOT) return EMBC_NO_SLOT;
        if (slot >= slots) return EMBC_BAD;
        if (cells[i].tag == tag && embc_same_digest(ents[slot].digest, digest)) {
            if (embc_state(&ents[slot]) != EMBC_LIVE) return EMBC_BAD;
            *cell_at = i;
            return slot;
        }
    }
    return EMBC_BAD;  /* no empty cell: never so in a sound stripe */
}

static int embc_cell_insert(const embc_seg *g, uint32_t s, uint32_t tag, uint32_t slot) {
    embc_cell *cells = embc_cells(g, s);
    uint32_t mask = g->L.cells_per_stripe - 1, i = tag & mask, n;
    for (n = 0; n <= mask; n++, i = (i + 1) & mask) {
        if (cells[i].slot == EMBC_NO_SLOT) {
            cells[i].tag = tag;
            cells[i].slot = slot;
            return 0;
        }
    }
    return -1;
}

/* Backward-shift deletion: no tombstones. */
static void embc_cell_delete(const embc_seg *g, uint32_t s, uint32_t i) {
    embc_cell *cells = embc_cells(g, s);
    uint32_t mask = g->L.cells_per_stripe - 1, j = i, n;
    for (n = 0; n < mask; n++) {
        j = (j + 1) & mask;
        if (cells[j].slot == EMBC_NO_SLOT) break;
        if (((j - (cells[j].tag & mask)) & mask) >= ((j - i) & mask)) {
            cells[i] = cells[j];
            i = j;
        }
    }
    cells[i].slot = EMBC_NO_SLOT;
}

/* --- repair ----------------------------------------------------------------------- */

/* Rebuild everything derived in stripe s from its entries' state words. */
static void embc_repair(const embc_seg *g, uint32_t s) {
    embc_stripe *st = embc_stripe_at(g, s);
    embc_entry *ents = embc_entries(g, s);
    embc_cell *cells = embc_cells(g, s);
    uint32_t slots = embc_slots(g, s), mask = g->L.cells_per_stripe - 1, i, size = 0, head = EMBC_NO_SLOT;
    for (i = 0; i <= mask; i++) cells[i].slot = EMBC_NO_SLOT;
    for (i = 0; i < slots; i++) {
        embc_entry *e = &ents[i];
        uint64_t h;
        uint32_t other, at;
        if (e->state != EMBC_LIVE) {
            e->state = EMBC_FREE;
            continue;
        }
        h = embc_hash(g, e->digest);
        if (embc_stripe_of(g, h) != s) {  /* not this stripe's key: never trusted */
            e->state = EMBC_FREE;
            continue;
        }
        other = embc_find(g, s, h, e->digest, &at);
        if (other < slots) {          /* a death between publish and free: newest wins */
            if (ents[other].seq >= e->seq) {
                e->state = EMBC_FREE;
                continue;
            }
            ents[other].state = EMBC_FREE;
            cells[at].slot = i;
            continue;
        }
        embc_cell_insert(g, s, (uint32_t)h, i);
    }
    for (i = slots; i-- > 0;) {
        if (ents[i].state == EMBC_LIVE) {
            size++;
            if (ents[i].ref > 1) ents[i].ref = 1;
        } else {
            ents[i].next_free = head;
            head = i;
        }
    }
    if (size > embc_stripe_cap(&g->L, s)) {  /* cannot happen from a death; a stray write */
        for (i = 0; i <= mask; i++) cells[i].slot = EMBC_NO_SLOT;
        head = EMBC_NO_SLOT;
        for (i = slots; i-- > 0;) {
            ents[i].state = EMBC_FREE;
            ents[i].next_free = head;
            head = i;
        }
        size = 0;
    }
    st->size = size;
    st->free_head = head;
    if (st->hand >= slots) st->hand = 0;
    st->repairs++;
}

/* --- the lock ---------------------------------------------------------------------- */

static int embc_mutex_init(pthread_mutex_t *m) {
#if EMBC_SHM_SUPPORTED
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc) return rc;
    rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc) rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
#else
    (void)m;
    return ENOSYS;
#endif
}

/* Lock stripe s (trylock when !block): 0, EBUSY, or an errno. A dead owner's
   stripe is repaired before this returns. */
static int embc_lock(const embc_seg *g, uint32_t s, int block) {
#if EMBC_SHM_SUPPORTED
    embc_stripe *st = embc_stripe_at(g, s);
    int rc = block ? pthread_mutex_lock(&st->mutex) : pthread_mutex_trylock(&st->mutex);
    if (rc == EOWNERDEAD) {
        embc_repair(g, s);
        rc = pthread_mutex_consistent(&st->mutex);
        if (rc != 0) pthread_mutex_unlock(&st->mutex);  /* held, but reported as not taken */
    }
    return rc;
#else
    (void)g; (void)s; (void)block;
    return ENOSYS;
#endif
}

static inline void embc_unlock(const embc_seg *g, uint32_t s) {
#if EMBC_SHM_SUPPORTED
    pthread_mutex_unlock(&embc_stripe_at(g, s)->mutex);
#endif
}

/* --- operations (stripe locked) ------------------------------------------------------ */

static inline void embc_free_slot(const embc_seg *g, uint32_t s, uint32_t slot) {
    embc_stripe *st = embc_stripe_at(g, s);
    embc_entry *e = &embc_entries(g, s)[slot];
    __atomic_store_n(&e->state, EMBC_FREE, __ATOMIC_RELEASE);
    e->next_free = st->free_head;
    st->free_head = slot;
}

/* Drop the LIVE entry in `slot`: cell first, then the state word. */
static int embc_drop(const embc_seg *g, uint32_t s, uint32_t slot) {
    embc_entry *e = &embc_entries(g, s)[slot];
    uint32_t at, found = embc_find(g, s, embc_hash(g, e->digest), e->digest, &at);
    if (found != slot) return -1;
    embc_cell_delete(g, s, at);
    embc_free_slot(g, s, slot);
    embc_stripe_at(g, s)->size--;
    return 0;
}

/* CLOCK: drop one entry (expired first met, else the first with a clear bit). */
static int embc_evict_one(const embc_seg *g, uint32_t s, double now) {
    embc_stripe *st = embc_stripe_at(g, s);
    embc_entry *ents = embc_entries(g, s);
    uint32_t slots = embc_slots(g, s), n;
    for (n = 0; n < 3 * slots; n++) {
        uint32_t i = st->hand < slots ? st->hand : 0;
        embc_entry *e = &ents[i];
        st->hand = i + 1 < slots ? i + 1 : 0;
        if (e->state != EMBC_LIVE) continue;
        if (e->expires_at <= now) {
            if (embc_drop(g, s, i)) return -1;
            st->expirations++;
            return 0;
        }
        if (e->ref) {
            e->ref = 0;
            continue;
        }
        if (embc_drop(g, s, i)) return -1;
        st->evictions++;
        return 0;
    }
    return -1;
}

/* The row of a live `digest` (its reference bit set), or NULL; an expired entry is
   dropped. `count` 0: a membership test (no stats, no reference bit); 2: the
   reference bit but no stats (a batch adds its hits and misses once per stripe). */
static const char *embc_lookup_once(const embc_seg *g, uint32_t s, uint64_t h,
                                    const uint64_t digest[4], double now, int count, int *bad) {
    embc_stripe *st = embc_stripe_at(g, s);
    uint32_t at, slot = embc_find(g, s, h, digest, &at);
    embc_entry *e;
    if (slot == EMBC_BAD) { *bad = 1; return 0; }
    if (slot == EMBC_NO_SLOT) {
        if (count == 1) st->misses++;
        return 0;
    }
    e = &embc_entries(g, s)[slot];
    if (e->expires_at <= now) {
        embc_cell_delete(g, s, at);
        embc_free_slot(g, s, slot);
        st->size--;
        st->expirations++;
        if (count == 1) st->misses++;
        return 0;
    }
    if (count) {
        if (!e->ref) e->ref = 1;
        if (count == 1) st->hits++;
    }
    return embc_row(g, s, slot);
}

static const char *embc_lookup(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t digest[4],
                               double now, int count) {
    int bad = 0;
    const char *row = embc_lookup_once(g, s, h, digest, now, count, &bad);
    if (bad) {
        embc_repair(g, s);
        bad = 0;
        row = embc_lookup_once(g, s, h, digest, now, count, &bad);
    }
    return bad ? 0 : row;
}

/* A look-ahead that changes nothing: a batch's keys' index cells are fetched
   from memory together rather than each waiting for the copy before it. */
static inline void embc_prefetch_cell(const embc_seg *g, uint32_t s, uint64_t h) {
    __builtin_prefetch(&embc_cells(g, s)[(uint32_t)h & (g->L.cells_per_stripe - 1)], 0, 3);
}

/* A put in two halves, the row written between them by the caller. */
typedef struct {
    uint32_t slot;       /* the fresh slot the row goes to */
    uint32_t old;        /* the key's live slot, or EMBC_NO_SLOT */
    uint32_t cell;       /* its cell */
} embc_put;

static int embc_put_begin_once(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t digest[4],
                               double now, embc_put *p) {
    embc_stripe *st = embc_stripe_at(g, s);
    embc_entry *ents = embc_entries(g, s);
    uint32_t slots = embc_slots(g, s);
    p->old = embc_find(g, s, h, digest, &p->cell);
    if (p->old == EMBC_BAD) return -1;
    if (p->old == EMBC_NO_SLOT && st->size >= embc_stripe_cap(&g->L, s))
        if (embc_evict_one(g, s, now)) return -1;
    p->slot = st->free_head;
    if (p->slot >= slots || ents[p->slot].state != EMBC_FREE) return -1;
    st->free_head = ents[p->slot].next_free;
    return 0;
}

/* Take a free slot for `digest` (evicting when the stripe is full); its row is
   embc_row(g, s, p->slot). -1 only if the stripe could not be made sound. */
static int embc_put_begin(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t digest[4],
                          double now, embc_put *p) {
    if (embc_put_begin_once(g, s, h, digest, now, p) == 0) return 0;
    embc_repair(g, s);
    return embc_put_begin_once(g, s, h, digest, now, p);
}

/* Publish the row written into p->slot: state word last, then the index. */
static void embc_put_publish(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t digest[4],
                             double expires_at, const embc_put *p) {
    embc_stripe *st = embc_stripe_at(g, s);
    embc_entry *e = &embc_entries(g, s)[p->slot];
    memcpy(e->digest, digest, 32);
    e->expires_at = expires_at;
    e->seq = ++st->seq;
    e->ref = 0;
    __atomic_store_n(&e->state, EMBC_LIVE, __ATOMIC_RELEASE);
    if (p->old != EMBC_NO_SLOT) {
        __atomic_store_n(&embc_cells(g, s)[p->cell].slot, p->slot, __ATOMIC_RELEASE);
        embc_free_slot(g, s, p->old);
        st->overwrites++;
    } else {
        embc_cell_insert(g, s, (uint32_t)h, p->slot);
        st->size++;
    }
    st->puts++;
}

/* Remove `digest`: 1 if it was live, else 0. */
static int embc_remove(const embc_seg *g, uint32_t s, uint64_t h, const uint64_t digest[4], double now) {
    embc_stripe *st = embc_stripe_at(g, s);
    uint32_t at, slot = embc_find(g, s, h, digest, &at);
    if (slot == EMBC_BAD) {
        embc_repair(g, s);
        slot = embc_find(g, s, h, digest, &at);
        if (slot == EMBC_BAD) return 0;
    }
    if (slot == EMBC_NO_SLOT) return 0;
    embc_cell_delete(g, s, at);
    embc_free_slot(g, s, slot);
    st->size--;
    if (embc_entries(g, s)[slot].expires_at <= now) {
        st->expirations++;
        return 0;
    }
    st->removals++;
    return 1;
}

/* Empty stripe s: state words first, then what derives from them. */
static void embc_clear(const embc_seg *g, uint32_t s) {
    embc_entry *ents = embc_entries(g, s);
    uint32_t i, slots = embc_slots(g, s);
    for (i = 0; i < slots; i++) __atomic_store_n(&ents[i].state, EMBC_FREE, __ATOMIC_RELEASE);
    embc_repair(g, s);
    embc_stripe_at(g, s)->repairs--;   /* a clear is not a repair */
}

/* Initialise a fresh (zeroed) segment's stripes; 0 or an errno. */
static int embc_init(const embc_seg *g) {
    uint32_t s;
    for (s = 0; s < g->L.n_stripes; s++) {
        int rc = embc_mutex_init(&embc_stripe_at(g, s)->mutex);
        if (rc) return rc;
        embc_clear(g, s);
    }
    return 0;
}

/* Check stripe s's invariants (locked): 0, or the first broken one's message. */
static const char *embc_verify(const embc_seg *g, uint32_t s) {
    embc_stripe *st = embc_stripe_at(g, s);
    embc_entry *ents = embc_entries(g, s);
    embc_cell *cells = embc_cells(g, s);
    uint32_t slots = embc_slots(g, s), mask = g->L.cells_per_stripe - 1, i, live = 0, occupied = 0, n = 0;
    for (i = 0; i < slots; i++) {
        uint64_t h;
        uint32_t at;
        if (ents[i].state == EMBC_FREE) continue;
        if (ents[i].state != EMBC_LIVE) return "an entry has a state word that is neither FREE nor LIVE";
        live++;
        h = embc_hash(g, ents[i].digest);
        if (embc_stripe_of(g, h) != s) return "a live entry sits in another key's stripe";
        if (embc_find(g, s, h, ents[i].digest, &at) != i) return "a live entry is not found through the index (or twice live)";
    }
    if (live != st->size) return "the stripe's size differs from its live entries";
    if (live > embc_stripe_cap(&g->L, s)) return "the stripe holds more entries than its bound";
    for (i = 0; i <= mask; i++) {
        uint32_t slot = cells[i].slot;
        if (slot == EMBC_NO_SLOT) continue;
        occupied++;
        if (slot >= slots || ents[slot].state != EMBC_LIVE) return "a cell names a slot that is not live";
        if (cells[i].tag != (uint32_t)embc_hash(g, ents[slot].digest)) return "a cell's tag is not its entry's hash";
    }
    if (occupied != live) return "the index holds another count of cells than live entries";
    for (i = st->free_head; i != EMBC_NO_SLOT; i = ents[i].next_free) {
        if (i >= slots) return "the free chain leaves the stripe";
        if (ents[i].state != EMBC_FREE) return "the free chain holds a live slot";
        if (++n > slots) return "the free chain loops";
    }
    if (n != slots - live) return "the free chain misses free slots";
    if (st->hand >= slots) return "the CLOCK hand is out of range";
    return 0;
}

#endif /* EMBCACHE_SHARED_STRIPE_H */
