/* The array get returns: a new float32 array of one row, owned by the caller
 * (OWNDATA, writable, C-contiguous, no base) like any numpy array, whose block
 * comes from a small pool of blocks that earlier such arrays freed.
 *
 * Why: glibc serves a 3 KiB block (a 768-dim row) from its bins, and callgrind
 * counts ~250 instructions for its malloc and as many for its free: a quarter of
 * a get hit (tools/default_cache_callgrind.py get_hit). A pooled block costs a
 * few. numpy's own small-block cache stops at 1 KiB.
 *
 * How: the array is made around a block of ours, marked OWNDATA, and given
 * embc_row_handler as its numpy memory handler (numpy >= 1.22's per-array
 * allocator, PyDataMem_Handler): when the array goes, numpy hands the block to
 * embc_row_free, which keeps it for the next array of the same size or frees
 * it. Every block is malloc's, so a resize (the handler's realloc) and a free
 * the pool declines are libc's own.
 *
 * The pool: EMBC_POOL_CLASSES sizes (exact byte counts; a size new to the pool
 * takes an empty class, or empties the one given a block longest ago), each a
 * stack of at most EMBC_POOL_DEPTH blocks and EMBC_POOL_CLASS_BYTES bytes, of
 * blocks of at most that many bytes: 256 KiB at most in all (24 KiB for one
 * 768-dim size), bounded the way malloc's own free lists are and small beside
 * any cache. It is guarded by the GIL (arrays are made under it and numpy frees
 * their data under it). On a free-threaded build, and in the sanitizer build
 * (EMBC_NO_ROW_POOL: AddressSanitizer then sees every use after free), there
 * is no pool: blocks go to malloc and free. After fork the child has the
 * parent's pool, its blocks its own copies. Each extension module that
 * includes this file (embcache._core, embcache.shared._segment) has its own.
 *
 * Included by _core.pyx after numpy's headers (core/rows.pxi declares it). */
#ifndef EMBCACHE_ROW_ARRAYS_H
#define EMBCACHE_ROW_ARRAYS_H

#include <stdint.h>
#include <stdlib.h>

#if defined(Py_GIL_DISABLED) && !defined(EMBC_NO_ROW_POOL)
#define EMBC_NO_ROW_POOL 1
#endif

/* The tracemalloc domain numpy files array data under (numpy's
 * NPY_TRACE_DOMAIN; tests/core/test_row_arrays.py checks it against an array
 * numpy allocated). */
#define EMBC_NUMPY_TRACE_DOMAIN 389047

#define EMBC_POOL_CLASSES 8
#define EMBC_POOL_DEPTH 8
#define EMBC_POOL_CLASS_BYTES ((size_t)32768)

typedef struct {
    size_t size;   /* the class's block size (any size while count is 0) */
    uint64_t used; /* the pool's clock when a block was last given to it */
    int count;     /* blocks on the stack */
    void *blocks[EMBC_POOL_DEPTH];
} EmbcPoolClass;

typedef struct {
    uint64_t clock; /* counts gives */
    EmbcPoolClass classes[EMBC_POOL_CLASSES];
} EmbcRowPool;

static EmbcRowPool embc_row_pool;

/* A pooled block of exactly `size` bytes, or NULL. */
static inline void *embc_pool_take(size_t size)
{
#ifndef EMBC_NO_ROW_POOL
    for (int i = 0; i < EMBC_POOL_CLASSES; i++) {
        EmbcPoolClass *c = &embc_row_pool.classes[i];
        if (c->size == size && c->count > 0) {
            return c->blocks[--c->count];
        }
    }
#else
    (void)size;
#endif
    return NULL;
}

/* The class for blocks of `size`: its own, else an empty one, else the one
 * used longest ago, emptied (a workload's sizes change: a size no longer asked
 * for gives its class up). */
static inline EmbcPoolClass *embc_pool_class_for(size_t size)
{
    EmbcPoolClass *empty = NULL, *oldest = &embc_row_pool.classes[0];
    for (int i = 0; i < EMBC_POOL_CLASSES; i++) {
        EmbcPoolClass *c = &embc_row_pool.classes[i];
        if (c->size == size)
            return c;
        if (c->count == 0 && empty == NULL)
            empty = c;
        if (c->used < oldest->used)
            oldest = c;
    }
    if (empty != NULL)
        return empty;
    while (oldest->count > 0)
        free(oldest->blocks[--oldest->count]);
    return oldest;
}

/* Keep `block` (malloc's, `size` bytes) for a later take, or free it. */
static inline void embc_pool_give(void *block, size_t size)
{
#ifndef EMBC_NO_ROW_POOL
    if (size <= EMBC_POOL_CLASS_BYTES) {
        EmbcPoolClass *c = embc_pool_class_for(size);
        if (c->count < EMBC_POOL_DEPTH && (size_t)(c->count + 1) * size <= EMBC_POOL_CLASS_BYTES) {
            c->size = size;
            c->used = ++embc_row_pool.clock;
            c->blocks[c->count++] = block;
            return;
        }
    }
#else
    (void)size;
#endif
    free(block);
}

static void *embc_row_malloc(void *ctx, size_t size)
{
    (void)ctx;
    void *block = embc_pool_take(size);
    return block != NULL ? block : malloc(size);
}

static void *embc_row_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    return calloc(nelem, elsize);
}

static void *embc_row_realloc(void *ctx, void *ptr, size_t new_size)
{
    (void)ctx;
    return realloc(ptr, new_size);
}

/* numpy passes the array's byte count (1 for an empty one): a block that was
 * resized reaches here with its new size, the size realloc gave it. */
static void embc_row_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr != NULL)
        embc_pool_give(ptr, size);
}

static PyDataMem_Handler embc_row_handler = {
    "embcache_rows",
    1,
    {NULL, embc_row_malloc, embc_row_calloc, embc_row_realloc, embc_row_free},
};

/* The capsule every pooled array holds (numpy's "mem_handler" capsule form);
 * made once, never freed: arrays may outlive the module's other objects. */
static PyObject *embc_row_capsule = NULL;

static int embc_row_arrays_init(void)
{
    if (embc_row_capsule == NULL) {
        embc_row_capsule = PyCapsule_New(&embc_row_handler, "mem_handler", NULL);
        if (embc_row_capsule == NULL)
            return -1;
    }
    return 0;
}

/* A new 1-D float32 array of `dim` values (uninitialised), or NULL with
 * MemoryError set. Made under the GIL. */
static PyObject *embc_row_array(npy_intp dim)
{
    size_t nbytes = (size_t)dim * sizeof(float);
    if (nbytes == 0)
        nbytes = 1;
    void *data = embc_row_malloc(NULL, nbytes);
    if (data == NULL)
        return PyErr_NoMemory();
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(NPY_FLOAT32), 1,
                                         &dim, NULL, data, NPY_ARRAY_CARRAY, NULL);
    if (arr == NULL) {
        embc_pool_give(data, nbytes);
        return NULL;
    }
    Py_INCREF(embc_row_capsule);
    ((PyArrayObject_fields *)arr)->mem_handler = embc_row_capsule;
    PyArray_ENABLEFLAGS((PyArrayObject *)arr, NPY_ARRAY_OWNDATA);
    /* tracemalloc sees the block as it sees any array's data: numpy tracks
     * what it allocates itself and untracks every OWNDATA array's data when
     * the array goes, whatever its handler (a no-op unless tracing) */
    PyTraceMalloc_Track(EMBC_NUMPY_TRACE_DOMAIN, (uintptr_t)data, nbytes);
    return arr;
}

#endif
