/* mod_llmgw_store: the httpd half of the cache stores (llmgw_store): the
 * shared memory and locks made before the children start, per child the
 * rest. */
#ifndef MOD_LLMGW_STORE_H
#define MOD_LLMGW_STORE_H

#include <httpd.h>

#include "llmgw_store.h"

/* The Mutex directive's name for the shm store's locks. */
#define LLMGW_STORE_MUTEX "llmgw-cache"

/* pre_config: the mutex type, for the Mutex directive. */
apr_status_t llmgw_store_pre_config(apr_pool_t *pconf);
/* post_config, once per store: its shared memory and locks. */
apr_status_t llmgw_store_post_config(llmgw_store_t *st, apr_pool_t *pconf,
                                     apr_pool_t *ptemp, server_rec *s);
/* child_init, once per store; on failure the child goes without it. */
apr_status_t llmgw_store_child(llmgw_store_t *st, apr_pool_t *pchild,
                               server_rec *s);

#endif
