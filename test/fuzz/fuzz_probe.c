/* fuzz_probe: what an inference server says about itself (a health
 * probe's answer, untrusted) to llmgw_probe_parse, and its text to
 * llmgw_probe_rfc3339: the result is one the health table can take as it
 * is. Input: a selector byte (bits 0-2 the kind, modulo the kinds: Ollama
 * ps, tags, llama.cpp health, slots, vLLM metrics, OpenAI models; bits
 * 3-5 the status: 200, 200, 503, 429, 404, 500, 0, 302), then the body. */
#include "fuzz.h"

#include "llmgw_probe.h"

static const int statuses[] = { 200, 200, 503, 429, 404, 500, 0, 302 };

/* Year 1 to 9999, in microseconds since the epoch. */
#define YEAR1 (APR_INT64_C(-62135596800) * APR_USEC_PER_SEC)
#define YEAR10000 (APR_INT64_C(253402300800) * APR_USEC_PER_SEC)

/* A name the tables and the console take: bounded, valid UTF-8 (quoted,
 * it reads back strictly as itself), no NUL (strlen is its length). */
static void check_name(apr_pool_t *p, const char *name)
{
    const char *q, *back, *msg;
    llmgw_json_err_t err;
    llmgw_json_t *j;

    FUZZ_CHECK(name, "a model without a name");
    FUZZ_CHECK(strlen(name) <= LLMGW_PROBE_MAX_NAME, "a name of %zu bytes",
               strlen(name));
    q = llmgw_json_quote(p, name);
    j = llmgw_json_read(p, q, strlen(q), &err, &msg);
    back = j ? llmgw_json_gets(j, NULL) : NULL;
    FUZZ_CHECK(back && !strcmp(back, name), "a name that is not UTF-8: %s", q);
}

static void check_counts(apr_int64_t slots_total, apr_int64_t slots_busy,
                         apr_int64_t running, apr_int64_t waiting, double kv)
{
    FUZZ_CHECK((slots_total == -1 && slots_busy == -1)
                   || (slots_total >= 0 && slots_busy >= 0
                       && slots_busy <= slots_total
                       && slots_total <= LLMGW_PROBE_MAX_SLOTS),
               "slots %lld of %lld busy", (long long)slots_busy,
               (long long)slots_total);
    FUZZ_CHECK(running >= -1 && waiting >= -1, "running %lld waiting %lld",
               (long long)running, (long long)waiting);
    FUZZ_CHECK(kv == -1.0 || (kv >= 0.0 && kv <= 1.0), "kv usage %g", kv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned sel = fuzz_byte(&in);
    llmgw_probe_kind_t kind =
        (llmgw_probe_kind_t)((sel & 7) % LLMGW_PROBE_KINDS);
    int status = statuses[(sel >> 3) & 7], i;
    const char *body = (const char *)in.d;
    llmgw_probe_t *r = llmgw_probe_parse(p, kind, status, body, in.n);
    apr_time_t t;

    FUZZ_CHECK(r && r->kind == kind && r->http_status == status, "result");
    FUZZ_CHECK(r->state == LLMGW_HS_READY || r->state == LLMGW_HS_LOADING
                   || r->state == LLMGW_HS_BUSY || r->state == LLMGW_HS_DOWN,
               "state %d", (int)r->state);
    FUZZ_CHECK(r->ok || (r->knows == 0 && r->why), "refused without why");
    FUZZ_CHECK(r->ok || r->state != LLMGW_HS_READY, "refused but ready");
    FUZZ_CHECK(!(r->knows & ~0x3fu), "knows %x", r->knows);
    check_counts(r->slots_total, r->slots_busy, r->running, r->waiting,
                 r->kv_usage);
    FUZZ_CHECK(r->models && r->models->nelts <= LLMGW_PROBE_MAX_MODELS,
               "%d models", r->models ? r->models->nelts : -1);
    for (i = 0; i < r->models->nelts; i++) {
        const llmgw_probe_model_t *m =
            &APR_ARRAY_IDX(r->models, i, llmgw_probe_model_t);

        check_name(p, m->name);
        FUZZ_CHECK(!(m->flags & ~7u), "model flags %x", m->flags);
        FUZZ_CHECK(m->size >= -1 && m->size_vram >= -1, "model size");
        check_counts(-1, -1, m->running, m->waiting, m->kv_usage);
    }
    if (llmgw_probe_rfc3339(body, in.n, &t) == 0) {
        FUZZ_CHECK(t >= YEAR1 && t < YEAR10000, "time %lld", (long long)t);
    }
    apr_pool_destroy(p);
    return 0;
}
