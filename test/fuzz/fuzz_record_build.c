/* fuzz_record_build: a cache record built from an upstream answer (the
 * backend's bytes, untrusted), serialised, and read back as a hit would:
 * whatever is stored must parse and replay.
 * Input: a mode byte (bits 0-1 the endpoint: chat, completions,
 * embeddings; bit 2 a plain answer, else a stream; bits 3-7 the size
 * limit, 2^(8 + n % 16) bytes), then for a stream the chunks' JSON one a
 * line, for a plain answer the body. */
#include "fuzz.h"

#include "llmgw_cache.h"

static const llmgw_endpoint_t eps[] = { LLMGW_EP_CHAT, LLMGW_EP_COMPLETIONS,
                                        LLMGW_EP_EMBEDDINGS, LLMGW_EP_CHAT };

/* A chunk whose choice finishes with "error": how the gateway (and some
 * servers) end a stream that broke. Such an answer is no answer. */
static int ends_in_error(apr_pool_t *p, const char *chunk, apr_size_t n)
{
    llmgw_json_err_t err;
    const char *msg, *fr;
    llmgw_json_t *j = llmgw_json_parse(p, chunk, n, &err, &msg), *choices;
    apr_size_t i, k;

    choices = j ? llmgw_json_getj(j, "choices", NULL) : NULL;
    k = choices ? llmgw_json_array_len(choices) : 0;
    for (i = 0; i < k; i++) {
        fr = llmgw_json_gets(llmgw_json_array_get(choices, i), "finish_reason",
                             NULL);
        if (fr && !strcmp(fr, "error")) {
            return 1;
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned mode = fuzz_byte(&in);
    llmgw_endpoint_t ep = eps[mode & 3];
    apr_size_t max = (apr_size_t)1 << (8 + (mode >> 3) % 16);
    llmgw_record_t *rec = llmgw_record_create(p, ep, max), *back, *full;
    const char *text, *chunk, *j1, *j2;
    apr_size_t len, n, l1, l2;
    llmgw_usage_t u0, u1;
    int errored = 0;

    if (mode & 4) {
        llmgw_record_set_response(rec, (const char *)in.d, in.n);
    }
    else {
        while ((chunk = fuzz_until(&in, '\n', &n)) != NULL) {
            llmgw_record_add_chunk(rec, chunk, n);
            errored |= ends_in_error(p, chunk, n);
        }
    }
    llmgw_record_usage(rec, &u0);
    text = llmgw_record_serialize(rec, &len);
    if (text) {
        FUZZ_CHECK(!errored, "a stream that ended in an error is stored");
        FUZZ_CHECK(len <= max, "a record of %zu bytes, limit %zu", len, max);
        back = llmgw_record_parse(p, text, len, 0);
        FUZZ_CHECK(back, "a stored record does not parse: %.*s", (int)len,
                   text);
        full = llmgw_record_parse(p, text, len, 1);
        FUZZ_CHECK(full, "a stored record does not parse in full: %.*s",
                   (int)len, text);
        j1 = llmgw_record_render_json(rec, &l1);
        j2 = llmgw_record_render_json(full, &l2);
        FUZZ_CHECK(l1 == l2 && !memcmp(j1, j2, l1),
                   "the response read back differs: %.*s vs %.*s", (int)l1, j1,
                   (int)l2, j2);
        FUZZ_CHECK(llmgw_record_render_sse(full, p, 1, &n),
                   "a stored record that cannot replay: %.*s", (int)len, text);
        if (!(mode & 4)) {
            /* Usage counted from the chunks is what a hit reports. */
            llmgw_record_usage(full, &u1);
            FUZZ_CHECK(
                u0.found == u1.found && u0.prompt == u1.prompt
                    && u0.completion == u1.completion && u0.total == u1.total,
                "usage %d %lld+%lld=%lld stored as %d "
                "%lld+%lld=%lld",
                u0.found, (long long)u0.prompt, (long long)u0.completion,
                (long long)u0.total, u1.found, (long long)u1.prompt,
                (long long)u1.completion, (long long)u1.total);
        }
    }
    apr_pool_destroy(p);
    return 0;
}
