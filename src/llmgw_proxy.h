/* llmgw_proxy: the request path: fixups (read, check, route), handoff to
 * mod_proxy, the body and response filters, and our own answers. */
#ifndef LLMGW_PROXY_H
#define LLMGW_PROXY_H

#include <httpd.h>
#include <http_config.h>

#define LLMGW_HANDLER "llm-gateway"

/* Registers the filters; called from register_hooks. */
void llmgw_proxy_register_filters(void);

int llmgw_translate_name(request_rec *r);
int llmgw_map_to_storage(request_rec *r);
int llmgw_fixups(request_rec *r);
int llmgw_handler(request_rec *r);
void llmgw_insert_error_filter(request_rec *r);

#endif
