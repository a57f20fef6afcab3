/* llmgw_proxy: httpd glue for one API request. The fixups hook reads and
 * checks the body, then hands the request to mod_proxy as [P] would; the
 * filters re-inject the body and watch the response for usage. */
#include <string.h>

#include <httpd.h>
#include <apr_strings.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>

#include "llmgw_cache.h"
#include "llmgw_coalesce.h"
#include "llmgw_config.h"
#include "llmgw_dialect.h"
#include "llmgw_proxy.h"
#include "llmgw_stream.h"

APLOG_USE_MODULE(llm_gateway);

/* Response bytes kept to find "usage" in: it is the last member of an
 * OpenAI body, followed at most by a few small fields. */
#define LLMGW_TAIL_SIZE 8192

typedef enum {
    OUT_UNDECIDED = 0,
    OUT_SSE,
    OUT_JSON,
    OUT_PASS
} out_mode_t;

typedef struct {
    llmgw_endpoint_t ep;
    const char *model_id;        /* GET /models/{id} */
    llmgw_request_t req;
    const llmgw_route_t *route;
    llmgw_error_t err;           /* err.status != 0: we answer it */
    const char *body;            /* what goes upstream */
    apr_size_t body_len;
    apr_size_t body_sent;
    int eos_sent;
    int strip_usage;
    out_mode_t out;
    int finished;
    llmgw_sse_t *sse;
    char *tail;
    apr_size_t tail_len;
    apr_bucket_brigade *bb;
    llmgw_store_t *store;        /* the cache, for an eligible request */
    const char *cache_key;
    llmgw_record_t *hit;         /* the answer, from the cache */
    llmgw_record_t *rec;         /* the answer being recorded */
    int complete;                /* the answer arrived whole and well */
    int stream_ended;            /* the client's stream has its end */
    int settled;                 /* stored and coalescing ended */
    llmgw_coalesce_t *co;        /* as leader, or as a stream follower */
    int following;
    char *copy;                  /* a plain answer being recorded */
    apr_size_t copy_len;
} llmgw_req_t;

static ap_filter_rec_t *body_filter_handle;
static ap_filter_rec_t *out_filter_handle;
static ap_filter_rec_t *error_filter_handle;

static llmgw_req_t *req_ctx(request_rec *r)
{
    return ap_get_module_config(r->request_config, &llm_gateway_module);
}

/* Our own answer for r: decided in fixups, written by the handler. */
static int answer_error(request_rec *r, llmgw_req_t *ctx)
{
    r->handler = LLMGW_HANDLER;
    apr_table_setn(r->notes, "llm-error",
                   ctx->err.code ? ctx->err.code : ctx->err.type);
    return OK;
}

/* ---------------------------------------------------------------------
 * Reading the client's body
 */

static int read_body(request_rec *r, apr_off_t limit, char **out,
                     apr_size_t *outlen, llmgw_error_t *err)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_bucket_brigade *bb;
    apr_off_t declared = -1;
    apr_size_t len = 0, cap;
    char *buf;
    int seen_eos = 0;

    if (cl && (!ap_parse_strict_length(&declared, cl))) {
        return llmgw_error_set(err, HTTP_BAD_REQUEST,
                               "invalid_request_error", NULL, "bad_request",
                               "Invalid Content-Length.");
    }
    if (declared > limit) {
        goto too_large;
    }
    cap = declared >= 0 ? (apr_size_t)declared : 16384;
    buf = apr_palloc(r->pool, cap + 1);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    while (!seen_eos) {
        apr_bucket *e;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb,
                                         AP_MODE_READBYTES, APR_BLOCK_READ,
                                         HUGE_STRING_LEN * 8);
        if (rv != APR_SUCCESS) {
            int status = ap_map_http_request_error(rv, HTTP_BAD_REQUEST);

            apr_brigade_destroy(bb);
            llmgw_error_for_status(status, err);
            r->connection->keepalive = AP_CONN_CLOSE;
            return status;
        }
        for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
             e = APR_BUCKET_NEXT(e)) {
            const char *data;
            apr_size_t n;

            if (APR_BUCKET_IS_EOS(e)) {
                seen_eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(e)) {
                continue;
            }
            rv = apr_bucket_read(e, &data, &n, APR_BLOCK_READ);
            if (rv != APR_SUCCESS) {
                apr_brigade_destroy(bb);
                return llmgw_error_set(err, HTTP_BAD_REQUEST,
                                       "invalid_request_error", NULL,
                                       "bad_request",
                                       "The request body could not be "
                                       "read.");
            }
            if ((apr_off_t)(len + n) > limit) {
                apr_brigade_destroy(bb);
                goto too_large;
            }
            if (len + n > cap) {
                char *nbuf;

                cap = (len + n > cap * 2) ? len + n : cap * 2;
                nbuf = apr_palloc(r->pool, cap + 1);
                memcpy(nbuf, buf, len);
                buf = nbuf;
            }
            memcpy(buf + len, data, n);
            len += n;
        }
        apr_brigade_cleanup(bb);
    }
    apr_brigade_destroy(bb);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;

too_large:
    /* Don't read the rest of a body we refuse: close after answering. */
    r->connection->keepalive = AP_CONN_CLOSE;
    return llmgw_error_set(err, HTTP_REQUEST_ENTITY_TOO_LARGE,
                           "invalid_request_error", NULL,
                           "request_too_large",
                           apr_psprintf(r->pool, "The request body is "
                                        "larger than the %" APR_OFF_T_FMT
                                        " bytes this gateway accepts.",
                                        limit));
}

/* ---------------------------------------------------------------------
 * URL mapping: API paths are not files
 */

#define LLMGW_FILENAME_PREFIX "llm-gateway:"

static int api_enabled(request_rec *r)
{
    llmgw_dir_conf_t *dconf = ap_get_module_config(r->per_dir_config,
                                                   &llm_gateway_module);

    return dconf->api == LLMGW_API_OPENAI && !r->main && !r->prev;
}

int llmgw_translate_name(request_rec *r)
{
    /* The <Location> walk has run, so LLMApi is known. Claiming the URL
     * here spares every API request the filesystem walk, as ProxyPass
     * does for proxied URLs. */
    if (!api_enabled(r)) {
        return DECLINED;
    }
    r->filename = apr_pstrcat(r->pool, LLMGW_FILENAME_PREFIX, r->uri, NULL);
    return OK;
}

int llmgw_map_to_storage(request_rec *r)
{
    return (r->filename && strncmp(r->filename, LLMGW_FILENAME_PREFIX,
                                   sizeof(LLMGW_FILENAME_PREFIX) - 1) == 0)
               ? OK : DECLINED;
}

/* ---------------------------------------------------------------------
 * The fixups hook
 */

/* The request path below the <Location> that enabled the API. */
static const char *api_path(request_rec *r, const llmgw_dir_conf_t *dconf)
{
    apr_size_t n;

    if (!dconf->prefix) {
        return r->uri;
    }
    n = strlen(dconf->prefix);
    if (n && dconf->prefix[n - 1] == '/') {
        n--;
    }
    return strncmp(r->uri, dconf->prefix, n) == 0 ? r->uri + n : r->uri;
}

static void hand_to_proxy(request_rec *r, llmgw_req_t *ctx)
{
    const char *path = llmgw_endpoint_upstream_path(ctx->ep);

    r->filename = apr_pstrcat(r->pool, "proxy:", ctx->route->balancer, path,
                              r->args ? "?" : NULL, r->args, NULL);
    r->handler = "proxy-server";
    r->proxyreq = PROXYREQ_REVERSE;

    /* mod_proxy_http must send our body with its true length, streamed
     * from the filter rather than spooled. */
    apr_table_setn(r->headers_in, "Content-Length",
                   apr_off_t_toa(r->pool, (apr_off_t)ctx->body_len));
    apr_table_unset(r->headers_in, "Transfer-Encoding");
    apr_table_unset(r->headers_in, "Expect");
    apr_table_setn(r->subprocess_env, "proxy-sendunchangedcl", "1");
    ap_add_input_filter_handle(body_filter_handle, ctx, r, r->connection);
    ap_add_output_filter_handle(out_filter_handle, ctx, r, r->connection);
}

/* After a miss: lead the generation, or follow one in flight. Returns 1
 * when we follow (the answer then comes from the leader). */
static int coalesce(request_rec *r, llmgw_req_t *ctx,
                    llmgw_server_conf_t *sconf)
{
    llmgw_co_role_t role;
    char *val;
    apr_size_t len;

    role = llmgw_coalesce_join(r, ctx->store, ctx->cache_key,
                               ctx->req.stream, sconf->coalesce_timeout,
                               &ctx->co);
    if (role == LLMGW_CO_LEADER) {
        return 0;
    }
    if (role == LLMGW_CO_FOLLOW) {
        ctx->following = 1;
        ctx->rec = NULL;
        return 1;
    }
    if (role == LLMGW_CO_DONE
        && llmgw_store_get(ctx->store, r, ctx->cache_key, &val, &len)
               == APR_SUCCESS
        && (ctx->hit = llmgw_record_parse(r->pool, val, len)) != NULL) {
        ctx->rec = NULL;
        ctx->co = NULL;
        return 1;
    }
    /* Alone, or the leader's answer was not kept (too big): ask. */
    ctx->co = NULL;
    return 0;
}

/* Looks the request up in the cache; returns 1 on a hit. Sets the
 * X-LLM-Cache header either way, and arms recording on a miss. */
static int cache_lookup(request_rec *r, llmgw_req_t *ctx,
                        llmgw_server_conf_t *sconf, const char *upstream)
{
    const char *cc = apr_table_get(r->headers_in, "Cache-Control");
    const char *state = "BYPASS";
    char *val;
    apr_size_t len;
    apr_status_t rv;

    if (!sconf->store) {
        return 0;
    }
    if (!llmgw_cache_eligible(&ctx->req, ctx->route->cache_policy)
        || (cc && ap_strcasestr(cc, "no-store"))) {
        goto done;
    }
    ctx->store = sconf->store;
    ctx->cache_key = llmgw_cache_key(r->pool, &ctx->req, upstream,
                                     ctx->route->balancer,
                                     ctx->route->dialect);
    apr_table_setn(r->err_headers_out, "X-LLM-Cache-Key", ctx->cache_key);
    /* no-cache: answer afresh, but the fresh answer may be kept. */
    rv = (cc && ap_strcasestr(cc, "no-cache"))
             ? APR_NOTFOUND
             : llmgw_store_get(ctx->store, r, ctx->cache_key, &val, &len);
    if (rv == APR_SUCCESS
        && (ctx->hit = llmgw_record_parse(r->pool, val, len)) != NULL) {
        state = "HIT";
    }
    else if (rv == APR_SUCCESS || APR_STATUS_IS_NOTFOUND(rv)) {
        state = "MISS";
        ctx->rec = llmgw_record_create(r->pool, ctx->ep,
                                       ctx->store->max_item);
        if (sconf->coalesce && !(cc && ap_strcasestr(cc, "no-cache"))
            && coalesce(r, ctx, sconf)) {
            state = "COALESCED";
        }
    }
done:
    apr_table_setn(r->err_headers_out, "X-LLM-Cache", state);
    apr_table_setn(r->notes, "llm-cache", state);
    return ctx->hit || ctx->following;
}

/* Each chunk of a stream being recorded or led: to the record, and to the
 * followers tailing this generation. */
static void on_chunk(void *baton, const char *data, apr_size_t len)
{
    llmgw_req_t *ctx = baton;

    if (ctx->rec) {
        llmgw_record_add_chunk(ctx->rec, data, len);
    }
    if (ctx->co) {
        llmgw_coalesce_put(ctx->co, data, len);
    }
}

/* Once the answer went out (the client never waits for this): store it,
 * then tell the followers, who look for it in the cache. */
static void settle(request_rec *r, llmgw_req_t *ctx)
{
    const char *text;
    apr_size_t len;

    if (!ctx->finished || ctx->settled) {
        return;
    }
    ctx->settled = 1;
    if (ctx->rec && ctx->complete) {
        text = llmgw_record_serialize(ctx->rec, &len);
        if (text) {
            llmgw_store_set(ctx->store, r, ctx->cache_key, text, len, 0);
        }
    }
    if (ctx->co) {
        llmgw_coalesce_end(ctx->co, ctx->complete);
    }
}

int llmgw_fixups(request_rec *r)
{
    llmgw_dir_conf_t *dconf = ap_get_module_config(r->per_dir_config,
                                                   &llm_gateway_module);
    llmgw_server_conf_t *sconf;
    llmgw_req_t *ctx;
    const char *method, *upstream_model;
    char *body = NULL;
    apr_size_t body_len = 0;

    if (!api_enabled(r)) {
        return DECLINED;
    }
    sconf = ap_get_module_config(r->server->module_config,
                                 &llm_gateway_module);
    ctx = apr_pcalloc(r->pool, sizeof(*ctx));
    ap_set_module_config(r->request_config, &llm_gateway_module, ctx);

    ctx->ep = llmgw_endpoint_parse(r->pool, api_path(r, dconf),
                                   &ctx->model_id);
    if (ctx->ep == LLMGW_EP_NONE) {
        llmgw_error_set(&ctx->err, HTTP_NOT_FOUND, "invalid_request_error",
                        NULL, "unknown_endpoint",
                        apr_psprintf(r->pool, "Unknown endpoint: %s %s. "
                                     "This gateway serves POST "
                                     "/v1/chat/completions, POST "
                                     "/v1/completions, POST /v1/embeddings "
                                     "and GET /v1/models.", r->method,
                                     r->uri));
        return answer_error(r, ctx);
    }
    method = llmgw_endpoint_method(ctx->ep);
    if (strcmp(r->method, method) != 0
        && !(r->method_number == M_GET && r->header_only
             && strcmp(method, "GET") == 0)) {
        llmgw_error_set(&ctx->err, HTTP_METHOD_NOT_ALLOWED,
                        "invalid_request_error", NULL, "method_not_allowed",
                        apr_psprintf(r->pool, "%s is not allowed on %s; "
                                     "use %s.", r->method, r->uri, method));
        apr_table_setn(r->err_headers_out, "Allow", method);
        return answer_error(r, ctx);
    }
    if (ctx->ep == LLMGW_EP_MODELS || ctx->ep == LLMGW_EP_MODEL) {
        r->handler = LLMGW_HANDLER;
        return OK;
    }

    if (read_body(r, llmgw_max_body(sconf), &body, &body_len, &ctx->err)
        || llmgw_request_parse(r->pool, ctx->ep, body, body_len, &ctx->req,
                               &ctx->err)) {
        return answer_error(r, ctx);
    }
    apr_table_setn(r->notes, "llm-model", ctx->req.model);
    apr_table_setn(r->notes, "llm-stream", ctx->req.stream ? "1" : "0");

    ctx->route = llmgw_router_find(sconf->router, ctx->req.model);
    if (!ctx->route) {
        llmgw_error_set(&ctx->err, HTTP_NOT_FOUND, "invalid_request_error",
                        "model", "model_not_found",
                        apr_psprintf(r->pool, "The model '%s' does not "
                                     "exist or is not served by this "
                                     "gateway. Available models: %s.",
                                     ctx->req.model,
                                     llmgw_router_names(r->pool,
                                                        sconf->router)));
        return answer_error(r, ctx);
    }
    upstream_model = ctx->route->upstream_model ? ctx->route->upstream_model
                                                : ctx->req.model;
    apr_table_setn(r->notes, "llm-route", ctx->route->name);
    apr_table_setn(r->notes, "llm-upstream-model", upstream_model);

    if (cache_lookup(r, ctx, sconf, upstream_model)) {
        r->handler = LLMGW_HANDLER;
        return OK;
    }
    ctx->body = llmgw_request_upstream_body(&ctx->req, upstream_model, body,
                                            body_len, &ctx->body_len,
                                            &ctx->strip_usage);
    hand_to_proxy(r, ctx);
    return OK;
}

/* ---------------------------------------------------------------------
 * LLMGW_BODY: serves the (rewritten) body to mod_proxy_http
 */

static apr_status_t body_filter(ap_filter_t *f, apr_bucket_brigade *bb,
                                ap_input_mode_t mode,
                                apr_read_type_e block, apr_off_t readbytes)
{
    llmgw_req_t *ctx = f->ctx;
    apr_size_t n;

    if (mode != AP_MODE_READBYTES || ctx->eos_sent) {
        return ap_get_brigade(f->next, bb, mode, block, readbytes);
    }
    n = ctx->body_len - ctx->body_sent;
    if (readbytes > 0 && (apr_off_t)n > readbytes) {
        n = (apr_size_t)readbytes;
    }
    if (n) {
        /* The body lives in r->pool for the whole request: no copy. */
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_immortal_create(
                                        ctx->body + ctx->body_sent, n,
                                        f->c->bucket_alloc));
        ctx->body_sent += n;
    }
    if (ctx->body_sent == ctx->body_len) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(
                                        f->c->bucket_alloc));
        ctx->eos_sent = 1;
    }
    return APR_SUCCESS;
}

/* ---------------------------------------------------------------------
 * LLMGW_OUT: watches the backend's answer
 */

static void set_usage_notes(request_rec *r, const llmgw_usage_t *u)
{
    if (!u->found) {
        return;
    }
    apr_table_setn(r->notes, "llm-prompt-tokens",
                   apr_off_t_toa(r->pool, u->prompt));
    apr_table_setn(r->notes, "llm-completion-tokens",
                   apr_off_t_toa(r->pool, u->completion));
    apr_table_setn(r->notes, "llm-total-tokens",
                   apr_off_t_toa(r->pool, u->total));
}

static void keep_tail(llmgw_req_t *ctx, apr_pool_t *p, const char *data,
                      apr_size_t n)
{
    if (!ctx->tail) {
        ctx->tail = apr_palloc(p, LLMGW_TAIL_SIZE);
    }
    if (n >= LLMGW_TAIL_SIZE) {
        memcpy(ctx->tail, data + n - LLMGW_TAIL_SIZE, LLMGW_TAIL_SIZE);
        ctx->tail_len = LLMGW_TAIL_SIZE;
        return;
    }
    if (ctx->tail_len + n > LLMGW_TAIL_SIZE) {
        apr_size_t drop = ctx->tail_len + n - LLMGW_TAIL_SIZE;

        memmove(ctx->tail, ctx->tail + drop, ctx->tail_len - drop);
        ctx->tail_len -= drop;
    }
    memcpy(ctx->tail + ctx->tail_len, data, n);
    ctx->tail_len += n;
}

static apr_status_t keep_bucket(llmgw_req_t *ctx, apr_pool_t *p,
                                apr_bucket *e)
{
    const char *data;
    apr_size_t n;
    apr_status_t rv = apr_bucket_read(e, &data, &n, APR_BLOCK_READ);

    if (rv == APR_SUCCESS) {
        keep_tail(ctx, p, data, n);
    }
    return rv;
}

static void decide_mode(request_rec *r, llmgw_req_t *ctx)
{
    if (r->status != HTTP_OK) {
        ctx->rec = NULL;            /* only good answers are cached */
    }
    if (r->status >= 400) {
        ctx->out = OUT_PASS;
    }
    else if (r->content_type
             && strncasecmp(r->content_type, "text/event-stream", 17) == 0) {
        ctx->out = OUT_SSE;
        ctx->sse = llmgw_sse_create(r->pool, ctx->strip_usage);
        if (ctx->rec || ctx->co) {
            ctx->sse->on_data = on_chunk;
            ctx->sse->baton = ctx;
        }
        /* Compression would hold tokens back until a block fills. */
        apr_table_setn(r->subprocess_env, "no-gzip", "1");
    }
    else {
        ctx->out = OUT_JSON;
    }
}

/* Ends a stream: a clean end passes on what is left; a broken one gets
 * an error tail instead of the cut-off event. */
static void finish_sse(request_rec *r, llmgw_req_t *ctx,
                       apr_bucket_brigade *out, const char *why)
{
    llmgw_error_t err;
    const char *tail;
    apr_size_t n;

    /* Once: a broken backend sends an error bucket, then EOS. */
    if (ctx->stream_ended) {
        return;
    }
    ctx->stream_ended = 1;
    if (ctx->sse->done && !why) {
        set_usage_notes(r, &ctx->sse->usage);
        ctx->complete = 1;
        return;
    }
    llmgw_error_set(&err, HTTP_BAD_GATEWAY, "server_error", NULL,
                    "upstream_stream_error",
                    apr_psprintf(r->pool, "The backend stream failed "
                                 "before it completed: %s.",
                                 why ? why : "it ended without [DONE]"));
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, LLMGW_LOGNO(0101)
                  "stream for model %s via %s broke after %d events: %s",
                  ctx->req.model, ctx->route->balancer, ctx->sse->events,
                  err.message);
    tail = llmgw_sse_error_tail(ctx->sse, r->pool, ctx->ep, &err, &n);
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_immortal_create(
                                     tail, n, out->bucket_alloc));
    apr_table_setn(r->notes, "llm-error", "upstream_stream_error");
    set_usage_notes(r, &ctx->sse->usage);
}

/* Copies a plain answer being recorded; 0 when it outgrows the store. */
static int copy_answer(llmgw_req_t *ctx, apr_pool_t *p, const char *data,
                       apr_size_t n)
{
    apr_size_t max = ctx->store->max_item;

    if (ctx->copy_len + n > max) {
        return 0;
    }
    if (!ctx->copy) {
        ctx->copy = apr_palloc(p, max);
    }
    memcpy(ctx->copy + ctx->copy_len, data, n);
    ctx->copy_len += n;
    return 1;
}

/* A plain JSON answer passes untouched; we read its usage at the end. Every
 * data bucket but the last goes to the tail at once; a small answer comes
 * whole with its EOS, and then usage is read from its one bucket with no
 * copy at all. An answer being recorded is copied whole instead. */
static apr_status_t watch_json(request_rec *r, llmgw_req_t *ctx,
                               apr_bucket_brigade *bb)
{
    apr_bucket *e, *last = NULL;
    const char *data;
    apr_size_t n;
    apr_status_t rv;
    llmgw_usage_t u = { 0 };

    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        if (APR_BUCKET_IS_EOS(e)) {
            ctx->finished = 1;
            break;
        }
        if (APR_BUCKET_IS_METADATA(e)) {
            continue;
        }
        if (ctx->rec) {
            if ((rv = apr_bucket_read(e, &data, &n, APR_BLOCK_READ))) {
                return rv;
            }
            if (!copy_answer(ctx, r->pool, data, n)) {
                /* Too big to cache: carry on as for any answer. */
                keep_tail(ctx, r->pool, ctx->copy, ctx->copy_len);
                keep_tail(ctx, r->pool, data, n);
                ctx->rec = NULL;
            }
            continue;
        }
        if (last && (rv = keep_bucket(ctx, r->pool, last))) {
            return rv;
        }
        last = e;
    }
    if (ctx->rec) {
        if (ctx->finished) {
            llmgw_usage_find(r->pool, ctx->copy, ctx->copy_len, &u);
            llmgw_record_set_response(ctx->rec, ctx->copy, ctx->copy_len);
            ctx->complete = 1;
        }
    }
    else if (ctx->finished && last && !ctx->tail_len) {
        if (apr_bucket_read(last, &data, &n, APR_BLOCK_READ)
            == APR_SUCCESS) {
            llmgw_usage_find(r->pool, data, n, &u);
        }
    }
    else {
        if (last && (rv = keep_bucket(ctx, r->pool, last))) {
            return rv;
        }
        if (ctx->finished) {
            llmgw_usage_find(r->pool, ctx->tail, ctx->tail_len, &u);
        }
    }
    set_usage_notes(r, &u);
    return APR_SUCCESS;
}

static apr_status_t out_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    llmgw_req_t *ctx = f->ctx;
    apr_bucket *e, *next;
    apr_status_t rv;

    if (ctx->finished) {
        return ap_pass_brigade(f->next, bb);
    }
    if (ctx->out == OUT_UNDECIDED) {
        decide_mode(r, ctx);
    }
    if (ctx->out == OUT_PASS) {
        ap_remove_output_filter(f);
        return ap_pass_brigade(f->next, bb);
    }
    if (ctx->out == OUT_JSON) {
        if ((rv = watch_json(r, ctx, bb)) != APR_SUCCESS) {
            return rv;
        }
        rv = ap_pass_brigade(f->next, bb);
        settle(r, ctx);
        return rv;
    }

    /* OUT_SSE: forward complete events, hold partial ones back. */
    if (!ctx->bb) {
        ctx->bb = apr_brigade_create(r->pool, f->c->bucket_alloc);
    }
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = next) {
        next = APR_BUCKET_NEXT(e);
        if (APR_BUCKET_IS_EOS(e)) {
            finish_sse(r, ctx, ctx->bb, NULL);
            ctx->finished = 1;
            APR_BUCKET_REMOVE(e);
            APR_BRIGADE_INSERT_TAIL(ctx->bb, e);
            break;
        }
        if (AP_BUCKET_IS_ERROR(e)) {
            /* mod_proxy's "backend broke": end the stream well-formed. */
            finish_sse(r, ctx, ctx->bb, "the connection to the backend "
                       "failed");
            apr_bucket_delete(e);
            continue;
        }
        if (APR_BUCKET_IS_METADATA(e)) {
            APR_BUCKET_REMOVE(e);
            APR_BRIGADE_INSERT_TAIL(ctx->bb, e);
            continue;
        }
        if (ctx->stream_ended) {
            apr_bucket_delete(e);   /* nothing may follow the end */
            continue;
        }
        {
            const char *data, *ready;
            apr_size_t n, nready;
            int had_output = ctx->sse->content_events;

            rv = apr_bucket_read(e, &data, &n, APR_BLOCK_READ);
            if (rv != APR_SUCCESS) {
                return rv;
            }
            nready = llmgw_sse_feed(ctx->sse, data, n, &ready);
            if (nready) {
                APR_BRIGADE_INSERT_TAIL(ctx->bb, apr_bucket_heap_create(
                    ready, nready, NULL, f->c->bucket_alloc));
            }
            if (!had_output && ctx->sse->content_events) {
                apr_table_setn(r->notes, "llm-ttft-ms",
                               apr_off_t_toa(r->pool, apr_time_as_msec(
                                   apr_time_now() - r->request_time)));
            }
            apr_bucket_delete(e);
        }
    }
    rv = ap_pass_brigade(f->next, ctx->bb);
    apr_brigade_cleanup(ctx->bb);
    apr_brigade_cleanup(bb);
    settle(r, ctx);
    return rv;
}

/* ---------------------------------------------------------------------
 * Errors httpd or mod_proxy produce (502/503/504...) in the OpenAI shape
 */

static apr_status_t error_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    llmgw_error_t err;
    const char *json;
    apr_bucket *e;

    if (!f->ctx) {
        /* First call: the status is final; replace the HTML page. */
        f->ctx = f;
        if (r->status == HTTP_BAD_GATEWAY
            && apr_table_get(r->notes, "proxy_timedout")) {
            /* mod_proxy_http reports a read timeout as 502. */
            r->status = HTTP_GATEWAY_TIME_OUT;
            r->status_line = NULL;
        }
        llmgw_error_for_status(r->status, &err);
        json = llmgw_error_json(r->pool, &err);
        ap_set_content_type(r, "application/json");
        apr_table_unset(r->headers_out, "Content-Length");
        apr_table_setn(r->notes, "llm-error",
                       err.code ? err.code : err.type);
        e = apr_bucket_pool_create(json, strlen(json), r->pool,
                                   f->c->bucket_alloc);
        for (;;) {
            apr_bucket *b = APR_BRIGADE_FIRST(bb);

            if (b == APR_BRIGADE_SENTINEL(bb) || APR_BUCKET_IS_EOS(b)) {
                break;
            }
            apr_bucket_delete(b);
        }
        APR_BRIGADE_INSERT_HEAD(bb, e);
        return ap_pass_brigade(f->next, bb);
    }
    /* Later calls: drop the rest of the page, keep EOS and metadata. */
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);) {
        apr_bucket *next = APR_BUCKET_NEXT(e);

        if (!APR_BUCKET_IS_METADATA(e)) {
            apr_bucket_delete(e);
        }
        e = next;
    }
    return ap_pass_brigade(f->next, bb);
}

void llmgw_insert_error_filter(request_rec *r)
{
    if (req_ctx(r) && r->status != HTTP_OK) {
        ap_add_output_filter_handle(error_filter_handle, NULL, r,
                                    r->connection);
    }
}

/* ---------------------------------------------------------------------
 * The handler: /v1/models and the errors decided in fixups
 */

static void send_json(request_rec *r, int status, const char *json,
                      apr_size_t len)
{
    r->status = status;
    ap_set_content_type(r, "application/json");
    ap_set_content_length(r, (apr_off_t)len);
    if (!r->header_only) {
        ap_rwrite(json, (int)len, r);
    }
}

static void add_model(llmgw_json_t *list, const char *id,
                      apr_int64_t created)
{
    llmgw_json_t *m = llmgw_json_array_add_object(list);

    llmgw_json_sets(m, id, "id", NULL);
    llmgw_json_sets(m, "model", "object", NULL);
    llmgw_json_setl(m, created, "created", NULL);
    llmgw_json_sets(m, "llm-gateway", "owned_by", NULL);
}

static int answer_models(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_server_conf_t *sconf = ap_get_module_config(r->server->module_config,
                                                      &llm_gateway_module);
    apr_int64_t created = sconf->router->created;
    llmgw_json_t *doc = llmgw_json_create_object(r->pool);
    const char *json;
    apr_size_t len;
    int i;

    if (ctx->ep == LLMGW_EP_MODEL) {
        llmgw_json_t *tmp;

        if (!llmgw_router_find(sconf->router, ctx->model_id)) {
            llmgw_error_set(&ctx->err, HTTP_NOT_FOUND,
                            "invalid_request_error", "model",
                            "model_not_found",
                            apr_psprintf(r->pool, "The model '%s' does not "
                                         "exist or is not served by this "
                                         "gateway.", ctx->model_id));
            apr_table_setn(r->notes, "llm-error", "model_not_found");
            json = llmgw_error_json(r->pool, &ctx->err);
            send_json(r, ctx->err.status, json, strlen(json));
            return OK;
        }
        tmp = llmgw_json_add_array(doc, "data");
        add_model(tmp, ctx->model_id, created);
        doc = llmgw_json_array_get(tmp, 0);
    }
    else {
        llmgw_json_t *data;

        llmgw_json_sets(doc, "list", "object", NULL);
        data = llmgw_json_add_array(doc, "data");
        for (i = 0; i < sconf->router->listed->nelts; i++) {
            add_model(data, APR_ARRAY_IDX(sconf->router->listed, i,
                                          const char *), created);
        }
    }
    json = llmgw_json_write(doc, &len);
    send_json(r, HTTP_OK, json, len);
    return OK;
}

/* Usage of an answer served from the cache or a shared generation: the
 * original tokens, billed in full or not at all (LLMCacheBilling). */
static void bill_cached(request_rec *r, const llmgw_usage_t *u)
{
    llmgw_server_conf_t *sconf = ap_get_module_config(r->server->module_config,
                                                      &llm_gateway_module);
    llmgw_usage_t none = { 0, 0, 0, 1 };

    if (!u->found) {
        return;
    }
    apr_table_setn(r->notes, "llm-cached-tokens",
                   apr_off_t_toa(r->pool, u->total));
    set_usage_notes(r, sconf->cache_billing_free ? &none : u);
}

/* A cache hit, in the shape the client asked for: a stream is replayed
 * chunk by chunk (the usage chunk only when asked), else one JSON body. */
static int answer_hit(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_usage_t u;
    const char *text;
    apr_size_t len;

    llmgw_record_usage(ctx->hit, &u);
    bill_cached(r, &u);
    if (!ctx->req.stream) {
        text = llmgw_record_render_json(ctx->hit, &len);
        send_json(r, HTTP_OK, text, len);
        return OK;
    }
    text = llmgw_record_render_sse(ctx->hit, r->pool, ctx->req.wants_usage,
                                   &len);
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    ap_set_content_type(r, "text/event-stream");
    ap_rwrite(text, (int)len, r);
    return OK;
}

/* A stream follower: the leader's chunks as they come, framed for this
 * client (its own usage choice), ending well-formed whatever happens. */
static int answer_follower(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_sse_t *sse = llmgw_sse_create(r->pool, !ctx->req.wants_usage);
    llmgw_error_t err;
    apr_status_t rv;
    const char *out;
    char *data;
    apr_size_t len, n;

    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    ap_set_content_type(r, "text/event-stream");
    while ((rv = llmgw_coalesce_next(ctx->co, &data, &len)) == APR_SUCCESS) {
        const char *ev = apr_pstrcat(r->pool, "data: ",
                                     apr_pstrmemdup(r->pool, data, len),
                                     "\n\n", NULL);
        int had_output = sse->content_events;

        n = llmgw_sse_feed(sse, ev, strlen(ev), &out);
        if (!had_output && sse->content_events) {
            apr_table_setn(r->notes, "llm-ttft-ms",
                           apr_off_t_toa(r->pool, apr_time_as_msec(
                               apr_time_now() - r->request_time)));
        }
        if (n && (ap_rwrite(out, (int)n, r) < 0 || ap_rflush(r) < 0)) {
            return OK;          /* the client left */
        }
    }
    bill_cached(r, &sse->usage);
    if (rv == APR_EOF) {
        ap_rputs("data: [DONE]\n\n", r);
        return OK;
    }
    llmgw_error_set(&err, HTTP_BAD_GATEWAY, "server_error", NULL,
                    rv == APR_TIMEUP ? "upstream_timeout"
                                     : "upstream_stream_error",
                    rv == APR_TIMEUP ? "The shared generation made no "
                                       "progress in time."
                                     : "The shared generation failed "
                                       "before it completed.");
    apr_table_setn(r->notes, "llm-error", err.code);
    out = llmgw_sse_error_tail(sse, r->pool, ctx->ep, &err, &n);
    ap_rwrite(out, (int)n, r);
    return OK;
}

int llmgw_handler(request_rec *r)
{
    llmgw_req_t *ctx;
    const char *json;

    if (!r->handler || strcmp(r->handler, LLMGW_HANDLER) != 0) {
        return DECLINED;
    }
    ctx = req_ctx(r);
    if (!ctx) {
        /* SetHandler llm-gateway without LLMApi: nothing to serve. */
        return HTTP_NOT_FOUND;
    }
    if (ap_discard_request_body(r) != OK) {
        r->connection->keepalive = AP_CONN_CLOSE;
    }
    if (ctx->hit) {
        return answer_hit(r, ctx);
    }
    if (ctx->following) {
        return answer_follower(r, ctx);
    }
    if (!ctx->err.status) {
        return answer_models(r, ctx);
    }
    json = llmgw_error_json(r->pool, &ctx->err);
    send_json(r, ctx->err.status, json, strlen(json));
    return OK;
}

void llmgw_proxy_register_filters(void)
{
    body_filter_handle = ap_register_input_filter("LLMGW_BODY", body_filter,
                                                  NULL, AP_FTYPE_RESOURCE);
    out_filter_handle = ap_register_output_filter("LLMGW_OUT", out_filter,
                                                  NULL, AP_FTYPE_RESOURCE);
    error_filter_handle = ap_register_output_filter("LLMGW_ERROR",
                                                    error_filter, NULL,
                                                    AP_FTYPE_RESOURCE);
}
