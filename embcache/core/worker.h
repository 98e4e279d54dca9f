/*
 * A worker thread with the mutex and condition variable it shares with the
 * thread that started it: what the snapshot reader (core/snapshot/reader.h) and writer
 * (core/snapshot/writer.h) are built on. No Python anywhere.
 *
 *   embcache_worker_start(w, main, arg)   init the mutex and condition, start
 *                                         main(arg); 0 or an errno (nothing left
 *                                         to clean up on failure)
 *   embcache_worker_stop(w)               set `stop`, wake the worker, join it,
 *                                         destroy both (idempotent)
 *
 * The worker reads `stop` with the mutex held and ends when it is set.
 */
#ifndef EMBCACHE_WORKER_H
#define EMBCACHE_WORKER_H

#include <pthread.h>
#include <string.h>

/* glibc 2.34 moved pthread_create and pthread_join into libc under a new symbol
 * version; binding to the original one keeps the wheel loadable on the older
 * glibc that its manylinux_2_17 tag promises (both versions are the same code). */
#if defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.2.5");
__asm__(".symver pthread_join,pthread_join@GLIBC_2.2.5");
#endif

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int stop;                  /* under mu */
    int started;
} embcache_worker;

static int embcache_worker_start(embcache_worker *w, void *(*main_fn)(void *), void *arg) {
    int err;
    memset(w, 0, sizeof(*w));
    if ((err = pthread_mutex_init(&w->mu, NULL)) != 0) return err;
    if ((err = pthread_cond_init(&w->cv, NULL)) != 0) {
        pthread_mutex_destroy(&w->mu);
        return err;
    }
    if ((err = pthread_create(&w->thread, NULL, main_fn, arg)) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return err;
    }
    w->started = 1;
    return 0;
}

static void embcache_worker_stop(embcache_worker *w) {
    if (!w->started) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w->started = 0;
}

#endif /* EMBCACHE_WORKER_H */
