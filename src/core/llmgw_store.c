/* llmgw_store: memcached (llmgw_memcache, one client per child, keys spread
 * over the servers) and shm (llmgw_shmtab tables in shared memory that the
 * embedder provides, one lock per shard). A store that fails is logged at
 * most every 10 s per child and the request goes on without it. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_strings.h>

#include "llmgw_conf.h"
#include "llmgw_hash.h"
#include "llmgw_log.h"
#include "llmgw_store.h"

#define KEY_PREFIX "llmgw:"

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

/* ---- memcached ------------------------------------------------------ */

static apr_status_t mc_child_init(llmgw_store_t *st, apr_pool_t *p,
                                  int max_threads)
{
    /* Idle connections: at most one per thread that may want one. No
     * value of ours is bigger than max-item: a bigger one is none. */
    return llmgw_mc_create(p, st->servers, st->timeout, apr_time_from_sec(2),
                           max_threads > 0 ? max_threads : 1, st->max_item,
                           &st->mc);
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
static apr_status_t mc_claim(llmgw_store_t *st, apr_pool_t *p, const char *key,
                             const char *lease, apr_uint32_t ttl, char **val,
                             apr_size_t *len)
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
        *val = NULL; /* the other's lease went already */
        return APR_STATUS_IS_NOTFOUND(rv) ? APR_EEXIST : rv;
    }
    return rv;
}

static apr_status_t mc_settle(llmgw_store_t *st, apr_pool_t *p,
                              const char *key, const char *val, apr_size_t len,
                              apr_uint32_t ttl)
{
    apr_status_t rv = val ? mc_set(st, p, key, val, len, ttl) : APR_SUCCESS;

    if (!val || rv != APR_SUCCESS) {
        mc_del(st, p, key);
    }
    return rv;
}

static const llmgw_store_ops_t shm_ops;

static const llmgw_store_ops_t memcache_ops = { "memcache", mc_child_init,
                                                mc_get,     mc_set,
                                                mc_claim,   mc_settle };

/* ---- shm: llmgw_shmtab shards in one shared segment --------------- */

#define MAX_SHARDS 16
/* One index slot per this many bytes of ring: answers are rarely
 * smaller, and a lease or a stream piece that is costs only a slot. */
#define SHM_AVG_ITEM 512

int llmgw_store_shards(const llmgw_store_t *st)
{
    int n;

    if (st->ops != &shm_ops) {
        return 0;
    }
    /* As many shards as keep each at least 8 of the largest items. */
    n = (int)(st->shm_size / (8 * st->max_item));
    return n < 1 ? 1 : n > MAX_SHARDS ? MAX_SHARDS : n;
}

static apr_size_t shard_bytes(const llmgw_store_t *st)
{
    return (st->shm_size / (apr_size_t)llmgw_store_shards(st))
           & ~(apr_size_t)63;
}

apr_size_t llmgw_store_shm_bytes(const llmgw_store_t *st)
{
    return shard_bytes(st) * (apr_size_t)llmgw_store_shards(st);
}

const char *llmgw_store_shm_attach(llmgw_store_t *st, apr_pool_t *p,
                                   void *base, apr_global_mutex_t **mutexes)
{
    apr_size_t each = shard_bytes(st);
    int i;

    st->nshards = llmgw_store_shards(st);
    st->shards = apr_pcalloc(p, st->nshards * sizeof(*st->shards));
    for (i = 0; i < st->nshards; i++) {
        struct llmgw_shard *sh = &st->shards[i];

        sh->tab =
            llmgw_shmtab_init((char *)base + i * each, each, SHM_AVG_ITEM);
        if (!sh->tab || llmgw_shmtab_max_item(sh->tab, 128) < st->max_item) {
            return apr_psprintf(p,
                                "LLMCache shm: size=%" APR_SIZE_T_FMT
                                " is too small for max-item=%" APR_SIZE_T_FMT,
                                st->shm_size, st->max_item);
        }
        sh->mutex = mutexes[i];
        sh->spin = apr_global_mutex_mech(sh->mutex) == APR_LOCK_PROC_PTHREAD;
    }
    return NULL;
}

static apr_status_t shm_child_init(llmgw_store_t *st, apr_pool_t *p,
                                   int max_threads)
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
    return &st->shards[llmgw_fnv1a32(key, strlen(key))
                       % (apr_uint32_t)st->nshards];
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
    return llmgw_shmtab_get(sh->tab, key, strlen(key), apr_time_now(), p, val,
                            len);
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
    return llmgw_shmtab_peek(sh->tab, key, strlen(key), apr_time_now(), p, val,
                             len);
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
    "shm", shm_child_init, shm_get, shm_set, shm_claim, shm_settle
};

/* ---- configuration and use ------------------------------------------ */

/* LLMCache's options, by store. */
enum { OPT_TTL, OPT_MAX_ITEM, OPT_SIZE, OPT_TIMEOUT };

const char *llmgw_store_create(apr_pool_t *p, int argc, char *const argv[],
                               llmgw_store_t **out)
{
    static const char *const shm_opts[] = { "ttl", "max-item", "size", NULL };
    static const char *const mc_opts[] = { "ttl", "max-item", "timeout",
                                           NULL };
    llmgw_store_t *st = apr_pcalloc(p, sizeof(*st));
    const char *const *opts;
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
        opts = mc_opts;
        i = 2;
    }
    else if (strcasecmp(argv[0], "shm") == 0) {
        st->ops = &shm_ops;
        st->shm_size = LLMGW_DEFAULT_SHM_SIZE;
        st->max_item = 128 * 1024;
        opts = shm_opts;
    }
    else {
        return apr_psprintf(p,
                            "LLMCache: unknown store '%s' (use memcache, "
                            "shm or off)",
                            argv[0]);
    }
    for (; i < argc; i++) {
        const char *v, *err;
        apr_off_t size;
        apr_int64_t n;
        int which;

        if ((err = llmgw_conf_option(p, "LLMCache", argv[i], opts, &which, &v))
            != NULL) {
            return err;
        }
        /* timeout is the memcache list's third name, size shm's. */
        which = which == 2 && opts == mc_opts ? OPT_TIMEOUT : which;
        switch (which) {
        case OPT_TTL:
            /* memcached reads more than 30 days as a point in time. */
            err = llmgw_conf_int(p, "LLMCache ttl", v, 1, 30 * 86400,
                                 "LLMCache shm ttl=3600", &n);
            st->ttl = (apr_uint32_t)n;
            break;
        case OPT_MAX_ITEM:
            err = llmgw_conf_size(p, "LLMCache max-item", v, 1,
                                  1024 * 1024 * 1024,
                                  "LLMCache shm "
                                  "max-item=128K",
                                  &size);
            st->max_item = (apr_size_t)size;
            break;
        case OPT_SIZE:
            err = llmgw_conf_size(p, "LLMCache size", v, 64 * 1024,
                                  (apr_off_t)64 * 1024 * 1024 * 1024,
                                  "LLMCache shm size=64M", &size);
            st->shm_size = (apr_size_t)size;
            break;
        default:
            err = llmgw_conf_int(p, "LLMCache timeout", v, 1, 60000,
                                 "LLMCache memcache 127.0.0.1:11211 "
                                 "timeout=250",
                                 &n);
            st->timeout = apr_time_from_msec(n);
            break;
        }
        if (err) {
            return err;
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

int llmgw_store_is_shm(const llmgw_store_t *st)
{
    return st->ops == &shm_ops;
}

apr_status_t llmgw_store_child_init(llmgw_store_t *st, apr_pool_t *pchild,
                                    int max_threads)
{
    return st->ops->child_init(st, pchild, max_threads);
}

/* Failures are logged at most every 10 s per child: a memcached outage
 * must not flood the log with one line per request. */
static void log_failure(llmgw_store_t *st, apr_pool_t *p, apr_status_t rv,
                        const char *what)
{
    apr_time_t now = apr_time_now();

    if (now < st->quiet_until) {
        return;
    }
    st->quiet_until = now + apr_time_from_sec(10);
    LLMGW_LOG(
        p, LLMGW_LOG_WARNING, rv,
        LLMGW_LOGNO(
            0203) "cache store %s: %s failed; requests go to the backends "
                  "until it is back",
        st->ops->name, what);
}

apr_status_t llmgw_store_get(llmgw_store_t *st, apr_pool_t *p, const char *key,
                             char **val, apr_size_t *len)
{
    apr_status_t rv = st->ops->get(st, p, key, val, len);

    if (rv == APR_SUCCESS && is_lease(*val, *len)) {
        return APR_NOTFOUND; /* an answer on its way, not an answer */
    }
    if (rv != APR_SUCCESS && !APR_STATUS_IS_NOTFOUND(rv)) {
        log_failure(st, p, rv, "get");
    }
    return rv;
}

apr_status_t llmgw_store_set(llmgw_store_t *st, apr_pool_t *p, const char *key,
                             const char *val, apr_size_t len, apr_uint32_t ttl)
{
    apr_status_t rv;

    if (len > st->max_item) {
        return APR_ENOSPC;
    }
    rv = st->ops->set(st, p, key, val, len, ttl ? ttl : st->ttl);
    if (rv != APR_SUCCESS) {
        log_failure(st, p, rv, "set");
    }
    return rv;
}

apr_status_t llmgw_store_claim(llmgw_store_t *st, apr_pool_t *p,
                               const char *key, const char *gen,
                               apr_uint32_t ttl, char **val, apr_size_t *len)
{
    apr_status_t rv;

    *val = NULL;
    rv = st->ops->claim(st, p, key, apr_pstrcat(p, LEASE_MARK, gen, NULL),
                        ttl ? ttl : st->ttl, val, len);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_NOTFOUND(rv)
        && !APR_STATUS_IS_EEXIST(rv)) {
        log_failure(st, p, rv, "claim");
    }
    return rv;
}

apr_status_t llmgw_store_settle(llmgw_store_t *st, apr_pool_t *p,
                                const char *key, const char *val,
                                apr_size_t len)
{
    apr_status_t rv;

    if (val && len > st->max_item) {
        val = NULL;
    }
    rv = st->ops->settle(st, p, key, val, len, st->ttl);
    if (rv != APR_SUCCESS) {
        log_failure(st, p, rv, "set");
    }
    return rv;
}
