/* mod_llmgw_manage: members and routes changed at run time, from httpd:
 * the state file (LLMManageFile) read at start, its shared-memory copy that
 * every child reads when its generation moves, the routes a request sees. */
#ifndef MOD_LLMGW_MANAGE_H
#define MOD_LLMGW_MANAGE_H

#include <httpd.h>
#include <http_config.h>
#include <json.h>

#include "llmgw_manage.h"

/* LLMManageFile PATH (server config). */
const char *llmgw_manage_set_file(cmd_parms *cmd, void *dconf,
                                  const char *arg);

apr_status_t llmgw_manage_pre_config(apr_pool_t *pconf);

/* The post_config steps around mod_proxy_balancer's: the members the
 * state adds defined before it, its weights, removals and probes applied
 * after it (mod_llmgw_members.h), and their watchdog. */
void llmgw_manage_register(void);

/* Reads the state file against httpd.conf (a damaged one is moved aside,
 * logged, and httpd.conf alone holds) and makes the shared copy. */
apr_status_t llmgw_manage_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                                      server_rec *s);

void llmgw_manage_child_init(apr_pool_t *pchild, server_rec *s);

/* Applies c (checked whole first) for every child: under the global
 * mutex, to the shared state, written to the state file, then the
 * generation moved. NULL, or why it is refused (for the console). */
const char *llmgw_manage_commit(request_rec *r, const llmgw_change_t *c);

/* The console's form f, if it asks for a run-time change (its do is one):
 * 1, with *what its name, a->model what it changes (for the audit line)
 * and *why NULL (done) or why it is refused; 0 for any other form. */
int llmgw_manage_action(request_rec *r, const llmgw_form_t *f,
                        llmgw_action_t *a, const char **what,
                        const char **why);

/* The changes for the console's status model: {"file": LLMManageFile or
 * null, "changes": [each difference from httpd.conf], "conf": the lines
 * that make them permanent}. */
json_object *llmgw_manage_status(request_rec *r);

/* The console's view of the balancers: this child's lists with the
 * members another child added (before it shows or acts on them). */
void llmgw_manage_sync(request_rec *r);

/* GET .../changes.conf: those lines as text/plain. */
int llmgw_manage_send_conf(request_rec *r);

#endif
