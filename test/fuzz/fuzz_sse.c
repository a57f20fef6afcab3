/* fuzz_sse: the SSE framer of upstream streams (llmgw_sse_feed) fed the
 * same bytes whole and in pieces: what it forwards, what it records and
 * what it reads (usage, done, ids) must not depend on where the network
 * cut the stream. Input: a flag byte (bit 0: strip the usage we asked
 * for), the split plan (fuzz.h), then the stream. */
#include "fuzz.h"

#include "llmgw_stream.h"

typedef struct {
    llmgw_sse_t *s;
    fuzz_out out;  /* bytes forwarded */
    fuzz_out data; /* payloads handed to on_data, NUL-separated */
} run_t;

static void on_data(void *baton, const char *d, apr_size_t len)
{
    run_t *r = baton;

    fuzz_out_add(&r->data, d, len);
    fuzz_out_add(&r->data, "", 1);
}

static void feed(run_t *r, const char *in, apr_size_t len)
{
    const char *ready;
    apr_size_t n = llmgw_sse_feed(r->s, in, len, &ready);

    FUZZ_CHECK(ready || !n, "bytes ready at NULL");
    fuzz_out_add(&r->out, ready, n);
}

static void start(run_t *r, apr_pool_t *p, int strip)
{
    memset(r, 0, sizeof(*r));
    r->s = llmgw_sse_create(p, strip);
    r->s->on_data = on_data;
    r->s->baton = r;
}

static int same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static void compare(const run_t *a, const run_t *b)
{
    const llmgw_sse_t *x = a->s, *y = b->s;

    FUZZ_CHECK(fuzz_out_eq(&a->out, &b->out),
               "output differs at byte %zu (%zu vs %zu bytes)",
               fuzz_diff_at(&a->out, &b->out), a->out.len, b->out.len);
    FUZZ_CHECK(fuzz_out_eq(&a->data, &b->data),
               "recorded data differs at byte %zu",
               fuzz_diff_at(&a->data, &b->data));
    FUZZ_CHECK(llmgw_sse_pending(x) == llmgw_sse_pending(y), "pending");
    FUZZ_CHECK(x->done == y->done && x->events == y->events
                   && x->content_events == y->content_events,
               "done %d/%d events %d/%d content %d/%d", x->done, y->done,
               x->events, y->events, x->content_events, y->content_events);
    FUZZ_CHECK(x->usage.found == y->usage.found
                   && x->usage.prompt == y->usage.prompt
                   && x->usage.completion == y->usage.completion
                   && x->usage.total == y->usage.total,
               "usage differs");
    FUZZ_CHECK(same_str(x->id, y->id) && x->finished == y->finished,
               "the stream's id or finished choices differ");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    int strip = fuzz_byte(&in) & 1;
    fuzz_splits sp;
    run_t whole, cut;
    const char *s;
    size_t n, len;
    llmgw_error_t err;

    fuzz_splits_read(&in, &sp);
    s = (const char *)in.d;
    len = in.n;

    start(&whole, p, strip);
    feed(&whole, s, len);

    start(&cut, p, strip);
    while (in.n) {
        const char *piece = fuzz_bytes(&in, fuzz_splits_next(&sp), &n);

        feed(&cut, piece, n);
    }
    compare(&whole, &cut);

    /* The tail that ends a broken stream is well-formed SSE. */
    llmgw_error_for_status(502, &err);
    s = llmgw_sse_error_events(p, &err, &n);
    fuzz_check_sse(p, s, n);

    fuzz_out_free(&whole.out);
    fuzz_out_free(&whole.data);
    fuzz_out_free(&cut.out);
    fuzz_out_free(&cut.data);
    apr_pool_destroy(p);
    return 0;
}
