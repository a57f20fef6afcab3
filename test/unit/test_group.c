/* test_group.c: grouping by model on a member's slots: a member serving a
 * model keeps it, another model waits until a slot drains (not a time),
 * a model that waited a turn reserves the slot and then serves its batch,
 * nobody starves, and across processes never two models share a slot. */
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llmgw_group.h"
#include "test_core.h"

#define T0 ((apr_time_t)1000000000)
#define HOLD apr_time_from_sec(1)
#define IDLE LLMGW_GROUP_IDLE
#define X 11u
#define Y 22u
#define Z 33u

static llmgw_group_t g;

static void fresh(void)
{
    memset(&g, 0, sizeof(g));
}

static int enter(apr_uint32_t h, apr_time_t now, int *slot)
{
    return llmgw_group_enter(&g, 1, h, HOLD, now, slot) == LLMGW_GROUP_JOINED;
}

START_TEST(same_model_joins_other_waits_for_the_drain)
{
    int a, b, c, s;

    fresh();
    ck_assert(enter(X, T0, &a));
    ck_assert(enter(X, T0 + 1, &b)); /* serving X: X keeps joining */
    ck_assert_int_eq(a, b);
    ck_assert(!enter(Y, T0 + 2, &c)); /* X in flight: Y is held */
    ck_assert_int_eq(c, -1);
    llmgw_group_leave(&g, a, T0 + 3);
    ck_assert(!enter(Y, T0 + 4, &c)); /* one X still in flight */
    llmgw_group_leave(&g, b, T0 + 5);
    /* Empty a moment: X's next request may be on its way. */
    ck_assert(!enter(Y, T0 + 5 + IDLE - 1, &c));
    /* Then released by the drain, long before any hold bound. */
    ck_assert(enter(Y, T0 + 5 + IDLE, &c));
    ck_assert(enter(Y, T0 + 6 + IDLE, &s));
    ck_assert(!enter(X, T0 + 7 + IDLE, &s)); /* now X waits for Y */
}
END_TEST

START_TEST(a_turn_then_a_reservation_and_a_batch)
{
    int a, b, y1, y2, s;

    fresh();
    ck_assert(enter(X, T0, &a));
    ck_assert(!enter(Y, T0 + HOLD - 1, &s));
    ck_assert(enter(X, T0 + HOLD - 1, &b)); /* X's turn is not over */
    llmgw_group_leave(&g, a, T0 + HOLD - 1);
    /* X has had the slot for hold while Y waits: Y reserves it. */
    ck_assert(!enter(Y, T0 + HOLD, &s));
    ck_assert(!enter(X, T0 + HOLD + 1, &s)); /* no X joins any more */
    ck_assert(!enter(Z, T0 + HOLD + 2, &s)); /* nor anyone else */
    ck_assert(!enter(Y, T0 + HOLD + 3, &s)); /* X's last is in flight */
    llmgw_group_leave(&g, b, T0 + HOLD + 4);
    ck_assert(!enter(Z, T0 + HOLD + 4, &s)); /* reserved for Y */
    ck_assert(enter(Y, T0 + HOLD + 5, &y1));
    ck_assert(enter(Y, T0 + HOLD + 6, &y2)); /* the batch joins */
    ck_assert(!enter(X, T0 + HOLD + 7, &s));
    /* Y's turn counts from when it took the slot: X cannot take it back
     * at once though it waited long. */
    ck_assert(!enter(X, T0 + HOLD + 5 + HOLD - 1, &s));
    ck_assert(enter(Y, T0 + HOLD + 5 + HOLD - 1, &s));
}
END_TEST

/* A busy model's slot empties between its requests: its turn goes on,
 * from when it began, and still ends after hold for a waiting model. */
START_TEST(a_turn_with_gaps_still_ends)
{
    int a, s;
    apr_time_t t;

    fresh();
    ck_assert(enter(X, T0, &a));
    ck_assert(!enter(Y, T0 + 1, &s));
    for (t = T0 + 10; t < T0 + HOLD; t += IDLE / 2) {
        llmgw_group_leave(&g, a, t);
        ck_assert(enter(X, t + IDLE / 4, &a));
        ck_assert(!enter(Y, t + IDLE / 4 + 1, &s));
    }
    ck_assert(!enter(Y, T0 + HOLD, &s)); /* reserves */
    ck_assert(!enter(X, T0 + HOLD + 1, &s));
    llmgw_group_leave(&g, a, T0 + HOLD + 2);
    ck_assert(enter(Y, T0 + HOLD + 3, &s));
}
END_TEST

START_TEST(a_reservation_nobody_takes_expires)
{
    int a, s;

    fresh();
    ck_assert(enter(X, T0, &a));
    ck_assert(!enter(Y, T0 + HOLD, &s)); /* reserves; then Y gives up */
    llmgw_group_leave(&g, a, T0 + HOLD);
    ck_assert(!enter(Z, T0 + HOLD + 1, &s));
    ck_assert(!enter(X, T0 + 2 * HOLD - 1, &s));
    ck_assert(enter(Z, T0 + 2 * HOLD, &s)); /* stale: anyone's */
}
END_TEST

START_TEST(slots_serve_models_at_once)
{
    int a, b, c, s;

    fresh();
    ck_assert_int_eq(llmgw_group_enter(&g, 2, X, HOLD, T0, &a),
                     LLMGW_GROUP_JOINED);
    ck_assert_int_eq(llmgw_group_enter(&g, 2, Y, HOLD, T0 + 1, &b),
                     LLMGW_GROUP_JOINED);
    ck_assert_int_ne(a, b);
    ck_assert_int_eq(llmgw_group_enter(&g, 2, Z, HOLD, T0 + 2, &c),
                     LLMGW_GROUP_HELD);
    llmgw_group_leave(&g, a, T0 + 3);
    /* X's slot, free, still serves X first: it is loaded there. */
    ck_assert_int_eq(llmgw_group_enter(&g, 2, X, HOLD, T0 + 4, &s),
                     LLMGW_GROUP_JOINED);
    ck_assert_int_eq(s, a);
    llmgw_group_leave(&g, s, T0 + 5);
    ck_assert_int_eq(llmgw_group_enter(&g, 2, Z, HOLD, T0 + 5 + IDLE, &c),
                     LLMGW_GROUP_JOINED);
    ck_assert_int_eq(c, a);
}
END_TEST

#define WOULD(h, now, serving) \
    llmgw_group_would_hold(&g, 1, (h), HOLD, (now), (serving), NULL)

START_TEST(would_hold_and_serving)
{
    int a, s, serving;
    apr_int64_t displaced;

    fresh();
    ck_assert(!WOULD(X, T0, &serving));
    ck_assert(!serving);
    ck_assert(enter(X, T0, &a));
    ck_assert(!WOULD(X, T0 + 1, &serving));
    ck_assert(serving);
    ck_assert(WOULD(Y, T0 + 1, &serving));
    ck_assert(!serving);
    ck_assert(!llmgw_group_would_hold(&g, 2, Y, HOLD, T0 + 1, NULL, NULL));
    /* Once a Y is held, Y's batch is due here: a Y joins it. */
    ck_assert(!enter(Y, T0 + 2, &s));
    ck_assert(WOULD(Y, T0 + 2, &serving));
    ck_assert(serving);
    ck_assert(WOULD(Z, T0 + 2, &serving));
    ck_assert(!serving);
    llmgw_group_leave(&g, a, T0 + 3);
    /* Just left: still X's (serving X), not yet Y's. */
    ck_assert(WOULD(Y, T0 + 4, NULL));
    ck_assert(!WOULD(X, T0 + 4, &serving));
    ck_assert(serving);
    ck_assert(!WOULD(Y, T0 + 3 + IDLE, NULL));
    ck_assert(!WOULD(X, T0 + 3 + IDLE, &serving));
    ck_assert(!serving);                    /* nothing of X's there any more */
    ck_assert(enter(Y, T0 + 3 + IDLE, &a)); /* its batch served */
    ck_assert(!enter(Z, T0 + 4 + IDLE, &s));
    ck_assert(WOULD(Z, T0 + 4 + IDLE, &serving));
    ck_assert(serving);
    /* What a switch would displace: Y's requests a second, over a turn
     * counted as hold at least (1 request: 1 a second). */
    ck_assert(llmgw_group_would_hold(&g, 1, X, HOLD, T0 + 5 + IDLE, NULL,
                                     &displaced));
    ck_assert_int_eq(displaced, 1);
    ck_assert(enter(Y, T0 + 5 + IDLE, &s));
    ck_assert(enter(Y, T0 + 6 + IDLE, &s));
    ck_assert(llmgw_group_would_hold(&g, 1, X, HOLD, T0 + 6 + IDLE, NULL,
                                     &displaced));
    ck_assert_int_eq(displaced, 3);
    llmgw_group_leave(&g, a, T0 + 7 + IDLE);
    llmgw_group_leave(&g, a, T0 + 7 + IDLE);
    llmgw_group_leave(&g, a, T0 + 7 + IDLE);
    llmgw_group_leave(&g, a, T0 + 7 + IDLE); /* once too often: stays 0 */
    ck_assert(enter(Z, T0 + 7 + 2 * IDLE, &a));
}
END_TEST

START_TEST(held_count_is_bounded)
{
    fresh();
    ck_assert(llmgw_group_hold(&g, 2));
    ck_assert(llmgw_group_hold(&g, 2));
    ck_assert(!llmgw_group_hold(&g, 2));
    llmgw_group_unhold(&g);
    ck_assert(llmgw_group_hold(&g, 2));
    ck_assert(!llmgw_group_hold(&g, 0)); /* queue=0: nobody waits */
    llmgw_group_unhold(&g);
    llmgw_group_unhold(&g);
    llmgw_group_unhold(&g);
    ck_assert_int_eq(g.held, 0);
}
END_TEST

/* Processes each asking for one of three models, on one slot: never two
 * models in flight at once, every one served, nothing left counted. */
typedef struct {
    llmgw_group_t g;
    apr_uint32_t flying; /* the model in flight; 0: none */
    int inflight;
    int violations;
    int served[4];
} shared_t;

#define PROCS 6
#define ROUNDS 300

static void child(shared_t *sh, int i)
{
    apr_uint32_t h = (apr_uint32_t)(i % 3) + 1;
    apr_time_t give_up = apr_time_now() + apr_time_from_sec(20);
    int n, slot;
    volatile int spin;

    for (n = 0; n < ROUNDS; n++) {
        while (llmgw_group_enter(&sh->g, 1, h, apr_time_from_msec(1),
                                 apr_time_now(), &slot)
               == LLMGW_GROUP_HELD) {
            if (apr_time_now() > give_up) {
                _exit(1); /* starved: the parent sees it */
            }
            usleep(50);
        }
        if (__atomic_add_fetch(&sh->inflight, 1, __ATOMIC_ACQ_REL) == 1) {
            __atomic_store_n(&sh->flying, h, __ATOMIC_RELEASE);
        }
        else if (__atomic_load_n(&sh->flying, __ATOMIC_ACQUIRE) != h) {
            __atomic_add_fetch(&sh->violations, 1, __ATOMIC_RELAXED);
        }
        for (spin = 0; spin < 200; spin++) {
        }
        if (__atomic_load_n(&sh->flying, __ATOMIC_ACQUIRE) != h) {
            __atomic_add_fetch(&sh->violations, 1, __ATOMIC_RELAXED);
        }
        __atomic_add_fetch(&sh->served[h], 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&sh->inflight, 1, __ATOMIC_ACQ_REL);
        llmgw_group_leave(&sh->g, slot, apr_time_now());
    }
    _exit(0);
}

START_TEST(one_model_per_slot_across_processes)
{
    shared_t *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pids[PROCS];
    int i, st;

    ck_assert_ptr_ne(sh, MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
    for (i = 0; i < PROCS; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            child(sh, i);
        }
    }
    for (i = 0; i < PROCS; i++) {
        ck_assert_int_eq(waitpid(pids[i], &st, 0), pids[i]);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    ck_assert_int_eq(sh->violations, 0);
    for (i = 1; i <= 3; i++) {
        ck_assert_int_eq(sh->served[i], 2 * ROUNDS); /* none starved */
    }
    ck_assert_uint_eq((unsigned)(sh->g.word[0] & 0x7fffffffu), 0);
    munmap(sh, sizeof(*sh));
}
END_TEST

Suite *group_suite(void)
{
    return test_suite(
        "group", "core", 30,
        TESTS(same_model_joins_other_waits_for_the_drain,
              a_turn_then_a_reservation_and_a_batch,
              a_turn_with_gaps_still_ends, a_reservation_nobody_takes_expires,
              slots_serve_models_at_once, would_hold_and_serving,
              held_count_is_bounded, one_model_per_slot_across_processes));
}
