/* llmgw_store: memcached (llmgw_memcache, one client per child, keys spread
 * over the servers) and shm (llmgw_shmtab tables in shared memory, one
 * lock per shard). A store that
 * fails is logged at most every 10 s and the request goes on without it. */
#include <stdlib.h>

#include <httpd.h>
#include <http_log.h>
#include <ap_mpm.h>
#include <util_mutex.h>
#include <apr_strings.h>

#include "llmgw_config.h"
#include "llmgw_store.h"

APLOG_USE_MODULE(llm_gateway);

#define KEY_PREFIX "llmgw:"

static apr_status_t parse_size(const char *arg, apr_size_t *out)
{
    char *end;
    apr_off_t n;

    if (apr_strtoff(&n, arg, &end, 10) != APR_SUCCESS || n <= 0) {
        return APR_EINVAL;
    }
    if (*end == 'k' || *end == 'K') {
        n *= 1024;
        end++;
    }
    else if (*end == 'm' || *end == 'M') {
        n *= 1024 * 1024;
        end++;
    }
    if (*end) {
        return APR_EINVAL;
    }
    *out = (apr_size_t)n;
    return APR_SUCCESS;
}

/* ---- memcached ------------------------------------------------------ */

static apr_status_t mc_child_init(llmgw_store_t *st, apr_pool_t *p,
                                  server_rec *s)
{
    int threads = 1;

    /* Idle connections: at most one per thread that may want one. */
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    /* No value of ours is bigger than max-item: a bigger one is none. */
    return llmgw_mc_create(p, st->servers, st->timeout,
                           apr_time_from_sec(2), threads > 0 ? threads : 1,
                           st->max_item, &st->mc);
}

static const char *mc_key(apr_pool_t *p, const char *key)
{
    return apr_pstrcat(p, KEY_PREFIX, key, NULL);
}

static apr_status_t mc_get(llmgw_store_t *st, apr_pool_t *p, const char *key,
                           char **val, apr_size_t *len)
{
    return st->mc ? llmgw_mc_get(st->mc, p, mc_key(p, key), val, len)
                  : APR_EINIT;
}

static apr_status_t mc_set(llmgw_store_t *st, apr_pool_t *p, const char *key,
                           const char *val, apr_size_t len, apr_uint32_t ttl)
{
    return st->mc ? llmgw_mc_set(st->mc, mc_key(p, key), val, len, ttl)
                  : APR_EINIT;
}

/* A value under an answer's key is the answer, or a lease: LEASE_MARK and
 * the leader's generation. No answer starts so: a record starts with
 * "LLMGW" and its version number (llmgw_record_serialize). */
#define LEASE_MARK "LLMGW-lease "
#define LEASE_MARK_LEN (sizeof(LEASE_MARK) - 1)

static int is_lease(const char *v, apr_size_t n)
{
    return n >= LEASE_MARK_LEN && memcmp(v, LEASE_MARK, LEASE_MARK_LEN) == 0;
}

/* What a claim found under the key: the answer (APR_SUCCESS) or another's
 * lease (APR_EEXIST, *val its generation). */
static apr_status_t claimed(char **val, apr_size_t *len)
{
    if (!is_lease(*val, *len)) {
        return APR_SUCCESS;
    }
    *val += LEASE_MARK_LEN;
    *len -= LEASE_MARK_LEN;
    return APR_EEXIST;
}

static apr_status_t mc_add(llmgw_store_t *st, apr_pool_t *p, const char *key,
                           const char *val, apr_size_t len, apr_uint32_t ttl)
{
    return st->mc ? llmgw_mc_add(st->mc, mc_key(p, key), val, len, ttl)
                  : APR_EINIT;
}

static apr_status_t mc_del(llmgw_store_t *st, apr_pool_t *p, const char *key)
{
    return st->mc ? llmgw_mc_delete(st->mc, mc_key(p, key)) : APR_EINIT;
}

/* memcached: a look-up, then an add of the lease under the same key
 * (the add fails if an answer or another's lease came since), then, if it
 * failed, a look at what came. */
static apr_status_t mc_claim(llmgw_store_t *st, apr_pool_t *p,
                             const char *key, const char *lease,
                             apr_uint32_t ttl, char **val, apr_size_t *len)
{
    apr_status_t rv = mc_get(st, p, key, val, len);

    if (!APR_STATUS_IS_NOTFOUND(rv)) {
        return rv == APR_SUCCESS ? claimed(val, len) : rv;
    }
    rv = mc_add(st, p, key, lease, strlen(lease), ttl);
    if (rv == APR_SUCCESS) {
        return APR_NOTFOUND;
    }
    if (APR_STATUS_IS_EEXIST(rv)) {
        rv = mc_get(st, p, key, val, len);
        if (rv == APR_SUCCESS) {
            return claimed(val, len);
        }
        *val = NULL;            /* the other's lease went already */
        return APR_STATUS_IS_NOTFOUND(rv) ? APR_EEXIST : rv;
    }
    return rv;
}

static apr_status_t mc_settle(llmgw_store_t *st, apr_pool_t *p,
                              const char *key, const char *val,
                              apr_size_t len, apr_uint32_t ttl)
{
    apr_status_t rv = val ? mc_set(st, p, key, val, len, ttl) : APR_SUCCESS;

    if (!val || rv != APR_SUCCESS) {
        mc_del(st, p, key);
    }
    return rv;
}

static const llmgw_store_ops_t memcache_ops = {
    "memcache", NULL, mc_child_init, mc_get, mc_set, mc_claim, mc_settle
};

/* ---- shm: llmgw_shmtab shards in one shared segment --------------- */

#define MAX_SHARDS 16
/* One index slot per this many bytes of ring: answers are rarely
 * smaller, and a lease or a stream piece that is costs only a slot. */
#define SHM_AVG_ITEM 512

static apr_status_t shm_post_config(llmgw_store_t *st, apr_pool_t *pconf,
                                    apr_pool_t *ptemp, server_rec *s)
{
    apr_size_t each;
    apr_status_t rv;
    char *base;
    int i;

    /* As many shards as keep each at least 8 of the largest items. */
    st->nshards = (int)(st->shm_size / (8 * st->max_item));
    st->nshards = st->nshards < 1 ? 1
                  : st->nshards > MAX_SHARDS ? MAX_SHARDS : st->nshards;
    each = (st->shm_size / st->nshards) & ~(apr_size_t)63;
    /* Anonymous: the children inherit it; a restart starts afresh. */
    rv = apr_shm_create(&st->shm, each * st->nshards, NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, LLMGW_LOGNO(0202)
                     "LLMCache shm: cannot get %" APR_SIZE_T_FMT " bytes of "
                     "shared memory", each * st->nshards);
        return rv;
    }
    base = apr_shm_baseaddr_get(st->shm);
    st->shards = apr_pcalloc(pconf, st->nshards * sizeof(*st->shards));
    for (i = 0; i < st->nshards; i++) {
        struct llmgw_shard *sh = &st->shards[i];

        sh->tab = llmgw_shmtab_init(base + i * each, each, SHM_AVG_ITEM);
        if (!sh->tab || llmgw_shmtab_max_item(sh->tab, 128) < st->max_item) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, LLMGW_LOGNO(0204)
                         "LLMCache shm: size=%" APR_SIZE_T_FMT " is too "
                         "small for max-item=%" APR_SIZE_T_FMT, st->shm_size,
                         st->max_item);
            return APR_ENOSPC;
        }
        rv = ap_global_mutex_create(&sh->mutex, NULL, LLMGW_STORE_MUTEX,
                                    apr_itoa(ptemp, i), s, pconf, 0);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        sh->spin = apr_global_mutex_mech(sh->mutex) == APR_LOCK_PROC_PTHREAD;
    }
    return APR_SUCCESS;
}

static apr_status_t shm_child_init(llmgw_store_t *st, apr_pool_t *p,
                                   server_rec *s)
{
    apr_status_t rv = APR_SUCCESS;
    int i;

    for (i = 0; rv == APR_SUCCESS && i < st->nshards; i++) {
        rv = apr_global_mutex_child_init(
            &st->shards[i].mutex,
            apr_global_mutex_lockfile(st->shards[i].mutex), p);
    }
    return rv;
}

/* The shard of a key: by its hash, so that the threads of all children
 * spread over the locks. */
static struct llmgw_shard *shard_of(llmgw_store_t *st, const char *key)
{
    apr_uint32_t h = 2166136261u;

    for (; *key; key++) {
        h = (h ^ (unsigned char)*key) * 16777619u;
    }
    return &st->shards[h % (apr_uint32_t)st->nshards];
}

/* Tries before a contended shard lock sleeps. A shard is held for a
 * look-up and a copy of one entry (about a microsecond), while a sleep on
 * the robust, priority-inheriting pthread mutex APR makes costs a round
 * trip through the kernel on both sides; so, as glibc's adaptive mutexes
 * do, try a while first. Only for pthread mutexes, where a try is one
 * atomic instruction rather than a system call. */
#define LOCK_SPINS 100

static apr_status_t lock_mutex(struct llmgw_shard *sh)
{
    int i;

    if (sh->spin) {
        for (i = 0; i < LOCK_SPINS; i++) {
            if (apr_global_mutex_trylock(sh->mutex) == APR_SUCCESS) {
                return APR_SUCCESS;
            }
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }
    return apr_global_mutex_lock(sh->mutex);
}

/* ... locked; NULL if the lock failed (*rv says why). */
static struct llmgw_shard *lock_shard(llmgw_store_t *st, const char *key,
                                      apr_status_t *rv)
{
    struct llmgw_shard *sh = shard_of(st, key);

    *rv = lock_mutex(sh);
    return *rv == APR_SUCCESS ? sh : NULL;
}

static apr_status_t sh_get(struct llmgw_shard *sh, apr_pool_t *p,
                           const char *key, char **val, apr_size_t *len)
{
    return llmgw_shmtab_get(sh->tab, key, strlen(key), apr_time_now(), p,
                            val, len);
}

static apr_status_t sh_set(struct llmgw_shard *sh, const char *key,
                           const char *val, apr_size_t len, apr_uint32_t ttl)
{
    return llmgw_shmtab_set(sh->tab, key, strlen(key), val, len,
                            apr_time_now() + apr_time_from_sec(ttl));
}

/* Look-ups take no lock (see llmgw_shmtab_peek): a hot answer is read
 * by every thread of every child at once. */
static apr_status_t sh_peek(struct llmgw_shard *sh, apr_pool_t *p,
                            const char *key, char **val, apr_size_t *len)
{
    return llmgw_shmtab_peek(sh->tab, key, strlen(key), apr_time_now(), p,
                             val, len);
}

static apr_status_t shm_get(llmgw_store_t *st, apr_pool_t *p, const char *key,
                            char **val, apr_size_t *len)
{
    return sh_peek(shard_of(st, key), p, key, val, len);
}

static apr_status_t shm_set(llmgw_store_t *st, apr_pool_t *p, const char *key,
                            const char *val, apr_size_t len, apr_uint32_t ttl)
{
    struct llmgw_shard *sh;
    apr_status_t rv;

    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    rv = sh_set(sh, key, val, len, ttl);
    apr_global_mutex_unlock(sh->mutex);
    (void)p;
    return rv;
}

static apr_status_t shm_claim(llmgw_store_t *st, apr_pool_t *p,
                              const char *key, const char *lease,
                              apr_uint32_t ttl, char **val, apr_size_t *len)
{
    struct llmgw_shard *sh = shard_of(st, key);
    apr_status_t rv;

    /* A hit, the common case of a busy cache, and a follower need no
     * lock. */
    if (sh_peek(sh, p, key, val, len) == APR_SUCCESS) {
        return claimed(val, len);
    }
    if ((rv = lock_mutex(sh)) != APR_SUCCESS) {
        return rv;
    }
    rv = sh_get(sh, p, key, val, len);
    if (rv == APR_SUCCESS) {
        rv = claimed(val, len);
    }
    else if (APR_STATUS_IS_NOTFOUND(rv)) {
        rv = sh_set(sh, key, lease, strlen(lease), ttl);
        rv = rv == APR_SUCCESS ? APR_NOTFOUND : rv;
    }
    apr_global_mutex_unlock(sh->mutex);
    return rv;
}

static apr_status_t shm_settle(llmgw_store_t *st, apr_pool_t *p,
                               const char *key, const char *val,
                               apr_size_t len, apr_uint32_t ttl)
{
    struct llmgw_shard *sh;
    apr_status_t rv = APR_SUCCESS;

    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    if (val) {
        rv = sh_set(sh, key, val, len, ttl);
    }
    if (!val || rv != APR_SUCCESS) {
        llmgw_shmtab_del(sh->tab, key, strlen(key));
    }
    apr_global_mutex_unlock(sh->mutex);
    (void)p;
    return rv;
}

static const llmgw_store_ops_t shm_ops = {
    "shm", shm_post_config, shm_child_init, shm_get, shm_set, shm_claim,
    shm_settle
};

/* ---- configuration and use ------------------------------------------ */

const char *llmgw_store_create(apr_pool_t *p, int argc, char *const argv[],
                               llmgw_store_t **out)
{
    llmgw_store_t *st = apr_pcalloc(p, sizeof(*st));
    int i = 1;

    st->ttl = LLMGW_DEFAULT_TTL;
    if (strcasecmp(argv[0], "memcache") == 0) {
        if (argc < 2 || strchr(argv[1], '=')) {
            return "LLMCache memcache needs a server list, e.g. "
                   "LLMCache memcache 127.0.0.1:11211,10.0.0.2:11211";
        }
        st->ops = &memcache_ops;
        st->servers = argv[1];
        st->timeout = apr_time_from_msec(LLMGW_DEFAULT_MC_TIMEOUT_MS);
        /* memcached's default item limit is 1 MB, key and flags included */
        st->max_item = 1000 * 1000;
        i = 2;
    }
    else if (strcasecmp(argv[0], "shm") == 0) {
        st->ops = &shm_ops;
        st->shm_size = LLMGW_DEFAULT_SHM_SIZE;
        st->max_item = 128 * 1024;
    }
    else {
        return apr_psprintf(p, "LLMCache: unknown store '%s' (use memcache, "
                            "shm or off)", argv[0]);
    }
    for (; i < argc; i++) {
        const char *v = strchr(argv[i], '=');
        apr_size_t n;

        if (!v || parse_size(v + 1, &n) != APR_SUCCESS) {
            return apr_psprintf(p, "LLMCache: '%s' is not NAME=NUMBER",
                                argv[i]);
        }
        if (strncasecmp(argv[i], "ttl=", 4) == 0) {
            st->ttl = (apr_uint32_t)n;
        }
        else if (strncasecmp(argv[i], "timeout=", 8) == 0
                 && st->ops == &memcache_ops) {
            st->timeout = apr_time_from_msec(n);
        }
        else if (strncasecmp(argv[i], "max-item=", 9) == 0) {
            st->max_item = n;
        }
        else if (strncasecmp(argv[i], "size=", 5) == 0
                 && st->ops == &shm_ops) {
            st->shm_size = n;
        }
        else {
            return apr_psprintf(p, "LLMCache: unknown option '%s' (ttl=, "
                                "max-item=, %s)", argv[i],
                                st->ops == &shm_ops ? "size=" : "timeout=");
        }
    }
    if (st->ops == &shm_ops && st->max_item > st->shm_size / 8) {
        return "LLMCache shm: max-item must be at most an eighth of size";
    }
    *out = st;
    return NULL;
}

llmgw_store_t *llmgw_store_default(apr_pool_t *p)
{
    static char *const args[] = { "shm" };
    llmgw_store_t *st;

    return llmgw_store_create(p, 1, args, &st) ? NULL : st;
}

/* Failures are logged at most every 10 s per child: a memcached outage
 * must not flood the log with one line per request. */
static void log_failure(llmgw_store_t *st, request_rec *r, apr_status_t rv,
                        const char *what)
{
    apr_time_t now = apr_time_now();

    if (now < st->quiet_until) {
        return;
    }
    st->quiet_until = now + apr_time_from_sec(10);
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, r, LLMGW_LOGNO(0203)
                  "cache store %s: %s failed; requests go to the backends "
                  "until it is back", st->ops->name, what);
}

apr_status_t llmgw_store_get(llmgw_store_t *st, request_rec *r,
                             const char *key, char **val, apr_size_t *len)
{
    apr_status_t rv = st->ops->get(st, r->pool, key, val, len);

    if (rv == APR_SUCCESS && is_lease(*val, *len)) {
        return APR_NOTFOUND;    /* an answer on its way, not an answer */
    }
    if (rv != APR_SUCCESS && !APR_STATUS_IS_NOTFOUND(rv)) {
        log_failure(st, r, rv, "get");
    }
    return rv;
}

apr_status_t llmgw_store_set(llmgw_store_t *st, request_rec *r,
                             const char *key, const char *val,
                             apr_size_t len, apr_uint32_t ttl)
{
    apr_status_t rv;

    if (len > st->max_item) {
        return APR_ENOSPC;
    }
    rv = st->ops->set(st, r->pool, key, val, len, ttl ? ttl : st->ttl);
    if (rv != APR_SUCCESS) {
        log_failure(st, r, rv, "set");
    }
    return rv;
}

apr_status_t llmgw_store_claim(llmgw_store_t *st, request_rec *r,
                               const char *key, const char *gen,
                               apr_uint32_t ttl, char **val,
                               apr_size_t *len)
{
    apr_status_t rv;

    *val = NULL;
    rv = st->ops->claim(st, r->pool, key,
                        apr_pstrcat(r->pool, LEASE_MARK, gen, NULL),
                        ttl ? ttl : st->ttl, val, len);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_NOTFOUND(rv)
        && !APR_STATUS_IS_EEXIST(rv)) {
        log_failure(st, r, rv, "claim");
    }
    return rv;
}

apr_status_t llmgw_store_settle(llmgw_store_t *st, request_rec *r,
                                const char *key, const char *val,
                                apr_size_t len)
{
    apr_status_t rv;

    if (val && len > st->max_item) {
        val = NULL;
    }
    rv = st->ops->settle(st, r->pool, key, val, len, st->ttl);
    if (rv != APR_SUCCESS) {
        log_failure(st, r, rv, "set");
    }
    return rv;
}
