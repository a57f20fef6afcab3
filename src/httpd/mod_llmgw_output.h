/* mod_llmgw_output: the LLMGW_OUT filter on proxied answers: translated,
 * metered, recorded for the cache and published to coalesced followers. */
#ifndef MOD_LLMGW_OUTPUT_H
#define MOD_LLMGW_OUTPUT_H

#include "mod_llmgw.h"

void llmgw_output_register(void);
/* Puts the filter on r's answer (the proxy part hands r to mod_proxy). */
void llmgw_output_add(request_rec *r, llmgw_req_t *ctx);

#endif
