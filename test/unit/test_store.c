/* test_store.c: the shm store's operations (get, set, the lease a claim
 * takes and a settle ends) and coalescing's protocol over it, as the glue
 * drives them: a leader, stream and plain followers, a failed leader, no
 * progress, a log line through the core's callback. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <apr_global_mutex.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "llmgw_coalesce.h"
#include "llmgw_log.h"
#include "llmgw_store.h"
#include "test_core.h"

/* An shm store of 1 MB with its own segment and locks, as post_config and
 * child_init make them. */
static llmgw_store_t *shm_store(void)
{
    static char *const args[] = { "shm", "size=1M", "max-item=64K", "ttl=60" };
    llmgw_store_t *st;
    apr_shm_t *shm;
    apr_global_mutex_t **m;
    int i, n;

    ck_assert_ptr_null(llmgw_store_create(test_pool, 4, args, &st));
    n = llmgw_store_shards(st);
    ck_assert_int_ge(n, 1);
    ck_assert_int_eq(
        apr_shm_create(&shm, llmgw_store_shm_bytes(st), NULL, test_pool),
        APR_SUCCESS);
    m = apr_pcalloc(test_pool, n * sizeof(*m));
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(
            apr_global_mutex_create(&m[i], NULL, APR_LOCK_DEFAULT, test_pool),
            APR_SUCCESS);
    }
    ck_assert_ptr_null(
        llmgw_store_shm_attach(st, test_pool, apr_shm_baseaddr_get(shm), m));
    ck_assert_int_eq(llmgw_store_child_init(st, test_pool, 4), APR_SUCCESS);
    return st;
}

/* The shm store in a child that also made its coalescing ready, as
 * child_init leaves the two. */
static llmgw_store_t *coalesce_store(void)
{
    llmgw_coalesce_child_init();
    return shm_store();
}

/* Fail unless the len bytes at got are want's. */
static void same(const char *got, apr_size_t len, const char *want)
{
    ck_assert_uint_eq(len, strlen(want));
    ck_assert(memcmp(got, want, len) == 0);
}

START_TEST(store_claim_lease_settle)
{
    llmgw_store_t *st = shm_store();
    char *val;
    apr_size_t len;

    /* Nobody has it: we lead, and the lease is no answer to anyone. */
    ck_assert_int_eq(
        llmgw_store_claim(st, test_pool, "k", "gen1", 0, &val, &len),
        APR_NOTFOUND);
    ck_assert_int_eq(llmgw_store_get(st, test_pool, "k", &val, &len),
                     APR_NOTFOUND);
    /* Another asks: our generation's name. */
    ck_assert_int_eq(
        llmgw_store_claim(st, test_pool, "k", "gen2", 0, &val, &len),
        APR_EEXIST);
    same(val, len, "gen1");
    /* The answer replaces the lease. */
    ck_assert_int_eq(llmgw_store_settle(st, test_pool, "k", "answer", 6),
                     APR_SUCCESS);
    ck_assert_int_eq(
        llmgw_store_claim(st, test_pool, "k", "gen3", 0, &val, &len),
        APR_SUCCESS);
    same(val, len, "answer");
    /* A leader that failed removes its lease: the next one leads. */
    llmgw_store_claim(st, test_pool, "j", "gen4", 0, &val, &len);
    ck_assert_int_eq(llmgw_store_settle(st, test_pool, "j", NULL, 0),
                     APR_SUCCESS);
    ck_assert_int_eq(
        llmgw_store_claim(st, test_pool, "j", "gen5", 0, &val, &len),
        APR_NOTFOUND);
    /* An answer bigger than max-item is not kept, the lease goes. */
    {
        apr_size_t big = st->max_item + 1;
        char *text = apr_pcalloc(test_pool, big);

        ck_assert_int_eq(llmgw_store_set(st, test_pool, "b", text, big, 0),
                         APR_ENOSPC);
        ck_assert_int_eq(llmgw_store_settle(st, test_pool, "j", text, big),
                         APR_SUCCESS);
        ck_assert_int_eq(
            llmgw_store_claim(st, test_pool, "j", "gen6", 0, &val, &len),
            APR_NOTFOUND);
    }
}
END_TEST

START_TEST(store_options_are_checked)
{
    static const struct {
        int argc;
        char *argv[4];
        const char *err;
    } bad[] = {
        { 2, { "shm", "ttl=soon" }, "LLMCache ttl: 'soon' is not" },
        { 2, { "shm", "ttl=0" }, "LLMCache ttl: '0' is not" },
        { 2, { "shm", "ttl=2592001" }, "LLMCache ttl" },
        { 2, { "shm", "size=12x" }, "LLMCache size: '12x' is not a size" },
        { 2, { "shm", "timeout=5" }, "unknown option 'timeout=5'" },
        { 3, { "memcache", "h:1", "size=1M" }, "unknown option 'size=1M'" },
        { 2, { "memcache", "ttl=5" }, "needs a server list" },
        { 3, { "shm", "size=1M", "max-item=512K" }, "an eighth of size" },
        { 1, { "redis" }, "unknown store 'redis'" },
    };
    llmgw_store_t *st;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *err =
            llmgw_store_create(test_pool, bad[i].argc, bad[i].argv, &st);

        ck_assert_msg(err && strstr(err, bad[i].err), "#%zu: %s", i,
                      err ? err : "(accepted)");
    }
    ck_assert_ptr_null(llmgw_store_create(
        test_pool, 3, (char *[]){ "memcache", "127.0.0.1:1", "timeout=100" },
        &st));
    ck_assert_int_eq(apr_time_as_msec(st->timeout), 100);
}
END_TEST

/* Joins the request of key for at most 5 s (*val, *len: the cached answer
 * when it is LLMGW_CO_CACHED). */
static llmgw_co_role_t join5(apr_pool_t *p, llmgw_store_t *st, const char *key,
                             int stream, llmgw_coalesce_t **co, char **val,
                             apr_size_t *len)
{
    return llmgw_coalesce_join(p, st, key, stream, apr_time_from_sec(5), co,
                               val, len);
}

/* key's leader (in lp) puts its first piece; a stream follower (in fp)
 * comes and is handed that piece. */
static void lead_then_follow(apr_pool_t *lp, apr_pool_t *fp, llmgw_store_t *st,
                             const char *key, const char *piece, apr_size_t n,
                             llmgw_coalesce_t **lead, llmgw_coalesce_t **sf)
{
    char *val, *data;
    apr_size_t len;

    ck_assert_int_eq(join5(lp, st, key, 1, lead, &val, &len), LLMGW_CO_LEADER);
    llmgw_coalesce_put(*lead, piece, n, 1);
    ck_assert_int_eq(join5(fp, st, key, 1, sf, &val, &len), LLMGW_CO_FOLLOW);
    ck_assert_int_eq(llmgw_coalesce_next(*sf, &data, &len), APR_SUCCESS);
    ck_assert_int_eq(len, n);
    ck_assert(memcmp(data, piece, n) == 0);
}

/* A leader with two followers: a stream one tails the pieces as they
 * come, a plain one waits for the answer; afterwards it is cached. */
START_TEST(coalesce_leader_and_followers)
{
    llmgw_store_t *st = coalesce_store();
    llmgw_coalesce_t *lead, *sf, *pf;
    char *val, *data;
    apr_size_t len;

    lead_then_follow(test_pool, test_pool, st, "key", "{\"n\":0}", 7, &lead,
                     &sf);
    llmgw_coalesce_put(lead, "{\"n\":1}", 7, 2);
    ck_assert_int_eq(llmgw_coalesce_next(sf, &data, &len), APR_SUCCESS);
    ck_assert(memcmp(data, "{\"n\":1}", 7) == 0);
    llmgw_coalesce_end(lead, 1, "RECORD", 6);
    ck_assert_int_eq(llmgw_coalesce_next(sf, &data, &len), APR_EOF);
    /* Late, and plain: the answer, from the cache. */
    ck_assert_int_eq(join5(test_pool, st, "key", 0, &pf, &val, &len),
                     LLMGW_CO_CACHED);
    same(val, len, "RECORD");
}
END_TEST

/* ASan's quarantine keeps what pools free for a while: there the data
 * size grows whatever the pools do, and is not checked. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#elif defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#endif
#ifdef UNDER_ASAN
#define GROWTH_CHECKED 0
#else
#define GROWTH_CHECKED 1
#endif

/* The process's data memory in bytes (/proc/self/statm's data field,
 * which counts what APR's pools take, however they take it). */
static size_t heap_in_use(void)
{
    unsigned long f[6] = { 0 };
    FILE *fp = fopen("/proc/self/statm", "r");

    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fscanf(fp, "%lu %lu %lu %lu %lu %lu", &f[0], &f[1], &f[2],
                            &f[3], &f[4], &f[5]),
                     6);
    fclose(fp);
    return f[5] * (size_t)sysconf(_SC_PAGESIZE);
}

/* A long stream, shared: neither the leader's pool nor the follower's
 * grows with each piece (20000 pieces of 300 bytes would be 6 MB). */
START_TEST(coalesce_long_stream_keeps_pools_small)
{
    llmgw_store_t *st = coalesce_store();
    llmgw_coalesce_t *lead, *sf;
    apr_pool_t *lp, *fp;
    char piece[300], *data;
    apr_size_t len, before;
    int i;

    apr_pool_create(&lp, test_pool);
    apr_pool_create(&fp, test_pool);
    memset(piece, 'a', sizeof(piece));
    lead_then_follow(lp, fp, st, "long", piece, sizeof(piece), &lead, &sf);
    before = heap_in_use();
    for (i = 0; i < 20000; i++) {
        llmgw_coalesce_put(lead, piece, sizeof(piece), (apr_size_t)i + 2);
        ck_assert_int_eq(llmgw_coalesce_next(sf, &data, &len), APR_SUCCESS);
        ck_assert_int_eq(len, sizeof(piece));
    }
    ck_assert_msg(!GROWTH_CHECKED || heap_in_use() < before + (1 << 20),
                  "grew by %zu bytes", heap_in_use() - before);
    llmgw_coalesce_end(lead, 1, NULL, 0);
    apr_pool_destroy(fp);
    apr_pool_destroy(lp);
}
END_TEST

/* A leader that fails: its followers hear of it, the next request leads. */
START_TEST(coalesce_failed_leader)
{
    llmgw_store_t *st = coalesce_store();
    llmgw_coalesce_t *lead, *sf, *next;
    char *val, *data;
    apr_size_t len;

    lead_then_follow(test_pool, test_pool, st, "f", "{}", 2, &lead, &sf);
    llmgw_coalesce_end(lead, 0, NULL, 0);
    ck_assert_int_eq(llmgw_coalesce_next(sf, &data, &len), APR_EGENERAL);
    ck_assert_int_eq(join5(test_pool, st, "f", 1, &next, &val, &len),
                     LLMGW_CO_LEADER);
}
END_TEST

/* An end mark that counts fewer pieces than a follower read (another
 * generation's, or damaged in the store): the stream is not known whole,
 * and ends as a failure, not as a good end (fuzz_coalesce found it). */
START_TEST(coalesce_end_mark_below_the_pieces_read)
{
    llmgw_store_t *st = coalesce_store();
    llmgw_coalesce_t *lead, *sf;
    char *gen, *data;
    apr_size_t len;

    lead_then_follow(test_pool, test_pool, st, "e", "{}", 2, &lead, &sf);
    llmgw_coalesce_put(lead, "{}", 2, 2);
    ck_assert_int_eq(llmgw_coalesce_next(sf, &data, &len), APR_SUCCESS);
    ck_assert_int_eq(
        llmgw_store_claim(st, test_pool, "e", "other", 0, &gen, &len),
        APR_EEXIST);
    ck_assert_int_eq(
        llmgw_store_set(st, test_pool,
                        apr_psprintf(test_pool, "e:%.*s:end", (int)len, gen),
                        "ok:1", 4, 0),
        APR_SUCCESS);
    ck_assert_int_eq(llmgw_coalesce_next(sf, &data, &len), APR_EGENERAL);
    llmgw_coalesce_end(lead, 0, NULL, 0);
}
END_TEST

static int lines_logged;
static char last_line[256];

static int log_on(apr_pool_t *p, int level)
{
    return level <= LLMGW_LOG_INFO;
}

static void log_keep(apr_pool_t *p, const char *file, int line, int level,
                     apr_status_t rv, const char *msg)
{
    lines_logged++;
    apr_cpystrn(last_line, msg, sizeof(last_line));
}

/* A leader that makes no progress: a plain follower goes alone after its
 * timeout, and says so through the core's log callback. */
START_TEST(coalesce_no_progress_goes_alone)
{
    llmgw_store_t *st = coalesce_store();
    llmgw_coalesce_t *lead, *pf;
    char *val;
    apr_size_t len;
    apr_time_t t0;

    llmgw_log_set(log_on, log_keep);
    lines_logged = 0;
    ck_assert_int_eq(join5(test_pool, st, "slow", 0, &lead, &val, &len),
                     LLMGW_CO_LEADER);
    t0 = apr_time_now();
    ck_assert_int_eq(llmgw_coalesce_join(test_pool, st, "slow", 0,
                                         apr_time_from_msec(60), &pf, &val,
                                         &len),
                     LLMGW_CO_ALONE);
    ck_assert_int_ge(apr_time_now() - t0, apr_time_from_msec(60));
    ck_assert_int_eq(lines_logged, 1);
    ck_assert_msg(strstr(last_line, "LLMGW0301: coalescing: no progress"),
                  "%s", last_line);
    llmgw_log_set(NULL, NULL);
}
END_TEST

Suite *store_suite(void)
{
    return test_suite(
        "store", "shm", 0,
        TESTS(store_claim_lease_settle, store_options_are_checked,
              coalesce_leader_and_followers,
              coalesce_long_stream_keeps_pools_small, coalesce_failed_leader,
              coalesce_end_mark_below_the_pieces_read,
              coalesce_no_progress_goes_alone));
}
