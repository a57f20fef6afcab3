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
#include <apr_escape.h>
#include <util_cookies.h>

#include "llmgw_form.h"
#include "llmgw_render.h"
#include "llmgw_status.h"
#include "mod_llmgw.h"
#include "mod_llmgw_console.h"
#include "mod_llmgw_health.h"
#include "mod_llmgw_limits.h"
#include "mod_llmgw_manage.h"
#include "mod_llmgw_metrics.h"

APLOG_USE_MODULE(llm_gateway);

/* Seconds of per-second counts the model carries for the charts. */
#define CHART_SECONDS 120

/* ---------------------------------------------------------------------
 * The tables other parts own; NULL until they are there.
 */

static const llmgw_health_t *health_table(void)
{
    return llmgw_health_table();
}

static llmgw_limits_t *limits_table(void)
{
    return llmgw_limits_table();
}

/* ---------------------------------------------------------------------
 * What all children share: the secret the session nonces are made with
 * and the cache's generations, kept across restarts
 */

#define SECRET_LEN 32
#define SESSION_COOKIE "llmgw_admin"

typedef struct {
    unsigned char secret[SECRET_LEN];
    int secret_set;
} console_shared_t;

/* The generations follow, 8-byte aligned as their counters need. */
#define SHARED_SIZE APR_ALIGN_DEFAULT(sizeof(console_shared_t))

static console_shared_t *shared;
static llmgw_cache_gens_t *gens;

apr_status_t llmgw_console_post_config(apr_pool_t *pconf, server_rec *s)
{
    apr_size_t size = SHARED_SIZE + llmgw_cache_gens_size();
    char *mem;
    int fresh;

    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return APR_SUCCESS;
    }
    mem = llmgw_kept_shm(s, "llmgw-console-shm", size, &fresh);
    if (!mem) {
        return APR_ENOMEM;
    }
    shared = (console_shared_t *)mem;
    if (fresh) {
        memset(shared, 0, sizeof(*shared));
        gens =
            llmgw_cache_gens_init(mem + SHARED_SIZE, llmgw_cache_gens_size());
    }
    else {
        gens = (llmgw_cache_gens_t *)(mem + SHARED_SIZE);
    }
    if (!shared->secret_set) {
        if (apr_generate_random_bytes(shared->secret, SECRET_LEN)
            != APR_SUCCESS) {
            return APR_EGENERAL;
        }
        shared->secret_set = 1;
    }
    llmgw_cache_use_gens(gens);
    return APR_SUCCESS;
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
    /* Free: mod_proxy names it, never sets it; a member removed at run
     * time holds its slot with it (mod_llmgw_members.c). */
    add_flag(o, "removed", PROXY_WORKER_IS(w, PROXY_WORKER_FREE));
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

/* LLMFallback's model names, in the order they are tried. */
static json_object *fallbacks_json(const llmgw_route_t *rt)
{
    json_object *a = json_object_new_array();
    int i;

    for (i = 0; rt->fallbacks && i < rt->fallbacks->nelts; i++) {
        json_object_array_add(a, json_object_new_string(APR_ARRAY_IDX(
                                     rt->fallbacks, i, const char *)));
    }
    return a;
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
    json_object_object_add(o, "fallbacks", fallbacks_json(rt));
    if (llmgw_metrics()) {
        llmgw_metrics_sum(llmgw_metrics(), LLMGW_MT_MODELS, rt->name, &c);
        json_object_object_add(o, "traffic", llmgw_metrics_counts_json(&c));
    }
    return o;
}

static json_object *routes_json(request_rec *r)
{
    const llmgw_router_t *rt = llmgw_routes(r);
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
    json_object_object_add(
        o, "flushes",
        json_object_new_int64(gens ? (apr_int64_t)llmgw_cache_flushes(gens)
                                   : 0));
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
    json_object_object_add(st, "manage", llmgw_manage_status(r));
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

/* ---------------------------------------------------------------------
 * Sessions and actions
 */

/* The session of r: its cookie's, else a new one (set on the answer).
 * NULL without the shared secret. */
static const char *session_of(request_rec *r, const char *base, int make)
{
    const char *id = NULL;
    unsigned char raw[16];

    ap_cookie_read(r, SESSION_COOKIE, &id, 0);
    if (id && llmgw_form_session_ok(id)) {
        return id;
    }
    if (!make || !shared
        || apr_generate_random_bytes(raw, sizeof(raw)) != APR_SUCCESS) {
        return NULL;
    }
    id = apr_pescape_hex(r->pool, raw, sizeof(raw), 0);
    apr_table_addn(
        r->err_headers_out, "Set-Cookie",
        apr_pstrcat(r->pool, SESSION_COOKIE, "=", id, "; Path=", base,
                    "; HttpOnly; SameSite=Strict",
                    strcmp(ap_http_scheme(r), "https") == 0 ? "; Secure" : "",
                    NULL));
    return id;
}

static const char *nonce_of(request_rec *r, const char *session)
{
    char *n = apr_palloc(r->pool, LLMGW_NONCE_LEN + 1);

    llmgw_form_nonce(shared->secret, SECRET_LEN, session, n);
    return n;
}

/* Whether the POST comes from a page of this server: its Origin, or
 * without one its Referer, names this scheme, host and port. */
static int same_origin(request_rec *r)
{
    const char *self = ap_construct_url(r->pool, "/", r);
    apr_size_t n = strlen(self) - 1; /* without its '/' */
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *ref = apr_table_get(r->headers_in, "Referer");

    if (origin) {
        return strlen(origin) == n && strncasecmp(origin, self, n) == 0;
    }
    return ref && strncasecmp(ref, self, n + 1) == 0;
}

/* The body, at most LLMGW_FORM_BODY_MAX bytes: NULL with *status set
 * when it is longer or cannot be read. */
static char *read_form(request_rec *r, apr_size_t *len, int *status)
{
    char *buf = apr_palloc(r->pool, LLMGW_FORM_BODY_MAX + 1);
    apr_size_t got = 0;
    long n;

    *status = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);
    if (*status != OK) {
        return NULL;
    }
    while (
        (n = ap_get_client_block(r, buf + got, LLMGW_FORM_BODY_MAX + 1 - got))
        > 0) {
        got += (apr_size_t)n;
        if (got > LLMGW_FORM_BODY_MAX) {
            *status = HTTP_REQUEST_ENTITY_TOO_LARGE;
            return NULL;
        }
    }
    if (n < 0) {
        *status = HTTP_BAD_REQUEST;
        return NULL;
    }
    *len = got;
    return buf;
}

static proxy_worker *member_named(request_rec *r, const llmgw_action_t *a)
{
    proxy_server_conf *pc = proxy_conf(r->server);
    proxy_balancer *b;
    int i, j;

    b = pc && pc->balancers ? (proxy_balancer *)pc->balancers->elts : NULL;
    for (i = 0; b && i < pc->balancers->nelts; i++, b++) {
        proxy_worker **w = (proxy_worker **)b->workers->elts;

        if (strcmp(b->s->name, a->balancer) != 0) {
            continue;
        }
        for (j = 0; j < b->workers->nelts; j++) {
            if (strcmp(worker_name(w[j]), a->member) == 0) {
                return w[j];
            }
        }
    }
    return NULL;
}

/* Does a member action through mod_proxy's own worker state, as
 * balancer-manager does: both show the same. */
static const char *member_action(request_rec *r, const llmgw_action_t *a)
{
    proxy_worker *w = member_named(r, a);

    if (!w) {
        return "no such member";
    }
    switch (a->kind) {
    case LLMGW_ACT_DRAIN:
        ap_proxy_set_wstatus(PROXY_WORKER_DRAIN_FLAG, 1, w);
        break;
    case LLMGW_ACT_DISABLE:
        ap_proxy_set_wstatus(PROXY_WORKER_DISABLED_FLAG, 1, w);
        break;
    default:
        ap_proxy_set_wstatus(PROXY_WORKER_DRAIN_FLAG, 0, w);
        ap_proxy_set_wstatus(PROXY_WORKER_DISABLED_FLAG, 0, w);
        ap_proxy_set_wstatus(PROXY_WORKER_STOPPED_FLAG, 0, w);
    }
    return NULL;
}

/* The console's reset of a key's (route's, user's) budgets. */
static const char *reset_subject(const char *subject)
{
    llmgw_limits_t *t = limits_table();
    llmgw_limits_subject_t s;

    if (!t) {
        return "no keys configured";
    }
    if (llmgw_limits_find(t, subject, &s) != APR_SUCCESS
        || llmgw_limits_reset(t, &s, apr_time_now()) != APR_SUCCESS) {
        return "no such key";
    }
    return NULL;
}

static const char *do_action(request_rec *r, const llmgw_action_t *a)
{
    switch (a->kind) {
    case LLMGW_ACT_DRAIN:
    case LLMGW_ACT_DISABLE:
    case LLMGW_ACT_ENABLE: return member_action(r, a);
    case LLMGW_ACT_FLUSH:
        if (!gens) {
            return "no cache generations";
        }
        llmgw_cache_flush(gens, a->model);
        return NULL;
    default: return reset_subject(a->subject);
    }
}

static const char *target_of(const llmgw_action_t *a)
{
    return a->member    ? a->member
           : a->subject ? a->subject
           : a->model   ? a->model
                        : "(all)";
}

/* Writes the audit line: who, from where, what, and how it went. */
static void audit(request_rec *r, const llmgw_action_t *a, const char *what,
                  const char *why)
{
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r,
                  LLMGW_LOGNO(0610) "console action %s by %s from %s: %s %s%s",
                  why ? "refused" : "done", r->user ? r->user : "-",
                  r->useragent_ip, what,
                  a ? ap_escape_logitem(r->pool, target_of(a)) : "",
                  why ? apr_pstrcat(r->pool, ": ", why, NULL) : "");
}

static int refuse(request_rec *r, int status, const char *why)
{
    audit(r, NULL, "POST", why);
    return status;
}

/* A refused action's answer: 409 and, for the browser that posted the
 * form, the page it belongs to with the reason on top (its forms still
 * work: the session is the poster's). */
static int refused_page(request_rec *r, const char *page, const char *session,
                        const char *why)
{
    int status;

    r->status = HTTP_CONFLICT;
    status = send_page(r, (llmgw_page_t)llmgw_render_page(page),
                       nonce_of(r, session),
                       apr_pstrcat(r->pool, "Not done: ", why, NULL));
    return status == OK ? OK : HTTP_CONFLICT;
}

static int post_action(request_rec *r, const char *base)
{
    const char *type = apr_table_get(r->headers_in, "Content-Type");
    const char *why, *session, *what, *dest;
    llmgw_form_t f;
    llmgw_action_t a;
    apr_size_t len = 0;
    char *body;
    int status, changed = 0;

    if (!same_origin(r)) {
        return refuse(r, HTTP_FORBIDDEN,
                      "not from this server's pages "
                      "(Origin or Referer)");
    }
    if (!type || strncasecmp(type, "application/x-www-form-urlencoded", 33)) {
        return refuse(r, HTTP_UNSUPPORTED_MEDIA_TYPE, "not a form");
    }
    if (!(body = read_form(r, &len, &status))) {
        return refuse(r, status, "the body is too long or unreadable");
    }
    why = llmgw_form_parse(r->pool, body, len, llmgw_action_fields, &f);
    if (why) {
        return refuse(r, HTTP_BAD_REQUEST, why);
    }
    session = session_of(r, base, 0);
    if (!shared || !session
        || !llmgw_form_nonce_ok(shared->secret, SECRET_LEN, session,
                                llmgw_form_get(&f, "nonce"))) {
        return refuse(r, HTTP_FORBIDDEN, "no valid nonce for the session");
    }
    why = llmgw_form_action(r->pool, &f, &a);
    what = llmgw_action_name(a.kind);
    if (why && llmgw_manage_action(r, &f, &a, &what, &why)) {
        changed = 1; /* routes changed at run time, or refused */
    }
    else if (!why) {
        why = do_action(r, &a);
    }
    audit(r, &a, what, why);
    /* A run-time change of names and routes belongs to the routes page,
     * one of members (member_add, ...) to the backends page. */
    if (changed) {
        dest =
            what && strncmp(what, "member_", 7) == 0 ? "backends" : "routes";
    }
    else {
        dest = a.kind == LLMGW_ACT_FLUSH   ? "cache"
               : a.kind == LLMGW_ACT_RESET ? "keys"
                                           : "backends";
    }
    if (why) {
        return refused_page(r, dest, session, why);
    }
    /* Back to the page the action belongs to, with a GET. */
    apr_table_setn(
        r->headers_out, "Location",
        ap_construct_url(r->pool, apr_pstrcat(r->pool, base, dest, NULL), r));
    return HTTP_SEE_OTHER;
}

/* The page asked for: the path's last segment ("" for the console). */
static const char *page_of(const request_rec *r)
{
    const char *slash = strrchr(r->uri, '/');

    return slash ? slash + 1 : r->uri;
}

/* The console's own URL without its slash (the <Location> itself): where
 * the relative links of its pages would not resolve. */
static int is_location_root(const request_rec *r)
{
    const core_dir_config *d = ap_get_core_module_config(r->per_dir_config);

    return d && d->d && *r->uri && strcmp(r->uri, d->d) == 0
           && r->uri[strlen(r->uri) - 1] != '/';
}

static int console_handler(request_rec *r)
{
    const char *page, *base, *session;
    int html;

    if (!r->handler || strcmp(r->handler, LLMGW_ADMIN_HANDLER) != 0) {
        return DECLINED;
    }
    r->allowed = (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_POST);
    apr_table_setn(r->err_headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->err_headers_out, "X-Content-Type-Options", "nosniff");
    llmgw_manage_sync(r); /* the members other children added */
    if (is_location_root(r)) {
        apr_table_setn(
            r->headers_out, "Location",
            ap_construct_url(r->pool, apr_pstrcat(r->pool, r->uri, "/", NULL),
                             r));
        return HTTP_MOVED_PERMANENTLY;
    }
    page = page_of(r);
    base = base_of(r);
    if (r->method_number == M_POST) {
        return strcmp(page, "action") == 0 ? post_action(r, base)
                                           : HTTP_METHOD_NOT_ALLOWED;
    }
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    /* GET never changes anything: one with parameters (an action asked
     * the wrong way, or a forged link) is refused whole. */
    if (r->args) {
        return HTTP_BAD_REQUEST;
    }
    if (strcmp(page, "metrics") == 0) {
        return send_metrics(r);
    }
    if (strcmp(page, "status.json") == 0) {
        return send_json(r);
    }
    if (strcmp(page, "status.xml") == 0) {
        return send_xml(r);
    }
    if (strcmp(page, "changes.conf") == 0) {
        return llmgw_manage_send_conf(r);
    }
    html = llmgw_render_page(page);
    if (html < 0) {
        return HTTP_NOT_FOUND;
    }
    session = session_of(r, base, 1);
    return send_page(r, (llmgw_page_t)html,
                     session ? nonce_of(r, session) : NULL, NULL);
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
