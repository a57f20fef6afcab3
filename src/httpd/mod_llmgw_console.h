/* mod_llmgw_console: the admin console and its machine-readable views
 * (SetHandler llm-admin): status.json, status.xml, metrics, the HTML
 * pages and their actions; see docs/console.md. */
#ifndef MOD_LLMGW_CONSOLE_H
#define MOD_LLMGW_CONSOLE_H

#include <httpd.h>
#include <json.h>

#define LLMGW_ADMIN_HANDLER "llm-admin"

/* The status model of r's server as of now (the caller puts it). */
json_object *llmgw_console_model(request_rec *r);

void llmgw_console_register(void);

#endif
