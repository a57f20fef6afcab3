/* fuzz_record: a cache value as the store hands it back (memcached's or
 * the shm table's bytes, untrusted): parsed, rendered as JSON and as an
 * SSE replay. Input: a flag byte (bit 0: parse in full, as a streamed
 * hit does; bit 1: the client asked for usage), then the value. */
#include "fuzz.h"

#include "llmgw_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned flags = fuzz_byte(&in);
    const char *text = (const char *)in.d, *json, *sse;
    llmgw_record_t *rec;
    llmgw_usage_t u;
    apr_size_t jlen, slen;

    rec = llmgw_record_parse(p, text, in.n, flags & 1);
    if (rec) {
        json = llmgw_record_render_json(rec, &jlen);
        FUZZ_CHECK(json && jlen < in.n && json >= text
                       && json + jlen <= text + in.n,
                   "the stored response is not inside the value");
        llmgw_record_usage(rec, &u);
        sse = llmgw_record_render_sse(rec, p, (flags & 2) != 0, &slen);
        if (sse) {
            fuzz_check_sse(p, sse, slen);
        }
    }
    apr_pool_destroy(p);
    return 0;
}
