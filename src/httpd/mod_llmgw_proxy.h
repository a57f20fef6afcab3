/* mod_llmgw_proxy: the request path: URL mapping, the fixups hook (read,
 * check, route, cache, coalesce), the handoff to mod_proxy, and the body
 * filter that serves mod_proxy_http the (rewritten) body. */
#ifndef MOD_LLMGW_PROXY_H
#define MOD_LLMGW_PROXY_H

void llmgw_proxy_register(void);

#endif
