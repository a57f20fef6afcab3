/* mod_llmgw_lifecycle: what the parts do when the configuration is read and
 * when a child starts, listed here (and nowhere else) in the order they
 * run. */
#include <httpd.h>
#include <http_config.h>
#include <http_log.h>

#include "mod_llmgw.h"
#include "mod_llmgw_console.h"
#include "mod_llmgw_failover.h"
#include "mod_llmgw_health.h"
#include "mod_llmgw_lifecycle.h"
#include "mod_llmgw_limits.h"
#include "mod_llmgw_manage.h"
#include "mod_llmgw_metrics.h"
#include "mod_llmgw_models.h"
#include "mod_llmgw_store.h"

APLOG_USE_MODULE(llm_gateway);

static int pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    llmgw_health_pre_config(pconf);
    llmgw_failover_pre_config();
    return llmgw_store_pre_config(pconf) == APR_SUCCESS
                   && llmgw_manage_pre_config(pconf) == APR_SUCCESS
               ? OK
               : !OK;
}

/* Every store once: virtual hosts share the main server's. */
static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                       server_rec *s)
{
    llmgw_server_conf_t *main = llmgw_sconf(s);
    server_rec *vs;

    llmgw_log_glue();
    ap_add_version_component(pconf, LLMGW_SERVER_COMPONENT);
    if (llmgw_metrics_post_config(pconf, s) != APR_SUCCESS
        || llmgw_console_post_config(pconf, s) != APR_SUCCESS
        || llmgw_manage_post_config(pconf, ptemp, s) != APR_SUCCESS) {
        return !OK;
    }
    /* Without LLMCache, one node still gets a cache in shared memory. */
    llmgw_set_default_store(!main->store_set && main->router->routes->nelts
                                ? llmgw_store_default(pconf)
                                : NULL);
    LLMGW_EACH_SERVER(vs, s)
    {
        llmgw_store_t *st = llmgw_conf_store(llmgw_sconf(vs));

        if (st && !st->nshards && llmgw_store_is_shm(st)
            && llmgw_store_post_config(st, pconf, ptemp, s) != APR_SUCCESS) {
            return !OK;
        }
    }
    /* The health part's comes after mod_proxy_balancer's: its own hook. */
    return llmgw_limits_post_config(pconf, ptemp, s);
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    server_rec *vs;

    llmgw_coalesce_child_init();
    llmgw_limits_child_init(pchild, s);
    llmgw_models_child_init(pchild, s);
    llmgw_manage_child_init(pchild, s);
    LLMGW_EACH_SERVER(vs, s)
    {
        llmgw_store_t *st = llmgw_conf_store(llmgw_sconf(vs));

        /* A store that fails here answers every operation with an error:
         * its requests go to the backends (BYPASS). */
        if (st && !st->in_child) {
            st->in_child = 1;
            llmgw_store_child(st, pchild, s);
        }
    }
}

void llmgw_lifecycle_register(void)
{
    ap_hook_pre_config(pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
}
