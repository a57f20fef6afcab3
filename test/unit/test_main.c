/* test_main.c: runs every Check suite of the core (make check), printing
 * Check's own summary line. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_time.h>

#include "test_core.h"

apr_pool_t *test_pool;

void test_pool_setup(void)
{
    apr_pool_create(&test_pool, NULL);
}

void test_pool_teardown(void)
{
    apr_pool_destroy(test_pool);
    test_pool = NULL;
}

llmgw_route_t *test_route(int line, const char *first, ...)
{
    llmgw_route_t *r = apr_pcalloc(test_pool, sizeof(*r));
    const char *p;
    va_list ap;

    va_start(ap, first);
    r->patterns = apr_array_make(test_pool, 2, sizeof(const char *));
    for (p = first; p; p = va_arg(ap, const char *)) {
        APR_ARRAY_PUSH(r->patterns, const char *) = p;
    }
    va_end(ap);
    r->name = first;
    r->file = "test.conf";
    r->line = line;
    return r;
}

llmgw_breaker_params_t test_breaker_params(unsigned n, unsigned m,
                                           apr_interval_time_t trial_timeout)
{
    llmgw_breaker_params_t p;

    llmgw_breaker_params_default(&p);
    p.fails_to_open = n;
    p.successes_to_close = m;
    p.backoff = apr_time_from_msec(100);
    p.backoff_max = apr_time_from_sec(1);
    p.trial_timeout = trial_timeout;
    return p;
}

void test_assert_parts(const char *file, int line, int held, const char *s,
                       ...)
{
    va_list ap;
    const char *part;

    ck_assert_msg(s != NULL, "%s:%d: no string to look in", file, line);
    va_start(ap, s);
    while ((part = va_arg(ap, const char *)) != NULL) {
        if ((strstr(s, part) != NULL) != held) {
            va_end(ap);
            _ck_assert_failed(
                file, line, held ? "ck_assert_has" : "ck_assert_lacks",
                "\"%s\" %s in: %s", part, held ? "not" : "is", s);
        }
    }
    va_end(ap);
}

TCase *test_case_with(Suite *s, const char *name, SFun setup, SFun teardown,
                      double timeout, const TTest *const *tests)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, setup, teardown);
    if (timeout > 0) {
        tcase_set_timeout(tc, timeout);
    }
    for (; *tests; tests++) {
        tcase_add_test(tc, *tests);
    }
    suite_add_tcase(s, tc);
    return tc;
}

TCase *test_case_add(Suite *s, const char *name, double timeout,
                     const TTest *const *tests)
{
    return test_case_with(s, name, test_pool_setup, test_pool_teardown,
                          timeout, tests);
}

Suite *test_suite(const char *suite, const char *tcase, double timeout,
                  const TTest *const *tests)
{
    Suite *s = suite_create(suite);

    test_case_add(s, tcase, timeout, tests);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    apr_initialize();
    sr = srunner_create(json_suite());
    srunner_add_suite(sr, dialect_suite());
    srunner_add_suite(sr, route_suite());
    srunner_add_suite(sr, stream_suite());
    srunner_add_suite(sr, cache_suite());
    srunner_add_suite(sr, ollama_suite());
    srunner_add_suite(sr, shmtab_suite());
    srunner_add_suite(sr, memcache_suite());
    srunner_add_suite(sr, limits_suite());
    srunner_add_suite(sr, estimate_suite());
    srunner_add_suite(sr, probe_suite());
    srunner_add_suite(sr, breaker_suite());
    srunner_add_suite(sr, health_suite());
    srunner_add_suite(sr, affinity_suite());
    srunner_add_suite(sr, group_suite());
    srunner_add_suite(sr, store_suite());
    srunner_add_suite(sr, conf_suite());
    srunner_add_suite(sr, metrics_suite());
    srunner_add_suite(sr, render_suite());
    srunner_add_suite(sr, form_suite());
    srunner_add_suite(sr, manage_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
