/* test_main.c: runs every Check suite of the core (make check), printing
 * Check's own summary line. */
#include <stdlib.h>

#include <apr_general.h>

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
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
