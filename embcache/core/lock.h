/*
 * The cache lock.
 *
 * Python 3.13+: PyMutex, one compare-and-swap each way; it parks the thread
 * (dropping the GIL if held) when contended, hands the lock over to a waiter
 * that has waited too long, and is correct without a GIL.
 *
 * Before 3.13 every interpreter has a GIL, and the cache only ever takes and
 * drops its lock while holding the GIL, so plain fields guarded by the GIL make
 * a complete mutex: whoever holds the GIL and finds the lock free takes it. The
 * lock can only be found held while its holder is in a GIL-free copy; a waiter
 * then gives up the GIL and yields until the lock is free. That alone would
 * starve a waiter: a thread that calls the cache in a loop drops the GIL only
 * inside its GIL-free copies, while it holds the lock, and takes the lock again
 * as soon as it is free. So a waiter that has yielded HEIR_AFTER times names
 * itself the heir, and a free lock is then taken by the heir alone. (A strict
 * ticket order for every waiter convoys instead: a waiter whose turn has come
 * but who has no GIL blocks every thread that has it, each of which joins the
 * queue, and the slowdown feeds itself.) The uncontended path is two loads and
 * a store.
 *
 * embcache_lock_reset makes a lock free without releasing it, for a forked
 * child: its only thread is the one that forked, and it holds every cache lock
 * (see the fork hooks in core/cache.pxi); waiters of the parent do not exist there.
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

#define EMBCACHE_LOCK_HEIR_AFTER 8

typedef struct { int locked; unsigned long heir; } embcache_lock;
static inline void embcache_lock_acquire(embcache_lock *l) {
    unsigned long me;
    int yields = 0;
    if (!l->locked && !l->heir) {
        l->locked = 1;
        return;
    }
    me = PyThread_get_thread_ident();
    for (;;) {
        if (!l->locked && (!l->heir || l->heir == me)) {
            l->locked = 1;
            if (l->heir == me) l->heir = 0;
            return;
        }
        if (++yields >= EMBCACHE_LOCK_HEIR_AFTER && !l->heir) l->heir = me;
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
}
static inline void embcache_lock_release(embcache_lock *l) { l->locked = 0; }
static inline void embcache_lock_reset(embcache_lock *l) { l->locked = 0; l->heir = 0; }

#endif

#endif /* EMBCACHE_LOCK_H */
