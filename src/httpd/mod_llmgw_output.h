/* llmgw_output: the LLMGW_OUT filter on proxied answers, and the filter
 * that puts httpd's and mod_proxy's own errors in the client's API. */
#ifndef LLMGW_OUTPUT_H
#define LLMGW_OUTPUT_H

#include "mod_llmgw_proxy.h"

void llmgw_output_register(void);
void llmgw_output_add(request_rec *r, llmgw_req_t *ctx);
void llmgw_insert_error_filter(request_rec *r);

#endif
