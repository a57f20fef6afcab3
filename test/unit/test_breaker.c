/* test_breaker.c: the circuit breaker's transitions as pure functions:
 * failures that count and events that never do, the back-off doubling to
 * its cap, one trial at a time in half-open, and the packed word. */
#include <string.h>

#include "llmgw_breaker.h"
#include "test_core.h"

#define T0 APR_INT64_C(1700000000000000)
#define MS(n) ((apr_time_t)(n)*1000)
#define SEC(n) apr_time_from_sec(n)

static llmgw_breaker_params_t params(unsigned n, unsigned m)
{
    return test_breaker_params(n, m, SEC(5));
}

static llmgw_breaker_t fresh(void)
{
    llmgw_breaker_t b;

    memset(&b, 0, sizeof(b));
    return b;
}

static llmgw_breaker_t feed(llmgw_breaker_t b, llmgw_event_t ev,
                            apr_time_t now, const llmgw_breaker_params_t *p)
{
    return llmgw_breaker_next(b, ev, LLMGW_BR_NO_TRIAL, now, p);
}

START_TEST(params_checked)
{
    llmgw_breaker_params_t p;

    llmgw_breaker_params_default(&p);
    ck_assert_ptr_null(llmgw_breaker_params_check(&p));
    ck_assert_uint_eq(p.fails_to_open, 3);
    ck_assert_uint_eq(p.successes_to_close, 2);
    p.fails_to_open = 0;
    ck_assert_ptr_nonnull(llmgw_breaker_params_check(&p));
    p.fails_to_open = 128;
    ck_assert_ptr_nonnull(llmgw_breaker_params_check(&p));
    p.fails_to_open = 127;
    p.successes_to_close = 32;
    ck_assert_ptr_nonnull(llmgw_breaker_params_check(&p));
    p.successes_to_close = 31;
    p.backoff_max = p.backoff - 1;
    ck_assert_ptr_nonnull(llmgw_breaker_params_check(&p));
    p.backoff_max = SEC(86401);
    ck_assert_ptr_nonnull(llmgw_breaker_params_check(&p));
    p.backoff_max = SEC(86400);
    ck_assert_ptr_null(llmgw_breaker_params_check(&p));
    p.trial_timeout = 0;
    ck_assert_ptr_nonnull(llmgw_breaker_params_check(&p));
}
END_TEST

/* Each failure kind counts; N in a row open; a success in between
 * starts again. */
START_TEST(closed_counts_failures)
{
    static const llmgw_event_t failures[] = {
        LLMGW_EV_CONNECT_ERROR,
        LLMGW_EV_HTTP_5XX,
        LLMGW_EV_TIMEOUT_FIRST_BYTE,
        LLMGW_EV_TIMEOUT_FIRST_TOKEN,
        LLMGW_EV_TIMEOUT_BETWEEN_TOKENS,
        LLMGW_EV_BAD_ANSWER,
        LLMGW_EV_PROBE_FAIL,
    };
    llmgw_breaker_params_t p = params(3, 1);
    apr_size_t i;

    for (i = 0; i < sizeof(failures) / sizeof(failures[0]); i++) {
        llmgw_breaker_t b = fresh();

        ck_assert(llmgw_event_is_failure(failures[i]));
        b = feed(b, failures[i], T0, &p);
        b = feed(b, failures[i], T0, &p);
        ck_assert_int_eq(b.state, LLMGW_BR_CLOSED);
        ck_assert_uint_eq(b.fails, 2);
        b = feed(b, LLMGW_EV_SUCCESS, T0, &p);
        ck_assert_uint_eq(b.fails, 0);
        b = feed(b, failures[i], T0, &p);
        b = feed(b, failures[i], T0, &p);
        b = feed(b, failures[i], T0 + 7, &p);
        ck_assert_int_eq(b.state, LLMGW_BR_OPEN);
        ck_assert_uint_eq(b.opens, 1);
        ck_assert_int_eq(b.at, T0 + 7 + MS(100));
    }
}
END_TEST

/* Loading, busy, a client's abort or error, a probe's answer: none
 * counts against a member, and none wipes the failures either. */
START_TEST(neutral_events_never_count)
{
    static const llmgw_event_t neutral[] = {
        LLMGW_EV_LOADING,      LLMGW_EV_BUSY,     LLMGW_EV_CLIENT_ABORT,
        LLMGW_EV_CLIENT_ERROR, LLMGW_EV_PROBE_OK,
    };
    llmgw_breaker_params_t p = params(2, 1);
    llmgw_breaker_t b = feed(fresh(), LLMGW_EV_HTTP_5XX, T0, &p);
    apr_size_t i;
    int k;

    for (i = 0; i < sizeof(neutral) / sizeof(neutral[0]); i++) {
        ck_assert(!llmgw_event_is_failure(neutral[i]));
        for (k = 0; k < 1000; k++) {
            b = feed(b, neutral[i], T0 + k, &p);
        }
        ck_assert_int_eq(b.state, LLMGW_BR_CLOSED);
        ck_assert_uint_eq(b.fails, 1);
    }
    ck_assert(!llmgw_event_is_failure(LLMGW_EV_SUCCESS));
    /* Not an event at all: nothing changes. */
    b = feed(b, LLMGW_EV_COUNT, T0, &p);
    ck_assert_uint_eq(b.fails, 1);
    ck_assert_str_eq(llmgw_event_name(LLMGW_EV_CLIENT_ABORT), "client-abort");
    ck_assert_str_eq(llmgw_event_name(LLMGW_EV_COUNT), "unknown");
}
END_TEST

/* Open: nothing counts until the back-off is over, then it is half-open
 * by itself. */
START_TEST(open_backs_off)
{
    llmgw_breaker_params_t p = params(1, 1);
    llmgw_breaker_t b = feed(fresh(), LLMGW_EV_CONNECT_ERROR, T0, &p), n;

    ck_assert_int_eq(llmgw_breaker_state(&b, T0 + MS(99)), LLMGW_BR_OPEN);
    ck_assert_int_eq(llmgw_breaker_claim(b, T0 + MS(99), &p, &n), 0);
    n = feed(b, LLMGW_EV_SUCCESS, T0 + MS(50), &p);
    n = feed(n, LLMGW_EV_PROBE_OK, T0 + MS(50), &p);
    n = feed(n, LLMGW_EV_CONNECT_ERROR, T0 + MS(50), &p);
    ck_assert_mem_eq(&n, &b, sizeof(b));
    ck_assert_int_eq(llmgw_breaker_state(&b, T0 + MS(100)),
                     LLMGW_BR_HALF_OPEN);
}
END_TEST

START_TEST(backoff_doubles_to_cap)
{
    llmgw_breaker_params_t p = params(1, 1);
    static const int want_ms[] = { 100, 200, 400, 800, 1000, 1000, 1000 };
    llmgw_breaker_t b = fresh(), n;
    apr_time_t now = T0;
    unsigned k;
    int token;

    for (k = 1; k <= 40; k++) {
        apr_interval_time_t d = llmgw_breaker_backoff(k, &p);

        ck_assert_int_eq(d, MS(want_ms[k < 7 ? k - 1 : 6]));
    }
    /* Through the machine: each failed trial doubles it. */
    b = feed(b, LLMGW_EV_HTTP_5XX, now, &p);
    for (k = 0; k < 40; k++) {
        ck_assert_int_eq(b.state, LLMGW_BR_OPEN);
        ck_assert_int_eq(b.at - now, MS(want_ms[k < 7 ? k : 6]));
        now = b.at;
        ck_assert_int_eq(llmgw_breaker_claim(b, now, &p, &n), 1);
        token = (int)n.gen;
        b = llmgw_breaker_next(n, LLMGW_EV_TIMEOUT_FIRST_TOKEN, token, now,
                               &p);
    }
    ck_assert_uint_eq(b.opens, LLMGW_BR_MAX_OPENS);
    /* A huge cap does not overflow. */
    p.backoff_max = LLMGW_BR_MAX_BACKOFF;
    ck_assert_int_eq(llmgw_breaker_backoff(31, &p), LLMGW_BR_MAX_BACKOFF);
}
END_TEST

/* Half-open: one trial at a time; its success counts, M close it and
 * the back-off starts over; what others report is ignored. */
START_TEST(half_open_single_trial)
{
    llmgw_breaker_params_t p = params(1, 2);
    llmgw_breaker_t b = feed(fresh(), LLMGW_EV_HTTP_5XX, T0, &p), n, x;
    apr_time_t now = b.at;
    int token;

    ck_assert_int_eq(llmgw_breaker_claim(b, now, &p, &n), 1);
    ck_assert_int_eq(n.state, LLMGW_BR_HALF_OPEN);
    ck_assert_uint_eq(n.trial, 1);
    token = (int)n.gen;
    b = n;
    ck_assert_int_eq(llmgw_breaker_claim(b, now + SEC(4), &p, &n), 0);
    /* Others' news, and a stale token, change nothing. */
    x = llmgw_breaker_next(b, LLMGW_EV_SUCCESS, LLMGW_BR_NO_TRIAL, now, &p);
    x = llmgw_breaker_next(x, LLMGW_EV_HTTP_5XX, LLMGW_BR_NO_TRIAL, now, &p);
    x = llmgw_breaker_next(x, LLMGW_EV_SUCCESS, (token + 1) & 15, now, &p);
    ck_assert_mem_eq(&x, &b, sizeof(b));
    /* The trial's success: one of two; the trial is free again. */
    b = llmgw_breaker_next(b, LLMGW_EV_SUCCESS, token, now + MS(10), &p);
    ck_assert_int_eq(b.state, LLMGW_BR_HALF_OPEN);
    ck_assert_uint_eq(b.successes, 1);
    ck_assert_uint_eq(b.trial, 0);
    ck_assert_int_eq(llmgw_breaker_claim(b, now + MS(10), &p, &n), 1);
    ck_assert_int_ne((int)n.gen, token);
    token = (int)n.gen;
    b = llmgw_breaker_next(n, LLMGW_EV_SUCCESS, token, now + MS(20), &p);
    ck_assert_int_eq(b.state, LLMGW_BR_CLOSED);
    ck_assert_uint_eq(b.opens, 0);
    ck_assert_uint_eq(b.successes, 0);
    /* Closed again: the next opening backs off from the start. */
    b = feed(b, LLMGW_EV_HTTP_5XX, now + MS(30), &p);
    ck_assert_int_eq(b.at, now + MS(30) + MS(100));
}
END_TEST

/* The trial's failure opens again; its abort, loading, busy or client
 * error hands it back without counting. */
START_TEST(trial_outcomes)
{
    static const llmgw_event_t neutral[] = {
        LLMGW_EV_CLIENT_ABORT,
        LLMGW_EV_LOADING,
        LLMGW_EV_BUSY,
        LLMGW_EV_CLIENT_ERROR,
    };
    llmgw_breaker_params_t p = params(1, 1);
    llmgw_breaker_t open = feed(fresh(), LLMGW_EV_HTTP_5XX, T0, &p), b, n;
    apr_time_t now = open.at;
    apr_size_t i;

    for (i = 0; i < sizeof(neutral) / sizeof(neutral[0]); i++) {
        ck_assert_int_eq(llmgw_breaker_claim(open, now, &p, &n), 1);
        b = llmgw_breaker_next(n, neutral[i], (int)n.gen, now, &p);
        ck_assert_int_eq(b.state, LLMGW_BR_HALF_OPEN);
        ck_assert_uint_eq(b.trial, 0);
        ck_assert_uint_eq(b.successes, 0);
        ck_assert_int_eq(llmgw_breaker_claim(b, now, &p, &n), 1);
    }
    ck_assert_int_eq(llmgw_breaker_claim(open, now, &p, &n), 1);
    b = llmgw_breaker_next(n, LLMGW_EV_CONNECT_ERROR, (int)n.gen, now, &p);
    ck_assert_int_eq(b.state, LLMGW_BR_OPEN);
    ck_assert_uint_eq(b.opens, 2);
    ck_assert_int_eq(b.at, now + MS(200));
}
END_TEST

/* A trial that never reports (its process died) times out and the next
 * request gets it; the dead one's late word is ignored. */
START_TEST(trial_times_out)
{
    llmgw_breaker_params_t p = params(1, 1);
    llmgw_breaker_t b = feed(fresh(), LLMGW_EV_HTTP_5XX, T0, &p), n;
    apr_time_t now = b.at;
    int first;

    ck_assert_int_eq(llmgw_breaker_claim(b, now, &p, &b), 1);
    first = (int)b.gen;
    ck_assert_int_eq(llmgw_breaker_claim(b, now + SEC(5) - 1, &p, &n), 0);
    ck_assert_int_eq(llmgw_breaker_claim(b, now + SEC(5), &p, &n), 1);
    b = llmgw_breaker_next(n, LLMGW_EV_SUCCESS, first, now + SEC(6), &p);
    ck_assert_int_eq(b.state, LLMGW_BR_HALF_OPEN);
    ck_assert_uint_eq(b.trial, 1);
    b = llmgw_breaker_next(b, LLMGW_EV_SUCCESS, (int)n.gen, now + SEC(6), &p);
    ck_assert_int_eq(b.state, LLMGW_BR_CLOSED);
}
END_TEST

/* In half-open an active probe is a trial of its own: its answer counts
 * as a success, its failure opens. */
START_TEST(probes_in_half_open)
{
    llmgw_breaker_params_t p = params(1, 2);
    llmgw_breaker_t open = feed(fresh(), LLMGW_EV_HTTP_5XX, T0, &p), b;
    apr_time_t now = open.at;

    b = feed(open, LLMGW_EV_PROBE_OK, now, &p);
    ck_assert_int_eq(b.state, LLMGW_BR_HALF_OPEN);
    ck_assert_uint_eq(b.successes, 1);
    b = feed(b, LLMGW_EV_LOADING, now, &p);
    ck_assert_uint_eq(b.successes, 1);
    b = feed(b, LLMGW_EV_PROBE_OK, now, &p);
    ck_assert_int_eq(b.state, LLMGW_BR_CLOSED);
    b = feed(open, LLMGW_EV_PROBE_FAIL, now, &p);
    ck_assert_int_eq(b.state, LLMGW_BR_OPEN);
    ck_assert_uint_eq(b.opens, 2);
    ck_assert_int_eq(llmgw_breaker_claim(fresh(), T0, &p, &b), 0);
}
END_TEST

/* A scripted life: each step an event (or a claim), a time, and the
 * state as of that time afterwards. */
START_TEST(scripted_transitions)
{
    enum { CLAIM = LLMGW_EV_COUNT + 1 };
    static const struct {
        int ev;    /* an event, or CLAIM */
        int trial; /* report with the last claim's token */
        int at_ms;
        llmgw_br_state_t want;
    } steps[] = {
        { LLMGW_EV_SUCCESS, 0, 0, LLMGW_BR_CLOSED },
        { LLMGW_EV_HTTP_5XX, 0, 1, LLMGW_BR_CLOSED },
        { LLMGW_EV_CLIENT_ABORT, 0, 2, LLMGW_BR_CLOSED },
        { LLMGW_EV_TIMEOUT_FIRST_BYTE, 0, 3, LLMGW_BR_OPEN }, /* to 103 */
        { LLMGW_EV_SUCCESS, 0, 50, LLMGW_BR_OPEN },
        { CLAIM, 0, 103, LLMGW_BR_HALF_OPEN },
        { LLMGW_EV_HTTP_5XX, 0, 104, LLMGW_BR_HALF_OPEN }, /* not it */
        { LLMGW_EV_BAD_ANSWER, 1, 105, LLMGW_BR_OPEN },    /* to 305 */
        { LLMGW_EV_PROBE_OK, 0, 304, LLMGW_BR_OPEN },
        { LLMGW_EV_PROBE_OK, 0, 305, LLMGW_BR_HALF_OPEN }, /* 1 of 2 */
        { CLAIM, 0, 306, LLMGW_BR_HALF_OPEN },
        { LLMGW_EV_SUCCESS, 1, 307, LLMGW_BR_CLOSED }, /* 2 of 2 */
        { LLMGW_EV_CONNECT_ERROR, 0, 308, LLMGW_BR_CLOSED },
        { LLMGW_EV_LOADING, 0, 309, LLMGW_BR_CLOSED },
        { LLMGW_EV_CONNECT_ERROR, 0, 310, LLMGW_BR_OPEN }, /* to 410 */
        { LLMGW_EV_PROBE_FAIL, 0, 410, LLMGW_BR_OPEN },    /* to 610 */
        { LLMGW_EV_COUNT, 0, 609, LLMGW_BR_OPEN },
        { LLMGW_EV_COUNT, 0, 610, LLMGW_BR_HALF_OPEN },
    };
    llmgw_breaker_params_t p = params(2, 2);
    llmgw_breaker_t b = fresh(), n;
    apr_size_t i;
    int token = LLMGW_BR_NO_TRIAL;

    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        apr_time_t now = T0 + MS(steps[i].at_ms);

        if (steps[i].ev == CLAIM) {
            ck_assert_int_eq(llmgw_breaker_claim(b, now, &p, &n), 1);
            b = n;
            token = (int)n.gen;
        }
        else {
            b = llmgw_breaker_next(b, (llmgw_event_t)steps[i].ev,
                                   steps[i].trial ? token : LLMGW_BR_NO_TRIAL,
                                   now, &p);
        }
        if (llmgw_breaker_state(&b, now) != steps[i].want) {
            ck_abort_msg("step %zu: %s, want %s", i,
                         llmgw_br_state_name(llmgw_breaker_state(&b, now)),
                         llmgw_br_state_name(steps[i].want));
        }
    }
}
END_TEST

/* Packed and unpacked: the same breaker, times rounded up to the next
 * millisecond (a back-off never ends early). */
START_TEST(pack_roundtrip)
{
    llmgw_breaker_t b, u;
    unsigned long rnd = 99;
    int i;

    for (i = 0; i < 10000; i++) {
        rnd = rnd * 6364136223846793005ul + 1442695040888963407ul;
        b.state = (llmgw_br_state_t)((rnd >> 20) % 3);
        b.trial = (rnd >> 23) & 1;
        b.gen = (rnd >> 24) & 15;
        b.fails = (rnd >> 28) & 127;
        b.successes = (rnd >> 35) & 31;
        b.opens = (rnd >> 40) & 31;
        b.at = b.state == LLMGW_BR_CLOSED
                   ? 0
                   : T0 + (apr_time_t)((rnd >> 8) % SEC(86400 * 365));
        u = llmgw_breaker_unpack(llmgw_breaker_pack(&b, T0), T0);
        ck_assert_int_eq(u.state, b.state);
        ck_assert_uint_eq(u.trial, b.trial);
        ck_assert_uint_eq(u.gen, b.gen);
        ck_assert_uint_eq(u.fails, b.fails);
        ck_assert_uint_eq(u.successes, b.successes);
        ck_assert_uint_eq(u.opens, b.opens);
        ck_assert_int_ge(u.at, b.at);
        ck_assert_int_lt(u.at, b.at + 1000);
        ck_assert_int_eq(u.at % 1000, T0 % 1000);
    }
    /* Closed packs to its counters only. */
    b = fresh();
    b.fails = 5;
    b.at = T0 + 77;
    ck_assert_uint_eq(llmgw_breaker_pack(&b, T0), 5u << 7);
    /* Past 34 years from the origin: the farthest time it holds. */
    b.state = LLMGW_BR_OPEN;
    b.at = T0 + SEC(86400) * 365 * 40;
    u = llmgw_breaker_unpack(llmgw_breaker_pack(&b, T0), T0);
    ck_assert_int_eq(u.at, T0 + ((APR_INT64_C(1) << 40) - 1) * 1000);
}
END_TEST

Suite *breaker_suite(void)
{
    return test_suite("breaker", "core", 0,
                      TESTS(params_checked, closed_counts_failures,
                            neutral_events_never_count, open_backs_off,
                            backoff_doubles_to_cap, half_open_single_trial,
                            trial_outcomes, trial_times_out,
                            probes_in_half_open, scripted_transitions,
                            pack_roundtrip));
}
