/*
 * The cache lock.
 *
 * Python 3.13+: PyMutex, one compare-and-swap each way; it parks the thread
 * (dropping the GIL if held) when contended, and is correct without a GIL.
 *
 * Before 3.13 every interpreter has a GIL, and the cache only ever takes and
 * drops its lock while holding the GIL. A flag guarded by the GIL is then a
 * complete mutex: nobody else can test or set it between our test and our set.
 * The flag stays set while the holder runs a long copy without the GIL; a thread
 * that finds it set gives up the GIL and yields until the holder, back under
 * the GIL, clears it. The uncontended path is a load and two stores, where
 * PyThread_type_lock would cost two atomic operations and a clock read.
 */
#ifndef EMBCACHE_LOCK_H
#define EMBCACHE_LOCK_H

#include <Python.h>

#if PY_VERSION_HEX >= 0x030d0000 && !defined(Py_LIMITED_API)

typedef PyMutex embcache_lock;
static inline void embcache_lock_acquire(embcache_lock *l) { PyMutex_Lock(l); }
static inline void embcache_lock_release(embcache_lock *l) { PyMutex_Unlock(l); }

#else

#include <sched.h>

typedef struct { int held; } embcache_lock;
static inline void embcache_lock_acquire(embcache_lock *l) {
    while (l->held) {
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
    l->held = 1;
}
static inline void embcache_lock_release(embcache_lock *l) { l->held = 0; }

#endif

#endif /* EMBCACHE_LOCK_H */
