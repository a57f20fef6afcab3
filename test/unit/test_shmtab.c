/* test_shmtab.c: the shared-memory table: get/set/del, replacing,
 * expiry, the ring dropping the oldest, full probe windows, sizes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_shmtab.h"
#include "test_core.h"

#define NOW 1000000
#define LATER (NOW + 60 * APR_USEC_PER_SEC)

static llmgw_shmtab_t *table(apr_size_t size, apr_size_t avg)
{
    void *mem = apr_pcalloc(test_pool, size);
    llmgw_shmtab_t *t = llmgw_shmtab_init(mem, size, avg);

    ck_assert_ptr_nonnull(t);
    return t;
}

static const char *get(llmgw_shmtab_t *t, const char *key, apr_time_t now)
{
    char *val;
    apr_size_t len;

    if (llmgw_shmtab_get(t, key, strlen(key), now, test_pool, &val, &len)
        != APR_SUCCESS) {
        return NULL;
    }
    return apr_pstrmemdup(test_pool, val, len);
}

static apr_status_t set(llmgw_shmtab_t *t, const char *key, const char *val,
                        apr_time_t expiry)
{
    return llmgw_shmtab_set(t, key, strlen(key), val, strlen(val), expiry);
}

START_TEST(set_get_del)
{
    llmgw_shmtab_t *t = table(64 * 1024, 256);

    ck_assert_ptr_null(get(t, "a", NOW));
    ck_assert_int_eq(set(t, "a", "one", LATER), APR_SUCCESS);
    ck_assert_int_eq(set(t, "b", "", LATER), APR_SUCCESS);
    ck_assert_str_eq(get(t, "a", NOW), "one");
    ck_assert_str_eq(get(t, "b", NOW), "");
    ck_assert_ptr_null(get(t, "ab", NOW));
    ck_assert_int_eq(set(t, "a", "two", LATER), APR_SUCCESS);
    ck_assert_str_eq(get(t, "a", NOW), "two");
    ck_assert_uint_eq(llmgw_shmtab_count(t), 2);
    ck_assert_int_eq(llmgw_shmtab_del(t, "a", 1), APR_SUCCESS);
    ck_assert_int_eq(llmgw_shmtab_del(t, "a", 1), APR_NOTFOUND);
    ck_assert_ptr_null(get(t, "a", NOW));
    ck_assert_str_eq(get(t, "b", NOW), "");
}
END_TEST

START_TEST(expiry)
{
    llmgw_shmtab_t *t = table(64 * 1024, 256);

    ck_assert_int_eq(set(t, "k", "v", NOW + 10), APR_SUCCESS);
    ck_assert_str_eq(get(t, "k", NOW + 9), "v");
    ck_assert_ptr_null(get(t, "k", NOW + 10));
    ck_assert_uint_eq(llmgw_shmtab_count(t), 0);
}
END_TEST

/* Far more than fits: the newest stay whole, the oldest go, and no value
 * ever comes back torn or as another key's. */
START_TEST(ring_drops_oldest)
{
    llmgw_shmtab_t *t = table(32 * 1024, 128);
    char key[32], val[512];
    int i, kept = 0;

    for (i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        memset(val, 'a' + i % 26, sizeof(val) - 1);
        val[sizeof(val) - 1 - i % 300] = '\0';
        ck_assert_int_eq(set(t, key, val, LATER), APR_SUCCESS);
    }
    for (i = 0; i < 2000; i++) {
        const char *v;

        snprintf(key, sizeof(key), "key-%d", i);
        if ((v = get(t, key, NOW)) != NULL) {
            ck_assert_uint_eq(strlen(v), sizeof(val) - 1 - i % 300);
            ck_assert_int_eq(v[0], 'a' + i % 26);
            ck_assert_int_eq(v[strlen(v) - 1], 'a' + i % 26);
            kept++;
        }
        else {
            ck_assert_int_lt(i, 1990);      /* the newest are all there */
        }
    }
    ck_assert_int_gt(kept, 20);
    ck_assert_int_lt(kept, 200);
}
END_TEST

/* Many small keys: more than one probe window's worth collide, and the
 * oldest in a full window gives way. */
START_TEST(full_index)
{
    llmgw_shmtab_t *t = table(16 * 1024, 1024);
    char key[32];
    int i, found = 0;

    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ck_assert_int_eq(set(t, key, key, LATER), APR_SUCCESS);
        ck_assert_str_eq(get(t, key, NOW), key);
    }
    for (i = 0; i < 500; i++) {
        const char *v;

        snprintf(key, sizeof(key), "k%d", i);
        if ((v = get(t, key, NOW)) != NULL) {
            ck_assert_str_eq(v, key);
            found++;
        }
    }
    ck_assert_int_gt(found, 0);
    ck_assert_uint_eq(llmgw_shmtab_count(t), (apr_size_t)found);
}
END_TEST

START_TEST(sizes)
{
    llmgw_shmtab_t *t = table(64 * 1024, 256);
    apr_size_t max = llmgw_shmtab_max_item(t, 1);
    char *big = malloc(max + 2);

    ck_assert_ptr_null(llmgw_shmtab_init(apr_pcalloc(test_pool, 256), 256,
                                         64));
    ck_assert_uint_gt(max, 20 * 1024);
    ck_assert_uint_lt(max, 32 * 1024);
    memset(big, 'x', max + 1);
    ck_assert_int_eq(llmgw_shmtab_set(t, "k", 1, big, max + 1, LATER),
                     APR_ENOSPC);
    ck_assert_int_eq(llmgw_shmtab_set(t, "k", 1, big, max, LATER),
                     APR_SUCCESS);
    ck_assert_uint_eq(strlen(get(t, "k", NOW)), max);
    /* Big items in turn: each fits, the ring wraps around them. */
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(llmgw_shmtab_set(t, "k", 1, big, max - i * 100,
                                          LATER), APR_SUCCESS);
        ck_assert_uint_eq(strlen(get(t, "k", NOW)), max - i * 100);
    }
    free(big);
}
END_TEST

Suite *shmtab_suite(void)
{
    Suite *s = suite_create("shmtab");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, test_pool_setup, test_pool_teardown);
    tcase_add_test(tc, set_get_del);
    tcase_add_test(tc, expiry);
    tcase_add_test(tc, ring_drops_oldest);
    tcase_add_test(tc, full_index);
    tcase_add_test(tc, sizes);
    suite_add_tcase(s, tc);
    return s;
}
