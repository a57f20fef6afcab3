/* fuzz_prom: Prometheus text (vLLM's /metrics, untrusted) read sample by
 * sample with llmgw_prom_next: it always moves on, never reads outside
 * the text, and stops at a line it cannot read. Input: the text. */
#include "fuzz.h"

#include "llmgw_prom.h"

/* A name in the text, or (a label value with escapes) anywhere. */
static int inside(const char *s, apr_size_t n, const char *text,
                  const char *end)
{
    return s && s >= text && s + n <= end;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *text = (const char *)data, *end = text + size, *pos = text;
    llmgw_prom_sample_t s;
    size_t rounds = 0;
    int rc, i;

    for (;;) {
        const char *before = pos;

        rc = llmgw_prom_next(p, &pos, end, &s);
        if (rc == 0) {
            break;
        }
        FUZZ_CHECK(rc == 1 || rc == -1, "rc %d", rc);
        FUZZ_CHECK(pos >= before && pos <= end, "pos moved back or out");
        if (rc == -1) {
            break; /* the probe refuses the whole answer */
        }
        FUZZ_CHECK(pos > before && ++rounds <= size, "no progress");
        FUZZ_CHECK(s.name_len > 0 && inside(s.name, s.name_len, text, end),
                   "a sample name outside the text");
        FUZZ_CHECK(s.nlabels >= 0 && s.nlabels <= LLMGW_PROM_MAX_LABELS,
                   "%d labels", s.nlabels);
        for (i = 0; i < s.nlabels; i++) {
            FUZZ_CHECK(
                s.label_name_len[i] > 0
                    && inside(s.label_name[i], s.label_name_len[i], text, end),
                "a label name outside the text");
            FUZZ_CHECK(s.label_value[i] || !s.label_value_len[i],
                       "a label value at NULL");
            if (s.label_value_len[i]) {
                /* Read it all: ASan sees a value that is not there. */
                volatile char c = s.label_value[i][s.label_value_len[i] - 1];

                (void)c;
            }
        }
    }
    apr_pool_destroy(p);
    return 0;
}
