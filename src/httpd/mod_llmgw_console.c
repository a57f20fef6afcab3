/* mod_llmgw_console: the llm-admin handler. It builds one status model (a
 * json-c tree) from mod_proxy's balancers, the routes, the cache and the
 * core's tables, and renders it as JSON, XML, HTML or Prometheus text. */
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <mod_proxy.h>
#include <mod_status.h>
#include <apr_strings.h>

#include "llmgw_render.h"
#include "llmgw_status.h"
#include "mod_llmgw.h"
#include "mod_llmgw_console.h"
#include "mod_llmgw_metrics.h"

APLOG_USE_MODULE(llm_gateway);

/* Seconds of per-second counts the model carries for the charts. */
#define CHART_SECONDS 120

/* ---------------------------------------------------------------------
 * The tables other parts own; NULL until they are there.
 */

/* TODO(lead, at the merge of H14a): the health table's getter. */
static const llmgw_health_t *health_table(void)
{
    return NULL;
}

/* TODO(lead, at the merge of H15): the limits table's getter. */
static llmgw_limits_t *limits_table(void)
{
    return NULL;
}

/* ---------------------------------------------------------------------
 * The status model
 */

static proxy_server_conf *proxy_conf(const server_rec *s)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");

    return proxy ? ap_get_module_config(s->module_config, proxy) : NULL;
}

static const char *worker_name(const proxy_worker *w)
{
    return *w->s->name_ex ? w->s->name_ex : w->s->name;
}

static void add_flag(json_object *o, const char *name, int on)
{
    json_object_object_add(o, name, json_object_new_boolean(on != 0));
}

static json_object *member_json(request_rec *r, const proxy_balancer *b,
                                proxy_worker *w, apr_time_t now)
{
    json_object *o = json_object_new_object();
    llmgw_metrics_series_t s;
    const char *name = worker_name(w);

    json_object_object_add(o, "name", json_object_new_string(name));
    json_object_object_add(o, "route", json_object_new_string(w->s->route));
    json_object_object_add(
        o, "status",
        json_object_new_string(ap_proxy_parse_wstatus(r->pool, w)));
    add_flag(o, "usable", PROXY_WORKER_IS_USABLE(w));
    add_flag(o, "drained", PROXY_WORKER_IS_DRAINING(w));
    add_flag(o, "disabled", PROXY_WORKER_IS(w, PROXY_WORKER_DISABLED));
    add_flag(o, "stopped", PROXY_WORKER_IS(w, PROXY_WORKER_STOPPED));
    add_flag(o, "error", PROXY_WORKER_IS_ERROR(w));
    add_flag(o, "hcfail", PROXY_WORKER_IS_HCFAILED(w));
    add_flag(o, "standby", PROXY_WORKER_IS_STANDBY(w));
    json_object_object_add(o, "busy", json_object_new_int64(w->s->busy));
    json_object_object_add(o, "elected", json_object_new_int64(w->s->elected));
    json_object_object_add(o, "lbfactor", json_object_new_int(w->s->lbfactor));
    if (llmgw_metrics()
        && llmgw_metrics_find(llmgw_metrics(), LLMGW_MT_MEMBERS, b->s->name,
                              name, &s)) {
        json_object_object_add(o, "traffic", llmgw_metrics_counts_json(&s.c));
    }
    else {
        json_object_object_add(o, "traffic", json_object_new_null());
    }
    llmgw_status_member_health(o, health_table(), name, now);
    return o;
}

static json_object *balancers_json(request_rec *r, apr_time_t now)
{
    proxy_server_conf *pc = proxy_conf(r->server);
    json_object *arr = json_object_new_array();
    proxy_balancer *b;
    int i, j;

    if (!pc || !pc->balancers) {
        return arr;
    }
    b = (proxy_balancer *)pc->balancers->elts;
    for (i = 0; i < pc->balancers->nelts; i++, b++) {
        json_object *o = json_object_new_object(), *members;
        proxy_worker **w = (proxy_worker **)b->workers->elts;

        json_object_object_add(o, "name", json_object_new_string(b->s->name));
        json_object_object_add(o, "lbmethod",
                               json_object_new_string(b->lbmethod
                                                          ? b->lbmethod->name
                                                          : b->s->lbpname));
        members = json_object_new_array();
        for (j = 0; j < b->workers->nelts; j++) {
            json_object_array_add(members, member_json(r, b, w[j], now));
        }
        json_object_object_add(o, "members", members);
        json_object_array_add(arr, o);
    }
    return arr;
}

static const char *policy_name(int policy)
{
    return policy == LLMGW_CACHE_ALL   ? "all"
           : policy == LLMGW_CACHE_OFF ? "off"
                                       : "deterministic";
}

static json_object *route_json(const llmgw_route_t *rt)
{
    json_object *o = json_object_new_object(), *pats = json_object_new_array();
    const char **p = (const char **)rt->patterns->elts;
    llmgw_metrics_counts_t c;
    int i;

    for (i = 0; i < rt->patterns->nelts; i++) {
        json_object_array_add(pats, json_object_new_string(p[i]));
    }
    json_object_object_add(o, "name", json_object_new_string(rt->name));
    json_object_object_add(o, "patterns", pats);
    json_object_object_add(o, "backend", json_object_new_string(rt->balancer));
    json_object_object_add(o, "dialect", json_object_new_string(rt->dialect));
    json_object_object_add(o, "upstream_model",
                           rt->upstream_model
                               ? json_object_new_string(rt->upstream_model)
                               : json_object_new_null());
    json_object_object_add(
        o, "cache_policy",
        json_object_new_string(policy_name(rt->cache_policy)));
    json_object_object_add(o, "discover",
                           json_object_new_boolean(rt->discover > 0));
    json_object_object_add(o, "fallbacks", json_object_new_array());
    if (llmgw_metrics()) {
        llmgw_metrics_sum(llmgw_metrics(), LLMGW_MT_MODELS, rt->name, &c);
        json_object_object_add(o, "traffic", llmgw_metrics_counts_json(&c));
    }
    return o;
}

static json_object *routes_json(request_rec *r)
{
    const llmgw_router_t *rt = llmgw_sconf(r->server)->router;
    json_object *arr = json_object_new_array();
    int i;

    for (i = 0; i < rt->routes->nelts; i++) {
        json_object_array_add(
            arr, route_json(APR_ARRAY_IDX(rt->routes, i, llmgw_route_t *)));
    }
    return arr;
}

static json_object *cache_json(request_rec *r)
{
    llmgw_store_t *st = llmgw_conf_store(llmgw_sconf(r->server));
    json_object *o = json_object_new_object();
    llmgw_metrics_counts_t total;

    json_object_object_add(
        o, "store", json_object_new_string(st ? st->ops->name : "none"));
    if (st) {
        json_object_object_add(o, "servers",
                               st->servers
                                   ? json_object_new_string(st->servers)
                                   : json_object_new_null());
        json_object_object_add(
            o, "shm_bytes", json_object_new_int64((apr_int64_t)st->shm_size));
        json_object_object_add(o, "ttl", json_object_new_int64(st->ttl));
        json_object_object_add(
            o, "max_item", json_object_new_int64((apr_int64_t)st->max_item));
    }
    if (llmgw_metrics()) {
        llmgw_metrics_total(llmgw_metrics(), &total);
        json_object_object_add(o, "traffic",
                               llmgw_metrics_counts_json(&total));
    }
    return o;
}

json_object *llmgw_console_model(request_rec *r)
{
    json_object *st = json_object_new_object();
    apr_time_t now = apr_time_now();

    json_object_object_add(st, "version",
                           json_object_new_string(LLMGW_VERSION));
    json_object_object_add(st, "time",
                           json_object_new_int64(apr_time_sec(now)));
    json_object_object_add(
        st, "server",
        json_object_new_string(
            r->server->server_hostname ? r->server->server_hostname : ""));
    if (llmgw_metrics()) {
        llmgw_metrics_json(llmgw_metrics(), now, CHART_SECONDS, st);
    }
    json_object_object_add(st, "balancers", balancers_json(r, now));
    json_object_object_add(st, "routes", routes_json(r));
    json_object_object_add(st, "cache", cache_json(r));
    llmgw_status_keys(st, limits_table(), now);
    return st;
}

/* ---------------------------------------------------------------------
 * Prometheus
 */

static void backends_prom(request_rec *r, llmgw_pbuf_t *b)
{
    static const char *const labels[] = { "balancer", "member" };
    proxy_server_conf *pc = proxy_conf(r->server);
    proxy_balancer *bal;
    int i, j, busy;

    for (busy = 0; busy < 2; busy++) {
        const char *name = busy ? "llmgw_backend_busy" : "llmgw_backend_up";

        llmgw_prom_family(r->pool, b, name, "gauge",
                          busy ? "Requests a member has in flight "
                                 "(mod_proxy's count)."
                               : "1 if mod_proxy may send a member "
                                 "requests, else 0.");
        bal =
            pc && pc->balancers ? (proxy_balancer *)pc->balancers->elts : NULL;
        for (i = 0; bal && i < pc->balancers->nelts; i++, bal++) {
            proxy_worker **w = (proxy_worker **)bal->workers->elts;

            for (j = 0; j < bal->workers->nelts; j++) {
                const char *v[2] = { bal->s->name, worker_name(w[j]) };

                llmgw_prom_sample(r->pool, b, name, 2, labels, v,
                                  busy ? (double)w[j]->s->busy
                                  : PROXY_WORKER_IS_USABLE(w[j]) ? 1
                                                                 : 0);
            }
        }
    }
}

static int send_metrics(request_rec *r)
{
    llmgw_pbuf_t b = { 0 };

    if (llmgw_metrics()) {
        llmgw_metrics_prom(llmgw_metrics(), r->pool, &b);
    }
    backends_prom(r, &b);
    llmgw_status_keys_prom(limits_table(), r->pool, &b, apr_time_now());
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    ap_set_content_length(r, (apr_off_t)b.len);
    if (!r->header_only && b.len) {
        ap_rwrite(b.b, (int)b.len, r);
    }
    return OK;
}

/* ---------------------------------------------------------------------
 * The handler
 */

static int send_json(request_rec *r)
{
    json_object *st = llmgw_console_model(r);
    apr_size_t len;
    const char *s = json_object_to_json_string_length(
        st, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

    ap_set_content_type(r, "application/json");
    ap_set_content_length(r, (apr_off_t)len);
    if (!r->header_only) {
        ap_rwrite(s, (int)len, r);
    }
    json_object_put(st);
    return OK;
}

static int send_xml(request_rec *r)
{
    json_object *st = llmgw_console_model(r);
    apr_size_t len = 0;
    char *xml = llmgw_render_xml(r->pool, st, &len);

    json_object_put(st);
    if (!xml) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_set_content_type(r, "application/xml; charset=utf-8");
    ap_set_content_length(r, (apr_off_t)len);
    if (!r->header_only) {
        ap_rwrite(xml, (int)len, r);
    }
    return OK;
}

/* The console's own URL: the request's path up to its last '/'. */
static const char *base_of(const request_rec *r)
{
    const char *slash = strrchr(r->uri, '/');

    return apr_pstrmemdup(r->pool, r->uri,
                          slash ? (apr_size_t)(slash - r->uri) + 1 : 0);
}

static int send_page(request_rec *r, llmgw_page_t page, const char *nonce,
                     const char *message)
{
    json_object *st = llmgw_console_model(r);
    llmgw_render_opts_t opts;
    apr_size_t len = 0;
    char *html;

    opts.base = base_of(r);
    opts.nonce = nonce;
    opts.message = message;
    html = llmgw_render_html(r->pool, st, page, &opts, &len);
    json_object_put(st);
    if (!html) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* Nothing inline and nothing from elsewhere: a value that slipped
     * through as markup could still run nothing. */
    apr_table_setn(r->headers_out, "Content-Security-Policy",
                   "default-src 'none'; script-src 'self'; "
                   "style-src 'self'; img-src 'self'; connect-src 'self'; "
                   "form-action 'self'; frame-ancestors 'none'; "
                   "base-uri 'none'");
    apr_table_setn(r->headers_out, "Referrer-Policy", "same-origin");
    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_set_content_length(r, (apr_off_t)len);
    if (!r->header_only) {
        ap_rwrite(html, (int)len, r);
    }
    return OK;
}

/* The page asked for: the path's last segment ("" for the console). */
static const char *page_of(const request_rec *r)
{
    const char *slash = strrchr(r->uri, '/');

    return slash ? slash + 1 : r->uri;
}

static int console_handler(request_rec *r)
{
    const char *page;
    int html;

    if (!r->handler || strcmp(r->handler, LLMGW_ADMIN_HANDLER) != 0) {
        return DECLINED;
    }
    r->allowed = (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_POST);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    page = page_of(r);
    if (strcmp(page, "metrics") == 0) {
        return send_metrics(r);
    }
    if (strcmp(page, "status.json") == 0) {
        return send_json(r);
    }
    if (strcmp(page, "status.xml") == 0) {
        return send_xml(r);
    }
    html = llmgw_render_page(page);
    if (html < 0) {
        return HTTP_NOT_FOUND;
    }
    return send_page(r, (llmgw_page_t)html, NULL, NULL);
}

/* ---------------------------------------------------------------------
 * mod_status
 */

static int status_section(request_rec *r, int flags)
{
    llmgw_metrics_counts_t t, m;
    llmgw_metrics_t *mt = llmgw_metrics();

    if (!mt) {
        return OK;
    }
    llmgw_metrics_total(mt, &t);
    llmgw_metrics_window(mt, apr_time_now(), 60, NULL, &m);
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r,
                   "LLMRequests: %" APR_UINT64_T_FMT "\n"
                   "LLMErrors: %" APR_UINT64_T_FMT "\n"
                   "LLMPromptTokens: %" APR_UINT64_T_FMT "\n"
                   "LLMCompletionTokens: %" APR_UINT64_T_FMT "\n"
                   "LLMCacheHits: %" APR_UINT64_T_FMT "\n"
                   "LLMCacheMisses: %" APR_UINT64_T_FMT "\n"
                   "LLMSavedTokens: %" APR_UINT64_T_FMT "\n"
                   "LLMRequestsLastMinute: %" APR_UINT64_T_FMT "\n",
                   t.requests, t.errors, t.prompt, t.completion,
                   t.cache[LLMGW_CR_HIT] + t.cache[LLMGW_CR_COALESCED],
                   t.cache[LLMGW_CR_MISS], t.saved, m.requests);
        return OK;
    }
    /* Numbers only: nothing here needs escaping. */
    ap_rprintf(r,
               "<hr><h2>mod_llm_gateway</h2>\n<table>"
               "<tr><th>Requests</th><td>%" APR_UINT64_T_FMT "</td></tr>"
               "<tr><th>Errors</th><td>%" APR_UINT64_T_FMT "</td></tr>"
               "<tr><th>Prompt tokens</th><td>%" APR_UINT64_T_FMT "</td></tr>"
               "<tr><th>Completion tokens</th><td>%" APR_UINT64_T_FMT
               "</td></tr>"
               "<tr><th>Cache hits</th><td>%" APR_UINT64_T_FMT "</td></tr>"
               "<tr><th>Cache misses</th><td>%" APR_UINT64_T_FMT "</td></tr>"
               "<tr><th>Tokens saved</th><td>%" APR_UINT64_T_FMT "</td></tr>"
               "<tr><th>Requests, last minute</th><td>%" APR_UINT64_T_FMT
               "</td></tr></table>\n",
               t.requests, t.errors, t.prompt, t.completion,
               t.cache[LLMGW_CR_HIT] + t.cache[LLMGW_CR_COALESCED],
               t.cache[LLMGW_CR_MISS], t.saved, m.requests);
    return OK;
}

void llmgw_console_register(void)
{
    ap_hook_handler(console_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, status_section, NULL, NULL,
                      APR_HOOK_MIDDLE);
}
