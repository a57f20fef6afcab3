/* fuzz_route: the route table with any names and patterns (from the
 * configuration, and the client's model names): a model finds the route
 * the rules say, checked against a plain reading of them.
 * Input: lines; each but the last is a route, its patterns separated by
 * tabs; the last line is the model asked for. */
#include <apr_fnmatch.h>
#include <apr_strings.h>

#include "fuzz.h"

#include "llmgw_route.h"

#define MAX_ROUTES 16

/* What the table should answer: the route that claimed the exact name,
 * else the first glob (in configuration order) that matches. */
static const llmgw_route_t *expected(llmgw_route_t *const *routes, int n,
                                     const int *added, const char *model)
{
    int i, k;

    for (i = 0; i < n; i++) {
        for (k = 0; added[i] && k < routes[i]->patterns->nelts; k++) {
            const char *pat =
                APR_ARRAY_IDX(routes[i]->patterns, k, const char *);

            if (!llmgw_pattern_is_glob(pat) && !strcmp(pat, model)) {
                return routes[i];
            }
        }
    }
    for (i = 0; i < n; i++) {
        for (k = 0; added[i] && k < routes[i]->patterns->nelts; k++) {
            const char *pat =
                APR_ARRAY_IDX(routes[i]->patterns, k, const char *);

            if (llmgw_pattern_is_glob(pat)
                && apr_fnmatch(pat, model, 0) == APR_SUCCESS) {
                return routes[i];
            }
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    llmgw_router_t *rt = llmgw_router_create(p);
    llmgw_route_t *routes[MAX_ROUTES];
    int added[MAX_ROUTES], n = 0, i;
    const char *line, *model = "", *why;
    const llmgw_route_t *got, *want;
    size_t len;

    while ((line = fuzz_until(&in, '\n', &len)) != NULL) {
        char *text = apr_pstrmemdup(p, line, len), *pat, *last;
        llmgw_route_t *r;

        if (!in.n || n == MAX_ROUTES) {
            model = text;
            break;
        }
        r = apr_pcalloc(p, sizeof(*r));
        r->patterns = apr_array_make(p, 2, sizeof(const char *));
        for (pat = apr_strtok(text, "\t", &last); pat;
             pat = apr_strtok(NULL, "\t", &last)) {
            APR_ARRAY_PUSH(r->patterns, const char *) = pat;
        }
        if (!r->patterns->nelts) {
            continue;
        }
        r->name = APR_ARRAY_IDX(r->patterns, 0, const char *);
        r->balancer = "balancer://be";
        r->dialect = "openai";
        r->file = "fuzz.conf";
        r->line = n + 1;
        why = llmgw_router_add(p, rt, r);
        if (why) {
            /* A name claimed twice: the configuration fails here, the
             * table is never used. */
            FUZZ_CHECK(*why, "an empty reason");
            apr_pool_destroy(p);
            return 0;
        }
        routes[n] = r;
        added[n++] = 1;
    }
    got = llmgw_router_find(rt, model);
    want = expected(routes, n, added, model);
    FUZZ_CHECK(got == want, "model '%s' found route %s, expected %s", model,
               got ? got->name : "none", want ? want->name : "none");
    /* Every exact name of a route that was added finds that route. */
    for (i = 0; i < n; i++) {
        int k;

        for (k = 0; added[i] && k < routes[i]->patterns->nelts; k++) {
            const char *pat =
                APR_ARRAY_IDX(routes[i]->patterns, k, const char *);

            if (!llmgw_pattern_is_glob(pat)) {
                FUZZ_CHECK(llmgw_router_find(rt, pat) == routes[i],
                           "exact name '%s' lost", pat);
            }
        }
    }
    FUZZ_CHECK(llmgw_router_names(p, rt) != NULL, "no names");
    apr_pool_destroy(p);
    return 0;
}
