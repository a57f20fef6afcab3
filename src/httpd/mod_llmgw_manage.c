/* mod_llmgw_manage: run-time changes to routes and members kept in
 * LLMManageFile, shared by every child through one segment and a generation
 * number each request compares with its child's routes. */
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <http_protocol.h>
#include <mod_proxy.h>
#include <mod_watchdog.h>
#include <util_mutex.h>
#include <apr_file_io.h>
#include <apr_global_mutex.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "mod_llmgw.h"
#include "mod_llmgw_manage.h"
#include "mod_llmgw_members.h"

APLOG_USE_MODULE(llm_gateway);

#define MANAGE_MUTEX "llmgw-manage"
#define MEMBERS_WATCHDOG "_llmgw_members_"

/* The state's text (its file's, see docs/console.md) for every child:
 * written under the global mutex, gen moved after, read under it too (a
 * child reads it only when gen moved, that is after a change). */
typedef struct {
    apr_uint32_t gen;
    apr_uint32_t len;
    char text[LLMGW_MANAGE_FILE_MAX + 1];
} manage_seg_t;

/* What one configuration (one generation of httpd's) set up. */
static struct {
    const char *file; /* LLMManageFile; NULL: no run-time changes */
    manage_seg_t *seg;
    apr_global_mutex_t *mutex;
    llmgw_manage_base_t *base;
    llmgw_manage_t *loaded; /* the state read at start */
    int watchdog;           /* the members' watchdog runs */
} mg;

/* A child's routes for one generation of the state. A table once made is
 * kept for the child's life: a request in another thread may hold one of
 * its routes (each change costs a child one table, see docs/console.md). */
typedef struct {
    apr_uint32_t gen;
    const llmgw_router_t *rt;
} snapshot_t;

static snapshot_t *child_snap;
static apr_thread_mutex_t *child_lock;
static apr_pool_t *child_pool;

const char *llmgw_manage_set_file(cmd_parms *cmd, void *dconf, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dconf;
    if (err) {
        return err;
    }
    mg.file = ap_server_root_relative(cmd->pool, arg);
    if (!mg.file) {
        return apr_pstrcat(cmd->pool, "LLMManageFile: bad path ", arg,
                           " (e.g. LLMManageFile /var/lib/apache2/"
                           "llmgw-manage.jsonl)",
                           NULL);
    }
    return NULL;
}

apr_status_t llmgw_manage_pre_config(apr_pool_t *pconf)
{
    memset(&mg, 0, sizeof(mg));
    return ap_mutex_register(pconf, MANAGE_MUTEX, NULL, APR_LOCK_DEFAULT, 0);
}

/* httpd.conf as the core checks changes against: the main server's routes
 * and mod_proxy's balancers with their members. */
static llmgw_manage_base_t *make_base(apr_pool_t *p, server_rec *s)
{
    llmgw_manage_base_t *base = apr_pcalloc(p, sizeof(*base));
    proxy_server_conf *pc = llmgw_members_proxy_conf(s);
    proxy_balancer *b;
    int i, k;

    base->router = llmgw_sconf(s)->router;
    base->balancers = apr_array_make(p, 4, sizeof(llmgw_manage_balancer_t));
    b = pc && pc->balancers ? (proxy_balancer *)pc->balancers->elts : NULL;
    for (i = 0; b && i < pc->balancers->nelts; i++, b++) {
        llmgw_manage_balancer_t *mb =
            &APR_ARRAY_PUSH(base->balancers, llmgw_manage_balancer_t);
        proxy_worker **w = (proxy_worker **)b->workers->elts;

        mb->name = apr_pstrdup(p, b->s->name);
        mb->growth = b->growth;
        mb->members = apr_array_make(p, b->workers->nelts, sizeof(char *));
        for (k = 0; k < b->workers->nelts; k++) {
            APR_ARRAY_PUSH(mb->members, const char *) = apr_pstrdup(
                p, *w[k]->s->name_ex ? w[k]->s->name_ex : w[k]->s->name);
        }
    }
    return base;
}

/* The state file read at start: a damaged one is moved aside (kept for
 * whoever wants to see it, and so that the next change does not write
 * over it) and httpd.conf alone holds. */
static llmgw_manage_t *load_state(apr_pool_t *p, server_rec *s)
{
    apr_array_header_t *dropped = apr_array_make(p, 2, sizeof(char *));
    const char *err, *aside;
    llmgw_manage_t *m;
    int i;

    m = llmgw_manage_load(p, mg.file, mg.base, dropped, &err);
    for (i = 0; i < dropped->nelts; i++) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     LLMGW_LOGNO(1801) "LLMManageFile %s: %s", mg.file,
                     APR_ARRAY_IDX(dropped, i, const char *));
    }
    if (m) {
        return m;
    }
    aside = apr_psprintf(p, "%s.bad-%" APR_TIME_T_FMT, mg.file,
                         apr_time_sec(apr_time_now()));
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                 LLMGW_LOGNO(1802) "LLMManageFile %s is refused (%s): moved "
                                   "to %s; httpd.conf alone holds",
                 mg.file, err, aside);
    apr_file_rename(mg.file, aside, p);
    return llmgw_manage_create(p);
}

/* httpd.conf as it was read and the state file, once per generation, by
 * whichever hook needs them first: before the members the state adds are
 * defined (they are not httpd.conf's). */
static llmgw_manage_t *loaded(apr_pool_t *pconf, server_rec *s)
{
    if (!mg.loaded) {
        mg.base = make_base(pconf, s);
        mg.loaded = load_state(pconf, s);
    }
    return mg.loaded;
}

/* Before mod_proxy_balancer's post_config: the members the state adds,
 * defined as if configured (see mod_llmgw_members.h). */
static int define_members(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp, server_rec *s)
{
    (void)plog;
    (void)ptemp;
    if (mg.file) {
        llmgw_members_define(pconf, s, loaded(pconf, s));
    }
    return OK;
}

static apr_status_t members_tick(int state, void *data, apr_pool_t *pool);

/* The members' watchdog (one child's): probes and drained members. */
static void start_watchdog(apr_pool_t *pconf, server_rec *s)
{
    mg.watchdog = llmgw_watchdog_every(pconf, MEMBERS_WATCHDOG,
                                       LLMGW_MEMBERS_TICK, s, members_tick)
                  == APR_SUCCESS;
    if (!mg.watchdog) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     LLMGW_LOGNO(1806) "LLMManageFile: no watchdog (load "
                                       "mod_watchdog): members added with "
                                       "a probe are refused, drained ones "
                                       "are disabled only when idle at once");
    }
}

/* After it: the state's weights, removals and probes on the shared
 * workers, over whatever BalancerPersist restored. */
static int settle_members(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp, server_rec *s)
{
    (void)plog;
    (void)ptemp;
    if (mg.file
        && ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG) {
        llmgw_members_settle(s, loaded(pconf, s));
        start_watchdog(pconf, s);
    }
    return OK;
}

void llmgw_manage_register(void)
{
    static const char *const balancer[] = { "mod_proxy_balancer.c", NULL };

    ap_hook_post_config(define_members, NULL, balancer, APR_HOOK_MIDDLE);
    ap_hook_post_config(settle_members, balancer, NULL, APR_HOOK_MIDDLE);
}

apr_status_t llmgw_manage_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                                      server_rec *s)
{
    const char *text;
    apr_size_t len;
    apr_shm_t *shm;
    apr_status_t rv;

    if (!mg.file) {
        return APR_SUCCESS;
    }
    text = llmgw_manage_write(ptemp, loaded(pconf, s), &len);
    rv = apr_shm_create(&shm, sizeof(manage_seg_t), NULL, pconf);
    if (rv == APR_SUCCESS) {
        rv = ap_global_mutex_create(&mg.mutex, NULL, MANAGE_MUTEX, NULL, s,
                                    pconf, 0);
    }
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     LLMGW_LOGNO(1803) "LLMManageFile: no shared memory or "
                                       "mutex for the run-time changes");
        return rv;
    }
    mg.seg = apr_shm_baseaddr_get(shm);
    memcpy(mg.seg->text, text, len + 1);
    mg.seg->len = (apr_uint32_t)len;
    mg.seg->gen = 1;
    return APR_SUCCESS;
}

void llmgw_manage_child_init(apr_pool_t *pchild, server_rec *s)
{
    child_snap = NULL;
    child_pool = pchild;
    if (!mg.seg) {
        return;
    }
    apr_global_mutex_child_init(&mg.mutex, apr_global_mutex_lockfile(mg.mutex),
                                pchild);
    if (apr_thread_mutex_create(&child_lock, APR_THREAD_MUTEX_DEFAULT, pchild)
        != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     LLMGW_LOGNO(1804) "no mutex for the run-time routes: "
                                       "this child serves httpd.conf's");
        mg.seg = NULL;
    }
}

/* The shared state's text, copied into p, and its generation. */
static const char *seg_copy(apr_pool_t *p, apr_size_t *len, apr_uint32_t *gen)
{
    char *text = NULL;

    if (apr_global_mutex_lock(mg.mutex) != APR_SUCCESS) {
        return NULL;
    }
    *len = mg.seg->len;
    *gen = mg.seg->gen;
    text = apr_pstrmemdup(p, mg.seg->text, *len);
    apr_global_mutex_unlock(mg.mutex);
    return text;
}

/* The child's routes for the state's generation now, made once per
 * generation (under the child's lock, so threads do not make it twice). */
static const snapshot_t *refresh(apr_uint32_t gen)
{
    snapshot_t *snap = child_snap;
    const llmgw_manage_t *m;
    const char *text, *err;
    apr_pool_t *p;
    apr_size_t len;

    apr_thread_mutex_lock(child_lock);
    if (!child_snap || child_snap->gen != gen) {
        apr_pool_create(&p, child_pool);
        text = seg_copy(p, &len, &gen);
        m = text ? llmgw_manage_read(p, mg.base, text, len, NULL, &err) : NULL;
        if (m) {
            snap = apr_palloc(p, sizeof(*snap));
            snap->gen = gen;
            snap->rt = llmgw_manage_router(p, mg.base, m);
            __atomic_store_n(&child_snap, snap, __ATOMIC_RELEASE);
        }
        else {
            ap_log_perror(APLOG_MARK, APLOG_ERR, 0, child_pool,
                          LLMGW_LOGNO(1805) "the run-time routes do not "
                                            "read: the last ones hold");
            apr_pool_destroy(p);
        }
    }
    snap = child_snap;
    apr_thread_mutex_unlock(child_lock);
    return snap;
}

const llmgw_router_t *llmgw_routes(const request_rec *r)
{
    const llmgw_router_t *own = llmgw_sconf(r->server)->router;
    const snapshot_t *snap;
    apr_uint32_t gen;

    /* A virtual host with routes of its own keeps them as configured. */
    if (!mg.seg || !mg.base || own != mg.base->router) {
        return own;
    }
    gen = __atomic_load_n(&mg.seg->gen, __ATOMIC_ACQUIRE);
    snap = __atomic_load_n(&child_snap, __ATOMIC_ACQUIRE);
    if (!snap || snap->gen != gen) {
        snap = refresh(gen);
    }
    return snap ? snap->rt : own;
}

static int is_member_change(const llmgw_change_t *c)
{
    return c->kind >= LLMGW_CHANGE_MEMBER_ADD
           && c->kind <= LLMGW_CHANGE_MEMBER_REMOVE;
}

/* The state's entry of c's member after c; a configured member the state
 * no longer names (put back as configured) as such an entry. */
static const llmgw_manage_entry_t *entry_of(apr_pool_t *p,
                                            const llmgw_manage_t *m,
                                            const llmgw_change_t *c)
{
    const char *why, *url = llmgw_manage_url_norm(p, c->url, &why);
    llmgw_manage_entry_t *e;
    int i;

    for (i = 0; url && i < m->entries->nelts; i++) {
        e = &APR_ARRAY_IDX(m->entries, i, llmgw_manage_entry_t);
        if (e->kind == LLMGW_ENTRY_MEMBER && !strcmp(e->url, url)
            && !strcasecmp(e->balancer, c->balancer)) {
            return e;
        }
    }
    e = apr_pcalloc(p, sizeof(*e));
    e->kind = LLMGW_ENTRY_MEMBER;
    e->balancer = c->balancer;
    e->url = url;
    e->configured = 1;
    return e;
}

/* c applied to m (read from the shared text) and written to the file;
 * a member change also on the live balancer, checked there before the
 * file is written and done after (should mod_proxy fail it then, the old
 * file is written back): never half applied. Under the global mutex. */
static const char *commit_locked(request_rec *r, const llmgw_change_t *c,
                                 const char **text, apr_size_t *len)
{
    llmgw_members_op_t *op = NULL;
    llmgw_manage_t *m, *before;
    const char *err, *undo;

    m = llmgw_manage_read(r->pool, mg.base, mg.seg->text, mg.seg->len, NULL,
                          &err);
    if (!m || (err = llmgw_manage_apply(r->pool, mg.base, m, c))) {
        return err;
    }
    if (is_member_change(c) && (err = llmgw_members_begin(r, c, &op))) {
        return err;
    }
    *text = llmgw_manage_write(r->pool, m, len);
    err = *len > LLMGW_MANAGE_FILE_MAX
              ? "the state would be too large"
              : llmgw_manage_save(r->pool, mg.file, m);
    if (op) {
        undo = llmgw_members_finish(r, op, c,
                                    err ? NULL : entry_of(r->pool, m, c));
        if (undo && !err) {
            before = llmgw_manage_read(r->pool, mg.base, mg.seg->text,
                                       mg.seg->len, NULL, &err);
            err = before ? llmgw_manage_save(r->pool, mg.file, before) : err;
            err = err ? apr_pstrcat(r->pool, undo,
                                    "; and the state file "
                                    "could not be written back: ",
                                    err, NULL)
                      : undo;
        }
    }
    return err;
}

const char *llmgw_manage_commit(request_rec *r, const llmgw_change_t *c)
{
    const char *err, *text = NULL;
    apr_size_t len = 0;

    if (!mg.seg) {
        return "run-time changes are off (no LLMManageFile)";
    }
    if (llmgw_members_need_watchdog(c) && !mg.watchdog) {
        return "a member with a probe needs mod_watchdog (LoadModule "
               "watchdog_module): add it with probe=none, or load it";
    }
    if (apr_global_mutex_lock(mg.mutex) != APR_SUCCESS) {
        return "the run-time changes' lock cannot be taken";
    }
    /* Only what is kept in the file is shown: a change the file lost
     * would be gone at the next start. */
    if (!(err = commit_locked(r, c, &text, &len))) {
        memcpy(mg.seg->text, text, len + 1);
        mg.seg->len = (apr_uint32_t)len;
        __atomic_store_n(&mg.seg->gen, mg.seg->gen + 1, __ATOMIC_RELEASE);
    }
    apr_global_mutex_unlock(mg.mutex);
    return err;
}

/* What a change is about, for the audit line. */
static const char *target(apr_pool_t *p, const llmgw_change_t *c)
{
    if (c->url || c->kind == LLMGW_CHANGE_MEMBER_ADD) {
        return apr_pstrcat(p, c->balancer ? c->balancer : "", " ",
                           c->url ? c->url : "", NULL);
    }
    return apr_pstrcat(p, c->route ? c->route : "",
                       c->name ? apr_pstrcat(p, " ", c->name, NULL) : "",
                       NULL);
}

/* A number the form gives as 0 is one given, out of range: the change
 * reads 0 as "not given" (the default), which it must not become. */
static const char *given_zero(const llmgw_form_t *f, const llmgw_change_t *c)
{
    const char *lbf = llmgw_form_get(f, "lbfactor");
    const char *tmo = llmgw_form_get(f, "timeout");

    if (lbf && *lbf && !c->lbfactor) {
        return "lbfactor must be a whole number from 1 to 100 (mod_proxy's "
               "range)";
    }
    if (tmo && *tmo && !c->timeout) {
        return "timeout must be a number of seconds from 1 to 86400 (or "
               "empty: the balancer's)";
    }
    return NULL;
}

int llmgw_manage_action(request_rec *r, const llmgw_form_t *f,
                        llmgw_action_t *a, const char **what, const char **why)
{
    llmgw_change_t c;
    const char *err = llmgw_manage_from_form(r->pool, f, &c);

    if (!err && is_member_change(&c)) {
        err = given_zero(f, &c);
    }

    if (!err && c.kind == LLMGW_CHANGE_NONE) {
        return 0;
    }
    *what = llmgw_change_kind_name(c.kind);
    a->model = target(r->pool, &c);
    *why = err ? err : llmgw_manage_commit(r, &c);
    return 1;
}

/* The shared state now, read into p (NULL without LLMManageFile). */
static llmgw_manage_t *state_now(apr_pool_t *p)
{
    const char *text, *err;
    apr_uint32_t gen;
    apr_size_t len;

    text = mg.seg ? seg_copy(p, &len, &gen) : NULL;
    return text ? llmgw_manage_read(p, mg.base, text, len, NULL, &err) : NULL;
}

static apr_status_t members_tick(int state, void *data, apr_pool_t *pool)
{
    llmgw_manage_t *m;
    apr_pool_t *p;

    if (state != AP_WATCHDOG_STATE_RUNNING || !mg.seg) {
        return APR_SUCCESS;
    }
    apr_pool_create(&p, pool);
    if ((m = state_now(p))) {
        llmgw_members_tick(data, m, p);
    }
    apr_pool_destroy(p);
    return APR_SUCCESS;
}

void llmgw_manage_sync(request_rec *r)
{
    if (mg.seg) {
        llmgw_members_sync(r->server);
    }
}

static void add_str(json_object *o, const char *k, const char *v)
{
    if (v) {
        json_object_object_add(o, k, json_object_new_string(v));
    }
}

static json_object *entry_json(const llmgw_manage_entry_t *e)
{
    static const char *const kinds[] = { "", "member", "name", "route" };
    json_object *o = json_object_new_object();

    add_str(o, "kind", kinds[e->kind]);
    add_str(o, "balancer", e->balancer);
    add_str(o, "url", e->url);
    add_str(o, "route", e->route);
    add_str(o, "name", e->name);
    add_str(o, "dialect", e->dialect);
    json_object_object_add(o, "configured",
                           json_object_new_boolean(e->configured));
    json_object_object_add(o, "removed", json_object_new_boolean(e->removed));
    if (e->lbfactor) {
        json_object_object_add(o, "lbfactor",
                               json_object_new_int(e->lbfactor));
    }
    if (e->timeout) {
        json_object_object_add(o, "timeout", json_object_new_int(e->timeout));
    }
    if (e->kind == LLMGW_ENTRY_MEMBER && !e->configured) {
        add_str(o, "probe", llmgw_manage_probe_name(e->probe));
    }
    return o;
}

json_object *llmgw_manage_status(request_rec *r)
{
    json_object *o = json_object_new_object(), *arr = json_object_new_array();
    llmgw_manage_t *m = state_now(r->pool);
    int i;

    json_object_object_add(o, "file",
                           mg.seg ? json_object_new_string(mg.file) : NULL);
    for (i = 0; m && i < m->entries->nelts; i++) {
        json_object_array_add(arr, entry_json(&APR_ARRAY_IDX(
                                       m->entries, i, llmgw_manage_entry_t)));
    }
    json_object_object_add(o, "changes", arr);
    json_object_object_add(
        o, "conf",
        json_object_new_string(m ? llmgw_manage_conf_lines(r->pool, m) : ""));
    return o;
}

int llmgw_manage_send_conf(request_rec *r)
{
    llmgw_manage_t *m = state_now(r->pool);
    const char *text = m ? llmgw_manage_conf_lines(r->pool, m) : "";

    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_set_content_length(r, (apr_off_t)strlen(text));
    if (!r->header_only) {
        ap_rputs(text, r);
    }
    return OK;
}
