/* fuzz_ollama_sse: Ollama's NDJSON stream (a backend's, untrusted) as
 * OpenAI SSE, fed whole and in pieces: the client gets the same bytes and
 * the gateway reads the same usage wherever the network cut the stream,
 * and what the client gets is well-formed SSE to the end.
 * Input: a flag byte (bit 0: /v1/completions, else chat; bit 1: the
 * client asked for usage), the split plan (fuzz.h), then the stream. */
#include "fuzz.h"

#include "llmgw_ollama.h"

static apr_size_t sse_feed(void *s, const char *in, apr_size_t len,
                           const char **ready)
{
    return llmgw_ollama_sse_feed(s, in, len, ready);
}

static apr_size_t sse_end(void *s, const char **ready)
{
    return llmgw_ollama_sse_end(s, ready);
}

static void *start(apr_pool_t *p, unsigned flags)
{
    return llmgw_ollama_sse_create(
        p, (flags & 1) ? LLMGW_EP_COMPLETIONS : LLMGW_EP_CHAT, "fuzz",
        "mock-small", 1700000000, (flags & 2) != 0);
}

/* With the tail a broken stream gets, the client sees SSE to [DONE]. */
static void check(apr_pool_t *p, void *whole, void *cut, fuzz_out *out)
{
    const llmgw_ollama_sse_t *x = whole, *y = cut;
    llmgw_error_t err;
    const char *tail;
    apr_size_t n;

    FUZZ_SAME_END(x, y);
    llmgw_error_for_status(502, &err);
    tail = llmgw_ollama_sse_error_tail(x, p, &err, &n);
    FUZZ_CHECK((x->done || x->failed) == !n, "a tail after the end");
    fuzz_out_add(out, tail, n);
    fuzz_check_sse(p, out->b, out->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fuzz_stream_ops ops = { start, sse_feed, sse_end, check };

    return fuzz_stream_run(&ops, data, size);
}
