/* mod_llm_gateway: the module record, hook registration and directive
 * table. Everything else lives in src/. */
#include <httpd.h>
#include <http_config.h>
#include <http_protocol.h>
#include <http_request.h>

#include "mod_llmgw_answer.h"
#include "mod_llmgw_config.h"
#include "mod_llmgw_discover.h"
#include "mod_llmgw_output.h"
#include "mod_llmgw_proxy.h"

static void register_hooks(apr_pool_t *p)
{
    /* Before mod_proxy's fixup, which canonicalises the proxy: URL we
     * set, as mod_rewrite's [P] does. */
    static const char *const before_proxy[] = { "mod_proxy.c", NULL };

    ap_hook_pre_config(llmgw_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(llmgw_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(llmgw_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(llmgw_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(llmgw_translate_name, NULL, NULL,
                           APR_HOOK_MIDDLE);
    ap_hook_map_to_storage(llmgw_map_to_storage, NULL, NULL,
                           APR_HOOK_MIDDLE);
    ap_hook_fixups(llmgw_fixups, NULL, before_proxy, APR_HOOK_FIRST);
    ap_hook_handler(llmgw_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_error_filter(llmgw_insert_error_filter, NULL, NULL,
                                APR_HOOK_MIDDLE);
    llmgw_proxy_register();
    llmgw_output_register();
    llmgw_discover_register();
}

AP_DECLARE_MODULE(llm_gateway) = {
    STANDARD20_MODULE_STUFF,
    llmgw_create_dir_conf,
    llmgw_merge_dir_conf,
    llmgw_create_server_conf,
    llmgw_merge_server_conf,
    llmgw_cmds,
    register_hooks
};
