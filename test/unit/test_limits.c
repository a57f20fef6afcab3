/* test_limits.c: the limits table: every limit kind, periods rolling over
 * with reservations in flight, refunds, cost budgets, headers and 429s,
 * config changes, snapshots (and corrupt ones), sweeps of dead owners,
 * the journal against a process killed mid-transaction at every write,
 * processes hammering one table, cluster sync, the config parsers. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <apr_hash.h>
#include <apr_strings.h>

#include "llmgw_limits.h"
#include "test_core.h"

/* 2026-01-01T00:00:00Z */
#define T0 (APR_INT64_C(1767225600) * APR_USEC_PER_SEC)
#define SEC APR_USEC_PER_SEC
#define DAY (86400 * SEC)

static llmgw_limits_t *table_flags(apr_uint32_t subjects, apr_uint32_t records,
                                   int flags)
{
    apr_size_t size = llmgw_limits_size(subjects, records);
    void *mem = apr_palloc(test_pool, size);
    llmgw_limits_t *t;

    memset(mem, 0xa5, size); /* init takes any content */
    t = llmgw_limits_init(mem, size, subjects, records, flags);
    ck_assert_ptr_nonnull(t);
    return t;
}

static llmgw_limits_t *table(void)
{
    return table_flags(16, 16, 0);
}

static llmgw_limits_conf_t conf_of(apr_int64_t rpm, apr_int64_t tpm,
                                   apr_int64_t concurrent)
{
    return (llmgw_limits_conf_t){ .rpm = rpm,
                                  .tpm = tpm,
                                  .concurrent = concurrent };
}

static void budget(llmgw_limits_conf_t *c, int i, int unit, int per,
                   apr_int64_t limit)
{
    c->budget[i].unit = unit;
    c->budget[i].per = per;
    c->budget[i].limit = limit;
}

/* c with a budget of limit tokens a day, its first. */
static llmgw_limits_conf_t tokens_a_day(llmgw_limits_conf_t c,
                                        apr_int64_t limit)
{
    budget(&c, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, limit);
    return c;
}

/* Budget i of u has used and reserved so much. */
static void held(const llmgw_limits_usage_t *u, int i, apr_int64_t used,
                 apr_int64_t reserved)
{
    ck_assert_int_eq(u->budget[i].used, used);
    ck_assert_int_eq(u->budget[i].reserved, reserved);
}

/* Configures the table with one subject "key:a" of limits c. */
static llmgw_limits_subject_t one(llmgw_limits_t *t,
                                  const llmgw_limits_conf_t *c)
{
    llmgw_limits_def_t d;
    llmgw_limits_subject_t s;

    d.name = "key:a";
    d.conf = *c;
    ck_assert_int_eq(llmgw_limits_configure(t, &d, 1, NULL, T0), APR_SUCCESS);
    ck_assert_int_eq(llmgw_limits_find(t, "key:a", &s), APR_SUCCESS);
    return s;
}

/* A fresh table with one subject "key:a" of limits c, in *s. */
static llmgw_limits_t *table_one(llmgw_limits_conf_t c,
                                 llmgw_limits_subject_t *s)
{
    llmgw_limits_t *t = table();

    *s = one(t, &c);
    return t;
}

static llmgw_limits_req_t request(const llmgw_limits_subject_t *s, int n,
                                  apr_int64_t prompt, apr_int64_t max_out)
{
    llmgw_limits_req_t rq;
    int i;

    memset(&rq, 0, sizeof(rq));
    for (i = 0; i < n; i++) {
        rq.subject[i] = s[i];
    }
    rq.nsubjects = n;
    rq.prompt = prompt;
    rq.max_out = max_out;
    rq.owner = getpid();
    return rq;
}

static llmgw_limit_kind_t reserve(llmgw_limits_t *t,
                                  const llmgw_limits_subject_t *s, int n,
                                  apr_int64_t prompt, apr_int64_t max_out,
                                  apr_time_t now, llmgw_limits_ticket_t *tk,
                                  llmgw_limits_verdict_t *v)
{
    llmgw_limits_req_t rq = request(s, n, prompt, max_out);

    return llmgw_limits_reserve(t, &rq, now, tk, v);
}

static llmgw_limits_usage_t usage(llmgw_limits_t *t, llmgw_limits_subject_t s,
                                  apr_time_t now)
{
    llmgw_limits_usage_t u;

    ck_assert_int_eq(llmgw_limits_usage(t, &s, now, &u), APR_SUCCESS);
    return u;
}

/* ---------------------------------------------------------------------
 * Each limit kind
 */

START_TEST(rpm_admits_the_limit_then_refills)
{
    llmgw_limits_subject_t s;
    llmgw_limits_t *t = table_one(conf_of(3, 0, 0), &s);
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    int i;

    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(reserve(t, &s, 1, 10, 10, T0, &tk, &v),
                         LLMGW_LIMIT_OK);
        ck_assert_int_eq(v.limit_requests, 3);
        ck_assert_int_eq(v.remaining_requests, 2 - i);
        ck_assert_int_eq(v.limit_tokens, -1);
        ck_assert_int_eq(llmgw_limits_settle(t, &tk, 5, 5, T0), APR_SUCCESS);
    }
    ck_assert_int_eq(v.reset_requests, 60 * SEC);
    ck_assert_int_eq(reserve(t, &s, 1, 10, 10, T0, &tk, &v), LLMGW_LIMIT_RPM);
    ck_assert_int_eq(v.retry_after, 20);
    ck_assert_int_eq(v.remaining_requests, 0);
    ck_assert_int_eq(v.limit, 3);
    ck_assert_int_eq(v.used, 3);
    /* One request comes back every 20 s, all of them in a minute. */
    ck_assert_int_eq(reserve(t, &s, 1, 10, 10, T0 + 20 * SEC - 1, &tk, &v),
                     LLMGW_LIMIT_RPM);
    ck_assert_int_eq(v.retry_after, 1);
    ck_assert_int_eq(reserve(t, &s, 1, 10, 10, T0 + 20 * SEC, &tk, &v),
                     LLMGW_LIMIT_OK);
    llmgw_limits_settle(t, &tk, 1, 1, T0 + 20 * SEC);
    ck_assert_int_eq(reserve(t, &s, 1, 10, 10, T0 + 21 * SEC, &tk, &v),
                     LLMGW_LIMIT_RPM);
    ck_assert_int_eq(usage(t, s, T0 + 80 * SEC).rpm_remaining, 3);
    ck_assert_int_eq(usage(t, s, T0).refused[LLMGW_LIMIT_RPM], 3);
    ck_assert_int_eq(usage(t, s, T0).requests, 4);
}
END_TEST

START_TEST(changes_tell_when_a_snapshot_is_due)
{
    llmgw_limits_subject_t s;
    llmgw_limits_t *t = table_one(conf_of(3, 0, 0), &s);
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    llmgw_limits_stats_t a, b;
    const char *snap;
    apr_size_t len;

    llmgw_limits_stats(t, &a);
    usage(t, s, T0);
    llmgw_limits_snapshot(t, test_pool, T0, &snap, &len);
    llmgw_limits_stats(t, &b);
    ck_assert_int_eq(a.changes, b.changes);
    reserve(t, &s, 1, 1, 1, T0, &tk, &v);
    llmgw_limits_stats(t, &b);
    ck_assert_int_gt(b.changes, a.changes);
}
END_TEST

START_TEST(rpm_of_seven_admits_seven)
{
    /* 60 s / 7 is not a whole number of microseconds: exact ticks. */
    llmgw_limits_subject_t s;
    llmgw_limits_t *t = table_one(conf_of(7, 0, 0), &s);
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    apr_time_t now;
    int i, n = 0;

    for (i = 0; i < 7; i++) {
        ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &tk, &v), LLMGW_LIMIT_OK);
        llmgw_limits_settle(t, &tk, 1, 1, T0);
    }
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &tk, &v), LLMGW_LIMIT_RPM);
    /* Over the next 10 minutes, one every 60/7 s: 70, not one more. */
    for (now = T0; now < T0 + 600 * SEC; now += SEC / 4) {
        if (reserve(t, &s, 1, 1, 1, now, &tk, &v) == LLMGW_LIMIT_OK) {
            llmgw_limits_settle(t, &tk, 1, 1, now);
            n++;
        }
    }
    ck_assert_int_eq(n, 69); /* the 70th falls due at T0 + 600 s */
}
END_TEST

START_TEST(tpm_reserves_then_refunds)
{
    llmgw_limits_subject_t s;
    llmgw_limits_t *t = table_one(conf_of(0, 1000, 0), &s);
    llmgw_limits_ticket_t a, b;
    llmgw_limits_verdict_t v;

    ck_assert_int_eq(reserve(t, &s, 1, 400, 300, T0, &a, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(v.limit_tokens, 1000);
    ck_assert_int_eq(v.remaining_tokens, 300);
    ck_assert_int_eq(reserve(t, &s, 1, 400, 300, T0, &b, &v), LLMGW_LIMIT_TPM);
    ck_assert_int_eq(v.requested, 700);
    ck_assert_int_eq(v.used, 700);
    ck_assert_int_eq(v.too_large, 0);
    /* 400 more tokens come back at 1000 a minute: 24 s. */
    ck_assert_int_eq(v.retry_after, 24);
    /* A short answer gives back what it did not use. */
    ck_assert_int_eq(llmgw_limits_settle(t, &a, 80, 20, T0), APR_SUCCESS);
    ck_assert_int_eq(usage(t, s, T0).tpm_remaining, 900);
    ck_assert_int_eq(reserve(t, &s, 1, 400, 300, T0, &b, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(v.remaining_tokens, 200);
    /* More than the whole minute's tokens never fits. */
    ck_assert_int_eq(reserve(t, &s, 1, 1000, 1, T0 + DAY, &a, &v),
                     LLMGW_LIMIT_TPM);
    ck_assert_int_eq(v.too_large, 1);
    ck_assert_int_eq(v.retry_after, 60);
}
END_TEST

START_TEST(concurrency_counts_requests_in_flight)
{
    llmgw_limits_subject_t s;
    llmgw_limits_t *t = table_one(conf_of(0, 0, 2), &s);
    llmgw_limits_ticket_t a, b, x;
    llmgw_limits_verdict_t v;

    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &a, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &b, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &x, &v),
                     LLMGW_LIMIT_CONCURRENT);
    ck_assert_int_eq(v.retry_after, 1);
    ck_assert_int_eq(v.limit, 2);
    ck_assert_int_eq(usage(t, s, T0).inflight, 2);
    /* A failure ends the request in flight as a success does. */
    ck_assert_int_eq(llmgw_limits_settle(t, &a, 0, 0, T0), APR_SUCCESS);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &x, &v), LLMGW_LIMIT_OK);
    llmgw_limits_settle(t, &b, 1, 1, T0);
    llmgw_limits_settle(t, &x, 1, 1, T0);
    ck_assert_int_eq(usage(t, s, T0).inflight, 0);
}
END_TEST

START_TEST(token_budget_holds_and_tells_spent_from_held)
{
    llmgw_limits_subject_t s;
    llmgw_limits_t *t = table_one(tokens_a_day(conf_of(0, 0, 0), 1000), &s);
    llmgw_limits_ticket_t a, b;
    llmgw_limits_verdict_t v;
    llmgw_error_t err;
    llmgw_limits_usage_t u;

    ck_assert_int_eq(reserve(t, &s, 1, 100, 500, T0 + 3600 * SEC, &a, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(v.limit_tokens, 1000);
    ck_assert_int_eq(v.remaining_tokens, 400);
    ck_assert_int_eq(v.reset_tokens, 23 * 3600 * SEC);
    /* Held by the request in flight: not spent, try again soon. */
    ck_assert_int_eq(reserve(t, &s, 1, 100, 500, T0 + 3600 * SEC, &b, &v),
                     LLMGW_LIMIT_BUDGET_TOKENS);
    ck_assert_int_eq(v.spent, 0);
    ck_assert_int_eq(v.retry_after, 1);
    ck_assert_int_eq(llmgw_limits_error(test_pool, &v, &err), 429);
    ck_assert_str_eq(err.code, "rate_limit_exceeded");
    ck_assert_int_eq(llmgw_limits_settle(t, &a, 100, 350, T0 + 3600 * SEC),
                     APR_SUCCESS);
    u = usage(t, s, T0 + 3600 * SEC);
    held(&u, 0, 450, 0);
    ck_assert_int_eq(u.budget[0].remaining, 550);
    ck_assert_int_eq(u.budget[0].reset, T0 + DAY);
    ck_assert_int_eq(reserve(t, &s, 1, 100, 450, T0 + 3600 * SEC, &b, &v),
                     LLMGW_LIMIT_OK);
    llmgw_limits_settle(t, &b, 100, 400, T0 + 7200 * SEC);
    /* 950 used: 100 more is spent until midnight UTC. */
    ck_assert_int_eq(reserve(t, &s, 1, 50, 51, T0 + 7200 * SEC, &a, &v),
                     LLMGW_LIMIT_BUDGET_TOKENS);
    ck_assert_int_eq(v.spent, 1);
    ck_assert_int_eq(v.too_large, 0);
    ck_assert_int_eq(v.retry_after, 22 * 3600);
    ck_assert_int_eq(v.used, 950);
    ck_assert_int_eq(v.requested, 101);
    ck_assert_int_eq(v.per, LLMGW_PER_DAY);
    llmgw_limits_error(test_pool, &v, &err);
    ck_assert_str_eq(err.code, "insufficient_quota");
    ck_assert_str_eq(err.type, "insufficient_quota");
    ck_assert_int_eq(reserve(t, &s, 1, 25, 25, T0 + 7200 * SEC, &a, &v),
                     LLMGW_LIMIT_OK);
    llmgw_limits_settle(t, &a, 25, 25, T0 + 7200 * SEC);
    ck_assert_int_eq(usage(t, s, T0 + 7200 * SEC).budget[0].used, 1000);
    /* The next day starts from nothing. */
    ck_assert_int_eq(reserve(t, &s, 1, 100, 900, T0 + DAY, &a, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(usage(t, s, T0 + DAY).budget[0].prev_used, 1000);
}
END_TEST

START_TEST(periods_are_calendar_aligned_in_utc)
{
    /* 2024-02-29T13:45:10Z: a leap day. */
    const apr_time_t leap = APR_INT64_C(1709214310) * SEC;
    /* The period of 'now' (next 0) or the next one (1) starts at start. */
    const struct {
        llmgw_period_t per;
        apr_time_t now;
        int next;
        apr_time_t start;
    } starts[] = {
        { LLMGW_PER_HOUR, leap, 0, APR_INT64_C(1709211600) * SEC },
        { LLMGW_PER_HOUR, leap, 1, APR_INT64_C(1709215200) * SEC },
        { LLMGW_PER_DAY, leap, 0, APR_INT64_C(1709164800) * SEC },
        { LLMGW_PER_DAY, leap, 1, APR_INT64_C(1709251200) * SEC },
        /* February 2024 has 29 days: March starts on day 29 after it. */
        { LLMGW_PER_MONTH, leap, 0, APR_INT64_C(1706745600) * SEC },
        { LLMGW_PER_MONTH, leap, 1, APR_INT64_C(1709251200) * SEC },
        /* December to January, and the first microsecond of a month. */
        { LLMGW_PER_MONTH, T0 - 1, 1, T0 },
        { LLMGW_PER_MONTH, T0, 0, T0 },
        { LLMGW_PER_MONTH, T0 - 1, 0, APR_INT64_C(1764547200) * SEC },
    };
    unsigned i;

    for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        apr_time_t got = llmgw_limits_period_start(
            starts[i].per, starts[i].now, starts[i].next);

        ck_assert_msg(got == starts[i].start, "%u: %" APR_INT64_T_FMT, i, got);
    }
    /* 2100 is not a leap year: March 2100 starts 28 days after Feb 1. */
    ck_assert_int_eq(llmgw_limits_period_start(
                         LLMGW_PER_MONTH, APR_INT64_C(4105123200) * SEC, 1)
                         - APR_INT64_C(4105123200) * SEC,
                     28 * DAY);
}
END_TEST

START_TEST(rollover_with_reservations_in_flight)
{
    llmgw_limits_conf_t c = conf_of(0, 0, 0);
    llmgw_limits_subject_t s;
    llmgw_limits_t *t;
    llmgw_limits_ticket_t old, fresh;
    llmgw_limits_verdict_t v;
    llmgw_limits_usage_t u;
    apr_time_t eve = T0 + DAY - 10 * SEC, morning = T0 + DAY + 10 * SEC;

    budget(&c, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 1000);
    budget(&c, 1, LLMGW_BUDGET_TOKENS, LLMGW_PER_MONTH, 100000);
    t = table_one(c, &s);
    ck_assert_int_eq(reserve(t, &s, 1, 100, 500, eve, &old, &v),
                     LLMGW_LIMIT_OK);
    /* A new day: the reservation of yesterday does not hold today. */
    ck_assert_int_eq(reserve(t, &s, 1, 100, 900, morning, &fresh, &v),
                     LLMGW_LIMIT_OK);
    u = usage(t, s, morning);
    ck_assert_int_eq(u.budget[0].reserved, 1000);
    ck_assert_int_eq(u.budget[1].reserved, 1600);
    /* Yesterday's request is charged to yesterday, the month to both. */
    ck_assert_int_eq(llmgw_limits_settle(t, &old, 100, 300, morning),
                     APR_SUCCESS);
    u = usage(t, s, morning);
    held(&u, 0, 0, 1000);
    ck_assert_int_eq(u.budget[0].prev_used, 400);
    held(&u, 1, 400, 1000);
    ck_assert_int_eq(llmgw_limits_settle(t, &fresh, 100, 100, morning),
                     APR_SUCCESS);
    u = usage(t, s, morning);
    held(&u, 0, 200, 0);
    held(&u, 1, 600, 0);
    /* A clock that steps back never reopens yesterday. */
    ck_assert_int_eq(usage(t, s, eve).budget[0].used, 200);
    /* Two days on, the day before shows nothing, not the last one. */
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, morning + 2 * DAY, &old, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(usage(t, s, morning + 2 * DAY).budget[0].prev_used, 0);
    ck_assert_int_eq(usage(t, s, morning + 3 * DAY).budget[0].prev_used, 0);
}
END_TEST

START_TEST(cost_budget_in_micro_units)
{
    llmgw_limits_conf_t c = conf_of(0, 0, 0);
    llmgw_limits_subject_t s;
    llmgw_limits_t *t;
    llmgw_limits_ticket_t a, b, x;
    llmgw_limits_verdict_t v;
    llmgw_limits_req_t rq;
    llmgw_error_t err;
    llmgw_limits_usage_t u;

    budget(&c, 0, LLMGW_BUDGET_COST, LLMGW_PER_MONTH, 10000); /* 0.01 */
    t = table_one(c, &s);
    rq = request(&s, 1, 1000, 2000);
    rq.price.in = 1000000; /* 1.00 a million */
    rq.price.out = 2000000;
    /* 1000 * 1 + 2000 * 2 = 5000 micro-units reserved each. */
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &a, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &b, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &x, &v),
                     LLMGW_LIMIT_BUDGET_COST);
    ck_assert_int_eq(v.requested, 5000);
    llmgw_limits_error(test_pool, &v, &err);
    ck_assert_str_eq(err.message,
                     "Your cost budget for this month is held "
                     "by requests in flight: Limit 0.01, Used 0.01 "
                     "(reserved included), Requested 0.005. Please try "
                     "again in 1s.");
    ck_assert_int_eq(llmgw_limits_settle(t, &a, 1000, 500, T0), APR_SUCCESS);
    u = usage(t, s, T0);
    held(&u, 0, 2000, 5000);
    ck_assert_int_eq(u.cost, 2000);
    /* A price below a micro-unit a token is charged rounded up, once a
     * request and side, never less than what it costs. */
    rq = request(&s, 1, 1, 0);
    rq.price.in = 150000; /* 0.15 a million */
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &x, &v), LLMGW_LIMIT_OK);
    llmgw_limits_settle(t, &x, 1, 0, T0);
    ck_assert_int_eq(usage(t, s, T0).budget[0].used, 2001);
    rq = request(&s, 1, 10000000, 0);
    rq.price.in = 150000;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &x, &v),
                     LLMGW_LIMIT_BUDGET_COST);
    ck_assert_int_eq(v.requested, 1500000);
    ck_assert_int_eq(v.spent, 1);
    ck_assert_int_eq(v.too_large, 1);
    llmgw_limits_settle(t, &b, 0, 0, T0);
    ck_assert_int_eq(usage(t, s, T0).budget[0].reserved, 0);
    /* Spent to the last micro-unit: even a model with no price waits. */
    rq = request(&s, 1, 7999, 0);
    rq.price.in = 1000000;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &x, &v), LLMGW_LIMIT_OK);
    llmgw_limits_settle(t, &x, 7999, 0, T0);
    ck_assert_int_eq(usage(t, s, T0).budget[0].remaining, 0);
    rq.price.in = 0;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &x, &v),
                     LLMGW_LIMIT_BUDGET_COST);
    ck_assert_int_eq(v.spent, 1);
}
END_TEST

START_TEST(refunds_after_short_answers_disconnects_failures)
{
    llmgw_limits_subject_t s;
    llmgw_limits_t *t =
        table_one(tokens_a_day(conf_of(100, 10000, 0), 5000), &s);
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    llmgw_limits_usage_t u;

    /* short answer */
    reserve(t, &s, 1, 200, 1000, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 150, 10, T0);
    /* a client that went away after 300 tokens */
    reserve(t, &s, 1, 200, 1000, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 150, 300, T0);
    /* a backend failure: nothing generated */
    reserve(t, &s, 1, 200, 1000, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 0, 0, T0);
    u = usage(t, s, T0);
    held(&u, 0, 610, 0);
    ck_assert_int_eq(u.tpm_remaining, 10000 - 610);
    ck_assert_int_eq(u.rpm_remaining, 97); /* requests still count */
    ck_assert_int_eq(u.prompt_tokens, 300);
    ck_assert_int_eq(u.completion_tokens, 310);
    /* Settling twice, or what was never reserved, changes nothing. */
    ck_assert_int_eq(llmgw_limits_settle(t, &tk, 100, 100, T0), APR_EINVAL);
    memset(&tk, 0, sizeof(tk));
    ck_assert_int_eq(llmgw_limits_settle(t, &tk, 100, 100, T0), APR_EINVAL);
    ck_assert_int_eq(usage(t, s, T0).budget[0].used, 610);
    /* A backend that ignores max_tokens is charged what it made. */
    reserve(t, &s, 1, 200, 100, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 200, 4500, T0);
    u = usage(t, s, T0);
    ck_assert_int_eq(u.budget[0].used, 5310);
    ck_assert_int_eq(u.budget[0].remaining, 0);
    ck_assert_int_eq(u.tpm_remaining, 10000 - 5310);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &tk, &v),
                     LLMGW_LIMIT_BUDGET_TOKENS);
    ck_assert_int_eq(v.spent, 1);
}
END_TEST

static llmgw_limits_subject_t find(llmgw_limits_t *t, const char *name)
{
    llmgw_limits_subject_t s;

    ck_assert_int_eq(llmgw_limits_find(t, name, &s), APR_SUCCESS);
    return s;
}

/* key (budget 1000), route (rpm 2), key+route (concurrent 1). */
static void three(llmgw_limits_t *t, llmgw_limits_subject_t *s)
{
    llmgw_limits_def_t d[4];

    memset(d, 0, sizeof(d));
    d[0].name = "key:a";
    budget(&d[0].conf, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 1000);
    d[0].conf.rpm = 50;
    d[1].name = "route:r";
    d[1].conf.rpm = 2;
    d[2].name = "key+route:a\037r";
    d[2].conf.concurrent = 1;
    d[3].name = "route:q";
    d[3].conf.tpm = 500;
    ck_assert_int_eq(llmgw_limits_configure(t, d, 4, NULL, T0), APR_SUCCESS);
    s[0] = find(t, "key:a");
    s[1] = find(t, "route:r");
    s[2] = find(t, "key+route:a\037r");
    s[3] = find(t, "route:q");
}

START_TEST(all_subjects_or_none)
{
    llmgw_limits_t *t = table();
    llmgw_limits_subject_t s[4];
    llmgw_limits_ticket_t a, b;
    llmgw_limits_verdict_t v;
    llmgw_limits_usage_t before, after;

    three(t, s);
    ck_assert_int_eq(reserve(t, s, 3, 100, 100, T0, &a, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(v.limit_requests, 2); /* the route's: tightest */
    ck_assert_int_eq(v.remaining_requests, 1);
    ck_assert_int_eq(v.limit_tokens, 1000);
    ck_assert_int_eq(v.remaining_tokens, 800);
    before = usage(t, s[0], T0);
    /* The key has room; key+route has a request in flight: nothing of
     * the key, its rpm or its budget, is taken. */
    ck_assert_int_eq(reserve(t, s, 3, 100, 100, T0, &b, &v),
                     LLMGW_LIMIT_CONCURRENT);
    ck_assert_int_eq(v.subject, 2);
    after = usage(t, s[0], T0);
    ck_assert_int_eq(after.inflight, 1);
    ck_assert_int_eq(after.rpm_remaining, before.rpm_remaining);
    ck_assert_int_eq(after.budget[0].reserved, 200);
    ck_assert_int_eq(usage(t, s[1], T0).rpm_remaining, 1);
    ck_assert_int_eq(usage(t, s[2], T0).refused[LLMGW_LIMIT_CONCURRENT], 1);
    ck_assert_int_eq(usage(t, s[0], T0).refused[LLMGW_LIMIT_CONCURRENT], 0);
    llmgw_limits_settle(t, &a, 10, 10, T0);
    ck_assert_int_eq(usage(t, s[0], T0).budget[0].used, 20);
    ck_assert_int_eq(usage(t, s[2], T0).completion_tokens, 10);
}
END_TEST

START_TEST(retarget_moves_a_reservation)
{
    llmgw_limits_t *t = table();
    llmgw_limits_subject_t s[4], to[2];
    llmgw_limits_ticket_t a, b;
    llmgw_limits_verdict_t v;
    llmgw_limits_req_t rq;

    three(t, s);
    ck_assert_int_eq(reserve(t, s, 3, 100, 100, T0, &a, &v), LLMGW_LIMIT_OK);
    /* To route q (tpm 500): too many tokens, nothing moves. */
    to[0] = s[0];
    to[1] = s[3];
    rq = request(to, 2, 300, 300);
    ck_assert_int_eq(llmgw_limits_retarget(t, &a, &rq, T0, &v),
                     LLMGW_LIMIT_TPM);
    ck_assert_int_eq(usage(t, s[2], T0).inflight, 1);
    ck_assert_int_eq(usage(t, s[3], T0).inflight, 0);
    ck_assert_int_eq(usage(t, s[0], T0).budget[0].reserved, 200);
    rq = request(to, 2, 100, 150);
    ck_assert_int_eq(llmgw_limits_retarget(t, &a, &rq, T0, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(usage(t, s[1], T0).inflight, 0);
    ck_assert_int_eq(usage(t, s[2], T0).inflight, 0);
    ck_assert_int_eq(usage(t, s[3], T0).inflight, 1);
    ck_assert_int_eq(usage(t, s[3], T0).tpm_remaining, 250);
    ck_assert_int_eq(usage(t, s[0], T0).inflight, 1);
    ck_assert_int_eq(usage(t, s[0], T0).requests, 1);
    ck_assert_int_eq(usage(t, s[0], T0).budget[0].reserved, 250);
    /* The old route keeps counting the request, not its tokens. */
    ck_assert_int_eq(usage(t, s[1], T0).rpm_remaining, 1);
    ck_assert_int_eq(reserve(t, s, 3, 1, 1, T0, &b, &v), LLMGW_LIMIT_OK);
    llmgw_limits_settle(t, &b, 1, 1, T0);
    llmgw_limits_settle(t, &a, 50, 50, T0);
    ck_assert_int_eq(usage(t, s[0], T0).budget[0].used, 102);
    ck_assert_int_eq(usage(t, s[0], T0).budget[0].reserved, 0);
    ck_assert_int_eq(usage(t, s[3], T0).tpm_remaining, 400);
    ck_assert_int_eq(usage(t, s[3], T0).inflight, 0);
}
END_TEST

START_TEST(headroom_is_the_least_left)
{
    llmgw_limits_t *t = table();
    llmgw_limits_subject_t s[4];
    llmgw_limits_ticket_t a;
    llmgw_limits_verdict_t v;

    three(t, s);
    ck_assert_int_eq(llmgw_limits_headroom(t, &s[1], 2, T0), APR_INT64_MAX);
    ck_assert_int_eq(llmgw_limits_headroom(t, s, 4, T0), 500);
    reserve(t, s, 1, 100, 200, T0, &a, &v);
    ck_assert_int_eq(llmgw_limits_headroom(t, s, 1, T0), 700);
}
END_TEST

/* ---------------------------------------------------------------------
 * Headers and errors
 */

START_TEST(durations_as_openai_writes_them)
{
    static const struct {
        apr_time_t d;
        const char *text;
    } cases[] = { { 0, "0s" },
                  { -5, "0s" },
                  { 1, "1ms" },
                  { 17000, "17ms" },
                  { 999999, "1s" },
                  { SEC, "1s" },
                  { 1500 * 1000, "1.5s" },
                  { 2040 * 1000, "2.04s" },
                  { 360 * SEC, "6m0s" },
                  { 61 * SEC + 200 * 1000, "1m1.2s" },
                  { 3723 * SEC, "1h2m3s" },
                  { 7200 * SEC, "2h0m0s" },
                  { 30 * DAY, "720h0m0s" } };
    char buf[32];
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_str_eq(llmgw_limits_duration(buf, sizeof(buf), cases[i].d),
                         cases[i].text);
    }
}
END_TEST

START_TEST(headers_and_429s)
{
    llmgw_limits_t *t = table();
    llmgw_limits_conf_t c = conf_of(2, 1000, 0);
    llmgw_limits_subject_t s = one(t, &c);
    apr_table_t *h = apr_table_make(test_pool, 8);
    llmgw_limits_ticket_t a;
    llmgw_limits_verdict_t v;
    llmgw_error_t err;

    ck_assert_int_eq(reserve(t, &s, 1, 100, 200, T0, &a, &v), LLMGW_LIMIT_OK);
    llmgw_limits_headers(h, &v);
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-limit-requests"), "2");
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-remaining-requests"), "1");
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-reset-requests"), "30s");
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-limit-tokens"), "1000");
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-remaining-tokens"), "700");
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-reset-tokens"), "18s");
    ck_assert_ptr_null(apr_table_get(h, "Retry-After"));
    llmgw_limits_settle(t, &a, 100, 100, T0);
    reserve(t, &s, 1, 1, 1, T0, &a, &v);
    llmgw_limits_settle(t, &a, 1, 1, T0);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0 + 1000, &a, &v),
                     LLMGW_LIMIT_RPM);
    apr_table_clear(h);
    llmgw_limits_headers(h, &v);
    ck_assert_str_eq(apr_table_get(h, "Retry-After"), "30");
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-remaining-requests"), "0");
    ck_assert_str_eq(apr_table_get(h, "x-ratelimit-reset-requests"),
                     "59.999s");
    ck_assert_int_eq(llmgw_limits_error(test_pool, &v, &err), 429);
    ck_assert_str_eq(err.type, "requests");
    ck_assert_str_eq(err.code, "rate_limit_exceeded");
    ck_assert_ptr_null(err.param);
    ck_assert_str_eq(err.message,
                     "Rate limit reached for requests per "
                     "minute (RPM): Limit 2, Used 2, Requested 1. Please "
                     "try again in 30s.");
    ck_assert_ptr_null(strstr(err.message, "key:a"));
    /* A subject without limits gives no x-ratelimit-* at all. */
    c = conf_of(0, 0, 0);
    s = one(t, &c);
    reserve(t, &s, 1, 1, 1, T0, &a, &v);
    apr_table_clear(h);
    llmgw_limits_headers(h, &v);
    ck_assert_int_eq(apr_table_elts(h)->nelts, 0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Config values and names
 */

/* words split at spaces into argv (8 at the most), as httpd hands a
 * directive its arguments; returns how many. */
static int split(const char *words, const char **argv)
{
    char *last, *w, *copy = apr_pstrdup(test_pool, words);
    int argc = 0;

    for (w = apr_strtok(copy, " ", &last); w && argc < 8;
         w = apr_strtok(NULL, " ", &last)) {
        argv[argc++] = w;
    }
    return argc;
}

static const char *rate(const char *words, llmgw_limits_conf_t *c)
{
    const char *argv[8];
    int argc = split(words, argv);

    return llmgw_limits_parse_rate(test_pool, argc, argv, c);
}

static const char *budget_words(const char *words, llmgw_limits_conf_t *c)
{
    const char *argv[8];
    int argc = split(words, argv);

    return llmgw_limits_parse_budget(test_pool, argc, argv, c);
}

START_TEST(parses_rate_budget_and_price)
{
    static const char *const bad_rates[] = {
        "rpm=0",   "rpm=-1",      "rpm=1.5",        "rpm=",
        "rpm=10x", "rpm=007",     "rpm=1000000001", "rpm=99999999999999999999",
        "foo=1",   "rpm=1 rpm=2", "rpm 10",         "RPM=10",
        ""
    };
    static const char *const bad_budgets[] = {
        "tokens=0 per=day",   "tokens=-5 per=day",
        "tokens=1.5 per=day", "tokens=10 per=week",
        "tokens=10",          "per=day",
        "cost=0 per=day",     "cost=1.1234567 per=day",
        "cost=abc per=day",   "cost=1. per=day",
        "cost=.5 per=day",    "tokens=1 cost=1 per=day",
        "tokens=1 per=day x", "tokens=1 per=day per=hour"
    };
    const char *const price_ok[] = { "in=0.15", "out=0.6" };
    const char *const price_bad[] = { "in=-1", "out=1" };
    llmgw_limits_conf_t c;
    llmgw_price_t pr;
    apr_size_t i;

    memset(&c, 0, sizeof(c));
    ck_assert_ptr_null(rate("rpm=600 tpm=200000 concurrent=8", &c));
    ck_assert_int_eq(c.rpm, 600);
    ck_assert_int_eq(c.tpm, 200000);
    ck_assert_int_eq(c.concurrent, 8);
    for (i = 0; i < sizeof(bad_rates) / sizeof(bad_rates[0]); i++) {
        const char *e = rate(bad_rates[i], &c);

        ck_assert_msg(e != NULL, "accepted '%s'", bad_rates[i]);
        ck_assert_msg(strstr(e, "LLMRateLimit") != NULL, "%s", e);
    }
    memset(&c, 0, sizeof(c));
    ck_assert_ptr_null(budget_words("tokens=2000000 per=day", &c));
    ck_assert_ptr_null(budget_words("per=month cost=12.5", &c));
    ck_assert_ptr_null(budget_words("tokens=5 per=day", &c)); /* replaces */
    ck_assert_ptr_null(budget_words("tokens=9 per=hour", &c));
    ck_assert_int_eq(c.budget[0].unit, LLMGW_BUDGET_TOKENS);
    ck_assert_int_eq(c.budget[0].limit, 5);
    ck_assert_int_eq(c.budget[1].unit, LLMGW_BUDGET_COST);
    ck_assert_int_eq(c.budget[1].per, LLMGW_PER_MONTH);
    ck_assert_int_eq(c.budget[1].limit, 12500000);
    ck_assert_int_eq(c.budget[2].per, LLMGW_PER_HOUR);
    ck_assert_ptr_null(llmgw_limits_conf_check(&c));
    ck_assert_ptr_null(budget_words("cost=1 per=hour", &c));
    ck_assert_ptr_nonnull(budget_words("cost=1 per=day", &c)); /* fifth */
    for (i = 0; i < sizeof(bad_budgets) / sizeof(bad_budgets[0]); i++) {
        memset(&c, 0, sizeof(c));
        ck_assert_msg(budget_words(bad_budgets[i], &c) != NULL,
                      "accepted '%s'", bad_budgets[i]);
    }
    ck_assert_ptr_null(llmgw_limits_parse_price(test_pool, 2, price_ok, &pr));
    ck_assert_int_eq(pr.in, 150000);
    ck_assert_int_eq(pr.out, 600000);
    ck_assert_ptr_nonnull(
        llmgw_limits_parse_price(test_pool, 2, price_bad, &pr));
    ck_assert_ptr_nonnull(
        llmgw_limits_parse_price(test_pool, 1, price_ok, &pr));
    /* What the parsers cannot make, the check still refuses. */
    memset(&c, 0, sizeof(c));
    budget(&c, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 5);
    budget(&c, 2, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 6);
    ck_assert_ptr_nonnull(llmgw_limits_conf_check(&c));
    c = conf_of(-1, 0, 0);
    ck_assert_ptr_nonnull(llmgw_limits_conf_check(&c));
}
END_TEST

START_TEST(subject_names_by_kind)
{
    char long_name[300];
    const char *n;

    ck_assert_str_eq(llmgw_limits_subject_name(test_pool, LLMGW_SUBJECT_KEY,
                                               "team-a", NULL),
                     "key:team-a");
    ck_assert_str_eq(llmgw_limits_subject_name(test_pool,
                                               LLMGW_SUBJECT_KEY_ROUTE,
                                               "team-a", "llama3*"),
                     "key+route:team-a\037llama3*");
    ck_assert_str_eq(llmgw_limits_subject_name(test_pool, LLMGW_SUBJECT_USER,
                                               "alice@example.com", NULL),
                     "user:alice@example.com");
    /* A key and a user of one name are two subjects. */
    ck_assert_str_ne(
        llmgw_limits_subject_name(test_pool, LLMGW_SUBJECT_USER, "x", NULL),
        llmgw_limits_subject_name(test_pool, LLMGW_SUBJECT_KEY, "x", NULL));
    memset(long_name, 'u', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    n = llmgw_limits_subject_name(test_pool, LLMGW_SUBJECT_USER, long_name,
                                  NULL);
    ck_assert_int_eq(strlen(n), 5 + 64);
    ck_assert_int_eq(strncmp(n, "user#", 5), 0);
    n = llmgw_limits_subject_name(test_pool, LLMGW_SUBJECT_USER, "a\nb", NULL);
    ck_assert_int_eq(strncmp(n, "user#", 5), 0);
    /* A separator inside a part cannot forge another pair. */
    ck_assert_int_eq(
        strncmp(llmgw_limits_subject_name(test_pool, LLMGW_SUBJECT_KEY_ROUTE,
                                          "a\037b", "c"),
                "key+route#", 10),
        0);
}
END_TEST

/* ---------------------------------------------------------------------
 * Configuration changes, dynamic subjects
 */

START_TEST(config_changes_keep_usage)
{
    llmgw_limits_t *t = table();
    llmgw_limits_def_t d[2];
    llmgw_limits_subject_t a, b, gone;
    llmgw_limits_ticket_t tk, tb;
    llmgw_limits_verdict_t v;
    llmgw_limits_usage_t u;
    llmgw_limits_stats_t st;

    memset(d, 0, sizeof(d));
    d[0].name = "key:a";
    budget(&d[0].conf, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 1000);
    budget(&d[0].conf, 1, LLMGW_BUDGET_TOKENS, LLMGW_PER_HOUR, 800);
    d[0].conf.tpm = 5000;
    d[1].name = "key:b";
    d[1].conf.rpm = 5;
    ck_assert_int_eq(llmgw_limits_configure(t, d, 2, NULL, T0), APR_SUCCESS);
    a = find(t, "key:a");
    b = find(t, "key:b");
    reserve(t, &a, 1, 100, 100, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 100, 50, T0);
    ck_assert_int_eq(reserve(t, &b, 1, 1, 1, T0, &tb, &v), LLMGW_LIMIT_OK);
    /* The day budget raised, the hour one becomes a month one, b goes. */
    d[0].conf.budget[0].limit = 2000;
    d[0].conf.budget[1].per = LLMGW_PER_MONTH;
    ck_assert_int_eq(llmgw_limits_configure(t, d, 1, NULL, T0), APR_SUCCESS);
    u = usage(t, a, T0);
    ck_assert_int_eq(u.conf.budget[0].limit, 2000);
    ck_assert_int_eq(u.budget[0].used, 150);
    ck_assert_int_eq(u.budget[0].remaining, 1850);
    ck_assert_int_eq(u.budget[1].used, 0);
    ck_assert_int_eq(u.tpm_remaining, 4850);
    /* b is retired: found no more, still settling, dropped after. */
    ck_assert_int_eq(llmgw_limits_find(t, "key:b", &gone), APR_NOTFOUND);
    ck_assert_int_eq(reserve(t, &b, 1, 1, 1, T0, &tk, &v), LLMGW_LIMIT_GONE);
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0, 1), 0);
    ck_assert_int_eq(usage(t, b, T0).retired, 1);
    ck_assert_int_eq(llmgw_limits_settle(t, &tb, 1, 1, T0), APR_SUCCESS);
    ck_assert_int_eq(usage(t, b, T0).completion_tokens, 1);
    llmgw_limits_sweep(t, test_pool, T0, 1);
    ck_assert_int_eq(llmgw_limits_usage(t, &b, T0, &u), APR_NOTFOUND);
    llmgw_limits_stats(t, &st);
    ck_assert_int_eq(st.subjects, 1);
    /* A name given twice, or a bad limit: nothing changes. */
    d[1] = d[0];
    ck_assert_int_eq(llmgw_limits_configure(t, d, 2, NULL, T0), APR_EINVAL);
    d[1].name = "key:c";
    d[1].conf.rpm = -3;
    ck_assert_int_eq(llmgw_limits_configure(t, d, 2, NULL, T0), APR_EINVAL);
    ck_assert_int_eq(llmgw_limits_find(t, "key:c", &gone), APR_NOTFOUND);
    ck_assert_int_eq(usage(t, a, T0).budget[0].used, 150);
}
END_TEST

START_TEST(dynamic_subjects_fill_and_make_room)
{
    llmgw_limits_t *t = table_flags(8, 8, 0);
    llmgw_limits_conf_t dyn = conf_of(0, 0, 0);
    llmgw_limits_subject_t s[8], x;
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    char name[32];
    int i;

    ck_assert_int_eq(llmgw_limits_find_or_add(t, "user:u0", T0, &x),
                     APR_NOTFOUND); /* no dynamic limits configured */
    budget(&dyn, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 100);
    ck_assert_int_eq(llmgw_limits_configure(t, NULL, 0, &dyn, T0),
                     APR_SUCCESS);
    for (i = 0; i < 8; i++) {
        apr_snprintf(name, sizeof(name), "user:u%d", i);
        ck_assert_int_eq(llmgw_limits_find_or_add(t, name, T0, &s[i]),
                         APR_SUCCESS);
        ck_assert_int_eq(llmgw_limits_find_or_add(t, name, T0, &x),
                         APR_SUCCESS);
        ck_assert_int_eq(x.index, s[i].index);
    }
    ck_assert_int_eq(llmgw_limits_find_or_add(t, "user:new", T0, &x),
                     APR_ENOSPC);
    /* u0 used its budget today; the others did nothing: a sweep drops
     * those it can without losing usage, and the handles answer GONE. */
    reserve(t, &s[0], 1, 10, 10, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 10, 10, T0);
    llmgw_limits_sweep(t, test_pool, T0, 1);
    ck_assert_int_eq(llmgw_limits_find_or_add(t, "user:new", T0, &x),
                     APR_SUCCESS);
    ck_assert_int_eq(usage(t, find(t, "user:u0"), T0).budget[0].used, 20);
    ck_assert_int_eq(reserve(t, &s[7], 1, 1, 1, T0, &tk, &v),
                     LLMGW_LIMIT_GONE);
    ck_assert_int_eq(usage(t, x, T0).dynamic, 1);
    ck_assert_int_eq(usage(t, x, T0).conf.budget[0].limit, 100);
    /* New dynamic limits reach the subjects already there. */
    dyn.budget[0].limit = 50;
    llmgw_limits_configure(t, NULL, 0, &dyn, T0);
    ck_assert_int_eq(usage(t, find(t, "user:u0"), T0).budget[0].remaining, 30);
}
END_TEST

START_TEST(full_record_table_and_bad_requests)
{
    llmgw_limits_t *t = table_flags(4, 2, 0);
    llmgw_limits_conf_t c = conf_of(0, 0, 0);
    llmgw_limits_subject_t s = one(t, &c), two[2];
    llmgw_limits_ticket_t a, b, x;
    llmgw_limits_verdict_t v;

    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &a, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &b, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &x, &v), LLMGW_LIMIT_FULL);
    llmgw_limits_settle(t, &a, 1, 1, T0);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &x, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(reserve(t, &s, 0, 1, 1, T0, &x, &v), LLMGW_LIMIT_GONE);
    ck_assert_int_eq(reserve(t, &s, 1, -1, 1, T0, &x, &v), LLMGW_LIMIT_GONE);
    ck_assert_int_eq(
        reserve(t, &s, 1, 1, LLMGW_LIMITS_TOKENS_MAX + 1, T0, &x, &v),
        LLMGW_LIMIT_GONE);
    two[0] = two[1] = s;
    ck_assert_int_eq(reserve(t, two, 2, 1, 1, T0, &x, &v), LLMGW_LIMIT_GONE);
    ck_assert_int_eq(llmgw_limits_size(0, 1), 0);
    ck_assert_int_eq(llmgw_limits_size(1, 0), 0);
    ck_assert_ptr_null(
        llmgw_limits_init(apr_palloc(test_pool, 64), 64, 4, 2, 0));
}
END_TEST

/* ---------------------------------------------------------------------
 * Shared memory at two addresses
 */

START_TEST(one_table_at_two_addresses)
{
    apr_size_t size = llmgw_limits_size(8, 8);
    int fd = memfd_create("llmgw-limits-test", 0);
    char *m1, *m2;
    llmgw_limits_t *t1, *t2;
    llmgw_limits_conf_t c = conf_of(0, 0, 0);
    llmgw_limits_subject_t s;
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    m1 = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    m2 = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert(m1 != MAP_FAILED && m2 != MAP_FAILED && m1 != m2);
    t1 = llmgw_limits_init(m1, size, 8, 8, 0);
    ck_assert_ptr_nonnull(t1);
    ck_assert_ptr_null(llmgw_limits_attach(m2, size - 8));
    ck_assert_ptr_null(llmgw_limits_attach(m2, size + 8));
    ck_assert_ptr_null(llmgw_limits_attach(m2 + 8, size - 8));
    t2 = llmgw_limits_attach(m2, size);
    ck_assert_ptr_nonnull(t2);
    budget(&c, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 100);
    s = one(t1, &c);
    ck_assert_int_eq(reserve(t2, &s, 1, 30, 30, T0, &tk, &v), LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_settle(t1, &tk, 10, 10, T0), APR_SUCCESS);
    ck_assert_int_eq(usage(t2, find(t2, "key:a"), T0).budget[0].used, 20);
    ck_assert_int_eq(reserve(t1, &s, 1, 40, 41, T0, &tk, &v),
                     LLMGW_LIMIT_BUDGET_TOKENS);
    munmap(m1, size);
    munmap(m2, size);
    close(fd);
}
END_TEST

/* ---------------------------------------------------------------------
 * Snapshots
 */

/* Configures key:a (rpm, tpm 5000, tokens a day, a month's cost of
 * 1.00) and the key other (other_rpm); subjects added on the fly get
 * 500 tokens a day. */
static void two_keys(llmgw_limits_t *t, apr_int64_t rpm, apr_int64_t tokens,
                     const char *other, apr_int64_t other_rpm)
{
    llmgw_limits_def_t d[2];
    llmgw_limits_conf_t dyn = tokens_a_day(conf_of(0, 0, 0), 500);

    memset(d, 0, sizeof(d));
    d[0].name = "key:a";
    d[0].conf = tokens_a_day(conf_of(rpm, 5000, 0), tokens);
    budget(&d[0].conf, 1, LLMGW_BUDGET_COST, LLMGW_PER_MONTH, 1000000);
    d[1].name = other;
    d[1].conf = conf_of(other_rpm, 0, 0);
    ck_assert_int_eq(llmgw_limits_configure(t, d, 2, &dyn, T0), APR_SUCCESS);
}

/* A table with some of everything, its snapshot in *snap. */
static llmgw_limits_t *used_table(const char **snap, apr_size_t *len)
{
    llmgw_limits_t *t = table();
    llmgw_limits_subject_t a, b, u;
    llmgw_limits_ticket_t tk, open;
    llmgw_limits_verdict_t v;
    llmgw_limits_req_t rq;

    two_keys(t, 10, 1000, "key:b", 3);
    a = find(t, "key:a");
    b = find(t, "key:b");
    ck_assert_int_eq(llmgw_limits_find_or_add(t, "user:carol", T0, &u),
                     APR_SUCCESS);
    rq = request(&a, 1, 100, 100);
    rq.price.in = rq.price.out = 1000000;
    llmgw_limits_reserve(t, &rq, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 100, 20, T0);
    llmgw_limits_reserve(t, &rq, T0, &open, &v); /* still in flight */
    reserve(t, &b, 1, 1, 1, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 1, 1, T0);
    reserve(t, &u, 1, 50, 50, T0, &tk, &v);
    llmgw_limits_settle(t, &tk, 50, 25, T0);
    ck_assert_int_eq(llmgw_limits_snapshot(t, test_pool, T0, snap, len),
                     APR_SUCCESS);
    return t;
}

START_TEST(snapshot_restores_by_name)
{
    const char *snap, *why;
    apr_size_t len;
    llmgw_limits_t *t = table();
    llmgw_limits_usage_t u;
    int restored, dropped;

    used_table(&snap, &len);
    /* The new config: a's day budget raised, b gone, c new. */
    two_keys(t, 20, 3000, "key:c", 1);
    ck_assert_int_eq(llmgw_limits_restore(t, snap, len, T0 + SEC, &restored,
                                          &dropped, &why),
                     APR_SUCCESS);
    ck_assert_ptr_null(why);
    ck_assert_int_eq(restored, 2);
    ck_assert_int_eq(dropped, 1);
    u = usage(t, find(t, "key:a"), T0 + SEC);
    ck_assert_int_eq(u.conf.budget[0].limit, 3000);
    ck_assert_int_eq(u.budget[0].used, 120);
    ck_assert_int_eq(u.budget[0].reserved, 0); /* refunded: owner gone */
    ck_assert_int_eq(u.budget[1].used, 120);
    ck_assert_int_eq(u.cost, 120);
    ck_assert_int_eq(u.requests, 2);
    ck_assert_int_eq(u.prompt_tokens, 100);
    ck_assert_int_eq(u.rpm_remaining, 18); /* 2 of 20, a second on */
    ck_assert_int_eq(u.tpm_remaining, 5000 - 120 - 200 + 5000 / 60);
    u = usage(t, find(t, "user:carol"), T0 + SEC);
    ck_assert_int_eq(u.dynamic, 1);
    ck_assert_int_eq(u.budget[0].used, 75);
    ck_assert_int_eq(usage(t, find(t, "key:c"), T0).requests, 0);
    ck_assert_int_eq(llmgw_limits_find(t, "key:b", &u.subject), APR_NOTFOUND);
}
END_TEST

START_TEST(snapshot_charges_in_flight_when_told)
{
    const char *snap, *why;
    apr_size_t len;
    llmgw_limits_t *t = table_flags(16, 16, LLMGW_LIMITS_LEAK_CHARGE);
    llmgw_limits_def_t d;

    used_table(&snap, &len);
    memset(&d, 0, sizeof(d));
    d.name = "key:a";
    budget(&d.conf, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 1000);
    ck_assert_int_eq(llmgw_limits_configure(t, &d, 1, NULL, T0), APR_SUCCESS);
    ck_assert_int_eq(llmgw_limits_restore(t, snap, len, T0, NULL, NULL, &why),
                     APR_SUCCESS);
    ck_assert_int_eq(usage(t, find(t, "key:a"), T0).budget[0].used, 320);
}
END_TEST

START_TEST(corrupt_snapshots_are_refused_whole)
{
    const char *snap, *why;
    apr_size_t len, i;
    llmgw_limits_t *t = table();
    llmgw_limits_def_t d;
    llmgw_limits_subject_t a;
    char *bad;
    int restored = -1;

    used_table(&snap, &len);
    memset(&d, 0, sizeof(d));
    d.name = "key:a";
    budget(&d.conf, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 1000);
    llmgw_limits_configure(t, &d, 1, NULL, T0);
    a = find(t, "key:a");
    /* Every length short of whole: refused. */
    for (i = 0; i < len; i++) {
        why = NULL;
        ck_assert_int_eq(
            llmgw_limits_restore(t, snap, i, T0, &restored, NULL, &why),
            APR_EINVAL);
        ck_assert_ptr_nonnull(why);
    }
    /* Any byte changed: refused, the checksum or the header says so. */
    bad = apr_pmemdup(test_pool, snap, len);
    for (i = 0; i < len; i++) {
        bad[i] ^= 0x40;
        ck_assert_int_eq(
            llmgw_limits_restore(t, bad, len, T0, &restored, NULL, &why),
            APR_EINVAL);
        bad[i] ^= 0x40;
    }
    ck_assert_int_eq(restored, -1);
    ck_assert_int_eq(usage(t, a, T0).budget[0].used, 0);
    ck_assert_int_eq(usage(t, a, T0).requests, 0);
    ck_assert_int_eq(llmgw_limits_restore(t, NULL, 0, T0, NULL, NULL, &why),
                     APR_EINVAL);
    /* The same bytes whole are fine. */
    ck_assert_int_eq(
        llmgw_limits_restore(t, bad, len, T0, &restored, NULL, &why),
        APR_SUCCESS);
    ck_assert_int_eq(usage(t, a, T0).budget[0].used, 120);
}
END_TEST

/* ---------------------------------------------------------------------
 * Sweeps
 */

static void *shared(apr_size_t size)
{
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    ck_assert(m != MAP_FAILED);
    return m;
}

/* A child stops itself where it should die, and its parent kills it
 * there: under valgrind, an exit (or a SIGKILL it sent itself) would run
 * a leak check of the whole heap it was forked with, slow and noisy. */
static void stop_here(void)
{
    raise(SIGSTOP);
}

/* The child's answer (code + 1) in shared memory, then its end. */
static void child_done(int *answer, int code)
{
    __atomic_store_n(answer, code + 1, __ATOMIC_SEQ_CST);
    stop_here();
    _exit(code);
}

/* Waits for pid to stop (or die), kills it: its code, or -1 when it
 * stopped or died before giving one. */
static int child_answer(pid_t pid, int *answer)
{
    int status, a;

    ck_assert_int_eq(waitpid(pid, &status, WUNTRACED), pid);
    if (WIFSTOPPED(status)) {
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    }
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    a = __atomic_load_n(answer, __ATOMIC_SEQ_CST);
    *answer = 0;
    return a - 1;
}

/* A child that reserves on s and dies without settling. */
static void leak_from_child(llmgw_limits_t *t, llmgw_limits_subject_t s)
{
    int *answer = shared(sizeof(int));
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        llmgw_limits_ticket_t tk;
        llmgw_limits_verdict_t v;
        llmgw_limits_req_t rq = request(&s, 1, 100, 200);

        rq.owner = getpid();
        child_done(answer, llmgw_limits_reserve(t, &rq, T0, &tk, &v));
    }
    ck_assert_int_eq(child_answer(pid, answer), LLMGW_LIMIT_OK);
    munmap(answer, sizeof(int));
}

static llmgw_limits_t *shared_table(apr_uint32_t subjects,
                                    apr_uint32_t records, int flags,
                                    apr_size_t *size)
{
    llmgw_limits_t *t;

    *size = llmgw_limits_size(subjects, records);
    t = llmgw_limits_init(shared(*size), *size, subjects, records, flags);
    ck_assert_ptr_nonnull(t);
    return t;
}

static void sweep_case(int flags, apr_int64_t used_after)
{
    apr_size_t size;
    llmgw_limits_t *t = shared_table(8, 8, flags, &size);
    llmgw_limits_conf_t c = tokens_a_day(conf_of(0, 0, 1), 1000);
    llmgw_limits_subject_t s = one(t, &c);
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    llmgw_limits_usage_t u;
    llmgw_limits_stats_t st;

    leak_from_child(t, s);
    /* Its process is gone; until a sweep, the key is pinned. */
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &tk, &v),
                     LLMGW_LIMIT_CONCURRENT);
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0, 1), 1);
    u = usage(t, s, T0);
    ck_assert_int_eq(u.inflight, 0);
    ck_assert_int_eq(u.budget[0].reserved, 0);
    ck_assert_int_eq(u.budget[0].used, used_after);
    ck_assert_int_eq(u.reclaimed, 1);
    llmgw_limits_stats(t, &st);
    ck_assert_int_eq(st.records, 0);
    ck_assert_int_eq(st.reclaimed, 1);
    ck_assert_int_eq(reserve(t, &s, 1, 1, 1, T0, &tk, &v), LLMGW_LIMIT_OK);
    /* Our own reservation is alive: a sweep leaves it. */
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0 + 10 * SEC, 1), 0);
    ck_assert_int_eq(usage(t, s, T0).inflight, 1);
    munmap(t, size);
}

START_TEST(sweep_refunds_a_dead_owner)
{
    sweep_case(0, 0);
}
END_TEST

START_TEST(sweep_charges_a_dead_owner_when_told)
{
    sweep_case(LLMGW_LIMITS_LEAK_CHARGE, 300);
}
END_TEST

START_TEST(sweep_takes_back_what_outlived_its_ttl)
{
    llmgw_limits_subject_t s;
    llmgw_limits_t *t = table_one(tokens_a_day(conf_of(0, 1000, 0), 1000), &s);
    llmgw_limits_ticket_t tk, other;
    llmgw_limits_verdict_t v;
    llmgw_limits_req_t rq;
    llmgw_limits_usage_t u;

    llmgw_limits_tune(t, 30 * SEC, 0);
    rq = request(&s, 1, 100, 200);
    rq.ttl = 60 * SEC;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &tk, &v),
                     LLMGW_LIMIT_OK);
    rq.ttl = 0; /* the table's: an hour */
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &other, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0 + 59 * SEC, 1), 0);
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0 + 60 * SEC, 1), 1);
    /* Not forced, within the interval: no work at all. */
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0 + 4000 * SEC, 0), 1);
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0 + 4010 * SEC, 0), 0);
    u = usage(t, s, T0 + 4010 * SEC);
    ck_assert_int_eq(u.inflight, 0);
    ck_assert_int_eq(u.budget[0].reserved, 0);
    /* The slow request ends after all: it is charged, late. */
    ck_assert_int_eq(llmgw_limits_settle(t, &tk, 100, 50, T0 + 4020 * SEC),
                     APR_SUCCESS);
    u = usage(t, s, T0 + 4020 * SEC);
    ck_assert_int_eq(u.budget[0].used, 150);
    ck_assert_int_eq(u.late, 1);
    ck_assert_int_eq(u.reclaimed, 2);
    ck_assert_int_eq(u.inflight, 0);
    ck_assert_int_eq(u.tpm_remaining, 850);
    /* Within the interval of the last sweep nothing is looked at, even
     * what ran out; after it, it is. */
    rq.ttl = SEC;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0 + 4020 * SEC, &tk, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0 + 4025 * SEC, 0), 0);
    ck_assert_int_eq(usage(t, s, T0 + 4025 * SEC).inflight, 1);
    ck_assert_int_eq(llmgw_limits_sweep(t, test_pool, T0 + 4031 * SEC, 0), 1);
}
END_TEST

/* ---------------------------------------------------------------------
 * The journal: a process killed at every write of a transaction
 */

/* Every subject's usage, to compare a table before and after. */
static llmgw_limits_usage_t *all_usage(llmgw_limits_t *t, apr_time_t now,
                                       int *n)
{
    llmgw_limits_usage_t *u = apr_pcalloc(test_pool, 16 * sizeof(*u));
    apr_uint32_t cursor = 0;

    *n = 0;
    while (*n < 16
           && llmgw_limits_usage_next(t, &cursor, now, &u[*n])
                  == APR_SUCCESS) {
        (*n)++;
    }
    return u;
}

enum { OP_RESERVE, OP_SETTLE, OP_RETARGET, OP_SYNC };

/* Runs op in a child that dies at its k-th journaled write; 1 if it died
 * there, 0 if the op had fewer writes (it then finished). */
static int die_in(llmgw_limits_t *t, int op, int k, llmgw_limits_subject_t *s,
                  llmgw_limits_ticket_t *tk, apr_time_t now, int *answer)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        llmgw_limits_ticket_t mine;
        llmgw_limits_verdict_t v;
        llmgw_limits_req_t rq = request(s, 3, 50, 60);
        llmgw_limits_sync_t it[8];
        apr_uint32_t cursor = 0;

        rq.price.in = rq.price.out = 2000000;
        llmgw_limits_crash_after(k, stop_here);
        switch (op) {
        case OP_RESERVE: llmgw_limits_reserve(t, &rq, now, &mine, &v); break;
        case OP_SETTLE: llmgw_limits_settle(t, tk, 20, 30, now); break;
        case OP_RETARGET:
            rq = request(&s[1], 3, 40, 40);
            llmgw_limits_retarget(t, tk, &rq, now, &v);
            break;
        default:
            llmgw_limits_sync_collect(t, &cursor, now, it, 8);
            llmgw_limits_sync_apply(t, &it[0], it[0].mark + 77, now);
            break;
        }
        child_done(answer, 0);
    }
    return child_answer(pid, answer) < 0;
}

static void crash_everywhere(int op)
{
    apr_size_t size;
    llmgw_limits_t *t = shared_table(8, 8, 0, &size);
    int *answer = shared(sizeof(int));
    llmgw_limits_def_t d[4];
    llmgw_limits_subject_t s[4];
    llmgw_limits_ticket_t tk, again;
    llmgw_limits_verdict_t v;
    llmgw_limits_usage_t *before, *after;
    llmgw_limits_stats_t st;
    llmgw_limits_req_t rq;
    /* The day rolls over in the transaction: every write there is. */
    apr_time_t now = T0 + DAY + SEC;
    int k, nb, na, died = 0;

    memset(d, 0, sizeof(d));
    for (k = 0; k < 4; k++) {
        d[k].name = apr_psprintf(test_pool, "key:%d", k);
        d[k].conf = conf_of(100, 100000, 10);
        budget(&d[k].conf, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, 10000);
        budget(&d[k].conf, 1, LLMGW_BUDGET_COST, LLMGW_PER_DAY, 10000000);
        budget(&d[k].conf, 2, LLMGW_BUDGET_TOKENS, LLMGW_PER_HOUR, 10000);
        budget(&d[k].conf, 3, LLMGW_BUDGET_COST, LLMGW_PER_MONTH, 10000000);
    }
    ck_assert_int_eq(llmgw_limits_configure(t, d, 4, NULL, T0), APR_SUCCESS);
    for (k = 0; k < 4; k++) {
        s[k] = find(t, d[k].name);
    }
    rq = request(s, 3, 50, 60);
    rq.price.in = rq.price.out = 2000000;
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, T0, &tk, &v),
                     LLMGW_LIMIT_OK);
    if (op == OP_RESERVE) {
        llmgw_limits_settle(t, &tk, 1, 1, T0);
    }
    for (k = 1; k < 2000; k++) {
        before = all_usage(t, now, &nb);
        if (!die_in(t, op, k, s, &tk, now, answer)) {
            break;
        }
        died++;
        /* The next locker takes the lock over and undoes the rest. */
        after = all_usage(t, now, &na);
        ck_assert_int_eq(na, nb);
        ck_assert_msg(memcmp(before, after, nb * sizeof(*before)) == 0,
                      "state changed by a transaction killed at write %d", k);
        llmgw_limits_stats(t, &st);
        ck_assert_int_eq(st.recoveries, died);
        ck_assert_int_eq(st.records, op == OP_RESERVE ? 0 : 1);
    }
    ck_assert_int_gt(died, 10);
    /* After the one that finished, the table goes on as usual. */
    llmgw_limits_stats(t, &st);
    ck_assert_int_lt(st.journal_max, 1024);
    rq = request(s, 3, 1, 1);
    ck_assert_int_eq(llmgw_limits_reserve(t, &rq, now, &again, &v),
                     LLMGW_LIMIT_OK);
    ck_assert_int_eq(llmgw_limits_settle(t, &again, 1, 1, now), APR_SUCCESS);
    munmap(answer, sizeof(int));
    munmap(t, size);
}

START_TEST(killed_mid_reserve_leaves_no_trace)
{
    crash_everywhere(OP_RESERVE);
}
END_TEST

START_TEST(killed_mid_settle_leaves_no_trace)
{
    crash_everywhere(OP_SETTLE);
}
END_TEST

START_TEST(killed_mid_retarget_leaves_no_trace)
{
    crash_everywhere(OP_RETARGET);
}
END_TEST

START_TEST(killed_mid_sync_leaves_no_trace)
{
    crash_everywhere(OP_SYNC);
}
END_TEST

/* ---------------------------------------------------------------------
 * Several processes on one table
 */

#define WORKERS 4
#define OPS 20000
#define BUDGET 200000
#define MAX_IN_FLIGHT 3

typedef struct {
    apr_int64_t charged[WORKERS]; /* settled, by worker */
    apr_int64_t pending[WORKERS]; /* about to be settled */
    apr_int64_t ops[WORKERS];     /* settled */
    apr_int64_t tries[WORKERS];   /* reserve calls */
    apr_int64_t admitted;
    apr_int64_t refused;
    apr_int64_t active; /* admitted, not yet settled */
    apr_int64_t most_active;
    apr_int64_t bad;   /* something a worker saw wrong */
    apr_int64_t ready; /* workers at the start line */
    int done[WORKERS]; /* child_done's answers */
    volatile int stop;
} board_t;

static unsigned next_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

static void note_active(board_t *b, apr_int64_t d)
{
    apr_int64_t now = __atomic_add_fetch(&b->active, d, __ATOMIC_SEQ_CST);
    apr_int64_t most = __atomic_load_n(&b->most_active, __ATOMIC_RELAXED);

    while (now > most
           && !__atomic_compare_exchange_n(&b->most_active, &most, now, 0,
                                           __ATOMIC_SEQ_CST,
                                           __ATOMIC_RELAXED)) {
    }
}

/* One worker: reserve, hold a moment, settle no more than reserved. */
static void worker(llmgw_limits_t *t, board_t *b, int me,
                   const llmgw_limits_subject_t *s, int ops)
{
    unsigned seed = 7919u * (unsigned)(me + 1);
    int i;

    /* All start together, or the first may be done before the last is
     * forked: nothing would run at the same time. */
    __atomic_add_fetch(&b->ready, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->ready, __ATOMIC_SEQ_CST) < WORKERS) {
        sched_yield();
    }
    for (i = 0; (ops ? i < ops : !b->stop); i++) {
        llmgw_limits_req_t rq = request(s, 2, 10 + next_rand(&seed) % 50,
                                        10 + next_rand(&seed) % 90);
        llmgw_limits_ticket_t tk;
        llmgw_limits_verdict_t v;
        apr_int64_t p, c;

        rq.owner = getpid();
        b->tries[me]++;
        if (llmgw_limits_reserve(t, &rq, T0, &tk, &v) != LLMGW_LIMIT_OK) {
            __atomic_add_fetch(&b->refused, 1, __ATOMIC_RELAXED);
            if (v.refused != LLMGW_LIMIT_BUDGET_TOKENS
                && v.refused != LLMGW_LIMIT_CONCURRENT) {
                __atomic_add_fetch(&b->bad, 1, __ATOMIC_RELAXED);
            }
            continue;
        }
        note_active(b, 1);
        __atomic_add_fetch(&b->admitted, 1, __ATOMIC_RELAXED);
        /* Every other one held across a yield, so that reservations
         * overlap as requests do; the rest back to back, so that the
         * calls themselves run at the same time on both cores. */
        if (i & 1) {
            sched_yield();
        }
        /* A short answer, a cut one or a failure: never above it. */
        p = next_rand(&seed) % 4 ? rq.prompt : 0;
        c = p ? (apr_int64_t)(next_rand(&seed) % (rq.max_out + 1)) : 0;
        b->pending[me] = p + c;
        note_active(b, -1);
        if (llmgw_limits_settle(t, &tk, p, c, T0) != APR_SUCCESS) {
            __atomic_add_fetch(&b->bad, 1, __ATOMIC_RELAXED);
        }
        b->charged[me] += p + c;
        b->pending[me] = 0;
        b->ops[me]++;
    }
}

static llmgw_limits_t *hammer_table(apr_size_t *size, apr_int64_t limit,
                                    llmgw_limits_subject_t *s)
{
    llmgw_limits_t *t = shared_table(8, 64, 0, size);
    llmgw_limits_def_t d[2];

    memset(d, 0, sizeof(d));
    d[0].name = "key:shared";
    budget(&d[0].conf, 0, LLMGW_BUDGET_TOKENS, LLMGW_PER_DAY, limit);
    d[1].name = "route:r";
    d[1].conf.concurrent = MAX_IN_FLIGHT;
    ck_assert_int_eq(llmgw_limits_configure(t, d, 2, NULL, T0), APR_SUCCESS);
    s[0] = find(t, "key:shared");
    s[1] = find(t, "route:r");
    return t;
}

static pid_t spawn(llmgw_limits_t *t, board_t *b, int me,
                   const llmgw_limits_subject_t *s, int ops)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        worker(t, b, me, s, ops);
        child_done(&b->done[me], 0);
    }
    return pid;
}

START_TEST(processes_never_overshoot_a_budget)
{
    apr_size_t size;
    llmgw_limits_subject_t s[2];
    llmgw_limits_t *t = hammer_table(&size, BUDGET, s);
    board_t *b = shared(sizeof(board_t));
    llmgw_limits_usage_t u;
    llmgw_limits_stats_t st;
    pid_t pid[WORKERS];
    apr_int64_t charged = 0;
    int i;

    for (i = 0; i < WORKERS; i++) {
        pid[i] = spawn(t, b, i, s, OPS);
    }
    for (i = 0; i < WORKERS; i++) {
        ck_assert_int_eq(child_answer(pid[i], &b->done[i]), 0);
        charged += b->charged[i];
    }
    u = usage(t, s[0], T0);
    ck_assert_int_eq(b->bad, 0);
    ck_assert_int_gt(b->refused, 0);
    ck_assert_int_le(u.budget[0].used, BUDGET);
    held(&u, 0, charged, 0);
    ck_assert_int_eq(u.inflight, 0);
    ck_assert_int_eq(u.requests, b->admitted);
    ck_assert_int_le(b->most_active, MAX_IN_FLIGHT);
    ck_assert_int_eq(usage(t, s[1], T0).inflight, 0);
    ck_assert_int_eq(usage(t, s[1], T0).requests, b->admitted);
    /* Every refusal counted once, on the subject that refused. */
    ck_assert_int_eq(u.refused[LLMGW_LIMIT_BUDGET_TOKENS]
                         + usage(t, s[1], T0).refused[LLMGW_LIMIT_CONCURRENT],
                     b->refused);
    llmgw_limits_stats(t, &st);
    ck_assert_int_eq(st.records, 0);
    /* The budget was all but spent: what is left is less than a worst
     * request (59 + 99). */
    ck_assert_int_gt(u.budget[0].used, BUDGET - 200);
    munmap(b, sizeof(board_t));
    munmap(t, size);
}
END_TEST

static void pause_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* The fewest requests settled by a worker from 'from' on. */
static apr_int64_t least_ops(board_t *b, int from)
{
    apr_int64_t least = APR_INT64_MAX;
    int i;

    for (i = from; i < WORKERS; i++) {
        apr_int64_t n = __atomic_load_n(&b->ops[i], __ATOMIC_RELAXED);

        least = n < least ? n : least;
    }
    return least;
}

START_TEST(a_killed_process_does_not_wedge_the_table)
{
    apr_size_t size;
    llmgw_limits_subject_t s[2];
    /* A budget they do not spend: all keep reserving until stopped. */
    llmgw_limits_t *t = hammer_table(&size, APR_INT64_C(1) << 40, s);
    board_t *b = shared(sizeof(board_t));
    llmgw_limits_usage_t u;
    llmgw_limits_stats_t st;
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    pid_t pid[WORKERS];
    apr_int64_t charged = 0, after_kill;
    int i;

    for (i = 0; i < WORKERS; i++) {
        pid[i] = spawn(t, b, i, s, 0);
    }
    /* Kill one in full stride, then see the others go on. */
    for (i = 0; i < 10000 && least_ops(b, 0) < 20; i++) {
        pause_ms(1);
    }
    ck_assert_int_ge(least_ops(b, 0), 20);
    kill(pid[0], SIGKILL);
    ck_assert_int_eq(child_answer(pid[0], &b->done[0]), -1);
    after_kill = least_ops(b, 1);
    for (i = 0; i < 10000 && least_ops(b, 1) < after_kill + 20; i++) {
        pause_ms(1);
    }
    b->stop = 1;
    for (i = 1; i < WORKERS; i++) {
        ck_assert_int_eq(child_answer(pid[i], &b->done[i]), 0);
    }
    /* Each of the others went on after the kill. */
    ck_assert_int_ge(least_ops(b, 1), after_kill + 20);
    ck_assert_int_eq(b->bad, 0);
    llmgw_limits_sweep(t, test_pool, T0, 1);
    for (i = 0; i < WORKERS; i++) {
        charged += b->charged[i];
    }
    u = usage(t, s[0], T0);
    ck_assert_int_ge(u.budget[0].used, charged);
    ck_assert_int_le(u.budget[0].used, charged + b->pending[0]);
    ck_assert_int_eq(u.budget[0].reserved, 0);
    ck_assert_int_eq(u.inflight, 0);
    ck_assert_int_eq(usage(t, s[1], T0).inflight, 0);
    llmgw_limits_stats(t, &st);
    ck_assert_int_eq(st.records, 0);
    ck_assert_int_le(b->most_active, MAX_IN_FLIGHT);
    /* The killed one may have been admitted and not counted it. */
    ck_assert_int_ge(u.requests, b->admitted);
    ck_assert_int_le(u.requests, b->admitted + 1);
    ck_assert_int_eq(reserve(t, s, 2, 1, 1, T0, &tk, &v), LLMGW_LIMIT_OK);
    munmap(b, sizeof(board_t));
    munmap(t, size);
}
END_TEST

/* ---------------------------------------------------------------------
 * Cluster sync through a memcached stand-in
 */

/* incr, and for a counter memcached does not have, add with the node's
 * whole count (docs/limits.md's protocol). */
static apr_uint64_t mc_incr(apr_hash_t *mc, const llmgw_limits_sync_t *it)
{
    apr_uint64_t *v = apr_hash_get(mc, it->key, APR_HASH_KEY_STRING);

    if (!v) {
        v = apr_pcalloc(test_pool, sizeof(*v));
        *v = it->mark;
        apr_hash_set(mc, apr_pstrdup(test_pool, it->key), APR_HASH_KEY_STRING,
                     v);
        return *v;
    }
    *v += it->delta;
    return *v;
}

static void sync_node(llmgw_limits_t *t, apr_hash_t *mc, apr_time_t now)
{
    llmgw_limits_sync_t it[4];
    apr_uint32_t cursor = 0;
    int n, i;

    while ((n = llmgw_limits_sync_collect(t, &cursor, now, it, 4)) > 0) {
        for (i = 0; i < n; i++) {
            ck_assert_int_eq(
                llmgw_limits_sync_apply(t, &it[i], mc_incr(mc, &it[i]), now),
                APR_SUCCESS);
        }
    }
}

static int use_up(llmgw_limits_t *t, llmgw_limits_subject_t s, int tries,
                  apr_time_t now)
{
    llmgw_limits_ticket_t tk;
    llmgw_limits_verdict_t v;
    int i, n = 0;

    for (i = 0; i < tries; i++) {
        if (reserve(t, &s, 1, 50, 50, now, &tk, &v) == LLMGW_LIMIT_OK) {
            llmgw_limits_settle(t, &tk, 50, 50, now);
            n++;
        }
    }
    return n;
}

/* Two nodes, a and b, each with key:a of the same limits (sa, sb), and
 * the memcached they share. */
typedef struct {
    apr_hash_t *mc;
    llmgw_limits_t *a, *b;
    llmgw_limits_subject_t sa, sb;
} cluster_t;

static cluster_t cluster(llmgw_limits_conf_t c)
{
    cluster_t k;

    k.mc = apr_hash_make(test_pool);
    k.a = table_one(c, &k.sa);
    k.b = table_one(c, &k.sb);
    return k;
}

START_TEST(two_nodes_one_budget)
{
    cluster_t k = cluster(tokens_a_day(conf_of(10, 0, 0), 1000));
    llmgw_limits_sync_t it[8];
    apr_uint32_t cursor = 0;
    int n;

    /* Each node alone would admit 10 requests of 100. */
    ck_assert_int_eq(use_up(k.a, k.sa, 6, T0), 6);
    sync_node(k.a, k.mc, T0);
    sync_node(k.b, k.mc, T0);
    ck_assert_int_eq(usage(k.b, k.sb, T0).budget[0].remote, 600);
    /* B knows A's 600 tokens and 6 requests: 4 more, cluster-wide. */
    ck_assert_int_eq(use_up(k.b, k.sb, 10, T0), 4);
    ck_assert_int_eq(usage(k.b, k.sb, T0).rpm_remaining, 0);
    sync_node(k.b, k.mc, T0);
    sync_node(k.a, k.mc, T0);
    ck_assert_int_eq(usage(k.a, k.sa, T0).budget[0].remote, 400);
    ck_assert_int_eq(use_up(k.a, k.sa, 10, T0 + 300 * SEC), 0);
    /* Syncing again adds nothing twice. */
    sync_node(k.a, k.mc, T0 + 300 * SEC);
    sync_node(k.b, k.mc, T0 + 300 * SEC);
    ck_assert_int_eq(usage(k.a, k.sa, T0).budget[0].remote, 400);
    ck_assert_int_eq(usage(k.b, k.sb, T0).budget[0].remote, 600);
    /* The items: a budget of this day, requests; the next day a new key. */
    n = llmgw_limits_sync_collect(k.a, &cursor, T0, it, 8);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(strncmp(it[0].key, "lim:", 4), 0);
    ck_assert_ptr_nonnull(strstr(it[0].key, ":td:20454"));
    ck_assert_int_eq(it[0].delta, 0);
    ck_assert_int_eq(it[0].mark, 600);
    ck_assert_int_eq(it[0].expires, 1767225600 + 2 * 86400);
    ck_assert_ptr_nonnull(strstr(it[1].key, ":rq"));
    ck_assert_int_eq(llmgw_limits_sync_collect(k.a, &cursor, T0, it, 8), 0);
    n = llmgw_limits_sync_collect(k.a, &cursor, T0 + DAY, it, 8);
    ck_assert_ptr_nonnull(strstr(it[0].key, ":td:20455"));
    ck_assert_int_eq(it[0].mark, 0);
    /* A total of a day gone by changes nothing today. */
    it[0].period = 20454;
    llmgw_limits_sync_apply(k.a, &it[0], 99999, T0 + DAY);
    ck_assert_int_eq(usage(k.a, k.sa, T0 + DAY).budget[0].remote, 0);
}
END_TEST

START_TEST(unsynced_nodes_overshoot_by_the_unseen_usage)
{
    cluster_t k = cluster(tokens_a_day(conf_of(0, 0, 0), 1000));
    llmgw_limits_sync_t it[2];
    apr_uint32_t cursor = 0;
    int na, nb;

    /* Between two syncs both spend: the cluster goes over by exactly
     * what one node did not see yet, never more. */
    na = use_up(k.a, k.sa, 3, T0);
    nb = use_up(k.b, k.sb, 10, T0);
    ck_assert_int_eq(na + nb, 13);
    sync_node(k.a, k.mc, T0);
    sync_node(k.b, k.mc, T0);
    sync_node(k.a, k.mc, T0);
    ck_assert_int_eq(use_up(k.a, k.sa, 10, T0) + use_up(k.b, k.sb, 10, T0), 0);
    /* memcached lost the counter: what a node learned is kept, whether
     * the new total is below its own count or only below what it knew. */
    apr_hash_clear(k.mc);
    ck_assert_int_eq(llmgw_limits_sync_collect(k.b, &cursor, T0, it, 2), 1);
    llmgw_limits_sync_apply(k.b, &it[0], 3, T0);
    ck_assert_int_eq(usage(k.b, k.sb, T0).budget[0].remote, 300);
    llmgw_limits_sync_apply(k.b, &it[0], it[0].mark + 100, T0);
    ck_assert_int_eq(usage(k.b, k.sb, T0).budget[0].remote, 300);
}
END_TEST

START_TEST(usage_lists_every_subject)
{
    llmgw_limits_t *t = table();
    llmgw_limits_subject_t s[4];
    llmgw_limits_usage_t u;
    apr_uint32_t cursor = 0;
    int n = 0, seen = 0;

    three(t, s);
    while (llmgw_limits_usage_next(t, &cursor, T0, &u) == APR_SUCCESS) {
        seen |= !strcmp(u.name, "key:a") << 0 | !strcmp(u.name, "route:r") << 1
                | !strcmp(u.name, "key+route:a\037r") << 2
                | !strcmp(u.name, "route:q") << 3;
        ck_assert_int_eq(u.retired, 0);
        n++;
    }
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(seen, 15);
}
END_TEST

Suite *limits_suite(void)
{
    Suite *s = suite_create("limits");

    test_case_add(
        s, "limits", 0,
        TESTS(rpm_admits_the_limit_then_refills, rpm_of_seven_admits_seven,
              changes_tell_when_a_snapshot_is_due, tpm_reserves_then_refunds,
              concurrency_counts_requests_in_flight,
              token_budget_holds_and_tells_spent_from_held,
              periods_are_calendar_aligned_in_utc,
              rollover_with_reservations_in_flight, cost_budget_in_micro_units,
              refunds_after_short_answers_disconnects_failures,
              all_subjects_or_none, retarget_moves_a_reservation,
              headroom_is_the_least_left, durations_as_openai_writes_them,
              headers_and_429s, parses_rate_budget_and_price,
              subject_names_by_kind, config_changes_keep_usage,
              dynamic_subjects_fill_and_make_room,
              full_record_table_and_bad_requests, one_table_at_two_addresses,
              snapshot_restores_by_name, snapshot_charges_in_flight_when_told,
              corrupt_snapshots_are_refused_whole,
              sweep_takes_back_what_outlived_its_ttl, two_nodes_one_budget,
              unsynced_nodes_overshoot_by_the_unseen_usage,
              usage_lists_every_subject));
    /* Forks, kills, shared maps; slow under valgrind. */
    test_case_add(s, "processes", 120,
                  TESTS(sweep_refunds_a_dead_owner,
                        sweep_charges_a_dead_owner_when_told,
                        killed_mid_reserve_leaves_no_trace,
                        killed_mid_settle_leaves_no_trace,
                        killed_mid_retarget_leaves_no_trace,
                        killed_mid_sync_leaves_no_trace,
                        processes_never_overshoot_a_budget,
                        a_killed_process_does_not_wedge_the_table));
    return s;
}
