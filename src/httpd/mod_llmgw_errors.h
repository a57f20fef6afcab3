/* mod_llmgw_errors: httpd's and mod_proxy's own errors in the client's
 * API's shape, never an HTML page under an LLMApi location. */
#ifndef MOD_LLMGW_ERRORS_H
#define MOD_LLMGW_ERRORS_H

void llmgw_errors_register(void);

#endif
