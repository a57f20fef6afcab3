/* llmgw_memcache: a small memcached client (text protocol) with a timeout on
 * every operation; apr_memcache has none, and a stalled memcached must not
 * stall the gateway. APR only, no httpd. */
#ifndef LLMGW_MEMCACHE_H
#define LLMGW_MEMCACHE_H

#include <apr_pools.h>
#include <apr_time.h>

typedef struct llmgw_mc llmgw_mc_t;

/* servers: "host:port[,host:port...]". Keys go to one server by hash. A
 * server that fails, times out or breaks the protocol is skipped for
 * 'retry' before it is tried again; meanwhile its operations fail at once.
 * max_value is the largest value a get takes (the store's max-item). */
apr_status_t llmgw_mc_create(apr_pool_t *p, const char *servers,
                             apr_interval_time_t timeout,
                             apr_interval_time_t retry, int max_idle,
                             apr_size_t max_value, llmgw_mc_t **mc);

/* APR_NOTFOUND on a miss; *val (NUL-terminated) is allocated from p. What
 * answers is not trusted: a reply that is not memcached's (a bad or
 * unbounded line, a number that is not one, another key, data short of
 * its length or not followed by END) is APR_EGENERAL and closes the
 * connection and marks the server down; a value longer than max_value is
 * APR_ENOSPC and closes the connection (its bytes are left unread) but
 * does not mark the server down. APR_EINVAL for a key memcached cannot
 * take (empty, over 250 bytes, with a space or control character). */
apr_status_t llmgw_mc_get(llmgw_mc_t *mc, apr_pool_t *p, const char *key,
                          char **val, apr_size_t *len);
apr_status_t llmgw_mc_set(llmgw_mc_t *mc, const char *key, const char *val,
                          apr_size_t len, apr_uint32_t ttl);
/* APR_EEXIST when the key is there already. */
apr_status_t llmgw_mc_add(llmgw_mc_t *mc, const char *key, const char *val,
                          apr_size_t len, apr_uint32_t ttl);
apr_status_t llmgw_mc_delete(llmgw_mc_t *mc, const char *key);

/* A counter: add stores value as its decimal text (APR_EEXIST when the
 * key is there already); incr and decr change it by delta (memcached
 * wraps incr at 2^64 and stops decr at 0) and give its new value.
 * APR_NOTFOUND when there is no such key; APR_EGENERAL for a value that
 * is not a number (memcached's CLIENT_ERROR) or an answer that is not a
 * counter's (the connection is then closed). */
apr_status_t llmgw_mc_add_number(llmgw_mc_t *mc, const char *key,
                                 apr_uint64_t value, apr_uint32_t ttl);
apr_status_t llmgw_mc_incr(llmgw_mc_t *mc, const char *key, apr_uint64_t delta,
                           apr_uint64_t *value);
apr_status_t llmgw_mc_decr(llmgw_mc_t *mc, const char *key, apr_uint64_t delta,
                           apr_uint64_t *value);

#endif
