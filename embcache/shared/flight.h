/*
 * Cross-process single flight: pending markers in the segment.
 *
 * Each stripe has EMBC_PENDING_PER_STRIPE markers, guarded by the stripe's lock.
 * A process that misses a key claims a free marker (digest, its pid, thread,
 * the time) and computes; others that miss the same key find the marker and
 * sleep on its futex word (FUTEX_WAIT on the shared mapping, with a timeout).
 * The owner stores its rows, then releases the marker: busy = 0, word + 1,
 * FUTEX_WAKE. A waiter that wakes (or times out) looks again: a hit ends its
 * wait; a marker whose owner is dead (no such pid, or a zombie) or older than
 * the waiter's timeout is taken over (rewritten with the waiter as owner, word
 * + 1 so the other waiters look again). A marker is plain data: a death in the
 * middle of writing one leaves, at worst, a marker whose owner is dead, which
 * the next caller takes over. Nothing here touches Python.
 */
#ifndef EMBCACHE_SHARED_FLIGHT_H
#define EMBCACHE_SHARED_FLIGHT_H

#include "shared/stripe.h"

#if EMBC_SHM_SUPPORTED
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static inline embc_pending *embc_pendings(const embc_seg *g, uint32_t s) {
    return (embc_pending *)(g->base + g->L.pending_at) + (uint64_t)s * EMBC_PENDING_PER_STRIPE;
}

static inline embc_pending *embc_pending_get(const embc_seg *g, uint32_t s, int i) {
    return &embc_pendings(g, s)[i];
}

/* The marker of `digest` in stripe s (locked), or -1. */
static int embc_pending_find(const embc_seg *g, uint32_t s, const uint64_t digest[4]) {
    embc_pending *p = embc_pendings(g, s);
    int i;
    for (i = 0; i < EMBC_PENDING_PER_STRIPE; i++)
        if (p[i].busy == 1 && memcmp(p[i].digest, digest, 32) == 0) return i;
    return -1;
}

/* Make marker i (or a free one when i < 0) `digest`'s, owned by the caller; its
   index, or -1 when every marker is busy. */
static int embc_pending_own(const embc_seg *g, uint32_t s, int i, const uint64_t digest[4],
                            int32_t pid, uint32_t start, uint64_t thread, double now) {
    embc_pending *p = embc_pendings(g, s);
    if (i < 0) {
        for (i = 0; i < EMBC_PENDING_PER_STRIPE; i++)
            if (p[i].busy != 1) break;
        if (i == EMBC_PENDING_PER_STRIPE) return -1;
    }
    memcpy(p[i].digest, digest, 32);
    p[i].pid = pid;
    p[i].start = start;
    p[i].thread = thread;
    p[i].started = now;
    __atomic_add_fetch(&p[i].word, 1, __ATOMIC_RELEASE);
    p[i].busy = 1;
    return i;
}

/* 1 if marker i (stripe locked) is `digest`'s and owned by (pid, start, thread):
   a process that was given a dead owner's pid (and, forked from the same parent,
   its thread id) is not that owner. */
static int embc_pending_mine(const embc_seg *g, uint32_t s, int i, const uint64_t digest[4],
                             int32_t pid, uint32_t start, uint64_t thread) {
    embc_pending *p = &embc_pendings(g, s)[i];
    return p->busy == 1 && p->pid == pid && p->start == start && p->thread == thread
        && memcmp(p->digest, digest, 32) == 0;
}

/* Release marker i (stripe locked); wake its sleepers with embc_futex_wake after
   unlocking. */
static void embc_pending_release(const embc_seg *g, uint32_t s, int i) {
    embc_pending *p = &embc_pendings(g, s)[i];
    p->busy = 0;
    __atomic_add_fetch(&p->word, 1, __ATOMIC_RELEASE);
}

static inline uint32_t *embc_pending_word(const embc_seg *g, uint32_t s, int i) {
    return &embc_pendings(g, s)[i].word;
}

static void embc_futex_wake(uint32_t *word) {
#if EMBC_SHM_SUPPORTED
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Sleep while *word == seen, at most `seconds` (no GIL needed). */
static void embc_futex_wait(uint32_t *word, uint32_t seen, double seconds) {
#if EMBC_SHM_SUPPORTED
    struct timespec ts;
    if (seconds <= 0) return;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen) return;
    syscall(SYS_futex, word, FUTEX_WAIT, seen, &ts, NULL, 0);
#else
    (void)word; (void)seen; (void)seconds;
#endif
}

#endif /* EMBCACHE_SHARED_FLIGHT_H */
