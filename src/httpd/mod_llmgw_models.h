/* mod_llmgw_models: what the gateway lists as its models (configured, and
 * discovered from the backends with LLMDiscover), and the answers that
 * list them, in both APIs. */
#ifndef MOD_LLMGW_MODELS_H
#define MOD_LLMGW_MODELS_H

#include <httpd.h>

#include "llmgw_route.h"

/* child_init: the state of every discovering route. */
void llmgw_models_child_init(apr_pool_t *pchild, server_rec *s);

/* Every model name to list: the configured names and aliases, then the
 * backends' names of routes with LLMDiscover (only those that do route to
 * that route), each once, in that order. */
apr_array_header_t *llmgw_model_names(request_rec *r,
                                      const llmgw_router_t *rt);

/* The capture filter and the handler of the model lists. */
void llmgw_models_register(void);

#endif
