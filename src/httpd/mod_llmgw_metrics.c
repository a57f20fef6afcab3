/* mod_llmgw_metrics: the counters' segment is anonymous shared memory in
 * the process pool, which outlives the configuration pools: a graceful
 * restart finds it there and keeps counting; each API request is counted
 * once, at its end, from what the other parts noted on it. */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "mod_llmgw.h"
#include "mod_llmgw_metrics.h"

APLOG_USE_MODULE(llm_gateway);

#define SHM_KEY "llmgw-metrics-shm"

static llmgw_metrics_t *metrics;

llmgw_metrics_t *llmgw_metrics(void)
{
    return metrics;
}

void *llmgw_kept_shm(server_rec *s, const char *key, apr_size_t size,
                     int *fresh)
{
    apr_pool_t *pproc = s->process->pool;
    apr_shm_t *shm = NULL;
    apr_status_t rv;

    *fresh = 0;
    apr_pool_userdata_get((void **)&shm, key, pproc);
    if (shm && apr_shm_size_get(shm) >= size) {
        return apr_shm_baseaddr_get(shm);
    }
    rv = apr_shm_create(&shm, size, NULL, pproc);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     LLMGW_LOGNO(0601) "%s: cannot get %" APR_SIZE_T_FMT
                                       " bytes of shared memory",
                     key, size);
        return NULL;
    }
    apr_pool_userdata_set(shm, key, apr_pool_cleanup_null, pproc);
    *fresh = 1;
    return apr_shm_baseaddr_get(shm);
}

apr_status_t llmgw_metrics_post_config(apr_pool_t *pconf, server_rec *s)
{
    apr_size_t size = llmgw_metrics_size();
    void *mem;
    int fresh;

    /* The first pass of the configuration, before httpd detaches, makes
     * nothing that would outlive it. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return APR_SUCCESS;
    }
    mem = llmgw_kept_shm(s, SHM_KEY, size, &fresh);
    if (!mem) {
        return APR_ENOMEM;
    }
    metrics = fresh ? NULL : llmgw_metrics_attach(mem, size);
    if (!metrics) {
        metrics = llmgw_metrics_init(mem, size, apr_time_now());
    }
    return APR_SUCCESS;
}

/* A note's count; -1 when the note is absent. */
static apr_int64_t note_count(const request_rec *r, const char *name)
{
    const char *v = apr_table_get(r->notes, name);

    return v ? apr_atoi64(v) : -1;
}

static int count_request(request_rec *r)
{
    llmgw_metrics_obs_t o = { 0 };
    const request_rec *last = r;
    apr_int64_t ttft;

    if (!metrics || !llmgw_req_get(r)) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    o.route = apr_table_get(r->notes, LLMGW_NOTE_ROUTE);
    o.model = apr_table_get(r->notes, LLMGW_NOTE_MODEL);
    o.balancer = apr_table_get(r->subprocess_env, "BALANCER_NAME");
    o.member = apr_table_get(r->subprocess_env, "BALANCER_WORKER_NAME");
    o.status = last->status;
    o.error = apr_table_get(r->notes, LLMGW_NOTE_ERROR) != NULL;
    o.prompt = note_count(r, LLMGW_NOTE_PROMPT_TOKENS);
    o.completion = note_count(r, LLMGW_NOTE_COMPLETION_TOKENS);
    o.cache =
        llmgw_metrics_cache_result(apr_table_get(r->notes, LLMGW_NOTE_CACHE));
    if (o.cache == LLMGW_CR_HIT || o.cache == LLMGW_CR_COALESCED) {
        o.saved = note_count(r, LLMGW_NOTE_CACHED_TOKENS);
    }
    o.duration = apr_time_now() - r->request_time;
    ttft = note_count(r, LLMGW_NOTE_TTFT_MS);
    o.ttft = ttft >= 0 ? apr_time_from_msec(ttft) : -1;
    llmgw_metrics_record(metrics, &o, apr_time_now());
    return DECLINED;
}

void llmgw_metrics_register(void)
{
    ap_hook_log_transaction(count_request, NULL, NULL, APR_HOOK_MIDDLE);
}
