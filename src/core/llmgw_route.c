/* llmgw_route: the route table. Built once at configuration time, so a
 * request costs one hash lookup, or a few fnmatch calls for globs. */
#include <string.h>

#include <apr_fnmatch.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "llmgw_route.h"

typedef struct {
    const char *pattern;
    llmgw_route_t *route;
} glob_entry;

llmgw_router_t *llmgw_router_create(apr_pool_t *p)
{
    llmgw_router_t *rt = apr_pcalloc(p, sizeof(*rt));

    rt->routes = apr_array_make(p, 8, sizeof(llmgw_route_t *));
    rt->exact = apr_hash_make(p);
    rt->globs = apr_array_make(p, 4, sizeof(glob_entry));
    rt->listed = apr_array_make(p, 8, sizeof(const char *));
    rt->created = apr_time_sec(apr_time_now());
    return rt;
}

int llmgw_pattern_is_glob(const char *pattern)
{
    return apr_fnmatch_test(pattern);
}

const char *llmgw_router_add(apr_pool_t *p, llmgw_router_t *rt,
                             llmgw_route_t *route)
{
    int i;

    for (i = 0; i < route->patterns->nelts; i++) {
        const char *pat = APR_ARRAY_IDX(route->patterns, i, const char *);
        glob_entry *g;
        llmgw_route_t *other;

        if (!llmgw_pattern_is_glob(pat)) {
            other = apr_hash_get(rt->exact, pat, APR_HASH_KEY_STRING);
            if (other) {
                return apr_psprintf(p,
                                    "model name '%s' is already routed "
                                    "by <LLMRoute \"%s\"> at %s:%d",
                                    pat, other->name, other->file,
                                    other->line);
            }
            apr_hash_set(rt->exact, pat, APR_HASH_KEY_STRING, route);
            APR_ARRAY_PUSH(rt->listed, const char *) = pat;
            continue;
        }
        g = &APR_ARRAY_PUSH(rt->globs, glob_entry);
        g->pattern = pat;
        g->route = route;
    }
    APR_ARRAY_PUSH(rt->routes, llmgw_route_t *) = route;
    return NULL;
}

const llmgw_route_t *llmgw_router_find(const llmgw_router_t *rt,
                                       const char *model)
{
    const llmgw_route_t *route;
    int i;

    route = apr_hash_get(rt->exact, model, APR_HASH_KEY_STRING);
    if (route) {
        return route;
    }
    for (i = 0; i < rt->globs->nelts; i++) {
        const glob_entry *g = &APR_ARRAY_IDX(rt->globs, i, glob_entry);

        if (apr_fnmatch(g->pattern, model, 0) == APR_SUCCESS) {
            return g->route;
        }
    }
    return NULL;
}

const char *llmgw_router_names(apr_pool_t *p, const llmgw_router_t *rt)
{
    const char *names = NULL;
    int i;

    for (i = 0; i < rt->listed->nelts; i++) {
        const char *n = APR_ARRAY_IDX(rt->listed, i, const char *);

        names = names ? apr_pstrcat(p, names, ", ", n, NULL) : n;
    }
    return names ? names : "(none)";
}
