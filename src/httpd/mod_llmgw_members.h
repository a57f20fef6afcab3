/* mod_llmgw_members: the balancers' members changed at run time, through
 * mod_proxy's own worker machinery (as balancer-manager adds, reweights
 * and drains): at start, at a change, and on a watchdog of their own. */
#ifndef MOD_LLMGW_MEMBERS_H
#define MOD_LLMGW_MEMBERS_H

#include <httpd.h>
#include <http_config.h>
#include <mod_proxy.h>

#include "llmgw_manage.h"

/* mod_proxy's configuration of s; NULL without mod_proxy. */
proxy_server_conf *llmgw_members_proxy_conf(const server_rec *s);

/* Before mod_proxy_balancer's post_config: the members m adds are
 * defined on their balancers as if configured, each taking one of the
 * balancer's growth slots (its growth is lowered by one, so that it has
 * as many slots in all as httpd.conf gives it). The configured members'
 * weights are kept, for a removed one put back. */
void llmgw_members_define(apr_pool_t *pconf, server_rec *s,
                          const llmgw_manage_t *m);

/* After mod_proxy_balancer's post_config, on the shared workers (over
 * what BalancerPersist restored): m's weights; its removals, drained and
 * disabled; each member it adds with a probe waits for its first good
 * probe (HcFl until then). */
void llmgw_members_settle(server_rec *s, const llmgw_manage_t *m);

/* b's worker whose name_ex is name in this child (its list brought up to
 * date first, under b's thread lock: not for a caller holding it), or
 * NULL (always for name NULL: the list brought up to date only). */
proxy_worker *llmgw_members_worker(proxy_balancer *b, server_rec *s,
                                   proxy_server_conf *pc, const char *name);
/* This child's balancers, with the members other children added. */
void llmgw_members_sync(server_rec *s);

/* A member change on the live balancer, in two steps around the state
 * file's write: begin takes the balancer's locks, brings this child's
 * balancer up to date and checks c against it (a duplicate, no free
 * slot): NULL with the locks held, or why it is refused and nothing held.
 * finish does c (e: the member's entry in the state after c, or as it
 * would be) and releases the locks; with e NULL it only releases them. */
typedef struct llmgw_members_op llmgw_members_op_t;
const char *llmgw_members_begin(request_rec *r, const llmgw_change_t *c,
                                llmgw_members_op_t **op);
const char *llmgw_members_finish(request_rec *r, llmgw_members_op_t *op,
                                 const llmgw_change_t *c,
                                 const llmgw_manage_entry_t *e);

/* The watchdog's tick (one child's, every LLMGW_MEMBERS_TICK): a member
 * m adds with a probe and waiting is probed (at most once a second) and
 * takes traffic after its first good probe; a removed member, drained,
 * is disabled once no request is on it. */
#define LLMGW_MEMBERS_TICK apr_time_from_msec(200)
void llmgw_members_tick(server_rec *s, const llmgw_manage_t *m, apr_pool_t *p);

/* Whether c needs the watchdog (a probe), refused without it. */
int llmgw_members_need_watchdog(const llmgw_change_t *c);

#endif
