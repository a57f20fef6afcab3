/* test_core.h: the Check suites of the httpd-free core, one per part,
 * gathered by test_main.c. */
#ifndef TEST_CORE_H
#define TEST_CORE_H

#include <check.h>
#include <apr_pools.h>

#include <stdarg.h>

#include "llmgw_breaker.h"
#include "llmgw_route.h"

Suite *json_suite(void);
Suite *dialect_suite(void);
Suite *route_suite(void);
Suite *stream_suite(void);
Suite *cache_suite(void);
Suite *ollama_suite(void);
Suite *shmtab_suite(void);
Suite *memcache_suite(void);
Suite *limits_suite(void);
Suite *estimate_suite(void);
Suite *probe_suite(void);
Suite *breaker_suite(void);
Suite *health_suite(void);
Suite *affinity_suite(void);
Suite *group_suite(void);
Suite *store_suite(void);
Suite *conf_suite(void);
Suite *metrics_suite(void);
Suite *render_suite(void);
Suite *form_suite(void);
Suite *manage_suite(void);

/* A pool per test, made in setup and destroyed in teardown. */
extern apr_pool_t *test_pool;
void test_pool_setup(void);
void test_pool_teardown(void);

/* Breaker parameters for the breaker and health tests: n failures open
 * it, m successes close it, back-off from 100 ms doubling to 1 s, and a
 * trial not reported in trial_timeout is given up. */
llmgw_breaker_params_t test_breaker_params(unsigned n, unsigned m,
                                           apr_interval_time_t trial_timeout);

/* A route named first whose patterns are first and the strings after it
 * (NULL-terminated), configured at test.conf:line; in test_pool. */
llmgw_route_t *test_route(int line, const char *first, ...);

/* Fail the test (at the caller's line) unless s holds each of the
 * strings after it, or holds none of them. */
#define ck_assert_has(s, ...)                                  \
    test_assert_parts(__FILE__, __LINE__, 1, (s), __VA_ARGS__, \
                      (const char *)NULL)
#define ck_assert_lacks(s, ...)                                \
    test_assert_parts(__FILE__, __LINE__, 0, (s), __VA_ARGS__, \
                      (const char *)NULL)
void test_assert_parts(const char *file, int line, int held, const char *s,
                       ...);

/* A NULL-ended list of Check tests (START_TEST names), in run order. */
#define TESTS(...) ((const TTest *const[]){ __VA_ARGS__, NULL })

/* Adds to s a TCase called name that runs tests between setup and
 * teardown (a checked fixture, so around each test and in its process),
 * each under timeout seconds (0 keeps Check's default of 4 s). Returns
 * the TCase, for a caller with more to add to it. */
TCase *test_case_with(Suite *s, const char *name, SFun setup, SFun teardown,
                      double timeout, const TTest *const *tests);

/* The same with a fresh test_pool around each test. */
TCase *test_case_add(Suite *s, const char *name, double timeout,
                     const TTest *const *tests);

/* A suite called suite of one such TCase, called tcase. */
Suite *test_suite(const char *suite, const char *tcase, double timeout,
                  const TTest *const *tests);

#endif
