/* mod_llmgw_limits: API keys, rate limits and budgets in httpd. The table
 * lives in an apr_shm segment kept across graceful restarts; the parent
 * (on mod_watchdog) sweeps it, snapshots it and syncs it with other nodes;
 * the fixups authenticate and admit, the end of the answer settles. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <httpd.h>
#include <apr_shm.h>
#include <apr_fnmatch.h>
#include <apr_optional.h>
#include <apr_strings.h>
#include <ap_mpm.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_protocol.h>
#include <mpm_common.h>
#include <mod_status.h>
#include <mod_watchdog.h>
#include <unixd.h>

#include "llmgw_buf.h"
#include "llmgw_estimate.h"
#include "llmgw_memcache.h"
#include "llmgw_sha256.h"
#include "mod_llmgw.h"
#include "mod_llmgw_limits.h"

APLOG_USE_MODULE(llm_gateway);

/* Room for REMOTE_USERs (LLMKeyFrom user): a sweep drops idle ones when
 * the table is three quarters full. */
#define LIMITS_USERS 10000
/* The longest key we take: anything longer is not one of ours. */
#define KEY_MAX 512
/* The snapshot file, in a directory of its own under DefaultRuntimeDir
 * that the children's user may write (mod_watchdog runs the work in a
 * child), and the largest we read. */
#define SNAP_DIR "llm_gateway"
#define SNAP_NAME "limits.snap"
#define SNAP_MAX (256 * 1024 * 1024)
/* The parent's work: every tick (sweeps, sync), a snapshot at most every
 * second. */
#define TICK_DEFAULT apr_time_from_msec(250)
#define SNAP_EVERY apr_time_from_sec(1)
#define SYNC_ITEMS 64

struct llmgw_admission {
    request_rec *r;
    llmgw_limits_ticket_t tk;
    apr_int64_t prompt;
    apr_int64_t max_out;
};

/* What outlives a graceful restart (ap_retained_data). */
typedef struct {
    apr_shm_t *shm;
    apr_size_t size;
    apr_uint32_t subjects, records;
} limits_retained_t;

static llmgw_limits_t *table;
static const char *snap_path;
static apr_int64_t snap_changes = -1;
static apr_time_t snap_last;
static pid_t parent_pid; /* the process that writes snapshots */
static int fail_closed;  /* budgeted requests refused when the sync is stale */
static apr_time_t stale_after;

/* The cluster sync (the parent's only). */
static llmgw_mc_t *sync_mc;
static apr_time_t sync_last_ok;
static apr_uint32_t sync_cursor;

llmgw_limits_t *llmgw_limits_table(void)
{
    return table;
}

/* ---------------------------------------------------------------------
 * The configuration as the table's subjects
 */

typedef struct {
    apr_array_header_t *defs; /* llmgw_limits_def_t */
    apr_hash_t *where;        /* subject name -> "file:line" */
    const llmgw_key_t *users;
} subjects_t;

static int add_def(apr_pool_t *p, server_rec *s, subjects_t *sj,
                   const char *name, const llmgw_limits_conf_t *conf,
                   const char *file, int line)
{
    const char *at = apr_hash_get(sj->where, name, APR_HASH_KEY_STRING);
    llmgw_limits_def_t *d;

    if (at) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                     LLMGW_LOGNO(0501) "%s:%d: limits for %s are already "
                                       "defined at %s (key names are one "
                                       "space across virtual hosts)",
                     file, line, name, at);
        return 0;
    }
    apr_hash_set(sj->where, name, APR_HASH_KEY_STRING,
                 apr_psprintf(p, "%s:%d", file, line));
    d = apr_array_push(sj->defs);
    d->name = name;
    d->conf = *conf;
    return 1;
}

static const llmgw_route_t *route_named(const llmgw_router_t *rt,
                                        const char *name)
{
    int i;

    for (i = 0; i < rt->routes->nelts; i++) {
        const llmgw_route_t *r = APR_ARRAY_IDX(rt->routes, i, llmgw_route_t *);

        if (strcmp(r->name, name) == 0) {
            return r;
        }
    }
    return NULL;
}

static int add_key(apr_pool_t *p, server_rec *s, subjects_t *sj,
                   const llmgw_key_t *k, const llmgw_router_t *rt)
{
    apr_hash_index_t *hi;
    int ok = add_def(p, s, sj, k->subject, &k->conf, k->file, k->line);

    for (hi = apr_hash_first(p, k->per_route); hi; hi = apr_hash_next(hi)) {
        const llmgw_key_route_t *kr = apr_hash_this_val(hi);

        if (!route_named(rt, kr->route)) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                         LLMGW_LOGNO(0502) "%s:%d: <LLMKey \"%s\">: route=%s "
                                           "names no <LLMRoute> (its first "
                                           "name)",
                         k->file, k->line, k->name, kr->route);
            ok = 0;
        }
        ok &= add_def(p, s, sj, kr->subject, &kr->conf, k->file, k->line);
    }
    return ok;
}

/* Every server's keys, key×route limits and route limits once. */
static int collect(apr_pool_t *p, server_rec *s, subjects_t *sj)
{
    apr_hash_t *seen = apr_hash_make(p);
    server_rec *vs;
    int ok = 1, i;

    sj->defs = apr_array_make(p, 16, sizeof(llmgw_limits_def_t));
    sj->where = apr_hash_make(p);
    sj->users = NULL;
    for (vs = s; vs; vs = vs->next) {
        llmgw_server_conf_t *c = llmgw_sconf(vs);

        if (c->users && sj->users && c->users != sj->users) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                         LLMGW_LOGNO(0503) "%s:%d: one <LLMUserLimits> "
                                           "serves every virtual host; "
                                           "another is at %s:%d",
                         c->users->file, c->users->line, sj->users->file,
                         sj->users->line);
            ok = 0;
        }
        sj->users = sj->users ? sj->users : c->users;
        if (c->keys && !apr_hash_get(seen, &c->keys, sizeof(c->keys))) {
            apr_hash_set(seen, &c->keys, sizeof(c->keys), "");
            for (i = 0; i < c->keys->nelts; i++) {
                ok &=
                    add_key(p, s, sj, APR_ARRAY_IDX(c->keys, i, llmgw_key_t *),
                            c->router);
            }
        }
        if (apr_hash_get(seen, &c->router, sizeof(c->router))) {
            continue;
        }
        apr_hash_set(seen, &c->router, sizeof(c->router), "");
        for (i = 0; i < c->router->routes->nelts; i++) {
            llmgw_route_t *r =
                APR_ARRAY_IDX(c->router->routes, i, llmgw_route_t *);
            llmgw_route_limits_t *rl = r->limits;

            if (rl && rl->subject) {
                ok &= add_def(p, s, sj, rl->subject, &rl->conf, r->file,
                              r->line);
            }
        }
    }
    return ok;
}

static int check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                        server_rec *s)
{
    subjects_t sj;

    return collect(ptemp, s, &sj) ? OK : !OK;
}

/* ---------------------------------------------------------------------
 * The segment, the snapshot file
 */

/* The newest snapshot the table takes: the file, else the one before. */
static void restore(apr_pool_t *p, server_rec *s, apr_time_t now)
{
    const char *paths[2];
    int i, restored, dropped;

    paths[0] = snap_path;
    paths[1] = apr_pstrcat(p, snap_path, ".1", NULL);
    for (i = 0; i < 2; i++) {
        const char *why = NULL;
        char *buf;
        apr_size_t len;
        apr_status_t rv = llmgw_file_read(p, paths[i], SNAP_MAX, &buf, &len);

        if (rv == APR_SUCCESS
            && (rv = llmgw_limits_restore(table, buf, len, now, &restored,
                                          &dropped, &why))
                   == APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                         LLMGW_LOGNO(0504) "limits: usage of %d subjects "
                                           "restored from %s (%d dropped)",
                         restored, paths[i], dropped);
            return;
        }
        if (!APR_STATUS_IS_ENOENT(rv)) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                         LLMGW_LOGNO(0505) "limits: snapshot %s not "
                                           "restored: %s",
                         paths[i], why ? why : "cannot read it");
        }
    }
}

/* Writes the snapshot when the table changed since the last one: to a
 * temporary file, renamed over the last (which is kept as .1). */
static void snapshot(apr_pool_t *p, apr_time_t now, int force)
{
    llmgw_limits_stats_t st;
    const char *buf;
    apr_size_t len;
    apr_status_t rv;

    llmgw_limits_stats(table, &st);
    if (st.changes == snap_changes
        || (!force && now - snap_last < SNAP_EVERY)) {
        return;
    }
    snap_last = now;
    if (llmgw_limits_snapshot(table, p, now, &buf, &len) != APR_SUCCESS) {
        return;
    }
    rv = llmgw_file_replace(p, snap_path, buf, len, 0,
                            apr_pstrcat(p, snap_path, ".1", NULL));
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, ap_server_conf,
                     LLMGW_LOGNO(0506) "limits: cannot write the snapshot "
                                       "%s",
                     snap_path);
        return;
    }
    snap_changes = st.changes;
}

/* The parent, as it exits or re-reads its configuration: the last
 * snapshot. */
static apr_status_t final_snapshot(void *data)
{
    apr_pool_t *p;

    /* Children run pconf's cleanups too as they exit: not theirs. */
    if (table && getpid() == parent_pid
        && apr_pool_create(&p, NULL) == APR_SUCCESS) {
        snapshot(p, apr_time_now(), 1);
        apr_pool_destroy(p);
    }
    return APR_SUCCESS;
}

static apr_uint32_t table_records(void)
{
    int daemons = 0, threads = 0;

    ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons);
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    /* Every worker busy with a limited request, and room for the ones a
     * graceful restart leaves finishing. */
    return (apr_uint32_t)((daemons > 0 ? daemons : 16)
                              * (threads > 0 ? threads : 1) * 2
                          + 64);
}

/* A new segment for the table, configured; restored from the file, or
 * from old (the previous segment's snapshot) when that is given. */
static int new_table(apr_pool_t *pglobal, apr_pool_t *ptemp, server_rec *s,
                     limits_retained_t *rd, const subjects_t *sj,
                     apr_uint32_t subjects, const char *old, apr_size_t oldlen)
{
    apr_uint32_t records = table_records();
    apr_size_t size = llmgw_limits_size(subjects, records);
    apr_time_t now = apr_time_now();
    const char *why;
    apr_status_t rv;

    if (!size
        || (rv = apr_shm_create(&rd->shm, size, NULL, pglobal))
               != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                     LLMGW_LOGNO(0507) "limits: cannot make a shared "
                                       "table of %" APR_SIZE_T_FMT " bytes",
                     size);
        return !OK;
    }
    rd->size = size;
    rd->subjects = subjects;
    rd->records = records;
    table = llmgw_limits_init(apr_shm_baseaddr_get(rd->shm), size, subjects,
                              records, 0);
    if (!table
        || llmgw_limits_configure(
               table, (const llmgw_limits_def_t *)sj->defs->elts,
               sj->defs->nelts, sj->users ? &sj->users->conf : NULL, now)
               != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                     LLMGW_LOGNO(0508) "limits: cannot lay out the table");
        table = NULL;
        return !OK;
    }
    if (old) {
        llmgw_limits_restore(table, old, oldlen, now, NULL, NULL, &why);
    }
    else {
        restore(ptemp, s, now);
    }
    return OK;
}

/* The retained table with the new configuration; a bigger one (with its
 * counts) when it no longer fits. */
static int keep_table(apr_pool_t *pglobal, apr_pool_t *ptemp, server_rec *s,
                      limits_retained_t *rd, const subjects_t *sj,
                      apr_uint32_t subjects)
{
    const char *buf;
    apr_size_t len;
    apr_status_t rv;

    table = llmgw_limits_attach(apr_shm_baseaddr_get(rd->shm), rd->size);
    rv = table && subjects <= rd->subjects && rd->records >= table_records()
             ? llmgw_limits_configure(
                 table, (const llmgw_limits_def_t *)sj->defs->elts,
                 sj->defs->nelts, sj->users ? &sj->users->conf : NULL,
                 apr_time_now())
             : APR_ENOSPC;
    if (rv == APR_SUCCESS) {
        return OK;
    }
    /* Children of the old generation settle into the old segment, which
     * lives on until they exit: what they settle from now on is lost. */
    if (!table
        || llmgw_limits_snapshot(table, ptemp, apr_time_now(), &buf, &len)
               != APR_SUCCESS) {
        buf = NULL;
        len = 0;
    }
    return new_table(pglobal, ptemp, s, rd, sj, subjects, buf, len);
}

/* ---------------------------------------------------------------------
 * The parent's periodic work
 */

static void sync_once(apr_pool_t *p, apr_time_t now);

static void tick(apr_pool_t *p)
{
    apr_time_t now = apr_time_now();

    if (!table) {
        return;
    }
    llmgw_limits_sweep(table, p, now, 0);
    if (sync_mc) {
        sync_once(p, now);
    }
    snapshot(p, now, 0);
}

static apr_status_t watchdog_tick(int state, void *data, apr_pool_t *p)
{
    if (state == AP_WATCHDOG_STATE_RUNNING) {
        tick(p);
    }
    return APR_SUCCESS;
}

static int use_watchdog;

/* Without mod_watchdog: httpd's monitor hook, about every ten seconds. */
static int monitor(apr_pool_t *p, server_rec *s)
{
    apr_pool_t *tp;

    if (!use_watchdog && table && apr_pool_create(&tp, p) == APR_SUCCESS) {
        tick(tp);
        apr_pool_destroy(tp);
    }
    return DECLINED;
}

/* The snapshot's directory, the children's user's (when started as
 * root): the singleton watchdog writes there, the parent at its exit. */
static const char *snap_file(apr_pool_t *pconf, apr_pool_t *ptemp,
                             server_rec *s)
{
    const char *dir = ap_runtime_dir_relative(pconf, SNAP_DIR);
    apr_status_t rv = apr_dir_make(
        dir, APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_UEXECUTE, ptemp);

    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                     LLMGW_LOGNO(0512) "limits: cannot make %s: no "
                                       "snapshots",
                     dir);
    }
    else if (geteuid() == 0
             && chown(dir, ap_unixd_config.user_id, ap_unixd_config.group_id)
                    != 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, APR_FROM_OS_ERROR(errno), s,
                     LLMGW_LOGNO(0513) "limits: cannot give %s to the "
                                       "children's user",
                     dir);
    }
    return apr_pstrcat(pconf, dir, "/" SNAP_NAME, NULL);
}

/* The periodic work in one child at a time (mod_watchdog's singleton),
 * else the parent's monitor hook. */
static void start_ticks(apr_pool_t *pconf, server_rec *s,
                        apr_interval_time_t every)
{
    use_watchdog = llmgw_watchdog_every(pconf, "llm_gateway-limits", every,
                                        NULL, watchdog_tick)
                   == APR_SUCCESS;
    if (!use_watchdog) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     LLMGW_LOGNO(0509) "limits: mod_watchdog is not loaded "
                                       "(LoadModule watchdog_module): "
                                       "snapshots and the cluster sync run "
                                       "only about every ten seconds");
    }
}

/* ---------------------------------------------------------------------
 * Several nodes: counters in memcached (docs/limits.md)
 */

static void sync_item(apr_pool_t *p, llmgw_limits_sync_t *it, apr_time_t now,
                      int *ok)
{
    const char *key = apr_pstrcat(p, "llmgw:", it->key, NULL);
    apr_uint64_t total;
    apr_status_t rv = llmgw_mc_incr(sync_mc, key, it->delta, &total);
    apr_uint32_t ttl;

    if (APR_STATUS_IS_NOTFOUND(rv)) {
        /* memcached lost it (or never had it): seed it with all we know. */
        ttl = it->expires > apr_time_sec(now)
                  ? (apr_uint32_t)(it->expires - apr_time_sec(now))
                  : 1;
        rv = llmgw_mc_add_number(sync_mc, key, it->mark, ttl);
        total = it->mark;
        if (APR_STATUS_IS_EEXIST(rv)) {
            rv = llmgw_mc_incr(sync_mc, key, it->mark, &total);
        }
    }
    if (rv == APR_SUCCESS) {
        llmgw_limits_sync_apply(table, it, total, now);
    }
    else {
        *ok = 0; /* not applied: the next delta carries it again */
    }
}

static void sync_once(apr_pool_t *p, apr_time_t now)
{
    llmgw_limits_sync_t items[SYNC_ITEMS];
    int i, n, ok = 1;

    do {
        n = llmgw_limits_sync_collect(table, &sync_cursor, now, items,
                                      SYNC_ITEMS);
        for (i = 0; i < n; i++) {
            sync_item(p, &items[i], now, &ok);
        }
    } while (n);
    if (ok) {
        sync_last_ok = now;
    }
}

static const char *sync_servers(server_rec *s)
{
    llmgw_server_conf_t *c = llmgw_sconf(s);
    llmgw_store_t *st = llmgw_conf_store(c);

    if (c->limit_servers) {
        return *c->limit_servers ? c->limit_servers : NULL;
    }
    return st && !llmgw_store_is_shm(st) ? st->servers : NULL;
}

static void start_sync(apr_pool_t *pconf, server_rec *s)
{
    llmgw_server_conf_t *c = llmgw_sconf(s);
    const char *servers = sync_servers(s);

    sync_mc = NULL;
    fail_closed = c->limit_fail_closed == 1;
    stale_after = c->limit_stale ? c->limit_stale : apr_time_from_sec(10);
    if (servers
        && llmgw_mc_create(pconf, servers, apr_time_from_msec(100),
                           apr_time_from_sec(2), 2, 64, &sync_mc)
               != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                     LLMGW_LOGNO(0510) "limits: bad memcache servers '%s'",
                     servers);
        sync_mc = NULL;
    }
    sync_last_ok = apr_time_now();
}

int llmgw_limits_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                             server_rec *s)
{
    static const char *const key = "mod_llm_gateway-limits";
    limits_retained_t *rd = ap_retained_data_get(key);
    llmgw_server_conf_t *c = llmgw_sconf(s);
    apr_uint32_t subjects;
    subjects_t sj;
    int rv;

    table = NULL;
    if (!collect(ptemp, s, &sj)) {
        return !OK;
    }
    if (!sj.defs->nelts && !sj.users) {
        return OK; /* nothing limited: no table, no cost */
    }
    subjects =
        (apr_uint32_t)sj.defs->nelts + (sj.users ? LIMITS_USERS : 0) + 64;
    snap_path = snap_file(pconf, ptemp, s);
    if (!rd) {
        rd = ap_retained_data_create(key, sizeof(*rd));
    }
    rv = rd->shm ? keep_table(s->process->pool, ptemp, s, rd, &sj, subjects)
                 : new_table(s->process->pool, ptemp, s, rd, &sj, subjects,
                             NULL, 0);
    if (rv != OK) {
        return rv;
    }
    parent_pid = getpid();
    start_sync(pconf, s);
    start_ticks(pconf, s,
                c->limit_interval && sync_mc ? c->limit_interval
                                             : TICK_DEFAULT);
    apr_pool_cleanup_register(pconf, NULL, final_snapshot,
                              apr_pool_cleanup_null);
    return OK;
}

void llmgw_limits_child_init(apr_pool_t *pchild, server_rec *s)
{
    if (table) {
        llmgw_limits_sweep(table, pchild, apr_time_now(), 1);
    }
}

/* ---------------------------------------------------------------------
 * Authentication
 */

static int unauthorized(request_rec *r, llmgw_req_t *ctx, const char *msg)
{
    apr_table_setn(r->err_headers_out, "WWW-Authenticate", "Bearer");
    return llmgw_error_set(&ctx->err, HTTP_UNAUTHORIZED,
                           "invalid_request_error", NULL, "invalid_api_key",
                           msg);
}

/* The key whose hash is digest: every configured hash compared, each in
 * constant time, none skipped. */
static const llmgw_key_t *key_of(const apr_array_header_t *keys,
                                 const unsigned char *digest)
{
    const llmgw_key_t *found = NULL;
    int i, j;

    for (i = 0; keys && i < keys->nelts; i++) {
        const llmgw_key_t *k = APR_ARRAY_IDX(keys, i, const llmgw_key_t *);
        unsigned char diff = 0;

        for (j = 0; j < 32; j++) {
            diff |= k->hash[j] ^ digest[j];
        }
        found = diff ? found : k;
    }
    return found;
}

static const llmgw_key_t *key_lookup(const apr_array_header_t *keys,
                                     const char *text, apr_size_t len)
{
    unsigned char digest[32];
    llmgw_sha256_t sc;

    llmgw_sha256_init(&sc);
    llmgw_sha256_update(&sc, text, len);
    llmgw_sha256_final(&sc, digest);
    return key_of(keys, digest);
}

/* A key's text: printable ASCII without spaces, at most KEY_MAX bytes. */
static int key_text_ok(const char *k)
{
    const char *c;

    for (c = k; *c && c - k <= KEY_MAX; c++) {
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e) {
            return 0;
        }
    }
    return c > k && !*c;
}

/* The key the client sent: Authorization: Bearer KEY or x-api-key: KEY.
 * NULL with *bad set when a header is there but holds no usable key (or
 * both are there and differ); NULL alone when there is none. */
static const char *presented_key(request_rec *r, int *bad)
{
    const char *auth = apr_table_get(r->headers_in, "Authorization");
    const char *x = apr_table_get(r->headers_in, "x-api-key");
    const char *k = NULL;

    *bad = 0;
    if (auth && strncasecmp(auth, "Bearer", 6) == 0
        && (auth[6] == ' ' || !auth[6])) {
        for (k = auth + 6; *k == ' '; k++) {
        }
        *bad = !key_text_ok(k);
    }
    if (x) {
        *bad |= !key_text_ok(x) || (k && strcmp(k, x) != 0);
        k = k ? k : x;
    }
    return *bad ? NULL : k;
}

/* The request line and URL as the logs see them, without a query. */
static void scrub_query(request_rec *r)
{
    r->args = NULL;
    r->parsed_uri.query = NULL;
    r->unparsed_uri = apr_pstrdup(r->pool, r->uri);
    r->the_request = apr_pstrcat(r->pool, r->method, " ", r->uri,
                                 "?[redacted] ", r->protocol, NULL);
}

/* Whether the query string holds what may be a key: a parameter named
 * like one, or a value that is one of ours. */
static int key_in_query(request_rec *r, const apr_array_header_t *keys)
{
    static const char *const names[] = { "key",    "api_key", "api-key",
                                         "apikey", "token",   "access_token",
                                         NULL };
    char *args = apr_pstrdup(r->pool, r->args), *last, *pair;
    int i;

    for (pair = apr_strtok(args, "&", &last); pair;
         pair = apr_strtok(NULL, "&", &last)) {
        char *eq = strchr(pair, '=');

        if (eq) {
            *eq++ = '\0';
            ap_unescape_url(eq);
        }
        ap_unescape_url(pair);
        for (i = 0; names[i]; i++) {
            if (strcasecmp(pair, names[i]) == 0) {
                return 1;
            }
        }
        if (eq && key_lookup(keys, eq, strlen(eq))) {
            return 1;
        }
    }
    return 0;
}

static void authenticated(request_rec *r, llmgw_req_t *ctx,
                          const llmgw_key_t *k)
{
    ctx->key = k;
    r->user = (char *)k->name;
    if (k->team) {
        apr_table_setn(r->notes, LLMGW_NOTE_KEY_TEAM, k->team);
    }
    /* The key is ours, not the backend's: it goes no further. */
    apr_table_unset(r->headers_in, "Authorization");
    apr_table_unset(r->headers_in, "x-api-key");
}

int llmgw_limits_auth(request_rec *r, llmgw_req_t *ctx)
{
    const llmgw_dir_conf_t *d = llmgw_dconf(r);
    const llmgw_server_conf_t *c = llmgw_sconf(r->server);
    int require = d->require_key == 1, bad;
    const char *text;
    const llmgw_key_t *k;

    if (!c->keys && !require && d->key_from_user != 1) {
        return 0; /* open, as without keys */
    }
    if (r->args && *r->args && key_in_query(r, c->keys)) {
        scrub_query(r);
        return unauthorized(r, ctx,
                            "API keys are not accepted in the URL: send "
                            "the key as Authorization: Bearer KEY (and "
                            "treat this one as exposed).");
    }
    if (d->key_from_user == 1) {
        if (r->user && c->users) {
            ctx->key = c->users;
        }
        return require && !r->user
                   ? unauthorized(r, ctx,
                                  "This API needs an authenticated "
                                  "user.")
                   : 0;
    }
    text = presented_key(r, &bad);
    k = text ? key_lookup(c->keys, text, strlen(text)) : NULL;
    if (k && !k->disabled) {
        authenticated(r, ctx, k);
        return 0;
    }
    if (!require) {
        return 0; /* an unknown key on an open API: as without one */
    }
    return unauthorized(
        r, ctx,
        bad     ? "Malformed API key: send Authorization: Bearer KEY or "
                  "x-api-key: KEY."
        : !text ? "You didn't provide an API key: send Authorization: "
                  "Bearer KEY or x-api-key: KEY."
        : k     ? "This API key is disabled."
                : "Incorrect API key provided.");
}

/* ---------------------------------------------------------------------
 * Admission and settlement
 */

static llmgw_price_t price_of(const llmgw_server_conf_t *c, const char *model,
                              const char *upstream)
{
    llmgw_price_t none = { 0, 0 };
    int i;

    for (i = 0; c->prices && i < c->prices->nelts; i++) {
        const llmgw_model_price_t *mp =
            &APR_ARRAY_IDX(c->prices, i, llmgw_model_price_t);

        if (apr_fnmatch(mp->model, model, 0) == APR_SUCCESS
            || (upstream
                && apr_fnmatch(mp->model, upstream, 0) == APR_SUCCESS)) {
            return mp->price;
        }
    }
    return none;
}

/* The request's subjects in the table: its key's (or user's), its
 * route's, the key's on the route. Returns how many; -1 when the table
 * has no room for a new user. */
static int find_subjects(request_rec *r, llmgw_req_t *ctx,
                         llmgw_limits_subject_t *out)
{
    const llmgw_route_limits_t *rl = ctx->route->limits;
    const llmgw_key_t *k = ctx->key;
    const llmgw_key_route_t *kr;
    apr_status_t rv;
    int n = 0;

    if (k && k->subject) {
        n += llmgw_limits_find(table, k->subject, &out[n]) == APR_SUCCESS;
        kr = apr_hash_get(k->per_route, ctx->route->name, APR_HASH_KEY_STRING);
        if (kr) {
            n += llmgw_limits_find(table, kr->subject, &out[n]) == APR_SUCCESS;
        }
    }
    else if (k) {
        const char *name = llmgw_limits_subject_name(
            r->pool, LLMGW_SUBJECT_USER, r->user, NULL);

        rv = llmgw_limits_find_or_add(table, name, apr_time_now(), &out[n]);
        if (APR_STATUS_IS_ENOSPC(rv)) {
            llmgw_limits_sweep(table, r->pool, apr_time_now(), 1);
            rv =
                llmgw_limits_find_or_add(table, name, apr_time_now(), &out[n]);
        }
        if (APR_STATUS_IS_ENOSPC(rv)) {
            return -1;
        }
        n += rv == APR_SUCCESS;
    }
    if (rl && rl->subject) {
        n += llmgw_limits_find(table, rl->subject, &out[n]) == APR_SUCCESS;
    }
    return n;
}

static apr_status_t end_cleanup(void *data)
{
    llmgw_req_t *ctx = data;

    llmgw_limits_end(ctx->admit->r, ctx);
    return APR_SUCCESS;
}

static int refused(request_rec *r, llmgw_req_t *ctx,
                   const llmgw_limits_verdict_t *v, llmgw_limit_kind_t kind)
{
    if (kind == LLMGW_LIMIT_FULL || kind == LLMGW_LIMIT_GONE) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      LLMGW_LOGNO(0511) "limits: no reservation possible "
                                        "(%s)",
                      kind == LLMGW_LIMIT_FULL ? "every record in use"
                                               : "a subject went away");
        return llmgw_error_set(&ctx->err, HTTP_SERVICE_UNAVAILABLE,
                               "server_error", NULL, "limits_unavailable",
                               "The gateway cannot account for this request "
                               "now; retry shortly.");
    }
    llmgw_limits_headers(r->err_headers_out, v);
    return llmgw_limits_error(r->pool, v, &ctx->err);
}

/* The answer's bound the gateway sets when the client gives none. */
static void estimate_conf(const llmgw_route_t *route,
                          llmgw_estimate_conf_t *ec)
{
    const llmgw_route_limits_t *rl = route->limits;

    llmgw_estimate_defaults(ec);
    if (rl) {
        ec->default_max = rl->default_max;
        ec->max_cap = rl->max_cap;
    }
}

/* A request whose budget cannot be checked against the other nodes'
 * (the sync failed for longer than LLMLimitStore stale=): refused with
 * fail=closed. */
static int sync_stale(void)
{
    return fail_closed && sync_mc
           && apr_time_now() - sync_last_ok > stale_after;
}

static int reserve(request_rec *r, llmgw_req_t *ctx, llmgw_limits_req_t *rq,
                   struct llmgw_admission *a)
{
    llmgw_limits_verdict_t v;
    llmgw_limit_kind_t kind;
    int tries;

    for (tries = 0; tries < 2; tries++) {
        kind = llmgw_limits_reserve(table, rq, apr_time_now(), &a->tk, &v);
        if (kind != LLMGW_LIMIT_GONE) {
            break;
        }
        /* Dropped by a reconfiguration since it was found: again. */
        if ((rq->nsubjects = find_subjects(r, ctx, rq->subject)) <= 0) {
            return 0;
        }
    }
    if (kind != LLMGW_LIMIT_OK) {
        return refused(r, ctx, &v, kind);
    }
    llmgw_limits_headers(r->err_headers_out, &v);
    ctx->admit = a;
    apr_pool_cleanup_register(r->pool, ctx, end_cleanup,
                              apr_pool_cleanup_null);
    return 0;
}

int llmgw_limits_admit(request_rec *r, llmgw_req_t *ctx)
{
    const llmgw_limits_subject_t none = { 0, 0 };
    llmgw_limits_req_t rq = { { none } };
    llmgw_estimate_conf_t ec;
    llmgw_estimate_t e;
    struct llmgw_admission *a;
    int rv;

    if (!llmgw_key_allows(ctx->key, ctx->req.model)) {
        return llmgw_error_set(
            &ctx->err, HTTP_FORBIDDEN, "invalid_request_error", "model",
            "model_not_allowed",
            apr_psprintf(r->pool, "This API key may not use the model '%s'.",
                         ctx->req.model));
    }
    if (!table || (rq.nsubjects = find_subjects(r, ctx, rq.subject)) == 0) {
        return 0;
    }
    if (rq.nsubjects < 0 || sync_stale()) {
        return refused(r, ctx, NULL, LLMGW_LIMIT_FULL);
    }
    estimate_conf(ctx->route, &ec);
    if ((rv = llmgw_estimate(&ctx->req, &ec,
                             llmgw_limits_headroom(table, rq.subject,
                                                   rq.nsubjects,
                                                   apr_time_now()),
                             &e, &ctx->err))
        != 0) {
        return rv;
    }
    /* The estimate saturates there: such a request is out of range. */
    if (e.prompt >= LLMGW_LIMITS_TOKENS_MAX
        || e.max_out >= LLMGW_LIMITS_TOKENS_MAX) {
        return llmgw_error_set(&ctx->err, HTTP_BAD_REQUEST,
                               "invalid_request_error", e.field,
                               "invalid_value",
                               "The request may take more tokens than "
                               "this gateway accounts for (2^40).");
    }
    if (e.set) {
        ctx->req.max_tokens = e.max_tokens;
        ctx->req.max_tokens_field = e.field;
    }
    a = apr_pcalloc(r->pool, sizeof(*a));
    a->r = r;
    a->prompt = rq.prompt = e.prompt;
    a->max_out = rq.max_out = e.max_out;
    rq.price =
        price_of(llmgw_sconf(r->server), ctx->req.model, ctx->upstream_model);
    rq.owner = getpid();
    return reserve(r, ctx, &rq, a);
}

int llmgw_limits_reroute(request_rec *r, llmgw_req_t *ctx)
{
    const llmgw_limits_subject_t none = { 0, 0 };
    llmgw_limits_req_t rq = { { none } };
    struct llmgw_admission *a = ctx->admit;
    llmgw_limits_verdict_t v;
    llmgw_limit_kind_t kind;

    if (!a || a->tk.settled) {
        /* Nothing reserved on the route before: admitted on this one as
         * any request (its own limits, if it has any). */
        return llmgw_limits_admit(r, ctx);
    }
    if ((rq.nsubjects = find_subjects(r, ctx, rq.subject)) < 0) {
        return refused(r, ctx, NULL, LLMGW_LIMIT_FULL);
    }
    rq.prompt = a->prompt;
    rq.max_out = a->max_out;
    rq.price =
        price_of(llmgw_sconf(r->server), ctx->req.model, ctx->upstream_model);
    rq.owner = getpid();
    kind = llmgw_limits_retarget(table, &a->tk, &rq, apr_time_now(), &v);
    if (kind != LLMGW_LIMIT_OK) {
        return refused(r, ctx, &v, kind);
    }
    llmgw_limits_headers(r->err_headers_out, &v);
    return 0;
}

void llmgw_limits_end(request_rec *r, llmgw_req_t *ctx)
{
    struct llmgw_admission *a = ctx->admit;
    apr_int64_t prompt = 0, completion = 0;

    if (!a || a->tk.settled) {
        return;
    }
    if (ctx->usage.found) {
        prompt = ctx->usage.prompt;
        completion = ctx->usage.completion;
    }
    else if (ctx->hit || ctx->following) {
        /* an answer without usage from the cache: nothing to charge */
    }
    else if (ctx->generated > 0) {
        /* A stream cut before its usage: its bytes bound its tokens. */
        prompt = a->prompt;
        completion = llmgw_estimate_completion(ctx->generated, a->max_out);
    }
    else if (ctx->complete) {
        /* A whole answer without usage: what it may have taken. */
        prompt = a->prompt;
        completion = a->max_out;
    }
    llmgw_limits_settle(table, &a->tk, prompt, completion, apr_time_now());
}

/* ---------------------------------------------------------------------
 * Usage in /server-status (a line per subject; ?auto: machine-readable)
 */

static void status_subject(request_rec *r, const llmgw_limits_usage_t *u,
                           int html)
{
    char *name = apr_pstrdup(r->pool, u->name), *c;
    int i;

    for (c = name; *c; c++) {
        *c = *c == '\037' ? '/' : *c; /* key+route: KEY/ROUTE */
    }
    ap_rprintf(r,
               "%sLLMLimit: %s inflight=%" APR_INT64_T_FMT
               " requests=%" APR_INT64_T_FMT " prompt=%" APR_INT64_T_FMT
               " completion=%" APR_INT64_T_FMT " cost=%" APR_INT64_T_FMT
               " refused=%" APR_INT64_T_FMT " rpm_remaining=%" APR_INT64_T_FMT
               " tpm_remaining=%" APR_INT64_T_FMT,
               html ? "<br>" : "", html ? ap_escape_html(r->pool, name) : name,
               u->inflight, u->requests, u->prompt_tokens,
               u->completion_tokens, u->cost,
               u->refused[LLMGW_LIMIT_RPM] + u->refused[LLMGW_LIMIT_TPM]
                   + u->refused[LLMGW_LIMIT_CONCURRENT]
                   + u->refused[LLMGW_LIMIT_BUDGET_TOKENS]
                   + u->refused[LLMGW_LIMIT_BUDGET_COST],
               u->rpm_remaining, u->tpm_remaining);
    for (i = 0; i < LLMGW_LIMITS_BUDGETS; i++) {
        if (u->conf.budget[i].unit) {
            ap_rprintf(r,
                       " budget%d=%" APR_INT64_T_FMT ",used=%" APR_INT64_T_FMT
                       ",reserved=%" APR_INT64_T_FMT
                       ",remote=%" APR_INT64_T_FMT
                       ",remaining=%" APR_INT64_T_FMT,
                       i, u->conf.budget[i].limit, u->budget[i].used,
                       u->budget[i].reserved, u->budget[i].remote,
                       u->budget[i].remaining);
        }
    }
    ap_rputs("\n", r);
}

static int status_hook(request_rec *r, int flags)
{
    apr_uint32_t cursor = 0;
    llmgw_limits_usage_t u;
    apr_time_t now = apr_time_now();
    int html = !(flags & AP_STATUS_SHORT);

    if (!table) {
        return OK;
    }
    if (html) {
        ap_rputs("<hr>\n<h2>LLM gateway limits</h2>\n", r);
    }
    while (llmgw_limits_usage_next(table, &cursor, now, &u) == APR_SUCCESS) {
        status_subject(r, &u, html);
    }
    return OK;
}

void llmgw_limits_register(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
    ap_hook_check_config(check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_monitor(monitor, NULL, NULL, APR_HOOK_MIDDLE);
}
