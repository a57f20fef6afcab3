/* test_shmtab.c: the shared-memory table: get/set/del, replacing,
 * expiry, the ring dropping the oldest, full probe windows, sizes. */
#include <pthread.h>
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

    char *pval;
    apr_size_t plen;
    apr_status_t peeked = llmgw_shmtab_peek(t, key, strlen(key), now,
                                            test_pool, &pval, &plen);

    /* Without the lock or with it: the same answer. */
    if (llmgw_shmtab_get(t, key, strlen(key), now, test_pool, &val, &len)
        != APR_SUCCESS) {
        ck_assert_int_eq(peeked, APR_NOTFOUND);
        return NULL;
    }
    ck_assert_int_eq(peeked, APR_SUCCESS);
    ck_assert_uint_eq(plen, len);
    ck_assert_mem_eq(pval, val, len);
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

/* Readers without the lock beside a writer that keeps overwriting: a
 * value read is always one that was stored, whole. A value is one
 * character repeated, its length fixed by the key and that character. */
#define RACE_KEYS 64
#define RACE_ROUNDS 20000

struct race {
    llmgw_shmtab_t *t;
    volatile int done;
    long hits, torn;
};

static apr_size_t race_len(int k, char c)
{
    return 40 + (apr_size_t)((k * 7 + c) % 300);
}

static void *race_writer(void *arg)
{
    struct race *r = arg;
    char key[16], val[400];
    int i;

    for (i = 0; i < RACE_ROUNDS; i++) {
        int k = i % RACE_KEYS;
        char c = (char)('a' + i % 26);
        apr_size_t n = race_len(k, c);

        snprintf(key, sizeof(key), "k%d", k);
        memset(val, c, n);
        llmgw_shmtab_set(r->t, key, strlen(key), val, n, LATER);
    }
    r->done = 1;
    return NULL;
}

static void *race_reader(void *arg)
{
    struct race *r = arg;
    apr_pool_t *p;
    char key[16];
    int i = 0;

    apr_pool_create(&p, NULL);
    while (!r->done) {
        int k = i++ % RACE_KEYS;
        char *v;
        apr_size_t n, j;

        snprintf(key, sizeof(key), "k%d", k);
        if (llmgw_shmtab_peek(r->t, key, strlen(key), NOW, p, &v, &n)
            == APR_SUCCESS) {
            int ok = n == race_len(k, v[0]);

            for (j = 0; ok && j < n; j++) {
                ok = v[j] == v[0];
            }
            __atomic_add_fetch(ok ? &r->hits : &r->torn, 1,
                               __ATOMIC_RELAXED);
        }
        if (i % 1000 == 0) {
            apr_pool_clear(p);
        }
    }
    apr_pool_destroy(p);
    return NULL;
}

START_TEST(peek_beside_writer)
{
    struct race r = { table(16 * 1024, 256), 0, 0, 0 };
    pthread_t w, rd[2];
    int i;

    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_create(&rd[i], NULL, race_reader, &r), 0);
    }
    ck_assert_int_eq(pthread_create(&w, NULL, race_writer, &r), 0);
    pthread_join(w, NULL);
    for (i = 0; i < 2; i++) {
        pthread_join(rd[i], NULL);
    }
    ck_assert_int_eq(r.torn, 0);
    ck_assert_int_gt(r.hits, 0);
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
    tcase_add_test(tc, peek_beside_writer);
    suite_add_tcase(s, tc);
    return s;
}
