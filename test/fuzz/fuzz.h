/* fuzz.h: what every fuzz target shares: APR set up once, a pool per
 * input, the check that aborts with a message, and input slicing. */
#ifndef LLMGW_FUZZ_H
#define LLMGW_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "llmgw_json.h"

/* The entry point of every target (libFuzzer's, and the replayer's). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: say which, then abort so libFuzzer (or the
 * replayer under ASan) keeps the input and fails. */
#define FUZZ_CHECK(cond, ...)                                             \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, \
                    __LINE__, #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            abort();                                                      \
        }                                                                 \
    } while (0)

/* httpd's pools abort the child when memory runs out (an allocation of a
 * size read from the input, say): so do ours. */
static APR_INLINE int fuzz_oom(int status)
{
    fprintf(stderr, "fuzz: a pool allocation failed (status %d)\n", status);
    abort();
    return status;
}

/* A fresh pool for one input, under a root made once; destroy it at the
 * end of the input (json-c trees and stream buffers go with it). */
static APR_INLINE apr_pool_t *fuzz_pool(void)
{
    static apr_pool_t *root;
    apr_pool_t *p;

    if (!root) {
        apr_initialize();
        apr_pool_create_ex(&root, NULL, fuzz_oom, NULL);
    }
    apr_pool_create(&p, root);
    return p;
}

/* Input as a sequence: take bytes from the front. */
typedef struct {
    const uint8_t *d;
    size_t n;
} fuzz_in;

/* The next byte, 0 once the input is used up. */
static APR_INLINE unsigned fuzz_byte(fuzz_in *in)
{
    if (!in->n) {
        return 0;
    }
    in->n--;
    return *in->d++;
}

/* The next n bytes (fewer at the end); *len gets how many. */
static APR_INLINE const char *fuzz_bytes(fuzz_in *in, size_t n, size_t *len)
{
    const char *s = (const char *)in->d;

    *len = n < in->n ? n : in->n;
    in->d += *len;
    in->n -= *len;
    return s;
}

/* Up to the next sep (not included) or the end; NULL when nothing is
 * left. */
static APR_INLINE const char *fuzz_until(fuzz_in *in, char sep, size_t *len)
{
    const uint8_t *e;
    const char *s = (const char *)in->d;

    if (!in->n) {
        return NULL;
    }
    e = memchr(in->d, sep, in->n);
    *len = e ? (size_t)(e - in->d) : in->n;
    in->d += *len + (e != NULL);
    in->n -= *len + (e != NULL);
    return s;
}

/* The split plan of the stream targets: a count byte (1-8 lengths
 * follow) and the piece lengths, used in turn; a 0 feeds nothing once.
 * Pieces are cut from the rest of the input. */
typedef struct {
    unsigned char len[8];
    int n;
    int at;
} fuzz_splits;

static APR_INLINE void fuzz_splits_read(fuzz_in *in, fuzz_splits *sp)
{
    int i, any = 0;

    sp->n = (int)(fuzz_byte(in) % 8) + 1;
    sp->at = 0;
    for (i = 0; i < sp->n; i++) {
        sp->len[i] = (unsigned char)fuzz_byte(in);
        any |= sp->len[i];
    }
    if (!any) {
        sp->len[0] = 1; /* always progress */
    }
}

static APR_INLINE size_t fuzz_splits_next(fuzz_splits *sp)
{
    size_t n = sp->len[sp->at];

    sp->at = (sp->at + 1) % sp->n;
    return n;
}

/* Output collected across calls, compared between runs. */
typedef struct {
    char *b;
    size_t len, cap;
} fuzz_out;

static APR_INLINE void fuzz_out_add(fuzz_out *o, const char *s, size_t n)
{
    if (!n) {
        return;
    }
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->b = realloc(o->b, o->cap);
        if (!o->b) {
            abort();
        }
    }
    memcpy(o->b + o->len, s, n);
    o->len += n;
}

static APR_INLINE void fuzz_out_free(fuzz_out *o)
{
    free(o->b);
    o->b = NULL;
    o->len = o->cap = 0;
}

static APR_INLINE int fuzz_out_eq(const fuzz_out *a, const fuzz_out *b)
{
    return a->len == b->len && (!a->len || !memcmp(a->b, b->b, a->len));
}

/* Where two outputs first differ, for the failure message. */
static APR_INLINE size_t fuzz_diff_at(const fuzz_out *a, const fuzz_out *b)
{
    size_t i, n = a->len < b->len ? a->len : b->len;

    for (i = 0; i < n && a->b[i] == b->b[i]; i++) {
    }
    return i;
}

/* A stream converter of the core (s: its state): start makes one (flags:
 * the input's flag byte), feed and end give the bytes ready for the
 * client; check looks at the whole run x (its output in whole) and the
 * cut run y once both ended. */
typedef struct {
    void *(*start)(apr_pool_t *p, unsigned flags);
    apr_size_t (*feed)(void *s, const char *in, apr_size_t len,
                       const char **ready);
    apr_size_t (*end)(void *s, const char **ready);
    void (*check)(apr_pool_t *p, void *x, void *y, fuzz_out *whole);
} fuzz_stream_ops;

static APR_INLINE void fuzz_ready(fuzz_out *o, const char *ready, apr_size_t n)
{
    FUZZ_CHECK(ready || !n, "bytes ready at NULL");
    fuzz_out_add(o, ready, n);
}

/* The rest of in fed whole to s (its output in *ws) and in the pieces of
 * sp to c (in *wc), each then ended: the client must get the same bytes
 * wherever the network cut the stream. */
static APR_INLINE void fuzz_whole_and_cut(const fuzz_stream_ops *ops,
                                          fuzz_in *in, fuzz_splits *sp,
                                          void *s, fuzz_out *ws, void *c,
                                          fuzz_out *wc)
{
    const char *ready;
    apr_size_t n;

    n = ops->feed(s, (const char *)in->d, in->n, &ready);
    fuzz_ready(ws, ready, n);
    n = ops->end(s, &ready);
    fuzz_ready(ws, ready, n);
    while (in->n) {
        size_t len;
        const char *piece = fuzz_bytes(in, fuzz_splits_next(sp), &len);

        n = ops->feed(c, piece, len, &ready);
        fuzz_ready(wc, ready, n);
    }
    n = ops->end(c, &ready);
    fuzz_ready(wc, ready, n);
    FUZZ_CHECK(fuzz_out_eq(ws, wc),
               "output differs at byte %zu (%zu vs %zu bytes)",
               fuzz_diff_at(ws, wc), ws->len, wc->len);
}

/* A target's run: a flag byte, the split plan, then the stream, fed
 * whole and in pieces, then checked. */
static APR_INLINE int fuzz_stream_run(const fuzz_stream_ops *ops,
                                      const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned flags = fuzz_byte(&in);
    fuzz_splits sp;
    fuzz_out whole = { 0 }, cut = { 0 };
    void *x, *y;

    fuzz_splits_read(&in, &sp);
    x = ops->start(p, flags);
    y = ops->start(p, flags);
    fuzz_whole_and_cut(ops, &in, &sp, x, &whole, y, &cut);
    ops->check(p, x, y, &whole);
    fuzz_out_free(&whole);
    fuzz_out_free(&cut);
    apr_pool_destroy(p);
    return 0;
}

/* The whole run x and the cut run y of an Ollama stream converter (their
 * types differ, their fields are named alike) ended the same way. */
#define FUZZ_SAME_END(x, y)                                                  \
    do {                                                                     \
        FUZZ_CHECK((x)->done == (y)->done && (x)->failed == (y)->failed      \
                       && (x)->content_events == (y)->content_events,        \
                   "done %d/%d failed %d/%d content %d/%d", (x)->done,       \
                   (y)->done, (x)->failed, (y)->failed, (x)->content_events, \
                   (y)->content_events);                                     \
        FUZZ_CHECK((x)->usage.found == (y)->usage.found                      \
                       && (x)->usage.prompt == (y)->usage.prompt             \
                       && (x)->usage.completion == (y)->usage.completion     \
                       && (x)->usage.total == (y)->usage.total,              \
                   "usage differs");                                         \
        FUZZ_CHECK(!((x)->done && (x)->failed), "both done and failed");     \
    } while (0)

/* SSE as the gateway sends it to a client: every event one "data: "
 * line of a JSON object, the last one [DONE]. */
static APR_INLINE void fuzz_check_sse(apr_pool_t *p, const char *sse,
                                      size_t len)
{
    const char *s = sse, *end = sse + len;
    int done = 0;

    FUZZ_CHECK(len >= 14 && !memcmp(end - 14, "data: [DONE]\n\n", 14),
               "SSE that does not end with [DONE]: %.*s", (int)len, sse);
    while (s < end) {
        const char *e = NULL, *q, *msg;
        llmgw_json_err_t err;
        llmgw_json_t *j;

        for (q = s; q + 1 < end; q++) {
            if (q[0] == '\n' && q[1] == '\n') {
                e = q;
                break;
            }
        }
        FUZZ_CHECK(e && e - s >= 6 && !memcmp(s, "data: ", 6)
                       && !memchr(s, '\n', (size_t)(e - s)),
                   "an SSE event that is not one data line: %.*s",
                   (int)(end - s), s);
        FUZZ_CHECK(!done, "events after [DONE]");
        if (e - s == 12 && !memcmp(s + 6, "[DONE]", 6)) {
            done = 1;
        }
        else {
            j = llmgw_json_parse(p, s + 6, (size_t)(e - s - 6), &err, &msg);
            FUZZ_CHECK(j && llmgw_json_type(j, NULL) == LLMGW_JSON_OBJECT,
                       "an SSE event that is no JSON object (%s): %.*s",
                       msg ? msg : "not an object", (int)(e - s), s);
        }
        s = e + 2;
    }
}

#endif
