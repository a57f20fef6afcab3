/* mod_llmgw_health: the httpd half of backend health (llmgw_health): the
 * shared table of every balancer member a route uses, what each request
 * tells of its member (passive checks), the breaker's verdicts in
 * mod_proxy's worker flags, active probes on mod_watchdog, and the
 * llm_affinity lbmethod. */
#ifndef MOD_LLMGW_HEALTH_H
#define MOD_LLMGW_HEALTH_H

#include <httpd.h>
#include <http_config.h>
#include <mod_proxy.h>

#include "llmgw_breaker.h"
#include "llmgw_health.h"

/* ---- for the failover part: one call per attempt ------------------- */

/* Reports what happened to one attempt of request r on member (a worker's
 * name, proxy_worker_shared.name_ex, as mod_proxy_balancer puts it in
 * BALANCER_WORKER_NAME): classified (a timeout while the model loads
 * there is LOADING), fed to the member's breaker with the trial token r
 * holds if llm_affinity gave it one, mirrored into the worker's flags,
 * and a SUCCESS notes that the member served r's model. r is the request
 * (or the subrequest) the attempt ran as. A request proxied once (no
 * failover) is observed by this part itself. For a request with failover
 * (ctx->fo), each run of mod_proxy's handler is one attempt: report its
 * outcome here, once (a SUCCESS at its commit point may be followed by
 * the failure that broke it: the failure stands); this part's own hooks
 * then count only the connect errors inside a run (mod_proxy trying
 * another member) and, where nothing was reported, a client's error or
 * abort. A member the table does not know is ignored. */
void llmgw_health_observe(request_rec *r, const char *member,
                          llmgw_event_t ev);

/* 1 if member's breaker lets a request through now: closed, or
 * half-open with its trial not taken; 0 if not; 1 for a member the table
 * does not know. mod_proxy's own worker flags are the caller's to check
 * (a member in error whose retry= is over is usable again). */
int llmgw_health_usable(const char *member);

/* The health table, for readers such as the console (read only); NULL
 * when no route's balancer has members. */
const llmgw_health_t *llmgw_health_table(void);

/* ---- for the manage part: a member added at run time --------------- */

/* The probes' own worker for w, as the watchdog's (its connections, never
 * marked in error), from p; NULL without mod_proxy's connection
 * functions. Made once per member: it holds a connection pool. */
proxy_worker *llmgw_health_probe_worker(proxy_worker *w, server_rec *s,
                                        apr_pool_t *p);

/* One round of the probe set named set ("ollama", "llamacpp", "vllm",
 * "openai", as LLMHealthCheck's) over hc, each probe bounded by timeout:
 * NULL when every one was read and says the member is ready (or busy),
 * else why not (from p). */
const char *llmgw_health_probe_ready(server_rec *s, proxy_worker *hc,
                                     const char *set,
                                     apr_interval_time_t timeout,
                                     apr_pool_t *p);

/* Member w added at run time to its balancer, or added again after its
 * removal (before its worker's flags are set for its first probe): if a
 * route uses the balancer, it joins the table (every child learns it at
 * its next sweep, and this one at once) as a new member, probed with the
 * probe set named probe (NULL: its route's) where its route has
 * LLMHealthCheck; what the gateway set in its worker's flags before is
 * cleared. Logged if the table has no entry left. */
void llmgw_health_member_added(server_rec *s, proxy_worker *w,
                               const char *probe);

/* ---- directives (the table is mod_llmgw_config.c's) --------------- */

const char *llmgw_health_set_breaker(cmd_parms *cmd, void *dummy, int argc,
                                     char *const argv[]);
const char *llmgw_health_set_check(cmd_parms *cmd, void *dummy, int argc,
                                   char *const argv[]);
const char *llmgw_health_set_capacity(cmd_parms *cmd, void *dummy, int argc,
                                      char *const argv[]);
const char *llmgw_health_set_warmup(cmd_parms *cmd, void *dummy, int argc,
                                    char *const argv[]);

/* ---- lifecycle ------------------------------------------------------ */

/* pre_config: mod_proxy's hooks (once per generation: the modules were
 * loaded again); forgets the last generation's health configuration. */
void llmgw_health_pre_config(apr_pool_t *pconf);
/* The lbmethod provider llm_affinity (ProxySet lbmethod=llm_affinity),
 * the filter that watches the backend's answer (mod_proxy's hooks are
 * added at pre_config) and this part's own post_config, after
 * mod_proxy_balancer's (so after the members LLMManageFile adds are
 * defined): the table (kept across restarts while its members fit), one
 * row per member of every balancer a route uses and rows left for the
 * members added at run time (those balancers' growth slots); the probes'
 * watchdog. Its post_config is not OK (logged) when probes need
 * mod_watchdog and it is not loaded. */
void llmgw_health_register(apr_pool_t *p);

#endif
