/* test_health.c: the shared health table: members by name, probe facts
 * stored and aged, models and hints, the breaker published across
 * processes (one trial for all of them), admission under concurrency,
 * readers beside the probe writer, and what mod_proxy is to mirror. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apr_strings.h>

#include "llmgw_health.h"
#include "llmgw_seqlock.h"
#include "test_core.h"

#define T0 APR_INT64_C(1700000000000000)
#define MS(n) ((apr_time_t)(n)*1000)
#define SEC(n) apr_time_from_sec(n)

static llmgw_health_params_t hparams(void)
{
    llmgw_health_params_t hp;

    llmgw_health_params_default(&hp);
    return hp;
}

static llmgw_breaker_params_t bparams(unsigned n, unsigned m)
{
    return test_breaker_params(n, m, SEC(60));
}

static llmgw_health_t *table(unsigned n)
{
    apr_size_t size = llmgw_health_size(n);
    llmgw_health_t *t =
        llmgw_health_init(apr_pcalloc(test_pool, size), size, n, T0);

    ck_assert_ptr_nonnull(t);
    return t;
}

static llmgw_probe_t *probe(llmgw_probe_kind_t kind, int status,
                            const char *body)
{
    llmgw_probe_t *r =
        llmgw_probe_parse(test_pool, kind, status, body, strlen(body));

    ck_assert_ptr_nonnull(r);
    return r;
}

/* What the table tells of member i at now (default parameters). */
static llmgw_member_view_t member(llmgw_health_t *t, int i, apr_time_t now)
{
    llmgw_health_params_t hp = hparams();
    llmgw_member_view_t v;

    llmgw_health_member(t, i, now, &hp, &v);
    return v;
}

/* Stores p as member i's latest probe at now, and returns what the
 * table then tells of the member. */
static llmgw_member_view_t stored(llmgw_health_t *t, int i, llmgw_probe_t *p,
                                  apr_time_t now)
{
    llmgw_health_store(t, i, p, now);
    return member(t, i, now);
}

/* llama.cpp's /slots answer for two slots, each busy or not. */
static llmgw_probe_t *two_slots(int busy0, int busy1)
{
    return probe(LLMGW_PROBE_LLAMACPP_SLOTS, 200,
                 apr_psprintf(test_pool,
                              "[{\"id\":0,\"is_processing\":%s},"
                              "{\"id\":1,\"is_processing\":%s}]",
                              busy0 ? "true" : "false",
                              busy1 ? "true" : "false"));
}

/* A table in memory shared with forked children. */
static llmgw_health_t *shared_table(unsigned n, void **mem, apr_size_t *size)
{
    llmgw_health_t *t;

    *size = llmgw_health_size(n) + 4096;
    *mem = mmap(NULL, *size, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(*mem, MAP_FAILED);
    t = llmgw_health_init(*mem, llmgw_health_size(n), n, T0);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Races run for a while rather than a number of rounds: on a loaded
 * machine two children share the CPUs only now and then. */
#define RACE_USEC 300000

static int racing(apr_time_t start)
{
    return apr_time_now() - start < RACE_USEC;
}

/* Counters the children share, after the table. */
typedef struct {
    volatile int go;
    long claims;
    long outstanding;
    long violations;
    long admitted;
    long active;
    long canary; /* bumped without atomics */
    long ticks;  /* the same bumps, atomically */
} race_t;

/* A race proves something only if two children ran at the same time,
 * which a loaded machine may not allow: each child also bumps a counter
 * without atomics, and a bump lost shows that they overlapped. Rounds
 * are run until one did (at most RACE_ROUNDS). */
#define RACE_ROUNDS 8

static void tick(race_t *r)
{
    long c = __atomic_load_n(&r->canary, __ATOMIC_RELAXED);

    __atomic_store_n(&r->canary, c + 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&r->ticks, 1, __ATOMIC_RELAXED);
}

static int overlapped(const race_t *r)
{
    return r->canary != r->ticks;
}

static race_t *race_area(void *mem, apr_size_t size)
{
    return (race_t *)((char *)mem + size - 4096);
}

static void run_children(int n, void (*fn)(int, void *), void *arg, race_t *r)
{
    pid_t pids[16];
    int i, status;

    for (i = 0; i < n; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE)) {
            }
            fn(i, arg);
            _exit(0);
        }
    }
    __atomic_store_n(&r->go, 1, __ATOMIC_RELEASE);
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

START_TEST(members_by_name)
{
    apr_size_t size = llmgw_health_size(2);
    void *mem = apr_pcalloc(test_pool, size);
    llmgw_health_t *t = llmgw_health_init(mem, size, 2, T0);
    char *longname = apr_pcalloc(test_pool, LLMGW_HEALTH_NAME_MAX + 1);

    ck_assert_ptr_null(llmgw_health_init(mem, size - 1, 2, T0));
    ck_assert_ptr_null(llmgw_health_init(mem, size, 0, T0));
    t = llmgw_health_init(mem, size, 2, T0);
    ck_assert_ptr_eq(llmgw_health_attach(mem, size), t);
    ck_assert_ptr_null(llmgw_health_attach(mem, size - 1));
    ck_assert_ptr_null(
        llmgw_health_attach(apr_pcalloc(test_pool, size), size));
    ck_assert_int_eq(llmgw_health_add(t, "http://127.0.0.1:11434"), 0);
    ck_assert_int_eq(llmgw_health_add(t, "http://127.0.0.1:11435"), 1);
    ck_assert_int_eq(llmgw_health_add(t, "http://127.0.0.1:11434"), 0);
    ck_assert_int_eq(llmgw_health_add(t, "http://127.0.0.1:11436"), -1);
    ck_assert_int_eq(llmgw_health_add(t, ""), -1);
    memset(longname, 'a', LLMGW_HEALTH_NAME_MAX);
    ck_assert_int_eq(llmgw_health_add(t, longname), -1);
    ck_assert_int_eq(llmgw_health_find(t, "http://127.0.0.1:11435"), 1);
    ck_assert_int_eq(llmgw_health_find(t, "http://127.0.0.1:1143"), -1);
    ck_assert_uint_eq(llmgw_health_count(t), 2);
    ck_assert_str_eq(llmgw_health_name(t, 1), "http://127.0.0.1:11435");
    ck_assert_ptr_null(llmgw_health_name(t, 2));
    ck_assert_ptr_null(llmgw_health_name(t, -1));
    /* A name of exactly the largest size that fits. */
    t = table(1);
    longname[LLMGW_HEALTH_NAME_MAX - 1] = '\0';
    ck_assert_int_eq(llmgw_health_add(t, longname), 0);
    ck_assert_int_eq(llmgw_health_find(t, longname), 0);
}
END_TEST

/* Members added at run time take the entries left free, and one
 * removed and added again takes its entry back as new. */
START_TEST(members_joined_at_run_time)
{
    llmgw_health_t *t = table(3);
    llmgw_breaker_params_t bp = bparams(1, 1);
    llmgw_health_params_t hp = hparams();
    llmgw_probe_kind_t kinds[LLMGW_PROBE_SET_MAX] = {
        LLMGW_PROBE_LLAMACPP_HEALTH, LLMGW_PROBE_LLAMACPP_SLOTS
    };
    llmgw_health_model_t models[4];
    llmgw_member_view_t v;
    unsigned f;

    ck_assert_int_eq(llmgw_health_add(t, "conf"), 0);
    ck_assert_uint_eq(llmgw_health_free(t), 2);
    ck_assert_int_eq(llmgw_health_join(t, "late", T0), 1);
    ck_assert_int_eq(llmgw_health_find(t, "late"), 1);
    ck_assert_str_eq(llmgw_health_name(t, 1), "late");
    ck_assert_uint_eq(llmgw_health_epoch(t, 1), 1);
    ck_assert_int_eq(llmgw_health_join(t, "later", T0), 2);
    ck_assert_int_eq(llmgw_health_join(t, "full", T0), -1);
    ck_assert_int_eq(llmgw_health_join(t, "", T0), -1);
    ck_assert_uint_eq(llmgw_health_free(t), 0);
    /* Its own probe set, for every process. */
    ck_assert_int_eq(llmgw_health_probes(t, 1, kinds), 0);
    llmgw_health_set_probes(t, 1, kinds, 2);
    kinds[0] = kinds[1] = LLMGW_PROBE_OLLAMA_PS;
    ck_assert_int_eq(llmgw_health_probes(t, 1, kinds), 2);
    ck_assert_int_eq(kinds[0], LLMGW_PROBE_LLAMACPP_HEALTH);
    ck_assert_int_eq(kinds[1], LLMGW_PROBE_LLAMACPP_SLOTS);
    /* Open, a model loaded, a hint: all of it goes with a join again. */
    llmgw_health_store(
        t, 1,
        probe(LLMGW_PROBE_OLLAMA_PS, 200, "{\"models\":[{\"name\":\"m1\"}]}"),
        T0 + MS(1));
    llmgw_health_hint(t, 1, "m2", LLMGW_HINT_SERVED, T0 + MS(1));
    llmgw_health_event(t, 1, LLMGW_EV_HTTP_5XX, LLMGW_BR_NO_TRIAL, T0 + MS(2),
                       &bp, NULL, NULL);
    ck_assert_int_eq(llmgw_health_breaker(t, 1).state, LLMGW_BR_OPEN);
    ck_assert_int_eq(llmgw_health_models(t, 1, models, 4), 1);
    llmgw_health_model(t, 1, "m1", T0 + MS(2), &hp, &f);
    ck_assert_uint_eq(f, LLMGW_PM_LOADED);
    llmgw_health_model(t, 1, "m2", T0 + MS(2), &hp, &f);
    ck_assert_uint_eq(f, LLMGW_HM_SERVED);
    ck_assert_int_eq(llmgw_health_join(t, "late", T0 + MS(3)), 1);
    ck_assert_uint_eq(llmgw_health_epoch(t, 1), 2);
    ck_assert_int_eq(llmgw_health_breaker(t, 1).state, LLMGW_BR_CLOSED);
    ck_assert_int_eq(llmgw_health_models(t, 1, models, 4), 0);
    ck_assert_int_eq(llmgw_health_probes(t, 1, kinds), 0);
    llmgw_health_model(t, 1, "m1", T0 + MS(4), &hp, &f);
    ck_assert_uint_eq(f, 0);
    llmgw_health_model(t, 1, "m2", T0 + MS(4), &hp, &f);
    ck_assert_uint_eq(f, 0);
    llmgw_health_member(t, 1, T0 + MS(4), &hp, &v);
    ck_assert_int_eq(v.probe_state, LLMGW_HS_UNKNOWN);
    ck_assert_int_eq(v.probed_at, 0);
    /* A probe after it counts. */
    llmgw_health_store(
        t, 1,
        probe(LLMGW_PROBE_OLLAMA_PS, 200, "{\"models\":[{\"name\":\"m3\"}]}"),
        T0 + MS(5));
    ck_assert_int_eq(llmgw_health_models(t, 1, models, 4), 1);
    ck_assert_str_eq(models[0].name, "m3");
    llmgw_health_model(t, 1, "m3", T0 + MS(6), &hp, &f);
    ck_assert_uint_eq(f, LLMGW_PM_LOADED);
    /* add (at start) keeps the state of a name already there. */
    llmgw_health_event(t, 1, LLMGW_EV_HTTP_5XX, LLMGW_BR_NO_TRIAL, T0 + MS(7),
                       &bp, NULL, NULL);
    ck_assert_int_eq(llmgw_health_add(t, "late"), 1);
    ck_assert_int_eq(llmgw_health_breaker(t, 1).state, LLMGW_BR_OPEN);
    ck_assert_uint_eq(llmgw_health_epoch(t, 1), 2);
}
END_TEST

#define JOINERS 4
#define JOINS 64
#define JOIN_NAME 300 /* long: a torn copy has room to show */
#define JOIN_ROUNDS 3 /* rounds run at least */

/* Child i's name k: JOIN_NAME bytes of one letter, then its number. */
static const char *join_name(char *buf, int i, int k)
{
    memset(buf, 'a' + i, JOIN_NAME);
    apr_snprintf(buf + JOIN_NAME, 16, "%d", k);
    return buf;
}

/* Whether s is one of join_name's names, not part of one. */
static int whole_name(const char *s)
{
    int j;

    for (j = 0; j < JOIN_NAME; j++) {
        if (s[j] != s[0]) {
            return 0;
        }
    }
    return s[0] >= 'a' && s[0] < 'a' + JOINERS && s[JOIN_NAME] >= '0'
           && s[JOIN_NAME] <= '9';
}

/* Even children join their names, odd ones read every name published
 * meanwhile: whole, and found at its own index. */
static void join_or_read(int i, void *arg)
{
    llmgw_health_t *t = arg;
    race_t *r = race_area(t, llmgw_health_size(JOINERS / 2 * JOINS) + 4096);
    char buf[JOIN_NAME + 16];
    apr_time_t start = apr_time_now();
    int k, m;

    if (i % 2 == 0) {
        for (k = 0; k < JOINS; k++) {
            tick(r);
            if (llmgw_health_join(t, join_name(buf, i, k), T0) < 0) {
                __atomic_add_fetch(&r->violations, 1, __ATOMIC_RELAXED);
            }
        }
        return;
    }
    /* The newest entry first: its name is the one being written. */
    while (racing(start)) {
        int n = (int)llmgw_health_count(t);

        for (m = n - 1; m >= 0 && m >= n - 2; m--) {
            const char *n = llmgw_health_name(t, m);
            char copy[JOIN_NAME + 16];

            tick(r);
            if (!n) {
                continue;
            }
            apr_cpystrn(copy, n, sizeof(copy));
            if (!whole_name(copy) || llmgw_health_find(t, copy) != m) {
                __atomic_add_fetch(&r->violations, 1, __ATOMIC_RELAXED);
            }
        }
    }
}

START_TEST(joins_across_processes)
{
    unsigned n = JOINERS / 2 * JOINS;
    char buf[JOIN_NAME + 16];
    void *mem;
    apr_size_t size;
    llmgw_health_t *t;
    race_t *r;
    int round, i, k;

    for (round = 0; round < RACE_ROUNDS; round++) {
        t = shared_table(n, &mem, &size);
        r = race_area(mem, size);
        memset(r, 0, sizeof(*r));
        run_children(JOINERS, join_or_read, t, r);
        ck_assert_int_eq(r->violations, 0);
        ck_assert_uint_eq(llmgw_health_count(t), n);
        ck_assert_uint_eq(llmgw_health_free(t), 0);
        for (i = 0; i < JOINERS; i += 2) {
            for (k = 0; k < JOINS; k++) {
                int m = llmgw_health_find(t, join_name(buf, i, k));

                ck_assert_int_ge(m, 0);
                ck_assert_str_eq(llmgw_health_name(t, m), buf);
            }
        }
        /* Each round gives the window a few more chances: all of them
         * run, but only one needs to have overlapped. */
        k = overlapped(r);
        munmap(mem, size);
        if (k && round >= JOIN_ROUNDS) {
            break;
        }
    }
}
END_TEST

START_TEST(breaker_through_table)
{
    llmgw_health_t *t = table(2);
    llmgw_breaker_params_t bp = bparams(2, 1);
    llmgw_health_params_t hp = hparams();
    llmgw_breaker_t before, after;
    llmgw_member_view_t v;
    int token;

    llmgw_health_add(t, "a");
    llmgw_health_add(t, "b");
    ck_assert_int_eq(llmgw_health_event(t, 0, LLMGW_EV_HTTP_5XX,
                                        LLMGW_BR_NO_TRIAL, T0, &bp, &before,
                                        &after),
                     0);
    ck_assert_uint_eq(after.fails, 1);
    ck_assert_int_eq(llmgw_health_event(t, 0, LLMGW_EV_HTTP_5XX,
                                        LLMGW_BR_NO_TRIAL, T0 + 1, &bp,
                                        &before, &after),
                     1);
    ck_assert_int_eq(after.state, LLMGW_BR_OPEN);
    ck_assert_int_eq(llmgw_health_event(t, 5, LLMGW_EV_HTTP_5XX,
                                        LLMGW_BR_NO_TRIAL, T0, &bp, NULL,
                                        NULL),
                     -1);
    ck_assert_int_eq(llmgw_health_member(t, 0, T0 + MS(50), &hp, &v), 0);
    ck_assert_int_eq(v.state, LLMGW_HS_DOWN);
    ck_assert_int_eq(v.br_state, LLMGW_BR_OPEN);
    ck_assert_int_eq(v.trial_free, 0);
    ck_assert_uint_eq(llmgw_health_mirror_want(&v, 0), LLMGW_MIRROR_FAIL);
    ck_assert_int_eq(llmgw_health_member(t, 1, T0, &hp, &v), 0);
    ck_assert_int_eq(v.state, LLMGW_HS_READY);
    ck_assert_uint_eq(llmgw_health_mirror_want(&v, 1), 0);

    /* Back-off over: half-open, one trial. */
    ck_assert_int_eq(llmgw_health_claim(t, 0, T0 + MS(50), &bp, &token), 0);
    llmgw_health_member(t, 0, T0 + MS(101), &hp, &v);
    ck_assert_int_eq(v.br_state, LLMGW_BR_HALF_OPEN);
    ck_assert_int_eq(v.trial_free, 1);
    ck_assert_uint_eq(llmgw_health_mirror_want(&v, 0), LLMGW_MIRROR_DRAIN);
    ck_assert_int_eq(llmgw_health_claim(t, 0, T0 + MS(101), &bp, &token), 1);
    ck_assert_int_eq(llmgw_health_claim(t, 0, T0 + MS(101), &bp, &token), 0);
    llmgw_health_member(t, 0, T0 + MS(102), &hp, &v);
    ck_assert_int_eq(v.trial_free, 0);
    ck_assert_int_eq(llmgw_health_event(t, 0, LLMGW_EV_SUCCESS, token,
                                        T0 + MS(110), &bp, NULL, &after),
                     1);
    ck_assert_int_eq(after.state, LLMGW_BR_CLOSED);
    ck_assert_int_eq(llmgw_health_breaker(t, 0).state, LLMGW_BR_CLOSED);
    llmgw_health_member(t, 0, T0 + MS(110), &hp, &v);
    ck_assert_uint_eq(llmgw_health_mirror_want(&v, 1), 0);
}
END_TEST

/* Half-open: processes race for the trial and hand it back at once,
 * while others report what requests sent before it opened saw; at no
 * moment do two hold the trial (a report published without its
 * compare-and-swap would undo a claim made meanwhile). */
typedef struct {
    llmgw_health_t *t;
    race_t *r;
    int hand_back;
} trial_arg_t;

static void race_for_trial(int i, void *arg)
{
    trial_arg_t *a = arg;
    llmgw_breaker_params_t bp = bparams(1, 31);
    apr_time_t now = T0 + SEC(10), start = apr_time_now();
    llmgw_breaker_t b;
    volatile int spin;
    int k, token;

    (void)i;
    for (k = 0; racing(start); k++) {
        tick(a->r);
        if (a->hand_back) {
            /* News from a request sent before it opened: ignored, and
             * it must not undo a claim made meanwhile. */
            llmgw_health_event(a->t, 0,
                               k % 2 ? LLMGW_EV_SUCCESS : LLMGW_EV_HTTP_5XX,
                               LLMGW_BR_NO_TRIAL, now, &bp, NULL, NULL);
        }
        if (!llmgw_health_claim(a->t, 0, now, &bp, &token)) {
            continue;
        }
        __atomic_add_fetch(&a->r->claims, 1, __ATOMIC_RELAXED);
        if (__atomic_add_fetch(&a->r->outstanding, 1, __ATOMIC_ACQ_REL) > 1) {
            __atomic_add_fetch(&a->r->violations, 1, __ATOMIC_RELAXED);
        }
        if (!a->hand_back) {
            continue; /* keeps it: nobody else may get one */
        }
        /* Held a moment, as a request holds it: a second holder shows,
         * and so does a report that undid the claim meanwhile. */
        for (spin = 0; spin < 200; spin++) {
        }
        b = llmgw_health_breaker(a->t, 0);
        if (__atomic_load_n(&a->r->outstanding, __ATOMIC_ACQUIRE) > 1
            || !b.trial || (int)b.gen != token) {
            __atomic_add_fetch(&a->r->violations, 1, __ATOMIC_RELAXED);
        }
        __atomic_sub_fetch(&a->r->outstanding, 1, __ATOMIC_ACQ_REL);
        llmgw_health_event(a->t, 0, LLMGW_EV_CLIENT_ABORT, token, now, &bp,
                           NULL, NULL);
    }
}

/* A table in mem with one member, "m". */
static llmgw_health_t *one_member(void *mem)
{
    llmgw_health_t *t = llmgw_health_init(mem, llmgw_health_size(1), 1, T0);

    llmgw_health_add(t, "m");
    return t;
}

/* A table with member "m" half-open (as of T0 + 10 s) in mem. */
static llmgw_health_t *half_open_table(void *mem)
{
    llmgw_breaker_params_t bp = bparams(1, 31);
    llmgw_health_t *t = one_member(mem);

    llmgw_health_event(t, 0, LLMGW_EV_HTTP_5XX, LLMGW_BR_NO_TRIAL, T0, &bp,
                       NULL, NULL);
    return t;
}

/* Rounds of a race until one in which two children overlapped (at most
 * RACE_ROUNDS): each on a table fresh from make in memory shared with
 * the children, n of them running fn (told hand_back), then the test's
 * checks on what they left. */
static void race(int n, llmgw_health_t *(*make)(void *mem),
                 void (*fn)(int, void *), int hand_back,
                 void (*check)(const trial_arg_t *a))
{
    void *mem;
    apr_size_t size;
    trial_arg_t a = { NULL, NULL, hand_back };
    int round;

    shared_table(1, &mem, &size);
    a.r = race_area(mem, size);
    for (round = 0; round < RACE_ROUNDS; round++) {
        memset(a.r, 0, sizeof(*a.r));
        a.t = make(mem);
        run_children(n, fn, &a, a.r);
        check(&a);
        if (overlapped(a.r)) {
            break;
        }
    }
    munmap(mem, size);
}

/* Nobody hands it back: exactly one claim, whoever made it. */
static void trial_kept(const trial_arg_t *a)
{
    ck_assert_int_eq(a->r->claims, 1);
    ck_assert_int_eq(a->r->violations, 0);
    ck_assert_uint_eq(llmgw_health_breaker(a->t, 0).trial, 1);
}

/* Handed back at once: many claims, never two at a time. */
static void trial_handed_back(const trial_arg_t *a)
{
    ck_assert_int_gt(a->r->claims, 100);
    ck_assert_int_eq(a->r->violations, 0);
    /* Every holder handed it back: free, and nothing counted. */
    ck_assert_int_eq(llmgw_health_breaker(a->t, 0).state, LLMGW_BR_HALF_OPEN);
    ck_assert_uint_eq(llmgw_health_breaker(a->t, 0).trial, 0);
    ck_assert_uint_eq(llmgw_health_breaker(a->t, 0).successes, 0);
}

START_TEST(one_trial_across_processes)
{
    race(8, half_open_table, race_for_trial, 0, trial_kept);
    race(8, half_open_table, race_for_trial, 1, trial_handed_back);
}
END_TEST

/* Admission: never more than the limit in flight, whatever the
 * processes do; every claim given back. */
static void admit_often(int i, void *arg)
{
    trial_arg_t *a = arg;
    apr_time_t start = apr_time_now();
    volatile int spin;

    (void)i;
    while (racing(start)) {
        tick(a->r);
        if (!llmgw_health_admit(a->t, 0, 3)) {
            continue;
        }
        __atomic_add_fetch(&a->r->admitted, 1, __ATOMIC_RELAXED);
        if (__atomic_add_fetch(&a->r->active, 1, __ATOMIC_ACQ_REL) > 3) {
            __atomic_add_fetch(&a->r->violations, 1, __ATOMIC_RELAXED);
        }
        /* In flight a moment: a fourth one let in meanwhile shows. */
        for (spin = 0; spin < 100; spin++) {
        }
        if (__atomic_load_n(&a->r->active, __ATOMIC_ACQUIRE) > 3) {
            __atomic_add_fetch(&a->r->violations, 1, __ATOMIC_RELAXED);
        }
        __atomic_sub_fetch(&a->r->active, 1, __ATOMIC_ACQ_REL);
        llmgw_health_release(a->t, 0);
    }
}

static void admitted_within_limit(const trial_arg_t *a)
{
    ck_assert_int_gt(a->r->admitted, 1000);
    ck_assert_int_eq(a->r->violations, 0);
    ck_assert_int_eq(member(a->t, 0, T0).inflight, 0);
}

START_TEST(admission_across_processes)
{
    race(8, one_member, admit_often, 0, admitted_within_limit);
}
END_TEST

/* Processes take places until there are none: exactly the limit are
 * handed out, however their claims interleave. */
#define EXACT_LIMIT 1000000

static void admit_all(int i, void *arg)
{
    trial_arg_t *a = arg;
    long mine = 0;

    (void)i;
    while (llmgw_health_admit(a->t, 0, EXACT_LIMIT)) {
        tick(a->r);
        mine++;
    }
    __atomic_add_fetch(&a->r->admitted, mine, __ATOMIC_RELAXED);
}

static void admitted_exactly(const trial_arg_t *a)
{
    long k;

    ck_assert_int_eq(a->r->admitted, EXACT_LIMIT);
    ck_assert_int_eq(member(a->t, 0, T0).inflight, EXACT_LIMIT);
    for (k = 0; k < EXACT_LIMIT; k++) {
        llmgw_health_release(a->t, 0);
    }
    ck_assert_int_eq(member(a->t, 0, T0).inflight, 0);
}

START_TEST(admission_is_exact)
{
    race(8, one_member, admit_all, 0, admitted_exactly);
}
END_TEST

/* The bounded queue beside other processes: never more waiters than
 * allowed, never more in flight than the limit, all counts back to 0. */
static void queue_often(int i, void *arg)
{
    trial_arg_t *a = arg;
    llmgw_health_params_t hp = hparams();
    apr_time_t now = T0;
    int k, queued = 0, held = 0;

    for (k = 0; k < 20000; k++) {
        llmgw_member_view_t v;

        tick(a->r);
        now += 1;
        if (held) {
            if (--held == 0) {
                __atomic_sub_fetch(&a->r->active, 1, __ATOMIC_ACQ_REL);
                llmgw_health_release(a->t, 0);
            }
            continue;
        }
        switch (llmgw_health_admit_step(a->t, 0, 2, 3, now + 40 + i, now,
                                        &queued)) {
        case LLMGW_ADMIT_GO:
            if (__atomic_add_fetch(&a->r->active, 1, __ATOMIC_ACQ_REL) > 2) {
                __atomic_add_fetch(&a->r->violations, 1, __ATOMIC_RELAXED);
            }
            __atomic_add_fetch(&a->r->admitted, 1, __ATOMIC_RELAXED);
            held = 1 + k % 3;
            break;
        default: break;
        }
        llmgw_health_member(a->t, 0, now, &hp, &v);
        if (v.waiters > 3 || v.inflight > 2) {
            __atomic_add_fetch(&a->r->violations, 1, __ATOMIC_RELAXED);
        }
    }
    if (held) {
        __atomic_sub_fetch(&a->r->active, 1, __ATOMIC_ACQ_REL);
        llmgw_health_release(a->t, 0);
    }
    llmgw_health_admit_cancel(a->t, 0, &queued);
}

static void queue_emptied(const trial_arg_t *a)
{
    llmgw_member_view_t v = member(a->t, 0, T0);

    ck_assert_int_gt(a->r->admitted, 100);
    ck_assert_int_eq(a->r->violations, 0);
    ck_assert_int_eq(v.inflight, 0);
    ck_assert_int_eq(v.waiters, 0);
}

START_TEST(queue_across_processes)
{
    race(6, one_member, queue_often, 0, queue_emptied);
}
END_TEST

/* The queue's rules, one step at a time. */
START_TEST(queue_steps)
{
    llmgw_health_t *t = table(1);
    llmgw_health_params_t hp = hparams();
    llmgw_member_view_t v;
    int qa = 0, qb = 0, qc = 0, qd = 0;

    llmgw_health_add(t, "m");
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0, &qa),
                     LLMGW_ADMIT_GO);
    ck_assert_int_eq(qa, 0);
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0, &qb),
                     LLMGW_ADMIT_WAIT);
    ck_assert_int_eq(qb, 1);
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0, &qc),
                     LLMGW_ADMIT_FULL);
    ck_assert_int_eq(qc, 0);
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0 + 1, &qb),
                     LLMGW_ADMIT_WAIT);
    llmgw_health_release(t, 0);
    /* A newcomer does not jump the queue (and it is full). */
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0 + 2, &qd),
                     LLMGW_ADMIT_FULL);
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0 + 2, &qb),
                     LLMGW_ADMIT_GO);
    ck_assert_int_eq(qb, 0);
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0 + 3, &qc),
                     LLMGW_ADMIT_WAIT);
    ck_assert_int_eq(
        llmgw_health_admit_step(t, 0, 1, 1, T0 + 10, T0 + 10, &qc),
        LLMGW_ADMIT_TIMEOUT);
    ck_assert_int_eq(qc, 0);
    llmgw_health_member(t, 0, T0, &hp, &v);
    ck_assert_int_eq(v.waiters, 0);
    ck_assert_int_eq(v.inflight, 1);
    /* No room to wait at all, and an expired deadline. */
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 0, T0 + 10, T0, &qd),
                     LLMGW_ADMIT_FULL);
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 5, T0, T0, &qd),
                     LLMGW_ADMIT_TIMEOUT);
    /* Cancel leaves the queue; release never goes below 0. */
    ck_assert_int_eq(llmgw_health_admit_step(t, 0, 1, 5, T0 + 10, T0, &qd),
                     LLMGW_ADMIT_WAIT);
    llmgw_health_admit_cancel(t, 0, &qd);
    llmgw_health_admit_cancel(t, 0, &qd);
    llmgw_health_release(t, 0);
    llmgw_health_release(t, 0);
    llmgw_health_member(t, 0, T0, &hp, &v);
    ck_assert_int_eq(v.waiters, 0);
    ck_assert_int_eq(v.inflight, 0);
    /* Limit 0: no limit. */
    ck_assert_int_eq(llmgw_health_admit(t, 0, 0), 1);
    ck_assert_int_eq(llmgw_health_admit(t, 0, 0), 1);
    llmgw_health_reset_counts(t);
    llmgw_health_member(t, 0, T0, &hp, &v);
    ck_assert_int_eq(v.inflight, 0);
}
END_TEST

/* What probes say, as the table keeps it: Ollama's loaded and available
 * models, absent ones, llama.cpp's slots and loading, vLLM's queue, and
 * all of it forgotten once stale. */
START_TEST(probe_facts)
{
    llmgw_health_t *t = table(3);
    llmgw_health_params_t hp = hparams();
    llmgw_member_view_t v;
    llmgw_health_model_t list[LLMGW_HEALTH_MODELS];
    unsigned f;

    llmgw_health_add(t, "ollama");
    llmgw_health_add(t, "llamacpp");
    llmgw_health_add(t, "vllm");
    ck_assert_int_eq(
        llmgw_health_store(
            t, 0,
            probe(LLMGW_PROBE_OLLAMA_PS, 200,
                  "{\"models\":[{\"name\":\"llama3:latest\",\"size_vram\":5,"
                  "\"expires_at\":\"2024-06-04T14:38:31Z\"}]}"),
            T0),
        0);
    ck_assert_int_eq(
        llmgw_health_store(t, 0,
                           probe(LLMGW_PROBE_OLLAMA_TAGS, 200,
                                 "{\"models\":[{\"name\":\"llama3:latest\"},{"
                                 "\"name\":\"qwen\"}]}"),
                           T0),
        0);
    ck_assert_int_eq(llmgw_health_model(t, 0, "llama3", T0, &hp, &f),
                     LLMGW_HS_READY);
    ck_assert_uint_eq(f, LLMGW_PM_LOADED | LLMGW_PM_AVAILABLE);
    ck_assert_int_eq(llmgw_health_model(t, 0, "qwen:latest", T0, &hp, &f),
                     LLMGW_HS_READY);
    ck_assert_uint_eq(f, LLMGW_PM_AVAILABLE);
    ck_assert_int_eq(llmgw_health_model(t, 0, "mistral", T0, &hp, &f),
                     LLMGW_HS_ABSENT);
    ck_assert_uint_eq(f, 0);
    ck_assert_int_eq(llmgw_health_models(t, 0, list, LLMGW_HEALTH_MODELS), 2);
    ck_assert_str_eq(list[0].name, "llama3:latest");
    ck_assert_int_eq(list[0].size_vram, 5);
    ck_assert_int_eq(list[0].expires_at, SEC(1717511911));
    /* Unloaded (a new /api/ps without it): still available. */
    llmgw_health_store(t, 0,
                       probe(LLMGW_PROBE_OLLAMA_PS, 200, "{\"models\":[]}"),
                       T0 + SEC(1));
    llmgw_health_model(t, 0, "llama3", T0 + SEC(1), &hp, &f);
    ck_assert_uint_eq(f, LLMGW_PM_AVAILABLE);
    /* Stale: nothing known, nothing absent. */
    ck_assert_int_eq(
        llmgw_health_model(t, 0, "mistral", T0 + SEC(32), &hp, &f),
        LLMGW_HS_READY);
    ck_assert_uint_eq(f, 0);

    /* llama.cpp: loading, then slots, busy when all are taken. */
    v = stored(t, 1,
               probe(LLMGW_PROBE_LLAMACPP_HEALTH, 503,
                     "{\"error\":{\"code\":503,\"message\":\"Loading model\","
                     "\"type\":\"unavailable_error\"}}"),
               T0);
    ck_assert_int_eq(v.state, LLMGW_HS_LOADING);
    ck_assert_uint_eq(llmgw_health_mirror_want(&v, 1), LLMGW_MIRROR_DRAIN);
    ck_assert_uint_eq(llmgw_health_mirror_want(&v, 0), 0);
    v = stored(t, 1, two_slots(1, 0), T0 + 1);
    ck_assert_int_eq(v.state, LLMGW_HS_READY);
    ck_assert_int_eq(v.slots_total, 2);
    ck_assert_int_eq(v.slots_busy, 1);
    ck_assert_int_eq(llmgw_health_limit(t, 1, 0, T0 + 1, &hp), 2);
    ck_assert_int_eq(llmgw_health_limit(t, 1, 7, T0 + 1, &hp), 7);
    v = stored(t, 1, two_slots(1, 1), T0 + 2);
    ck_assert_int_eq(v.state, LLMGW_HS_BUSY);
    /* A failed probe does not make it down (the breaker does); its
     * slots stay known. */
    v = stored(t, 1,
               llmgw_probe_unreachable(test_pool, LLMGW_PROBE_LLAMACPP_SLOTS,
                                       "refused"),
               T0 + 3);
    ck_assert_int_eq(v.probe_ok, 0);
    ck_assert_int_eq(v.probe_state, LLMGW_HS_DOWN);
    ck_assert_int_eq(v.slots_total, 2);
    ck_assert_int_eq(v.state, LLMGW_HS_BUSY);
    llmgw_health_member(t, 1, T0 + SEC(31), &hp, &v);
    ck_assert_int_eq(v.slots_total, -1);
    ck_assert_int_eq(v.state, LLMGW_HS_READY);
    ck_assert_int_eq(llmgw_health_limit(t, 1, 0, T0 + SEC(31), &hp), 0);

    /* vLLM: a queue at the busy bound, KV use, its model loaded. */
    v = stored(t, 2,
               probe(LLMGW_PROBE_VLLM_METRICS, 200,
                     "vllm:num_requests_running{model_name=\"q\"} 8\n"
                     "vllm:num_requests_waiting{model_name=\"q\"} 4\n"
                     "vllm:kv_cache_usage_perc{model_name=\"q\"} 0.75\n"),
               T0);
    ck_assert_int_eq(v.state, LLMGW_HS_BUSY);
    ck_assert_int_eq(v.running, 8);
    ck_assert_int_eq(v.waiting, 4);
    ck_assert_double_eq_tol(v.kv_usage, 0.75, 1e-6);
    ck_assert_int_eq(llmgw_health_limit(t, 2, 0, T0, &hp), 1);
    ck_assert_int_eq(llmgw_health_admit(t, 2, 1), 1);
    ck_assert_int_eq(llmgw_health_limit(t, 2, 0, T0, &hp), 1);
    ck_assert_int_eq(llmgw_health_models(t, 2, list, 4), 1);
    ck_assert_int_eq(list[0].running, 8);
    ck_assert_double_eq_tol(list[0].kv_usage, 0.75, 1e-6);
    ck_assert_int_eq(llmgw_health_model(t, 2, "q", T0, &hp, &f),
                     LLMGW_HS_BUSY);
    ck_assert_uint_eq(f, LLMGW_PM_LOADED);
    /* Only what is loaded is known: another model is not absent. */
    ck_assert_int_eq(llmgw_health_model(t, 2, "other", T0, &hp, &f),
                     LLMGW_HS_BUSY);
    ck_assert_int_eq(
        llmgw_health_store(t, 7, probe(LLMGW_PROBE_VLLM_METRICS, 200, "x 1\n"),
                           T0),
        -1);
}
END_TEST

/* More models than a member keeps: the loaded ones first; names too
 * long to keep are counted. */
START_TEST(models_that_do_not_fit)
{
    llmgw_health_t *t = table(1);
    llmgw_health_params_t hp = hparams();
    char *list = "",
         *name = apr_pcalloc(test_pool, LLMGW_HEALTH_MODEL_NAME + 1);
    llmgw_probe_t *r;
    unsigned f;
    int i;

    llmgw_health_add(t, "m");
    /* m0..m31 unloaded, m32..m36 loaded: 37 for 32 places. */
    for (i = 0; i < LLMGW_HEALTH_MODELS + 5; i++) {
        list = apr_psprintf(test_pool,
                            "%s%s{\"id\":\"m%d\",\"status\":"
                            "{\"value\":\"%s\"}}",
                            list, i ? "," : "", i,
                            i >= LLMGW_HEALTH_MODELS ? "loaded" : "unloaded");
    }
    r = probe(LLMGW_PROBE_OPENAI_MODELS, 200,
              apr_psprintf(test_pool, "{\"data\":[%s]}", list));
    ck_assert_int_eq(r->ok, 1);
    ck_assert_uint_ne(r->knows & LLMGW_PK_LOADED, 0);
    ck_assert_int_eq(llmgw_health_store(t, 0, r, T0), 5);
    llmgw_health_model(t, 0, "m36", T0, &hp, &f);
    ck_assert_uint_eq(f, LLMGW_PM_LOADED | LLMGW_PM_AVAILABLE);
    ck_assert_int_eq(llmgw_health_model(t, 0, "m31", T0, &hp, &f),
                     LLMGW_HS_ABSENT); /* did not fit */
    ck_assert_int_eq(llmgw_health_model(t, 0, "m26", T0, &hp, &f),
                     LLMGW_HS_READY);
    ck_assert_uint_eq(f, LLMGW_PM_AVAILABLE);
    /* A full list, then another list: the new models find room. */
    r = probe(LLMGW_PROBE_OPENAI_MODELS, 200,
              "{\"data\":[{\"id\":\"fresh\",\"status\":"
              "{\"value\":\"loaded\"}}]}");
    ck_assert_int_eq(
        llmgw_health_store(llmgw_health_attach(t, llmgw_health_size(1)), 0, r,
                           T0),
        0);
    llmgw_health_model(t, 0, "fresh", T0, &hp, &f);
    ck_assert_uint_eq(f, LLMGW_PM_LOADED | LLMGW_PM_AVAILABLE);
    ck_assert_int_eq(llmgw_health_model(t, 0, "m36", T0, &hp, &f),
                     LLMGW_HS_ABSENT);
    r = probe(LLMGW_PROBE_OPENAI_MODELS, 200,
              apr_psprintf(test_pool, "{\"data\":[%s]}", list));
    ck_assert_int_eq(llmgw_health_store(t, 0, r, T0), 5);
    /* A name too long to keep is left out and counted. */
    memset(name, 'n', LLMGW_HEALTH_MODEL_NAME);
    r = probe(LLMGW_PROBE_OLLAMA_TAGS, 200,
              apr_psprintf(test_pool,
                           "{\"models\":[{\"name\":\"%s\"},"
                           "{\"name\":\"short\"}]}",
                           name));
    ck_assert_int_eq(llmgw_health_store(t, 0, r, T0 + 1), 1);
    ck_assert_int_eq(llmgw_health_model(t, 0, "short", T0 + 1, &hp, &f),
                     LLMGW_HS_READY);
    /* m36 stays loaded: tags speak of what is available only. */
    llmgw_health_model(t, 0, "m36", T0 + 1, &hp, &f);
    ck_assert_uint_eq(f, LLMGW_PM_LOADED);
    ck_assert_int_eq(llmgw_health_model(t, 0, "m26", T0 + 1, &hp, &f),
                     LLMGW_HS_ABSENT);
}
END_TEST

/* Hints: what a member served lately, what it is loading; a timeout
 * during a load is no failure. */
START_TEST(hints_and_classify)
{
    llmgw_health_t *t = table(1);
    llmgw_health_params_t hp = hparams();
    llmgw_aff_member_t am;
    unsigned f;
    int i;

    llmgw_health_add(t, "m");
    llmgw_health_affinity(t, 0, "llama3", T0, &hp, &am);
    ck_assert_int_eq(am.model, LLMGW_AFF_UNKNOWN);
    ck_assert_int_eq(am.state, LLMGW_HS_READY);
    ck_assert_int_eq(llmgw_health_classify(t, 0, LLMGW_EV_TIMEOUT_FIRST_BYTE,
                                           "llama3", T0, &hp),
                     LLMGW_EV_TIMEOUT_FIRST_BYTE);

    llmgw_health_hint(t, 0, "llama3", LLMGW_HINT_LOADING, T0);
    ck_assert_int_eq(llmgw_health_model(t, 0, "llama3:latest", T0, &hp, &f),
                     LLMGW_HS_LOADING);
    ck_assert_uint_eq(f, LLMGW_PM_LOADING);
    llmgw_health_affinity(t, 0, "llama3", T0, &hp, &am);
    ck_assert_int_eq(am.model, LLMGW_AFF_LOADING);
    ck_assert_int_eq(llmgw_health_classify(t, 0, LLMGW_EV_TIMEOUT_FIRST_BYTE,
                                           "llama3", T0, &hp),
                     LLMGW_EV_LOADING);
    ck_assert_int_eq(llmgw_health_classify(t, 0, LLMGW_EV_TIMEOUT_FIRST_TOKEN,
                                           "llama3", T0, &hp),
                     LLMGW_EV_LOADING);
    ck_assert_int_eq(llmgw_health_classify(t, 0,
                                           LLMGW_EV_TIMEOUT_BETWEEN_TOKENS,
                                           "llama3", T0, &hp),
                     LLMGW_EV_TIMEOUT_BETWEEN_TOKENS);
    ck_assert_int_eq(llmgw_health_classify(t, 0, LLMGW_EV_TIMEOUT_FIRST_BYTE,
                                           "other", T0, &hp),
                     LLMGW_EV_TIMEOUT_FIRST_BYTE);
    /* The load is over after its time. */
    ck_assert_int_eq(llmgw_health_classify(t, 0, LLMGW_EV_TIMEOUT_FIRST_BYTE,
                                           "llama3", T0 + SEC(121), &hp),
                     LLMGW_EV_TIMEOUT_FIRST_BYTE);

    llmgw_health_hint(t, 0, "llama3", LLMGW_HINT_SERVED, T0 + 1);
    ck_assert_int_eq(llmgw_health_model(t, 0, "llama3", T0 + 1, &hp, &f),
                     LLMGW_HS_READY);
    ck_assert_uint_eq(f, LLMGW_HM_SERVED);
    llmgw_health_affinity(t, 0, "llama3", T0 + 1, &hp, &am);
    ck_assert_int_eq(am.model, LLMGW_AFF_LOADED);
    llmgw_health_model(t, 0, "llama3", T0 + 1 + SEC(301), &hp, &f);
    ck_assert_uint_eq(f, 0);
    llmgw_health_hint(t, 0, "llama3", LLMGW_HINT_CLEAR, T0 + 2);
    llmgw_health_model(t, 0, "llama3", T0 + 2, &hp, &f);
    ck_assert_uint_eq(f, 0);

    /* More models than hints: the oldest give way, the newest stay. */
    for (i = 0; i < 3 * LLMGW_HEALTH_HINTS; i++) {
        llmgw_health_hint(t, 0, apr_psprintf(test_pool, "m%d", i),
                          LLMGW_HINT_SERVED, T0 + 10 + i);
    }
    for (i = 0; i < 3 * LLMGW_HEALTH_HINTS; i++) {
        llmgw_health_model(t, 0, apr_psprintf(test_pool, "m%d", i), T0 + 100,
                           &hp, &f);
        ck_assert_uint_eq(f,
                          i >= 2 * LLMGW_HEALTH_HINTS ? LLMGW_HM_SERVED : 0);
    }
    /* A loading member (llama.cpp) makes a first-token timeout loading. */
    llmgw_health_store(t, 0,
                       probe(LLMGW_PROBE_LLAMACPP_HEALTH, 503,
                             "{\"status\":\"loading model\"}"),
                       T0);
    ck_assert_int_eq(llmgw_health_classify(t, 0, LLMGW_EV_TIMEOUT_FIRST_BYTE,
                                           NULL, T0, &hp),
                     LLMGW_EV_LOADING);
}
END_TEST

/* What a member holds besides the requested model, for llm_affinity:
 * the requests it was sent lately for the others (halved every 4 s),
 * whether it loads another, how many it holds; a probe's list that lacks
 * a model being loaded leaves its loading hint. */
START_TEST(affinity_others_from_hints)
{
    llmgw_health_t *t = table(1);
    llmgw_health_params_t hp = hparams();
    llmgw_aff_member_t am;
    int i;

    llmgw_health_add(t, "m");
    llmgw_health_asked(t, 0, "a", 0, T0); /* no hint yet: not counted */
    llmgw_health_hint(t, 0, "a", LLMGW_HINT_SERVED, T0);
    for (i = 0; i < 10; i++) {
        llmgw_health_asked(t, 0, "a", 0, T0);
    }
    llmgw_health_hint(t, 0, "b", LLMGW_HINT_SERVED, T0);
    llmgw_health_asked(t, 0, "b", 0, T0);
    llmgw_health_affinity(t, 0, "c", T0, &hp, &am);
    ck_assert_int_eq(am.others, 11 * 256);
    ck_assert_int_eq(am.resident, 2);
    ck_assert_int_eq(am.loading_other, 0);
    llmgw_health_affinity(t, 0, "a", T0, &hp, &am);
    ck_assert_int_eq(am.others, 256);
    ck_assert_int_eq(am.model, LLMGW_AFF_LOADED);
    /* Halved after 4 s, a quarter after 8 s, between them in between. */
    llmgw_health_affinity(t, 0, "c", T0 + SEC(4), &hp, &am);
    ck_assert_int_eq(am.others, 11 * 128);
    llmgw_health_affinity(t, 0, "c", T0 + SEC(8), &hp, &am);
    ck_assert_int_eq(am.others, 11 * 64);
    llmgw_health_affinity(t, 0, "c", T0 + SEC(6), &hp, &am);
    ck_assert_int_gt(am.others, 11 * 64);
    ck_assert_int_lt(am.others, 11 * 128);
    /* Counting on decays what was there first. */
    llmgw_health_asked(t, 0, "b", 0, T0 + SEC(4));
    llmgw_health_affinity(t, 0, "a", T0 + SEC(4), &hp, &am);
    ck_assert_int_eq(am.others, 128 + 256);

    /* Loaded by the probes alone: counted, as served. */
    llmgw_health_asked(t, 0, "d", 1, T0 + SEC(4));
    llmgw_health_affinity(t, 0, "c", T0 + SEC(4), &hp, &am);
    ck_assert_int_eq(am.others, 11 * 128 + 256 + 256);
    ck_assert_int_eq(am.resident, 3);
    llmgw_health_hint(t, 0, "d", LLMGW_HINT_CLEAR, T0 + SEC(4));

    /* c is loading there: for a, another load; for c, its own. */
    llmgw_health_hint(t, 0, "c", LLMGW_HINT_LOADING, T0 + SEC(4));
    llmgw_health_affinity(t, 0, "a", T0 + SEC(4), &hp, &am);
    ck_assert_int_eq(am.loading_other, 1);
    ck_assert_int_eq(am.resident, 3);
    llmgw_health_affinity(t, 0, "c", T0 + SEC(4), &hp, &am);
    ck_assert_int_eq(am.loading_other, 0);
    ck_assert_int_eq(am.model, LLMGW_AFF_LOADING);
    /* A probe without c (being loaded) and without b (unloaded). */
    llmgw_health_hint(t, 0, "c", LLMGW_HINT_CLEAR, T0 + SEC(4));
    llmgw_health_hint(t, 0, "b", LLMGW_HINT_CLEAR, T0 + SEC(4));
    llmgw_health_affinity(t, 0, "c", T0 + SEC(4), &hp, &am);
    ck_assert_int_eq(am.model, LLMGW_AFF_LOADING);
    ck_assert_int_eq(am.resident, 2);
    ck_assert_int_eq(am.others, 10 * 128); /* a's alone */
}
END_TEST

START_TEST(affinity_fill_by_breaker)
{
    llmgw_health_t *t = table(1);
    llmgw_health_params_t hp = hparams();
    llmgw_breaker_params_t bp = bparams(1, 1);
    llmgw_aff_member_t am;
    int token;

    llmgw_health_add(t, "m");
    llmgw_health_store(
        t, 0,
        probe(LLMGW_PROBE_OLLAMA_TAGS, 200, "{\"models\":[{\"name\":\"a\"}]}"),
        T0);
    llmgw_health_affinity(t, 0, "a", T0, &hp, &am);
    ck_assert_int_eq(am.model, LLMGW_AFF_COLD);
    llmgw_health_affinity(t, 0, "b", T0, &hp, &am);
    ck_assert_int_eq(am.model, LLMGW_AFF_ABSENT);
    llmgw_health_event(t, 0, LLMGW_EV_HTTP_5XX, LLMGW_BR_NO_TRIAL, T0, &bp,
                       NULL, NULL);
    llmgw_health_affinity(t, 0, "a", T0 + MS(50), &hp, &am);
    ck_assert_int_eq(am.state, LLMGW_HS_DOWN);
    llmgw_health_affinity(t, 0, "a", T0 + MS(100), &hp, &am);
    ck_assert_int_eq(am.state, LLMGW_HS_READY); /* trial free */
    ck_assert_int_eq(llmgw_health_claim(t, 0, T0 + MS(100), &bp, &token), 1);
    llmgw_health_affinity(t, 0, "a", T0 + MS(100), &hp, &am);
    ck_assert_int_eq(am.state, LLMGW_HS_DOWN); /* trial taken */
}
END_TEST

START_TEST(events_for_answers)
{
    const char *loading = "{\"error\":{\"code\":503,"
                          "\"message\":\"Loading model\"}}";
    const char *busy = "{\"error\":\"server busy, please try again.  "
                       "maximum pending requests exceeded\"}";

    ck_assert_int_eq(llmgw_status_event(test_pool, 200, NULL, 0),
                     LLMGW_EV_SUCCESS);
    ck_assert_int_eq(llmgw_status_event(test_pool, 404, "{}", 2),
                     LLMGW_EV_CLIENT_ERROR);
    ck_assert_int_eq(llmgw_status_event(test_pool, 429, NULL, 0),
                     LLMGW_EV_BUSY);
    ck_assert_int_eq(llmgw_status_event(test_pool, 500, "x", 1),
                     LLMGW_EV_HTTP_5XX);
    ck_assert_int_eq(llmgw_status_event(test_pool, 503, "x", 1),
                     LLMGW_EV_HTTP_5XX);
    ck_assert_int_eq(
        llmgw_status_event(test_pool, 503, loading, strlen(loading)),
        LLMGW_EV_LOADING);
    /* ollama/ollama server/sched.go ErrMaxQueue, answered as 503. */
    ck_assert_int_eq(llmgw_status_event(test_pool, 503, busy, strlen(busy)),
                     LLMGW_EV_BUSY);
    ck_assert_int_eq(
        llmgw_status_event(test_pool, 503, "{\"error\":\"x\"}", 11),
        LLMGW_EV_HTTP_5XX);
    ck_assert_int_eq(llmgw_probe_event(probe(LLMGW_PROBE_LLAMACPP_HEALTH, 200,
                                             "{\"status\":\"ok\"}")),
                     LLMGW_EV_PROBE_OK);
    ck_assert_int_eq(
        llmgw_probe_event(probe(LLMGW_PROBE_LLAMACPP_HEALTH, 503,
                                "{\"status\":\"loading model\"}")),
        LLMGW_EV_LOADING);
    ck_assert_int_eq(llmgw_probe_event(probe(LLMGW_PROBE_OLLAMA_PS, 429, "")),
                     LLMGW_EV_PROBE_OK);
    ck_assert_int_eq(llmgw_probe_event(probe(LLMGW_PROBE_OLLAMA_PS, 200, "x")),
                     LLMGW_EV_PROBE_FAIL);
    ck_assert_int_eq(llmgw_probe_event(NULL), LLMGW_EV_PROBE_FAIL);
}
END_TEST

START_TEST(mirror_deltas)
{
    llmgw_health_t *t = table(1);
    unsigned set, clear;

    llmgw_health_add(t, "m");
    ck_assert_uint_eq(
        llmgw_health_mirror_swap(t, 0, LLMGW_MIRROR_FAIL, &set, &clear), 0);
    ck_assert_uint_eq(set, LLMGW_MIRROR_FAIL);
    ck_assert_uint_eq(clear, 0);
    llmgw_health_mirror_swap(t, 0, LLMGW_MIRROR_FAIL, &set, &clear);
    ck_assert_uint_eq(set | clear, 0);
    llmgw_health_mirror_swap(t, 0, LLMGW_MIRROR_DRAIN, &set, &clear);
    ck_assert_uint_eq(set, LLMGW_MIRROR_DRAIN);
    ck_assert_uint_eq(clear, LLMGW_MIRROR_FAIL);
    llmgw_health_mirror_swap(t, 0, 0, &set, &clear);
    ck_assert_uint_eq(set, 0);
    ck_assert_uint_eq(clear, LLMGW_MIRROR_DRAIN);
    ck_assert_uint_eq(llmgw_health_mirror_swap(t, 3, 1, &set, &clear), 0);
    ck_assert_uint_eq(set | clear, 0);
}
END_TEST

/* The sequence counter's rules, step by step: a copy made across a
 * write, or begun during one, is not kept. */
START_TEST(seqlock_protocol)
{
    apr_uint32_t seq = 0, s, s2;

    ck_assert_int_eq(llmgw_seq_read_begin(&seq, &s), 1);
    ck_assert_int_eq(llmgw_seq_read_end(&seq, s), 1);
    /* A write between begin and end. */
    ck_assert_int_eq(llmgw_seq_read_begin(&seq, &s), 1);
    llmgw_seq_write_begin(&seq);
    ck_assert_int_eq(llmgw_seq_read_end(&seq, s), 0);
    ck_assert_int_eq(llmgw_seq_read_begin(&seq, &s2), 0);
    llmgw_seq_write_end(&seq);
    ck_assert_int_eq(llmgw_seq_read_end(&seq, s), 0);
    ck_assert_int_eq(llmgw_seq_read_begin(&seq, &s2), 1);
    ck_assert_uint_ne(s2, s);
    ck_assert_int_eq(llmgw_seq_read_end(&seq, s2), 1);
    /* A writer that died half-way: odd until the next write ends. */
    llmgw_seq_write_begin(&seq);
    llmgw_seq_write_begin(&seq);
    ck_assert_int_eq(llmgw_seq_read_begin(&seq, &s), 0);
    llmgw_seq_write_end(&seq);
    ck_assert_int_eq(llmgw_seq_read_begin(&seq, &s), 1);
    ck_assert_uint_ne(s, s2);
    /* Around the counter's wrap. */
    seq = 0xfffffffeu;
    ck_assert_int_eq(llmgw_seq_read_begin(&seq, &s), 1);
    llmgw_seq_write_begin(&seq);
    llmgw_seq_write_end(&seq);
    ck_assert_uint_eq(seq, 0);
    ck_assert_int_eq(llmgw_seq_read_end(&seq, s), 0);
}
END_TEST

/* Readers without a lock beside the probe writer: each copy they keep
 * is one the writer stored whole (slots and models agree). */
typedef struct {
    llmgw_health_t *t;
    llmgw_probe_t *probes[LLMGW_HEALTH_MODELS];
    volatile int done;
    volatile long reads, torn;
} seq_race_t;

static void *seq_writer(void *arg)
{
    seq_race_t *r = arg;
    apr_time_t start = apr_time_now();
    volatile int spin;
    int i;

    /* On until the readers have read enough (a loaded machine may
     * schedule them late), within bounds. */
    for (i = 0; (racing(start) || r->reads < 1000)
                && apr_time_now() - start < SEC(10);
         i++) {
        llmgw_health_store(r->t, 0, r->probes[i % LLMGW_HEALTH_MODELS],
                           T0 + i);
        /* A pause, so that readers start between stores and are still
         * copying when the next one begins; and now and then the CPU,
         * for readers that share it (they cannot read while a store
         * that was preempted half-way keeps the counter odd). */
        for (spin = 0; spin < 300; spin++) {
        }
        if (i % 16 == 0) {
            sched_yield();
        }
    }
    r->done = 1;
    return NULL;
}

static void *seq_reader(void *arg)
{
    seq_race_t *r = arg;
    llmgw_health_params_t hp = hparams();
    llmgw_health_model_t list[LLMGW_HEALTH_MODELS];

    while (!r->done) {
        llmgw_member_view_t v;
        int n, i, ok;

        llmgw_health_member(r->t, 0, T0, &hp, &v);
        n = llmgw_health_models(r->t, 0, list, LLMGW_HEALTH_MODELS);
        ok = v.slots_total < 0 || v.slots_busy == v.slots_total;
        for (i = 0; n > 0 && i < n; i++) {
            char want[32];

            snprintf(want, sizeof(want), "m%d-of-%d", i, n);
            ok = ok && strcmp(list[i].name, want) == 0;
        }
        if (n > 0 || !ok) {
            __atomic_add_fetch(ok ? &r->reads : &r->torn, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

START_TEST(readers_beside_writer)
{
    seq_race_t r;
    pthread_t w, rd[2];
    int i, k;

    memset(&r, 0, sizeof(r));
    r.t = table(1);
    llmgw_health_add(r.t, "m");
    for (k = 0; k < LLMGW_HEALTH_MODELS; k++) {
        char *slots = apr_pstrdup(test_pool, "[");
        char *ps = apr_pstrdup(test_pool, "{\"data\":[");
        llmgw_probe_t *a, *b;

        for (i = 0; i <= k; i++) {
            slots = apr_psprintf(test_pool, "%s%s{\"is_processing\":true}",
                                 slots, i ? "," : "");
            ps = apr_psprintf(test_pool,
                              "%s%s{\"id\":\"m%d-of-%d\","
                              "\"status\":{\"value\":\"loaded\"}}",
                              ps, i ? "," : "", i, k + 1);
        }
        a = probe(LLMGW_PROBE_LLAMACPP_SLOTS, 200,
                  apr_pstrcat(test_pool, slots, "]", NULL));
        b = probe(LLMGW_PROBE_OPENAI_MODELS, 200,
                  apr_pstrcat(test_pool, ps, "]}", NULL));
        /* One result with both facts, so that each store changes all. */
        b->knows |= a->knows;
        b->slots_total = a->slots_total;
        b->slots_busy = a->slots_busy;
        r.probes[k] = b;
    }
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_create(&rd[i], NULL, seq_reader, &r), 0);
    }
    ck_assert_int_eq(pthread_create(&w, NULL, seq_writer, &r), 0);
    pthread_join(w, NULL);
    for (i = 0; i < 2; i++) {
        pthread_join(rd[i], NULL);
    }
    ck_assert_int_eq(r.torn, 0);
    ck_assert_int_ge(r.reads, 1000);
}
END_TEST

Suite *health_suite(void)
{
    return test_suite(
        "health", "core", 120,
        TESTS(members_by_name, members_joined_at_run_time,
              joins_across_processes, breaker_through_table,
              one_trial_across_processes, admission_across_processes,
              admission_is_exact, queue_across_processes, queue_steps,
              probe_facts, models_that_do_not_fit, hints_and_classify,
              affinity_others_from_hints, affinity_fill_by_breaker,
              events_for_answers, mirror_deltas, seqlock_protocol,
              readers_beside_writer));
}
