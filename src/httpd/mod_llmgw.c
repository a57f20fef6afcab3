/* mod_llmgw: the pieces every part of the glue uses: configuration with
 * its defaults, the request context, the core's log lines in httpd's
 * error log, notes, and errors in the client's API. */
#include <stddef.h> /* before APR: offsetof for its ring macros */
#include <string.h>

#include <httpd.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_protocol.h>
#include <http_request.h>
#include <mod_watchdog.h>
#include <apr_fnmatch.h>
#include <apr_strings.h>

#include "mod_llmgw.h"

APLOG_USE_MODULE(llm_gateway);

/* r->pool's user data naming its request, for the core's log lines. */
#define LOG_REQUEST "llmgw-request"

llmgw_server_conf_t *llmgw_sconf(const server_rec *s)
{
    return ap_get_module_config(s->module_config, &llm_gateway_module);
}

llmgw_dir_conf_t *llmgw_dconf(const request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &llm_gateway_module);
}

apr_off_t llmgw_max_body(const llmgw_server_conf_t *conf)
{
    return conf->max_body ? conf->max_body : LLMGW_DEFAULT_MAX_BODY;
}

int llmgw_coalesce_on(const llmgw_server_conf_t *conf)
{
    return conf->coalesce != 0;
}

apr_interval_time_t llmgw_coalesce_timeout(const llmgw_server_conf_t *conf)
{
    return conf->coalesce_timeout ? conf->coalesce_timeout
                                  : LLMGW_DEFAULT_COALESCE_TIMEOUT;
}

int llmgw_billing_free(const llmgw_server_conf_t *conf)
{
    return conf->cache_billing_free == 1;
}

static llmgw_store_t *default_store;

void llmgw_set_default_store(llmgw_store_t *st)
{
    default_store = st;
}

llmgw_store_t *llmgw_conf_store(const llmgw_server_conf_t *conf)
{
    return conf->store_set ? conf->store : default_store;
}

server_rec *llmgw_next_server(server_rec *s, server_rec *vs)
{
    const llmgw_server_conf_t *main = llmgw_sconf(s);

    for (vs = vs->next; vs; vs = vs->next) {
        const llmgw_server_conf_t *conf = llmgw_sconf(vs);

        if (conf->router != main->router
            || llmgw_conf_store(conf) != llmgw_conf_store(main)) {
            return vs;
        }
    }
    return NULL;
}

apr_status_t llmgw_watchdog_every(apr_pool_t *pconf, const char *name,
                                  apr_interval_time_t every, const void *data,
                                  apr_status_t (*cb)(int state, void *data,
                                                     apr_pool_t *pool))
{
    APR_OPTIONAL_FN_TYPE(ap_watchdog_get_instance) *get =
        APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_get_instance);
    APR_OPTIONAL_FN_TYPE(ap_watchdog_register_callback) *reg =
        APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_register_callback);
    ap_watchdog_t *wd;
    apr_status_t rv;

    if (!get || !reg) {
        return APR_ENOTIMPL;
    }
    rv = get(&wd, name, 0, 1, pconf);
    return rv == APR_SUCCESS ? reg(wd, every, data, cb) : rv;
}

int llmgw_key_allows(const llmgw_key_t *k, const char *model)
{
    int i;

    for (i = 0; k && k->models && i < k->models->nelts; i++) {
        if (apr_fnmatch(APR_ARRAY_IDX(k->models, i, const char *), model, 0)
            == APR_SUCCESS) {
            return 1;
        }
    }
    return !k || !k->models;
}

llmgw_req_t *llmgw_req_get(const request_rec *r)
{
    return ap_get_module_config(r->request_config, &llm_gateway_module);
}

llmgw_req_t *llmgw_req_make(request_rec *r, llmgw_api_t api)
{
    llmgw_req_t *ctx = apr_pcalloc(r->pool, sizeof(*ctx));

    ctx->api = api;
    ap_set_module_config(r->request_config, &llm_gateway_module, ctx);
    apr_pool_userdata_setn(r, LOG_REQUEST, NULL, r->pool);
    return ctx;
}

/* ---------------------------------------------------------------------
 * The core's log lines
 */

static request_rec *request_of(apr_pool_t *p)
{
    void *r = NULL;

    if (p) {
        apr_pool_userdata_get(&r, LOG_REQUEST, p);
    }
    return r;
}

static int log_enabled(apr_pool_t *p, int level)
{
    request_rec *r = request_of(p);

    return r ? APLOG_R_MODULE_IS_LEVEL(r, APLOG_MODULE_INDEX, level)
             : APLOG_MODULE_IS_LEVEL(ap_server_conf, APLOG_MODULE_INDEX,
                                     level);
}

static void log_write(apr_pool_t *p, const char *file, int line, int level,
                      apr_status_t rv, const char *msg)
{
    request_rec *r = request_of(p);

    if (r) {
        ap_log_rerror_(file, line, APLOG_MODULE_INDEX, level, rv, r, "%s",
                       msg);
    }
    else {
        ap_log_error_(file, line, APLOG_MODULE_INDEX, level, rv,
                      ap_server_conf, "%s", msg);
    }
}

void llmgw_log_glue(void)
{
    llmgw_log_set(log_enabled, log_write);
}

/* ---------------------------------------------------------------------
 * Notes and answers
 */

void llmgw_note_usage(request_rec *r, const llmgw_usage_t *u)
{
    llmgw_req_t *ctx;

    if (!u->found) {
        return;
    }
    if ((ctx = llmgw_req_get(r)) != NULL) {
        ctx->usage = *u; /* what the limits settle with */
    }
    apr_table_setn(r->notes, LLMGW_NOTE_PROMPT_TOKENS,
                   apr_off_t_toa(r->pool, u->prompt));
    apr_table_setn(r->notes, LLMGW_NOTE_COMPLETION_TOKENS,
                   apr_off_t_toa(r->pool, u->completion));
    apr_table_setn(r->notes, LLMGW_NOTE_TOTAL_TOKENS,
                   apr_off_t_toa(r->pool, u->total));
}

void llmgw_note_ttft(request_rec *r)
{
    apr_table_setn(
        r->notes, LLMGW_NOTE_TTFT_MS,
        apr_off_t_toa(r->pool,
                      apr_time_as_msec(apr_time_now() - r->request_time)));
}

void llmgw_note_error(request_rec *r, const llmgw_error_t *err)
{
    apr_table_setn(r->notes, LLMGW_NOTE_ERROR,
                   err->code ? err->code : err->type);
}

int llmgw_proxy_status(const request_rec *r, int status)
{
    return status == HTTP_BAD_GATEWAY
                   && apr_table_get(r->notes, "proxy_timedout")
               ? HTTP_GATEWAY_TIME_OUT
               : status;
}

const char *llmgw_error_answer(request_rec *r, int ollama,
                               const llmgw_error_t *err, apr_size_t *len)
{
    const char *json = llmgw_front_error(r->pool, ollama, err);

    if (r->status != err->status) {
        r->status = err->status;
        r->status_line = NULL;
    }
    ap_set_content_type(r, "application/json");
    llmgw_note_error(r, err);
    *len = strlen(json);
    return json;
}

void llmgw_error_brigade(request_rec *r, int ollama, const llmgw_error_t *err,
                         apr_bucket_brigade *bb, int end)
{
    apr_size_t len;
    const char *json = llmgw_error_answer(r, ollama, err, &len);
    apr_bucket *e, *next;

    apr_table_unset(r->headers_out, "Content-Length");
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = next) {
        next = APR_BUCKET_NEXT(e);
        /* An error bucket and mod_proxy's EOC would close the client's
         * connection without a word. */
        if (!APR_BUCKET_IS_EOS(e)) {
            apr_bucket_delete(e);
        }
    }
    APR_BRIGADE_INSERT_HEAD(
        bb, apr_bucket_pool_create(json, len, r->pool, bb->bucket_alloc));
    if (end && !APR_BUCKET_IS_EOS(APR_BRIGADE_LAST(bb))) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(bb->bucket_alloc));
    }
}

void llmgw_send_json(request_rec *r, int status, const char *json,
                     apr_size_t len)
{
    r->status = status;
    ap_set_content_type(r, "application/json");
    ap_set_content_length(r, (apr_off_t)len);
    if (!r->header_only) {
        ap_rwrite(json, (int)len, r);
    }
}
