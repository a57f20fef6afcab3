/* fuzz_ollama_ndjson: an OpenAI SSE stream (a backend's, untrusted) as
 * Ollama NDJSON for an Ollama client, fed whole and in pieces: the same
 * lines and the same usage wherever the network cut the stream, and every
 * line the client gets is a JSON object, the last one done or an error.
 * Input: a flag byte (bit 0: /api/generate, else /api/chat), the split
 * plan (fuzz.h), then the stream. */
#include "fuzz.h"

#include "llmgw_ollama.h"

static apr_size_t ndjson_feed(void *s, const char *in, apr_size_t len,
                              const char **ready)
{
    return llmgw_ollama_ndjson_feed(s, in, len, ready);
}

static apr_size_t ndjson_end(void *s, const char **ready)
{
    return llmgw_ollama_ndjson_end(s, ready);
}

/* Lines carry the time they are written: one time for every line, so
 * that the whole and the cut run can be compared byte for byte. */
static apr_time_t fixed_clock(void)
{
    return apr_time_from_sec(1700000000) + 123456;
}

static void *start(apr_pool_t *p, unsigned flags)
{
    llmgw_ollama_ndjson_t *s = llmgw_ollama_ndjson_create(
        p, (flags & 1) ? LLMGW_OLLAMA_EP_GENERATE : LLMGW_OLLAMA_EP_CHAT,
        "mock-small", apr_time_from_sec(1700000000));

    s->now = fixed_clock;
    return s;
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

static void check(apr_pool_t *p, void *whole, void *cut, fuzz_out *out)
{
    const llmgw_ollama_ndjson_t *x = whole, *y = cut;
    apr_size_t n;
    const char *tail;

    FUZZ_SAME_END(x, y);
    tail = llmgw_ollama_ndjson_error_tail(x, p, "the backend broke off", &n);
    FUZZ_CHECK((x->done || x->failed) == !n, "a tail after the end");
    fuzz_out_add(out, tail, n);
    check_ndjson(p, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fuzz_stream_ops ops = { start, ndjson_feed, ndjson_end,
                                         check };

    return fuzz_stream_run(&ops, data, size);
}
