/* fuzz_ollama_ndjson: an OpenAI SSE stream (a backend's, untrusted) as
 * Ollama NDJSON for an Ollama client, fed whole and in pieces: the same
 * lines and the same usage wherever the network cut the stream, and every
 * line the client gets is a JSON object, the last one done or an error.
 * Input: a flag byte (bit 0: /api/generate, else /api/chat), the split
 * plan (fuzz.h), then the stream. */
#include "fuzz.h"

#include "llmgw_ollama.h"

typedef struct {
    llmgw_ollama_ndjson_t *s;
    fuzz_out out;
} run_t;

static void add(run_t *r, const char *ready, apr_size_t n)
{
    FUZZ_CHECK(ready || !n, "bytes ready at NULL");
    fuzz_out_add(&r->out, ready, n);
}

/* Lines carry the time they are written: one time for every line, so
 * that the whole and the cut run can be compared byte for byte. */
static apr_time_t fixed_clock(void)
{
    return apr_time_from_sec(1700000000) + 123456;
}

static void start(run_t *r, apr_pool_t *p, unsigned flags)
{
    memset(r, 0, sizeof(*r));
    r->s = llmgw_ollama_ndjson_create(
        p, (flags & 1) ? LLMGW_OLLAMA_EP_GENERATE : LLMGW_OLLAMA_EP_CHAT,
        "mock-small", apr_time_from_sec(1700000000));
    r->s->now = fixed_clock;
}

static void end(run_t *r)
{
    const char *ready;
    apr_size_t n = llmgw_ollama_ndjson_end(r->s, &ready);

    add(r, ready, n);
}

/* Each line a JSON object; the last says done:true or carries the error. */
static void check_ndjson(apr_pool_t *p, const fuzz_out *o)
{
    const char *s = o->b, *end = o->b + o->len, *nl, *msg;
    llmgw_json_t *j = NULL;
    llmgw_json_err_t err;

    FUZZ_CHECK(o->len && end[-1] == '\n', "NDJSON that does not end a line");
    for (; s < end; s = nl + 1) {
        nl = memchr(s, '\n', (size_t)(end - s));
        j = llmgw_json_parse(p, s, (size_t)(nl - s), &err, &msg);
        FUZZ_CHECK(j && llmgw_json_type(j, NULL) == LLMGW_JSON_OBJECT,
                   "an NDJSON line that is no JSON object (%s): %.*s",
                   msg ? msg : "not an object", (int)(nl - s), s);
    }
    FUZZ_CHECK(llmgw_json_getb(j, 0, "done", NULL)
                   || llmgw_json_type(j, "error", NULL) == LLMGW_JSON_STRING,
               "the last line is neither done nor an error");
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
    const llmgw_ollama_ndjson_t *x, *y;

    fuzz_splits_read(&in, &sp);
    start(&whole, p, flags);
    n = llmgw_ollama_ndjson_feed(whole.s, (const char *)in.d, in.n, &ready);
    add(&whole, ready, n);
    end(&whole);

    start(&cut, p, flags);
    while (in.n) {
        size_t len;
        const char *piece = fuzz_bytes(&in, fuzz_splits_next(&sp), &len);

        n = llmgw_ollama_ndjson_feed(cut.s, piece, len, &ready);
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

    tail = llmgw_ollama_ndjson_error_tail(x, p, "the backend broke off", &n);
    FUZZ_CHECK((x->done || x->failed) == !n, "a tail after the end");
    fuzz_out_add(&whole.out, tail, n);
    check_ndjson(p, &whole.out);

    fuzz_out_free(&whole.out);
    fuzz_out_free(&cut.out);
    apr_pool_destroy(p);
    return 0;
}
