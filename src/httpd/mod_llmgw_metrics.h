/* mod_llmgw_metrics: the httpd half of the counters (llmgw_metrics): their
 * shared memory, kept across restarts, and the count of every API request
 * at its end (one log_transaction hook, from the request's notes). */
#ifndef MOD_LLMGW_METRICS_H
#define MOD_LLMGW_METRICS_H

#include <httpd.h>

#include "llmgw_metrics.h"

/* post_config: the counters' shared memory, made once in the process
 * pool (so a graceful restart keeps them) and attached after. */
apr_status_t llmgw_metrics_post_config(apr_pool_t *pconf, server_rec *s);
/* size bytes of anonymous shared memory made once in the process pool
 * under key and found there again after a restart (*fresh: 1 when made
 * now); NULL if it cannot be made. For post_config, past its first pass
 * (the caller checks). */
void *llmgw_kept_shm(server_rec *s, const char *key, apr_size_t size,
                     int *fresh);
/* The counters, or NULL before post_config made them. */
llmgw_metrics_t *llmgw_metrics(void);

void llmgw_metrics_register(void);

#endif
