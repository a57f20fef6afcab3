/* mod_llmgw_proxy: httpd glue for one API request. The fixups hook reads
 * and checks the body, routes it, consults the cache and the requests in
 * flight, then hands it to mod_proxy as [P] would. */
#include <stddef.h> /* before APR: offsetof for its ring macros */
#include <string.h>

#include <httpd.h>
#include <apr_strings.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>

#include "mod_llmgw.h"
#include "mod_llmgw_limits.h"
#include "mod_llmgw_failover.h"
#include "mod_llmgw_output.h"
#include "mod_llmgw_proxy.h"

APLOG_USE_MODULE(llm_gateway);

#define LLMGW_FILENAME_PREFIX "llm-gateway:"

static ap_filter_rec_t *body_filter_handle;

/* Our own answer for r: decided here, written by the handler. */
static int answer_error(request_rec *r, llmgw_req_t *ctx)
{
    r->handler = LLMGW_HANDLER;
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
    llmgw_pbuf_t buf = { NULL, 0, 0 };
    int seen_eos = 0;

    if (cl && (!ap_parse_strict_length(&declared, cl))) {
        return llmgw_error_set(err, HTTP_BAD_REQUEST, "invalid_request_error",
                               NULL, "bad_request", "Invalid Content-Length.");
    }
    if (declared > limit) {
        goto too_large;
    }
    /* Its whole length at once when it is known: no copy as it comes. */
    llmgw_pbuf_reserve(r->pool, &buf,
                       declared >= 0 ? (apr_size_t)declared : 16384);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    while (!seen_eos) {
        apr_bucket *e;
        apr_status_t rv =
            ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                           APR_BLOCK_READ, HUGE_STRING_LEN * 8);
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
            if ((apr_off_t)(buf.len + n) > limit) {
                apr_brigade_destroy(bb);
                goto too_large;
            }
            llmgw_pbuf_add(r->pool, &buf, data, n);
        }
        apr_brigade_cleanup(bb);
    }
    apr_brigade_destroy(bb);
    llmgw_pbuf_reserve(r->pool, &buf, buf.len);
    buf.b[buf.len] = '\0';
    *out = buf.b;
    *outlen = buf.len;
    return 0;

too_large:
    /* Don't read the rest of a body we refuse: close after answering. */
    r->connection->keepalive = AP_CONN_CLOSE;
    return llmgw_error_set(err, HTTP_REQUEST_ENTITY_TOO_LARGE,
                           "invalid_request_error", NULL, "request_too_large",
                           apr_psprintf(r->pool,
                                        "The request body is "
                                        "larger than the %" APR_OFF_T_FMT
                                        " bytes this gateway accepts.",
                                        limit));
}

/* ---------------------------------------------------------------------
 * URL mapping: API paths are not files
 */

static int api_enabled(request_rec *r)
{
    return llmgw_dconf(r)->api > LLMGW_API_OFF && !r->main && !r->prev;
}

static int translate_name(request_rec *r)
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

static int map_to_storage(request_rec *r)
{
    return (r->filename
            && strncmp(r->filename, LLMGW_FILENAME_PREFIX,
                       sizeof(LLMGW_FILENAME_PREFIX) - 1)
                   == 0)
               ? OK
               : DECLINED;
}

/* ---------------------------------------------------------------------
 * Which endpoint, by API
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

static int wrong_method(request_rec *r, llmgw_req_t *ctx, const char *method)
{
    if (strcmp(r->method, method) == 0
        || (r->method_number == M_GET && r->header_only
            && strcmp(method, "GET") == 0)) {
        return 0;
    }
    llmgw_error_set(&ctx->err, HTTP_METHOD_NOT_ALLOWED,
                    "invalid_request_error", NULL, "method_not_allowed",
                    apr_psprintf(r->pool, "%s is not allowed on %s; use %s.",
                                 r->method, r->uri, method));
    apr_table_setn(r->err_headers_out, "Allow", method);
    return 1;
}

static void unknown_endpoint(request_rec *r, llmgw_req_t *ctx,
                             const char *served)
{
    llmgw_error_set(&ctx->err, HTTP_NOT_FOUND, "invalid_request_error", NULL,
                    "unknown_endpoint",
                    apr_psprintf(r->pool,
                                 "Unknown endpoint: %s %s. This "
                                 "gateway serves %s.",
                                 r->method, r->uri, served));
}

/* OpenAI: returns 1 when the request is answered without a backend (or
 * refused), 0 for a generation request. */
static int classify_openai(request_rec *r, llmgw_req_t *ctx, const char *path)
{
    ctx->ep = llmgw_endpoint_parse(r->pool, path, &ctx->model_id);
    if (ctx->ep == LLMGW_EP_NONE) {
        unknown_endpoint(r, ctx,
                         "POST /v1/chat/completions, POST "
                         "/v1/completions, POST /v1/embeddings and GET "
                         "/v1/models");
        return 1;
    }
    if (wrong_method(r, ctx, llmgw_endpoint_method(ctx->ep))) {
        return 1;
    }
    return ctx->ep == LLMGW_EP_MODELS || ctx->ep == LLMGW_EP_MODEL;
}

/* Ollama's native API, below its <Location> with or without "/api". */
static int classify_ollama(request_rec *r, llmgw_req_t *ctx, const char *path)
{
    static const struct {
        const char *path;
        const char *method;
        llmgw_ollama_info_t info;
    } infos[] = { { "/tags", "GET", OLLAMA_INFO_TAGS },
                  { "/ps", "GET", OLLAMA_INFO_PS },
                  { "/show", "POST", OLLAMA_INFO_SHOW },
                  { "/version", "GET", OLLAMA_INFO_VERSION },
                  { NULL, NULL, OLLAMA_INFO_NONE } };
    static const char *const model_files[] = { "/pull", "/push",   "/create",
                                               "/copy", "/delete", "/blobs/",
                                               NULL };
    int i;

    /* The ollama CLI asks the root first (HEAD /, then GET /). */
    if (!*path || strcmp(path, "/") == 0) {
        ctx->info = OLLAMA_INFO_ROOT;
        wrong_method(r, ctx, "GET");
        return 1;
    }
    if (strncmp(path, "/api/", 5) == 0) {
        path += 4;
    }
    for (i = 0; model_files[i]; i++) {
        if (strncmp(path, model_files[i], strlen(model_files[i])) == 0
            && (path[strlen(model_files[i])] == '\0'
                || model_files[i][strlen(model_files[i]) - 1] == '/')) {
            ctx->info = OLLAMA_INFO_MODEL_FILES;
            llmgw_error_set(&ctx->err, HTTP_NOT_IMPLEMENTED, "server_error",
                            NULL, "not_implemented",
                            apr_psprintf(r->pool,
                                         "%s is not served: this gateway "
                                         "does not manage model files; "
                                         "pull, create, copy, push or "
                                         "delete models on the backend "
                                         "servers themselves",
                                         r->uri));
            return 1;
        }
    }
    ctx->oep = llmgw_ollama_endpoint_parse(path);
    if (ctx->oep != LLMGW_OLLAMA_EP_NONE) {
        ctx->ep = llmgw_ollama_openai_endpoint(ctx->oep);
        return wrong_method(r, ctx, "POST");
    }
    for (i = 0; infos[i].path; i++) {
        if (strcmp(path, infos[i].path) == 0) {
            ctx->info = infos[i].info;
            wrong_method(r, ctx, infos[i].method);
            return 1;
        }
    }
    unknown_endpoint(r, ctx,
                     "POST /api/chat, /api/generate, /api/embed, "
                     "/api/embeddings, /api/show and GET /api/tags, "
                     "/api/ps, /api/version");
    return 1;
}

/* ---------------------------------------------------------------------
 * Cache and requests in flight
 */

/* The look-up of a request that may coalesce: the cached answer, or lead
 * the generation, or follow one in flight. Returns the X-LLM-Cache state;
 * a hit or a follower is answered without the backend. */
static const char *coalesce(request_rec *r, llmgw_req_t *ctx,
                            llmgw_server_conf_t *sconf)
{
    llmgw_co_role_t role;
    char *val;
    apr_size_t len;

    role = llmgw_coalesce_join(r->pool, ctx->store, ctx->cache_key,
                               ctx->req.stream, llmgw_coalesce_timeout(sconf),
                               &ctx->co, &val, &len);
    if (role == LLMGW_CO_LEADER) {
        return "MISS";
    }
    if (role == LLMGW_CO_FOLLOW) {
        ctx->following = 1; /* ctx->co tails the leader's pieces */
        return "COALESCED";
    }
    ctx->co = NULL;
    if (role == LLMGW_CO_NO_STORE) {
        return "BYPASS";
    }
    if ((role == LLMGW_CO_CACHED || role == LLMGW_CO_DONE)
        && (ctx->hit = llmgw_record_parse(r->pool, val, len, ctx->req.stream))
               != NULL) {
        return role == LLMGW_CO_CACHED ? "HIT" : "COALESCED";
    }
    /* Alone, or an answer not kept (too big) or not readable: ask. */
    return "MISS";
}

/* The request's cache key. An Ollama request that an Ollama backend gets
 * as it came, with members its OpenAI view leaves out (num_ctx, raw...),
 * is keyed by all of its body (in a dialect of its own, so that no
 * OpenAI body can share the key); any other is keyed by its OpenAI view,
 * which both APIs share. */
static const char *cache_key(request_rec *r, llmgw_req_t *ctx,
                             const char *upstream)
{
    llmgw_request_t whole;

    if (ctx->native && ctx->ox.beyond) {
        whole = ctx->req;
        whole.body = ctx->ox.view;
        return llmgw_cache_key(r->pool, &whole, upstream, ctx->route->balancer,
                               "ollama-native");
    }
    return llmgw_cache_key(r->pool, &ctx->req, upstream, ctx->route->balancer,
                           ctx->route->dialect);
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
    int fresh;

    if (!llmgw_conf_store(sconf)) {
        return 0;
    }
    /* LLMGW_ENV_NO_CACHE: the admin's per-client opt-out, e.g. by API key with
     * SetEnvIf Authorization. */
    if (!llmgw_cache_eligible(&ctx->req, ctx->route->cache_policy)
        || (cc && ap_strcasestr(cc, "no-store"))
        || apr_table_get(r->subprocess_env, LLMGW_ENV_NO_CACHE)) {
        goto done;
    }
    ctx->store = llmgw_conf_store(sconf);
    ctx->cache_key = cache_key(r, ctx, upstream);
    apr_table_setn(r->err_headers_out, "X-LLM-Cache-Key", ctx->cache_key);
    /* no-cache: answer afresh, but the fresh answer may be kept. */
    fresh = cc && ap_strcasestr(cc, "no-cache");
    if (llmgw_coalesce_on(sconf) && !fresh) {
        state = coalesce(r, ctx, sconf);
    }
    else {
        rv = fresh ? APR_NOTFOUND
                   : llmgw_store_get(ctx->store, r->pool, ctx->cache_key, &val,
                                     &len);
        if (rv == APR_SUCCESS
            && (ctx->hit =
                    llmgw_record_parse(r->pool, val, len, ctx->req.stream))
                   != NULL) {
            state = "HIT";
        }
        else if (rv == APR_SUCCESS || APR_STATUS_IS_NOTFOUND(rv)) {
            state = "MISS";
        }
    }
    if (!ctx->hit && !ctx->following && strcmp(state, "MISS") == 0) {
        ctx->rec = llmgw_record_create(r->pool, ctx->ep, ctx->store->max_item);
    }
done:
    apr_table_setn(r->err_headers_out, "X-LLM-Cache", state);
    apr_table_setn(r->notes, LLMGW_NOTE_CACHE, state);
    return ctx->hit || ctx->following;
}

/* ---------------------------------------------------------------------
 * The fixups hook
 */

void llmgw_proxy_target(request_rec *r, llmgw_req_t *ctx, const char *path)
{
    r->filename =
        apr_pstrcat(r->pool, "proxy:", ctx->route->balancer, path, NULL);
}

/* watch: the answer goes through LLMGW_OUT (a generation); else it passes
 * as the backend gave it. */
static void hand_to_proxy(request_rec *r, llmgw_req_t *ctx, const char *path,
                          int watch)
{
    llmgw_proxy_target(r, ctx, path);
    r->handler = "proxy-server";
    r->proxyreq = PROXYREQ_REVERSE;

    /* mod_proxy_http must send our body with its true length, streamed
     * from the filter rather than spooled. */
    apr_table_setn(r->headers_in, "Content-Length",
                   apr_off_t_toa(r->pool, (apr_off_t)ctx->body_len));
    /* What goes upstream is JSON whatever the client labelled it (a curl
     * -d without -H says form data, which FastAPI servers do not read). */
    apr_table_setn(r->headers_in, "Content-Type", "application/json");
    apr_table_unset(r->headers_in, "Transfer-Encoding");
    apr_table_unset(r->headers_in, "Expect");
    /* The gateway reads every answer (usage, the cache, errors): the
     * backend must not compress it. The client's Accept-Encoding is for
     * httpd's own output filters. */
    apr_table_unset(r->headers_in, "Accept-Encoding");
    apr_table_setn(r->subprocess_env, "proxy-sendunchangedcl", "1");
    ap_add_input_filter_handle(body_filter_handle, ctx, r, r->connection);
    if (watch) {
        llmgw_output_add(r, ctx);
        llmgw_failover_arm(r, ctx, path);
    }
}

/* The client's body as an OpenAI request, whatever the client's API. */
static int parse_request(request_rec *r, llmgw_req_t *ctx, const char *body,
                         apr_size_t len, const char **openai, apr_size_t *olen)
{
    if (ctx->api == LLMGW_API_OLLAMA) {
        return llmgw_ollama_front_parse(r->pool, ctx->oep, body, len,
                                        &ctx->req, openai, olen, &ctx->ox,
                                        &ctx->err);
    }
    *openai = body;
    *olen = len;
    return llmgw_request_parse(r->pool, ctx->ep, body, len, &ctx->req,
                               &ctx->err);
}

/* POST /api/show names its model in the body. */
static int parse_show(request_rec *r, llmgw_req_t *ctx, const char *body,
                      apr_size_t len)
{
    llmgw_json_err_t jerr;
    const char *msg;
    llmgw_json_t *j = llmgw_json_read(r->pool, body, len, &jerr, &msg);

    ctx->ox.view = j;
    ctx->model_id = j ? llmgw_json_gets(j, "model", NULL) : NULL;
    if (j && !ctx->model_id) {
        ctx->model_id = llmgw_json_gets(j, "name", NULL);
    }
    if (!ctx->model_id) {
        return llmgw_error_set(
            &ctx->err, HTTP_BAD_REQUEST, "invalid_request_error", "model",
            "missing_required_parameter", j ? "model is required" : msg);
    }
    return 0;
}

/* /api/show of a model an Ollama backend serves: its own card (details,
 * parameters, template, capabilities), asked with the upstream name and
 * passed on as it comes. Any other model's card is the handler's. */
static int show_from_backend(request_rec *r, llmgw_req_t *ctx,
                             llmgw_server_conf_t *sconf)
{
    const char *key[1];
    const char *val[1];

    ctx->route = llmgw_router_find(llmgw_routes(r), ctx->model_id);
    if (!ctx->route || strcmp(ctx->route->dialect, "ollama") != 0
        || !llmgw_key_allows(ctx->key, ctx->model_id)) {
        return OK; /* the handler's: a model the key may not use is not
                    * found, as in the model lists */
    }
    ctx->upstream_model = ctx->route->upstream_model
                              ? ctx->route->upstream_model
                              : ctx->model_id;
    key[0] = llmgw_json_gets(ctx->ox.view, "model", NULL) ? "model" : "name";
    val[0] = llmgw_json_quote(r->pool, ctx->upstream_model);
    ctx->body = llmgw_json_edit(ctx->ox.view, key, val, 1, &ctx->body_len);
    if (!ctx->body) {
        return OK;
    }
    apr_table_setn(r->notes, LLMGW_NOTE_MODEL, ctx->model_id);
    apr_table_setn(r->notes, LLMGW_NOTE_ROUTE, ctx->route->name);
    apr_table_setn(r->notes, LLMGW_NOTE_UPSTREAM_MODEL, ctx->upstream_model);
    hand_to_proxy(r, ctx, "/api/show", 0);
    return OK;
}

/* The body the route's backend gets, and the path it goes to. */
static int upstream_request(request_rec *r, llmgw_req_t *ctx,
                            const char *upstream_model, const char *openai,
                            apr_size_t olen, const char **path)
{
    if (ctx->native) {
        /* The client's own body: every field reaches Ollama. */
        *path = llmgw_ollama_native_path(ctx->oep);
        ctx->body = llmgw_ollama_native_body(r->pool, ctx->ox.view,
                                             upstream_model, &ctx->body_len);
        if (!ctx->body) {
            return llmgw_error_set(&ctx->err, HTTP_INTERNAL_SERVER_ERROR,
                                   "server_error", NULL, "internal_error",
                                   "The gateway could not prepare the "
                                   "request for the backend.");
        }
        return 0;
    }
    if (ctx->backend_ollama) {
        ctx->strip_usage = ctx->req.stream && !ctx->req.wants_usage;
        return llmgw_ollama_request(r->pool, &ctx->req, upstream_model, path,
                                    &ctx->body, &ctx->body_len, &ctx->err);
    }
    *path = llmgw_endpoint_upstream_path(ctx->ep);
    ctx->body =
        llmgw_request_upstream_body(&ctx->req, upstream_model, openai, olen,
                                    &ctx->body_len, &ctx->strip_usage);
    if (!ctx->body) {
        return llmgw_error_set(&ctx->err, HTTP_INTERNAL_SERVER_ERROR,
                               "server_error", NULL, "internal_error",
                               "The gateway could not prepare the request "
                               "for the backend.");
    }
    return 0;
}

/* The route's names for the answer: the model the backend is asked
 * for, the notes, the client's shape of the answer. */
static void use_route(request_rec *r, llmgw_req_t *ctx,
                      const llmgw_route_t *route)
{
    ctx->route = route;
    ctx->backend_ollama = strcmp(route->dialect, "ollama") == 0;
    /* The legacy /api/embeddings goes the translated way: its answer has
     * no OpenAI reading of its own. */
    ctx->native = ctx->backend_ollama && ctx->api == LLMGW_API_OLLAMA
                  && ctx->oep != LLMGW_OLLAMA_EP_EMBEDDINGS;
    ctx->upstream_model =
        route->upstream_model ? route->upstream_model : ctx->req.model;
    apr_table_setn(r->notes, LLMGW_NOTE_ROUTE, route->name);
    apr_table_setn(r->notes, LLMGW_NOTE_UPSTREAM_MODEL, ctx->upstream_model);
    /* Answers name the model that made them, whichever API asks. */
    ctx->front = llmgw_front_create(r->pool, ctx->oep, ctx->ep,
                                    ctx->upstream_model, r->request_time);
}

int llmgw_proxy_reroute(request_rec *r, llmgw_req_t *ctx,
                        const llmgw_route_t *route, const char **path)
{
    use_route(r, ctx, route);
    ctx->body_sent = 0;
    ctx->eos_sent = 0;
    if (llmgw_limits_reroute(r, ctx)) {
        return -1;
    }
    return upstream_request(r, ctx, ctx->upstream_model, ctx->openai,
                            ctx->openai_len, path);
}

static int fixups(request_rec *r)
{
    llmgw_dir_conf_t *dconf = llmgw_dconf(r);
    llmgw_server_conf_t *sconf;
    llmgw_req_t *ctx;
    const char *openai, *path;
    char *body = NULL;
    apr_size_t body_len = 0, olen = 0;
    int answered;

    if (!api_enabled(r)) {
        return DECLINED;
    }
    sconf = llmgw_sconf(r->server);
    ctx = llmgw_req_make(r, dconf->api);
    if (llmgw_limits_auth(r, ctx)) {
        return answer_error(r, ctx);
    }
    answered = ctx->api == LLMGW_API_OLLAMA
                   ? classify_ollama(r, ctx, api_path(r, dconf))
                   : classify_openai(r, ctx, api_path(r, dconf));
    if (ctx->err.status) {
        return answer_error(r, ctx);
    }
    if (answered && ctx->info != OLLAMA_INFO_SHOW) {
        r->handler = LLMGW_HANDLER;
        return OK;
    }

    if (read_body(r, llmgw_max_body(sconf), &body, &body_len, &ctx->err)) {
        return answer_error(r, ctx);
    }
    if (answered) {
        r->handler = LLMGW_HANDLER;
        return parse_show(r, ctx, body, body_len)
                   ? answer_error(r, ctx)
                   : show_from_backend(r, ctx, sconf);
    }
    if (parse_request(r, ctx, body, body_len, &openai, &olen)) {
        return answer_error(r, ctx);
    }
    apr_table_setn(r->notes, LLMGW_NOTE_MODEL, ctx->req.model);
    apr_table_setn(r->notes, LLMGW_NOTE_STREAM, ctx->req.stream ? "1" : "0");

    ctx->route = llmgw_router_find(llmgw_routes(r), ctx->req.model);
    if (!ctx->route) {
        llmgw_error_set(
            &ctx->err, HTTP_NOT_FOUND, "invalid_request_error", "model",
            "model_not_found",
            apr_psprintf(r->pool,
                         "The model '%s' does not "
                         "exist or is not served by this "
                         "gateway. Available models: %s.",
                         ctx->req.model,
                         llmgw_router_names(r->pool, llmgw_routes(r))));
        return answer_error(r, ctx);
    }
    use_route(r, ctx, ctx->route);

    if (ctx->ox.load && !ctx->native) {
        /* Nothing to load but on an Ollama: answered as Ollama does. */
        ctx->info = OLLAMA_INFO_LOAD;
        r->handler = LLMGW_HANDLER;
        return OK;
    }
    if (ctx->ox.refusal.status && !ctx->native) {
        ctx->err = ctx->ox.refusal;
        return answer_error(r, ctx);
    }
    if (ctx->api == LLMGW_API_OLLAMA
        && strcmp(ctx->route->dialect, "llamacpp") == 0
        && llmgw_ollama_llamacpp_options(r->pool, &ctx->ox, &ctx->req, &openai,
                                         &olen, &ctx->err)) {
        return answer_error(r, ctx);
    }
    /* The request as a fallback route would get it (LLMFallback). */
    ctx->openai = openai;
    ctx->openai_len = olen;
    if (llmgw_limits_admit(r, ctx)) {
        return answer_error(r, ctx);
    }
    /* A load request is no answer to keep. */
    if (!ctx->ox.load && cache_lookup(r, ctx, sconf, ctx->upstream_model)) {
        r->handler = LLMGW_HANDLER;
        return OK;
    }
    if (upstream_request(r, ctx, ctx->upstream_model, openai, olen, &path)) {
        return answer_error(r, ctx);
    }
    hand_to_proxy(r, ctx, path, 1);
    return OK;
}

/* ---------------------------------------------------------------------
 * LLMGW_BODY: serves the (rewritten) body to mod_proxy_http
 */

static apr_status_t body_filter(ap_filter_t *f, apr_bucket_brigade *bb,
                                ap_input_mode_t mode, apr_read_type_e block,
                                apr_off_t readbytes)
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
        APR_BRIGADE_INSERT_TAIL(
            bb, apr_bucket_immortal_create(ctx->body + ctx->body_sent, n,
                                           f->c->bucket_alloc));
        ctx->body_sent += n;
    }
    if (ctx->body_sent == ctx->body_len) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(f->c->bucket_alloc));
        ctx->eos_sent = 1;
    }
    return APR_SUCCESS;
}

void llmgw_proxy_register(void)
{
    /* Before mod_proxy's fixup, which canonicalises the proxy: URL we
     * set, as mod_rewrite's [P] does. */
    static const char *const before_proxy[] = { "mod_proxy.c", NULL };

    ap_hook_translate_name(translate_name, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_map_to_storage(map_to_storage, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_fixups(fixups, NULL, before_proxy, APR_HOOK_FIRST);
    body_filter_handle = ap_register_input_filter("LLMGW_BODY", body_filter,
                                                  NULL, AP_FTYPE_RESOURCE);
}
