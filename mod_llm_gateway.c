/* mod_llm_gateway: the module record. Each part of the httpd glue
 * (src/httpd/) registers its own hooks and filters; the httpd-free core is
 * in src/core/. */
#include <httpd.h>
#include <http_config.h>

#include "mod_llmgw_answer.h"
#include "mod_llmgw_config.h"
#include "mod_llmgw_console.h"
#include "mod_llmgw_errors.h"
#include "mod_llmgw_health.h"
#include "mod_llmgw_failover.h"
#include "mod_llmgw_lifecycle.h"
#include "mod_llmgw_limits.h"
#include "mod_llmgw_manage.h"
#include "mod_llmgw_metrics.h"
#include "mod_llmgw_models.h"
#include "mod_llmgw_output.h"
#include "mod_llmgw_proxy.h"

static void register_hooks(apr_pool_t *p)
{
    llmgw_lifecycle_register();
    llmgw_config_register();
    llmgw_proxy_register();
    llmgw_output_register();
    llmgw_errors_register();
    llmgw_answer_register();
    llmgw_models_register();
    llmgw_limits_register();
    llmgw_health_register(p);
    llmgw_failover_register();
    llmgw_metrics_register();
    llmgw_console_register();
    llmgw_manage_register();
}

AP_DECLARE_MODULE(llm_gateway) = {
    STANDARD20_MODULE_STUFF, llmgw_create_dir_conf,
    llmgw_merge_dir_conf,    llmgw_create_server_conf,
    llmgw_merge_server_conf, llmgw_cmds,
    register_hooks
};
