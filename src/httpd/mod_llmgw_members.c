/* mod_llmgw_members: members added, reweighted and removed at run time on
 * mod_proxy's balancers, with mod_proxy's own worker machinery. */
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <mod_proxy.h>
#include <ap_slotmem.h>
#include <apr_hash.h>
#include <apr_strings.h>

#include "mod_llmgw.h"
#include "mod_llmgw_health.h"
#include "mod_llmgw_members.h"

APLOG_USE_MODULE(llm_gateway);

/* mod_proxy keeps lbfactor times 100 (httpd.conf's 1..100). */
#define LBF_SCALE 100
/* A member removed: drained, and marked Free (a flag mod_proxy names but
 * never sets: the slot is held, the member gone) until it is idle and
 * disabled. */
#define REMOVED (PROXY_WORKER_DRAIN | PROXY_WORKER_FREE)
/* A member waiting for its first good probe is probed this often. */
#define PROBE_EVERY apr_time_from_sec(1)
#define PROBE_TIMEOUT apr_time_from_sec(5)

/* The configured members' lbfactor (shared form), by "balancer url": a
 * removed member put back, or whose weight the state no longer sets,
 * gets its httpd.conf weight again. */
static apr_hash_t *configured_lbf;

/* The watchdog child's probe workers, by "balancer url". */
typedef struct {
    proxy_worker *hc;
    apr_time_t next;
} pending_t;
static apr_hash_t *pending;

struct llmgw_members_op {
    proxy_server_conf *pc;
    proxy_balancer *b;
    proxy_worker *w; /* the member, if the balancer has it */
};

proxy_server_conf *llmgw_members_proxy_conf(const server_rec *s)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");

    return proxy ? ap_get_module_config(s->module_config, proxy) : NULL;
}

static proxy_balancer *balancer_named(proxy_server_conf *pc, const char *name)
{
    proxy_balancer *b;
    int i;

    b = pc && pc->balancers ? (proxy_balancer *)pc->balancers->elts : NULL;
    for (i = 0; b && name && i < pc->balancers->nelts; i++, b++) {
        if (!strcasecmp(b->s->name, name)) {
            return b;
        }
    }
    return NULL;
}

/* The worker of b whose URL, written one way, is url (written so). */
static proxy_worker *worker_of(apr_pool_t *p, proxy_balancer *b,
                               const char *url)
{
    proxy_worker **w = (proxy_worker **)b->workers->elts;
    const char *why, *n;
    int i;

    for (i = 0; i < b->workers->nelts; i++) {
        n = llmgw_manage_url_norm(
            p, *w[i]->s->name_ex ? w[i]->s->name_ex : w[i]->s->name, &why);
        if (n && !strcmp(n, url)) {
            return w[i];
        }
    }
    return NULL;
}

static const char *key_of(apr_pool_t *p, const char *balancer, const char *url)
{
    return apr_pstrcat(p, balancer, " ", url, NULL);
}

/* All lbmethods start again from the weights, as balancer-manager does
 * after a weight changes (its recalc_factors). */
static void recalc(proxy_balancer *b)
{
    proxy_worker **w = (proxy_worker **)b->workers->elts;
    int i;

    for (i = 0; i < b->workers->nelts; i++) {
        w[i]->s->lbstatus = w[i]->s->lbfactor;
    }
}

/* A worker for e's URL on b, as BalancerMember makes one (its shared part
 * its own until ap_proxy_share_worker puts it in a slot). */
static const char *define_worker(apr_pool_t *p, proxy_balancer *b,
                                 proxy_server_conf *pc,
                                 const llmgw_manage_entry_t *e,
                                 proxy_worker **w)
{
    char *err = ap_proxy_define_worker(p, w, b, pc, e->url, 0);

    if (err) {
        return err;
    }
    PROXY_COPY_CONF_PARAMS(*w, pc);
    (*w)->s->lbfactor = (e->lbfactor ? e->lbfactor : 1) * LBF_SCALE;
    if (e->timeout) {
        (*w)->s->timeout = apr_time_from_sec(e->timeout);
        (*w)->s->timeout_set = 1;
    }
    /* Probed first: out of traffic (HcFl) until its first good probe. */
    if (e->probe != LLMGW_MANAGE_PROBE_NONE) {
        (*w)->s->status |= PROXY_WORKER_HC_FAIL;
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * At start.
 */

static int added(const llmgw_manage_entry_t *e)
{
    return e->kind == LLMGW_ENTRY_MEMBER && !e->configured;
}

static void keep_configured(apr_pool_t *pconf, proxy_server_conf *pc)
{
    proxy_balancer *b = (proxy_balancer *)pc->balancers->elts;
    apr_pool_t *p;
    int i, k;

    apr_pool_create(&p, pconf);
    configured_lbf = apr_hash_make(pconf);
    for (i = 0; i < pc->balancers->nelts; i++, b++) {
        proxy_worker **w = (proxy_worker **)b->workers->elts;

        for (k = 0; k < b->workers->nelts; k++) {
            const char *why,
                *url = llmgw_manage_url_norm(
                    p, *w[k]->s->name_ex ? w[k]->s->name_ex : w[k]->s->name,
                    &why);
            int *lbf = apr_palloc(pconf, sizeof(*lbf));

            *lbf = w[k]->s->lbfactor;
            if (url) {
                apr_hash_set(configured_lbf, key_of(pconf, b->s->name, url),
                             APR_HASH_KEY_STRING, lbf);
            }
        }
    }
    apr_pool_destroy(p);
}

void llmgw_members_define(apr_pool_t *pconf, server_rec *s,
                          const llmgw_manage_t *m)
{
    proxy_server_conf *pc = llmgw_members_proxy_conf(s);
    int i;

    configured_lbf = NULL; /* the last generation's is gone with its pool */
    if (!pc || !pc->balancers) {
        return;
    }
    keep_configured(pconf, pc);
    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e =
            &APR_ARRAY_IDX(m->entries, i, llmgw_manage_entry_t);
        proxy_balancer *b = balancer_named(pc, e->balancer);
        proxy_worker *w;
        const char *err = NULL;

        if (!added(e) || !b) {
            continue;
        }
        if (b->growth < 1 || (err = define_worker(pconf, b, pc, e, &w))) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                         LLMGW_LOGNO(1810) "LLMManageFile: member %s of %s "
                                           "not made again: %s",
                         e->url, e->balancer,
                         b->growth < 1 ? "no growth slot left" : err);
            continue;
        }
        b->growth--;
    }
}

static void settle_one(server_rec *s, proxy_server_conf *pc, apr_pool_t *p,
                       const llmgw_manage_entry_t *e)
{
    proxy_balancer *b = balancer_named(pc, e->balancer);
    proxy_worker *w = b ? worker_of(p, b, e->url) : NULL;

    if (!w) {
        return;
    }
    if (e->lbfactor) {
        w->s->lbfactor = e->lbfactor * LBF_SCALE;
        recalc(b);
    }
    if (e->removed) {
        w->s->status |= REMOVED | PROXY_WORKER_DISABLED;
    }
    else if (added(e) && e->probe != LLMGW_MANAGE_PROBE_NONE) {
        w->s->status |= PROXY_WORKER_HC_FAIL;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s,
                 LLMGW_LOGNO(1811) "LLMManageFile: member %s of %s: "
                                   "lbfactor %d%s",
                 e->url, e->balancer, w->s->lbfactor / LBF_SCALE,
                 e->removed ? ", removed" : "");
}

void llmgw_members_settle(server_rec *s, const llmgw_manage_t *m)
{
    proxy_server_conf *pc = llmgw_members_proxy_conf(s);
    apr_pool_t *p;
    int i;

    if (!pc || !pc->balancers) {
        return;
    }
    apr_pool_create(&p, s->process->pool);
    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e =
            &APR_ARRAY_IDX(m->entries, i, llmgw_manage_entry_t);

        if (e->kind == LLMGW_ENTRY_MEMBER) {
            settle_one(s, pc, p, e);
        }
    }
    apr_pool_destroy(p);
}

/* ---------------------------------------------------------------------
 * In a child.
 */

proxy_worker *llmgw_members_worker(proxy_balancer *b, server_rec *s,
                                   proxy_server_conf *pc, const char *name)
{
    proxy_worker *found = NULL, **w;
    int i;

    if (!b->s || !b->wslot || PROXY_THREAD_LOCK(b) != APR_SUCCESS) {
        return NULL;
    }
    ap_proxy_sync_balancer(b, s, pc);
    w = (proxy_worker **)b->workers->elts;
    for (i = 0; name && !found && i < b->workers->nelts; i++) {
        if (strcmp(w[i]->s->name_ex, name) == 0) {
            found = w[i];
        }
    }
    PROXY_THREAD_UNLOCK(b);
    return found;
}

/* This child's list of b's workers, with those added by other children
 * (under b's thread lock, as mod_proxy_balancer's pre_request syncs). */
static void sync_balancer(proxy_balancer *b, server_rec *s,
                          proxy_server_conf *pc)
{
    llmgw_members_worker(b, s, pc, NULL);
}

void llmgw_members_sync(server_rec *s)
{
    proxy_server_conf *pc = llmgw_members_proxy_conf(s);
    proxy_balancer *b;
    int i;

    b = pc && pc->balancers ? (proxy_balancer *)pc->balancers->elts : NULL;
    for (i = 0; b && i < pc->balancers->nelts; i++, b++) {
        sync_balancer(b, s, pc);
    }
}

int llmgw_members_need_watchdog(const llmgw_change_t *c)
{
    return c->kind == LLMGW_CHANGE_MEMBER_ADD
           && c->probe != LLMGW_MANAGE_PROBE_NONE;
}

const char *llmgw_members_begin(request_rec *r, const llmgw_change_t *c,
                                llmgw_members_op_t **op)
{
    llmgw_members_op_t *o = apr_pcalloc(r->pool, sizeof(*o));
    const char *why, *url = llmgw_manage_url_norm(r->pool, c->url, &why);

    o->pc = llmgw_members_proxy_conf(r->server);
    o->b = balancer_named(o->pc, c->balancer);
    if (!o->b || !o->b->wslot || !url) {
        return "the balancer or the URL is not mod_proxy's";
    }
    if (PROXY_GLOBAL_LOCK(o->b) != APR_SUCCESS) {
        return "the balancer's lock cannot be taken";
    }
    sync_balancer(o->b, r->server, o->pc);
    o->w = worker_of(r->pool, o->b, url);
    why = NULL;
    if (c->kind == LLMGW_CHANGE_MEMBER_ADD && o->w
        && !PROXY_WORKER_IS(o->w, PROXY_WORKER_FREE)) {
        why = apr_psprintf(r->pool, "%s is a member of %s already", url,
                           o->b->s->name);
    }
    else if (c->kind == LLMGW_CHANGE_MEMBER_ADD && !o->w
             && !o->b->storage->num_free_slots(o->b->wslot)) {
        why = apr_psprintf(r->pool,
                           "%s has no free BalancerGrowth slot left in "
                           "mod_proxy (its growth=%d, used by members added "
                           "since the start or through balancer-manager): "
                           "raise it (ProxySet growth=N) and restart",
                           o->b->s->name, o->b->growth);
    }
    else if (c->kind != LLMGW_CHANGE_MEMBER_ADD && !o->w) {
        why = apr_psprintf(r->pool, "%s is not a member of %s", url,
                           o->b->s->name);
    }
    if (why) {
        PROXY_GLOBAL_UNLOCK(o->b);
        return why;
    }
    *op = o;
    return NULL;
}

/* A new worker in one of b's free slots, for every child: the others take
 * it into their lists at their next request to b (ap_proxy_sync_balancer
 * sees wupdated move), as a worker balancer-manager adds. */
static const char *add_worker(request_rec *r, llmgw_members_op_t *o,
                              const llmgw_manage_entry_t *e)
{
    proxy_balancer *b = o->b;
    proxy_worker_shared *shm;
    unsigned int index;
    const char *err = define_worker(o->pc->pool, b, o->pc, e, &o->w);

    if (err) {
        return apr_pstrcat(r->pool, "mod_proxy refuses the member: ", err,
                           NULL);
    }
    if (b->storage->grab(b->wslot, &index) != APR_SUCCESS
        || b->storage->dptr(b->wslot, index, (void *)&shm) != APR_SUCCESS
        || ap_proxy_share_worker(o->w, shm, index) != APR_SUCCESS
        || ap_proxy_initialize_worker(o->w, r->server, o->pc->pool)
               != APR_SUCCESS) {
        return "mod_proxy could not put the member in a slot";
    }
    b->wupdated = b->s->wupdated = o->w->s->updated = apr_time_now();
    return NULL;
}

/* The same under b's thread lock: this child's requests read (and sync)
 * b's list under it while the new worker is pushed onto it. */
static const char *add_worker_locked(request_rec *r, llmgw_members_op_t *o,
                                     const llmgw_manage_entry_t *e)
{
    const char *err;

    if (PROXY_THREAD_LOCK(o->b) != APR_SUCCESS) {
        return "the balancer's thread lock cannot be taken";
    }
    err = add_worker(r, o, e);
    PROXY_THREAD_UNLOCK(o->b);
    return err;
}

/* A member removed before and now added again: its worker is there. */
static void take_back(llmgw_members_op_t *o, const llmgw_manage_entry_t *e)
{
    if (e->probe != LLMGW_MANAGE_PROBE_NONE && !e->configured) {
        ap_proxy_set_wstatus(PROXY_WORKER_HC_FAIL_FLAG, 1, o->w);
    }
    ap_proxy_set_wstatus(PROXY_WORKER_DISABLED_FLAG, 0, o->w);
    ap_proxy_set_wstatus(PROXY_WORKER_DRAIN_FLAG, 0, o->w);
    ap_proxy_set_wstatus(PROXY_WORKER_FREE_FLAG, 0, o->w);
}

/* A removed member of b, disabled if no request is on it now. */
static void disable_if_idle(server_rec *s, proxy_balancer *b, proxy_worker *w)
{
    if ((w->s->status & REMOVED) == REMOVED
        && !PROXY_WORKER_IS(w, PROXY_WORKER_DISABLED) && !w->s->busy) {
        ap_proxy_set_wstatus(PROXY_WORKER_DISABLED_FLAG, 1, w);
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     LLMGW_LOGNO(1813) "member %s of %s: drained, disabled",
                     w->s->name_ex, b->s->name);
    }
}

/* Drained: what is in flight ends, nothing new comes; disabled once idle
 * (here, or on the watchdog's tick). */
static void remove_worker(server_rec *s, proxy_balancer *b, proxy_worker *w)
{
    ap_proxy_set_wstatus(PROXY_WORKER_FREE_FLAG, 1, w);
    ap_proxy_set_wstatus(PROXY_WORKER_DRAIN_FLAG, 1, w);
    disable_if_idle(s, b, w);
}

static void set_weight(apr_pool_t *p, llmgw_members_op_t *o,
                       const llmgw_manage_entry_t *e)
{
    const char *key = key_of(p, o->b->s->name, e->url);
    const int *lbf =
        configured_lbf ? apr_hash_get(configured_lbf, key, APR_HASH_KEY_STRING)
                       : NULL;

    if (e->lbfactor) {
        o->w->s->lbfactor = e->lbfactor * LBF_SCALE;
    }
    else if (lbf) {
        o->w->s->lbfactor = *lbf;
    }
    recalc(o->b);
}

/* The probe set e names for the health part, NULL for none. */
static const char *probe_of(const llmgw_manage_entry_t *e)
{
    return e->probe != LLMGW_MANAGE_PROBE_NONE
               ? llmgw_manage_probe_name(e->probe)
               : NULL;
}

const char *llmgw_members_finish(request_rec *r, llmgw_members_op_t *o,
                                 const llmgw_change_t *c,
                                 const llmgw_manage_entry_t *e)
{
    const char *err = NULL;

    if (!e) {
        /* nothing to do: only the locks */
    }
    else if (c->kind == LLMGW_CHANGE_MEMBER_REMOVE) {
        remove_worker(r->server, o->b, o->w);
    }
    else if (!o->w) {
        err = add_worker_locked(r, o, e);
        if (!err) {
            llmgw_health_member_added(r->server, o->w, probe_of(e));
        }
    }
    else {
        if (PROXY_WORKER_IS(o->w, PROXY_WORKER_FREE)) {
            /* First: the flags of its last life go before its probe's. */
            llmgw_health_member_added(r->server, o->w, probe_of(e));
            take_back(o, e);
        }
        set_weight(r->pool, o, e);
    }
    PROXY_GLOBAL_UNLOCK(o->b);
    return err;
}

/* ---------------------------------------------------------------------
 * The watchdog.
 */

static void probe_pending(server_rec *s, proxy_balancer *b, proxy_worker *w,
                          const llmgw_manage_entry_t *e, apr_pool_t *p)
{
    const char *key = key_of(p, b->s->name, e->url), *why;
    pending_t *pd = apr_hash_get(pending, key, APR_HASH_KEY_STRING);
    apr_time_t now = apr_time_now();

    if (!pd) {
        pd = apr_pcalloc(s->process->pool, sizeof(*pd));
        pd->hc = llmgw_health_probe_worker(w, s, s->process->pool);
        apr_hash_set(pending, apr_pstrdup(s->process->pool, key),
                     APR_HASH_KEY_STRING, pd);
    }
    if (now < pd->next) {
        return;
    }
    pd->next = now + PROBE_EVERY;
    why = pd->hc ? llmgw_health_probe_ready(
              s, pd->hc, llmgw_manage_probe_name(e->probe), PROBE_TIMEOUT, p)
                 : "no probe worker (mod_proxy's connection functions)";
    if (!why) {
        ap_proxy_set_wstatus(PROXY_WORKER_HC_FAIL_FLAG, 0, w);
        b->s->need_reset = 1;
    }
    ap_log_error(APLOG_MARK, why ? APLOG_DEBUG : APLOG_NOTICE, 0, s,
                 LLMGW_LOGNO(1812) "member %s of %s: probe %s %s%s", e->url,
                 b->s->name, llmgw_manage_probe_name(e->probe),
                 why ? "failed: " : "passed, it takes traffic now",
                 why ? why : "");
}

void llmgw_members_tick(server_rec *s, const llmgw_manage_t *m, apr_pool_t *p)
{
    proxy_server_conf *pc = llmgw_members_proxy_conf(s);
    proxy_balancer *b;
    int i;

    if (!pending) {
        pending = apr_hash_make(s->process->pool);
    }
    b = pc && pc->balancers ? (proxy_balancer *)pc->balancers->elts : NULL;
    for (i = 0; b && i < pc->balancers->nelts; i++, b++) {
        proxy_worker **w = (proxy_worker **)b->workers->elts;
        int k;

        sync_balancer(b, s, pc);
        for (k = 0; k < b->workers->nelts; k++) {
            disable_if_idle(s, b, w[k]);
        }
    }
    for (i = 0; pc && i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e =
            &APR_ARRAY_IDX(m->entries, i, llmgw_manage_entry_t);
        proxy_worker *w;

        b = added(e) && !e->removed && e->probe != LLMGW_MANAGE_PROBE_NONE
                ? balancer_named(pc, e->balancer)
                : NULL;
        /* HcFl of an open breaker is the health part's, not a first
         * probe's wait. */
        if (b && (w = worker_of(p, b, e->url)) && PROXY_WORKER_IS_HCFAILED(w)
            && !PROXY_WORKER_IS(w, PROXY_WORKER_FREE)
            && llmgw_health_usable(w->s->name_ex)) {
            probe_pending(s, b, w, e, p);
        }
    }
}
