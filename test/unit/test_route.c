/* test_route.c: exact names before globs, config order among globs, and
 * duplicate names refused with the place of the first claim. */
#include <string.h>

#include "llmgw_route.h"
#include "test_core.h"

/* Every route of these tests stands at test.conf:1. */
#define route(...) test_route(1, __VA_ARGS__)

START_TEST(routes_exact_alias_and_glob)
{
    llmgw_router_t *rt = llmgw_router_create(test_pool);
    llmgw_route_t *glob = route("llama3*", NULL);
    llmgw_route_t *exact = route("llama3:70b", "big", NULL);
    llmgw_route_t *any = route("*", NULL);

    ck_assert_ptr_null(llmgw_router_add(test_pool, rt, glob));
    ck_assert_ptr_null(llmgw_router_add(test_pool, rt, exact));
    ck_assert_ptr_null(llmgw_router_add(test_pool, rt, any));
    ck_assert_ptr_eq(llmgw_router_find(rt, "llama3:70b"), exact);
    ck_assert_ptr_eq(llmgw_router_find(rt, "big"), exact);
    ck_assert_ptr_eq(llmgw_router_find(rt, "llama3:8b"), glob);
    ck_assert_ptr_eq(llmgw_router_find(rt, "org/other"), any);
    ck_assert_str_eq(llmgw_router_names(test_pool, rt), "llama3:70b, big");
}
END_TEST

START_TEST(no_match_and_empty_names)
{
    llmgw_router_t *rt = llmgw_router_create(test_pool);

    ck_assert_str_eq(llmgw_router_names(test_pool, rt), "(none)");
    ck_assert_ptr_null(llmgw_router_add(test_pool, rt, route("qwen?", NULL)));
    ck_assert_ptr_null(llmgw_router_find(rt, "qwen"));
    ck_assert_ptr_nonnull(llmgw_router_find(rt, "qwen2"));
}
END_TEST

START_TEST(refuses_duplicate_names)
{
    llmgw_router_t *rt = llmgw_router_create(test_pool);
    const char *err;

    ck_assert_ptr_null(llmgw_router_add(test_pool, rt, route("a", NULL)));
    err = llmgw_router_add(test_pool, rt, route("b", "a", NULL));
    ck_assert_ptr_nonnull(err);
    ck_assert_has(err, "'a'", "test.conf:1");
}
END_TEST

Suite *route_suite(void)
{
    return test_suite("route", "router", 0,
                      TESTS(routes_exact_alias_and_glob,
                            no_match_and_empty_names,
                            refuses_duplicate_names));
}
