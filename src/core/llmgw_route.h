/* llmgw_route: which <LLMRoute> serves a model name: exact names and
 * aliases through a hash, then globs in configuration order. */
#ifndef LLMGW_ROUTE_H
#define LLMGW_ROUTE_H

#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_tables.h>

typedef struct llmgw_route {
    const char *name;             /* the first pattern of <LLMRoute> */
    apr_array_header_t *patterns; /* const char *: name and aliases */
    const char *balancer;         /* "balancer://NAME" */
    const char *dialect;          /* "openai" */
    const char *upstream_model;   /* LLMUpstreamModel, else the route's
                                  * exact name; NULL for a glob route:
                                  * send the client's name */
    int cache_policy;             /* llmgw_cache_policy_t */
    apr_interval_time_t discover; /* LLMDiscover on: how long a fetched
                                  * list serves; 0: off */
    void *discovered;             /* the discovery's state (its glue) */
    void *limits;                 /* its limits and max_tokens (the
                                   * limits' glue), or NULL */
    const char *file;             /* where <LLMRoute> stands */
    int line;
    const char *backend_file; /* where LLMBackend stands */
    int backend_line;
    /* Failover (mod_llmgw_failover.c): LLMFallback's model names, tried
     * in order once the route's own members failed (NULL: none); the
     * bounds of LLMFailover (0: the defaults); the timeouts that fail an
     * attempt over (0: mod_proxy's timeout alone). */
    apr_array_header_t *fallbacks; /* const char * */
    int max_attempts;
    apr_interval_time_t failover_time;
    apr_interval_time_t first_byte_timeout;
    apr_interval_time_t first_token_timeout;
    apr_interval_time_t token_timeout;
    const char *fallback_file; /* where LLMFallback stands */
    int fallback_line;
} llmgw_route_t;

typedef struct llmgw_router {
    apr_array_header_t *routes; /* llmgw_route_t *, config order */
    apr_hash_t *exact;          /* exact name -> llmgw_route_t * */
    apr_array_header_t *globs;  /* const char * pattern, route pairs */
    apr_array_header_t *listed; /* const char *: exact names, in order */
    apr_int64_t created;        /* config load time, for /v1/models */
} llmgw_router_t;

llmgw_router_t *llmgw_router_create(apr_pool_t *p);

/* Adds a route; returns NULL or why it cannot be added (a name that an
 * earlier route already claims). */
const char *llmgw_router_add(apr_pool_t *p, llmgw_router_t *rt,
                             llmgw_route_t *route);

const llmgw_route_t *llmgw_router_find(const llmgw_router_t *rt,
                                       const char *model);

int llmgw_pattern_is_glob(const char *pattern);

/* The exact names joined by ", " (for "model not found" messages). */
const char *llmgw_router_names(apr_pool_t *p, const llmgw_router_t *rt);

#endif
