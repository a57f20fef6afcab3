/* llmgw_store: memcached (llmgw_memcache, one client per child, keys spread
 * over the servers) and shmcb (httpd's shared-memory socache). A store that
 * fails is logged at most every 10 s and the request goes on without it. */
#include <stdlib.h>

#include <httpd.h>
#include <http_log.h>
#include <ap_mpm.h>
#include <ap_provider.h>
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
    return llmgw_mc_create(p, st->servers, st->timeout,
                           apr_time_from_sec(2), threads > 0 ? threads : 1,
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

static const llmgw_store_ops_t memcache_ops = {
    "memcache", NULL, mc_child_init, mc_get, mc_set, mc_add, mc_del, NULL,
    NULL
};

/* ---- shmcb ----------------------------------------------------------- */

#define MAX_SHARDS 16

static apr_status_t shm_cleanup(void *data)
{
    llmgw_store_t *st = data;
    int i;

    for (i = 0; i < st->nshards; i++) {
        if (st->shards[i].sci) {
            st->sc->destroy(st->shards[i].sci, st->s);
            st->shards[i].sci = NULL;
        }
    }
    return APR_SUCCESS;
}

/* shmcb cuts a segment into subcaches, a power of two of them, chosen from
 * the number of index entries (segment / (avg_obj_size + avg_id_len) of
 * its hints), and an item must fit one subcache. This is its arithmetic,
 * on the safe side: the data bytes of one subcache. */
#define SHM_KEY_LEN 64
static apr_size_t shmcb_subcache_data(apr_size_t seg, apr_size_t avg)
{
    apr_size_t idx = seg / (avg + SHM_KEY_LEN), ns = 256;

    if (idx < 5) {
        return 0;               /* shmcb refuses it */
    }
    while (ns > 1 && idx / ns < 2 * ns) {
        ns /= 2;
    }
    return seg / ns - (idx / ns) * 32 - 256;
}

/* The shards and shmcb's hint of the average item size: the most index
 * entries (the smallest average) that still leaves at least 4 shards (as
 * many as fit, up to 16) with a subcache for the largest item. */
static void shm_layout(llmgw_store_t *st, apr_size_t *avg)
{
    apr_size_t a, best_avg = 0;
    int n, best = 0;

    for (a = 1024; a <= st->shm_size && best < 4; a *= 2) {
        for (n = MAX_SHARDS; n > best; n--) {
            if (shmcb_subcache_data(st->shm_size / n, a) >= st->max_item) {
                best = n;
                best_avg = a;
                break;
            }
        }
    }
    st->nshards = best ? best : 1;
    *avg = best ? best_avg : st->shm_size / 8;
}

static apr_status_t shm_post_config(llmgw_store_t *st, apr_pool_t *pconf,
                                    apr_pool_t *ptemp, server_rec *s)
{
    struct ap_socache_hints hints = { SHM_KEY_LEN, 0, 60 };
    const char *err, *arg;
    apr_size_t avg;
    apr_status_t rv;
    int i;

    st->s = s;
    st->sc = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, "shmcb",
                                AP_SOCACHE_PROVIDER_VERSION);
    if (!st->sc) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, LLMGW_LOGNO(0201)
                     "LLMCache shm needs mod_socache_shmcb: load it "
                     "(a2enmod socache_shmcb)");
        return APR_ENOTIMPL;
    }
    shm_layout(st, &avg);
    hints.avg_obj_size = (apr_size_t)avg;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, LLMGW_LOGNO(0204)
                 "LLMCache shm: %d shard(s) of %" APR_SIZE_T_FMT " bytes, "
                 "shmcb sized for items of %" APR_SIZE_T_FMT " bytes",
                 st->nshards, st->shm_size / st->nshards, avg);
    st->shards = apr_pcalloc(pconf, st->nshards * sizeof(*st->shards));
    apr_pool_cleanup_register(pconf, st, shm_cleanup, apr_pool_cleanup_null);
    for (i = 0; i < st->nshards; i++) {
        struct llmgw_shard *sh = &st->shards[i];

        arg = apr_psprintf(ptemp, "%s-%d(%" APR_SIZE_T_FMT ")",
                           ap_runtime_dir_relative(ptemp, "llmgw-cache"), i,
                           st->shm_size / st->nshards);
        err = st->sc->create(&sh->sci, arg, ptemp, pconf);
        if (err) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, LLMGW_LOGNO(0202)
                         "LLMCache shm: %s", err);
            return APR_EGENERAL;
        }
        rv = ap_global_mutex_create(&sh->mutex, NULL, LLMGW_STORE_MUTEX,
                                    apr_itoa(ptemp, i), s, pconf, 0);
        if (rv == APR_SUCCESS) {
            rv = st->sc->init(sh->sci, "llmgw", &hints, s, pconf);
        }
        if (rv != APR_SUCCESS) {
            return rv;
        }
    }
    return APR_SUCCESS;
}

static apr_status_t shm_child_init(llmgw_store_t *st, apr_pool_t *p,
                                   server_rec *s)
{
    apr_status_t rv = apr_threadkey_private_create(&st->scratch, free, p);
    int i;

    for (i = 0; rv == APR_SUCCESS && i < st->nshards; i++) {
        rv = apr_global_mutex_child_init(
            &st->shards[i].mutex,
            apr_global_mutex_lockfile(st->shards[i].mutex), p);
    }
    return rv;
}

/* The shard of a key, locked; NULL if the lock failed (*rv says why).
 * Only the text up to the first ':' counts: an answer, its lease and its
 * pieces share a shard. */
static struct llmgw_shard *lock_shard(llmgw_store_t *st, const char *key,
                                      apr_status_t *rv)
{
    apr_uint32_t h = 2166136261u;
    struct llmgw_shard *sh;

    for (; *key && *key != ':'; key++) {
        h = (h ^ (unsigned char)*key) * 16777619u;
    }
    sh = &st->shards[h % (apr_uint32_t)st->nshards];
    *rv = apr_global_mutex_lock(sh->mutex);
    return *rv == APR_SUCCESS ? sh : NULL;
}

/* shmcb copies into a buffer as big as the largest item: one per thread,
 * reused, rather than max-item bytes of every request's pool (most
 * look-ups miss, and a hit is usually small). */
static void *scratch(llmgw_store_t *st)
{
    void *buf = NULL;

    apr_threadkey_private_get(&buf, st->scratch);
    if (!buf && (buf = malloc(st->max_item)) != NULL) {
        apr_threadkey_private_set(buf, st->scratch);
    }
    return buf;
}

/* In a locked shard: key's value, copied into p. */
static apr_status_t sh_get(llmgw_store_t *st, struct llmgw_shard *sh,
                           apr_pool_t *p, const char *key, void *buf,
                           apr_size_t size, char **val, apr_size_t *len)
{
    unsigned int n = (unsigned int)size;
    apr_status_t rv = st->sc->retrieve(sh->sci, st->s,
                                       (const unsigned char *)key,
                                       (unsigned int)strlen(key), buf, &n, p);

    if (rv == APR_SUCCESS) {
        *val = apr_pmemdup(p, buf, n);
        *len = n;
    }
    return rv;
}

static apr_status_t sh_set(llmgw_store_t *st, struct llmgw_shard *sh,
                           apr_pool_t *p, const char *key, const char *val,
                           apr_size_t len, apr_uint32_t ttl)
{
    return st->sc->store(sh->sci, st->s, (const unsigned char *)key,
                         (unsigned int)strlen(key),
                         apr_time_now() + apr_time_from_sec(ttl),
                         (unsigned char *)val, (unsigned int)len, p);
}

/* In a locked shard: a short value (a lease: at most 256 bytes). shmcb
 * reports a value that does not fit the buffer as absent. */
static apr_status_t sh_peek(llmgw_store_t *st, struct llmgw_shard *sh,
                            apr_pool_t *p, const char *key, char **val,
                            apr_size_t *len)
{
    unsigned char probe[256];

    return sh_get(st, sh, p, key, probe, sizeof(probe), val, len);
}

static apr_status_t shm_get(llmgw_store_t *st, apr_pool_t *p, const char *key,
                            char **val, apr_size_t *len)
{
    void *buf = scratch(st);
    struct llmgw_shard *sh;
    apr_status_t rv;

    if (!buf) {
        return APR_ENOMEM;
    }
    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    rv = sh_get(st, sh, p, key, buf, st->max_item, val, len);
    apr_global_mutex_unlock(sh->mutex);
    return rv;
}

static apr_status_t shm_set(llmgw_store_t *st, apr_pool_t *p, const char *key,
                            const char *val, apr_size_t len, apr_uint32_t ttl)
{
    struct llmgw_shard *sh;
    apr_status_t rv;

    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    rv = sh_set(st, sh, p, key, val, len, ttl);
    apr_global_mutex_unlock(sh->mutex);
    return rv;
}

static apr_status_t shm_add(llmgw_store_t *st, apr_pool_t *p, const char *key,
                            const char *val, apr_size_t len, apr_uint32_t ttl)
{
    struct llmgw_shard *sh;
    char *cur;
    apr_size_t n;
    apr_status_t rv;

    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    /* Under the one lock, "absent" cannot change before we store. */
    rv = sh_peek(st, sh, p, key, &cur, &n);
    rv = APR_STATUS_IS_NOTFOUND(rv) ? sh_set(st, sh, p, key, val, len, ttl)
                                    : APR_EEXIST;
    apr_global_mutex_unlock(sh->mutex);
    return rv;
}

static apr_status_t shm_del(llmgw_store_t *st, apr_pool_t *p, const char *key)
{
    struct llmgw_shard *sh;
    apr_status_t rv;

    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    rv = st->sc->remove(sh->sci, st->s, (const unsigned char *)key,
                        (unsigned int)strlen(key), p);
    apr_global_mutex_unlock(sh->mutex);
    return rv;
}

static apr_status_t shm_claim(llmgw_store_t *st, apr_pool_t *p,
                              const char *key, const char *lease,
                              const char *lval, apr_size_t llen,
                              apr_uint32_t ttl, char **val, apr_size_t *len)
{
    void *buf = scratch(st);
    struct llmgw_shard *sh;
    apr_status_t rv;

    if (!buf) {
        return APR_ENOMEM;
    }
    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    rv = sh_get(st, sh, p, key, buf, st->max_item, val, len);
    if (APR_STATUS_IS_NOTFOUND(rv)) {
        rv = sh_peek(st, sh, p, lease, val, len);
        if (rv == APR_SUCCESS) {
            rv = APR_EEXIST;
        }
        else if (APR_STATUS_IS_NOTFOUND(rv)) {
            rv = sh_set(st, sh, p, lease, lval, llen, ttl);
            rv = rv == APR_SUCCESS ? APR_NOTFOUND : rv;
        }
    }
    apr_global_mutex_unlock(sh->mutex);
    return rv;
}

static apr_status_t shm_settle(llmgw_store_t *st, apr_pool_t *p,
                               const char *key, const char *val,
                               apr_size_t len, apr_uint32_t ttl,
                               const char *lease)
{
    struct llmgw_shard *sh;
    apr_status_t rv = APR_SUCCESS;

    if (!(sh = lock_shard(st, key, &rv))) {
        return rv;
    }
    if (val) {
        rv = sh_set(st, sh, p, key, val, len, ttl);
    }
    st->sc->remove(sh->sci, st->s, (const unsigned char *)lease,
                   (unsigned int)strlen(lease), p);
    apr_global_mutex_unlock(sh->mutex);
    return rv;
}

static const llmgw_store_ops_t shm_ops = {
    "shm", shm_post_config, shm_child_init, shm_get, shm_set, shm_add,
    shm_del, shm_claim, shm_settle
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

const char *llmgw_store_check(llmgw_store_t *st)
{
    if (st->ops == &shm_ops
        && !ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, "shmcb",
                               AP_SOCACHE_PROVIDER_VERSION)) {
        return "LLMCache shm needs mod_socache_shmcb: load it "
               "(a2enmod socache_shmcb)";
    }
    return NULL;
}

llmgw_store_t *llmgw_store_default(apr_pool_t *p)
{
    static char *const args[] = { "shm" };
    llmgw_store_t *st;

    if (!ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, "shmcb",
                            AP_SOCACHE_PROVIDER_VERSION)) {
        return NULL;
    }
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

apr_status_t llmgw_store_add(llmgw_store_t *st, request_rec *r,
                             const char *key, const char *val,
                             apr_size_t len, apr_uint32_t ttl)
{
    apr_status_t rv = st->ops->add(st, r->pool, key, val, len,
                                   ttl ? ttl : st->ttl);

    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
        log_failure(st, r, rv, "add");
    }
    return rv;
}

apr_status_t llmgw_store_del(llmgw_store_t *st, request_rec *r,
                             const char *key)
{
    return st->ops->del(st, r->pool, key);
}

apr_status_t llmgw_store_claim(llmgw_store_t *st, request_rec *r,
                               const char *key, const char *lease,
                               const char *lval, apr_size_t llen,
                               apr_uint32_t ttl, char **val,
                               apr_size_t *len)
{
    apr_status_t rv;

    *val = NULL;
    if (st->ops->claim) {
        rv = st->ops->claim(st, r->pool, key, lease, lval, llen,
                            ttl ? ttl : st->ttl, val, len);
        if (rv != APR_SUCCESS && !APR_STATUS_IS_NOTFOUND(rv)
            && !APR_STATUS_IS_EEXIST(rv)) {
            log_failure(st, r, rv, "claim");
        }
        return rv;
    }
    rv = llmgw_store_get(st, r, key, val, len);
    if (!APR_STATUS_IS_NOTFOUND(rv)) {
        return rv;
    }
    *val = NULL;
    rv = llmgw_store_add(st, r, lease, lval, llen, ttl);
    if (rv == APR_SUCCESS) {
        return APR_NOTFOUND;
    }
    if (APR_STATUS_IS_EEXIST(rv)
        && llmgw_store_get(st, r, lease, val, len) != APR_SUCCESS) {
        *val = NULL;
    }
    return rv;
}

apr_status_t llmgw_store_settle(llmgw_store_t *st, request_rec *r,
                                const char *key, const char *val,
                                apr_size_t len, const char *lease)
{
    apr_status_t rv = APR_SUCCESS;

    if (val && len > st->max_item) {
        val = NULL;
    }
    if (st->ops->settle) {
        rv = st->ops->settle(st, r->pool, key, val, len, st->ttl, lease);
        if (rv != APR_SUCCESS) {
            log_failure(st, r, rv, "set");
        }
        return rv;
    }
    if (val) {
        rv = llmgw_store_set(st, r, key, val, len, 0);
    }
    llmgw_store_del(st, r, lease);
    return rv;
}
