/* mod_llmgw_config: the directive table, the configuration's structures
 * made and merged, and the checks that need all of it (balancers exist).
 * Values are parsed by llmgw_conf; errors name the directive, and httpd
 * adds the file and line (we do when it cannot). */
#include <httpd.h>
#include <http_log.h>
#include <mod_proxy.h>
#include <apr_strings.h>

#include "llmgw_conf.h"
#include "mod_llmgw.h"
#include "mod_llmgw_config.h"
#include "mod_llmgw_health.h"

APLOG_USE_MODULE(llm_gateway);

void *llmgw_create_server_conf(apr_pool_t *p, server_rec *s)
{
    llmgw_server_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    conf->router = llmgw_router_create(p);
    conf->coalesce = -1;
    conf->cache_billing_free = -1;
    return conf;
}

void *llmgw_merge_server_conf(apr_pool_t *p, void *basev, void *addv)
{
    llmgw_server_conf_t *base = basev, *add = addv;
    llmgw_server_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    /* A virtual host with routes of its own uses only those. */
    conf->router = add->router->routes->nelts ? add->router : base->router;
    conf->max_body = add->max_body ? add->max_body : base->max_body;
    conf->store_set = add->store_set || base->store_set;
    conf->store = add->store_set ? add->store : base->store;
    conf->coalesce = add->coalesce != -1 ? add->coalesce : base->coalesce;
    conf->cache_billing_free = add->cache_billing_free != -1
                                   ? add->cache_billing_free
                                   : base->cache_billing_free;
    conf->coalesce_timeout =
        add->coalesce_timeout ? add->coalesce_timeout : base->coalesce_timeout;
    return conf;
}

void *llmgw_create_dir_conf(apr_pool_t *p, char *dir)
{
    llmgw_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    conf->api = LLMGW_API_UNSET;
    return conf;
}

void *llmgw_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    llmgw_dir_conf_t *base = basev, *add = addv;
    llmgw_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    if (add->api != LLMGW_API_UNSET) {
        conf->api = add->api;
        conf->prefix = add->prefix;
    }
    else {
        conf->api = base->api;
        conf->prefix = base->prefix;
    }
    return conf;
}

static llmgw_server_conf_t *server_conf(cmd_parms *cmd)
{
    return llmgw_sconf(cmd->server);
}

static const char *route_section(cmd_parms *cmd, void *dummy, const char *arg)
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err, *endp, *word;
    char *args;
    llmgw_route_t *route;

    err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);
    if (err) {
        return err;
    }
    endp = ap_strrchr_c(arg, '>');
    if (!endp) {
        return "<LLMRoute> directive missing closing '>'";
    }
    if (conf->cur_route) {
        return "<LLMRoute> cannot be nested";
    }
    args = apr_pstrmemdup(cmd->temp_pool, arg, endp - arg);
    route = apr_pcalloc(cmd->pool, sizeof(*route));
    route->patterns = apr_array_make(cmd->pool, 2, sizeof(const char *));
    route->file = cmd->directive->filename;
    route->line = cmd->directive->line_num;
    while (*(word = ap_getword_conf(cmd->pool, (const char **)&args))) {
        APR_ARRAY_PUSH(route->patterns, const char *) = word;
    }
    if (route->patterns->nelts == 0) {
        return "<LLMRoute> needs at least one model name or pattern, "
               "e.g. <LLMRoute \"llama3*\">";
    }
    route->name = APR_ARRAY_IDX(route->patterns, 0, const char *);

    conf->cur_route = route;
    err = ap_walk_config(cmd->directive->first_child, cmd, cmd->context);
    conf->cur_route = NULL;
    if (err) {
        return err;
    }
    if (!route->balancer) {
        return apr_psprintf(cmd->pool,
                            "<LLMRoute \"%s\"> needs an "
                            "LLMBackend directive",
                            route->name);
    }
    /* Aliases name the route's model: the backend knows only the name. */
    if (!route->upstream_model && !llmgw_pattern_is_glob(route->name)) {
        route->upstream_model = route->name;
    }
    err = llmgw_router_add(cmd->pool, conf->router, route);
    return err ? apr_psprintf(cmd->pool, "<LLMRoute>: %s", err) : NULL;
}

static llmgw_route_t *current_route(cmd_parms *cmd, const char **err)
{
    llmgw_route_t *route = server_conf(cmd)->cur_route;

    *err = route ? NULL
                 : apr_psprintf(cmd->pool,
                                "%s is only allowed inside "
                                "<LLMRoute>",
                                cmd->cmd->name);
    return route;
}

static const char *set_backend(cmd_parms *cmd, void *dummy, int argc,
                               char *const argv[])
{
    const char *err;
    llmgw_route_t *route = current_route(cmd, &err);
    int i;

    if (!route) {
        return err;
    }
    if (route->balancer) {
        return "LLMBackend: only one backend per <LLMRoute> (fallback "
               "chains are not supported yet)";
    }
    if (argc < 1) {
        return "LLMBackend needs a balancer URL, e.g. LLMBackend "
               "balancer://ollama dialect=openai";
    }
    if (strncasecmp(argv[0], "balancer://", 11) != 0 || !argv[0][11]
        || ap_strchr_c(argv[0] + 11, '/')) {
        return apr_psprintf(cmd->pool,
                            "LLMBackend: '%s' is not a "
                            "balancer URL; use balancer://NAME and define "
                            "its members in <Proxy \"balancer://NAME\">",
                            argv[0]);
    }
    route->balancer = apr_pstrdup(cmd->pool, argv[0]);
    ap_str_tolower((char *)route->balancer);
    route->dialect = "openai";
    route->backend_file = cmd->directive->filename;
    route->backend_line = cmd->directive->line_num;
    for (i = 1; i < argc; i++) {
        const char *val;

        if (strncasecmp(argv[i], "dialect=", 8) == 0) {
            val = argv[i] + 8;
            if (strcasecmp(val, "openai") == 0) {
                route->dialect = "openai";
            }
            else if (strcasecmp(val, "ollama") == 0) {
                route->dialect = "ollama";
            }
            else if (strcasecmp(val, "llamacpp") == 0) {
                /* llama.cpp server speaks OpenAI; its extras (timings)
                 * pass through. */
                route->dialect = "llamacpp";
            }
            else {
                return apr_psprintf(cmd->pool,
                                    "LLMBackend: unknown "
                                    "dialect '%s' (supported: openai, "
                                    "ollama, llamacpp)",
                                    val);
            }
        }
        else {
            return apr_psprintf(cmd->pool,
                                "LLMBackend: unknown option "
                                "'%s' (supported: dialect=)",
                                argv[i]);
        }
    }
    return NULL;
}

static const char *set_upstream_model(cmd_parms *cmd, void *dummy,
                                      const char *name)
{
    const char *err;
    llmgw_route_t *route = current_route(cmd, &err);

    if (!route) {
        return err;
    }
    if (!*name) {
        return "LLMUpstreamModel needs a model name";
    }
    route->upstream_model = name;
    return NULL;
}

static const char *set_cache_policy(cmd_parms *cmd, void *dummy,
                                    const char *arg)
{
    /* In the order of llmgw_cache_policy_t. */
    static const char *const names[] = { "deterministic", "all", "off", NULL };
    const char *err;
    llmgw_route_t *route = current_route(cmd, &err);

    return route ? llmgw_conf_keyword(cmd->pool, "LLMCachePolicy", arg, names,
                                      &route->cache_policy)
                 : err;
}

/* "on|off [OPT=SECONDS]", as LLMDiscover and LLMCoalesce take it: *on, and
 * *secs when given (else left as it is). NULL, or what is wrong. */
static const char *on_off_seconds(cmd_parms *cmd, int argc, char *const argv[],
                                  const char *opt, const char *example,
                                  int *on, apr_interval_time_t *secs)
{
    const char *name = cmd->cmd->name, *names[] = { opt, NULL }, *v;
    const char *err;
    int i, which;

    if (argc < 1) {
        return apr_psprintf(cmd->pool,
                            "%s takes on or off, then "
                            "optionally %s=SECONDS; e.g. %s",
                            name, opt, example);
    }
    if ((err = llmgw_conf_flag(cmd->pool, name, argv[0], on)) != NULL) {
        return err;
    }
    for (i = 1; i < argc; i++) {
        if ((err = llmgw_conf_option(cmd->pool, name, argv[i], names, &which,
                                     &v))
                != NULL
            || (err = llmgw_conf_seconds(
                    cmd->pool, apr_pstrcat(cmd->pool, name, " ", opt, NULL), v,
                    1, 86400, example, secs))
                   != NULL) {
            return err;
        }
    }
    return NULL;
}

static const char *set_discover(cmd_parms *cmd, void *dummy, int argc,
                                char *const argv[])
{
    const char *err;
    llmgw_route_t *route = current_route(cmd, &err);
    apr_interval_time_t interval = apr_time_from_sec(60);
    int on;

    if (!route) {
        return err;
    }
    if ((err = on_off_seconds(cmd, argc, argv, "interval",
                              "LLMDiscover on interval=60", &on, &interval))
        != NULL) {
        return err;
    }
    if (!on && argc > 1) {
        return "LLMDiscover off takes no options";
    }
    route->discover = on ? interval : 0;
    return NULL;
}

static const char *set_cache(cmd_parms *cmd, void *dummy, int argc,
                             char *const argv[])
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);

    if (err) {
        return err;
    }
    if (argc < 1) {
        return "LLMCache needs a store: memcache SERVERS, shm, or off";
    }
    conf->store_set = 1;
    conf->store = NULL;
    if (strcasecmp(argv[0], "off") == 0) {
        return argc > 1 ? "LLMCache off takes no options" : NULL;
    }
    return llmgw_store_create(cmd->pool, argc, argv, &conf->store);
}

static const char *set_cache_billing(cmd_parms *cmd, void *dummy,
                                     const char *arg)
{
    static const char *const names[] = { "full", "free", NULL };
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);

    return err ? err
               : llmgw_conf_keyword(cmd->pool, "LLMCacheBilling", arg, names,
                                    &conf->cache_billing_free);
}

static const char *set_coalesce(cmd_parms *cmd, void *dummy, int argc,
                                char *const argv[])
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);

    return err ? err
               : on_off_seconds(cmd, argc, argv, "timeout",
                                "LLMCoalesce on timeout=120", &conf->coalesce,
                                &conf->coalesce_timeout);
}

static const char *set_max_body(cmd_parms *cmd, void *dummy, const char *arg)
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);

    return err ? err
               : llmgw_conf_size(cmd->pool, "LLMMaxRequestBody", arg, 1,
                                 (apr_off_t)1 << 40, "LLMMaxRequestBody 8M",
                                 &conf->max_body);
}

static const char *set_api(cmd_parms *cmd, void *dconf, const char *arg)
{
    /* In the order of llmgw_api_t. */
    static const char *const names[] = { "off", "openai", "ollama", NULL };
    llmgw_dir_conf_t *conf = dconf;
    int v;
    const char *err = llmgw_conf_keyword(cmd->pool, "LLMApi", arg, names, &v);

    if (err) {
        return err;
    }
    conf->api = v;
    /* A plain <Location> path lets us find the endpoint below it. */
    conf->prefix = (cmd->path && cmd->path[0] == '/') ? cmd->path : NULL;
    return NULL;
}

const command_rec llmgw_cmds[] = {
    AP_INIT_RAW_ARGS("<LLMRoute", route_section, NULL, RSRC_CONF,
                     "<LLMRoute model-or-glob [alias ...]> ... "
                     "</LLMRoute>: where requests for these models go"),
    AP_INIT_TAKE_ARGV("LLMBackend", set_backend, NULL, RSRC_CONF,
                      "balancer://NAME [dialect=openai|ollama|llamacpp]: "
                      "the mod_proxy balancer serving this route"),
    AP_INIT_TAKE1("LLMUpstreamModel", set_upstream_model, NULL, RSRC_CONF,
                  "the model name sent to the backend"),
    AP_INIT_TAKE1("LLMCachePolicy", set_cache_policy, NULL, RSRC_CONF,
                  "deterministic | all | off: which answers of this route "
                  "are cached"),
    AP_INIT_TAKE_ARGV("LLMDiscover", set_discover, NULL, RSRC_CONF,
                      "on | off [interval=SECONDS]: also list the models "
                      "the route's backends report"),
    AP_INIT_TAKE_ARGV("LLMCache", set_cache, NULL, RSRC_CONF,
                      "memcache HOST:PORT[,...] | shm | off [ttl=SECONDS] "
                      "[max-item=SIZE] [size=SIZE]: the response cache"),
    AP_INIT_TAKE1("LLMCacheBilling", set_cache_billing, NULL, RSRC_CONF,
                  "full | free: whether answers from the cache count the "
                  "tokens of the original answer"),
    AP_INIT_TAKE_ARGV("LLMCoalesce", set_coalesce, NULL, RSRC_CONF,
                      "on | off [timeout=SECONDS]: share one generation "
                      "among identical requests in flight"),
    AP_INIT_TAKE1("LLMMaxRequestBody", set_max_body, NULL, RSRC_CONF,
                  "largest accepted request body (bytes, or with K/M/G)"),
    AP_INIT_TAKE_ARGV("LLMHealthCheck", llmgw_health_set_check, NULL,
                      RSRC_CONF,
                      "on | off [probe=auto|ollama|llamacpp|vllm|openai] "
                      "[interval=MS] [timeout=MS]: active probes of the "
                      "route's balancer members"),
    AP_INIT_TAKE_ARGV("LLMCapacity", llmgw_health_set_capacity, NULL,
                      RSRC_CONF,
                      "max=N|auto [queue=N] [wait=MS]: requests each member "
                      "of the route's balancer is sent at once; the rest "
                      "wait in a bounded queue, then 429"),
    AP_INIT_TAKE_ARGV("LLMWarmup", llmgw_health_set_warmup, NULL, RSRC_CONF,
                      "on | off [keep-alive=DURATION]: keep the route's "
                      "model loaded on one of its Ollama members"),
    AP_INIT_TAKE_ARGV("LLMBreaker", llmgw_health_set_breaker, NULL, RSRC_CONF,
                      "on | off [fails=N] [successes=N] [backoff=MS] "
                      "[backoff-max=MS] [trial-timeout=MS]: what opens and "
                      "closes a member's circuit breaker"),
    AP_INIT_TAKE1("LLMApi", set_api, NULL, ACCESS_CONF,
                  "openai | ollama | off: the client API served here"),
    { NULL }
};

static int balancer_defined(server_rec *s, module *proxy, const char *name)
{
    proxy_server_conf *pconf = ap_get_module_config(s->module_config, proxy);
    proxy_balancer *b;
    int i;

    if (!pconf || !pconf->balancers) {
        return 0;
    }
    b = (proxy_balancer *)pconf->balancers->elts;
    for (i = 0; i < pconf->balancers->nelts; i++, b++) {
        if (b->s && strcasecmp(b->s->name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                        server_rec *s)
{
    static const char *const needed[] = { "mod_proxy.c", "mod_proxy_http.c",
                                          "mod_proxy_balancer.c", NULL };
    module *proxy = ap_find_linked_module("mod_proxy.c");
    int failed = 0, have_routes = 0, i;
    server_rec *vs;

    LLMGW_EACH_SERVER(vs, s)
    {
        have_routes |= llmgw_sconf(vs)->router->routes->nelts > 0;
    }
    if (!have_routes) {
        return OK;
    }
    for (i = 0; needed[i]; i++) {
        if (!ap_find_linked_module(needed[i])) {
            ap_log_error(
                APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                LLMGW_LOGNO(0001) "<LLMRoute> needs %s: load it "
                                  "(a2enmod proxy proxy_http proxy_balancer)",
                needed[i]);
            failed = 1;
        }
    }
    if (failed) {
        return !OK;
    }
    LLMGW_EACH_SERVER(vs, s)
    {
        apr_array_header_t *routes = llmgw_sconf(vs)->router->routes;

        /* Virtual hosts that inherit the main routes were checked there. */
        if (vs != s && llmgw_sconf(vs)->router == llmgw_sconf(s)->router) {
            continue;
        }
        for (i = 0; i < routes->nelts; i++) {
            llmgw_route_t *r = APR_ARRAY_IDX(routes, i, llmgw_route_t *);

            if (!balancer_defined(vs, proxy, r->balancer)) {
                ap_log_error(
                    APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                    LLMGW_LOGNO(
                        0002) "%s:%d: LLMBackend %s: no "
                              "such balancer; define it with <Proxy \"%s\"> "
                              "and BalancerMember lines",
                    r->backend_file, r->backend_line, r->balancer,
                    r->balancer);
                failed = 1;
            }
        }
    }
    return failed ? !OK : OK;
}

void llmgw_config_register(void)
{
    ap_hook_check_config(check_config, NULL, NULL, APR_HOOK_MIDDLE);
}
