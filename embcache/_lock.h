/*
 * The cache lock.
 *
 * Python 3.13+: PyMutex, one compare-and-swap each way; it parks the thread
 * (dropping the GIL if held) when contended, hands the lock over to a waiter
 * that has waited too long, and is correct without a GIL.
 *
 * Before 3.13 every interpreter has a GIL, and the cache only ever takes and
 * drops its lock while holding the GIL, so plain fields guarded by the GIL make
 * a complete mutex. It is a ticket lock: each acquirer draws the next ticket
 * and waits (giving up the GIL and yielding) until its ticket is served, so
 * waiters are served in order. A plain flag would starve a waiter: a thread
 * that calls the cache in a loop drops the GIL only inside its GIL-free copies,
 * while it holds the lock, and takes the lock again as soon as it is free.
 * The uncontended path is two loads and two stores.
 *
 * embcache_lock_reset makes a lock free without releasing it, for a forked
 * child: its only thread is the one that forked, and it holds every cache lock
 * (see the fork hooks in _cache.pxi); waiters of the parent do not exist there.
 */
#ifndef EMBCACHE_LOCK_H
#define EMBCACHE_LOCK_H

#include <Python.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030d0000 && !defined(Py_LIMITED_API)

typedef PyMutex embcache_lock;
static inline void embcache_lock_acquire(embcache_lock *l) { PyMutex_Lock(l); }
static inline void embcache_lock_release(embcache_lock *l) { PyMutex_Unlock(l); }
static inline void embcache_lock_reset(embcache_lock *l) { memset(l, 0, sizeof(*l)); }

#else

#include <sched.h>

typedef struct { unsigned long next; unsigned long serving; } embcache_lock;
static inline void embcache_lock_acquire(embcache_lock *l) {
    unsigned long ticket = l->next++;
    while (l->serving != ticket) {
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
}
static inline void embcache_lock_release(embcache_lock *l) { l->serving++; }
static inline void embcache_lock_reset(embcache_lock *l) { l->next = l->serving = 0; }

#endif

#endif /* EMBCACHE_LOCK_H */
