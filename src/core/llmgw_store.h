/* llmgw_store: one small interface for the shared stores (memcached, or
 * shared memory on one node), picked by LLMCache. The embedder provides
 * the shared memory and its locks; everything else is here. */
#ifndef LLMGW_STORE_H
#define LLMGW_STORE_H

#include <apr_global_mutex.h>
#include <apr_pools.h>

#include "llmgw_memcache.h"
#include "llmgw_shmtab.h"

typedef struct llmgw_store llmgw_store_t;

/* Every operation's pool p is the pool of the request it is for: values
 * come from it, and a failure is logged for it (llmgw_log). */
typedef struct {
    const char *name;
    /* Per child: clients, or the locks' child side. */
    apr_status_t (*child_init)(llmgw_store_t *st, apr_pool_t *pchild,
                               int max_threads);
    /* APR_NOTFOUND on a miss; *val is allocated from p. */
    apr_status_t (*get)(llmgw_store_t *st, apr_pool_t *p, const char *key,
                        char **val, apr_size_t *len);
    apr_status_t (*set)(llmgw_store_t *st, apr_pool_t *p, const char *key,
                        const char *val, apr_size_t len, apr_uint32_t ttl);
    /* llmgw_store_claim and llmgw_store_settle, each as few steps as the
     * store allows; lease is the whole value a lease is stored as. */
    apr_status_t (*claim)(llmgw_store_t *st, apr_pool_t *p, const char *key,
                          const char *lease, apr_uint32_t ttl, char **val,
                          apr_size_t *len);
    apr_status_t (*settle)(llmgw_store_t *st, apr_pool_t *p, const char *key,
                           const char *val, apr_size_t len, apr_uint32_t ttl);
} llmgw_store_ops_t;

struct llmgw_store {
    const llmgw_store_ops_t *ops;
    const char *servers;         /* memcache: "host:port,host:port" */
    apr_size_t shm_size;         /* shm: bytes of shared memory */
    apr_uint32_t ttl;            /* seconds an entry lives */
    apr_size_t max_item;         /* largest value stored; bigger: skipped */
    apr_interval_time_t timeout; /* memcache: per operation */
    llmgw_mc_t *mc;              /* per child */
    /* shm: one segment cut into shards, a table and a lock each; several
     * keep the threads of all children from queueing on one lock. A key's
     * shard is fixed by its hash. */
    int nshards;
    struct llmgw_shard {
        llmgw_shmtab_t *tab;
        apr_global_mutex_t *mutex;
        int spin; /* try the lock before sleeping on it */
    } * shards;
    volatile apr_time_t quiet_until; /* rate limit for "store down" logs */
    int in_child;                    /* the embedder's: child_init done */
};

#define LLMGW_DEFAULT_TTL 3600
#define LLMGW_DEFAULT_MC_TIMEOUT_MS 250
#define LLMGW_DEFAULT_SHM_SIZE (16 * 1024 * 1024)

/* Builds a store from "LLMCache memcache|shm ARGS..."; NULL on success,
 * else the configuration error. */
const char *llmgw_store_create(apr_pool_t *p, int argc, char *const argv[],
                               llmgw_store_t **st);
/* The default store when LLMCache is absent: shm. */
llmgw_store_t *llmgw_store_default(apr_pool_t *p);
int llmgw_store_is_shm(const llmgw_store_t *st);

/* shm, before the children start: how many locks it wants (0 for other
 * stores) and how many bytes of shared memory; then the tables laid out
 * in base (zeroed, shared by all children) with mutexes[0..shards).
 * NULL, or why the memory does not fit (from p). */
int llmgw_store_shards(const llmgw_store_t *st);
apr_size_t llmgw_store_shm_bytes(const llmgw_store_t *st);
const char *llmgw_store_shm_attach(llmgw_store_t *st, apr_pool_t *p,
                                   void *base, apr_global_mutex_t **mutexes);
/* In each child: max_threads is how many threads may use it at once. */
apr_status_t llmgw_store_child_init(llmgw_store_t *st, apr_pool_t *pchild,
                                    int max_threads);

apr_status_t llmgw_store_get(llmgw_store_t *st, apr_pool_t *p, const char *key,
                             char **val, apr_size_t *len);
/* Stores for ttl seconds (0: the store's ttl). */
apr_status_t llmgw_store_set(llmgw_store_t *st, apr_pool_t *p, const char *key,
                             const char *val, apr_size_t len,
                             apr_uint32_t ttl);
/* The first step of a miss that may lead a generation: KEY's answer
 * (APR_SUCCESS, in *val); else a lease on KEY naming our generation GEN
 * for ttl seconds (APR_NOTFOUND: we lead); else APR_EEXIST: KEY holds
 * another's lease, *val its generation (NULL if the lease just went).
 * The lease is a value of KEY itself: one step, and llmgw_store_get
 * finds no answer while it is there. */
apr_status_t llmgw_store_claim(llmgw_store_t *st, apr_pool_t *p,
                               const char *key, const char *gen,
                               apr_uint32_t ttl, char **val, apr_size_t *len);
/* The leader's last step: KEY's answer replaces our lease, or, with val
 * NULL (or too big, or a store that fails), the lease is removed. Whoever
 * finds no lease then finds the answer, or leads afresh. */
apr_status_t llmgw_store_settle(llmgw_store_t *st, apr_pool_t *p,
                                const char *key, const char *val,
                                apr_size_t len);

#endif
