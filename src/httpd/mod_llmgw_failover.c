/* mod_llmgw_failover: a request's attempts. mod_proxy's handler runs again
 * on the same request after an attempt failed before its commit point: on
 * a member of the route's balancer not tried yet, then on the routes
 * LLMFallback names, within LLMFailover's bounds. The first attempt is
 * mod_proxy's as before (the balancer picks), so the common path costs a
 * hook call; only a retry picks its member here. */
#include <stddef.h> /* before APR: offsetof for its ring macros */
#include <string.h>
#include <dlfcn.h>

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_request.h>
#include <mod_proxy.h>
#include <apr_optional_hooks.h>
#include <apr_strings.h>

#include "mod_llmgw.h"
#include "mod_llmgw_failover.h"
#include "mod_llmgw_health.h"
#include "mod_llmgw_proxy.h"

APLOG_USE_MODULE(llm_gateway);

typedef struct {
    const char *data;
    apr_size_t len;
} pending_t;

struct llmgw_failover {
    apr_pool_t *pool;           /* the request's */
    const char *path;           /* on the route's balancer */
    const llmgw_route_t *first; /* the route the request was given */
    int attempt;                /* attempts started, the running one too */
    int max_attempts;
    apr_time_t deadline;         /* no attempt starts after it */
    int next_fallback;           /* first->fallbacks: the next route's */
    apr_array_header_t *tried;   /* proxy_worker *: the route's members */
    int running;                 /* inside mod_proxy's handler */
    int committed;               /* this answer is the client's */
    int succeeded;               /* its member was charged a success */
    int failed;                  /* this attempt was given up */
    int recording;               /* the answer is recorded for the cache */
    apr_array_header_t *pending; /* pending_t: pieces kept back */
    apr_bucket_brigade *held;    /* the answer, until its commit point */
    apr_socket_t *sock;          /* the attempt's backend socket, while
                                 * mod_proxy holds its connection */
    apr_interval_time_t sock_timeout; /* as mod_proxy set it */
    apr_time_t started;               /* this attempt's start */
    apr_time_t last_read;             /* the stream's last bytes (with
                                       * LLMTokenTimeout only) */
};

static module *proxy_module_p;

/* The single place an attempt's outcome is known: it feeds the health
 * part, which counts each attempt from here, once; its own hooks count
 * only what this part does not see (see llmgw_health_observe). */
static void attempt_outcome(request_rec *r, const char *member,
                            llmgw_event_t ev)
{
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  LLMGW_LOGNO(0120) "attempt on member %s: %s",
                  member ? member : "(none)", llmgw_event_name(ev));
    llmgw_health_observe(r, member, ev);
}

static const char *current_member(request_rec *r)
{
    return apr_table_get(r->subprocess_env, "BALANCER_WORKER_NAME");
}

/* ---------------------------------------------------------------------
 * Members
 */

static proxy_balancer *find_balancer(request_rec *r, const char *name)
{
    proxy_server_conf *pconf;
    proxy_balancer *b;
    int i;

    if (!proxy_module_p
        || !(pconf = ap_get_module_config(r->server->module_config,
                                          proxy_module_p))
        || !pconf->balancers) {
        return NULL;
    }
    b = (proxy_balancer *)pconf->balancers->elts;
    for (i = 0; i < pconf->balancers->nelts; i++, b++) {
        if (b->s && strcasecmp(b->s->name, name) == 0) {
            return b;
        }
    }
    return NULL;
}

static int was_tried(const llmgw_failover_t *fo, const proxy_worker *w)
{
    int i;

    for (i = 0; i < fo->tried->nelts; i++) {
        if (APR_ARRAY_IDX(fo->tried, i, proxy_worker *) == w) {
            return 1;
        }
    }
    return 0;
}

/* Usable as mod_proxy and the health part see it: not open (HC_FAIL),
 * draining, disabled or stopped; in error only until its retry= is over
 * (mod_proxy then tries it again, ap_proxy_retry_worker: without this a
 * route all in error would never be tried again). */
static int usable(const proxy_worker *w)
{
    if (PROXY_WORKER_IS_DRAINING(w) || !PROXY_WORKER_IS_INITIALIZED(w)) {
        return 0;
    }
    if (PROXY_WORKER_IS_USABLE(w)) {
        return 1;
    }
    return (w->s->status & PROXY_WORKER_NOT_USABLE_BITMAP)
               == PROXY_WORKER_IN_ERROR
           && apr_time_now() > w->s->error_time + w->s->retry;
}

/* usable(), and not open nor half-open with its trial out in the health
 * part's table (ahead of the worker flags it mirrors). */
static int usable_now(const proxy_worker *w)
{
    return usable(w) && llmgw_health_usable(w->s->name_ex);
}

/* 1 when a is the better next member than b: hot standbys (status=+H)
 * last, as the balancer keeps them, then the least busy. */
static int better(const proxy_worker *a, const proxy_worker *b)
{
    int sa = PROXY_WORKER_IS_STANDBY(a) != 0,
        sb = PROXY_WORKER_IS_STANDBY(b) != 0;

    return sa != sb ? sa < sb : a->s->busy < b->s->busy;
}

/* The best usable member of b not tried yet, or NULL. */
static proxy_worker *untried_member(const llmgw_failover_t *fo,
                                    proxy_balancer *b)
{
    proxy_worker **ws, *best = NULL;
    int i;

    if (!b) {
        return NULL;
    }
    ws = (proxy_worker **)b->workers->elts;
    for (i = 0; i < b->workers->nelts; i++) {
        if (usable_now(ws[i]) && !was_tried(fo, ws[i])
            && (!best || better(ws[i], best))) {
            best = ws[i];
        }
    }
    return best;
}

static int has_usable(proxy_balancer *b)
{
    proxy_worker **ws;
    int i;

    ws = b ? (proxy_worker **)b->workers->elts : NULL;
    for (i = 0; ws && i < b->workers->nelts; i++) {
        if (usable_now(ws[i])) {
            return 1;
        }
    }
    return 0;
}

/* The member this attempt ran on counts as tried. */
static void note_tried(request_rec *r, llmgw_failover_t *fo, proxy_balancer *b)
{
    const char *name = current_member(r);
    proxy_worker **ws;
    int i;

    if (!b || !name) {
        return;
    }
    ws = (proxy_worker **)b->workers->elts;
    for (i = 0; i < b->workers->nelts; i++) {
        if (strcmp(ws[i]->s->name_ex, name) == 0 && !was_tried(fo, ws[i])) {
            APR_ARRAY_PUSH(fo->tried, proxy_worker *) = ws[i];
        }
    }
}

/* The next LLMFallback route with a usable member (from fo->next_fallback
 * on); *index its place. NULL: none. */
static const llmgw_route_t *next_fallback(request_rec *r,
                                          const llmgw_failover_t *fo,
                                          int *index)
{
    const llmgw_router_t *router = llmgw_routes(r);
    const apr_array_header_t *fb = fo->first->fallbacks;
    int i;

    for (i = fo->next_fallback; fb && i < fb->nelts; i++) {
        const llmgw_route_t *to =
            llmgw_router_find(router, APR_ARRAY_IDX(fb, i, const char *));

        if (to && has_usable(find_balancer(r, to->balancer))) {
            *index = i;
            return to;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * Attempts
 */

static int attempts_left(const llmgw_failover_t *fo)
{
    return fo->attempt < fo->max_attempts && apr_time_now() < fo->deadline;
}

int llmgw_failover_holding(const llmgw_req_t *ctx)
{
    return ctx->fo && !ctx->fo->committed && !ctx->fo->failed
           && ctx->fo->attempt < ctx->fo->max_attempts;
}

int llmgw_failover_dropping(const llmgw_req_t *ctx)
{
    return ctx->fo && ctx->fo->failed;
}

int llmgw_failover_before_commit(const llmgw_req_t *ctx)
{
    return ctx->fo && !ctx->fo->committed && !ctx->fo->failed;
}

/* A broken connection before the commit point: a timeout when it came
 * once the attempt's timeout ran out (mod_proxy says only "broken"). */
static llmgw_event_t refine(const llmgw_req_t *ctx, llmgw_event_t ev)
{
    const llmgw_route_t *rt = ctx->route;
    apr_interval_time_t took = apr_time_now() - ctx->fo->started;
    apr_interval_time_t t =
        ev == LLMGW_EV_CONNECT_ERROR
            ? (rt->first_byte_timeout ? rt->first_byte_timeout
                                      : rt->first_token_timeout)
            : rt->first_token_timeout;

    if (ev != LLMGW_EV_CONNECT_ERROR && ev != LLMGW_EV_BAD_ANSWER) {
        return ev;
    }
    if (!t || took < t - apr_time_from_msec(50)) {
        return ev;
    }
    return ev == LLMGW_EV_CONNECT_ERROR && rt->first_byte_timeout
               ? LLMGW_EV_TIMEOUT_FIRST_BYTE
               : LLMGW_EV_TIMEOUT_FIRST_TOKEN;
}

int llmgw_failover_retry(request_rec *r, llmgw_req_t *ctx, llmgw_event_t ev,
                         const char *why)
{
    llmgw_failover_t *fo = ctx->fo;
    proxy_balancer *b;
    int index, again;

    if (!llmgw_failover_before_commit(ctx)) {
        return 0;
    }
    ev = refine(ctx, ev);
    attempt_outcome(r, current_member(r), ev);
    b = find_balancer(r, ctx->route->balancer);
    note_tried(r, fo, b);
    again = attempts_left(fo)
            && (untried_member(fo, b) || next_fallback(r, fo, &index));
    if (!again) {
        fo->committed = 1; /* this answer, whatever it is, goes out */
        return 0;
    }
    ap_log_rerror(
        APLOG_MARK, APLOG_INFO, 0, r,
        LLMGW_LOGNO(0121) "attempt %d for model %s on %s (%s) "
                          "failed before its answer started: %s (%s); "
                          "trying again",
        fo->attempt, ctx->req.model, ctx->route->balancer,
        current_member(r) ? current_member(r) : "no member", why,
        llmgw_event_name(ev));
    fo->failed = 1;
    if (fo->held) {
        apr_brigade_cleanup(fo->held);
    }
    return 1;
}

static void set_timeout(llmgw_failover_t *fo, apr_interval_time_t t)
{
    if (fo->sock) {
        apr_socket_timeout_set(fo->sock, t ? t : fo->sock_timeout);
    }
}

void llmgw_failover_headers(request_rec *r, llmgw_req_t *ctx)
{
    if (ctx->fo && ctx->fo->sock) {
        set_timeout(ctx->fo, ctx->req.stream ? ctx->route->first_token_timeout
                                             : ctx->route->token_timeout);
    }
}

void llmgw_failover_commit(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_failover_t *fo = ctx->fo;

    if (!fo || fo->committed || fo->failed) {
        return;
    }
    fo->committed = 1;
    fo->succeeded = r->status < 400;
    set_timeout(fo, ctx->route->token_timeout);
    /* A client's error (a 4xx the backend gave, in the client's shape) is
     * the request's fault, not the member's. */
    attempt_outcome(r, current_member(r),
                    r->status < 400 ? LLMGW_EV_SUCCESS
                                    : LLMGW_EV_CLIENT_ERROR);
}

void llmgw_failover_broke(request_rec *r, llmgw_req_t *ctx, llmgw_event_t ev)
{
    llmgw_failover_t *fo = ctx->fo;
    apr_interval_time_t t = ctx->route->token_timeout;

    if (!fo || !fo->succeeded) {
        return;
    }
    if (t && fo->last_read
        && apr_time_now() - fo->last_read >= t - apr_time_from_msec(50)) {
        ev = LLMGW_EV_TIMEOUT_BETWEEN_TOKENS;
    }
    attempt_outcome(r, current_member(r), ev);
}

void llmgw_failover_read(llmgw_req_t *ctx)
{
    if (ctx->fo && ctx->fo->committed && ctx->route->token_timeout) {
        ctx->fo->last_read = apr_time_now();
    }
}

int llmgw_failover_defer_chunk(llmgw_req_t *ctx, const char *data,
                               apr_size_t len)
{
    llmgw_failover_t *fo = ctx->fo;
    pending_t *p;

    if (!llmgw_failover_holding(ctx)) {
        return 0;
    }
    p = apr_array_push(fo->pending);
    p->data = apr_pmemdup(fo->pool, data, len);
    p->len = len;
    return 1;
}

void llmgw_failover_flush_chunks(llmgw_req_t *ctx,
                                 void (*fn)(void *, const char *, apr_size_t),
                                 void *baton)
{
    llmgw_failover_t *fo = ctx->fo;
    int i;

    for (i = 0; fo && i < fo->pending->nelts; i++) {
        pending_t *p = &APR_ARRAY_IDX(fo->pending, i, pending_t);

        fn(baton, p->data, p->len);
    }
    if (fo) {
        fo->pending->nelts = 0;
    }
}

int llmgw_failover_hold(ap_filter_t *f, llmgw_req_t *ctx,
                        apr_bucket_brigade *bb, apr_off_t max)
{
    llmgw_failover_t *fo = ctx->fo;
    apr_off_t held = 0;

    if (!fo->held) {
        fo->held = apr_brigade_create(fo->pool, f->c->bucket_alloc);
    }
    if (ap_save_brigade(f, &fo->held, &bb, fo->pool) != APR_SUCCESS
        || apr_brigade_length(fo->held, 0, &held) != APR_SUCCESS
        || held > max) {
        /* Too much to hold (or it could not be kept): it goes out now,
         * and this attempt's answer is the client's. */
        fo->committed = 1;
        llmgw_failover_unhold(ctx, bb);
        return 0;
    }
    return 1;
}

void llmgw_failover_unhold(llmgw_req_t *ctx, apr_bucket_brigade *bb)
{
    if (ctx->fo && ctx->fo->held && !APR_BRIGADE_EMPTY(ctx->fo->held)) {
        APR_BRIGADE_PREPEND(bb, ctx->fo->held);
    }
}

/* The answer's state made new for the next attempt: nothing of the last
 * reached the client, the cache or followers. */
static void reset_answer(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_failover_t *fo = ctx->fo;

    ctx->out = OUT_UNDECIDED;
    ctx->finished = 0;
    ctx->sse = NULL;
    ctx->from_ollama = NULL;
    ctx->tail_len = 0;
    if (ctx->bb) {
        apr_brigade_cleanup(ctx->bb);
    }
    ctx->complete = 0;
    ctx->stream_ended = 0;
    ctx->copy.len = 0;
    ctx->bad_answer = NULL;
    ctx->body_sent = 0;
    ctx->eos_sent = 0;
    /* A fallback's answer is another model's: not kept under this key. */
    ctx->rec =
        fo->recording && ctx->route == fo->first
            ? llmgw_record_create(r->pool, ctx->ep, ctx->store->max_item)
            : NULL;
    fo->pending->nelts = 0;
    fo->committed = 0;
    fo->succeeded = 0;
    fo->failed = 0;
    fo->sock = NULL;
    fo->last_read = 0;
    if (fo->held) {
        apr_brigade_cleanup(fo->held);
    }
    r->status = HTTP_OK;
    r->status_line = NULL;
    r->content_type = NULL;
    r->content_encoding = NULL;
    apr_table_clear(r->headers_out);
    apr_table_unset(r->notes, "proxy_timedout");
    /* mod_proxy_http keeps the body it read for its own retries; ours is
     * served again from its start by LLMGW_BODY. */
    apr_pool_userdata_setn(NULL, "proxy-req-input", NULL, r->pool);
}

/* Sets the next attempt up: another member of this route, else the next
 * fallback route. 0: there is none (or the fallback's body cannot be
 * made). */
static int next_attempt(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_failover_t *fo = ctx->fo;
    const llmgw_route_t *to;
    const char *path;
    int index;

    if (!attempts_left(fo)) {
        return 0;
    }
    if (!untried_member(fo, find_balancer(r, ctx->route->balancer))) {
        if (!(to = next_fallback(r, fo, &index))) {
            return 0;
        }
        fo->next_fallback = index + 1;
        fo->tried->nelts = 0;
        if (llmgw_proxy_reroute(r, ctx, to, &path)) {
            return 0;
        }
        fo->path = path;
    }
    else {
        /* The front keeps a stream's state: a new one for the answer. */
        ctx->front =
            llmgw_front_create(r->pool, ctx->oep, ctx->ep, ctx->upstream_model,
                               apr_time_sec(r->request_time));
    }
    reset_answer(r, ctx);
    llmgw_proxy_target(r, ctx, fo->path);
    fo->attempt++;
    fo->started = apr_time_now();
    return 1;
}

/* mod_proxy answered with an error of its own (no backend answer went
 * through the output filter): the event it stands for. */
static llmgw_event_t status_event(request_rec *r, int status)
{
    if (apr_table_get(r->notes, "proxy_timedout")) {
        return LLMGW_EV_TIMEOUT_FIRST_BYTE;
    }
    return status == HTTP_GATEWAY_TIME_OUT ? LLMGW_EV_TIMEOUT_FIRST_BYTE
                                           : LLMGW_EV_CONNECT_ERROR;
}

/* Seconds until a member of the route's balancer may be back (mod_proxy's
 * retry= after an error), at least 1. */
static const char *retry_after(request_rec *r, const llmgw_route_t *route)
{
    proxy_balancer *b = find_balancer(r, route->balancer);
    apr_time_t now = apr_time_now(), soonest = 0;
    proxy_worker **ws;
    int i;

    ws = b ? (proxy_worker **)b->workers->elts : NULL;
    for (i = 0; ws && i < b->workers->nelts; i++) {
        apr_time_t back = ws[i]->s->error_time + ws[i]->s->retry;

        if ((ws[i]->s->status & PROXY_WORKER_IN_ERROR) && back > now
            && (!soonest || back < soonest)) {
            soonest = back;
        }
    }
    return apr_ltoa(r->pool,
                    soonest ? (long)apr_time_sec(soonest - now) + 1 : 1);
}

/* A route with no usable member (all in error, open, draining or
 * disabled) goes to its first fallback with one at once: no attempt, no
 * timeout to wait, on members known to be down. */
static void skip_unusable_route(request_rec *r, llmgw_req_t *ctx)
{
    llmgw_failover_t *fo = ctx->fo;
    const llmgw_route_t *to;
    const char *path;
    int index;

    if (!fo->first->fallbacks
        || has_usable(find_balancer(r, ctx->route->balancer))
        || !(to = next_fallback(r, fo, &index))) {
        return;
    }
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  LLMGW_LOGNO(0122) "no usable member on %s for model %s: "
                                    "route %s serves it",
                  ctx->route->balancer, ctx->req.model, to->name);
    fo->next_fallback = index + 1;
    if (llmgw_proxy_reroute(r, ctx, to, &path) == 0) {
        fo->path = path;
        reset_answer(r, ctx);
        llmgw_proxy_target(r, ctx, path);
    }
}

/* The handler around mod_proxy's: each attempt is mod_proxy's handler run
 * on r; one that failed before its commit point is run again. */
static int run_attempts(request_rec *r)
{
    llmgw_req_t *ctx;
    llmgw_failover_t *fo;
    int status;

    if (!r->handler || strcmp(r->handler, "proxy-server") != 0
        || !(ctx = llmgw_req_get(r)) || !(fo = ctx->fo) || fo->running) {
        return DECLINED;
    }
    skip_unusable_route(r, ctx);
    for (;;) {
        fo->running = 1;
        status = ap_run_handler(r);
        fo->running = 0;
        if (!fo->failed
            && (ctx->out != OUT_UNDECIDED || ctx->finished
                || !ap_is_HTTP_SERVER_ERROR(status)
                || !llmgw_failover_retry(r, ctx, status_event(r, status),
                                         "mod_proxy could not get an "
                                         "answer"))) {
            break;
        }
        if (!next_attempt(r, ctx)) {
            /* Members went away since the attempt failed: none left, and
             * the error answer must get through the output filter. */
            reset_answer(r, ctx);
            fo->committed = 1;
            status = HTTP_SERVICE_UNAVAILABLE;
            break;
        }
    }
    if (status == HTTP_SERVICE_UNAVAILABLE) {
        apr_table_setn(r->err_headers_out, "Retry-After",
                       retry_after(r, ctx->route));
    }
    apr_table_setn(r->notes, LLMGW_NOTE_ATTEMPTS,
                   apr_itoa(r->pool, fo->attempt));
    if (current_member(r)) {
        apr_table_setn(r->notes, LLMGW_NOTE_MEMBER, current_member(r));
    }
    return status;
}

static apr_status_t busy_done(void *data)
{
    proxy_worker *w = data;

    if (w->s->busy) {
        w->s->busy--;
    }
    return APR_SUCCESS;
}

/* proxy's pre_request, before the balancer's: a retry's member is the
 * least busy usable one not tried yet (the balancer could pick the one
 * that just failed). The first attempt is the balancer's. */
static int pick_member(proxy_worker **worker, proxy_balancer **balancer,
                       request_rec *r, proxy_server_conf *conf, char **url)
{
    llmgw_req_t *ctx = llmgw_req_get(r);
    llmgw_failover_t *fo = ctx ? ctx->fo : NULL;
    proxy_balancer *b;
    proxy_worker *w;
    const char *path;
    apr_size_t n;

    if (!fo || !fo->running || !fo->tried->nelts
        || strncasecmp(*url, "balancer://", 11) != 0) {
        return DECLINED;
    }
    b = *balancer ? *balancer : find_balancer(r, ctx->route->balancer);
    if (!b) {
        return DECLINED;
    }
    if (!(w = untried_member(fo, b))) {
        /* Not a member that failed this request again. */
        return HTTP_SERVICE_UNAVAILABLE;
    }
    APR_ARRAY_PUSH(fo->tried, proxy_worker *) = w;
    *balancer = b;
    *worker = w;
    /* What the balancer does for the member it picks. */
    w->s->busy++;
    apr_pool_cleanup_register(r->pool, w, busy_done, apr_pool_cleanup_null);
    apr_table_setn(r->subprocess_env, "BALANCER_NAME", b->s->name);
    apr_table_setn(r->subprocess_env, "BALANCER_WORKER_NAME", w->s->name_ex);
    apr_table_setn(r->subprocess_env, "BALANCER_WORKER_ROUTE", w->s->route);
    path = ap_strchr_c(*url + 11, '/');
    n = strlen(w->s->name_ex);
    r->filename = apr_pstrcat(
        r->pool, "proxy:",
        apr_pstrmemdup(r->pool, w->s->name_ex,
                       n && w->s->name_ex[n - 1] == '/' ? n - 1 : n),
        path ? path : "/", NULL);
    *url = r->filename + 6;
    return OK;
}

/* proxy's create_req: the backend connection of this attempt; its socket
 * gets the route's first-byte (else first-token) timeout until the
 * answer's headers, and mod_proxy's own back when the connection is
 * released (the backend request's pool goes then). */
static apr_status_t restore_timeout(void *data)
{
    llmgw_failover_t *fo = data;

    if (fo->sock) {
        apr_socket_timeout_set(fo->sock, fo->sock_timeout);
        fo->sock = NULL;
    }
    return APR_SUCCESS;
}

static int backend_request(request_rec *r, request_rec *rp)
{
    llmgw_req_t *ctx = r->main ? NULL : llmgw_req_get(r);
    llmgw_failover_t *fo = ctx ? ctx->fo : NULL;
    const llmgw_route_t *route;
    apr_interval_time_t t;

    if (!fo || !fo->running) {
        return OK;
    }
    route = ctx->route;
    t = route->first_byte_timeout ? route->first_byte_timeout
                                  : route->first_token_timeout;
    if (!t && !route->token_timeout) {
        return OK;
    }
    fo->sock = ap_get_conn_socket(rp->connection);
    if (!fo->sock
        || apr_socket_timeout_get(fo->sock, &fo->sock_timeout)
               != APR_SUCCESS) {
        fo->sock = NULL;
        return OK;
    }
    apr_pool_cleanup_register(rp->pool, fo, restore_timeout,
                              apr_pool_cleanup_null);
    if (t) {
        apr_socket_timeout_set(fo->sock, t);
    }
    return OK;
}

void llmgw_failover_arm(request_rec *r, llmgw_req_t *ctx, const char *path)
{
    const llmgw_route_t *route = ctx->route;
    llmgw_failover_t *fo = apr_pcalloc(r->pool, sizeof(*fo));

    fo->pool = r->pool;
    fo->path = path;
    fo->first = route;
    fo->attempt = 1;
    fo->max_attempts = route->max_attempts ? route->max_attempts
                                           : LLMGW_DEFAULT_FAILOVER_ATTEMPTS;
    fo->deadline = r->request_time
                   + (route->failover_time ? route->failover_time
                                           : LLMGW_DEFAULT_FAILOVER_TIME);
    fo->tried = apr_array_make(r->pool, 2, sizeof(proxy_worker *));
    fo->pending = apr_array_make(r->pool, 2, sizeof(pending_t));
    fo->recording = ctx->rec != NULL;
    fo->started = apr_time_now();
    ctx->fo = fo;
}

void llmgw_failover_pre_config(void)
{
    static const char *const before_balancer[] = { "mod_proxy_balancer.c",
                                                   NULL };
    void (*hook)(proxy_HOOK_pre_request_t *, const char *const *,
                 const char *const *, int);
    void *sym;

    proxy_module_p = ap_find_linked_module("mod_proxy.c");
    /* An external hook of mod_proxy's: linking to it would tie loading
     * this module to mod_proxy's being loaded first. */
    sym = dlsym(RTLD_DEFAULT, "proxy_hook_pre_request");
    if (sym) {
        memcpy(&hook, &sym, sizeof(hook));
        hook(pick_member, NULL, before_balancer, APR_HOOK_FIRST);
    }
}

void llmgw_failover_register(void)
{
    ap_hook_handler(run_attempts, NULL, NULL, APR_HOOK_REALLY_FIRST);
    APR_OPTIONAL_HOOK(proxy, create_req, backend_request, NULL, NULL,
                      APR_HOOK_MIDDLE);
}
