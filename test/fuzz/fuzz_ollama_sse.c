/* fuzz_ollama_sse: Ollama's NDJSON stream (a backend's, untrusted) as
 * OpenAI SSE, fed whole and in pieces: the client gets the same bytes and
 * the gateway reads the same usage wherever the network cut the stream,
 * and what the client gets is well-formed SSE to the end.
 * Input: a flag byte (bit 0: /v1/completions, else chat; bit 1: the
 * client asked for usage), the split plan (fuzz.h), then the stream. */
#include "fuzz.h"

#include "llmgw_ollama.h"

typedef struct {
    llmgw_ollama_sse_t *s;
    fuzz_out out;
} run_t;

static void add(run_t *r, const char *ready, apr_size_t n)
{
    FUZZ_CHECK(ready || !n, "bytes ready at NULL");
    fuzz_out_add(&r->out, ready, n);
}

static void start(run_t *r, apr_pool_t *p, unsigned flags)
{
    memset(r, 0, sizeof(*r));
    r->s = llmgw_ollama_sse_create(
        p, (flags & 1) ? LLMGW_EP_COMPLETIONS : LLMGW_EP_CHAT, "fuzz",
        "mock-small", 1700000000, (flags & 2) != 0);
}

static void end(run_t *r)
{
    const char *ready;
    apr_size_t n = llmgw_ollama_sse_end(r->s, &ready);

    add(r, ready, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned flags = fuzz_byte(&in);
    fuzz_splits sp;
    run_t whole, cut;
    const char *ready, *tail;
    apr_size_t n;
    llmgw_error_t err;
    const llmgw_ollama_sse_t *x, *y;

    fuzz_splits_read(&in, &sp);
    start(&whole, p, flags);
    n = llmgw_ollama_sse_feed(whole.s, (const char *)in.d, in.n, &ready);
    add(&whole, ready, n);
    end(&whole);

    start(&cut, p, flags);
    while (in.n) {
        size_t len;
        const char *piece = fuzz_bytes(&in, fuzz_splits_next(&sp), &len);

        n = llmgw_ollama_sse_feed(cut.s, piece, len, &ready);
        add(&cut, ready, n);
    }
    end(&cut);

    x = whole.s;
    y = cut.s;
    FUZZ_CHECK(fuzz_out_eq(&whole.out, &cut.out),
               "output differs at byte %zu (%zu vs %zu bytes)",
               fuzz_diff_at(&whole.out, &cut.out), whole.out.len, cut.out.len);
    FUZZ_CHECK(x->done == y->done && x->failed == y->failed
                   && x->content_events == y->content_events,
               "done %d/%d failed %d/%d content %d/%d", x->done, y->done,
               x->failed, y->failed, x->content_events, y->content_events);
    FUZZ_CHECK(x->usage.found == y->usage.found
                   && x->usage.prompt == y->usage.prompt
                   && x->usage.completion == y->usage.completion
                   && x->usage.total == y->usage.total,
               "usage differs");
    FUZZ_CHECK(!(x->done && x->failed), "both done and failed");

    /* With the tail a broken stream gets, the client sees SSE to [DONE]. */
    llmgw_error_for_status(502, &err);
    tail = llmgw_ollama_sse_error_tail(x, p, &err, &n);
    FUZZ_CHECK((x->done || x->failed) == !n, "a tail after the end");
    fuzz_out_add(&whole.out, tail, n);
    fuzz_check_sse(p, whole.out.b, whole.out.len);

    fuzz_out_free(&whole.out);
    fuzz_out_free(&cut.out);
    apr_pool_destroy(p);
    return 0;
}
