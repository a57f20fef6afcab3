/* mod_llmgw_health: the health table in shared memory, what each proxied
 * request tells of its member, and the breaker's state in mod_proxy's
 * worker flags (so every child, lbmethod and balancer-manager see it). */
#include <dlfcn.h>
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <http_request.h>
#include <util_filter.h>
#include <mod_proxy.h>
#include <apr_hash.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "llmgw_conf.h"
#include "llmgw_health.h"
#include "mod_llmgw.h"
#include "mod_llmgw_health.h"

APLOG_USE_MODULE(llm_gateway);

/* The start of an error answer kept to tell "loading" or "busy" from a
 * failure (llama.cpp's and Ollama's say so in a few dozen bytes). */
#define BODY_KEPT 1024
/* How often a child brings the workers' flags up to date with the
 * breakers (an open breaker turns half-open by time alone). */
#define SWEEP_EVERY apr_time_from_msec(50)
/* Room for members a graceful restart adds without a new table. */
#define SPARE_MEMBERS 16

/* ---- configuration (one per generation, the table is global) ------- */

static struct {
    int breaker; /* LLMBreaker on: passive checks feed the breakers */
    llmgw_breaker_params_t bp;
    llmgw_health_params_t hp;
} cf;

/* What this process knows of a member besides the table. */
typedef struct {
    apr_array_header_t *workers; /* proxy_worker *, one per balancer */
    int drain;                   /* half-open shows as draining: only
                                  * where something sends its trial */
} member_t;

static llmgw_health_t *table;
static member_t *members; /* by the table's index */
static int nmembers;
static apr_time_t next_sweep;

/* What a proxied request showed of its member so far. */
typedef struct {
    int attempts;   /* mod_proxy's tries at members */
    int trial;      /* the breaker's trial token it holds */
    int status;     /* the backend's status; 0: no answer yet */
    int err_status; /* mod_proxy's error bucket before an answer */
    int broke;      /* the answer broke off after it began */
    int observed;   /* its outcome went to the table */
    char body[BODY_KEPT];
    apr_size_t len;
} hreq_t;

static const char hreq_key[] = "llmgw-health-req";
static ap_filter_rec_t *watch_handle;

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

/* mod_proxy's pre_request and post_request hooks, before
 * mod_proxy_balancer's (which end them); httpd sorts the hooks again once
 * the configuration is read. */
static void proxy_hooks(void)
{
    void (*hook_pre)(proxy_HOOK_pre_request_t *, const char *const *,
                     const char *const *, int);
    void (*hook_post)(proxy_HOOK_post_request_t *, const char *const *,
                      const char *const *, int);

    *(void **)&hook_pre = proxy_fn("proxy_hook_pre_request");
    *(void **)&hook_post = proxy_fn("proxy_hook_post_request");
    if (hook_pre && hook_post) {
        hook_pre(pre_request, NULL, NULL, APR_HOOK_REALLY_FIRST);
        hook_post(post_request, NULL, NULL, APR_HOOK_REALLY_FIRST);
    }
}

void llmgw_health_pre_config(apr_pool_t *pconf)
{
    proxy_hooks();
    cf.breaker = 0;
    llmgw_breaker_params_default(&cf.bp);
    llmgw_health_params_default(&cf.hp);
    table = NULL;
    members = NULL;
    nmembers = 0;
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

    if (llmgw_health_member(table, m, now, &cf.hp, &v) != 0) {
        return;
    }
    want = llmgw_health_mirror_want(&v, 0);
    if (!members[m].drain) {
        want &= ~LLMGW_MIRROR_DRAIN;
    }
    llmgw_health_mirror_swap(table, m, want, &set, &clear);
    for (i = 0; i < members[m].workers->nelts; i++) {
        proxy_worker *w = APR_ARRAY_IDX(members[m].workers, i, proxy_worker *);

        if ((want | clear) & LLMGW_MIRROR_FAIL) {
            set_flag(w, PROXY_WORKER_HC_FAIL, want & LLMGW_MIRROR_FAIL);
        }
        if ((want | clear) & LLMGW_MIRROR_DRAIN) {
            set_flag(w, PROXY_WORKER_DRAIN, want & LLMGW_MIRROR_DRAIN);
        }
    }
}

static void sweep(apr_time_t now)
{
    int m;

    if (now < next_sweep) {
        return;
    }
    next_sweep = now + SWEEP_EVERY;
    for (m = 0; m < nmembers; m++) {
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

void llmgw_health_observe(request_rec *r, const char *member, llmgw_event_t ev)
{
    int m = table ? member_of(member) : -1;

    if (m >= 0 && ev < LLMGW_EV_COUNT) {
        feed(r, hreq(r), m, ev);
    }
}

int llmgw_health_usable(request_rec *r, const char *member)
{
    int m = table ? member_of(member) : -1, i;
    llmgw_member_view_t v;

    if (m < 0 || llmgw_health_member(table, m, apr_time_now(), &cf.hp, &v)) {
        return 1;
    }
    if (v.br_state == LLMGW_BR_OPEN
        || (v.br_state == LLMGW_BR_HALF_OPEN && !v.trial_free)) {
        return 0;
    }
    for (i = 0; i < members[m].workers->nelts; i++) {
        proxy_worker *w = APR_ARRAY_IDX(members[m].workers, i, proxy_worker *);

        if (!(w->s->status
              & (PROXY_WORKER_NOT_USABLE_BITMAP & ~PROXY_WORKER_HC_FAIL))) {
            return 1;
        }
    }
    return 0;
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
            n = n < BODY_KEPT - hr->len ? n : BODY_KEPT - hr->len;
            memcpy(hr->body + hr->len, data, n);
            hr->len += n;
        }
    }
    return ap_pass_brigade(f->next, bb);
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
        apr_pool_userdata_setn(hr, hreq_key, NULL, r->pool);
        if (!r->main) {
            ap_add_output_filter_handle(watch_handle, hr, r, r->connection);
        }
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

    if (!table || !worker || !balancer || r->main || !(hr = hreq(r))
        || hr->observed) {
        return DECLINED;
    }
    hr->observed = 1;
    ev = outcome(r, hr);
    m = member_of(worker->s->name_ex);
    if (m >= 0 && ev != LLMGW_EV_COUNT) {
        feed(r, hr, m, ev);
    }
    return DECLINED;
}

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

/* ---- the table ----------------------------------------------------- */

/* Every balancer member a route of any server uses, by name, with its
 * workers (a member in several balancers has one worker in each). */
static apr_hash_t *route_members(apr_pool_t *p, server_rec *s)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");
    apr_hash_t *found = apr_hash_make(p);
    server_rec *vs;
    int i, j, k;

    for (vs = s; proxy && vs; vs = vs->next) {
        apr_array_header_t *routes = llmgw_sconf(vs)->router->routes;
        proxy_server_conf *pc = ap_get_module_config(vs->module_config, proxy);

        for (i = 0; pc && pc->balancers && i < routes->nelts; i++) {
            const llmgw_route_t *rt =
                APR_ARRAY_IDX(routes, i, llmgw_route_t *);
            proxy_balancer *b = (proxy_balancer *)pc->balancers->elts;

            for (j = 0; j < pc->balancers->nelts; j++, b++) {
                if (!b->s || strcasecmp(b->s->name, rt->balancer) != 0) {
                    continue;
                }
                for (k = 0; k < b->workers->nelts; k++) {
                    proxy_worker *w =
                        APR_ARRAY_IDX(b->workers, k, proxy_worker *);
                    apr_array_header_t *ws = apr_hash_get(found, w->s->name_ex,
                                                          APR_HASH_KEY_STRING);
                    int l, dup = 0;

                    if (!ws) {
                        ws = apr_array_make(p, 2, sizeof(proxy_worker *));
                        apr_hash_set(found, w->s->name_ex, APR_HASH_KEY_STRING,
                                     ws);
                    }
                    for (l = 0; l < ws->nelts; l++) {
                        dup |= APR_ARRAY_IDX(ws, l, proxy_worker *) == w;
                    }
                    if (!dup) {
                        APR_ARRAY_PUSH(ws, proxy_worker *) = w;
                    }
                }
            }
        }
    }
    return found;
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

static llmgw_health_t *get_table(server_rec *s, apr_hash_t *found,
                                 apr_pool_t *ptemp)
{
    apr_pool_t *pp = s->process->pool;
    kept_t *k = NULL;
    unsigned n = apr_hash_count(found) + SPARE_MEMBERS;
    apr_size_t size = llmgw_health_size(n);
    apr_status_t rv;

    apr_pool_userdata_get((void **)&k, kept_key, pp);
    if (k && add_all(k->t, found, ptemp)) {
        /* No request of this generation is in flight yet. */
        llmgw_health_reset_counts(k->t);
        return k->t;
    }
    if (k) {
        apr_shm_destroy(k->shm); /* the old children keep their mapping */
    }
    else {
        k = apr_pcalloc(pp, sizeof(*k));
        apr_pool_userdata_setn(k, kept_key, NULL, pp);
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

int llmgw_health_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                             server_rec *s)
{
    apr_hash_t *found;
    apr_hash_index_t *hi;
    int m;

    /* The first of httpd's two passes at start-up only checks. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    found = route_members(ptemp, s);
    if (!apr_hash_count(found)) {
        return OK;
    }
    if (!(table = get_table(s, found, ptemp))) {
        return !OK;
    }
    nmembers = (int)llmgw_health_count(table);
    members = apr_pcalloc(pconf, nmembers * sizeof(*members));
    for (hi = apr_hash_first(ptemp, found); hi; hi = apr_hash_next(hi)) {
        m = llmgw_health_find(table, apr_hash_this_key(hi));
        members[m].workers = apr_array_copy(pconf, apr_hash_this_val(hi));
    }
    for (m = 0; m < nmembers; m++) {
        if (!members[m].workers) { /* the last generation's */
            members[m].workers = apr_array_make(pconf, 1, sizeof(void *));
        }
    }
    return OK;
}

void llmgw_health_register(void)
{
    watch_handle = ap_register_output_filter("LLMGW_HEALTH", watch_filter,
                                             NULL, AP_FTYPE_RESOURCE - 1);
}
