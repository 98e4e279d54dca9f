/*
 * Double-buffered sequential writing for snapshot saves, with write-behind.
 *
 * The saving thread fills one buffer (rows copied out under the cache lock,
 * checksummed without it) while a writer thread hands the other to write() and
 * then asks the kernel to start writing those pages to the disk at once
 * (sync_file_range SYNC_FILE_RANGE_WRITE, Linux). Without that, the kernel
 * starts writeback only when dirty pages pass its background threshold (10% of
 * memory by default), so a 1 GiB snapshot would sit in the page cache until
 * the final fsync and the disk would idle while the file is produced. With it,
 * the disk works from the first buffer on and the fsync waits for the tail only.
 * Writeback is started, never waited for (the call may block only while the
 * device's queue is full, in the writer thread); where sync_file_range is
 * missing, the fsync does all of it, as before.
 *
 * Two buffers handed back and forth under one mutex and one condition variable;
 * no Python anywhere (the saver calls these without the GIL). The first failed
 * write stops the writer; its errno is returned by every later call.
 *
 *   embcache_writer_start(w, fd, buf0, buf1)     0 or an errno
 *   p = embcache_writer_buffer(w)                the buffer to fill next (waits
 *                                               until the writer is done with it)
 *   err = embcache_writer_submit(w, len)         hand it over to be written
 *   err = embcache_writer_finish(w)              wait for every write, join;
 *                                               0, or the first errno
 *   embcache_writer_stop(w)                      join without waiting for the
 *                                               queue (after an error; idempotent)
 */
#ifndef EMBCACHE_SNAPWRITE_H
#define EMBCACHE_SNAPWRITE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1      /* sync_file_range */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/worker.h"

typedef struct {
    int fd;
    char *buf[2];
    size_t len[2];
    int full[2];
    int fill;                  /* the buffer the producer fills next */
    uint64_t offset;           /* where the writer's next buffer goes */
    int error;                 /* errno of the first failed write */
    embcache_worker worker;    /* the thread, its mutex and condition (core/worker.h) */
} embcache_writer;

static int embcache_write_fully(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n < ((size_t)1 << 30) ? n : ((size_t)1 << 30));
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (w == 0) return EIO;    /* no progress: never spin */
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void embcache_write_behind(int fd, uint64_t offset, size_t n) {
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    (void)sync_file_range(fd, (off_t)offset, (off_t)n, SYNC_FILE_RANGE_WRITE);  /* a hint */
#else
    (void)fd; (void)offset; (void)n;
#endif
}

static void *embcache_writer_main(void *arg) {
    embcache_writer *w = (embcache_writer *)arg;
    int slot = 0;
    for (;;) {
        size_t n;
        int err;
        pthread_mutex_lock(&w->worker.mu);
        while (!w->full[slot] && !w->worker.stop)
            pthread_cond_wait(&w->worker.cv, &w->worker.mu);
        if (w->worker.stop) {             /* finish has drained the queue, or an error ended it */
            pthread_mutex_unlock(&w->worker.mu);
            return NULL;
        }
        n = w->len[slot];
        err = w->error;
        pthread_mutex_unlock(&w->worker.mu);

        if (!err) {
            err = embcache_write_fully(w->fd, w->buf[slot], n);
            if (!err) embcache_write_behind(w->fd, w->offset, n);
            w->offset += n;
        }

        pthread_mutex_lock(&w->worker.mu);
        if (err && !w->error) w->error = err;
        w->full[slot] = 0;
        pthread_cond_broadcast(&w->worker.cv);
        pthread_mutex_unlock(&w->worker.mu);
        slot ^= 1;
    }
}

static int embcache_writer_start(embcache_writer *w, int fd, char *buf0, char *buf1) {
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->buf[0] = buf0;
    w->buf[1] = buf1;
    return embcache_worker_start(&w->worker, embcache_writer_main, w);
}

static char *embcache_writer_buffer(embcache_writer *w) {
    char *p;
    pthread_mutex_lock(&w->worker.mu);
    while (w->full[w->fill])
        pthread_cond_wait(&w->worker.cv, &w->worker.mu);
    p = w->buf[w->fill];
    pthread_mutex_unlock(&w->worker.mu);
    return p;
}

static int embcache_writer_submit(embcache_writer *w, size_t len) {
    int err;
    pthread_mutex_lock(&w->worker.mu);
    err = w->error;
    if (!err && len) {
        w->len[w->fill] = len;
        w->full[w->fill] = 1;
        w->fill ^= 1;
        pthread_cond_broadcast(&w->worker.cv);
    }
    pthread_mutex_unlock(&w->worker.mu);
    return err;
}

static void embcache_writer_stop(embcache_writer *w) {
    embcache_worker_stop(&w->worker);
}

static int embcache_writer_finish(embcache_writer *w) {
    int err;
    if (!w->worker.started) return 0;
    pthread_mutex_lock(&w->worker.mu);
    while ((w->full[0] || w->full[1]) && !w->error)
        pthread_cond_wait(&w->worker.cv, &w->worker.mu);
    err = w->error;
    pthread_mutex_unlock(&w->worker.mu);
    embcache_writer_stop(w);
    return err;
}

#endif /* EMBCACHE_SNAPWRITE_H */
