/* mod_llmgw_limits: API keys, rate limits and budgets in httpd: the shared
 * table's segment, its snapshot file and the cluster sync (the parent's
 * periodic work), authentication, admission and settlement of a request.
 * The arithmetic is the core's (llmgw_limits.h, docs/limits.md). */
#ifndef MOD_LLMGW_LIMITS_H
#define MOD_LLMGW_LIMITS_H

#include <httpd.h>

#include "mod_llmgw.h"

/* post_config: the table made or kept, configured, restored; the
 * snapshot and sync set up. !OK on a configuration it cannot take. */
int llmgw_limits_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                             server_rec *s);
/* child_init: a forced sweep (reservations of children that died). */
void llmgw_limits_child_init(apr_pool_t *pchild, server_rec *s);

/* Fixups, before anything is read: the client's key (or user). Returns
 * 0, or fills ctx->err (401) and returns its status. Scrubs a key from
 * the query string so no log shows it. */
int llmgw_limits_auth(request_rec *r, llmgw_req_t *ctx);

/* Fixups, once the request is parsed and routed: the key's models (403),
 * the estimate (400), the reservation (429, 503). Returns 0 (the
 * x-ratelimit-* headers set, ctx->req's max_tokens set when the gateway
 * must bound the answer), or fills ctx->err and returns its status. */
int llmgw_limits_admit(request_rec *r, llmgw_req_t *ctx);

/* A failover moved the request to another route (ctx->route, its
 * upstream model set): its reservation moves with it to that route's
 * subjects and price (llmgw_limits_retarget), or, if it held none, it is
 * admitted there. Returns 0, or fills ctx->err (429, 503) and returns its
 * status: the request then ends with the error it had. */
int llmgw_limits_reroute(request_rec *r, llmgw_req_t *ctx);

/* Ends the request's reservation with the usage the answer carried
 * (ctx->usage), else what it generated; no-op without one or when done
 * already. Called at the end of the answer; a cleanup of r->pool calls it
 * for every path that does not. */
void llmgw_limits_end(request_rec *r, llmgw_req_t *ctx);

/* The table, for the console and metrics (llmgw_limits_usage_next); NULL
 * when no key or limit is configured. */
llmgw_limits_t *llmgw_limits_table(void);

void llmgw_limits_register(void);

#endif
