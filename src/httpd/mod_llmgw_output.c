/* mod_llmgw_output: the answer on its way back. Plain JSON passes untouched
 * (usage read at the end); streams are framed event by event; answers in
 * another dialect or for another API are translated; good answers are
 * recorded for the cache and published to coalesced followers. */
#include <stddef.h> /* before APR: offsetof for its ring macros */
#include <string.h>

#include <httpd.h>
#include <apr_escape.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>

#include "llmgw_estimate.h"
#include "mod_llmgw.h"
#include "mod_llmgw_limits.h"
#include "mod_llmgw_failover.h"
#include "mod_llmgw_output.h"

APLOG_USE_MODULE(llm_gateway);

/* Response bytes kept to find "usage" in: it is the last member of an
 * OpenAI body, followed at most by a few small fields. */
#define LLMGW_TAIL_SIZE 8192
/* The largest answer held whole: to translate it, or to check it. */
#define LLMGW_MAX_WHOLE (64 * 1024 * 1024)

static ap_filter_rec_t *out_filter_handle;

/* Each chunk of a stream being recorded or led: to the record, and to the
 * followers tailing this generation. */
static void on_chunk_now(void *baton, const char *data, apr_size_t len)
{
    llmgw_req_t *ctx = baton;

    if (ctx->rec) {
        llmgw_record_add_chunk(ctx->rec, data, len);
    }
    if (ctx->co) {
        /* With the count of chunks the record holds: a follower that
         * misses a piece goes on from there in the stored answer. */
        llmgw_coalesce_put(ctx->co, data, len,
                           ctx->rec ? llmgw_record_nchunks(ctx->rec) : 0);
    }
}

/* What a stream whose client left had generated: the usage chunk's counts
 * if it came, else the estimate's bound on the prompt and the bytes of the
 * text generated so far (llmgw_estimate_completion). */
static void note_left_usage(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_estimate_conf_t conf;
    llmgw_estimate_t e;
    llmgw_error_t err;
    llmgw_usage_t u = { 0 };

    if (!ctx->sse || ctx->sse->usage.found) {
        if (ctx->sse) {
            llmgw_note_usage(r, &ctx->sse->usage);
        }
        return;
    }
    llmgw_estimate_defaults(&conf);
    if (llmgw_estimate(&ctx->req, &conf, 0, &e, &err)) {
        return;
    }
    u.prompt = e.prompt;
    u.completion = llmgw_estimate_completion(ctx->sse->text_bytes, e.max_out);
    u.total = llmgw_tokens_add(u.prompt, u.completion);
    u.found = 1;
    llmgw_note_usage(r, &u);
}

/* The client hung up before its answer was whole: its doing, not the
 * backend's (the breaker and the logs must not count it as a backend
 * failure). Noted once, at info. */
static void client_left(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_error_t err;

    if (ctx->client_closed || ctx->finished) {
        return;
    }
    ctx->client_closed = 1;
    llmgw_error_set(&err, 499, "client_error", NULL, "client_closed",
                    "The client closed the connection.");
    llmgw_note_error(r, &err);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  LLMGW_LOGNO(0102) "client left the answer for model %s via "
                                    "%s after %d events; %s",
                  ctx->req.model, ctx->route->balancer,
                  ctx->sse ? ctx->sse->events : 0,
                  ctx->co ? "the generation goes on for its followers"
                          : "the backend request is cancelled");
    if (!ctx->co) {
        note_left_usage(r, ctx);
    }
}

/* Before the commit point a chunk is kept back: the attempt may still be
 * dropped, and then no follower or record may have seen it. */
static void on_chunk(void *baton, const char *data, apr_size_t len)
{
    llmgw_req_t *ctx = baton;

    if (!llmgw_failover_defer_chunk(ctx, data, len)) {
        llmgw_failover_flush_chunks(ctx, on_chunk_now, ctx);
        on_chunk_now(ctx, data, len);
    }
}

/* The commit point: from here this answer is the client's. */
static void commit(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_failover_commit(r, ctx);
    llmgw_failover_flush_chunks(ctx, on_chunk_now, ctx);
}

static apr_status_t mark_aborted(void *data)
{
    ((conn_rec *)data)->aborted = 1;
    return APR_SUCCESS;
}

/* The answer, on to the client. A leader whose client left (the pass
 * failed, or the core marked the connection aborted) finishes the
 * generation for its followers and the cache: mod_proxy_http stops
 * reading the backend when a pass fails or c->aborted is set, so the
 * filter drops what that client would have got, clears the mark, and
 * puts it back once the answer is in. Without followers to serve, a
 * client leaving ends the request, as mod_proxy does. */
static apr_status_t pass_on(ap_filter_t *f, llmgw_req_t *ctx,
                            apr_bucket_brigade *bb)
{
    conn_rec *c = f->c;
    apr_status_t rv = APR_SUCCESS;

    if (ctx->fo) {
        /* Nothing goes out before the commit point. */
        if (ctx->finished) {
            commit(f->r, ctx);
        }
        if (llmgw_failover_holding(ctx)) {
            if (llmgw_failover_hold(f, ctx, bb, LLMGW_MAX_WHOLE)) {
                return APR_SUCCESS;
            }
            commit(f->r, ctx);
        }
        llmgw_failover_unhold(ctx, bb);
    }
    if (!ctx->client_gone) {
        rv = ap_pass_brigade(f->next, bb);
        if (rv != APR_SUCCESS || c->aborted) {
            /* Without followers, the error goes back to mod_proxy_http,
             * which stops reading and closes the backend connection. */
            client_left(f->r, ctx);
        }
        if ((rv != APR_SUCCESS || c->aborted) && ctx->co && !ctx->finished) {
            ctx->client_gone = 1;
            c->aborted = 0;
            c->keepalive = AP_CONN_CLOSE;
            /* Whichever way the request ends: the connection is gone. */
            apr_pool_cleanup_register(f->r->pool, c, mark_aborted,
                                      apr_pool_cleanup_null);
            llmgw_coalesce_orphan(ctx->co);
            rv = APR_SUCCESS;
        }
    }
    if (ctx->client_gone) {
        apr_brigade_cleanup(bb);
        if (ctx->finished) {
            c->aborted = 1;
        }
    }
    return rv;
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
    llmgw_limits_end(r, ctx);
    text = ctx->rec && ctx->complete ? llmgw_record_serialize(ctx->rec, &len)
                                     : NULL;
    if (ctx->co) {
        llmgw_coalesce_end(ctx->co, ctx->complete, text, text ? len : 0);
    }
    else if (text) {
        llmgw_store_set(ctx->store, r->pool, ctx->cache_key, text, len, 0);
    }
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

static apr_status_t keep_bucket(llmgw_req_t *ctx, apr_pool_t *p, apr_bucket *e)
{
    const char *data;
    apr_size_t n;
    apr_status_t rv = apr_bucket_read(e, &data, &n, APR_BLOCK_READ);

    if (rv == APR_SUCCESS) {
        keep_tail(ctx, p, data, n);
    }
    return rv;
}

/* The unique part of the id of an answer we build from another dialect's
 * (the translator adds "chatcmpl-" or "cmpl-"). */
static const char *answer_id(request_rec *r)
{
    unsigned char rnd[12];

    if (apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS) {
        memset(rnd, 0, sizeof(rnd));
    }
    return apr_pescape_hex(r->pool, rnd, sizeof(rnd), 0);
}

/* A native stream's line, on to its Ollama client as the backend wrote
 * it: called by the translator for each line that reads as an object, so
 * a line cut off, unreadable or past what a stream may hold never goes
 * out, and nothing after the stream's end. */
static void native_line(void *baton, const char *line, apr_size_t len)
{
    llmgw_req_t *ctx = baton;
    apr_bucket_brigade *out = ctx->native_out;

    APR_BRIGADE_INSERT_TAIL(
        out, apr_bucket_heap_create(line, len, NULL, out->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(
        out, apr_bucket_immortal_create("\n", 1, out->bucket_alloc));
}

static int is_type(request_rec *r, const char *type)
{
    return r->content_type
           && strncasecmp(r->content_type, type, strlen(type)) == 0;
}

/* A 200 answer of the OpenAI API is a JSON object, whole: the backend's
 * body is held (up to LLMGW_MAX_WHOLE) and read before anything of it goes
 * to the client, so that a body that is not one (an HTML page, text, JSON
 * cut short or followed by junk) is a 502, never a 200. A compressed body
 * is not ours to judge, and passes as it comes. */
static int held_to_check(request_rec *r)
{
    const char *ce = apr_table_get(r->headers_out, "Content-Encoding");

    return r->status == HTTP_OK && !r->header_only
           && (!ce || strcasecmp(ce, "identity") == 0);
}

static void decide_mode(request_rec *r, llmgw_req_t *ctx)
{
    int translate = ctx->backend_ollama || !llmgw_front_is_openai(ctx->front);

    if (r->status != HTTP_OK) {
        ctx->rec = NULL; /* only good answers are cached */
    }
    if (r->status >= 400) {
        /* A backend's own error passes as it is, unless it must be put in
         * the client's shape. */
        ctx->out = translate ? OUT_WHOLE : OUT_PASS;
        return;
    }
    /* A good answer to a stream request is a stream whatever the backend
     * calls it (or does not): framed, it always ends well. */
    if (is_type(r, "text/event-stream")
        || (ctx->backend_ollama && is_type(r, "application/x-ndjson"))
        || (ctx->req.stream && r->status == HTTP_OK)) {
        ctx->out = OUT_SSE;
        ctx->sse = llmgw_sse_create(r->pool, ctx->strip_usage);
        if (ctx->rec || ctx->co) {
            ctx->sse->on_data = on_chunk;
            ctx->sse->baton = ctx;
        }
        if (ctx->backend_ollama) {
            /* Usage always: the framer takes it out again if unasked. */
            ctx->from_ollama = llmgw_ollama_sse_create(
                r->pool, ctx->ep, answer_id(r), ctx->upstream_model,
                apr_time_sec(r->request_time), 1);
            if (ctx->native) {
                ctx->from_ollama->on_line = native_line;
                ctx->from_ollama->line_baton = ctx;
            }
        }
        ap_set_content_type(r, llmgw_front_stream_type(ctx->front));
        apr_table_unset(r->headers_out, "Content-Length");
        /* Compression would hold tokens back until a block fills. */
        apr_table_setn(r->subprocess_env, "no-gzip", "1");
        return;
    }
    ctx->out = translate || held_to_check(r) ? OUT_WHOLE : OUT_JSON;
}

/* What ends a native stream: nothing when the backend ended it (its done
 * line, or its own error line, went out), else one error line. */
static const char *native_tail(request_rec *r, llmgw_req_t *ctx,
                               const char *message)
{
    const llmgw_ollama_sse_t *o = ctx->from_ollama;

    if (o->done || o->error_line) {
        return "";
    }
    return apr_pstrcat(r->pool, llmgw_ollama_error_json(r->pool, message),
                       "\n", NULL);
}

static void stream_bytes(request_rec *r, llmgw_req_t *ctx, const char *data,
                         apr_size_t n, int end, apr_bucket_brigade *out);

/* The choices a stream carries (n, times the prompts of a completions
 * batch), as the estimate counts them; 0 if it cannot say. Asked only of
 * a stream that ended without [DONE]. */
static int stream_choices(llmgw_req_t *ctx)
{
    llmgw_estimate_conf_t conf;
    llmgw_estimate_t e;
    llmgw_error_t err;

    llmgw_estimate_defaults(&conf);
    if (llmgw_estimate(&ctx->req, &conf, APR_INT64_MAX, &e, &err)
        || e.choices > 64) {
        return 0;
    }
    return (int)e.choices;
}

/* Ends a stream: a clean end passes on what is left; a broken one gets
 * an error tail in the client's shape instead of the cut-off event. */
static void finish_sse(request_rec *r, llmgw_req_t *ctx,
                       apr_bucket_brigade *out, const char *why)
{
    llmgw_error_t err;
    const char *tail;
    apr_size_t n;

    /* Once: a broken backend sends an error bucket, then EOS. A client
     * that left (but a leader's) gets nothing more: what it cost was
     * noted when it left, and the backend did not fail. */
    if (ctx->stream_ended || (ctx->client_closed && !ctx->co)) {
        return;
    }
    ctx->stream_ended = 1;
    llmgw_failover_flush_chunks(ctx, on_chunk_now, ctx);
    llmgw_note_usage(r, &ctx->sse->usage);
    if (!why && !ctx->sse->done && !ctx->from_ollama
        && !llmgw_sse_pending(ctx->sse)
        && (ctx->sse->choices = stream_choices(ctx)) > 0
        && llmgw_sse_finished(ctx->sse, ctx->req.wants_usage)) {
        /* Whole but for its [DONE], which some servers never send. */
        stream_bytes(r, ctx, "data: [DONE]\n\n", 14, 0, out);
    }
    if (ctx->sse->done && !why) {
        /* An Ollama error line was already turned into an error end. */
        ctx->complete = !(ctx->from_ollama && ctx->from_ollama->failed);
        if (ctx->native) {
            /* A line the translator could not read ended it. */
            tail = native_tail(r, ctx,
                               ctx->from_ollama->broke
                                   ? ctx->from_ollama->broke
                                   : "The backend stream could not be read.");
            if ((n = strlen(tail)) != 0) {
                APR_BRIGADE_INSERT_TAIL(
                    out,
                    apr_bucket_heap_create(tail, n, NULL, out->bucket_alloc));
            }
        }
        else if ((n = llmgw_front_stream_end(ctx->front, &tail)) != 0) {
            APR_BRIGADE_INSERT_TAIL(
                out, apr_bucket_heap_create(tail, n, NULL, out->bucket_alloc));
        }
        if (!ctx->complete) {
            apr_table_setn(r->notes, LLMGW_NOTE_ERROR, "upstream_error");
        }
        return;
    }
    llmgw_error_set(&err, HTTP_BAD_GATEWAY, "server_error", NULL,
                    "upstream_stream_error",
                    apr_psprintf(r->pool,
                                 "The backend stream failed "
                                 "before it completed: %s.",
                                 why ? why : "it ended without [DONE]"));
    ap_log_rerror(
        APLOG_MARK, APLOG_WARNING, 0, r,
        LLMGW_LOGNO(
            0101) "stream for model %s via %s broke after %d events: %s",
        ctx->req.model, ctx->route->balancer, ctx->sse->events, err.message);
    llmgw_failover_broke(r, ctx, LLMGW_EV_BAD_ANSWER);
    if (ctx->native) {
        tail = native_tail(r, ctx, err.message);
        n = strlen(tail);
    }
    else {
        tail = llmgw_front_stream_error(ctx->front, &err, &n);
    }
    if (n) {
        APR_BRIGADE_INSERT_TAIL(
            out, apr_bucket_heap_create(tail, n, NULL, out->bucket_alloc));
    }
    llmgw_note_error(r, &err);
}

/* Backend bytes of a stream through every stage: Ollama's NDJSON to SSE,
 * the OpenAI framer (usage, recording, followers), the client's shape. */
static void stream_bytes(request_rec *r, llmgw_req_t *ctx, const char *data,
                         apr_size_t n, int end, apr_bucket_brigade *out)
{
    const char *sse, *ready, *client;
    apr_size_t nsse, nready, nclient;
    int had_output = ctx->sse->content_events;

    if (ctx->from_ollama) {
        ctx->native_out = out; /* for native_line */
        nsse = end ? llmgw_ollama_sse_end(ctx->from_ollama, &sse)
                   : llmgw_ollama_sse_feed(ctx->from_ollama, data, n, &sse);
    }
    else {
        sse = data;
        nsse = n;
    }
    if (!nsse) {
        return;
    }
    nready = llmgw_sse_feed(ctx->sse, sse, nsse, &ready);
    ctx->generated += (apr_int64_t)nready;
    if (!had_output && ctx->sse->content_events) {
        llmgw_note_ttft(r);
    }
    /* A native stream's client has its bytes already: the translation
     * only serves usage, the record and the followers. */
    nclient = nready && !ctx->native
                  ? llmgw_front_stream(ctx->front, ready, nready, &client)
                  : 0;
    if (nclient) {
        /* A copy: the framer's buffer is reused by the next read. */
        APR_BRIGADE_INSERT_TAIL(
            out,
            apr_bucket_heap_create(client, nclient, NULL, out->bucket_alloc));
    }
    if (ctx->sse->failed) {
        /* One event past what a stream may hold: end it here, well. */
        finish_sse(r, ctx, out,
                   apr_psprintf(r->pool,
                                "it sent an event "
                                "larger than the gateway "
                                "holds (%d MB)",
                                LLMGW_STREAM_MAX_EVENT / (1024 * 1024)));
        llmgw_sse_feed(ctx->sse, NULL, 0, &ready); /* frees its buffer */
    }
}

static apr_status_t watch_stream(ap_filter_t *f, llmgw_req_t *ctx,
                                 apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    apr_bucket *e, *next;
    apr_status_t rv;

    if (!ctx->bb) {
        ctx->bb = apr_brigade_create(r->pool, f->c->bucket_alloc);
    }
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = next) {
        const char *data;
        apr_size_t n;

        next = APR_BUCKET_NEXT(e);
        if (APR_BUCKET_IS_EOS(e)) {
            if (ctx->from_ollama && !ctx->stream_ended) {
                stream_bytes(r, ctx, NULL, 0, 1, ctx->bb);
            }
            if (!ctx->sse->done && !ctx->stream_ended
                && llmgw_failover_retry(r, ctx, LLMGW_EV_BAD_ANSWER,
                                        "the stream ended before its "
                                        "answer started")) {
                apr_brigade_cleanup(ctx->bb);
                apr_brigade_cleanup(bb);
                return APR_SUCCESS;
            }
            finish_sse(r, ctx, ctx->bb, NULL);
            ctx->finished = 1;
            APR_BUCKET_REMOVE(e);
            APR_BRIGADE_INSERT_TAIL(ctx->bb, e);
            break;
        }
        if (AP_BUCKET_IS_ERROR(e)) {
            /* mod_proxy's "backend broke": end the stream well-formed. */
            finish_sse(r, ctx, ctx->bb,
                       "the connection to the backend "
                       "failed");
            apr_bucket_delete(e);
            continue;
        }
        if (APR_BUCKET_IS_METADATA(e)) {
            APR_BUCKET_REMOVE(e);
            APR_BRIGADE_INSERT_TAIL(ctx->bb, e);
            continue;
        }
        if (!ctx->stream_ended) { /* nothing may follow the end */
            rv = apr_bucket_read(e, &data, &n, APR_BLOCK_READ);
            if (rv != APR_SUCCESS) {
                return rv;
            }
            stream_bytes(r, ctx, data, n, 0, ctx->bb);
        }
        apr_bucket_delete(e);
    }
    if (ctx->sse->malformed
        && llmgw_failover_retry(r, ctx, LLMGW_EV_BAD_ANSWER,
                                "it sent an event that is not JSON")) {
        apr_brigade_cleanup(ctx->bb);
        apr_brigade_cleanup(bb);
        return APR_EGENERAL;
    }
    if (ctx->sse->content_events) {
        commit(r, ctx); /* the first token */
    }
    llmgw_failover_read(ctx);
    rv = pass_on(f, ctx, ctx->bb);
    apr_brigade_cleanup(ctx->bb);
    apr_brigade_cleanup(bb);
    return rv;
}

/* Copies a plain answer being recorded; 0 when it outgrows the store. */
static int copy_answer(llmgw_req_t *ctx, apr_pool_t *p, const char *data,
                       apr_size_t n)
{
    if (ctx->copy.len + n > ctx->store->max_item) {
        return 0;
    }
    /* Grown as needed: most answers are a few KB, max-item is not. */
    llmgw_pbuf_add(p, &ctx->copy, data, n);
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
        if (AP_BUCKET_IS_ERROR(e) && ctx->rec) {
            /* mod_proxy: the backend broke off; the body is not whole. */
            keep_tail(ctx, r->pool, ctx->copy.b, ctx->copy.len);
            ctx->rec = NULL;
            continue;
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
                keep_tail(ctx, r->pool, ctx->copy.b, ctx->copy.len);
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
            llmgw_usage_find(ctx->copy.b, ctx->copy.len, &u);
            llmgw_record_set_response(ctx->rec, ctx->copy.b, ctx->copy.len);
            ctx->complete = 1;
        }
    }
    else if (ctx->finished && last && !ctx->tail_len) {
        if (apr_bucket_read(last, &data, &n, APR_BLOCK_READ) == APR_SUCCESS) {
            llmgw_usage_find(data, n, &u);
        }
    }
    else {
        if (last && (rv = keep_bucket(ctx, r->pool, last))) {
            return rv;
        }
        if (ctx->finished) {
            llmgw_usage_find(ctx->tail, ctx->tail_len, &u);
        }
    }
    llmgw_note_usage(r, &u);
    return APR_SUCCESS;
}

/* The view of a plain OpenAI answer, or NULL when it is not a JSON
 * object read whole (strictly, as a request is): then the 502 is in
 * *err. */
static const llmgw_json_t *read_answer(request_rec *r, llmgw_req_t *ctx,
                                       const char *body, apr_size_t len,
                                       llmgw_error_t *err)
{
    llmgw_json_err_t jerr;
    const char *msg = "it is not an object";
    llmgw_json_t *j = llmgw_json_read(r->pool, body, len, &jerr, &msg);

    if (j && llmgw_json_type(j, NULL) == LLMGW_JSON_OBJECT) {
        return j;
    }
    ctx->rec = NULL;
    llmgw_json_trim(body, &len);
    llmgw_error_set(
        err, HTTP_BAD_GATEWAY, "server_error", NULL, "upstream_error",
        len ? apr_psprintf(r->pool,
                           "The backend answered with a body that is "
                           "not a JSON object: %s.",
                           msg)
            : "The backend answered with an empty body.");
    return NULL;
}

/* A body to translate: held whole, then turned into OpenAI (from an
 * Ollama backend), watched as any answer, and put in the client's shape.
 * A body that cannot be an answer (bad_answer: cut off by the backend,
 * bigger than LLMGW_MAX_WHOLE, not JSON) is dropped as it comes, and the
 * client gets a 502 in its API's shape at the end. */
static apr_status_t watch_whole(ap_filter_t *f, llmgw_req_t *ctx,
                                apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    apr_bucket *e, *next;
    apr_off_t held = 0;
    const char *out;
    char *body;
    apr_size_t len, olen;
    apr_status_t rv;
    llmgw_usage_t u = { 0 };
    llmgw_error_t err;
    const llmgw_json_t *view = NULL;
    int status = r->status;

    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = next) {
        next = APR_BUCKET_NEXT(e);
        if (APR_BUCKET_IS_EOS(e)) {
            ctx->finished = 1;
            break;
        }
        if (AP_BUCKET_IS_ERROR(e)) {
            /* mod_proxy: the backend broke off (short of its length). */
            ctx->bad_answer = "The backend's answer broke off before it "
                              "was complete.";
        }
    }
    if (!ctx->bb) {
        ctx->bb = apr_brigade_create(r->pool, f->c->bucket_alloc);
    }
    if (ctx->bad_answer) {
        apr_brigade_cleanup(ctx->bb); /* nothing of it is kept */
    }
    if (!ctx->finished) {
        if (ctx->bad_answer) {
            apr_brigade_cleanup(bb);
            return APR_SUCCESS;
        }
        rv = ap_save_brigade(f, &ctx->bb, &bb, r->pool);
        apr_brigade_length(ctx->bb, 0, &held);
        if (rv == APR_SUCCESS && held > LLMGW_MAX_WHOLE) {
            ctx->bad_answer =
                apr_psprintf(r->pool,
                             "The backend's answer "
                             "is larger than the gateway "
                             "holds to check or translate (%d MB).",
                             LLMGW_MAX_WHOLE / (1024 * 1024));
            apr_brigade_cleanup(ctx->bb);
        }
        return rv;
    }
    if (ctx->bad_answer
        && llmgw_failover_retry(r, ctx, LLMGW_EV_BAD_ANSWER,
                                ctx->bad_answer)) {
        apr_brigade_cleanup(bb);
        return APR_SUCCESS;
    }
    if (ctx->bad_answer) {
        apr_brigade_cleanup(bb);
        ctx->rec = NULL;
        llmgw_error_set(&err, HTTP_BAD_GATEWAY, "server_error", NULL,
                        "upstream_error", ctx->bad_answer);
        ap_log_rerror(
            APLOG_MARK, APLOG_WARNING, 0, r,
            LLMGW_LOGNO(0110) "answer for model %s via %s dropped: %s",
            ctx->req.model, ctx->route->balancer, err.message);
        llmgw_note_error(r, &err);
        status = err.status;
        body = (char *)llmgw_error_json(r->pool, &err);
        len = strlen(body);
    }
    else {
        APR_BRIGADE_PREPEND(bb, ctx->bb);
        rv = apr_brigade_pflatten(bb, &body, &len, r->pool);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        apr_brigade_cleanup(bb);
    }
    out = body;
    olen = len;
    if (!ctx->backend_ollama && !ctx->bad_answer && status == HTTP_OK
        && llmgw_front_is_openai(ctx->front)
        && !(view = read_answer(r, ctx, body, len, &err))) {
        if (llmgw_failover_retry(r, ctx, LLMGW_EV_BAD_ANSWER, err.message)) {
            return APR_SUCCESS; /* another member answers instead */
        }
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      LLMGW_LOGNO(0111) "answer for model %s via %s "
                                        "dropped: %s",
                      ctx->req.model, ctx->route->balancer, err.message);
        llmgw_note_error(r, &err);
        status = err.status;
        out = body = (char *)llmgw_error_json(r->pool, &err);
        olen = strlen(out);
    }
    if (ctx->backend_ollama && !ctx->bad_answer) {
        if (llmgw_ollama_response(r->pool, &ctx->req, status, body, len,
                                  answer_id(r), ctx->upstream_model,
                                  apr_time_sec(r->request_time), &out, &olen,
                                  &u, &err)) {
            ctx->rec = NULL;
            status = err.status;
            out = llmgw_error_json(r->pool, &err);
            olen = strlen(out);
        }
    }
    if (status == HTTP_OK) {
        llmgw_usage_find(out, olen, &u);
        llmgw_note_usage(r, &u);
        if (ctx->rec) {
            llmgw_record_set_read_response(ctx->rec, out, olen, view);
        }
        ctx->complete = 1;
    }
    if (ctx->native && status == HTTP_OK) {
        /* Read as OpenAI for usage and the record; the client gets the
         * backend's answer as it came. */
        out = body;
        olen = len;
    }
    else {
        status = llmgw_front_body(ctx->front, status, out, olen, &out, &olen);
    }
    if (status != r->status) {
        r->status = status;
        r->status_line = NULL;
    }
    ap_set_content_type(r, "application/json");
    apr_table_unset(r->headers_out, "Content-Length");
    APR_BRIGADE_INSERT_TAIL(
        bb, apr_bucket_pool_create(out, olen, r->pool, f->c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(f->c->bucket_alloc));
    return pass_on(f, ctx, bb);
}

/* mod_proxy_http gives up on a backend that failed before answering by
 * sending an error bucket (and, on a kept-alive client connection, an EOC
 * that closes it without a word, for the client to retry). API clients
 * are owed an answer: the error, in their shape. Returns 1 if it was so. */
static int answer_failed_backend(ap_filter_t *f, llmgw_req_t *ctx,
                                 apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    apr_bucket *e;
    llmgw_error_t err;
    int status = 0;

    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        if (AP_BUCKET_IS_ERROR(e)) {
            status = ((ap_bucket_error *)e->data)->status;
            break;
        }
        if (!APR_BUCKET_IS_METADATA(e)) {
            return 0;
        }
    }
    if (!status) {
        return 0;
    }
    llmgw_error_for_status(llmgw_proxy_status(r, status), &err);
    /* mod_proxy means to drop this connection: say so, so that a client
     * reconnects rather than reuse it. */
    r->connection->keepalive = AP_CONN_CLOSE;
    llmgw_error_brigade(r, ctx->api == LLMGW_API_OLLAMA, &err, bb, 1);
    ctx->finished = 1;
    return 1;
}

/* Before the commit point: a backend's 5xx or 429, or a connection that
 * broke, fails the attempt over when another may follow (1: dropped). */
static int attempt_failed(request_rec *r, llmgw_req_t *ctx,
                          apr_bucket_brigade *bb)
{
    apr_bucket *e;

    if (ctx->out == OUT_UNDECIDED) {
        llmgw_failover_headers(r, ctx);
        if ((r->status >= 500 || r->status == HTTP_TOO_MANY_REQUESTS)
            && llmgw_failover_retry(
                r, ctx,
                r->status == HTTP_TOO_MANY_REQUESTS ? LLMGW_EV_BUSY
                                                    : LLMGW_EV_HTTP_5XX,
                apr_psprintf(r->pool, "the backend answered %d", r->status))) {
            return 1;
        }
    }
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        if (AP_BUCKET_IS_ERROR(e)) {
            return llmgw_failover_retry(r, ctx,
                                        ctx->out == OUT_UNDECIDED
                                            ? LLMGW_EV_CONNECT_ERROR
                                            : LLMGW_EV_BAD_ANSWER,
                                        "the connection to the backend "
                                        "failed");
        }
    }
    return 0;
}

static apr_status_t out_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    llmgw_req_t *ctx = f->ctx;
    apr_status_t rv;

    if (llmgw_failover_dropping(ctx)
        || (llmgw_failover_before_commit(ctx) && !ctx->finished
            && attempt_failed(r, ctx, bb))) {
        /* An attempt given up: mod_proxy stops reading it. */
        apr_brigade_cleanup(bb);
        return APR_EGENERAL;
    }
    if (ctx->finished) {
        return pass_on(f, ctx, bb);
    }
    if (ctx->out == OUT_UNDECIDED && answer_failed_backend(f, ctx, bb)) {
        rv = ap_pass_brigade(f->next, bb);
        settle(r, ctx);
        return rv;
    }
    if (ctx->out == OUT_UNDECIDED) {
        decide_mode(r, ctx);
    }
    switch (ctx->out) {
    case OUT_PASS:
        ap_remove_output_filter(f);
        return ap_pass_brigade(f->next, bb);
    case OUT_JSON:
        if ((rv = watch_json(r, ctx, bb)) != APR_SUCCESS) {
            return rv;
        }
        rv = pass_on(f, ctx, bb);
        break;
    case OUT_WHOLE: rv = watch_whole(f, ctx, bb); break;
    default: rv = watch_stream(f, ctx, bb); break;
    }
    settle(r, ctx);
    return rv;
}

void llmgw_output_add(request_rec *r, llmgw_req_t *ctx)
{
    ap_add_output_filter_handle(out_filter_handle, ctx, r, r->connection);
}

void llmgw_output_register(void)
{
    out_filter_handle = ap_register_output_filter("LLMGW_OUT", out_filter,
                                                  NULL, AP_FTYPE_RESOURCE);
}
