/* mod_llmgw_answer: the "llm-gateway" handler for what the gateway answers
 * itself but model lists (mod_llmgw_models): errors, cache hits, answers
 * shared from a request in flight, Ollama's /api/version; all in the
 * client's API. */
#include <string.h>

#include <httpd.h>
#include <apr_strings.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>

#include "mod_llmgw.h"
#include "mod_llmgw_answer.h"
#include "mod_llmgw_limits.h"

APLOG_USE_MODULE(llm_gateway);

static int answer_error(request_rec *r, llmgw_req_t *ctx)
{
    apr_size_t len;
    const char *json =
        llmgw_error_answer(r, ctx->api == LLMGW_API_OLLAMA, &ctx->err, &len);

    llmgw_send_json(r, ctx->err.status, json, len);
    return OK;
}

static int answer_version(request_rec *r)
{
    static const char json[] = "{\"version\":\"" LLMGW_VERSION "\"}";

    llmgw_send_json(r, HTTP_OK, json, sizeof(json) - 1);
    return OK;
}

/* What Ollama answers on its root, which its CLI asks first. */
static int answer_root(request_rec *r)
{
    static const char text[] = "Ollama is running";

    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_set_content_length(r, sizeof(text) - 1);
    if (!r->header_only) {
        ap_rwrite(text, sizeof(text) - 1, r);
    }
    return OK;
}

/* A load request for a backend that is not Ollama: there is nothing to
 * load, so it is answered as Ollama answers one it has loaded. */
static int answer_load(request_rec *r, llmgw_req_t *ctx)
{
    apr_size_t len;
    const char *json =
        llmgw_ollama_load_answer(r->pool, ctx->oep, ctx->upstream_model,
                                 ctx->ox.unload, apr_time_now(), &len);

    llmgw_send_json(r, HTTP_OK, json, len);
    return OK;
}

/* ---------------------------------------------------------------------
 * Answers from the cache and from requests in flight
 */

/* Usage of an answer served from the cache or a shared generation: the
 * original tokens, billed in full or not at all (LLMCacheBilling). */
static void bill_cached(request_rec *r, const llmgw_usage_t *u)
{
    llmgw_usage_t none = { 0, 0, 0, 1 };

    if (!u->found) {
        return;
    }
    apr_table_setn(r->notes, LLMGW_NOTE_CACHED_TOKENS,
                   apr_off_t_toa(r->pool, u->total));
    llmgw_note_usage(r,
                     llmgw_billing_free(llmgw_sconf(r->server)) ? &none : u);
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
        status = llmgw_front_body(ctx->front, HTTP_OK, text, len, &out, &olen);
        llmgw_send_json(r, status, out, olen);
        return OK;
    }
    text =
        llmgw_record_render_sse(ctx->hit, r->pool, ctx->req.wants_usage, &len);
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
 * first this client has not had (its usage chunk if asked and not sent
 * yet: the usage chunk is no chunk of the record, so a follower that read
 * it as a piece and then found the end mark missing has had it), and
 * [DONE].
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
        || !(text = llmgw_record_render_sse(
                 rec, r->pool, ctx->req.wants_usage && !sse->usage.found,
                 &len))) {
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
static int follow_to_answer(request_rec *r, llmgw_req_t *ctx, llmgw_sse_t *sse)
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
        llmgw_note_ttft(r);
    }
    bill_cached(r, &u);
    write_stream(r, ctx, out, n, 1);
    return 1;
}

/* "data: " PIECE "\n\n" in b, reused for every piece (grown in the
 * request's pool only for a piece longer than all before). */
static const char *frame_event(request_rec *r, llmgw_pbuf_t *b,
                               const char *data, apr_size_t len, apr_size_t *n)
{
    b->len = 0;
    llmgw_pbuf_add(r->pool, b, "data: ", 6);
    llmgw_pbuf_add(r->pool, b, data, len);
    llmgw_pbuf_add(r->pool, b, "\n\n", 2);
    *n = b->len;
    return b->b;
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
    llmgw_pbuf_t evbuf = { NULL, 0, 0 };

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
                continue; /* not stored yet: the leader goes on */
            }
        }
        if (rv != APR_SUCCESS) {
            break;
        }
        /* The piece is the coalescer's until the next one; the event is
         * framed in the buffer reused for every piece. */
        ev = frame_event(r, &evbuf, data, len, &n);
        n = llmgw_sse_feed(sse, ev, n, &out);
        if (!had_output && sse->content_events) {
            llmgw_note_ttft(r);
        }
        if (n && write_stream(r, ctx, out, n, 0) < 0) {
            return OK; /* the client left */
        }
    }
    bill_cached(r, &sse->usage);
    if (rv == APR_EOF) {
        n = llmgw_sse_feed(sse, done, sizeof(done) - 1, &out);
        write_stream(r, ctx, out, n, 1);
        return OK;
    }
    code = rv == APR_TIMEUP ? "upstream_timeout" : "upstream_stream_error";
    msg = rv == APR_TIMEUP ? "The shared generation made no progress in time."
          : rv == APR_INCOMPLETE
              ? "Part of the shared generation left the cache before it "
                "was sent, and the whole answer was not kept (larger than "
                "the cache's max-item, or evicted too)."
              : "The shared generation failed before it completed.";
    llmgw_error_set(&err, HTTP_BAD_GATEWAY, "server_error", NULL, code, msg);
    llmgw_note_error(r, &err);
    ap_log_rerror(
        APLOG_MARK, APLOG_INFO, 0, r,
        LLMGW_LOGNO(
            0305) "coalescing: a follower's stream ends with an error: %s",
        msg);
    out = llmgw_front_stream_error(ctx->front, &err, &n);
    ap_rwrite(out, (int)n, r);
    return OK;
}

static int answer_handler(request_rec *r)
{
    llmgw_req_t *ctx;
    int rv;

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
    if (ctx->hit || ctx->following) {
        rv = ctx->hit ? answer_hit(r, ctx) : answer_follower(r, ctx);
        llmgw_limits_end(r, ctx); /* billed per LLMCacheBilling */
        return rv;
    }
    if (ctx->info == OLLAMA_INFO_VERSION) {
        return answer_version(r);
    }
    if (ctx->info == OLLAMA_INFO_ROOT) {
        return answer_root(r);
    }
    if (ctx->info == OLLAMA_INFO_LOAD) {
        return answer_load(r, ctx);
    }
    return DECLINED; /* a model list: mod_llmgw_models */
}

void llmgw_answer_register(void)
{
    /* Before the model lists' handler: errors are answered here. */
    ap_hook_handler(answer_handler, NULL, NULL, APR_HOOK_MIDDLE - 1);
}
