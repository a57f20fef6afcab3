/* llmgw_coalesce: one mechanism for threads, children and nodes. The
 * leader holds a lease on KEY (llmgw_store_claim) naming its generation G,
 * writes each piece to KEY:G:N and finally KEY:G:end; followers tail that
 * sequence. */
#include <httpd.h>
#include <http_log.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_escape.h>
#include <apr_strings.h>

#include "llmgw_coalesce.h"
#include "llmgw_config.h"

APLOG_USE_MODULE(llm_gateway);

/* How often a waiting follower looks again. */
#define POLL_INTERVAL apr_time_from_msec(5)

struct llmgw_coalesce {
    request_rec *r;
    llmgw_store_t *st;
    const char *key;
    const char *gen;
    apr_size_t next;            /* next piece to write or read */
    apr_interval_time_t timeout;
    apr_time_t deadline;        /* no progress by then: give up */
    apr_uint32_t ttl;           /* seconds the lease and pieces live */
    int ended;
};

static const char *piece_key(llmgw_coalesce_t *c, apr_size_t i)
{
    return apr_psprintf(c->r->pool, "%s:%s:%" APR_SIZE_T_FMT, c->key, c->gen,
                        i);
}

static const char *end_key(llmgw_coalesce_t *c)
{
    return apr_pstrcat(c->r->pool, c->key, ":", c->gen, ":end", NULL);
}

static apr_status_t end_on_cleanup(void *data)
{
    llmgw_coalesce_t *c = data;

    /* A leader that never reached its filter (mod_proxy failed): let the
     * followers take over at once rather than wait out the lease. */
    if (!c->ended) {
        apr_pool_t *p;
        request_rec *r = c->r;

        if (apr_pool_create(&p, r->connection->pool) == APR_SUCCESS) {
            c->r = apr_pmemdup(p, r, sizeof(*r));
            c->r->pool = p;
            llmgw_coalesce_end(c, 0, NULL, 0);
            apr_pool_destroy(p);
        }
    }
    return APR_SUCCESS;
}

/* Generation names: this child's random prefix and a counter (unique
 * across children and nodes, with no system call per request). */
static char child_seed[17];
static apr_uint32_t child_counter;

void llmgw_coalesce_child_init(void)
{
    unsigned char rnd[8];
    apr_uint64_t t = (apr_uint64_t)apr_time_now() ^ (apr_uint64_t)getpid();

    if (apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS) {
        memcpy(rnd, &t, sizeof(rnd));
    }
    apr_escape_hex(child_seed, rnd, sizeof(rnd), 0, NULL);
}

static const char *new_gen(apr_pool_t *p)
{
    return apr_psprintf(p, "%s%x", child_seed,
                        apr_atomic_inc32(&child_counter));
}

llmgw_co_role_t llmgw_coalesce_join(request_rec *r, llmgw_store_t *st,
                                    const char *key, int stream,
                                    apr_interval_time_t timeout,
                                    llmgw_coalesce_t **out, char **val,
                                    apr_size_t *len)
{
    llmgw_coalesce_t *c = apr_pcalloc(r->pool, sizeof(*c));
    const char *mine = new_gen(r->pool);
    apr_size_t seen = 0;
    int waited = 0;

    c->r = r;
    c->st = st;
    c->key = key;
    c->timeout = timeout;
    c->ttl = (apr_uint32_t)apr_time_sec(timeout) + 60;
    c->deadline = apr_time_now() + timeout;
    *out = c;
    for (;; waited = 1) {
        char *v;
        apr_size_t n;
        apr_status_t rv = llmgw_store_claim(st, r, key, mine, c->ttl, &v,
                                            &n);

        if (rv == APR_SUCCESS) {
            *val = v;
            *len = n;
            return waited ? LLMGW_CO_DONE : LLMGW_CO_CACHED;
        }
        if (APR_STATUS_IS_NOTFOUND(rv)) {
            c->gen = mine;
            apr_pool_cleanup_register(r->pool, c, end_on_cleanup,
                                      apr_pool_cleanup_null);
            return LLMGW_CO_LEADER;
        }
        if (!APR_STATUS_IS_EEXIST(rv)) {
            return waited ? LLMGW_CO_ALONE : LLMGW_CO_NO_STORE;
        }
        /* Another leads (v: its generation; NULL if its lease just
         * went): tail that generation. A plain follower waits for the end;
         * the pieces show progress. A failed leader's lease goes soon
         * after its end mark, and one of us takes over. */
        if (v) {
            c->gen = apr_pstrmemdup(r->pool, v, n);
            if (llmgw_store_get(st, r, end_key(c), &v, &n) == APR_SUCCESS) {
                if (n >= 2 && memcmp(v, "ok", 2) == 0
                    && llmgw_store_get(st, r, key, val, len)
                       == APR_SUCCESS) {
                    return LLMGW_CO_DONE;
                }
            }
            else if (llmgw_store_get(st, r, piece_key(c, seen), &v, &n)
                     == APR_SUCCESS) {
                if (stream) {
                    return LLMGW_CO_FOLLOW;
                }
                seen++;
                c->deadline = apr_time_now() + timeout;
                continue;
            }
        }
        if (apr_time_now() > c->deadline) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, LLMGW_LOGNO(0301)
                          "coalescing: no progress from the leader in %"
                          APR_TIME_T_FMT " ms; asking the backend",
                          apr_time_as_msec(timeout));
            return LLMGW_CO_ALONE;
        }
        apr_sleep(POLL_INTERVAL);
    }
}

void llmgw_coalesce_put(llmgw_coalesce_t *c, const char *data,
                        apr_size_t len)
{
    llmgw_store_set(c->st, c->r, piece_key(c, c->next++), data, len, c->ttl);
}

void llmgw_coalesce_end(llmgw_coalesce_t *c, int ok, const char *record,
                        apr_size_t len)
{
    const char *mark;

    if (c->ended) {
        return;
    }
    c->ended = 1;
    /* Only followers tailing pieces read the end mark; without pieces the
     * lease going away says it all (the answer is cached, or not). */
    if (c->next) {
        mark = ok ? apr_psprintf(c->r->pool, "ok:%" APR_SIZE_T_FMT, c->next)
                  : "error";
        llmgw_store_set(c->st, c->r, end_key(c), mark, strlen(mark), c->ttl);
    }
    llmgw_store_settle(c->st, c->r, c->key, record, len);
}

apr_status_t llmgw_coalesce_next(llmgw_coalesce_t *c, char **data,
                                 apr_size_t *len)
{
    request_rec *r = c->r;

    c->deadline = apr_time_now() + c->timeout;
    for (;;) {
        char *val;
        apr_size_t n;

        if (llmgw_store_get(c->st, r, piece_key(c, c->next), data, len)
            == APR_SUCCESS) {
            c->next++;
            return APR_SUCCESS;
        }
        if (llmgw_store_get(c->st, r, end_key(c), &val, &n) == APR_SUCCESS) {
            if (n < 3 || memcmp(val, "ok:", 3) != 0) {
                return APR_EGENERAL;
            }
            /* The end is written after the last piece: look once more. */
            if (c->next >= (apr_size_t)apr_atoi64(
                               apr_pstrmemdup(r->pool, val + 3, n - 3))) {
                return APR_EOF;
            }
            if (llmgw_store_get(c->st, r, piece_key(c, c->next), data, len)
                == APR_SUCCESS) {
                c->next++;
                return APR_SUCCESS;
            }
            return APR_EGENERAL;    /* a piece went missing */
        }
        if (apr_time_now() > c->deadline) {
            return APR_TIMEUP;
        }
        apr_sleep(POLL_INTERVAL);
    }
}
