/* mod_llmgw_console: the admin console and its machine-readable views
 * (SetHandler llm-admin): status.json, status.xml, metrics, the HTML
 * pages and their actions; see docs/console.md. */
#ifndef MOD_LLMGW_CONSOLE_H
#define MOD_LLMGW_CONSOLE_H

#include <httpd.h>
#include <json.h>

#define LLMGW_ADMIN_HANDLER "llm-admin"

/* post_config: the secret of the session nonces and the cache's
 * generations, in shared memory kept across restarts. */
apr_status_t llmgw_console_post_config(apr_pool_t *pconf, server_rec *s);

/* The status model of r's server as of now (the caller puts it). */
json_object *llmgw_console_model(request_rec *r);

void llmgw_console_register(void);

#endif
