/* test_shmtab.c: the shared-memory table: get/set/del, replacing,
 * expiry, the ring dropping the oldest, full probe windows, sizes, hash
 * collisions, and lock-free reads beside a writer. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
    apr_status_t peeked =
        llmgw_shmtab_peek(t, key, strlen(key), now, test_pool, &pval, &plen);

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
            ck_assert_int_lt(i, 1990); /* the newest are all there */
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

    ck_assert_ptr_null(
        llmgw_shmtab_init(apr_pcalloc(test_pool, 256), 256, 64));
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
        ck_assert_int_eq(
            llmgw_shmtab_set(t, "k", 1, big, max - i * 100, LATER),
            APR_SUCCESS);
        ck_assert_uint_eq(strlen(get(t, "k", NOW)), max - i * 100);
    }
    free(big);
}
END_TEST

/* Two different keys of one length whose hashes agree in all the table
 * compares before the keys themselves (the upper 32 bits): a birthday
 * search over generated keys, the same every run. */
#define COLLIDE_BITS 20

/* Numbers scattered over 32 bits: FNV-1a's upper bits spread decimal
 * counters poorly, so those collide only after some 650000 keys. */
static void key_of(char *key, apr_size_t size, apr_uint32_t i)
{
    snprintf(key, size, "key-%08x", (unsigned)(i * 2654435761u));
}

static void colliding_keys(char *a, char *b, apr_size_t size)
{
    apr_uint32_t *seen = calloc((apr_size_t)1 << COLLIDE_BITS, sizeof(*seen));
    apr_uint32_t mask = ((apr_uint32_t)1 << COLLIDE_BITS) - 1, i;
    char key[32];

    ck_assert_ptr_nonnull(seen);
    /* An open-addressed set of the keys' numbers + 1, by their upper
     * hash; ~80000 keys give a collision of 32 bits on average (this
     * hash: at the 59273rd). */
    for (i = 0; i < mask / 2; i++) {
        apr_uint32_t h, at;

        key_of(key, sizeof(key), i);
        h = (apr_uint32_t)(llmgw_shmtab_hash(key, strlen(key)) >> 32);
        for (at = h & mask; seen[at]; at = (at + 1) & mask) {
            char other[32];

            key_of(other, sizeof(other), seen[at] - 1);
            if ((apr_uint32_t)(llmgw_shmtab_hash(other, strlen(other)) >> 32)
                == h) {
                snprintf(a, size, "%s", other);
                snprintf(b, size, "%s", key);
                free(seen);
                return;
            }
        }
        seen[at] = i + 1;
    }
    free(seen);
    ck_abort_msg("no two keys collide in %u", (unsigned)(mask / 2));
}

/* A table of exactly PROBES (8) slots: every key's probes cover them all,
 * so two keys always meet whatever their hashes' low bits. */
static llmgw_shmtab_t *tiny_table(void)
{
    llmgw_shmtab_t *t = table(4096, 493), *probe = table(4096, 493);
    char key[16];
    int i;

    /* Nine keys in it leave eight: it has eight slots, no more. */
    for (i = 0; i < 9; i++) {
        snprintf(key, sizeof(key), "n%d", i);
        ck_assert_int_eq(set(probe, key, key, LATER), APR_SUCCESS);
    }
    ck_assert_uint_eq(llmgw_shmtab_count(probe), 8);
    return t;
}

/* Keys that collide are still two entries: a look-up never returns the
 * other key's value, a removal never removes the other key. */
START_TEST(hash_collision)
{
    char a[32], b[32];
    llmgw_shmtab_t *t;

    colliding_keys(a, b, sizeof(a));
    ck_assert_str_ne(a, b);
    ck_assert_uint_eq(strlen(a), strlen(b));
    ck_assert_uint_eq(llmgw_shmtab_hash(a, strlen(a)) >> 32,
                      llmgw_shmtab_hash(b, strlen(b)) >> 32);

    t = tiny_table();
    ck_assert_int_eq(set(t, a, "value of a", LATER), APR_SUCCESS);
    ck_assert_ptr_null(get(t, b, NOW));
    ck_assert_int_eq(llmgw_shmtab_del(t, b, strlen(b)), APR_NOTFOUND);
    ck_assert_str_eq(get(t, a, NOW), "value of a");
    ck_assert_int_eq(set(t, b, "value of b", LATER), APR_SUCCESS);
    ck_assert_str_eq(get(t, a, NOW), "value of a");
    ck_assert_str_eq(get(t, b, NOW), "value of b");
    ck_assert_uint_eq(llmgw_shmtab_count(t), 2);
    /* Replacing one leaves the other. */
    ck_assert_int_eq(set(t, b, "b again", LATER), APR_SUCCESS);
    ck_assert_str_eq(get(t, a, NOW), "value of a");
    ck_assert_str_eq(get(t, b, NOW), "b again");
    ck_assert_uint_eq(llmgw_shmtab_count(t), 2);
    ck_assert_int_eq(llmgw_shmtab_del(t, a, strlen(a)), APR_SUCCESS);
    ck_assert_ptr_null(get(t, a, NOW));
    ck_assert_str_eq(get(t, b, NOW), "b again");
    ck_assert_int_eq(llmgw_shmtab_del(t, b, strlen(b)), APR_SUCCESS);
    ck_assert_ptr_null(get(t, b, NOW));
    ck_assert_uint_eq(llmgw_shmtab_count(t), 0);
}
END_TEST

/* A lock-free read with the writer's turn in the middle of its copy, made
 * to happen every time: the record's value spans pages, one of them is
 * made unreadable, and the fault it causes in the reader's copy runs the
 * writer (who overwrites the record) before the copy goes on. */
struct tear {
    llmgw_shmtab_t *t;
    char *page;
    long pagesize;
    int faults;
    int wrap;   /* the writer goes past the record, or not */
    char *fill; /* the writer's values, made beforehand */
    apr_size_t fill_len;
};

static struct tear tear;

static void tear_writer(int sig, siginfo_t *si, void *uctx)
{
    char *at = si->si_addr;
    int i;

    (void)uctx;
    if (tear.faults || at < tear.page || at >= tear.page + tear.pagesize) {
        signal(sig, SIG_DFL); /* a real fault: crash on return */
        return;
    }
    tear.faults++;
    mprotect(tear.page, (size_t)tear.pagesize, PROT_READ | PROT_WRITE);
    /* Three values of half the ring each go round it and over the record
     * being read; a small one does not reach it. */
    for (i = 0; i < (tear.wrap ? 3 : 1); i++) {
        char key[8];

        snprintf(key, sizeof(key), "w%d", i);
        llmgw_shmtab_set(tear.t, key, strlen(key), tear.fill,
                         tear.wrap ? tear.fill_len : 100, LATER);
    }
}

static void peek_with_writer_inside(int wrap)
{
    const apr_size_t size = 64 * 1024;
    long ps = sysconf(_SC_PAGESIZE);
    char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    apr_size_t vlen = 3 * (apr_size_t)ps, i;
    struct sigaction sa, old;
    char *val = malloc(vlen), *v, *at;
    apr_size_t n;
    apr_status_t rv;

    ck_assert_ptr_ne(mem, MAP_FAILED);
    memset(&tear, 0, sizeof(tear));
    tear.t = llmgw_shmtab_init(mem, size, 256);
    ck_assert_ptr_nonnull(tear.t);
    tear.pagesize = ps;
    tear.wrap = wrap;
    tear.fill_len = llmgw_shmtab_max_item(tear.t, 2);
    tear.fill = malloc(tear.fill_len);
    memset(tear.fill, 'b', tear.fill_len);
    memset(val, 'a', vlen);
    ck_assert_int_eq(llmgw_shmtab_set(tear.t, "victim", 6, val, vlen, LATER),
                     APR_SUCCESS);
    /* The value's bytes in the ring; the page to fault on lies within
     * them, a page after their start. */
    at = memmem(mem, size, "victimaaaa", 10);
    ck_assert_ptr_nonnull(at);
    at += 6;
    tear.page = (char *)(((apr_uintptr_t)at + (apr_uintptr_t)ps - 1)
                         & ~((apr_uintptr_t)ps - 1))
                + ps;
    ck_assert(tear.page + ps <= at + vlen);

    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = tear_writer;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGSEGV, &sa, &old), 0);
    ck_assert_int_eq(mprotect(tear.page, (size_t)ps, PROT_NONE), 0);
    rv = llmgw_shmtab_peek(tear.t, "victim", 6, NOW, test_pool, &v, &n);
    sigaction(SIGSEGV, &old, NULL);

    ck_assert_int_eq(tear.faults, 1); /* the writer did run inside */
    if (wrap) {
        ck_assert_msg(rv == APR_NOTFOUND, "a torn copy was returned");
        /* The table goes on: the writer's newest value is whole. */
        ck_assert_int_eq(
            llmgw_shmtab_peek(tear.t, "w2", 2, NOW, test_pool, &v, &n),
            APR_SUCCESS);
        ck_assert_uint_eq(n, tear.fill_len);
        ck_assert_int_eq(v[0], 'b');
        ck_assert_int_eq(v[n - 1], 'b');
    }
    else {
        ck_assert_int_eq(rv, APR_SUCCESS);
        ck_assert_uint_eq(n, vlen);
        for (i = 0; i < n; i++) {
            ck_assert_int_eq(v[i], 'a');
        }
    }
    free(tear.fill);
    free(val);
    munmap(mem, size);
}

START_TEST(peek_torn_by_writer)
{
    peek_with_writer_inside(1);
}
END_TEST

START_TEST(peek_beside_unrelated_write)
{
    peek_with_writer_inside(0);
}
END_TEST

/* Readers without the lock beside a writer that keeps overwriting: a
 * value read is always one that was stored, whole. A value is one
 * character repeated, its length fixed by the key and that character.
 * How the threads interleave is up to the scheduler; that the readers run
 * at all is not: every RACE_SYNC writes the writer waits until each
 * reader has read something (the key just written is there to be found). */
#define RACE_KEYS 64
#define RACE_ROUNDS 20000
#define RACE_READERS 2
#define RACE_SYNC 1000 /* writes between waits for the readers */

struct race {
    llmgw_shmtab_t *t;
    volatile int done;
    long hits[RACE_READERS], torn;
};

struct reader {
    struct race *r;
    int id;
};

static apr_size_t race_len(int k, char c)
{
    return 40 + (apr_size_t)((k * 7 + c) % 300);
}

static long hits_of(struct race *r, int id)
{
    return __atomic_load_n(&r->hits[id], __ATOMIC_ACQUIRE);
}

static void *race_writer(void *arg)
{
    struct race *r = arg;
    char key[16], val[400];
    int i, j;

    for (i = 0; i < RACE_ROUNDS; i++) {
        int k = i % RACE_KEYS;
        char c = (char)('a' + i % 26);
        apr_size_t n = race_len(k, c);

        snprintf(key, sizeof(key), "k%d", k);
        memset(val, c, n);
        llmgw_shmtab_set(r->t, key, strlen(key), val, n, LATER);
        if (i % RACE_SYNC == RACE_SYNC - 1) {
            for (j = 0; j < RACE_READERS; j++) {
                long seen = hits_of(r, j);

                while (hits_of(r, j) == seen) {
                    sched_yield();
                }
            }
        }
    }
    r->done = 1;
    return NULL;
}

static void *race_reader(void *arg)
{
    struct reader *rd = arg;
    struct race *r = rd->r;
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
            __atomic_add_fetch(ok ? &r->hits[rd->id] : &r->torn, 1,
                               __ATOMIC_RELEASE);
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
    struct race r = { table(16 * 1024, 256), 0, { 0 }, 0 };
    struct reader rds[RACE_READERS];
    pthread_t w, rd[RACE_READERS];
    int i;

    for (i = 0; i < RACE_READERS; i++) {
        rds[i].r = &r;
        rds[i].id = i;
        ck_assert_int_eq(pthread_create(&rd[i], NULL, race_reader, &rds[i]),
                         0);
    }
    ck_assert_int_eq(pthread_create(&w, NULL, race_writer, &r), 0);
    pthread_join(w, NULL);
    for (i = 0; i < RACE_READERS; i++) {
        pthread_join(rd[i], NULL);
    }
    ck_assert_int_eq(r.torn, 0);
    for (i = 0; i < RACE_READERS; i++) {
        ck_assert_int_ge(r.hits[i], RACE_ROUNDS / RACE_SYNC);
    }
}
END_TEST

Suite *shmtab_suite(void)
{
    /* Threads and a search of some 60000 keys: slow on a loaded machine,
     * not a measure of anything. */
    return test_suite("shmtab", "core", 60,
                      TESTS(set_get_del, expiry, ring_drops_oldest, full_index,
                            sizes, hash_collision, peek_torn_by_writer,
                            peek_beside_unrelated_write, peek_beside_writer));
}
