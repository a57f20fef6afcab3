/* llmgw_answer: the handler for what the gateway answers itself: model
 * lists (OpenAI and Ollama), Ollama's info endpoints, cache hits, answers
 * shared from a request in flight, and errors, all in the client's API. */
#include <string.h>

#include <httpd.h>
#include <apr_strings.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>

#include "llmgw_answer.h"
#include "llmgw_discover.h"
#include "llmgw_proxy.h"

APLOG_USE_MODULE(llm_gateway);

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

static int answer_error(request_rec *r, llmgw_req_t *ctx)
{
    const char *json = llmgw_front_error(r->pool, ctx->api == LLMGW_API_OLLAMA,
                                         &ctx->err);

    apr_table_setn(r->notes, "llm-error",
                   ctx->err.code ? ctx->err.code : ctx->err.type);
    send_json(r, ctx->err.status, json, strlen(json));
    return OK;
}

static llmgw_router_t *router(request_rec *r)
{
    llmgw_server_conf_t *sconf = ap_get_module_config(r->server->module_config,
                                                      &llm_gateway_module);

    return sconf->router;
}

/* ---------------------------------------------------------------------
 * Model lists
 */

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
    llmgw_router_t *rt = router(r);
    apr_int64_t created = rt->created;
    llmgw_json_t *doc = llmgw_json_create_object(r->pool);
    const char *json;
    apr_size_t len;
    int i;

    if (ctx->ep == LLMGW_EP_MODEL) {
        llmgw_json_t *tmp;

        if (!llmgw_router_find(rt, ctx->model_id)) {
            llmgw_error_set(&ctx->err, HTTP_NOT_FOUND,
                            "invalid_request_error", "model",
                            "model_not_found",
                            apr_psprintf(r->pool, "The model '%s' does not "
                                         "exist or is not served by this "
                                         "gateway.", ctx->model_id));
            return answer_error(r, ctx);
        }
        tmp = llmgw_json_add_array(doc, "data");
        add_model(tmp, ctx->model_id, created);
        doc = llmgw_json_array_get(tmp, 0);
    }
    else {
        apr_array_header_t *names = llmgw_model_names(r, rt);
        llmgw_json_t *data;

        llmgw_json_sets(doc, "list", "object", NULL);
        data = llmgw_json_add_array(doc, "data");
        for (i = 0; i < names->nelts; i++) {
            add_model(data, APR_ARRAY_IDX(names, i, const char *), created);
        }
    }
    json = llmgw_json_write(doc, &len);
    send_json(r, HTTP_OK, json, len);
    return OK;
}

static const char *rfc3339(apr_pool_t *p, apr_int64_t secs)
{
    apr_time_exp_t t;

    apr_time_exp_gmt(&t, apr_time_from_sec(secs));
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02dZ",
                        t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour,
                        t.tm_min, t.tm_sec);
}

/* Ollama's /api/tags, /api/ps, /api/show and /api/version. We know the
 * routed names; sizes, digests and what is loaded are the backends'. */
static int answer_ollama_info(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_router_t *rt = router(r);
    llmgw_json_t *doc = llmgw_json_create_object(r->pool), *list, *m;
    apr_array_header_t *names;
    const char *json;
    apr_size_t len;
    int i;

    switch (ctx->info) {
    case OLLAMA_INFO_TAGS:
        names = llmgw_model_names(r, rt);
        list = llmgw_json_add_array(doc, "models");
        for (i = 0; i < names->nelts; i++) {
            const char *name = APR_ARRAY_IDX(names, i, const char *);

            m = llmgw_json_array_add_object(list);
            llmgw_json_sets(m, name, "name", NULL);
            llmgw_json_sets(m, name, "model", NULL);
            llmgw_json_sets(m, rfc3339(r->pool, rt->created), "modified_at",
                            NULL);
            llmgw_json_setl(m, 0, "size", NULL);
            llmgw_json_sets(m, "", "digest", NULL);
            llmgw_json_sets(m, "", "details", "format", NULL);
            llmgw_json_sets(m, "", "details", "family", NULL);
            llmgw_json_sets(m, "", "details", "parameter_size", NULL);
            llmgw_json_sets(m, "", "details", "quantization_level", NULL);
        }
        break;
    case OLLAMA_INFO_PS:
        llmgw_json_add_array(doc, "models");
        break;
    case OLLAMA_INFO_SHOW:
        if (!llmgw_router_find(rt, ctx->model_id)) {
            llmgw_error_set(&ctx->err, HTTP_NOT_FOUND,
                            "invalid_request_error", "model",
                            "model_not_found",
                            apr_psprintf(r->pool, "model '%s' not found",
                                         ctx->model_id));
            return answer_error(r, ctx);
        }
        llmgw_json_sets(doc, "", "modelfile", NULL);
        llmgw_json_sets(doc, "", "parameters", NULL);
        llmgw_json_sets(doc, "", "template", NULL);
        llmgw_json_sets(doc, "", "details", "format", NULL);
        llmgw_json_sets(doc, "", "details", "family", NULL);
        llmgw_json_add_object(doc, "model_info");
        llmgw_json_array_adds(llmgw_json_add_array(doc, "capabilities"),
                              "completion");
        llmgw_json_sets(doc, rfc3339(r->pool, rt->created), "modified_at",
                        NULL);
        break;
    default:
        llmgw_json_sets(doc, LLMGW_VERSION, "version", NULL);
        break;
    }
    json = llmgw_json_write(doc, &len);
    send_json(r, HTTP_OK, json, len);
    return OK;
}

/* ---------------------------------------------------------------------
 * Answers from the cache and from requests in flight
 */

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
    llmgw_set_usage_notes(r, sconf->cache_billing_free ? &none : u);
}

static void write_stream_headers(request_rec *r, llmgw_req_t *ctx)
{
    apr_table_setn(r->subprocess_env, "no-gzip", "1");
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    ap_set_content_type(r, llmgw_front_stream_type(ctx->front));
}

/* OpenAI SSE bytes to the client, in its shape; -1 when it left. */
static int write_stream(request_rec *r, llmgw_req_t *ctx, const char *sse,
                        apr_size_t len, int end)
{
    const char *out;
    apr_size_t n = llmgw_front_stream(ctx->front, sse, len, &out);

    if (n && ap_rwrite(out, (int)n, r) < 0) {
        return -1;
    }
    if (end && (n = llmgw_front_stream_end(ctx->front, &out)) != 0
        && ap_rwrite(out, (int)n, r) < 0) {
        return -1;
    }
    return ap_rflush(r) < 0 ? -1 : 0;
}

/* A cache hit, in the shape the client asked for: a stream is replayed
 * chunk by chunk (the usage chunk only when asked), else one body. */
static int answer_hit(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_usage_t u;
    const char *text, *out;
    apr_size_t len, olen;
    int status;

    llmgw_record_usage(ctx->hit, &u);
    bill_cached(r, &u);
    if (!ctx->req.stream) {
        text = llmgw_record_render_json(ctx->hit, &len);
        status = llmgw_front_body(ctx->front, HTTP_OK, text, len, &out,
                                  &olen);
        send_json(r, status, out, olen);
        return OK;
    }
    text = llmgw_record_render_sse(ctx->hit, r->pool, ctx->req.wants_usage,
                                   &len);
    write_stream_headers(r, ctx);
    write_stream(r, ctx, text, len, 1);
    return OK;
}

/* The id of the first chunk of an SSE text, or NULL. */
static const char *first_id(request_rec *r, const char *sse, apr_size_t len)
{
    apr_size_t used;
    llmgw_json_t *j;

    if (len < 6 || memcmp(sse, "data: ", 6) != 0) {
        return NULL;
    }
    j = llmgw_json_parse_prefix(r->pool, sse + 6, len - 6, &used);
    return j ? llmgw_json_gets(j, "id", NULL) : NULL;
}

/* The rest of a stream whose follower found a piece gone from the store:
 * from the answer the leader stored, which holds every chunk, from the
 * first this client has not had (its usage chunk if asked, and [DONE]).
 * Into *out; 0 when the answer is not there, or not that generation's. */
static int rest_from_answer(request_rec *r, llmgw_req_t *ctx,
                            const llmgw_sse_t *sse, const char **out,
                            apr_size_t *n, llmgw_usage_t *u)
{
    llmgw_record_t *rec;
    const char *text, *ev, *end, *id;
    char *val;
    apr_size_t len, kept;

    if (llmgw_coalesce_rest(ctx->co, &val, &len, &kept) != APR_SUCCESS
        || !(rec = llmgw_record_parse(r->pool, val, len, 1))
        || llmgw_record_nchunks(rec) < kept
        || !(text = llmgw_record_render_sse(rec, r->pool,
                                            ctx->req.wants_usage, &len))) {
        return 0;
    }
    /* Its chunks have the ids of the stream they were recorded from. */
    id = first_id(r, text, len);
    if (!id || !sse->id || strcmp(id, sse->id) != 0) {
        return 0;
    }
    /* One event per chunk: JSON written out has no raw newline. */
    for (ev = text, end = text + len; kept; kept--) {
        ev = memmem(ev, (apr_size_t)(end - ev), "\n\n", 2);
        if (!ev) {
            return 0;
        }
        ev += 2;
    }
    *out = ev;
    *n = (apr_size_t)(end - ev);
    llmgw_record_usage(rec, u);
    return 1;
}

/* Sends the rest from the stored answer; 0 if it is not there. */
static int follow_to_answer(request_rec *r, llmgw_req_t *ctx,
                            llmgw_sse_t *sse)
{
    int had_output = sse->content_events;
    const char *rest, *out;
    apr_size_t len, n;
    llmgw_usage_t u;

    if (!rest_from_answer(r, ctx, sse, &rest, &len, &u)) {
        return 0;
    }
    n = llmgw_sse_feed(sse, rest, len, &out);
    if (!had_output && sse->content_events) {
        llmgw_set_ttft_note(r);
    }
    bill_cached(r, &u);
    write_stream(r, ctx, out, n, 1);
    return 1;
}

/* A stream follower: the leader's chunks as they come, framed for this
 * client (its own usage choice), ending well-formed whatever happens. A
 * piece that left the store unread is made up for by the stored answer. */
static int answer_follower(request_rec *r, llmgw_req_t *ctx)
{
    static const char done[] = "data: [DONE]\n\n";
    llmgw_sse_t *sse = llmgw_sse_create(r->pool, !ctx->req.wants_usage);
    llmgw_error_t err;
    apr_status_t rv;
    const char *out, *code, *msg;
    char *data;
    apr_size_t len, n;

    write_stream_headers(r, ctx);
    for (;;) {
        const char *ev;
        int had_output = sse->content_events;

        rv = llmgw_coalesce_next(ctx->co, &data, &len);
        if (rv == APR_EAGAIN || rv == APR_INCOMPLETE) {
            if (follow_to_answer(r, ctx, sse)) {
                return OK;
            }
            if (rv == APR_EAGAIN) {
                continue;       /* not stored yet: the leader goes on */
            }
        }
        if (rv != APR_SUCCESS) {
            break;
        }
        ev = apr_pstrcat(r->pool, "data: ", apr_pstrmemdup(r->pool, data, len),
                         "\n\n", NULL);
        n = llmgw_sse_feed(sse, ev, strlen(ev), &out);
        if (!had_output && sse->content_events) {
            llmgw_set_ttft_note(r);
        }
        if (n && write_stream(r, ctx, out, n, 0) < 0) {
            return OK;          /* the client left */
        }
    }
    bill_cached(r, &sse->usage);
    if (rv == APR_EOF) {
        n = llmgw_sse_feed(sse, done, sizeof(done) - 1, &out);
        write_stream(r, ctx, out, n, 1);
        return OK;
    }
    code = rv == APR_TIMEUP ? "upstream_timeout" : "upstream_stream_error";
    msg = rv == APR_TIMEUP
              ? "The shared generation made no progress in time."
          : rv == APR_INCOMPLETE
              ? "Part of the shared generation left the cache before it "
                "was sent, and the whole answer was not kept (larger than "
                "the cache's max-item, or evicted too)."
              : "The shared generation failed before it completed.";
    llmgw_error_set(&err, HTTP_BAD_GATEWAY, "server_error", NULL, code, msg);
    apr_table_setn(r->notes, "llm-error", err.code);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, LLMGW_LOGNO(0305)
                  "coalescing: a follower's stream ends with an error: %s",
                  msg);
    out = llmgw_front_stream_error(ctx->front, sse, &err, &n);
    ap_rwrite(out, (int)n, r);
    return OK;
}

int llmgw_handler(request_rec *r)
{
    llmgw_req_t *ctx;

    if (!r->handler || strcmp(r->handler, LLMGW_HANDLER) != 0) {
        return DECLINED;
    }
    ctx = llmgw_req_get(r);
    if (!ctx) {
        /* SetHandler llm-gateway without LLMApi: nothing to serve. */
        return HTTP_NOT_FOUND;
    }
    if (ap_discard_request_body(r) != OK) {
        r->connection->keepalive = AP_CONN_CLOSE;
    }
    if (ctx->err.status) {
        return answer_error(r, ctx);
    }
    if (ctx->hit) {
        return answer_hit(r, ctx);
    }
    if (ctx->following) {
        return answer_follower(r, ctx);
    }
    if (ctx->info) {
        return answer_ollama_info(r, ctx);
    }
    return answer_models(r, ctx);
}
