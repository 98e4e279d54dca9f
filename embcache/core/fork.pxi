# Forking with caches alive.
#
# Owns: the registry of live caches and the fork hooks that hand a child every
# cache unlocked and consistent.
#
# A fork while another thread is inside a cache operation (a long copy runs
# without the GIL) would hand the child a lock held forever by a thread that does
# not exist there. So the forking thread takes every live cache's lock first
# (waiting for operations in progress to finish; no operation waits on anything
# while it holds a lock) and both sides release them after the fork: the child
# gets every cache unlocked and consistent. The garbage collector is paused in
# between, so no finalizer can call a cache whose lock this thread holds.
cdef object _live_caches = weakref.WeakSet()
cdef list _held_for_fork = []
cdef bint _gc_was_enabled = False


def _lock_caches_for_fork():
    global _gc_was_enabled
    _gc_was_enabled = gc.isenabled()
    gc.disable()
    _held_for_fork[:] = list(_live_caches)
    cdef SyncEmbeddingCache cache
    for cache in _held_for_fork:
        embcache_lock_acquire(&cache.lock)


def _unlock_caches_after_fork():
    cdef SyncEmbeddingCache cache
    for cache in _held_for_fork:
        embcache_lock_release(&cache.lock)
    _held_for_fork.clear()
    if _gc_was_enabled:
        gc.enable()


def _reset_locks_in_child():
    # the parent's waiters do not exist here: every lock is simply free
    cdef SyncEmbeddingCache cache
    for cache in _held_for_fork:
        embcache_lock_reset(&cache.lock)
    _held_for_fork.clear()
    if _gc_was_enabled:
        gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_lock_caches_for_fork, after_in_parent=_unlock_caches_after_fork,
                        after_in_child=_reset_locks_in_child)
