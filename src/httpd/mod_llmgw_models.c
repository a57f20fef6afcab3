/* mod_llmgw_models: the models the gateway lists (OpenAI's /v1/models,
 * Ollama's /api/tags, /api/ps, /api/show): the configured names, and with
 * LLMDiscover the backends' own, fetched by a GET of their model list as a
 * subrequest handed to mod_proxy (its pooling, failover and timeouts; no
 * client of our own), captured by a filter, one fetch per interval per
 * child. */
#include <stddef.h> /* before APR: offsetof for its ring macros */
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <http_request.h>
#include <util_filter.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include <mod_proxy.h>

#include "llmgw_json.h"
#include "mod_llmgw.h"
#include "mod_llmgw_models.h"

APLOG_USE_MODULE(llm_gateway);

/* A route's discovered names, per child. */
typedef struct {
    apr_thread_mutex_t *lock;
    apr_pool_t *pool;          /* the names below */
    apr_array_header_t *names; /* const char *, as last fetched */
    apr_time_t fetched;
} discovered_t;

/* A model list is small; more than this is not one. */
#define MAX_LIST (4 * 1024 * 1024)

typedef struct {
    llmgw_pbuf_t body;
    int too_big;
} capture_t;

static ap_filter_rec_t *capture_handle;

static apr_status_t capture_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    capture_t *cap = f->ctx;
    apr_bucket *e;

    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        const char *data;
        apr_size_t n;

        if (APR_BUCKET_IS_METADATA(e) || cap->too_big
            || apr_bucket_read(e, &data, &n, APR_BLOCK_READ) != APR_SUCCESS) {
            continue;
        }
        if (cap->body.len + n > MAX_LIST) {
            cap->too_big = 1;
            continue;
        }
        llmgw_pbuf_add(f->r->main->pool, &cap->body, data, n);
    }
    /* Swallowed: a subrequest's body would go to the client. */
    apr_brigade_cleanup(bb);
    return APR_SUCCESS;
}

/* GET of url ("http://member/path" or "balancer://NAME/path") through
 * mod_proxy as a subrequest of r; the body captured into cap (from
 * r->pool), the status returned. */
static int proxy_get(request_rec *r, const char *url, capture_t *cap)
{
    request_rec *rr = ap_sub_req_method_uri("GET", "/", r, NULL);
    int status;

    rr->filename = apr_pstrcat(rr->pool, "proxy:", url, NULL);
    rr->handler = "proxy-server";
    rr->proxyreq = PROXYREQ_REVERSE;
    rr->status = HTTP_OK;
    apr_table_unset(rr->headers_in, "Content-Length");
    apr_table_unset(rr->headers_in, "Transfer-Encoding");
    ap_add_output_filter_handle(capture_handle, cap, rr, rr->connection);
    ap_run_sub_req(rr);
    status = rr->status;
    ap_destroy_sub_req(rr);
    return status;
}

/* The names a backend reports: OpenAI's data[].id, Ollama's models[].name,
 * allocated from p; NULL when it did not answer with a list. */
static apr_array_header_t *fetch(request_rec *r, const llmgw_route_t *route,
                                 apr_pool_t *p)
{
    int ollama = strcmp(route->dialect, "ollama") == 0;
    capture_t cap = { { NULL, 0, 0 }, 0 };
    apr_array_header_t *names = NULL;
    llmgw_json_err_t jerr;
    llmgw_json_t *doc, *list;
    const char *msg;
    int status;
    apr_size_t i;

    status = proxy_get(r,
                       apr_pstrcat(r->pool, route->balancer,
                                   ollama ? "/api/tags" : "/v1/models", NULL),
                       &cap);
    if (status != HTTP_OK || cap.too_big || !cap.body.len) {
        ap_log_rerror(
            APLOG_MARK, APLOG_WARNING, 0, r,
            LLMGW_LOGNO(
                0401) "discovery: %s answered %d to %s; listing its route's "
                      "configured names only",
            route->balancer, status, ollama ? "/api/tags" : "/v1/models");
        return NULL;
    }
    doc = llmgw_json_parse(r->pool, cap.body.b, cap.body.len, &jerr, &msg);
    list = doc ? llmgw_json_getj(doc, ollama ? "models" : "data", NULL) : NULL;
    if (!list || llmgw_json_type(list, NULL) != LLMGW_JSON_ARRAY) {
        return NULL;
    }
    names = apr_array_make(p, 8, sizeof(const char *));
    for (i = 0; i < llmgw_json_array_len(list); i++) {
        llmgw_json_t *m = llmgw_json_array_get(list, i);
        const char *name = llmgw_json_gets(m, ollama ? "name" : "id", NULL);

        if (!name && ollama) {
            name = llmgw_json_gets(m, "model", NULL);
        }
        if (name && *name) {
            APR_ARRAY_PUSH(names, const char *) = apr_pstrdup(p, name);
        }
    }
    return names;
}

/* The route's discovered names, refreshed when older than its interval,
 * copied into r->pool (another thread may refresh meanwhile). */
static apr_array_header_t *discovered(request_rec *r,
                                      const llmgw_route_t *route)
{
    discovered_t *d = route->discovered;
    apr_array_header_t *out = apr_array_make(r->pool, 8, sizeof(const char *));
    int i;

    if (!d) {
        return out;
    }
    apr_thread_mutex_lock(d->lock);
    if (!d->fetched || apr_time_now() - d->fetched > route->discover) {
        apr_pool_t *np;
        apr_array_header_t *names;

        apr_pool_create(&np, d->pool);
        names = fetch(r, route, np);
        d->fetched = apr_time_now();
        if (names) {
            /* The old names' pool goes: nobody holds them but us. */
            apr_pool_t *old = d->names ? d->names->pool : NULL;

            d->names = names;
            if (old) {
                apr_pool_destroy(old);
            }
        }
        else {
            apr_pool_destroy(np);
        }
    }
    for (i = 0; d->names && i < d->names->nelts; i++) {
        APR_ARRAY_PUSH(out, const char *) =
            apr_pstrdup(r->pool, APR_ARRAY_IDX(d->names, i, const char *));
    }
    apr_thread_mutex_unlock(d->lock);
    return out;
}

/* Whether the request's key may ask for name: a model list shows a key
 * only what it may use (LLMKeyModels). */
static int shown(request_rec *r, const char *name)
{
    const llmgw_req_t *ctx = llmgw_req_get(r);

    return llmgw_key_allows(ctx ? ctx->key : NULL, name);
}

/* The names listed, of those in the array, that the key may use. */
static apr_array_header_t *allowed(request_rec *r, apr_array_header_t *names)
{
    apr_array_header_t *out =
        apr_array_make(r->pool, names->nelts, sizeof(const char *));
    int i;

    for (i = 0; i < names->nelts; i++) {
        const char *n = APR_ARRAY_IDX(names, i, const char *);

        if (shown(r, n)) {
            APR_ARRAY_PUSH(out, const char *) = n;
        }
    }
    return out;
}

apr_array_header_t *llmgw_model_names(request_rec *r, const llmgw_router_t *rt)
{
    apr_array_header_t *out = apr_array_copy(r->pool, rt->listed);
    apr_hash_t *seen = apr_hash_make(r->pool);
    int i, k;

    for (i = 0; i < out->nelts; i++) {
        apr_hash_set(seen, APR_ARRAY_IDX(out, i, const char *),
                     APR_HASH_KEY_STRING, "");
    }
    for (i = 0; i < rt->routes->nelts; i++) {
        const llmgw_route_t *route =
            APR_ARRAY_IDX(rt->routes, i, llmgw_route_t *);
        apr_array_header_t *names;

        if (!route->discover) {
            continue;
        }
        names = discovered(r, route);
        for (k = 0; k < names->nelts; k++) {
            const char *n = APR_ARRAY_IDX(names, k, const char *);

            /* Only names this route would serve: another route may claim
             * a name first, and a glob may not cover it. */
            if (apr_hash_get(seen, n, APR_HASH_KEY_STRING)
                || llmgw_router_find(rt, n) != route) {
                continue;
            }
            apr_hash_set(seen, n, APR_HASH_KEY_STRING, "");
            APR_ARRAY_PUSH(out, const char *) = n;
        }
    }
    return allowed(r, out);
}

void llmgw_models_child_init(apr_pool_t *pchild, server_rec *s)
{
    server_rec *vs;

    LLMGW_EACH_SERVER(vs, s)
    {
        llmgw_router_t *rt = llmgw_sconf(vs)->router;
        int i;

        for (i = 0; i < rt->routes->nelts; i++) {
            llmgw_route_t *route =
                APR_ARRAY_IDX(rt->routes, i, llmgw_route_t *);
            discovered_t *d;

            if (!route->discover || route->discovered) {
                continue;
            }
            d = apr_pcalloc(pchild, sizeof(*d));
            apr_pool_create(&d->pool, pchild);
            apr_thread_mutex_create(&d->lock, APR_THREAD_MUTEX_DEFAULT,
                                    pchild);
            route->discovered = d;
        }
    }
}

/* ---------------------------------------------------------------------
 * What the Ollama members of a balancer say: their /api/tags or /api/ps
 */

/* The balancer's members' URLs (their BalancerMember), usable ones only:
 * mod_proxy's own view of which are in error. */
static apr_array_header_t *members(request_rec *r, const char *balancer)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");
    proxy_server_conf *pconf =
        proxy ? ap_get_module_config(r->server->module_config, proxy) : NULL;
    apr_array_header_t *out = apr_array_make(r->pool, 4, sizeof(char *));
    proxy_balancer *b;
    int i, k;

    if (!pconf || !pconf->balancers) {
        return out;
    }
    b = (proxy_balancer *)pconf->balancers->elts;
    for (i = 0; i < pconf->balancers->nelts; i++, b++) {
        proxy_worker **w;

        if (!b->s || strcasecmp(b->s->name, balancer) != 0) {
            continue;
        }
        w = (proxy_worker **)b->workers->elts;
        for (k = 0; k < b->workers->nelts; k++) {
            const char *name =
                w[k]->s->name_ex[0] ? w[k]->s->name_ex : w[k]->s->name;

            if (PROXY_WORKER_IS_USABLE(w[k])) {
                APR_ARRAY_PUSH(out, const char *) = name;
            }
        }
        break;
    }
    return out;
}

/* Each member's models[] of GET path, by name (models[].name, else
 * .model), the first member's entry for a name kept: name -> entry. A
 * member that fails is left out, and logged. */
static apr_hash_t *members_models(request_rec *r, const char *balancer,
                                  const char *path)
{
    apr_array_header_t *urls = members(r, balancer);
    apr_hash_t *by_name = apr_hash_make(r->pool);
    int i;

    for (i = 0; i < urls->nelts; i++) {
        const char *url = APR_ARRAY_IDX(urls, i, const char *);
        apr_size_t n = strlen(url), k;
        capture_t cap = { { NULL, 0, 0 }, 0 };
        llmgw_json_err_t jerr;
        const char *msg;
        llmgw_json_t *doc, *list;
        int status;

        while (n && url[n - 1] == '/') {
            n--;
        }
        status = proxy_get(
            r,
            apr_pstrcat(r->pool, apr_pstrmemdup(r->pool, url, n), path, NULL),
            &cap);
        doc = status == HTTP_OK && !cap.too_big && cap.body.len
                  ? llmgw_json_parse(r->pool, cap.body.b, cap.body.len, &jerr,
                                     &msg)
                  : NULL;
        list = llmgw_json_getj(doc, "models", NULL);
        if (llmgw_json_type(list, NULL) != LLMGW_JSON_ARRAY) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                          LLMGW_LOGNO(0402) "%s of %s (%s) answered %d, not "
                                            "a model list: left out",
                          path, url, balancer, status);
            continue;
        }
        for (k = 0; k < llmgw_json_array_len(list); k++) {
            llmgw_json_t *m = llmgw_json_array_get(list, k);
            const char *name = llmgw_json_gets(m, "name", NULL);

            if (!name) {
                name = llmgw_json_gets(m, "model", NULL);
            }
            if (name && *name
                && !apr_hash_get(by_name, name, APR_HASH_KEY_STRING)) {
                apr_hash_set(by_name, name, APR_HASH_KEY_STRING, m);
            }
        }
    }
    return by_name;
}

/* The members' entry for the model a gateway name stands for on an
 * Ollama route: the upstream name as it is, or with Ollama's ":latest"
 * tag; NULL if no member has it. The lists are fetched once per
 * balancer per answer (cache: balancer -> its name -> entry hash). */
static const llmgw_json_t *member_entry(request_rec *r, apr_hash_t *cache,
                                        const llmgw_route_t *route,
                                        const char *name, const char *path)
{
    const char *up = route->upstream_model ? route->upstream_model : name;
    apr_hash_t *models =
        apr_hash_get(cache, route->balancer, APR_HASH_KEY_STRING);
    const llmgw_json_t *m;

    if (!models) {
        models = members_models(r, route->balancer, path);
        apr_hash_set(cache, route->balancer, APR_HASH_KEY_STRING, models);
    }
    m = apr_hash_get(models, up, APR_HASH_KEY_STRING);
    if (!m && !strchr(up, ':')) {
        m = apr_hash_get(models, apr_pstrcat(r->pool, up, ":latest", NULL),
                         APR_HASH_KEY_STRING);
    }
    return m;
}

/* entry under the gateway's name: every member of it but name and model. */
static void add_as(llmgw_json_t *list, const char *name,
                   const llmgw_json_t *entry)
{
    static const char *const keep[] = { "modified_at",    "size",
                                        "digest",         "details",
                                        "expires_at",     "size_vram",
                                        "context_length", NULL };
    llmgw_json_t *m = llmgw_json_array_add_object(list);
    int i;

    llmgw_json_sets(m, name, "name", NULL);
    llmgw_json_sets(m, name, "model", NULL);
    for (i = 0; keep[i]; i++) {
        if (llmgw_json_type(entry, keep[i], NULL) != LLMGW_JSON_MISSING) {
            llmgw_json_setj(m, llmgw_json_getj(entry, keep[i], NULL), keep[i],
                            NULL);
        }
    }
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* What the members of glob routes (the client's name is the upstream's)
 * have loaded under names those routes serve, unless listed already
 * (seen), in the order of their names. */
static void loaded_by_globs(request_rec *r, const llmgw_router_t *rt,
                            apr_hash_t *cache, apr_hash_t *seen,
                            llmgw_json_t *list)
{
    apr_array_header_t *names = apr_array_make(r->pool, 8, sizeof(char *));
    apr_hash_t *entries = apr_hash_make(r->pool);
    apr_hash_index_t *hi;
    int i;

    for (i = 0; i < rt->routes->nelts; i++) {
        const llmgw_route_t *route =
            APR_ARRAY_IDX(rt->routes, i, llmgw_route_t *);
        apr_hash_t *models;

        if (route->upstream_model || strcmp(route->dialect, "ollama") != 0) {
            continue;
        }
        member_entry(r, cache, route, "", "/api/ps"); /* fills the cache */
        models = apr_hash_get(cache, route->balancer, APR_HASH_KEY_STRING);
        for (hi = apr_hash_first(r->pool, models); hi;
             hi = apr_hash_next(hi)) {
            const void *key;
            void *val;

            apr_hash_this(hi, &key, NULL, &val);
            if (!apr_hash_get(seen, key, APR_HASH_KEY_STRING)
                && !apr_hash_get(entries, key, APR_HASH_KEY_STRING)
                && llmgw_router_find(rt, key) == route && shown(r, key)) {
                apr_hash_set(entries, key, APR_HASH_KEY_STRING, val);
                APR_ARRAY_PUSH(names, const char *) = key;
            }
        }
    }
    qsort(names->elts, (size_t)names->nelts, sizeof(char *), cmp_names);
    for (i = 0; i < names->nelts; i++) {
        const char *name = APR_ARRAY_IDX(names, i, const char *);

        add_as(list, name, apr_hash_get(entries, name, APR_HASH_KEY_STRING));
    }
}

/* ---------------------------------------------------------------------
 * The answers
 */

static void add_model(llmgw_json_t *list, const char *id, apr_int64_t created)
{
    llmgw_json_t *m = llmgw_json_array_add_object(list);

    llmgw_json_sets(m, id, "id", NULL);
    llmgw_json_sets(m, "model", "object", NULL);
    llmgw_json_setl(m, created, "created", NULL);
    llmgw_json_sets(m, "llm-gateway", "owned_by", NULL);
}

static int not_found(request_rec *r, llmgw_req_t *ctx, const char *msg)
{
    const char *json;
    apr_size_t len;

    llmgw_error_set(&ctx->err, HTTP_NOT_FOUND, "invalid_request_error",
                    "model", "model_not_found", msg);
    json =
        llmgw_error_answer(r, ctx->api == LLMGW_API_OLLAMA, &ctx->err, &len);
    llmgw_send_json(r, ctx->err.status, json, len);
    return OK;
}

static int send_doc(request_rec *r, const llmgw_json_t *doc)
{
    apr_size_t len;
    const char *json = llmgw_json_write(doc, &len);

    llmgw_send_json(r, HTTP_OK, json, len);
    return OK;
}

/* OpenAI's /v1/models and /v1/models/{id}. */
static int answer_models(request_rec *r, llmgw_req_t *ctx,
                         const llmgw_router_t *rt)
{
    llmgw_json_t *doc = llmgw_json_create_object(r->pool), *data;
    apr_array_header_t *names;
    int i;

    if (ctx->ep == LLMGW_EP_MODEL) {
        if (!llmgw_router_find(rt, ctx->model_id)
            || !shown(r, ctx->model_id)) {
            return not_found(r, ctx,
                             apr_psprintf(r->pool,
                                          "The model '%s' does not "
                                          "exist or is not served by this "
                                          "gateway.",
                                          ctx->model_id));
        }
        data = llmgw_json_add_array(doc, "data");
        add_model(data, ctx->model_id, rt->created);
        return send_doc(r, llmgw_json_array_get(data, 0));
    }
    names = llmgw_model_names(r, rt);
    llmgw_json_sets(doc, "list", "object", NULL);
    data = llmgw_json_add_array(doc, "data");
    for (i = 0; i < names->nelts; i++) {
        add_model(data, APR_ARRAY_IDX(names, i, const char *), rt->created);
    }
    return send_doc(r, doc);
}

/* Ollama's /api/tags, /api/ps and /api/show. We know the routed names;
 * sizes, digests and what is loaded are the backends'. */
/* Adds to list each served name's entry at path from its Ollama member,
 * under that name, and marks the name in seen; with when, a name with no
 * such entry gets one made up (as /api/tags lists every model), else none
 * (only the members know what is loaded). */
static void add_member_entries(request_rec *r, const llmgw_router_t *rt,
                               apr_hash_t *cache, const char *path,
                               llmgw_json_t *list, apr_hash_t *seen,
                               const char *when)
{
    apr_array_header_t *names = llmgw_model_names(r, rt);
    int i;

    for (i = 0; i < names->nelts; i++) {
        const char *name = APR_ARRAY_IDX(names, i, const char *);
        const llmgw_route_t *route = llmgw_router_find(rt, name);
        const llmgw_json_t *entry =
            route && strcmp(route->dialect, "ollama") == 0
                ? member_entry(r, cache, route, name, path)
                : NULL;
        llmgw_json_t *m;

        if (entry) {
            add_as(list, name, entry);
            apr_hash_set(seen, name, APR_HASH_KEY_STRING, "");
            continue;
        }
        if (!when) {
            continue;
        }
        m = llmgw_json_array_add_object(list);
        llmgw_json_sets(m, name, "name", NULL);
        llmgw_json_sets(m, name, "model", NULL);
        llmgw_json_sets(m, when, "modified_at", NULL);
        llmgw_json_setl(m, 0, "size", NULL);
        llmgw_json_sets(m, "", "digest", NULL);
        llmgw_json_sets(m, "", "details", "format", NULL);
        llmgw_json_sets(m, "", "details", "family", NULL);
        llmgw_json_sets(m, "", "details", "parameter_size", NULL);
        llmgw_json_sets(m, "", "details", "quantization_level", NULL);
    }
}

static int answer_ollama(request_rec *r, llmgw_req_t *ctx,
                         const llmgw_router_t *rt)
{
    llmgw_json_t *doc = llmgw_json_create_object(r->pool), *list;
    const char *when = llmgw_ollama_time(r->pool, rt->created);

    apr_hash_t *cache = apr_hash_make(r->pool);
    apr_hash_t *seen = apr_hash_make(r->pool);

    switch (ctx->info) {
    case OLLAMA_INFO_TAGS:
        list = llmgw_json_add_array(doc, "models");
        add_member_entries(r, rt, cache, "/api/tags", list, seen, when);
        break;
    case OLLAMA_INFO_PS:
        /* What the Ollama members have loaded, under the names the
         * gateway serves it by; other backends do not say. */
        list = llmgw_json_add_array(doc, "models");
        add_member_entries(r, rt, cache, "/api/ps", list, seen, NULL);
        loaded_by_globs(r, rt, cache, seen, list);
        break;
    default:
        if (!llmgw_router_find(rt, ctx->model_id)
            || !shown(r, ctx->model_id)) {
            return not_found(r, ctx,
                             apr_psprintf(r->pool,
                                          "model '%s' not "
                                          "found",
                                          ctx->model_id));
        }
        llmgw_json_sets(doc, "", "modelfile", NULL);
        llmgw_json_sets(doc, "", "parameters", NULL);
        llmgw_json_sets(doc, "", "template", NULL);
        llmgw_json_sets(doc, "", "details", "format", NULL);
        llmgw_json_sets(doc, "", "details", "family", NULL);
        llmgw_json_add_object(doc, "model_info");
        llmgw_json_array_adds(llmgw_json_add_array(doc, "capabilities"),
                              "completion");
        llmgw_json_sets(doc, when, "modified_at", NULL);
        break;
    }
    return send_doc(r, doc);
}

/* The handler for model lists; every other answer is mod_llmgw_answer's. */
static int models_handler(request_rec *r)
{
    llmgw_req_t *ctx;
    const llmgw_router_t *rt;

    if (!r->handler || strcmp(r->handler, LLMGW_HANDLER) != 0
        || !(ctx = llmgw_req_get(r)) || ctx->err.status) {
        return DECLINED;
    }
    rt = llmgw_routes(r);
    if (ctx->ep == LLMGW_EP_MODELS || ctx->ep == LLMGW_EP_MODEL) {
        return answer_models(r, ctx, rt);
    }
    if (ctx->info == OLLAMA_INFO_TAGS || ctx->info == OLLAMA_INFO_PS
        || ctx->info == OLLAMA_INFO_SHOW) {
        return answer_ollama(r, ctx, rt);
    }
    return DECLINED;
}

void llmgw_models_register(void)
{
    capture_handle = ap_register_output_filter("LLMGW_CAPTURE", capture_filter,
                                               NULL, AP_FTYPE_RESOURCE);
    ap_hook_handler(models_handler, NULL, NULL, APR_HOOK_MIDDLE);
}
