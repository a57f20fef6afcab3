/* mod_llmgw_proxy: the request path: URL mapping, the fixups hook (read,
 * check, route, cache, coalesce), the handoff to mod_proxy, and the body
 * filter that serves mod_proxy_http the (rewritten) body. */
#ifndef MOD_LLMGW_PROXY_H
#define MOD_LLMGW_PROXY_H

#include "mod_llmgw.h"

void llmgw_proxy_register(void);

/* Failover's re-dispatch (mod_llmgw_failover.c). */
/* r->filename for mod_proxy: path on ctx->route's balancer. */
void llmgw_proxy_target(request_rec *r, llmgw_req_t *ctx, const char *path);
/* ctx made over for another route (LLMFallback's): its upstream model,
 * notes, the client's shape of the answer and the backend's body, served
 * again from its start, its reservation moved to that route's limits;
 * *path where it goes. Nonzero (ctx->err set) when the body cannot be
 * made for that route, or its limits refuse the request. */
int llmgw_proxy_reroute(request_rec *r, llmgw_req_t *ctx,
                        const llmgw_route_t *route, const char **path);

#endif
