/* llmgw_discover: model names taken from the backends themselves (their
 * /v1/models or /api/tags), fetched through mod_proxy and kept a while. */
#ifndef LLMGW_DISCOVER_H
#define LLMGW_DISCOVER_H

#include <httpd.h>
#include <apr_thread_mutex.h>

#include "llmgw_route.h"

struct llmgw_discover {
    apr_interval_time_t interval;   /* how long a fetched list serves */
    apr_thread_mutex_t *lock;       /* per child, from child_init */
    apr_pool_t *pool;               /* per child: the names below */
    apr_array_header_t *names;      /* const char *, as last fetched */
    apr_time_t fetched;
};

#define LLMGW_DEFAULT_DISCOVER_INTERVAL apr_time_from_sec(60)

/* child_init: the locks of every discovering route. */
void llmgw_discover_child_init(apr_pool_t *pchild, server_rec *s);

/* Every model name to list: the configured names and aliases, then the
 * backends' names of routes with LLMDiscover (only those that do route to
 * that route), each once, in that order. */
apr_array_header_t *llmgw_model_names(request_rec *r,
                                      const llmgw_router_t *rt);

void llmgw_discover_register(void);

#endif
