/* llmgw_config: the directives, <LLMRoute> containers, merging, and the
 * checks that need the whole configuration (balancers exist). */
#ifndef LLMGW_CONFIG_H
#define LLMGW_CONFIG_H

#include <httpd.h>
#include <http_config.h>

#include "llmgw_route.h"
#include "mod_llmgw_store.h"

/* Our own log tags, in the spirit of httpd's APLOGNO. */
#define LLMGW_LOGNO(n) "LLMGW" #n ": "

#define LLMGW_DEFAULT_MAX_BODY (8 * 1024 * 1024)
#define LLMGW_DEFAULT_COALESCE_TIMEOUT apr_time_from_sec(120)

typedef enum {
    LLMGW_API_UNSET = -1,
    LLMGW_API_OFF = 0,
    LLMGW_API_OPENAI = 1,
    LLMGW_API_OLLAMA = 2
} llmgw_api_t;

typedef struct {
    llmgw_router_t *router;
    llmgw_route_t *cur_route;   /* while an <LLMRoute> body is parsed */
    apr_off_t max_body;         /* 0: unset */
    llmgw_store_t *store;       /* NULL: no cache */
    int store_set;              /* LLMCache given (off included) */
    int cache_billing_free;     /* -1 unset (full), 0 full, 1 free */
    int coalesce;               /* -1 unset (on), 0 off, 1 on */
    apr_interval_time_t coalesce_timeout;
} llmgw_server_conf_t;

typedef struct {
    llmgw_api_t api;
    const char *prefix;         /* the <Location> path LLMApi stands in */
} llmgw_dir_conf_t;

extern module AP_MODULE_DECLARE_DATA llm_gateway_module;
extern const command_rec llmgw_cmds[];

void *llmgw_create_server_conf(apr_pool_t *p, server_rec *s);
void *llmgw_merge_server_conf(apr_pool_t *p, void *base, void *add);
void *llmgw_create_dir_conf(apr_pool_t *p, char *dir);
void *llmgw_merge_dir_conf(apr_pool_t *p, void *base, void *add);

/* check_config hook: every LLMBackend names a defined balancer, and the
 * proxy modules we hand requests to are loaded. */
int llmgw_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                       apr_pool_t *ptemp, server_rec *s);

apr_off_t llmgw_max_body(const llmgw_server_conf_t *conf);

/* pre_config, post_config and child_init: the cache stores' life. */
int llmgw_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp);
int llmgw_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                      server_rec *s);
void llmgw_child_init(apr_pool_t *pchild, server_rec *s);

#endif
