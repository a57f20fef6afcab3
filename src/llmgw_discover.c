/* llmgw_discover: a GET of the backend's model list as a subrequest handed
 * to mod_proxy (its pooling, failover and timeouts; no client of our own),
 * its body captured by a filter; one fetch per interval per child. */
/* Before APR: its ring macros then use offsetof, not a NULL pointer
 * subtraction (which clang warns about). */
#include <stddef.h>
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <http_request.h>
#include <util_filter.h>
#include <apr_strings.h>

#include "llmgw_config.h"
#include "llmgw_discover.h"
#include "llmgw_json.h"
#include "llmgw_proxy.h"

APLOG_USE_MODULE(llm_gateway);

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

/* The names a backend reports: OpenAI's data[].id, Ollama's models[].name,
 * allocated from p; NULL when it did not answer with a list. */
static apr_array_header_t *fetch(request_rec *r, const llmgw_route_t *route,
                                 apr_pool_t *p)
{
    int ollama = strcmp(route->dialect, "ollama") == 0;
    capture_t cap = { { NULL, 0, 0 }, 0 };
    request_rec *rr = ap_sub_req_method_uri("GET", "/", r, NULL);
    apr_array_header_t *names = NULL;
    llmgw_json_err_t jerr;
    llmgw_json_t *doc, *list;
    const char *msg;
    int status;
    apr_size_t i;

    rr->filename = apr_pstrcat(rr->pool, "proxy:", route->balancer,
                               ollama ? "/api/tags" : "/v1/models", NULL);
    rr->handler = "proxy-server";
    rr->proxyreq = PROXYREQ_REVERSE;
    rr->status = HTTP_OK;
    apr_table_unset(rr->headers_in, "Content-Length");
    apr_table_unset(rr->headers_in, "Transfer-Encoding");
    ap_add_output_filter_handle(capture_handle, &cap, rr, rr->connection);
    ap_run_sub_req(rr);
    status = rr->status;
    ap_destroy_sub_req(rr);
    if (status != HTTP_OK || cap.too_big || !cap.body.len) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, LLMGW_LOGNO(0401)
                      "discovery: %s answered %d to %s; listing its route's "
                      "configured names only", route->balancer, status,
                      ollama ? "/api/tags" : "/v1/models");
        return NULL;
    }
    doc = llmgw_json_parse(r->pool, cap.body.b, cap.body.len, &jerr, &msg);
    list = doc ? llmgw_json_getj(doc, ollama ? "models" : "data", NULL)
               : NULL;
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
    struct llmgw_discover *d = route->discover;
    apr_array_header_t *out = apr_array_make(r->pool, 8,
                                             sizeof(const char *));
    int i;

    if (!d->lock) {
        return out;
    }
    apr_thread_mutex_lock(d->lock);
    if (!d->fetched || apr_time_now() - d->fetched > d->interval) {
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

apr_array_header_t *llmgw_model_names(request_rec *r,
                                      const llmgw_router_t *rt)
{
    apr_array_header_t *out = apr_array_copy(r->pool, rt->listed);
    apr_hash_t *seen = apr_hash_make(r->pool);
    int i, k;

    for (i = 0; i < out->nelts; i++) {
        apr_hash_set(seen, APR_ARRAY_IDX(out, i, const char *),
                     APR_HASH_KEY_STRING, "");
    }
    for (i = 0; i < rt->routes->nelts; i++) {
        const llmgw_route_t *route = APR_ARRAY_IDX(rt->routes, i,
                                                   llmgw_route_t *);
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
    return out;
}

void llmgw_discover_child_init(apr_pool_t *pchild, server_rec *s)
{
    server_rec *vs;

    for (vs = s; vs; vs = vs->next) {
        llmgw_server_conf_t *conf = ap_get_module_config(vs->module_config,
                                                         &llm_gateway_module);
        int i;

        for (i = 0; i < conf->router->routes->nelts; i++) {
            llmgw_route_t *route = APR_ARRAY_IDX(conf->router->routes, i,
                                                 llmgw_route_t *);
            struct llmgw_discover *d = route->discover;

            if (d && !d->lock) {
                apr_pool_create(&d->pool, pchild);
                apr_thread_mutex_create(&d->lock, APR_THREAD_MUTEX_DEFAULT,
                                        pchild);
            }
        }
    }
}

void llmgw_discover_register(void)
{
    capture_handle = ap_register_output_filter("LLMGW_CAPTURE",
                                               capture_filter, NULL,
                                               AP_FTYPE_RESOURCE);
}
