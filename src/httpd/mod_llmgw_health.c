/* mod_llmgw_health: the health table in shared memory, what each proxied
 * request tells of its member, active probes on mod_watchdog, the
 * breaker's state in mod_proxy's worker flags (so every child, lbmethod
 * and balancer-manager see it), and the llm_affinity lbmethod. */
#include <dlfcn.h>
#include <stddef.h> /* before APR: offsetof for its ring macros */
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <http_request.h>
#include <util_filter.h>
#include <mod_proxy.h>
#include <mod_watchdog.h>
#include <apr_date.h>
#include <apr_hash.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <ap_provider.h>

#include "llmgw_conf.h"
#include "llmgw_health.h"
#include "llmgw_json.h"
#include "mod_llmgw.h"
#include "mod_llmgw_health.h"
#include "mod_llmgw_members.h"

APLOG_USE_MODULE(llm_gateway);

/* The start of an error answer kept to tell "loading" or "busy" from a
 * failure (llama.cpp's and Ollama's say so in a few dozen bytes). */
#define BODY_KEPT 1024
/* How often a child brings the workers' flags up to date with the
 * breakers (an open breaker turns half-open by time alone). */
#define SWEEP_EVERY apr_time_from_msec(50)
/* Room for members a graceful restart adds without a new table. */
#define SPARE_MEMBERS 16
/* How often a child looks again for the workers of a member another
 * child added, while it has not found them. */
#define LEARN_RETRY apr_time_from_sec(1)
/* The probes' watchdog (one thread in one child: one writer per member). */
#define PROBE_WATCHDOG "_llmgw_probes_"
#define PROBE_UA "mod_llm_gateway-probe"
#define LLMGW_LBMETHOD "llm_affinity"

/* LLMHealthCheck of a route: its balancer's probes. */
typedef struct {
    const llmgw_route_t *route;
    llmgw_probe_kind_t kinds[LLMGW_PROBE_SET_MAX];
    int nkinds; /* 0: those of the route's dialect */
    apr_interval_time_t interval;
    apr_interval_time_t timeout;
} check_t;

/* LLMCapacity of a route: how many requests each member of its balancer
 * is sent at once, and how the rest wait. */
typedef struct {
    const llmgw_route_t *route;
    apr_int64_t max;          /* 0: as its probes count its slots */
    apr_int64_t queue;        /* waiting requests per member, at most */
    apr_interval_time_t wait; /* how long one waits, at most */
    int models;               /* models a member holds at once; 0: any
                               * number (no grouping by model) */
    apr_interval_time_t hold; /* a model's turn while others wait */
} cap_t;

/* LLMWarmup of a route: its model kept loaded on one of its members. */
typedef struct {
    const llmgw_route_t *route;
    const char *keep_alive; /* Ollama's keep_alive for the load */
    apr_time_t next;        /* the watchdog's: when to look again */
} warm_t;

/* A load waits for the model to be loaded, longer than a probe. */
#define WARM_TIMEOUT apr_time_from_sec(120)

/* How often a waiting request looks for a place again. */
#define ADMIT_POLL apr_time_from_msec(5)

/* ---- configuration (one per generation, the table is global) ------- */

static struct {
    int breaker; /* LLMBreaker on: passive checks feed the breakers */
    llmgw_breaker_params_t bp;
    llmgw_health_params_t hp;
    llmgw_aff_params_t ap;
    apr_array_header_t *checks; /* check_t */
    apr_array_header_t *caps;   /* cap_t */
    apr_array_header_t *warms;  /* warm_t */
} cf;

/* A balancer a route uses: its members are the table's, those added at
 * run time too. */
typedef struct {
    proxy_balancer *b;
    server_rec *s;
    proxy_server_conf *pc;
    apr_array_header_t *models; /* const char *: its routes' models */
    const check_t *check;       /* the first check of its routes */
    const cap_t *cap;           /* the first capacity of its routes */
    int affinity;               /* llm_affinity's */
} cover_t;

/* What this process knows of a member besides the table. Learned at
 * post_config for the members there, later (sweep) for those another
 * child added; its arrays have room for every balancer and model, so
 * that learning never moves them under a reader (nelts grows after the
 * element is written). */
typedef struct {
    apr_array_header_t *workers; /* proxy_worker *, one per balancer */
    int drain;                   /* half-open shows as draining: only
                                  * where something sends its trial */
    int other_lb;                /* a balancer of it is not llm_affinity's */
    const check_t *check;        /* its probes, or NULL */
    const cap_t *cap;            /* its capacity, or NULL */
    apr_array_header_t *models;  /* const char *: its routes' models */
    llmgw_probe_kind_t kinds[LLMGW_PROBE_SET_MAX];
    int nkinds;
    unsigned epoch;   /* the table's when learned; 0: not yet */
    apr_time_t retry; /* when to look for its workers again */
    /* the watchdog's */
    proxy_worker *hc; /* the probes' own worker (connections) */
    apr_time_t next_probe;
} member_t;

/* How many workers member m has here: read as learning publishes them
 * (another thread may be adding one). */
#define WORKERS(m) \
    __atomic_load_n(&members[m].workers->nelts, __ATOMIC_ACQUIRE)

static llmgw_health_t *table;
static member_t *members; /* by the table's index, one for each entry */
static int nmembers;      /* entries of the table (taken or not) */
static apr_array_header_t *covers;   /* cover_t */
static apr_thread_mutex_t *learning; /* one thread learns at a time */
static apr_time_t next_sweep;

const llmgw_health_t *llmgw_health_table(void)
{
    return table;
}

/* What a proxied request showed of its member so far. */
typedef struct {
    int attempts;   /* mod_proxy's tries at members */
    int trial;      /* the breaker's trial token it holds */
    int status;     /* the backend's status; 0: no answer yet */
    int err_status; /* mod_proxy's error bucket before an answer */
    int broke;      /* the answer broke off after it began */
    int observed;   /* its outcome went to the table */
    int admitted;   /* the member it holds a place of; -1: none */
    int grouped;    /* the member whose model slot it holds; -1 */
    int slot;       /* that slot */
    /* With failover, mod_proxy's handler runs once per attempt: */
    int ended;    /* post_request ran: a next run is another attempt */
    int reported; /* the failover part told this attempt's outcome */
    int success;  /* the member of its reported success, fed once the
                   * attempt ends (a failure after it replaces it); -1 */
    char *body;   /* BODY_KEPT bytes, for an error answer only */
    apr_size_t len;
    /* How long it waited for its model's turn, in all (models=N). */
    apr_interval_time_t held;
} hreq_t;

static const char hreq_key[] = "llmgw-health-req";
static ap_filter_rec_t *watch_handle;
static int any_cap;    /* a member has LLMCapacity */
static int any_models; /* one with models=N: grouping by model */

/* A function of mod_proxy's, found when the configuration has been read:
 * mod_proxy may load after this module (Debian loads mods-enabled/ in
 * alphabetical order), and without it this module must still load, for
 * check_config to say what is missing. NULL if it is not loaded. */
static void *proxy_fn(const char *name)
{
    void *self = dlopen(NULL, RTLD_NOW), *fn = NULL;

    if (self) {
        fn = dlsym(self, name);
        dlclose(self);
    }
    return fn;
}

static int pre_request(proxy_worker **worker, proxy_balancer **balancer,
                       request_rec *r, proxy_server_conf *conf, char **url);
static int post_request(proxy_worker *worker, proxy_balancer *balancer,
                        request_rec *r, proxy_server_conf *conf);
static int admit(request_rec *r, proxy_worker *worker, proxy_server_conf *conf,
                 char *url, const char *proxyhost, apr_port_t proxyport);

/* mod_proxy's pre_request and post_request hooks, before
 * mod_proxy_balancer's (which end them); httpd sorts the hooks again once
 * the configuration is read. */
static void proxy_hooks(void)
{
    void (*hook_pre)(proxy_HOOK_pre_request_t *, const char *const *,
                     const char *const *, int);
    void (*hook_post)(proxy_HOOK_post_request_t *, const char *const *,
                      const char *const *, int);
    void (*hook_scheme)(proxy_HOOK_scheme_handler_t *, const char *const *,
                        const char *const *, int);

    *(void **)&hook_pre = proxy_fn("proxy_hook_pre_request");
    *(void **)&hook_post = proxy_fn("proxy_hook_post_request");
    *(void **)&hook_scheme = proxy_fn("proxy_hook_scheme_handler");
    if (hook_pre && hook_post && hook_scheme) {
        hook_pre(pre_request, NULL, NULL, APR_HOOK_REALLY_FIRST);
        hook_post(post_request, NULL, NULL, APR_HOOK_REALLY_FIRST);
        /* Before mod_proxy_http's: a request waits for its member. */
        hook_scheme(admit, NULL, NULL, APR_HOOK_REALLY_FIRST);
    }
}

void llmgw_health_pre_config(apr_pool_t *pconf)
{
    proxy_hooks();
    cf.breaker = 0;
    cf.checks = apr_array_make(pconf, 4, sizeof(check_t));
    cf.caps = apr_array_make(pconf, 4, sizeof(cap_t));
    cf.warms = apr_array_make(pconf, 4, sizeof(warm_t));
    llmgw_breaker_params_default(&cf.bp);
    llmgw_health_params_default(&cf.hp);
    llmgw_affinity_params_default(&cf.ap);
    table = NULL;
    any_cap = any_models = 0;
    members = NULL;
    nmembers = 0;
    covers = NULL;
    learning = NULL;
}

/* ---- the worker flags ---------------------------------------------- */

/* One of mod_proxy's status bits on w, as ap_proxy_set_wstatus sets it
 * (a plain read-modify-write: each sweep asserts it again). */
static void set_flag(proxy_worker *w, unsigned int bit, int on)
{
    if (on && !(w->s->status & bit)) {
        w->s->status |= bit;
    }
    else if (!on && (w->s->status & bit)) {
        w->s->status &= ~bit;
    }
}

/* The flags member m's breaker calls for, on each of its workers: what
 * the table's record says changed is set or cleared, and what is wanted
 * is asserted again (another writer may have lost it). */
static void mirror(int m, apr_time_t now)
{
    llmgw_member_view_t v;
    unsigned want, set, clear;
    int i;

    /* Only a process that has its workers records what they show. */
    if (!WORKERS(m) || llmgw_health_member(table, m, now, &cf.hp, &v) != 0) {
        return;
    }
    /* Probes tell loading apart: route around it, without a failure. */
    want = llmgw_health_mirror_want(&v, members[m].check != NULL);
    if (!members[m].drain) {
        want &= ~LLMGW_MIRROR_DRAIN;
    }
    llmgw_health_mirror_swap(table, m, want, &set, &clear);
    for (i = 0; i < WORKERS(m); i++) {
        proxy_worker *w = APR_ARRAY_IDX(members[m].workers, i, proxy_worker *);

        if ((want | clear) & LLMGW_MIRROR_FAIL) {
            set_flag(w, PROXY_WORKER_HC_FAIL, want & LLMGW_MIRROR_FAIL);
        }
        if ((want | clear) & LLMGW_MIRROR_DRAIN) {
            set_flag(w, PROXY_WORKER_DRAIN, want & LLMGW_MIRROR_DRAIN);
        }
    }
}

/* Entries taken so far (members joined since post_config included). */
static int taken(void)
{
    int n = (int)llmgw_health_count(table);

    return n < nmembers ? n : nmembers;
}

static void learn_due(apr_time_t now);
static void learn(int m, unsigned e, apr_time_t now);

/* A member another child added and this one has not learned yet (a
 * request to it may come before this child's next sweep): learned now.
 * One load for a member learned. */
static void learn_if_new(int m, apr_time_t now)
{
    if (!__atomic_load_n(&members[m].epoch, __ATOMIC_ACQUIRE)
        && now >= members[m].retry) {
        learn(m, llmgw_health_epoch(table, m), now);
    }
}

static void sweep(apr_time_t now)
{
    int m, n;

    if (now < next_sweep) {
        return;
    }
    next_sweep = now + SWEEP_EVERY;
    learn_due(now);
    for (m = 0, n = taken(); m < n; m++) {
        mirror(m, now);
    }
}

/* ---- what requests tell -------------------------------------------- */

static llmgw_req_t *req_ctx(request_rec *r)
{
    llmgw_req_t *ctx = llmgw_req_get(r);

    return ctx || !r->main ? ctx : llmgw_req_get(r->main);
}

static hreq_t *hreq(request_rec *r)
{
    void *hr = NULL;

    apr_pool_userdata_get(&hr, hreq_key, r->pool);
    return hr;
}

static int member_of(const char *name)
{
    int m = name ? llmgw_health_find(table, name) : -1;

    return m < nmembers ? m : -1;
}

static void log_change(request_rec *r, int m, llmgw_event_t ev,
                       const llmgw_breaker_t *before,
                       const llmgw_breaker_t *after)
{
    ap_log_rerror(
        APLOG_MARK, after->state == LLMGW_BR_OPEN ? APLOG_WARNING : APLOG_INFO,
        0, r, LLMGW_LOGNO(0701) "member %s: breaker %s -> %s after %s",
        llmgw_health_name(table, m), llmgw_br_state_name(before->state),
        llmgw_br_state_name(after->state), llmgw_event_name(ev));
}

/* Event ev of r's attempt on member m, into the table. A request that
 * holds no trial may still take a half-open member's where nothing
 * sends trials (no llm_affinity, no probes): its outcome tells. */
static void feed(request_rec *r, hreq_t *hr, int m, llmgw_event_t ev)
{
    llmgw_req_t *ctx = req_ctx(r);
    const char *model = ctx ? ctx->upstream_model : NULL;
    apr_time_t now = apr_time_now();
    llmgw_breaker_t before, after;
    int trial = hr ? hr->trial : LLMGW_BR_NO_TRIAL;

    if (hr) {
        hr->trial = LLMGW_BR_NO_TRIAL;
    }
    ev = llmgw_health_classify(table, m, ev, model, now, &cf.hp);
    if (model && (ev == LLMGW_EV_SUCCESS || ev == LLMGW_EV_LOADING)) {
        llmgw_health_hint(table, m, model,
                          ev == LLMGW_EV_SUCCESS ? LLMGW_HINT_SERVED
                                                 : LLMGW_HINT_LOADING,
                          now);
    }
    if (!cf.breaker) {
        return;
    }
    if (trial == LLMGW_BR_NO_TRIAL && !members[m].drain) {
        llmgw_health_claim(table, m, now, &cf.bp, &trial);
    }
    if (llmgw_health_event(table, m, ev, trial, now, &cf.bp, &before, &after)
        == 1) {
        log_change(r, m, ev, &before, &after);
        mirror(m, now);
    }
}

/* An attempt of r's is one outcome: a success (its commit point) waits
 * for the attempt's end, where a break after it stands instead. */
void llmgw_health_observe(request_rec *r, const char *member, llmgw_event_t ev)
{
    int m = table ? member_of(member) : -1;
    hreq_t *hr = hreq(r);

    if (m < 0 || ev >= LLMGW_EV_COUNT) {
        return;
    }
    if (hr && !r->main) {
        hr->reported = 1;
        if (ev == LLMGW_EV_SUCCESS && !hr->ended) {
            hr->success = m;
            return;
        }
        hr->success = -1;
    }
    feed(r, hr, m, ev);
}

int llmgw_health_usable(const char *member)
{
    int m = table ? member_of(member) : -1;
    llmgw_member_view_t v;

    if (m < 0 || llmgw_health_member(table, m, apr_time_now(), &cf.hp, &v)) {
        return 1;
    }
    /* The breaker's verdict only: mod_proxy's own flags (an error state
     * whose retry= is over counts again) are the caller's to read. */
    return !(v.br_state == LLMGW_BR_OPEN
             || (v.br_state == LLMGW_BR_HALF_OPEN && !v.trial_free));
}

/* What the backend's answer was, as it passes (the first bytes of an
 * error answer kept): before LLMGW_OUT, which may change the status. */
static apr_status_t watch_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    hreq_t *hr = f->ctx;
    apr_bucket *e;

    if (hr->observed) {
        ap_remove_output_filter(f); /* what follows is our own error */
        return ap_pass_brigade(f->next, bb);
    }
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        const char *data;
        apr_size_t n;

        if (AP_BUCKET_IS_ERROR(e)) {
            if (hr->status) {
                hr->broke = 1;
            }
            else {
                hr->err_status = ((ap_bucket_error *)e->data)->status;
            }
            continue;
        }
        if (!hr->status) {
            hr->status = f->r->status;
        }
        if (hr->status >= 400 && hr->len < BODY_KEPT
            && !APR_BUCKET_IS_METADATA(e)
            && apr_bucket_read(e, &data, &n, APR_BLOCK_READ) == APR_SUCCESS) {
            if (!hr->body) {
                hr->body = apr_palloc(f->r->pool, BODY_KEPT);
            }
            n = n < BODY_KEPT - hr->len ? n : BODY_KEPT - hr->len;
            memcpy(hr->body + hr->len, data, n);
            hr->len += n;
        }
    }
    return ap_pass_brigade(f->next, bb);
}

/* Failover runs mod_proxy's handler again on the request: what the last
 * run showed is forgotten (the filter stays: nothing passed it since). */
static void new_attempt(hreq_t *hr)
{
    hr->attempts = 0;
    hr->status = hr->err_status = 0;
    hr->broke = 0;
    hr->observed = hr->ended = hr->reported = 0;
    hr->success = -1;
    hr->len = 0;
}

/* Each try of mod_proxy at a member: a try after the first means the one
 * before could not connect (mod_proxy tries again only then), and
 * mod_proxy_balancer's BALANCER_WORKER_NAME still names it. */
static int pre_request(proxy_worker **worker, proxy_balancer **balancer,
                       request_rec *r, proxy_server_conf *conf, char **url)
{
    hreq_t *hr;

    if (!table || !*url || strncasecmp(*url, "balancer:", 9) != 0
        || !req_ctx(r)) {
        return DECLINED;
    }
    sweep(apr_time_now());
    if (!(hr = hreq(r))) {
        hr = apr_pcalloc(r->pool, sizeof(*hr));
        hr->trial = LLMGW_BR_NO_TRIAL;
        hr->admitted = hr->grouped = -1;
        hr->success = -1;
        apr_pool_userdata_setn(hr, hreq_key, NULL, r->pool);
        if (!r->main) {
            ap_add_output_filter_handle(watch_handle, hr, r, r->connection);
        }
    }
    else if (hr->ended) {
        new_attempt(hr);
    }
    if (hr->attempts++ > 0) {
        int m = member_of(
            apr_table_get(r->subprocess_env, "BALANCER_WORKER_NAME"));

        if (m >= 0) {
            feed(r, hr, m, LLMGW_EV_CONNECT_ERROR);
        }
    }
    return DECLINED;
}

/* ---- capacity ------------------------------------------------------ */

static apr_status_t release_place(void *data)
{
    hreq_t *hr = data;

    if (hr->admitted >= 0 && table) {
        llmgw_health_release(table, hr->admitted);
        hr->admitted = -1;
    }
    if (hr->grouped >= 0 && table) {
        llmgw_group_leave(llmgw_health_group(table, hr->grouped), hr->slot,
                          apr_time_now());
        hr->grouped = -1;
    }
    return APR_SUCCESS;
}

/* The refusal of a request that found no place: 429 (mod_proxy passes it
 * on as it is, where a 503 would mark the member in error), in the
 * client's API by the error filter, with a hint when to come back. */
static int refuse(request_rec *r, int m, const char *why)
{
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  LLMGW_LOGNO(0707) "member %s: %s; refused with 429",
                  llmgw_health_name(table, m), why);
    apr_table_setn(r->err_headers_out, "Retry-After", "1");
    return HTTP_TOO_MANY_REQUESTS;
}

/* Where a member holds fewer models than it is asked for (models=N): the
 * request waits for a slot of its model (llmgw_group), in the capacity
 * queue's bounds (count and deadline), and keeps it as its place. Its
 * wait goes to X-LLM-Hold-Ms, so that no wait moved from the member's
 * loads into the gateway goes unseen. OK, or the refusal. */
static int group_wait(request_rec *r, hreq_t *hr, int m, const cap_t *cap,
                      apr_time_t deadline)
{
    llmgw_group_t *g = llmgw_health_group(table, m);
    const llmgw_req_t *ctx = req_ctx(r);
    apr_time_t start = apr_time_now(), now = start;
    apr_uint32_t h;
    int counted = 0, slot, st = OK;

    if (!g || !ctx || !ctx->upstream_model) {
        return OK;
    }
    h = llmgw_group_hash(ctx->upstream_model);
    while (llmgw_group_enter(g, cap->models, h, cap->hold, now, &slot)
           == LLMGW_GROUP_HELD) {
        if (!counted && !(counted = llmgw_group_hold(g, cap->queue))) {
            st = refuse(r, m, "its queue is full");
            break;
        }
        if (now >= deadline) {
            st = refuse(r, m, "no turn for its model within the wait");
            break;
        }
        apr_sleep(ADMIT_POLL);
        now = apr_time_now();
    }
    if (counted) {
        llmgw_group_unhold(g);
    }
    if (st == OK) {
        hr->grouped = m;
        hr->slot = slot;
        apr_pool_cleanup_register(r->pool, hr, release_place,
                                  apr_pool_cleanup_null);
    }
    hr->held += now - start;
    apr_table_setn(r->err_headers_out, "X-LLM-Hold-Ms",
                   apr_psprintf(r->pool, "%.1f", (double)hr->held / 1000.0));
    return st;
}

/* mod_proxy's scheme handler, first: a request for a member with a
 * capacity waits for a place (its queue bounded in count and time) and
 * holds it until the request's pool goes; then mod_proxy_http sends it. */
static int admit(request_rec *r, proxy_worker *worker, proxy_server_conf *conf,
                 char *url, const char *proxyhost, apr_port_t proxyport)
{
    hreq_t *hr = table && any_cap ? hreq(r) : NULL;
    int m = hr ? member_of(worker->s->name_ex) : -1, queued = 0;
    apr_time_t now = apr_time_now(), deadline;
    const cap_t *cap;
    apr_int64_t limit;

    if (m >= 0) {
        learn_if_new(m, now);
    }
    cap = m >= 0 ? members[m].cap : NULL;
    if (!cap || hr->admitted == m) {
        return DECLINED;
    }
    release_place(hr); /* mod_proxy tries another member */
    deadline = now + cap->wait;
    if (cap->models > 0) {
        int st = group_wait(r, hr, m, cap, deadline);

        if (st != OK) {
            return st;
        }
        now = apr_time_now();
    }
    for (;;) {
        limit = llmgw_health_limit(table, m, cap->max, now, &cf.hp);
        switch (llmgw_health_admit_step(table, m, limit, cap->queue, deadline,
                                        now, &queued)) {
        case LLMGW_ADMIT_GO:
            hr->admitted = m; /* counted even without a limit */
            apr_pool_cleanup_register(r->pool, hr, release_place,
                                      apr_pool_cleanup_null);
            return DECLINED;
        case LLMGW_ADMIT_FULL: return refuse(r, m, "its queue is full");
        case LLMGW_ADMIT_TIMEOUT:
            return refuse(r, m, "no place within the wait");
        default: break;
        }
        apr_sleep(ADMIT_POLL);
        now = apr_time_now();
    }
}

/* The outcome of the last try, as mod_proxy ends: no answer at all (its
 * status is mod_proxy's), an answer by its status and body, or one that
 * broke off. */
static llmgw_event_t outcome(request_rec *r, const hreq_t *hr)
{
    const llmgw_req_t *ctx = req_ctx(r);
    int timedout = apr_table_get(r->notes, "proxy_timedout") != NULL;
    int status = hr->err_status ? hr->err_status : r->status;

    if (r->connection->aborted) {
        return LLMGW_EV_CLIENT_ABORT;
    }
    if (!hr->status) {
        switch (status) {
        case HTTP_SERVICE_UNAVAILABLE: return LLMGW_EV_CONNECT_ERROR;
        case HTTP_GATEWAY_TIME_OUT: return LLMGW_EV_TIMEOUT_FIRST_BYTE;
        case HTTP_BAD_GATEWAY:
            return timedout ? LLMGW_EV_TIMEOUT_FIRST_BYTE
                            : LLMGW_EV_CONNECT_ERROR;
        default: return LLMGW_EV_COUNT; /* not the member's doing */
        }
    }
    if (hr->broke) {
        return timedout ? LLMGW_EV_TIMEOUT_BETWEEN_TOKENS
                        : LLMGW_EV_BAD_ANSWER;
    }
    if (ctx && ctx->bad_answer) {
        return LLMGW_EV_BAD_ANSWER;
    }
    return llmgw_status_event(r->pool, hr->status, hr->body, hr->len);
}

static int post_request(proxy_worker *worker, proxy_balancer *balancer,
                        request_rec *r, proxy_server_conf *conf)
{
    hreq_t *hr;
    llmgw_event_t ev;
    int m;

    if (!table || r->main || !(hr = hreq(r))) {
        return DECLINED;
    }
    hr->ended = 1; /* even without a member: its tries were counted */
    if (!worker || !balancer || hr->observed) {
        return DECLINED;
    }
    hr->observed = 1;
    ev = outcome(r, hr);
    m = member_of(worker->s->name_ex);
    if (req_ctx(r) && req_ctx(r)->fo) {
        /* An attempt of failover's: its outcome is the failover part's to
         * tell (now, or when mod_proxy's handler has returned), bar what
         * it does not report and is no failure (a client's error or
         * abort: a trial handed back). */
        if (hr->success >= 0) {
            m = hr->success;
            ev = LLMGW_EV_SUCCESS;
            hr->success = -1;
        }
        else if (hr->reported || llmgw_event_is_failure(ev)) {
            return DECLINED;
        }
    }
    if (m >= 0 && ev != LLMGW_EV_COUNT) {
        feed(r, hr, m, ev);
    }
    return DECLINED;
}

/* ---- the llm_affinity lbmethod -------------------------------------- */

/* Whether w's draining is the gateway's own (half-open, or loading by its
 * probes): llm_affinity may still choose it, the stock lbmethods not. */
static int our_drain(int m, apr_time_t now)
{
    llmgw_member_view_t v;

    return llmgw_health_member(table, m, now, &cf.hp, &v) == 0
           && (llmgw_health_mirror_want(&v, members[m].check != NULL)
               & LLMGW_MIRROR_DRAIN);
}

/* Whether member m's model slots serve hash h (or its batch is due
 * there), or would hold it (into a). */
static void affinity_group(int m, apr_uint32_t h, apr_time_t now,
                           llmgw_aff_member_t *a)
{
    const cap_t *cap = members[m].cap;
    llmgw_group_t *g;

    if (!h || !cap || cap->models <= 0
        || !(g = llmgw_health_group(table, m))) {
        return;
    }
    a->held = llmgw_group_would_hold(g, cap->models, h, cap->hold, now,
                                     &a->serving, &a->displaced);
}

/* What the choice needs of worker w: mod_proxy's say (usable, busy,
 * lbfactor, lbstatus) and the table's (state, the model, slots, queue,
 * the model slots for hash h, 0: none). *m gets its member, -1 for one
 * the table does not know. */
static void affinity_member(proxy_worker *w, const char *model, apr_uint32_t h,
                            apr_time_t now, llmgw_aff_member_t *a, int *m)
{
    apr_int64_t busy = (apr_int64_t)w->s->busy;
    int usable = PROXY_WORKER_IS_USABLE(w) && !PROXY_WORKER_IS_STANDBY(w)
                 && !PROXY_WORKER_IS_SPARE(w);

    *m = table ? member_of(w->s->name_ex) : -1;
    if (usable && PROXY_WORKER_IS_DRAINING(w)) {
        usable = *m >= 0 && our_drain(*m, now);
    }
    if (*m >= 0) {
        llmgw_health_affinity(table, *m, model, now, &cf.hp, a);
    }
    else {
        llmgw_affinity_unknown(a, LLMGW_HS_UNKNOWN);
    }
    a->usable = usable;
    a->inflight = a->inflight > busy ? a->inflight : busy;
    if (*m >= 0) {
        affinity_group(*m, h, now, a);
    }
    a->capacity = *m >= 0 && members[*m].cap ? members[*m].cap->max : 0;
    /* The only model slots known here are grouping's (models=N), whose
     * own turns already keep a model's requests off a member switching
     * away from it (held) or on it (serving): in between, the core's
     * eviction rule would push the served model's requests to the other
     * member cold. */
    a->model_slots = 0;
    a->lbfactor = w->s->lbfactor;
    a->lbstatus = w->s->lbstatus;
}

/* The finder (under the balancer's thread lock, as every lbmethod's): the
 * core scores the members; a half-open one chosen gets the request as its
 * trial if it can claim it, else it is left out and the choice made
 * again. */
static proxy_worker *find_affinity(proxy_balancer *balancer, request_rec *r)
{
    int n = balancer->workers->nelts, i, pick, token;
    proxy_worker **ws = (proxy_worker **)balancer->workers->elts;
    llmgw_req_t *ctx = req_ctx(r);
    const char *model = ctx ? ctx->upstream_model : NULL;
    hreq_t *hr = hreq(r);
    apr_time_t now = apr_time_now();
    llmgw_aff_member_t *am;
    apr_uint32_t h;
    int *mi;

    if (n <= 0) {
        return NULL;
    }
    am = apr_pcalloc(r->pool, n * sizeof(*am));
    mi = apr_palloc(r->pool, n * sizeof(*mi));
    h = model && any_models ? llmgw_group_hash(model) : 0;
    for (i = 0; i < n; i++) {
        affinity_member(ws[i], model, h, now, &am[i], &mi[i]);
    }
    for (;;) {
        llmgw_breaker_t b;

        if ((pick = llmgw_affinity_pick(am, n, &cf.ap)) < 0) {
            return NULL;
        }
        if (mi[pick] < 0) {
            break;
        }
        b = llmgw_health_breaker(table, mi[pick]);
        if (llmgw_breaker_state(&b, now) != LLMGW_BR_HALF_OPEN) {
            break;
        }
        if (hr && hr->trial == LLMGW_BR_NO_TRIAL
            && llmgw_health_claim(table, mi[pick], now, &cf.bp, &token)) {
            hr->trial = token;
            break;
        }
        am[pick].usable = 0;
    }
    for (i = 0; i < n; i++) {
        ws[i]->s->lbstatus = am[i].lbstatus;
    }
    /* Sent where the model is not loaded, it loads there now: the next
     * request for it waits for that load rather than start another. Not
     * one held for its model's turn: it loads only when the turn comes,
     * and until then the models there are served (a "loading" hint would
     * push their requests away from a member with one model slot). */
    if (model && mi[pick] >= 0 && !am[pick].held
        && (am[pick].model == LLMGW_AFF_COLD
            || am[pick].model == LLMGW_AFF_UNKNOWN)) {
        llmgw_health_hint(table, mi[pick], model, LLMGW_HINT_LOADING, now);
    }
    if (model && mi[pick] >= 0) {
        llmgw_health_asked(table, mi[pick], model,
                           am[pick].model == LLMGW_AFF_LOADED, now);
    }
    return ws[pick];
}

static apr_status_t affinity_reset(proxy_balancer *balancer, server_rec *s)
{
    int i;

    for (i = 0; i < balancer->workers->nelts; i++) {
        APR_ARRAY_IDX(balancer->workers, i, proxy_worker *)->s->lbstatus = 0;
    }
    return APR_SUCCESS;
}

static apr_status_t affinity_age(proxy_balancer *balancer, server_rec *s)
{
    return APR_SUCCESS;
}

static const proxy_balancer_method affinity_method = {
    LLMGW_LBMETHOD, find_affinity, NULL, affinity_reset, affinity_age, NULL
};

/* ---- directives ---------------------------------------------------- */

const char *llmgw_health_set_breaker(cmd_parms *cmd, void *dummy, int argc,
                                     char *const argv[])
{
    static const char *const names[] = { "fails",         "successes",
                                         "backoff",       "backoff-max",
                                         "trial-timeout", NULL };
    static const char example[] =
        "LLMBreaker on fails=3 successes=2 backoff=1 backoff-max=60";
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY), *v, *bad;
    llmgw_breaker_params_t bp = cf.bp;
    int i, which;

    if (err) {
        return err;
    }
    if (argc < 1) {
        return apr_psprintf(cmd->pool,
                            "LLMBreaker takes on or off, then "
                            "options; e.g. %s",
                            example);
    }
    if ((err = llmgw_conf_flag(cmd->pool, "LLMBreaker", argv[0], &cf.breaker))
        != NULL) {
        return err;
    }
    for (i = 1; i < argc; i++) {
        apr_int64_t n;
        apr_interval_time_t t;
        const char *what;

        if ((err = llmgw_conf_option(cmd->pool, "LLMBreaker", argv[i], names,
                                     &which, &v))
            != NULL) {
            return err;
        }
        what = apr_pstrcat(cmd->pool, "LLMBreaker ", names[which], NULL);
        if (which < 2) {
            err = llmgw_conf_int(cmd->pool, what, v, 1,
                                 which ? LLMGW_BR_MAX_SUCCESSES
                                       : LLMGW_BR_MAX_FAILS,
                                 example, &n);
            *(which ? &bp.successes_to_close : &bp.fails_to_open) =
                (unsigned)n;
        }
        else {
            err = llmgw_conf_msec(cmd->pool, what, v, 1, 86400 * 1000,
                                  "LLMBreaker on backoff=1000ms", &t);
            *(which == 2   ? &bp.backoff
              : which == 3 ? &bp.backoff_max
                           : &bp.trial_timeout) = t;
        }
        if (err) {
            return err;
        }
    }
    if ((bad = llmgw_breaker_params_check(&bp)) != NULL) {
        return apr_psprintf(cmd->pool, "LLMBreaker: %s; e.g. %s", bad,
                            example);
    }
    cf.bp = bp;
    return NULL;
}

const char *llmgw_health_set_check(cmd_parms *cmd, void *dummy, int argc,
                                   char *const argv[])
{
    static const char *const names[] = { "probe", "interval", "timeout",
                                         NULL };
    static const char example[] =
        "LLMHealthCheck on probe=llamacpp interval=5000 timeout=2000";
    llmgw_route_t *route = llmgw_sconf(cmd->server)->cur_route;
    check_t ck = {
        route, { 0 }, 0, apr_time_from_sec(5), apr_time_from_sec(2)
    };
    const char *err, *v;
    int i, which, on;

    if (!route) {
        return "LLMHealthCheck is only allowed inside <LLMRoute>";
    }
    if (argc < 1) {
        return apr_psprintf(cmd->pool,
                            "LLMHealthCheck takes on or off, then "
                            "options; e.g. %s",
                            example);
    }
    if ((err = llmgw_conf_flag(cmd->pool, "LLMHealthCheck", argv[0], &on))) {
        return err;
    }
    for (i = 1; i < argc; i++) {
        if ((err = llmgw_conf_option(cmd->pool, "LLMHealthCheck", argv[i],
                                     names, &which, &v))) {
            return err;
        }
        if (which == 0 && strcasecmp(v, "auto") != 0
            && !(ck.nkinds = llmgw_probe_set(v, ck.kinds))) {
            return apr_psprintf(cmd->pool,
                                "LLMHealthCheck probe: unknown '%s' "
                                "(auto, ollama, llamacpp, vllm, openai); "
                                "e.g. %s",
                                v, example);
        }
        if (which > 0
            && (err = llmgw_conf_msec(cmd->pool,
                                      which == 1 ? "LLMHealthCheck interval"
                                                 : "LLMHealthCheck timeout",
                                      v, 10, 3600 * 1000, example,
                                      which == 1 ? &ck.interval
                                                 : &ck.timeout))) {
            return err;
        }
    }
    if (on) {
        APR_ARRAY_PUSH(cf.checks, check_t) = ck;
    }
    return NULL;
}

const char *llmgw_health_set_capacity(cmd_parms *cmd, void *dummy, int argc,
                                      char *const argv[])
{
    static const char *const names[] = { "max",    "queue", "wait",
                                         "models", "hold",  NULL };
    static const char example[] =
        "LLMCapacity max=4 queue=16 wait=10000 models=1 hold=1000";
    static const char *const what[] = { "LLMCapacity max", "LLMCapacity queue",
                                        "LLMCapacity wait",
                                        "LLMCapacity models",
                                        "LLMCapacity hold" };
    llmgw_route_t *route = llmgw_sconf(cmd->server)->cur_route;
    cap_t cap = {
        route, 0, 16, apr_time_from_sec(10), 0, apr_time_from_sec(1)
    };
    const char *err, *v;
    apr_int64_t models = 0;
    int i, which;

    if (!route) {
        return "LLMCapacity is only allowed inside <LLMRoute>";
    }
    if (argc < 1) {
        return apr_psprintf(cmd->pool,
                            "LLMCapacity needs max=N or max=auto; "
                            "e.g. %s",
                            example);
    }
    for (i = 0; i < argc; i++) {
        if ((err = llmgw_conf_option(cmd->pool, "LLMCapacity", argv[i], names,
                                     &which, &v))) {
            return err;
        }
        switch (which) {
        case 0:
            if (strcasecmp(v, "auto") == 0) {
                cap.max = 0;
                break;
            }
            err = llmgw_conf_int(cmd->pool, what[0], v, 1, 100000, example,
                                 &cap.max);
            break;
        case 1:
            err = llmgw_conf_int(cmd->pool, what[1], v, 0, 100000, example,
                                 &cap.queue);
            break;
        case 3:
            err = llmgw_conf_int(cmd->pool, what[3], v, 0, LLMGW_GROUP_SLOTS,
                                 example, &models);
            cap.models = (int)models;
            break;
        default:
            err = llmgw_conf_msec(cmd->pool, what[which], v, 0, 3600 * 1000,
                                  example, which == 2 ? &cap.wait : &cap.hold);
        }
        if (err) {
            return err;
        }
    }
    APR_ARRAY_PUSH(cf.caps, cap_t) = cap;
    return NULL;
}

const char *llmgw_health_set_warmup(cmd_parms *cmd, void *dummy, int argc,
                                    char *const argv[])
{
    static const char *const names[] = { "keep-alive", NULL };
    static const char example[] = "LLMWarmup on keep-alive=30m";
    llmgw_route_t *route = llmgw_sconf(cmd->server)->cur_route;
    warm_t w = { route, "30m", 0 };
    const char *err, *v;
    int i, which, on;

    if (!route) {
        return "LLMWarmup is only allowed inside <LLMRoute>";
    }
    if (argc < 1) {
        return apr_psprintf(cmd->pool, "LLMWarmup takes on or off; e.g. %s",
                            example);
    }
    if ((err = llmgw_conf_flag(cmd->pool, "LLMWarmup", argv[0], &on))) {
        return err;
    }
    for (i = 1; i < argc; i++) {
        if ((err = llmgw_conf_option(cmd->pool, "LLMWarmup", argv[i], names,
                                     &which, &v))) {
            return err;
        }
        if (!*v || strlen(v) > 32 || strspn(v, "0123456789hms") != strlen(v)) {
            return apr_psprintf(cmd->pool,
                                "LLMWarmup keep-alive: '%s' is not a "
                                "duration such as 30m or 1h; e.g. %s",
                                v, example);
        }
        w.keep_alive = v;
    }
    if (on) {
        APR_ARRAY_PUSH(cf.warms, warm_t) = w;
    }
    return NULL;
}

/* ---- probes, on the watchdog --------------------------------------- */

/* mod_proxy's connection functions, as mod_proxy_hcheck uses them. */
static struct {
    __typeof__(ap_proxy_define_worker) *define_worker;
    __typeof__(ap_proxy_initialize_worker) *initialize_worker;
    __typeof__(ap_proxy_hashfunc) *hashfunc;
    __typeof__(ap_proxy_acquire_connection) *acquire;
    __typeof__(ap_proxy_determine_address) *determine_address;
    __typeof__(ap_proxy_connect_backend) *connect;
    __typeof__(ap_proxy_connection_create_ex) *connection_create;
    __typeof__(ap_proxy_pre_http_request) *pre_http_request;
    __typeof__(ap_proxy_release_connection) *release;
} px;

static int find_proxy_fns(void)
{
    *(void **)&px.define_worker = proxy_fn("ap_proxy_define_worker");
    *(void **)&px.initialize_worker = proxy_fn("ap_proxy_initialize_worker");
    *(void **)&px.hashfunc = proxy_fn("ap_proxy_hashfunc");
    *(void **)&px.acquire = proxy_fn("ap_proxy_acquire_connection");
    *(void **)&px.determine_address = proxy_fn("ap_proxy_determine_address");
    *(void **)&px.connect = proxy_fn("ap_proxy_connect_backend");
    *(void **)&px.connection_create =
        proxy_fn("ap_proxy_connection_create_ex");
    *(void **)&px.pre_http_request = proxy_fn("ap_proxy_pre_http_request");
    *(void **)&px.release = proxy_fn("ap_proxy_release_connection");
    return px.define_worker && px.initialize_worker && px.hashfunc
           && px.acquire && px.determine_address && px.connect
           && px.connection_create && px.pre_http_request && px.release;
}

/* The probes' own worker for w (as hcheck's): errors never mark it, and
 * it reaches a member whose worker shows HcFl. */
static proxy_worker *probe_worker(proxy_worker *w, server_rec *s,
                                  apr_pool_t *p)
{
    proxy_worker *hc = NULL;

    if (px.define_worker(p, &hc, NULL, NULL, w->s->name_ex, 0) || !hc) {
        return NULL;
    }
    apr_snprintf(hc->s->name, sizeof(hc->s->name), "llmgw-%pp", w);
    apr_snprintf(hc->s->name_ex, sizeof(hc->s->name_ex), "llmgw-%pp", w);
    hc->hash.def = hc->s->hash.def =
        px.hashfunc(hc->s->name_ex, PROXY_HASHFUNC_DEFAULT);
    hc->hash.fnv = hc->s->hash.fnv =
        px.hashfunc(hc->s->name_ex, PROXY_HASHFUNC_FNV);
    PROXY_STRNCPY(hc->s->hostname, w->s->hostname);
    PROXY_STRNCPY(hc->s->hostname_ex, w->s->hostname_ex);
    PROXY_STRNCPY(hc->s->scheme, w->s->scheme);
    hc->s->port = w->s->port;
    hc->s->conn_timeout_set = w->s->conn_timeout_set;
    hc->s->conn_timeout = w->s->conn_timeout;
    hc->s->status |= PROXY_WORKER_IGNORE_ERRORS | PROXY_WORKER_GENERIC;
    if (px.initialize_worker(hc, s, p) != APR_SUCCESS) {
        return NULL;
    }
    hc->s->is_address_reusable = w->s->is_address_reusable;
    hc->s->disablereuse = 1; /* a probe's connection is closed */
    return hc;
}

/* A request_rec for the probe's connection, as hcheck's. */
static request_rec *probe_request(apr_pool_t *p, server_rec *s)
{
    request_rec *r = apr_pcalloc(p, sizeof(*r));

    r->pool = p;
    r->server = s;
    r->per_dir_config = s->lookup_defaults;
    r->proxyreq = PROXYREQ_RESPONSE;
    r->allowed_methods = ap_make_method_list(p, 2);
    r->headers_in = apr_table_make(p, 1);
    r->trailers_in = apr_table_make(p, 1);
    r->subprocess_env = apr_table_make(p, 4);
    r->headers_out = apr_table_make(p, 12);
    r->err_headers_out = apr_table_make(p, 1);
    r->trailers_out = apr_table_make(p, 1);
    r->notes = apr_table_make(p, 4);
    r->request_config = ap_create_request_config(p);
    r->read_body = REQUEST_NO_BODY;
    r->status = HTTP_OK;
    r->used_path_info = AP_REQ_DEFAULT_PATH_INFO;
    r->method = "GET";
    r->method_number = M_GET;
    r->protocol = "HTTP/1.1";
    r->proto_num = HTTP_VERSION(1, 1);
    return r;
}

static void probe_connection(request_rec *r, conn_rec *c)
{
    c->bucket_alloc = apr_bucket_alloc_create(r->pool);
    r->connection = c;
    r->kept_body = apr_brigade_create(r->pool, c->bucket_alloc);
    r->output_filters = r->proto_output_filters = c->output_filters;
    r->input_filters = r->proto_input_filters = c->input_filters;
    r->useragent_addr = c->client_addr;
    r->useragent_ip = c->client_ip;
}

/* A GET, or with a body a POST of JSON. */
static const char *send_request(request_rec *r, const char *path,
                                const char *body, const proxy_worker *hc)
{
    conn_rec *c = r->connection;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, c->bucket_alloc);
    const char *req = apr_psprintf(
        r->pool,
        "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: " PROBE_UA "\r\n"
        "Accept: */*\r\nConnection: close\r\n%s\r\n%s",
        body ? "POST" : "GET", path, hc->s->hostname_ex, hc->s->port,
        body ? apr_psprintf(r->pool,
                            "Content-Type: application/json\r\n"
                            "Content-Length: %" APR_SIZE_T_FMT "\r\n",
                            strlen(body))
             : "",
        body ? body : "");

    APR_BRIGADE_INSERT_TAIL(
        bb,
        apr_bucket_pool_create(req, strlen(req), r->pool, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
    return ap_pass_brigade(c->output_filters, bb) == APR_SUCCESS
               ? NULL
               : "the request could not be sent";
}

/* The status line and headers of the answer; NULL, or why not. */
static const char *read_head(request_rec *r)
{
    char line[HUGE_STRING_LEN];
    char *v;
    int len = ap_getline(line, sizeof(line), r, 1);

    if (len <= 0) {
        return "no answer";
    }
    if (!apr_date_checkmask(line, "HTTP/#.# ###*") || line[5] != '1') {
        return "not an HTTP/1 answer";
    }
    r->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + line[11] - '0';
    while ((len = ap_getline(line, sizeof(line), r, 1)) > 0) {
        if (!(v = strchr(line, ':'))) {
            return "a header line without a colon";
        }
        *v++ = '\0';
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        apr_table_add(r->headers_out, line, v);
    }
    return len < 0 ? "headers too long" : NULL;
}

/* The body, at most max bytes; NULL, or why not. */
static const char *read_body(request_rec *r, apr_size_t max,
                             llmgw_pbuf_t *body)
{
    apr_bucket_brigade *bb =
        apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_table_t *saved = r->headers_in;
    const char *why = NULL;
    int eos = 0;

    /* HTTP_IN reads the answer by its own headers (length, chunks). */
    r->headers_in = apr_table_copy(r->pool, r->headers_out);
    px.pre_http_request(r->connection, r);
    while (!eos && !why) {
        apr_bucket *e;
        apr_status_t rv =
            ap_get_brigade(r->proto_input_filters, bb, AP_MODE_READBYTES,
                           APR_BLOCK_READ, HUGE_STRING_LEN);

        if (APR_STATUS_IS_EOF(rv)) {
            break;
        }
        if (rv != APR_SUCCESS) {
            why = "the body could not be read";
            break;
        }
        for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb) && !why;
             e = APR_BUCKET_NEXT(e)) {
            const char *data;
            apr_size_t n;

            if (APR_BUCKET_IS_EOS(e)) {
                eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(e)) {
                continue;
            }
            if (apr_bucket_read(e, &data, &n, APR_BLOCK_READ) != APR_SUCCESS) {
                why = "the body could not be read";
            }
            else if (body->len + n > max) {
                why = "the body is larger than a probe reads";
            }
            else {
                llmgw_pbuf_add(r->pool, body, data, n);
            }
        }
        apr_brigade_cleanup(bb);
    }
    r->headers_in = saved;
    return why;
}

/* One request of the watchdog's over the probe worker hc (a member's,
 * probe_worker), its answer bounded by max: NULL and *status, *out, or why
 * not. */
static const char *exchange(server_rec *s, proxy_worker *hc, const char *path,
                            const char *send, apr_interval_time_t timeout,
                            apr_size_t max, apr_pool_t *p, int *status,
                            llmgw_pbuf_t *out)
{
    proxy_conn_rec *backend = NULL;
    request_rec *r = probe_request(p, s);
    const char *why = NULL;

    if (px.acquire("LLMGW", &backend, hc, s) != OK) {
        why = "no connection to be had";
    }
    else if (px.determine_address("LLMGW", backend, hc->s->hostname_ex,
                                  hc->s->port, 0, NULL, s)
             != APR_SUCCESS) {
        why = "its address does not resolve";
    }
    else if (px.connect("LLMGW", backend, hc, s) != OK) {
        why = "the connection failed";
    }
    else if (px.connection_create("LLMGW", backend, r) != OK) {
        why = "the connection could not be set up";
    }
    else {
        probe_connection(r, backend->connection);
        apr_socket_timeout_set(backend->sock, timeout);
        if (!(why = send_request(r, path, send, hc))
            && !(why = read_head(r))) {
            why = read_body(r, max, out);
        }
    }
    if (backend) {
        backend->close = 1;
        px.release("LLMGW", backend, s);
    }
    *status = r->status;
    return why;
}

/* One probe over the probe worker hc: GET the kind's path, read by
 * llmgw_probe. */
static llmgw_probe_t *probe_over(server_rec *s, proxy_worker *hc,
                                 llmgw_probe_kind_t kind,
                                 apr_interval_time_t timeout, apr_pool_t *p)
{
    llmgw_pbuf_t body = { NULL, 0, 0 };
    apr_size_t max = kind == LLMGW_PROBE_VLLM_METRICS ? LLMGW_PROBE_MAX_METRICS
                                                      : LLMGW_PROBE_MAX_BODY;
    int status = 0;
    const char *why = exchange(s, hc, llmgw_probe_path(kind), NULL, timeout,
                               max, p, &status, &body);

    return why ? llmgw_probe_unreachable(p, kind, why)
               : llmgw_probe_parse(p, kind, status, body.b, body.len);
}

static llmgw_probe_t *probe(server_rec *s, int m, llmgw_probe_kind_t kind,
                            apr_pool_t *p)
{
    return probe_over(s, members[m].hc, kind, members[m].check->timeout, p);
}

proxy_worker *llmgw_health_probe_worker(proxy_worker *w, server_rec *s,
                                        apr_pool_t *p)
{
    return find_proxy_fns() ? probe_worker(w, s, p) : NULL;
}

const char *llmgw_health_probe_ready(server_rec *s, proxy_worker *hc,
                                     const char *set,
                                     apr_interval_time_t timeout,
                                     apr_pool_t *p)
{
    llmgw_probe_kind_t kinds[LLMGW_PROBE_SET_MAX];
    int i, n = llmgw_probe_set(set, kinds);

    if (!n) {
        return "no such probe set";
    }
    for (i = 0; i < n; i++) {
        const llmgw_probe_t *res = probe_over(s, hc, kinds[i], timeout, p);

        if (!res->ok
            || (res->state != LLMGW_HS_READY && res->state != LLMGW_HS_BUSY)) {
            return apr_psprintf(p, "%s: %s", llmgw_probe_name(kinds[i]),
                                res->why ? res->why
                                         : llmgw_hstate_name(res->state));
        }
    }
    return NULL;
}

/* ---- warm-up --------------------------------------------------------- */

/* Whether the route's model is loaded, or loading, on a member. */
static int removed(int m);

/* Whether member m is one of warm route w's (those added at run time
 * too), and not removed. */
static int warm_has(const warm_t *w, int m)
{
    int i;

    for (i = 0; i < WORKERS(m); i++) {
        proxy_worker *wk =
            APR_ARRAY_IDX(members[m].workers, i, proxy_worker *);

        if (wk->balancer && wk->balancer->s
            && strcasecmp(wk->balancer->s->name, w->route->balancer) == 0) {
            return !removed(m);
        }
    }
    return 0;
}

static int warm_somewhere(const warm_t *w, apr_time_t now)
{
    int m;

    for (m = 0; m < taken(); m++) {
        unsigned f = 0;

        if (!warm_has(w, m)) {
            continue;
        }
        llmgw_health_model(table, m, w->route->upstream_model, now, &cf.hp,
                           &f);
        if (f & (LLMGW_PM_LOADED | LLMGW_PM_LOADING | LLMGW_HM_SERVED)) {
            return 1;
        }
    }
    return 0;
}

/* The member to load it on: the first ready one that has it (or may). */
static int warm_member(const warm_t *w, apr_time_t now)
{
    int m;

    for (m = 0; m < taken(); m++) {
        llmgw_member_view_t v;

        if (warm_has(w, m) && members[m].hc
            && llmgw_health_member(table, m, now, &cf.hp, &v) == 0
            && v.state == LLMGW_HS_READY
            && llmgw_health_model(table, m, w->route->upstream_model, now,
                                  &cf.hp, NULL)
                   != LLMGW_HS_ABSENT) {
            return m;
        }
    }
    return -1;
}

/* Loads a warm route's model where no member has it (Ollama's load
 * request: a generate without a prompt), once per probe interval. The
 * watchdog waits for the load: the other probes wait meanwhile. */
static void warm_up(server_rec *s, apr_pool_t *pool)
{
    int i;

    for (i = 0; i < cf.warms->nelts; i++) {
        warm_t *w = &APR_ARRAY_IDX(cf.warms, i, warm_t);
        apr_time_t now = apr_time_now();
        llmgw_pbuf_t out = { NULL, 0, 0 };
        const char *why, *body;
        apr_pool_t *p;
        int m, status = 0;

        if (now < w->next || warm_somewhere(w, now)
            || (m = warm_member(w, now)) < 0) {
            continue;
        }
        w->next = now + members[m].check->interval;
        apr_pool_create(&p, pool);
        body = apr_psprintf(p, "{\"model\":%s,\"keep_alive\":%s}",
                            llmgw_json_quote(p, w->route->upstream_model),
                            llmgw_json_quote(p, w->keep_alive));
        why = exchange(s, members[m].hc, "/api/generate", body, WARM_TIMEOUT,
                       LLMGW_PROBE_MAX_BODY, p, &status, &out);
        if (!why && status == HTTP_OK) {
            llmgw_health_hint(table, m, w->route->upstream_model,
                              LLMGW_HINT_SERVED, apr_time_now());
        }
        ap_log_error(APLOG_MARK,
                     why || status != HTTP_OK ? APLOG_WARNING : APLOG_INFO, 0,
                     s, LLMGW_LOGNO(0708) "warm-up: %s on %s: %s",
                     w->route->upstream_model, llmgw_health_name(table, m),
                     why ? why : apr_itoa(p, status));
        apr_pool_destroy(p);
    }
}

/* A probe's verdict, into the breaker (probes hold no trial: their answer
 * counts as the half-open member's success). */
static void probe_event(server_rec *s, int m, const llmgw_probe_t *res,
                        apr_time_t now)
{
    llmgw_event_t ev = llmgw_probe_event(res);
    llmgw_breaker_t before, after;

    if (llmgw_health_event(table, m, ev, LLMGW_BR_NO_TRIAL, now, &cf.bp,
                           &before, &after)
        == 1) {
        ap_log_error(
            APLOG_MARK,
            after.state == LLMGW_BR_OPEN ? APLOG_WARNING : APLOG_INFO, 0, s,
            LLMGW_LOGNO(0703) "member %s: breaker %s -> %s after probe %s: %s",
            llmgw_health_name(table, m), llmgw_br_state_name(before.state),
            llmgw_br_state_name(after.state), llmgw_probe_name(res->kind),
            res->why ? res->why : llmgw_hstate_name(res->state));
    }
}

/* A complete list of what member m has loaded ends the "served lately"
 * hints of its routes' models that are not on it: the member unloaded
 * them (a server with room for one model loads the next in its place). */
static void forget_unloaded(int m, const llmgw_probe_t *res, apr_time_t now)
{
    const apr_array_header_t *models = members[m].models;
    int i, j, loaded;

    if (!res->ok || !(res->knows & LLMGW_PK_LOADED) || !res->models) {
        return;
    }
    for (i = 0; i < models->nelts; i++) {
        const char *name = APR_ARRAY_IDX(models, i, const char *);

        for (j = loaded = 0; j < res->models->nelts && !loaded; j++) {
            const llmgw_probe_model_t *pm =
                &APR_ARRAY_IDX(res->models, j, llmgw_probe_model_t);

            loaded = (pm->flags & LLMGW_PM_LOADED) && !strcmp(pm->name, name);
        }
        if (!loaded) {
            llmgw_health_hint(table, m, name, LLMGW_HINT_CLEAR, now);
        }
    }
}

/* How bad a probe's state is: each result says the member's state, and
 * the worst of a round's is stored last, so that it holds (llama.cpp's
 * /slots answers while /health says it is loading). */
static int severity(llmgw_hstate_t st)
{
    switch (st) {
    case LLMGW_HS_READY: return 0;
    case LLMGW_HS_BUSY: return 1;
    case LLMGW_HS_LOADING: return 2;
    default: return 3;
    }
}

static void probe_member(server_rec *s, int m, apr_pool_t *p, apr_time_t now)
{
    member_t *mb = &members[m];
    llmgw_probe_t *res[LLMGW_PROBE_SET_MAX];
    int i, j, sev;

    if (!mb->hc && WORKERS(m)) {
        mb->hc = probe_worker(APR_ARRAY_IDX(mb->workers, 0, proxy_worker *), s,
                              s->process->pconf);
    }
    if (!mb->hc) {
        return;
    }
    for (i = 0; i < mb->nkinds; i++) {
        res[i] = probe(s, m, mb->kinds[i], p);
        ap_log_error(
            APLOG_MARK, APLOG_TRACE1, 0, s, "probe %s of %s: %d %s%s%s",
            llmgw_probe_name(res[i]->kind), llmgw_health_name(table, m),
            res[i]->http_status, llmgw_hstate_name(res[i]->state),
            res[i]->why ? ": " : "", res[i]->why ? res[i]->why : "");
    }
    for (sev = 0; sev < 4; sev++) {
        for (j = 0; j < mb->nkinds; j++) {
            if (severity(res[j]->state) == sev) {
                llmgw_health_store(table, m, res[j], apr_time_now());
                forget_unloaded(m, res[j], apr_time_now());
                probe_event(s, m, res[j], apr_time_now());
            }
        }
    }
    mb->next_probe = now + mb->check->interval;
}

/* Whether every worker of member m was removed (member_remove): it keeps
 * its entry, unprobed, until it is added again. */
static int removed(int m)
{
    int i, n = WORKERS(m);

    for (i = 0; i < n; i++) {
        if (!PROXY_WORKER_IS(
                APR_ARRAY_IDX(members[m].workers, i, proxy_worker *),
                PROXY_WORKER_FREE)) {
            return 0;
        }
    }
    return n > 0;
}

/* Every tick: the members whose probes are due, one after the other, then
 * the flags of all (the tick asserts them again). */
static apr_status_t probe_tick(int state, void *data, apr_pool_t *pool)
{
    server_rec *s = data;
    apr_pool_t *p;
    int m;

    if (state != AP_WATCHDOG_STATE_RUNNING || !table) {
        return APR_SUCCESS;
    }
    learn_due(apr_time_now());
    for (m = 0; m < taken(); m++) {
        apr_time_t now = apr_time_now();

        if (!members[m].check || now < members[m].next_probe || removed(m)) {
            continue;
        }
        apr_pool_create(&p, pool);
        probe_member(s, m, p, now);
        apr_pool_destroy(p);
    }
    for (m = 0; m < taken(); m++) {
        mirror(m, apr_time_now());
    }
    warm_up(s, pool);
    return APR_SUCCESS;
}

static int probes_post_config(apr_pool_t *pconf, server_rec *s)
{
    apr_status_t rv;

    if (!APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_get_instance)) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                     LLMGW_LOGNO(0704) "LLMHealthCheck needs mod_watchdog: "
                                       "load it (LoadModule watchdog_module "
                                       "modules/mod_watchdog.so)");
        return !OK;
    }
    if (!find_proxy_fns()) {
        ap_log_error(
            APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
            LLMGW_LOGNO(0705) "LLMHealthCheck needs mod_proxy's "
                              "connection functions (mod_proxy 2.4.52 "
                              "or later)");
        return !OK;
    }
    rv = llmgw_watchdog_every(pconf, PROBE_WATCHDOG, AP_WD_TM_SLICE, s,
                              probe_tick);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     LLMGW_LOGNO(0706) "LLMHealthCheck: cannot start the "
                                       "probes' watchdog");
        return !OK;
    }
    return OK;
}

/* ---- the table ----------------------------------------------------- */

static const check_t *check_of(const char *balancer)
{
    int i;

    for (i = 0; i < cf.checks->nelts; i++) {
        const check_t *ck = &APR_ARRAY_IDX(cf.checks, i, check_t);

        if (strcasecmp(ck->route->balancer, balancer) == 0) {
            return ck;
        }
    }
    return NULL;
}

static const cap_t *cap_of(const char *balancer)
{
    int i;

    for (i = 0; i < cf.caps->nelts; i++) {
        const cap_t *cap = &APR_ARRAY_IDX(cf.caps, i, cap_t);

        if (strcasecmp(cap->route->balancer, balancer) == 0) {
            return cap;
        }
    }
    return NULL;
}

/* Appends p to a (never beyond its room: see member_t) for readers in
 * other threads: the element is written before nelts counts it. */
static void publish(apr_array_header_t *a, const void *p)
{
    int n = a->nelts;

    if (n < a->nalloc) {
        ((const void **)a->elts)[n] = p;
        __atomic_store_n(&a->nelts, n + 1, __ATOMIC_RELEASE);
    }
}

static int holds(const apr_array_header_t *a, const void *p, int by_name)
{
    int i;

    for (i = 0; p && i < a->nelts; i++) {
        const void *e = ((const void *const *)a->elts)[i];

        if (e == p || (by_name && strcmp(e, p) == 0)) {
            return 1;
        }
    }
    return 0;
}

/* The routes' models of cover c, into a (once each). */
static void cover_models(apr_array_header_t *a, const cover_t *c)
{
    int i;

    for (i = 0; i < c->models->nelts; i++) {
        const char *model = APR_ARRAY_IDX(c->models, i, const char *);

        if (!holds(a, model, 1)) {
            publish(a, model);
        }
    }
}

/* Member m is worker w of cover c's balancer (or one more of its
 * workers): its capacity and models as the balancer's routes say. */
static void take(int m, const cover_t *c, proxy_worker *w)
{
    member_t *mb = &members[m];

    if (!holds(mb->workers, w, 0)) {
        publish(mb->workers, w);
    }
    cover_models(mb->models, c);
    mb->other_lb |= !c->affinity;
    if (!mb->check) {
        mb->check = c->check;
    }
    if (!mb->cap) {
        mb->cap = c->cap;
    }
}

/* Member m's probes once its workers are taken: its own probe set
 * (member_add's probe=) over its route's. */
static void take_probes(int m)
{
    member_t *mb = &members[m];
    llmgw_probe_kind_t own[LLMGW_PROBE_SET_MAX];
    int n = llmgw_health_probes(table, m, own);

    /* None here yet: not its own, nothing to drain. */
    mb->drain = mb->workers->nelts && (mb->check || !mb->other_lb);
    if (n > 0) {
        memcpy(mb->kinds, own, sizeof(mb->kinds));
        mb->nkinds = n;
    }
    else if (mb->check && mb->check->nkinds) {
        memcpy(mb->kinds, mb->check->kinds, sizeof(mb->kinds));
        mb->nkinds = mb->check->nkinds;
    }
    else if (mb->check) {
        /* The dialects are the probe sets' names. */
        mb->nkinds = llmgw_probe_set(mb->check->route->dialect, mb->kinds);
    }
}

/* Member m, joined in the table by another child (or again): its workers
 * in this child's balancers (synced first), as of the table's epoch e.
 * Not found yet: tried again after LEARN_RETRY. */
static void learn(int m, unsigned e, apr_time_t now)
{
    const char *name = llmgw_health_name(table, m);
    int i, found = 0;

    if (!name || apr_thread_mutex_lock(learning) != APR_SUCCESS) {
        return;
    }
    members[m].retry = now + LEARN_RETRY;
    for (i = 0; i < covers->nelts; i++) {
        const cover_t *c = &APR_ARRAY_IDX(covers, i, cover_t);
        proxy_worker *w = llmgw_members_worker(c->b, c->s, c->pc, name);

        if (w) {
            take(m, c, w);
            found = 1;
        }
    }
    if (found) {
        take_probes(m);
        __atomic_store_n(&members[m].epoch, e, __ATOMIC_RELEASE);
    }
    apr_thread_mutex_unlock(learning);
}

/* The members whose epoch moved since this process learned them. */
static void learn_due(apr_time_t now)
{
    int m, n = taken();

    for (m = 0; m < n; m++) {
        unsigned e = llmgw_health_epoch(table, m);

        if (e != __atomic_load_n(&members[m].epoch, __ATOMIC_ACQUIRE)
            && now >= members[m].retry) {
            learn(m, e, now);
        }
    }
}

/* check_config: a warm route needs Ollama's dialect (a load request), one
 * model and probes (what is loaded). */
static int warm_check(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                      server_rec *s)
{
    int i, j, probed;

    for (i = 0; i < cf.warms->nelts; i++) {
        const llmgw_route_t *rt = APR_ARRAY_IDX(cf.warms, i, warm_t).route;

        for (j = probed = 0; j < cf.checks->nelts; j++) {
            probed |= APR_ARRAY_IDX(cf.checks, j, check_t).route == rt;
        }
        if (strcmp(rt->dialect, "ollama") != 0 || !rt->upstream_model
            || !probed) {
            ap_log_error(
                APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                LLMGW_LOGNO(0709) "%s:%d: LLMWarmup needs "
                                  "LLMBackend ... dialect=ollama, one "
                                  "model (not a pattern) and "
                                  "LLMHealthCheck on in its <LLMRoute>",
                rt->file, rt->line);
            return !OK;
        }
    }
    return OK;
}

/* The table kept in the process pool: a graceful restart keeps every
 * breaker and what the workers' flags show, as long as the members fit. */
typedef struct {
    apr_shm_t *shm;
    llmgw_health_t *t;
} kept_t;

static const char kept_key[] = "llmgw-health-shm";

static int add_all(llmgw_health_t *t, apr_hash_t *found, apr_pool_t *p)
{
    apr_hash_index_t *hi;

    for (hi = apr_hash_first(p, found); hi; hi = apr_hash_next(hi)) {
        if (llmgw_health_add(t, apr_hash_this_key(hi)) < 0) {
            return 0;
        }
    }
    return 1;
}

/* The table for the members named in found and reserve more added at run
 * time. */
static llmgw_health_t *get_table(server_rec *s, apr_hash_t *found,
                                 unsigned reserve, apr_pool_t *ptemp)
{
    apr_pool_t *pp = s->process->pool;
    kept_t *k = NULL;
    unsigned n = apr_hash_count(found) + reserve + SPARE_MEMBERS;
    apr_size_t size = llmgw_health_size(n);
    apr_status_t rv;

    apr_pool_userdata_get((void **)&k, kept_key, pp);
    if (k && add_all(k->t, found, ptemp)
        && llmgw_health_free(k->t) >= reserve) {
        /* No request of this generation is in flight yet. */
        llmgw_health_reset_counts(k->t);
        return k->t;
    }
    if (k) {
        apr_shm_destroy(k->shm); /* the old children keep their mapping */
    }
    else {
        k = apr_pcalloc(pp, sizeof(*k));
        /* _set, which copies the key: the process pool outlives this
         * module's mapping (a restart unloads and maps it again, maybe
         * elsewhere), so a key in its rodata would dangle. */
        apr_pool_userdata_set(k, kept_key, NULL, pp);
    }
    rv = apr_shm_create(&k->shm, size, NULL, pp);
    if (rv != APR_SUCCESS) {
        ap_log_error(
            APLOG_MARK, APLOG_ERR, rv, s,
            LLMGW_LOGNO(0702) "health table: cannot get %" APR_SIZE_T_FMT
                              " bytes of shared memory",
            size);
        k->t = NULL;
        return NULL;
    }
    memset(apr_shm_baseaddr_get(k->shm), 0, size);
    k->t = llmgw_health_init(apr_shm_baseaddr_get(k->shm), size, n,
                             apr_time_now());
    if (k->t) {
        add_all(k->t, found, ptemp);
    }
    return k->t;
}

/* The cover of balancer b, made if new. */
static cover_t *cover_of(apr_pool_t *pconf, proxy_balancer *b, server_rec *vs,
                         proxy_server_conf *pc)
{
    cover_t *c;
    int i;

    for (i = 0; i < covers->nelts; i++) {
        if ((c = &APR_ARRAY_IDX(covers, i, cover_t))->b == b) {
            return c;
        }
    }
    c = apr_array_push(covers);
    c->b = b;
    c->s = vs;
    c->pc = pc;
    c->models = apr_array_make(pconf, 2, sizeof(const char *));
    c->check = check_of(b->s->name);
    c->cap = cap_of(b->s->name);
    c->affinity =
        b->lbmethod && strcmp(b->lbmethod->name, LLMGW_LBMETHOD) == 0;
    return c;
}

/* Every balancer a route of any server uses, with its routes' models. */
static void find_covers(apr_pool_t *pconf, server_rec *s)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");
    server_rec *vs;
    int i, j;

    covers = apr_array_make(pconf, 4, sizeof(cover_t));
    for (vs = s; proxy && vs; vs = vs->next) {
        apr_array_header_t *routes = llmgw_sconf(vs)->router->routes;
        proxy_server_conf *pc = ap_get_module_config(vs->module_config, proxy);

        for (i = 0; pc && pc->balancers && i < routes->nelts; i++) {
            const llmgw_route_t *rt =
                APR_ARRAY_IDX(routes, i, llmgw_route_t *);
            proxy_balancer *b = (proxy_balancer *)pc->balancers->elts;

            for (j = 0; j < pc->balancers->nelts; j++, b++) {
                cover_t *c;

                if (!b->s || strcasecmp(b->s->name, rt->balancer) != 0) {
                    continue;
                }
                c = cover_of(pconf, b, vs, pc);
                if (rt->upstream_model
                    && !holds(c->models, rt->upstream_model, 1)) {
                    APR_ARRAY_PUSH(c->models, const char *) =
                        rt->upstream_model;
                }
            }
        }
    }
}

/* The covers' members by name (into p), and *reserve the entries members
 * added at run time may take: each balancer's growth slots left. */
static apr_hash_t *cover_members(apr_pool_t *p, unsigned *reserve)
{
    apr_hash_t *names = apr_hash_make(p), *seen = apr_hash_make(p);
    int i, k;

    *reserve = 0;
    for (i = 0; i < covers->nelts; i++) {
        const cover_t *c = &APR_ARRAY_IDX(covers, i, cover_t);
        proxy_worker **w = (proxy_worker **)c->b->workers->elts;

        for (k = 0; k < c->b->workers->nelts; k++) {
            apr_hash_set(names, w[k]->s->name_ex, APR_HASH_KEY_STRING, "");
        }
        if (!apr_hash_get(seen, c->b->s->name, APR_HASH_KEY_STRING)) {
            apr_hash_set(seen, c->b->s->name, APR_HASH_KEY_STRING, "");
            *reserve += c->b->growth > 0 ? (unsigned)c->b->growth : 0;
        }
    }
    return names;
}

/* This process's record of every entry, with room for all covers and
 * their models; the members there now learned. */
static void make_members(apr_pool_t *pconf)
{
    int i, k, m, nmodels = 1;

    for (i = 0; i < covers->nelts; i++) {
        nmodels += APR_ARRAY_IDX(covers, i, cover_t).models->nelts;
    }
    members = apr_pcalloc(pconf, nmembers * sizeof(*members));
    for (m = 0; m < nmembers; m++) {
        members[m].workers =
            apr_array_make(pconf, covers->nelts + 1, sizeof(void *));
        members[m].models = apr_array_make(pconf, nmodels, sizeof(void *));
    }
    for (i = 0; i < covers->nelts; i++) {
        const cover_t *c = &APR_ARRAY_IDX(covers, i, cover_t);
        proxy_worker **w = (proxy_worker **)c->b->workers->elts;

        any_cap |= c->cap != NULL;
        any_models |= c->cap && c->cap->models > 0;
        for (k = 0; k < c->b->workers->nelts; k++) {
            if ((m = llmgw_health_find(table, w[k]->s->name_ex)) >= 0
                && m < nmembers) {
                take(m, c, w[k]);
            }
        }
    }
    for (m = 0; m < taken(); m++) {
        take_probes(m);
        members[m].epoch = llmgw_health_epoch(table, m);
    }
}

static int any_check(void)
{
    int i;

    for (i = 0; i < covers->nelts; i++) {
        if (APR_ARRAY_IDX(covers, i, cover_t).check) {
            return 1;
        }
    }
    return 0;
}

/* After mod_proxy_balancer's post_config (the members LLMManageFile adds
 * are defined before it): the table, this process's members, the probes'
 * watchdog. */
static int health_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *found;
    unsigned reserve;

    (void)plog;
    /* The first of httpd's two passes at start-up only checks. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    find_covers(pconf, s);
    found = cover_members(ptemp, &reserve);
    if (!apr_hash_count(found) && !reserve) {
        return OK;
    }
    if (!(table = get_table(s, found, reserve, ptemp))
        || apr_thread_mutex_create(&learning, APR_THREAD_MUTEX_DEFAULT, pconf)
               != APR_SUCCESS) {
        table = NULL;
        return !OK;
    }
    nmembers = (int)(llmgw_health_count(table) + llmgw_health_free(table));
    make_members(pconf);
    return any_check() ? probes_post_config(pconf, s) : OK;
}

void llmgw_health_member_added(server_rec *s, proxy_worker *w,
                               const char *probe)
{
    llmgw_probe_kind_t kinds[LLMGW_PROBE_SET_MAX];
    apr_time_t now = apr_time_now();
    int i, m, n, covered = 0;

    for (i = 0; table && w->balancer && i < covers->nelts; i++) {
        covered |= strcasecmp(APR_ARRAY_IDX(covers, i, cover_t).b->s->name,
                              w->balancer->s->name)
                   == 0;
    }
    if (!covered) {
        return; /* no route uses its balancer */
    }
    m = llmgw_health_join(table, w->s->name_ex, now);
    if (m < 0 || m >= nmembers) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     LLMGW_LOGNO(0710) "member %s: no entry left in the "
                                       "health table (%d): no breaker, "
                                       "probes or affinity for it until "
                                       "a restart",
                     w->s->name_ex, nmembers);
        return;
    }
    n = probe ? llmgw_probe_set(probe, kinds) : 0;
    llmgw_health_set_probes(table, m, kinds, n);
    learn(m, llmgw_health_epoch(table, m), now);
    /* What its last life left in the worker's flags goes now. */
    mirror(m, now);
}

void llmgw_health_register(apr_pool_t *p)
{
    static const char *const balancer[] = { "mod_proxy_balancer.c", NULL };

    ap_hook_post_config(health_post_config, balancer, NULL, APR_HOOK_MIDDLE);
    ap_register_provider(p, PROXY_LBMETHOD, LLMGW_LBMETHOD, "0",
                         &affinity_method);
    ap_hook_check_config(warm_check, NULL, NULL, APR_HOOK_MIDDLE);
    watch_handle = ap_register_output_filter("LLMGW_HEALTH", watch_filter,
                                             NULL, AP_FTYPE_RESOURCE - 1);
}
