/*
 * Double-buffered sequential reading for snapshot loads.
 *
 * A reader thread fills one buffer with pread() and checks that every float in
 * it is finite (float32 rows; rows of a compact storage are checked once decoded,
 * by the loader) while the loading thread checksums and stores the other, so the
 * disk (or, from the page cache, the kernel's copy), the checks and the stores
 * overlap. The work is split so that neither thread waits long for the other:
 * the kernel's copy costs about what the checksum does. Two buffers, handed back
 * and forth under one mutex and one condition variable; no Python anywhere (the
 * loader calls these without the GIL).
 *
 *   embcache_reader_start(r, fd, offset, nbytes, chunk, buf0, buf1, f32)   0 or an errno;
 *                                       f32: the bytes are float32 values to check
 *   p = embcache_reader_next(r, &len, &finite)   the next filled buffer (file order);
 *                                       len < 0: -errno of a failed read, or
 *                                       -EMBCACHE_READER_SHORT at an early end of file;
 *                                       finite: 0 if a value is NaN or infinite
 *   embcache_reader_release(r)          that buffer may be refilled
 *   embcache_reader_stop(r)             stop and join (also after an error; idempotent)
 */
#ifndef EMBCACHE_SNAPIO_H
#define EMBCACHE_SNAPIO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/kernels.h"
#include "core/worker.h"

#define EMBCACHE_READER_SHORT 100000

typedef struct {
    int fd;
    uint64_t offset;           /* where the next read starts */
    uint64_t end;
    size_t chunk;
    char *buf[2];
    ptrdiff_t len[2];          /* bytes in a full buffer, or -errno / -SHORT */
    int finite[2];
    int check_f32;             /* check the floats (1), or leave them (0: finite is 1) */
    int full[2];
    int next;                  /* the buffer the consumer takes next */
    embcache_worker worker;    /* the thread, its mutex and condition (core/worker.h) */
} embcache_reader;

static ptrdiff_t embcache_reader_fill(int fd, char *p, size_t n, uint64_t offset) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)(offset + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -(ptrdiff_t)errno;
        }
        if (r == 0) return -(ptrdiff_t)EMBCACHE_READER_SHORT;
        got += (size_t)r;
    }
    return (ptrdiff_t)got;
}

static void *embcache_reader_main(void *arg) {
    embcache_reader *r = (embcache_reader *)arg;
    int slot = 0;
    for (;;) {
        uint64_t offset;
        size_t n;
        ptrdiff_t len;
        pthread_mutex_lock(&r->worker.mu);
        while (r->full[slot] && !r->worker.stop)
            pthread_cond_wait(&r->worker.cv, &r->worker.mu);
        if (r->worker.stop || r->offset >= r->end) {
            pthread_mutex_unlock(&r->worker.mu);
            return NULL;
        }
        offset = r->offset;
        n = r->end - offset < r->chunk ? (size_t)(r->end - offset) : r->chunk;
        r->offset += n;
        pthread_mutex_unlock(&r->worker.mu);

        len = embcache_reader_fill(r->fd, r->buf[slot], n, offset);
        if (len > 0 && r->check_f32) {
            r->finite[slot] = embcache_f32_all_finite((const float *)r->buf[slot],
                                                     (size_t)len / 4);
        }

        pthread_mutex_lock(&r->worker.mu);
        r->len[slot] = len;
        r->full[slot] = 1;
        if (len < 0) r->offset = r->end;     /* nothing more after an error */
        pthread_cond_broadcast(&r->worker.cv);
        pthread_mutex_unlock(&r->worker.mu);
        if (len < 0) return NULL;
        slot ^= 1;
    }
}

static int embcache_reader_start(embcache_reader *r, int fd, uint64_t offset, uint64_t nbytes,
                                 size_t chunk, char *buf0, char *buf1, int f32) {
    memset(r, 0, sizeof(*r));
    r->check_f32 = f32;
    r->finite[0] = r->finite[1] = 1;
    r->fd = fd;
    r->offset = offset;
    r->end = offset + nbytes;
    r->chunk = chunk;
    r->buf[0] = buf0;
    r->buf[1] = buf1;
    return embcache_worker_start(&r->worker, embcache_reader_main, r);
}

static char *embcache_reader_next(embcache_reader *r, ptrdiff_t *len, int *finite) {
    int slot;
    pthread_mutex_lock(&r->worker.mu);
    slot = r->next;
    while (!r->full[slot])
        pthread_cond_wait(&r->worker.cv, &r->worker.mu);
    *len = r->len[slot];
    *finite = r->finite[slot];
    pthread_mutex_unlock(&r->worker.mu);
    return r->buf[slot];
}

static void embcache_reader_release(embcache_reader *r) {
    pthread_mutex_lock(&r->worker.mu);
    r->full[r->next] = 0;
    r->next ^= 1;
    pthread_cond_broadcast(&r->worker.cv);
    pthread_mutex_unlock(&r->worker.mu);
}

static void embcache_reader_stop(embcache_reader *r) {
    embcache_worker_stop(&r->worker);
}

#endif /* EMBCACHE_SNAPIO_H */
