/* llmgw_status: the parts of the console's status model (a json-c tree,
 * documented in docs/console.md) that come from the core's shared
 * tables: the keys' budgets and limits (llmgw_limits) and the members'
 * health (llmgw_health); and their Prometheus samples. */
#ifndef LLMGW_STATUS_H
#define LLMGW_STATUS_H

#include <apr_pools.h>
#include <apr_time.h>
#include <json.h>

#include "llmgw_buf.h"
#include "llmgw_health.h"
#include "llmgw_limits.h"

/* Adds "keys" to status: an array with every subject of t (keys, routes,
 * users; kind and name apart), each with its limits, use and 429s; null
 * when t is NULL (no keys configured). */
void llmgw_status_keys(json_object *status, llmgw_limits_t *t, apr_time_t now);

/* llmgw_budget_used_tokens{key,period}, llmgw_budget_limit_tokens,
 * llmgw_budget_reserved_tokens and llmgw_ratelimited_total{key} of the
 * keys in t (nothing when t is NULL), appended to b. */
void llmgw_status_keys_prom(llmgw_limits_t *t, apr_pool_t *p, llmgw_pbuf_t *b,
                            apr_time_t now);

/* Adds "health" to member (an object of the model's "members"): what the
 * health table knows of the member named name (its state, breaker,
 * models loaded, last probe), or null when h is NULL or does not know
 * the member. */
void llmgw_status_member_health(json_object *member, const llmgw_health_t *h,
                                const char *name, apr_time_t now);

#endif
