/* mod_llmgw_config: the directive table, the configuration's structures
 * made and merged, and the checks that need all of it (balancers exist).
 * Values are parsed by llmgw_conf; errors name the directive, and httpd
 * adds the file and line (we do when it cannot). */
#include <stddef.h>

#include <httpd.h>
#include <http_log.h>
#include <mod_proxy.h>
#include <apr_strings.h>

#include "llmgw_conf.h"
#include "mod_llmgw.h"
#include "mod_llmgw_config.h"
#include "mod_llmgw_health.h"
#include "mod_llmgw_manage.h"

APLOG_USE_MODULE(llm_gateway);

void *llmgw_create_server_conf(apr_pool_t *p, server_rec *s)
{
    llmgw_server_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    conf->router = llmgw_router_create(p);
    conf->coalesce = -1;
    conf->cache_billing_free = -1;
    conf->limit_fail_closed = -1;
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
    /* Keys, like routes: a virtual host with keys of its own uses only
     * those. */
    conf->keys = add->keys ? add->keys : base->keys;
    conf->users = add->users ? add->users : base->users;
    conf->prices = add->prices ? add->prices : base->prices;
    conf->limit_servers =
        add->limit_servers ? add->limit_servers : base->limit_servers;
    conf->limit_interval =
        add->limit_interval ? add->limit_interval : base->limit_interval;
    conf->limit_fail_closed = add->limit_fail_closed != -1
                                  ? add->limit_fail_closed
                                  : base->limit_fail_closed;
    conf->limit_stale =
        add->limit_stale ? add->limit_stale : base->limit_stale;
    return conf;
}

void *llmgw_create_dir_conf(apr_pool_t *p, char *dir)
{
    llmgw_dir_conf_t *conf = apr_pcalloc(p, sizeof(*conf));

    conf->api = LLMGW_API_UNSET;
    conf->require_key = -1;
    conf->key_from_user = -1;
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
    conf->require_key =
        add->require_key != -1 ? add->require_key : base->require_key;
    conf->key_from_user =
        add->key_from_user != -1 ? add->key_from_user : base->key_from_user;
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

/* A directive that sets one field from its one argument with one of
 * llmgw_conf's parsers (cmd->info points to it): where the field is, and
 * how its value reads. */
typedef struct {
    enum { IN_SERVER, IN_ROUTE, IN_DIR } in;
    apr_size_t offset;
    enum { AS_KEYWORD, AS_SECONDS, AS_SIZE } as;
    const char *const *names; /* a keyword's, in the field's order */
    apr_int64_t min, max;     /* a number's bounds */
    const char *example;      /* a good line, for the error */
} field_t;

static const char *set_field(cmd_parms *cmd, void *dconf, const char *arg)
{
    const field_t *f = cmd->info;
    const char *name = cmd->cmd->name, *err = NULL;
    char *at = dconf;

    if (f->in == IN_ROUTE) {
        at = (char *)current_route(cmd, &err);
    }
    else if (f->in == IN_SERVER) {
        err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);
        at = (char *)server_conf(cmd);
    }
    if (err) {
        return err;
    }
    at += f->offset;
    switch (f->as) {
    case AS_KEYWORD:
        return llmgw_conf_keyword(cmd->pool, name, arg, f->names, (int *)at);
    case AS_SECONDS:
        return llmgw_conf_seconds(cmd->pool, name, arg, f->min, f->max,
                                  f->example, (apr_interval_time_t *)at);
    default:
        return llmgw_conf_size(cmd->pool, name, arg, f->min, f->max,
                               f->example, (apr_off_t *)at);
    }
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

/* LLMFallback MODEL...: the routes tried, in order, once this route's
 * members failed before the commit point (checked in check_config). */
static const char *set_fallback(cmd_parms *cmd, void *dummy, int argc,
                                char *const argv[])
{
    const char *err;
    llmgw_route_t *route = current_route(cmd, &err);
    int i;

    if (!route) {
        return err;
    }
    if (argc < 1) {
        return "LLMFallback needs one or more model names, e.g. "
               "LLMFallback mock-small";
    }
    if (route->fallbacks) {
        return "LLMFallback: only one per <LLMRoute>; name every model "
               "of the chain on it, e.g. LLMFallback model-b model-c";
    }
    route->fallbacks = apr_array_make(cmd->pool, argc, sizeof(const char *));
    for (i = 0; i < argc; i++) {
        APR_ARRAY_PUSH(route->fallbacks, const char *) =
            apr_pstrdup(cmd->pool, argv[i]);
    }
    route->fallback_file = cmd->directive->filename;
    route->fallback_line = cmd->directive->line_num;
    return NULL;
}

/* LLMFailover attempts=N [time=SECONDS], or off (one attempt). */
static const char *set_failover(cmd_parms *cmd, void *dummy, int argc,
                                char *const argv[])
{
    static const char *const names[] = { "attempts", "time", NULL };
    static const char *const example = "LLMFailover attempts=3 time=30";
    const char *err, *v;
    llmgw_route_t *route = current_route(cmd, &err);
    apr_int64_t n;
    int i, which;

    if (!route) {
        return err;
    }
    if (argc == 1 && strcasecmp(argv[0], "off") == 0) {
        route->max_attempts = 1;
        return NULL;
    }
    if (argc < 1) {
        return apr_psprintf(cmd->pool,
                            "LLMFailover takes off, or attempts=N and "
                            "optionally time=SECONDS; e.g. %s",
                            example);
    }
    for (i = 0; i < argc; i++) {
        if ((err = llmgw_conf_option(cmd->pool, "LLMFailover", argv[i], names,
                                     &which, &v))
            != NULL) {
            return err;
        }
        err = which == 0
                  ? llmgw_conf_int(cmd->pool, "LLMFailover attempts", v, 1,
                                   LLMGW_FAILOVER_MAX_ATTEMPTS, example, &n)
                  : llmgw_conf_seconds(cmd->pool, "LLMFailover time", v, 1,
                                       3600, example, &route->failover_time);
        if (err) {
            return err;
        }
        if (which == 0) {
            route->max_attempts = (int)n;
        }
    }
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

/* ---------------------------------------------------------------------
 * Keys and limits: <LLMKey>, <LLMUserLimits>, the limits in them and in
 * <LLMRoute>, prices
 */

/* The directives of a limit block, run over its body; what they set is
 * checked as a whole at its end. */
static const char *limit_block_end(cmd_parms *cmd, const char *what,
                                   const llmgw_limits_conf_t *c)
{
    const char *why = llmgw_limits_conf_check(c);

    return why ? apr_psprintf(cmd->pool, "%s: %s", what, why) : NULL;
}

static const char *section_args(cmd_parms *cmd, const char *arg,
                                const char *what, char **args)
{
    const char *endp = ap_strrchr_c(arg, '>');
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);

    if (err) {
        return err;
    }
    if (!endp) {
        return apr_pstrcat(cmd->pool, what, " directive missing closing '>'",
                           NULL);
    }
    if (server_conf(cmd)->cur_key || server_conf(cmd)->cur_route) {
        return apr_pstrcat(cmd->pool, what,
                           " cannot be inside <LLMKey>, "
                           "<LLMUserLimits> or <LLMRoute>",
                           NULL);
    }
    *args = apr_pstrmemdup(cmd->temp_pool, arg, endp - arg);
    return NULL;
}

static llmgw_key_t *key_new(cmd_parms *cmd, const char *name)
{
    llmgw_key_t *key = apr_pcalloc(cmd->pool, sizeof(*key));

    key->name = name;
    key->file = cmd->directive->filename;
    key->line = cmd->directive->line_num;
    key->per_route = apr_hash_make(cmd->pool);
    return key;
}

/* Walks the block's body with key as the current one. */
static const char *key_body(cmd_parms *cmd, llmgw_key_t *key)
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err;

    conf->cur_key = key;
    err = ap_walk_config(cmd->directive->first_child, cmd, cmd->context);
    conf->cur_key = NULL;
    return err;
}

/* A second key of that name or hash in this server. */
static const char *key_clash(cmd_parms *cmd, const llmgw_key_t *key)
{
    apr_array_header_t *keys = server_conf(cmd)->keys;
    int i;

    for (i = 0; keys && i < keys->nelts; i++) {
        const llmgw_key_t *k = APR_ARRAY_IDX(keys, i, const llmgw_key_t *);

        if (strcmp(k->name, key->name) == 0) {
            return apr_psprintf(cmd->pool,
                                "<LLMKey \"%s\">: a key of that name "
                                "is already defined at %s:%d",
                                key->name, k->file, k->line);
        }
        if (memcmp(k->hash, key->hash, sizeof(k->hash)) == 0) {
            return apr_psprintf(cmd->pool,
                                "<LLMKey \"%s\">: its LLMKeyHash is "
                                "already the hash of <LLMKey \"%s\"> at "
                                "%s:%d; every key needs a secret of its own",
                                key->name, k->name, k->file, k->line);
        }
    }
    return NULL;
}

static const char *key_limits_end(cmd_parms *cmd, llmgw_key_t *key,
                                  const char *what)
{
    apr_hash_index_t *hi;
    const char *err = limit_block_end(cmd, what, &key->conf);

    for (hi = apr_hash_first(cmd->temp_pool, key->per_route); hi && !err;
         hi = apr_hash_next(hi)) {
        llmgw_key_route_t *kr = apr_hash_this_val(hi);

        err = limit_block_end(
            cmd, apr_psprintf(cmd->pool, "%s route=%s", what, kr->route),
            &kr->conf);
    }
    return err;
}

static const char *key_section(cmd_parms *cmd, void *dummy, const char *arg)
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err, *name, *what;
    char *args;
    llmgw_key_t *key;

    if ((err = section_args(cmd, arg, "<LLMKey>", &args)) != NULL) {
        return err;
    }
    name = ap_getword_conf(cmd->pool, (const char **)&args);
    if (!*name || *ap_getword_conf(cmd->temp_pool, (const char **)&args)) {
        return "<LLMKey> takes one name, e.g. <LLMKey \"team-a\">";
    }
    key = key_new(cmd, name);
    key->subject =
        llmgw_limits_subject_name(cmd->pool, LLMGW_SUBJECT_KEY, name, NULL);
    what = apr_psprintf(cmd->pool, "<LLMKey \"%s\">", name);
    if ((err = key_body(cmd, key)) != NULL
        || (err = key_limits_end(cmd, key, what)) != NULL) {
        return err;
    }
    if (!key->has_hash) {
        return apr_psprintf(cmd->pool,
                            "%s needs an LLMKeyHash line, e.g. "
                            "LLMKeyHash sha256:<64 hex digits> (build/"
                            "llmgw-key prints a new key and its line)",
                            what);
    }
    if ((err = key_clash(cmd, key)) != NULL) {
        return err;
    }
    if (!conf->keys) {
        conf->keys = apr_array_make(cmd->pool, 4, sizeof(llmgw_key_t *));
    }
    APR_ARRAY_PUSH(conf->keys, llmgw_key_t *) = key;
    return NULL;
}

static const char *users_section(cmd_parms *cmd, void *dummy, const char *arg)
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err;
    char *args;
    llmgw_key_t *key;

    if ((err = section_args(cmd, arg, "<LLMUserLimits>", &args)) != NULL) {
        return err;
    }
    if (*ap_getword_conf(cmd->temp_pool, (const char **)&args)) {
        return "<LLMUserLimits> takes no arguments";
    }
    if (conf->users) {
        return apr_psprintf(cmd->pool,
                            "<LLMUserLimits> is already defined "
                            "at %s:%d",
                            conf->users->file, conf->users->line);
    }
    key = key_new(cmd, "*");
    if ((err = key_body(cmd, key)) != NULL
        || (err = key_limits_end(cmd, key, "<LLMUserLimits>")) != NULL) {
        return err;
    }
    if (apr_hash_count(key->per_route)) {
        return "<LLMUserLimits>: route= limits are for <LLMKey> only";
    }
    conf->users = key;
    return NULL;
}

/* The key (or user block) being read; err says where the directive may
 * stand otherwise. */
static llmgw_key_t *current_key(cmd_parms *cmd, int users_too,
                                const char **err)
{
    llmgw_key_t *key = server_conf(cmd)->cur_key;

    if (key && (users_too || key->subject)) {
        *err = NULL;
        return key;
    }
    *err =
        apr_psprintf(cmd->pool, "%s is only allowed inside <LLMKey>%s",
                     cmd->cmd->name, users_too ? " or <LLMUserLimits>" : "");
    return NULL;
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static const char *set_key_hash(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err;
    llmgw_key_t *key = current_key(cmd, 0, &err);
    const char *hex = arg + 7;
    int i;

    if (!key) {
        return err;
    }
    if (key->has_hash) {
        return "LLMKeyHash: one hash per <LLMKey>";
    }
    if (strncasecmp(arg, "sha256:", 7) != 0 || strlen(hex) != 64) {
        goto bad;
    }
    for (i = 0; i < 32; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            goto bad;
        }
        key->hash[i] = (unsigned char)(hi << 4 | lo);
    }
    key->has_hash = 1;
    return NULL;
bad:
    return "LLMKeyHash: give the key's SHA-256 as sha256: and 64 hex "
           "digits, e.g. LLMKeyHash sha256:9f86d081884c7d659a2feaa0c55ad015"
           "a3bf4f1b2b0b822cd15d6c15b0f00a08 (printf %s KEY | sha256sum)";
}

static const char *set_key_models(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err;
    llmgw_key_t *key = current_key(cmd, 1, &err);

    if (!key) {
        return err;
    }
    if (!*arg) {
        return "LLMKeyModels: a model name or glob, e.g. LLMKeyModels "
               "\"llama3*\" mock-small";
    }
    if (!key->models) {
        key->models = apr_array_make(cmd->pool, 2, sizeof(const char *));
    }
    APR_ARRAY_PUSH(key->models, const char *) = arg;
    return NULL;
}

static const char *set_key_disabled(cmd_parms *cmd, void *dummy, int argc,
                                    char *const argv[])
{
    const char *err;
    llmgw_key_t *key = current_key(cmd, 0, &err);

    if (!key) {
        return err;
    }
    if (argc > 1) {
        return "LLMKeyDisabled takes nothing, on or off, e.g. "
               "LLMKeyDisabled on";
    }
    key->disabled = 1;
    return argc ? llmgw_conf_flag(cmd->pool, "LLMKeyDisabled", argv[0],
                                  &key->disabled)
                : NULL;
}

static const char *set_key_team(cmd_parms *cmd, void *dummy, const char *arg)
{
    const char *err;
    llmgw_key_t *key = current_key(cmd, 0, &err);
    const char *c;

    if (!key) {
        return err;
    }
    for (c = arg; *c; c++) {
        if ((unsigned char)*c < 0x21 || *c == 0x7f) {
            break;
        }
    }
    if (!*arg || *c || c - arg > 128) {
        return "LLMKeyTeam: a name of 1 to 128 printable characters "
               "without spaces, e.g. LLMKeyTeam research";
    }
    key->team = arg;
    return NULL;
}

/* Where LLMRateLimit/LLMBudget put their limits: the current key's (its
 * limits on one route with route=NAME, taken out of argv), the user
 * block's or the route's. */
static const char *limits_target(cmd_parms *cmd, int *argc, const char **argv,
                                 llmgw_limits_conf_t **c, int **rate_set)
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    llmgw_key_route_t *kr;
    llmgw_route_limits_t *rl;
    const char *route = NULL;
    int i, n = 0;

    for (i = 0; i < *argc; i++) {
        if (strncmp(argv[i], "route=", 6) == 0 && conf->cur_key) {
            if (route || !argv[i][6]) {
                return apr_psprintf(
                    cmd->pool,
                    "%s: route=NAME once, "
                    "naming an <LLMRoute>, e.g. %s route=llama3",
                    cmd->cmd->name, cmd->cmd->name);
            }
            route = argv[i] + 6;
            continue;
        }
        argv[n++] = argv[i];
    }
    *argc = n;
    if (conf->cur_key && route) {
        if (!conf->cur_key->subject) {
            return "route= limits are for <LLMKey> only";
        }
        kr =
            apr_hash_get(conf->cur_key->per_route, route, APR_HASH_KEY_STRING);
        if (!kr) {
            kr = apr_pcalloc(cmd->pool, sizeof(*kr));
            kr->route = route;
            kr->subject =
                llmgw_limits_subject_name(cmd->pool, LLMGW_SUBJECT_KEY_ROUTE,
                                          conf->cur_key->name, route);
            apr_hash_set(conf->cur_key->per_route, route, APR_HASH_KEY_STRING,
                         kr);
        }
        *c = &kr->conf;
        *rate_set = &kr->rate_set;
    }
    else if (conf->cur_key) {
        *c = &conf->cur_key->conf;
        *rate_set = &conf->cur_key->rate_set;
    }
    else if (conf->cur_route) {
        if (!(rl = conf->cur_route->limits)) {
            rl = conf->cur_route->limits = apr_pcalloc(cmd->pool, sizeof(*rl));
        }
        rl->subject = llmgw_limits_subject_name(cmd->pool, LLMGW_SUBJECT_ROUTE,
                                                conf->cur_route->name, NULL);
        *c = &rl->conf;
        *rate_set = &rl->rate_set;
    }
    else {
        return apr_psprintf(cmd->pool,
                            "%s is only allowed inside <LLMKey>, "
                            "<LLMUserLimits> or <LLMRoute>",
                            cmd->cmd->name);
    }
    return NULL;
}

static const char *set_rate_limit(cmd_parms *cmd, void *dummy, int argc,
                                  char *const argv[])
{
    llmgw_limits_conf_t *c;
    int *rate_set;
    const char *err =
        limits_target(cmd, &argc, (const char **)argv, &c, &rate_set);

    if (err) {
        return err;
    }
    if (*rate_set) {
        return "LLMRateLimit: given twice for one subject; put its limits "
               "on one line, e.g. LLMRateLimit rpm=600 tpm=200000 "
               "concurrent=8";
    }
    *rate_set = 1;
    return llmgw_limits_parse_rate(cmd->pool, argc, (const char **)argv, c);
}

static int budgets_of(const llmgw_limits_conf_t *c)
{
    int i, n = 0;

    for (i = 0; i < LLMGW_LIMITS_BUDGETS; i++) {
        n += c->budget[i].unit != 0;
    }
    return n;
}

static const char *set_budget(cmd_parms *cmd, void *dummy, int argc,
                              char *const argv[])
{
    llmgw_limits_conf_t *c;
    int *rate_set, before;
    const char *err =
        limits_target(cmd, &argc, (const char **)argv, &c, &rate_set);

    if (err) {
        return err;
    }
    before = budgets_of(c);
    if ((err = llmgw_limits_parse_budget(cmd->pool, argc, (const char **)argv,
                                         c))
        != NULL) {
        return err;
    }
    /* The parser replaces a budget of the same unit and period: in one
     * block that is a mistake. */
    return budgets_of(c) == before
               ? "LLMBudget: two budgets of the same unit and period "
                 "for one subject"
               : NULL;
}

static const char *set_max_tokens(cmd_parms *cmd, void *dummy, int argc,
                                  char *const argv[])
{
    static const char *const names[] = { "default", "cap", NULL };
    const char *err, *v;
    llmgw_route_t *route = current_route(cmd, &err);
    llmgw_route_limits_t *rl;
    int i, which;

    if (!route) {
        return err;
    }
    if (argc < 1) {
        return "LLMMaxTokens: default=N and/or cap=N, e.g. LLMMaxTokens "
               "default=512 cap=4096";
    }
    if (!(rl = route->limits)) {
        rl = route->limits = apr_pcalloc(cmd->pool, sizeof(*rl));
    }
    for (i = 0; i < argc; i++) {
        if ((err = llmgw_conf_option(cmd->pool, "LLMMaxTokens", argv[i], names,
                                     &which, &v))
                != NULL
            || (err = llmgw_conf_int(cmd->pool,
                                     apr_pstrcat(cmd->pool, "LLMMaxTokens ",
                                                 names[which], NULL),
                                     v, 1, LLMGW_LIMITS_TOKENS_MAX,
                                     "LLMMaxTokens default=512 cap=4096",
                                     which ? &rl->max_cap : &rl->default_max))
                   != NULL) {
            return err;
        }
    }
    return NULL;
}

static const char *set_price(cmd_parms *cmd, void *dummy, int argc,
                             char *const argv[])
{
    llmgw_server_conf_t *conf = server_conf(cmd);
    llmgw_model_price_t *mp;
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT);

    if (err) {
        return err;
    }
    if (conf->cur_key || conf->cur_route) {
        return "LLMPrice stands outside <LLMKey> and <LLMRoute>";
    }
    if (argc < 1 || !*argv[0]) {
        return "LLMPrice: a model (name or glob), then in= and out=, e.g. "
               "LLMPrice \"llama3*\" in=0.15 out=0.60";
    }
    if (!conf->prices) {
        conf->prices =
            apr_array_make(cmd->pool, 4, sizeof(llmgw_model_price_t));
    }
    mp = apr_array_push(conf->prices);
    mp->model = argv[0];
    return llmgw_limits_parse_price(cmd->pool, argc - 1,
                                    (const char **)argv + 1, &mp->price);
}

static const char *set_limit_store(cmd_parms *cmd, void *dummy, int argc,
                                   char *const argv[])
{
    static const char *const names[] = { "interval", "fail", "stale", NULL };
    static const char *const fails[] = { "open", "closed", NULL };
    llmgw_server_conf_t *conf = server_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_CONTEXT), *v;
    int i, which;

    if (err) {
        return err;
    }
    if (argc == 1 && strcasecmp(argv[0], "off") == 0) {
        conf->limit_servers = "";
        return NULL;
    }
    if (argc < 2 || strcasecmp(argv[0], "memcache") != 0) {
        return "LLMLimitStore: memcache HOST:PORT[,...] [interval=MS] "
               "[fail=open|closed] [stale=SECONDS], or off; e.g. "
               "LLMLimitStore memcache 127.0.0.1:11211 interval=250";
    }
    conf->limit_servers = argv[1];
    for (i = 2; i < argc; i++) {
        if ((err = llmgw_conf_option(cmd->pool, "LLMLimitStore", argv[i],
                                     names, &which, &v))
            != NULL) {
            return err;
        }
        err = which == 0 ? llmgw_conf_msec(cmd->pool, "LLMLimitStore interval",
                                           v, 10, 60000,
                                           "LLMLimitStore memcache "
                                           "127.0.0.1:11211 interval=250",
                                           &conf->limit_interval)
              : which == 1
                  ? llmgw_conf_keyword(cmd->pool, "LLMLimitStore fail", v,
                                       fails, &conf->limit_fail_closed)
                  : llmgw_conf_seconds(cmd->pool, "LLMLimitStore stale", v, 1,
                                       86400,
                                       "LLMLimitStore memcache "
                                       "127.0.0.1:11211 fail=closed stale=10",
                                       &conf->limit_stale);
        if (err) {
            return err;
        }
    }
    return NULL;
}

/* The fields the directives of one value set (set_field). */
static const field_t cache_policy = {
    .in = IN_ROUTE,
    .offset = offsetof(llmgw_route_t, cache_policy),
    .as = AS_KEYWORD,
    /* In the order of llmgw_cache_policy_t. */
    .names = (const char *const[]){ "deterministic", "all", "off", NULL },
};
/* A route's timeout: SECONDS, at least 1 and at most a day. */
#define ROUTE_TIMEOUT(field, good)                                 \
    {                                                              \
        .in = IN_ROUTE, .offset = offsetof(llmgw_route_t, field),  \
        .as = AS_SECONDS, .min = 1, .max = 86400, .example = good, \
    }
static const field_t first_byte_timeout =
    ROUTE_TIMEOUT(first_byte_timeout, "LLMFirstByteTimeout 10");
static const field_t first_token_timeout =
    ROUTE_TIMEOUT(first_token_timeout, "LLMFirstTokenTimeout 10");
static const field_t token_timeout =
    ROUTE_TIMEOUT(token_timeout, "LLMTokenTimeout 10");
static const field_t cache_billing = {
    .in = IN_SERVER,
    .offset = offsetof(llmgw_server_conf_t, cache_billing_free),
    .as = AS_KEYWORD,
    .names = (const char *const[]){ "full", "free", NULL },
};
static const field_t max_body = {
    .in = IN_SERVER,
    .offset = offsetof(llmgw_server_conf_t, max_body),
    .as = AS_SIZE,
    .min = 1,
    .max = (apr_int64_t)1 << 40,
    .example = "LLMMaxRequestBody 8M",
};
static const field_t key_from = {
    .in = IN_DIR,
    .offset = offsetof(llmgw_dir_conf_t, key_from_user),
    .as = AS_KEYWORD,
    .names = (const char *const[]){ "key", "user", NULL },
};

const command_rec llmgw_cmds[] = {
    AP_INIT_RAW_ARGS("<LLMRoute", route_section, NULL, RSRC_CONF,
                     "<LLMRoute model-or-glob [alias ...]> ... "
                     "</LLMRoute>: where requests for these models go"),
    AP_INIT_TAKE_ARGV("LLMBackend", set_backend, NULL, RSRC_CONF,
                      "balancer://NAME [dialect=openai|ollama|llamacpp]: "
                      "the mod_proxy balancer serving this route"),
    AP_INIT_TAKE1("LLMUpstreamModel", set_upstream_model, NULL, RSRC_CONF,
                  "the model name sent to the backend"),
    AP_INIT_TAKE1("LLMCachePolicy", set_field, (void *)&cache_policy,
                  RSRC_CONF,
                  "deterministic | all | off: which answers of this route "
                  "are cached"),
    AP_INIT_TAKE_ARGV("LLMDiscover", set_discover, NULL, RSRC_CONF,
                      "on | off [interval=SECONDS]: also list the models "
                      "the route's backends report"),
    AP_INIT_TAKE_ARGV("LLMFallback", set_fallback, NULL, RSRC_CONF,
                      "MODEL [MODEL ...]: the routes tried in order when "
                      "this route's members fail before the answer starts"),
    AP_INIT_TAKE_ARGV("LLMFailover", set_failover, NULL, RSRC_CONF,
                      "off | attempts=N [time=SECONDS]: how many attempts "
                      "a request gets, and how long new ones may start"),
    AP_INIT_TAKE1("LLMFirstByteTimeout", set_field,
                  (void *)&first_byte_timeout, RSRC_CONF,
                  "SECONDS: a member that sends no response headers by "
                  "then fails over"),
    AP_INIT_TAKE1("LLMFirstTokenTimeout", set_field,
                  (void *)&first_token_timeout, RSRC_CONF,
                  "SECONDS: a member that sends no first token by then "
                  "fails over"),
    AP_INIT_TAKE1("LLMTokenTimeout", set_field, (void *)&token_timeout,
                  RSRC_CONF,
                  "SECONDS: the longest wait between tokens once a "
                  "stream started (then it ends with its error event)"),
    AP_INIT_TAKE_ARGV("LLMCache", set_cache, NULL, RSRC_CONF,
                      "memcache HOST:PORT[,...] | shm | off [ttl=SECONDS] "
                      "[max-item=SIZE] [size=SIZE]: the response cache"),
    AP_INIT_TAKE1("LLMCacheBilling", set_field, (void *)&cache_billing,
                  RSRC_CONF,
                  "full | free: whether answers from the cache count the "
                  "tokens of the original answer"),
    AP_INIT_TAKE_ARGV("LLMCoalesce", set_coalesce, NULL, RSRC_CONF,
                      "on | off [timeout=SECONDS]: share one generation "
                      "among identical requests in flight"),
    AP_INIT_TAKE1("LLMManageFile", llmgw_manage_set_file, NULL, RSRC_CONF,
                  "the file that keeps the console's run-time changes"),
    AP_INIT_TAKE1("LLMMaxRequestBody", set_field, (void *)&max_body, RSRC_CONF,
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
    AP_INIT_RAW_ARGS("<LLMKey", key_section, NULL, RSRC_CONF,
                     "<LLMKey name> ... </LLMKey>: an API key (its hash), "
                     "its models and limits"),
    AP_INIT_RAW_ARGS("<LLMUserLimits", users_section, NULL, RSRC_CONF,
                     "<LLMUserLimits> ... </LLMUserLimits>: the limits of "
                     "each REMOTE_USER (LLMKeyFrom user)"),
    AP_INIT_TAKE1("LLMKeyHash", set_key_hash, NULL, RSRC_CONF,
                  "sha256:HEX: the SHA-256 of the key"),
    AP_INIT_ITERATE("LLMKeyModels", set_key_models, NULL, RSRC_CONF,
                    "the models (names or globs) the key may ask for"),
    AP_INIT_TAKE_ARGV("LLMKeyDisabled", set_key_disabled, NULL, RSRC_CONF,
                      "[on|off]: the key is refused (401)"),
    AP_INIT_TAKE1("LLMKeyTeam", set_key_team, NULL, RSRC_CONF,
                  "the key's team, for the logs (llm-key-team note)"),
    AP_INIT_TAKE_ARGV("LLMRateLimit", set_rate_limit, NULL, RSRC_CONF,
                      "rpm=N tpm=N concurrent=N [route=NAME]"),
    AP_INIT_TAKE_ARGV("LLMBudget", set_budget, NULL, RSRC_CONF,
                      "tokens=N|cost=AMOUNT per=hour|day|month [route=NAME]"),
    AP_INIT_TAKE_ARGV("LLMMaxTokens", set_max_tokens, NULL, RSRC_CONF,
                      "default=N cap=N: the route's max_tokens when the "
                      "client gives none, and the most it may ask"),
    AP_INIT_TAKE_ARGV("LLMPrice", set_price, NULL, RSRC_CONF,
                      "MODEL in=AMOUNT out=AMOUNT: price per million "
                      "prompt and completion tokens"),
    AP_INIT_FLAG("LLMRequireKey", ap_set_flag_slot,
                 (void *)APR_OFFSETOF(llmgw_dir_conf_t, require_key),
                 ACCESS_CONF,
                 "on | off: API requests here need a key (or a user)"),
    AP_INIT_TAKE1("LLMKeyFrom", set_field, (void *)&key_from, ACCESS_CONF,
                  "key | user: whose limits apply, the API key's or "
                  "REMOTE_USER's"),
    AP_INIT_TAKE_ARGV("LLMLimitStore", set_limit_store, NULL, RSRC_CONF,
                      "memcache SERVERS [interval=MS] [fail=open|closed] "
                      "[stale=SECONDS] | off: where nodes sync limits"),
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

/* Each LLMFallback model has a route, not the route itself. */
static int check_fallbacks(server_rec *s, const llmgw_router_t *router,
                           const llmgw_route_t *r)
{
    int i, failed = 0;

    for (i = 0; r->fallbacks && i < r->fallbacks->nelts; i++) {
        const char *m = APR_ARRAY_IDX(r->fallbacks, i, const char *);
        const llmgw_route_t *to = llmgw_router_find(router, m);

        if (!to || to == r) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, s,
                         LLMGW_LOGNO(0003) "%s:%d: LLMFallback %s: %s",
                         r->fallback_file, r->fallback_line, m,
                         to ? "is this route's own model; name another "
                              "route's"
                            : "no <LLMRoute> serves this model");
            failed = 1;
        }
    }
    return failed;
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

            if (check_fallbacks(s, llmgw_sconf(vs)->router, r)) {
                failed = 1;
            }
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
