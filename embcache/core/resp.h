/*
 * A streaming reader of one RESP reply to MGET, straight into float32 rows.
 *
 * The reply is fed in chunks as they come off the connection; each value is
 * checked as the shared tier writes it (embcache/tier/wire.py: a 12-byte
 * header b"EMBC", version 1, dtype, reserved 0, dim as u32 LE, then the row in
 * the encoding the dtype names: 1 float32 LE, copied once into its row; 2
 * float16, 3 bfloat16, 4 int8, decoded into its row by core/convert.h, from
 * the chunk when the whole payload is in it, else from a scratch row the
 * reader allocates once). Nothing here touches Python: the caller owns the
 * rows and the index and grows nothing.
 *
 * What each element of the reply becomes:
 *   $<len> bulk string   a valid vector (right length, header and dimension,
 *                         every element finite, an int8 scale >= 0): a hit;
 *                         otherwise invalid
 *   $-1, *-1, _          absent (a miss, not an error)
 *   anything else         invalid: -error, +simple, :integer, ,double, #bool,
 *                         (big number, !blob error, =verbatim, and every
 *                         aggregate (*, %, ~, >) with all it holds
 * The reply itself must be an array of exactly the expected count; a top-level
 * -error line is reported as a reply error (its text kept), anything else that
 * is not RESP (an unknown type byte, a bad length, a bulk not followed by CRLF,
 * an attribute) as a protocol error: the connection is then out of step.
 *
 * Row placement: with `compact`, valid values fill rows 0, 1, ... in order and
 * index[k] is the position of the k-th; otherwise value i goes to row i (rows
 * of other values are left as they are, a non-finite payload's row is zeroed).
 * With dim 0 the first value whose header and length agree sets it, and the
 * feed stops with RESP_NEED_ROWS until resp_mget_set_rows gives the rows.
 */
#ifndef EMBCACHE_RESP_H
#define EMBCACHE_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "core/kernels.h"
#include "core/convert.h"

#define RESP_MORE 0         /* every byte used; the reply is not complete */
#define RESP_DONE 1         /* the reply is complete (bytes may remain) */
#define RESP_NEED_ROWS 2    /* the dimension is known now: give the rows */
#define RESP_REPLY_ERROR 3  /* the reply is an error line (text in err) */
#define RESP_PROTOCOL 4     /* not a well-formed reply of the expected shape */

#define RESP_LINE_MAX 64    /* bytes of a type line kept (longer: the rest dropped) */
#define RESP_ERR_MAX 256    /* bytes of a top-level error's text kept */
#define RESP_BULK_MAX 536870912LL /* Redis' own bound on a bulk string */

enum {
    RS_TOP, RS_LINE, RS_HEAD, RS_PAYLOAD, RS_SKIP, RS_CRLF, RS_DONE
};
enum { RV_VALID, RV_ABSENT, RV_INVALID };

typedef struct {
    int64_t n;            /* elements expected */
    int64_t dim;          /* 0: not known yet */
    int compact;
    float *rows;          /* NULL until the dimension is known */
    intptr_t *index;      /* n slots */
    int64_t hits, errors;
    /* progress */
    int state;
    int64_t elem;         /* elements finished */
    int64_t remaining;    /* bytes left to copy or skip in the current bulk */
    int64_t nested;       /* items still to skip inside an invalid aggregate */
    int64_t vlen;         /* the current bulk's length */
    int verdict;          /* of the current element, once known */
    int top_error;        /* the line being read is a top-level error */
    int crlf_seen;        /* bytes of the CRLF after a bulk seen (0..1) */
    unsigned char last;   /* the last byte of a line read */
    int cr;               /* the byte before `last` was a CR */
    size_t line_len, line_kept;
    unsigned char line[RESP_LINE_MAX];
    unsigned char head[12];
    size_t head_len;
    int storage;          /* the current value's encoding (EMBCACHE_STORE_*) */
    int decoded;          /* a compact payload was decoded straight from the chunk */
    unsigned char *dst;   /* where the current value's payload goes: its row, or scratch */
    unsigned char *scratch; /* a compact payload split over chunks (malloc'd on first need) */
    size_t err_len;
    char err[RESP_ERR_MAX + 1];
} resp_mget;

static void resp_mget_init(resp_mget *r, int64_t n, int64_t dim, int compact,
                           float *rows, intptr_t *index) {
    memset(r, 0, sizeof(*r));
    r->n = n;
    r->dim = dim;
    r->compact = compact;
    r->rows = rows;
    r->index = index;
    r->state = RS_TOP;
}

/* Free what the reader allocated (its scratch row); it may not be fed again. */
static void resp_mget_release(resp_mget *r) {
    free(r->scratch);
    r->scratch = NULL;
}

/* The current value's row. */
static float *resp_row(const resp_mget *r) {
    return r->rows + (r->compact ? r->hits : r->elem) * r->dim;
}

static void resp_mget_set_rows(resp_mget *r, float *rows) {
    r->rows = rows;
    if (r->state == RS_PAYLOAD && r->storage == EMBCACHE_STORE_F32)
        r->dst = (unsigned char *)resp_row(r);
}

/* The integer of a type line (after its type byte); 0 when it is not one. */
static int resp_line_int(const resp_mget *r, int64_t *out) {
    size_t i = 1, end = r->line_len;
    int neg = 0;
    int64_t v = 0;
    if (end != r->line_kept || end < 2 || end > 21)
        return 0;
    if (r->line[1] == '-') {
        neg = 1;
        i = 2;
        if (end == 2)
            return 0;
    }
    for (; i < end; i++) {
        unsigned char c = r->line[i];
        if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (c - '0');
    }
    *out = neg ? -v : v;
    return 1;
}

static uint32_t resp_u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The dimension the 12-byte header declares (its encoding in *storage), if it and the
 * bulk length agree; else 0. */
static int64_t resp_header_dim(const unsigned char *h, int64_t vlen, int *storage) {
    uint32_t d;
    if (memcmp(h, "EMBC\x01", 5) != 0 || h[5] < 1 || h[5] > 4 || h[6] != 0 || h[7] != 0)
        return 0;
    *storage = h[5] - 1; /* dtype 1..4 is EMBCACHE_STORE_F32..EMBCACHE_STORE_I8 */
    d = resp_u32le(h + 8);
    if (d < 1 || (int64_t)12 + (int64_t)embcache_row_bytes(*storage, d) != vlen)
        return 0;
    return (int64_t)d;
}

/* Whether a bulk of `v` bytes can be a value of dimension `dim` (0: any) in some encoding. */
static int resp_value_length(int64_t v, int64_t dim) {
    if (dim == 0)
        return v >= 14; /* the shortest: float16 of dim 1 */
    return v == 12 + 4 * dim || v == 12 + 2 * dim || v == 16 + dim;
}

/* The current element is over: count it and move on. */
static void resp_element_done(resp_mget *r) {
    if (r->verdict == RV_VALID) {
        r->index[r->hits] = (intptr_t)r->elem;
        r->hits++;
    } else if (r->verdict == RV_INVALID) {
        r->errors++;
    }
    r->elem++;
    r->state = r->elem == r->n ? RS_DONE : RS_LINE;
    r->line_len = r->line_kept = 0;
    r->last = 0;
}

/* Read the next type line. */
static void resp_next_line(resp_mget *r) {
    r->state = RS_LINE;
    r->line_len = r->line_kept = 0;
    r->last = 0;
}

/* One complete item inside an invalid aggregate was read. */
static void resp_nested_item_done(resp_mget *r) {
    r->nested--;
    if (r->nested == 0)
        resp_element_done(r);
    else
        resp_next_line(r);
}

/* An item is over: an element, with this verdict, or an item inside an invalid
 * aggregate (whose element's verdict stays invalid). */
static void resp_item_done(resp_mget *r, int verdict) {
    if (r->nested) {
        resp_nested_item_done(r);
        return;
    }
    r->verdict = verdict;
    resp_element_done(r);
}

/* The length of a bulk or aggregate type line (-1: null); 0 when it is not one. */
static int resp_line_len(const resp_mget *r, int64_t *out) {
    return resp_line_int(r, out) && *out >= -1 && *out <= RESP_BULK_MAX;
}

/* A complete type line (top-level or item); a status when the feed must stop, else -1.
 * Inside an invalid aggregate (r->nested) an item only has to be read to its end. */
static int resp_on_line(resp_mget *r) {
    int64_t v = 0;
    unsigned char t = r->line_len ? r->line[0] : 0;
    if (r->state == RS_TOP) {
        if (t == '-')
            return RESP_REPLY_ERROR;
        if (t != '*' || !resp_line_int(r, &v) || v != r->n)
            return RESP_PROTOCOL;
        if (r->n == 0) {
            r->state = RS_DONE;
            return RESP_DONE;
        }
        resp_next_line(r);
        return -1;
    }
    switch (t) {
    case '$': case '!': case '=':
        if (!resp_line_len(r, &v))
            return RESP_PROTOCOL;
        if (v == -1) {
            resp_item_done(r, RV_ABSENT);
            return -1;
        }
        if (t == '$' && !r->nested && resp_value_length(v, r->dim)) {
            r->verdict = RV_VALID; /* so far */
            r->vlen = v;
            r->head_len = 0;
            r->state = RS_HEAD;
            return -1;
        }
        if (!r->nested)
            r->verdict = RV_INVALID;
        r->remaining = v;
        r->state = RS_SKIP;
        return -1;
    case '*': case '~': case '>': case '%':
        if (!resp_line_len(r, &v))
            return RESP_PROTOCOL;
        if (v <= 0) {
            resp_item_done(r, v == -1 && t == '*' ? RV_ABSENT : RV_INVALID);
            return -1;
        }
        if (!r->nested) { /* an invalid element: skip its items */
            r->verdict = RV_INVALID;
            r->nested = t == '%' ? 2 * v : v;
            resp_next_line(r);
            return -1;
        }
        r->nested += t == '%' ? 2 * v : v; /* an item: its own items are to skip too */
        if (r->nested > ((int64_t)1 << 40))
            return RESP_PROTOCOL;
        resp_nested_item_done(r);
        return -1;
    case '_':
        resp_item_done(r, RV_ABSENT);
        return -1;
    case '-': case '+': case ':': case ',': case '#': case '(':
        resp_item_done(r, RV_INVALID);
        return -1;
    default:
        return RESP_PROTOCOL;
    }
}

/* Decode the current value's whole compact payload at `src` into its row; 0 when it is not
 * a payload an encoder writes (an int8 scale with its sign bit set). */
static int resp_decode_compact(resp_mget *r, const unsigned char *src) {
    if (r->storage == EMBCACHE_STORE_I8 && (src[3] & 0x80u))
        return 0;
    embcache_decode_row(r->storage, src, (size_t)r->dim, resp_row(r));
    return 1;
}

/* The bulk (payload copied or skipped) and its CRLF are read. */
static void resp_bulk_done(resp_mget *r) {
    if (r->nested) {
        resp_nested_item_done(r);
        return;
    }
    if (r->verdict == RV_VALID) {
        float *row = resp_row(r);
        int ok = 1;
        if (r->storage != EMBCACHE_STORE_F32) {
            if (!r->decoded)
                ok = resp_decode_compact(r, r->scratch);
            else
                ok = r->decoded > 0;
        }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        else {
            uint32_t *w = (uint32_t *)row;
            int64_t j;
            for (j = 0; j < r->dim; j++)
                w[j] = __builtin_bswap32(w[j]);
        }
#endif
        if (!ok || !embcache_f32_all_finite(row, (size_t)r->dim)) {
            r->verdict = RV_INVALID;
            if (!r->compact)
                memset((void *)row, 0, (size_t)r->dim * 4);
        }
    }
    resp_element_done(r);
}

/* Read what `len` bytes at `p` hold; *used: how many were read. */
static int resp_mget_feed(resp_mget *r, const unsigned char *p, size_t len, size_t *used) {
    size_t i = 0;
    int status;
    while (i < len) {
        switch (r->state) {
        case RS_TOP:
        case RS_LINE: {
            /* up to the LF; the line must end in CR LF */
            const unsigned char *lf = memchr(p + i, '\n', len - i);
            size_t take = lf ? (size_t)(lf - (p + i)) + 1 : len - i;
            size_t j;
            for (j = 0; j < take; j++) {
                unsigned char c = p[i + j];
                r->cr = r->last == '\r';
                r->last = c;
                if (r->line_len == 0 && r->state == RS_TOP && c == '-')
                    r->top_error = 1;
                if (r->top_error && r->line_len >= 1 && r->err_len < RESP_ERR_MAX && c != '\r' && c != '\n')
                    r->err[r->err_len++] = (char)c;
                if (r->line_kept < RESP_LINE_MAX)
                    r->line[r->line_kept++] = c;
                r->line_len++;
            }
            i += take;
            if (!lf)
                break;
            /* the line is complete: drop its CR LF */
            if (r->line_len < 3 || !r->cr) {
                *used = i;
                return RESP_PROTOCOL;
            }
            r->line_len -= 2;
            if (r->line_kept > r->line_len)
                r->line_kept = r->line_len;
            status = resp_on_line(r);
            if (status >= 0) {
                r->err[r->err_len] = 0;
                *used = i;
                return status;
            }
            if (r->state == RS_DONE) {
                *used = i;
                return RESP_DONE;
            }
            if (r->state == RS_HEAD && r->dim && r->rows == NULL) {
                *used = i;
                return RESP_PROTOCOL; /* cannot happen: rows come with the dim */
            }
            break;
        }
        case RS_HEAD: {
            size_t take = 12 - r->head_len;
            int64_t d;
            if (take > len - i)
                take = len - i;
            memcpy(r->head + r->head_len, p + i, take);
            r->head_len += take;
            i += take;
            if (r->head_len < 12)
                break;
            d = resp_header_dim(r->head, r->vlen, &r->storage);
            r->remaining = r->vlen - 12;
            if (!d || (r->dim && d != r->dim)) {
                r->verdict = RV_INVALID;
                r->state = RS_SKIP;
                break;
            }
            r->decoded = 0;
            if (r->storage != EMBCACHE_STORE_F32) {
                /* a compact payload: decoded once whole (from the chunk, or from scratch) */
                if (r->scratch == NULL) /* every valid payload of this dim fits in 4 * d + 4 */
                    r->scratch = (unsigned char *)malloc(4 * (size_t)d + 4);
                if (r->scratch == NULL) { /* no memory: this value is a miss */
                    r->verdict = RV_INVALID;
                    r->state = RS_SKIP;
                    break;
                }
                r->dst = r->scratch;
            }
            r->state = RS_PAYLOAD;
            if (!r->dim) {
                r->dim = d;
                if (r->storage == EMBCACHE_STORE_F32)
                    r->dst = NULL;
                *used = i;
                return RESP_NEED_ROWS;
            }
            if (r->storage == EMBCACHE_STORE_F32)
                r->dst = (unsigned char *)resp_row(r);
            break;
        }
        case RS_PAYLOAD: /* copied into its row (float32) or decoded into it */
        case RS_SKIP: {  /* passed over */
            size_t take = (size_t)r->remaining < len - i ? (size_t)r->remaining : len - i;
            if (r->state == RS_PAYLOAD) {
                if (r->storage != EMBCACHE_STORE_F32 && r->remaining == r->vlen - 12
                    && take == (size_t)r->remaining) {
                    /* the whole compact payload is in this chunk: decoded from here */
                    r->decoded = resp_decode_compact(r, p + i) ? 1 : -1;
                } else {
                    memcpy(r->dst, p + i, take);
                    r->dst += take;
                }
            }
            r->remaining -= (int64_t)take;
            i += take;
            if (r->remaining == 0) {
                r->state = RS_CRLF;
                r->crlf_seen = 0;
            }
            break;
        }
        case RS_CRLF:
            if (p[i] != (r->crlf_seen ? '\n' : '\r')) {
                *used = i;
                return RESP_PROTOCOL;
            }
            i++;
            if (++r->crlf_seen == 2) {
                resp_bulk_done(r);
                if (r->state == RS_DONE) {
                    *used = i;
                    return RESP_DONE;
                }
            }
            break;
        case RS_DONE:
            *used = i;
            return RESP_DONE;
        }
    }
    *used = i;
    return r->state == RS_DONE ? RESP_DONE : RESP_MORE;
}

#endif
