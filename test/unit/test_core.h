/* test_core.h: the Check suites of the httpd-free core, one per part,
 * gathered by test_main.c. */
#ifndef TEST_CORE_H
#define TEST_CORE_H

#include <check.h>
#include <apr_pools.h>

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

/* A pool per test, made in setup and destroyed in teardown. */
extern apr_pool_t *test_pool;
void test_pool_setup(void);
void test_pool_teardown(void);

#endif
