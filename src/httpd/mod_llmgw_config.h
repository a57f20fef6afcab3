/* mod_llmgw_config: the directives (their table, for the module record),
 * the configuration's structures made and merged (declared in mod_llmgw.h)
 * and the check of the whole configuration. */
#ifndef MOD_LLMGW_CONFIG_H
#define MOD_LLMGW_CONFIG_H

#include <httpd.h>
#include <http_config.h>

extern const command_rec llmgw_cmds[];

void *llmgw_create_server_conf(apr_pool_t *p, server_rec *s);
void *llmgw_merge_server_conf(apr_pool_t *p, void *base, void *add);
void *llmgw_create_dir_conf(apr_pool_t *p, char *dir);
void *llmgw_merge_dir_conf(apr_pool_t *p, void *base, void *add);

/* The check_config hook: every LLMBackend names a defined balancer, and
 * the proxy modules we hand requests to are loaded. */
void llmgw_config_register(void);

#endif
