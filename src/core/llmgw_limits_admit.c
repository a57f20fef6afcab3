/* llmgw_limits_admit: admission on the limits table: buckets and budgets,
 * the verdict, reserve, settle and retarget, sweeps, and reading usage.
 *
 * Rate limits are token buckets kept as a debt in ticks: a token is
 * 60,000,000 ticks (microseconds in a minute) and a limit of R per minute
 * pays back R ticks a microsecond, so capacity (R tokens) and refill are
 * exact integers: R requests at once, then R a minute. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "llmgw_limits_int.h"

#define TICKS APR_INT64_C(60000000) /* a token's debt */
#define DEBT_CAP 16                 /* minutes of debt a bucket may owe */

/* ---------------------------------------------------------------------
 * Calendar periods (UTC)
 */

static apr_int64_t floor_div(apr_int64_t a, apr_int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Days since 1970-01-01 of a civil date, and back: the proleptic
 * Gregorian calendar counted in 400-year eras of 146097 days, with years
 * starting in March so that the leap day comes last. */
static apr_int64_t days_from_civil(apr_int64_t y, int m, int d)
{
    apr_int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = floor_div(y, 400);
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(apr_int64_t z, apr_int64_t *y, int *m)
{
    apr_int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static apr_int64_t period_id(int per, apr_time_t now)
{
    apr_int64_t sec = floor_div(now, APR_USEC_PER_SEC), y;
    int m;

    switch (per) {
    case LLMGW_PER_HOUR: return floor_div(sec, 3600);
    case LLMGW_PER_DAY: return floor_div(sec, 86400);
    default:
        civil_from_days(floor_div(sec, 86400), &y, &m);
        return y * 12 + (m - 1);
    }
}

static apr_time_t period_begin(int per, apr_int64_t id)
{
    switch (per) {
    case LLMGW_PER_HOUR: return id * 3600 * APR_USEC_PER_SEC;
    case LLMGW_PER_DAY: return id * 86400 * APR_USEC_PER_SEC;
    default:
        return days_from_civil(floor_div(id, 12),
                               (int)(id - floor_div(id, 12) * 12) + 1, 1)
               * 86400 * APR_USEC_PER_SEC;
    }
}

apr_time_t llmgw_limits_period_start(llmgw_period_t per, apr_time_t now,
                                     int next)
{
    return period_begin(per, period_id(per, now) + (next ? 1 : 0));
}

/* The period holding now, from the table's cache (under the lock): the
 * calendar is worked out once a period, not once a call. Not journaled:
 * 'valid' is cleared before the words change and set after, so a death
 * half-way only costs working it out again. *end may be NULL. */
static apr_int64_t cur_period(tab_t *t, int per, apr_time_t now,
                              apr_time_t *end)
{
    pcache_t *c = &t->pc[per & 3];

    if (!c->valid || now < c->start || now >= c->end) {
        apr_int64_t id = period_id(per, now);

        c->valid = 0;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        c->id = id;
        c->start = period_begin(per, id);
        c->end = period_begin(per, id + 1);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        c->valid = 1;
    }
    if (end) {
        *end = c->end;
    }
    return c->id;
}

/* ---------------------------------------------------------------------
 * Buckets and budgets
 */

/* The debt at now: paid back at 'limit' ticks a microsecond. */
static apr_int64_t debt_at(const bucket_t *b, apr_time_t now)
{
    apr_int64_t dt = now - b->last;

    if (b->debt <= 0 || b->limit <= 0) {
        return 0;
    }
    if (dt <= 0) {
        return b->debt;
    }
    if (dt > b->debt / b->limit) {
        return 0;
    }
    return b->debt - dt * b->limit;
}

static apr_int64_t cap_of(const bucket_t *b)
{
    return b->limit * TICKS;
}

void lm_set_debt(tab_t *t, bucket_t *b, apr_int64_t d, apr_time_t now)
{
    d = MAX(0, MIN(d, DEBT_CAP * cap_of(b)));
    if (d != b->debt) {
        lm_jset(t, &b->debt, d);
    }
    if (now > b->last) {
        lm_jset(t, &b->last, now);
    }
}

void lm_add_debt(tab_t *t, bucket_t *b, apr_int64_t tokens, apr_time_t now)
{
    apr_int64_t d = debt_at(b, now);

    if (tokens > DEBT_CAP * b->limit) {
        d = DEBT_CAP * cap_of(b);
    }
    else if (tokens < -DEBT_CAP * b->limit) {
        d = 0;
    }
    else {
        d += tokens * TICKS;
    }
    lm_set_debt(t, b, d, now);
}

/* What is left of the bucket now, in tokens. */
static apr_int64_t bucket_left(const bucket_t *b, apr_time_t now)
{
    return MAX(0, (cap_of(b) - debt_at(b, now)) / TICKS);
}

/* How long until the bucket is full again. */
static apr_time_t bucket_reset(const bucket_t *b, apr_time_t now)
{
    apr_int64_t d = debt_at(b, now);

    return d ? (d + b->limit - 1) / b->limit : 0;
}

/* How long until n tokens fit. */
static apr_time_t bucket_wait(const bucket_t *b, apr_int64_t n, apr_time_t now)
{
    apr_int64_t over = debt_at(b, now) - (cap_of(b) - n * TICKS);

    return over > 0 ? (over + b->limit - 1) / b->limit : 0;
}

void lm_roll(tab_t *t, budget_t *b, apr_time_t now)
{
    apr_int64_t cur = cur_period(t, B_PER(b->conf), now, NULL);

    if (b->period >= cur) {
        return;
    }
    lm_jset(t, &b->prev_period, b->period);
    lm_jset(t, &b->prev_used, b->used);
    lm_jset(t, &b->period, cur);
    lm_jset(t, &b->used, 0);
    lm_jset(t, &b->reserved, 0);
    lm_jset(t, &b->remote, 0);
    lm_jset(t, &b->synced, 0);
}

/* A budget's counts as of now, without changing it. */
static void budget_view(tab_t *t, const budget_t *b, apr_time_t now,
                        apr_int64_t *used, apr_int64_t *reserved,
                        apr_int64_t *remote, apr_int64_t *prev)
{
    apr_int64_t cur = cur_period(t, B_PER(b->conf), now, NULL);

    if (b->period >= cur) {
        *used = b->used;
        *reserved = b->reserved;
        *remote = b->remote;
        *prev = b->prev_period == b->period - 1 ? b->prev_used : 0;
    }
    else {
        *used = *reserved = *remote = 0;
        *prev = b->period == cur - 1 ? b->used : 0;
    }
}

apr_time_t lm_budget_reset(tab_t *t, const budget_t *b, apr_time_t now)
{
    int per = B_PER(b->conf);
    apr_time_t end;

    if (b->period > cur_period(t, per, now, &end)) {
        return period_begin(per, b->period + 1);
    }
    return end;
}

apr_int64_t lm_sat_add(apr_int64_t a, apr_int64_t b)
{
    return a > APR_INT64_MAX - b ? APR_INT64_MAX : a + b;
}

/* n tokens at price (micro-units a million tokens), rounded up. */
static apr_int64_t cost_of(apr_int64_t n, apr_int64_t price)
{
    apr_uint64_t hi, lo;
    unsigned __int128 c;

    if (n <= 0 || price <= 0) {
        return 0;
    }
    c = ((unsigned __int128)n * (apr_uint64_t)price + 999999) / 1000000;
    hi = (apr_uint64_t)(c >> 64);
    lo = (apr_uint64_t)c;
    return hi || lo > (apr_uint64_t)APR_INT64_MAX ? APR_INT64_MAX
                                                  : (apr_int64_t)lo;
}

static apr_int64_t request_cost(apr_int64_t prompt, apr_int64_t out,
                                const llmgw_price_t *pr)
{
    return lm_sat_add(cost_of(prompt, pr->in), cost_of(out, pr->out));
}

/* ---------------------------------------------------------------------
 * Taking and giving back
 */

typedef struct {
    llmgw_limit_kind_t kind;
    int place; /* in the request's subjects */
    int budget;
    int spent;
    int too_large;
    apr_int64_t limit;
    apr_int64_t used;
    apr_int64_t requested;
} refusal_t;

#define T_REQUEST 1 /* in flight, rpm */
#define T_AMOUNTS 2 /* tpm, budgets */

static llmgw_limit_kind_t refuse(refusal_t *r, llmgw_limit_kind_t kind,
                                 apr_int64_t limit, apr_int64_t used,
                                 apr_int64_t requested)
{
    r->kind = kind;
    r->limit = limit;
    r->used = used;
    r->requested = requested;
    return kind;
}

static llmgw_limit_kind_t take_budgets(tab_t *t, subj_t *s, apr_int64_t tokens,
                                       apr_int64_t cost, apr_time_t now,
                                       refusal_t *r)
{
    int i;

    for (i = 0; i < NB; i++) {
        budget_t *b = &s->b[i];
        int unit = B_UNIT(b->conf);
        apr_int64_t a = unit == LLMGW_BUDGET_TOKENS ? tokens : cost;
        apr_int64_t settled, held;

        if (!b->conf) {
            continue;
        }
        lm_roll(t, b, now);
        settled = lm_sat_add(b->used, b->remote);
        held = lm_sat_add(settled, b->reserved);
        /* A spent budget refuses even what costs nothing (a model with
         * no price under a cost budget). */
        if (a > b->limit - held || held >= b->limit) {
            r->budget = i;
            r->spent = a > b->limit - settled || settled >= b->limit;
            r->too_large = a > b->limit;
            return refuse(r,
                          unit == LLMGW_BUDGET_TOKENS
                              ? LLMGW_LIMIT_BUDGET_TOKENS
                              : LLMGW_LIMIT_BUDGET_COST,
                          b->limit, held, a);
        }
        lm_jset(t, &b->reserved, b->reserved + a);
    }
    return LLMGW_LIMIT_OK;
}

/* Takes what of s's limits, or says which one refused (the caller then
 * undoes the transaction). */
static llmgw_limit_kind_t take(tab_t *t, subj_t *s, int what,
                               apr_int64_t tokens, apr_int64_t cost,
                               apr_time_t now, refusal_t *r)
{
    if (what & T_REQUEST) {
        if (s->concurrent && s->inflight >= s->concurrent) {
            return refuse(r, LLMGW_LIMIT_CONCURRENT, s->concurrent,
                          s->inflight, 1);
        }
        lm_jset(t, &s->inflight, s->inflight + 1);
        if (s->rq.limit) {
            apr_int64_t d = debt_at(&s->rq, now);

            if (d + TICKS > cap_of(&s->rq)) {
                return refuse(r, LLMGW_LIMIT_RPM, s->rq.limit,
                              s->rq.limit - bucket_left(&s->rq, now), 1);
            }
            lm_set_debt(t, &s->rq, d + TICKS, now);
        }
        lm_jset(t, &s->rq.local, s->rq.local + 1);
    }
    if (!(what & T_AMOUNTS)) {
        return LLMGW_LIMIT_OK;
    }
    if (s->tk.limit) {
        apr_int64_t d = debt_at(&s->tk, now);

        if (tokens > s->tk.limit) {
            r->too_large = 1;
            return refuse(r, LLMGW_LIMIT_TPM, s->tk.limit,
                          s->tk.limit - bucket_left(&s->tk, now), tokens);
        }
        if (d + tokens * TICKS > cap_of(&s->tk)) {
            return refuse(r, LLMGW_LIMIT_TPM, s->tk.limit,
                          s->tk.limit - bucket_left(&s->tk, now), tokens);
        }
        lm_set_debt(t, &s->tk, d + tokens * TICKS, now);
    }
    return take_budgets(t, s, tokens, cost, now, r);
}

/* What a settlement (or a sweep) gives back and charges on one subject.
 * The reservation was est tokens and cost at t0 by record seq; the
 * request used act of each. 'late': a sweep already gave the reservation
 * back. */
typedef struct {
    apr_time_t t0;
    apr_int64_t seq;
    apr_int64_t est_tokens, est_cost;
    apr_int64_t act_tokens, act_cost;
    int inflight; /* end the request in flight */
    int late;
} give_t;

/* A give of the reservation of tokens at t0 by record seq, nothing used
 * yet: the caller sets what else applies. */
static void give_init(give_t *g, apr_time_t t0, apr_int64_t seq,
                      apr_int64_t tokens)
{
    memset(g, 0, sizeof(*g));
    g->t0 = t0;
    g->seq = seq;
    g->est_tokens = tokens;
}

static void give_budget(tab_t *t, budget_t *b, const give_t *g, apr_time_t now)
{
    int tokens = B_UNIT(b->conf) == LLMGW_BUDGET_TOKENS;
    apr_int64_t est = tokens ? g->est_tokens : g->est_cost;
    apr_int64_t act = tokens ? g->act_tokens : g->act_cost;
    apr_int64_t p0 = cur_period(t, B_PER(b->conf), g->t0, NULL);

    lm_roll(t, b, now);
    if (b->period == p0) {
        if (!g->late && g->seq >= b->since) {
            lm_jset(t, &b->reserved, MAX(0, b->reserved - est));
        }
        lm_jadd(t, &b->used, act);
    }
    else if (b->prev_period == p0) {
        lm_jadd(t, &b->prev_used, act);
    }
}

static void give(tab_t *t, subj_t *s, const give_t *g, apr_time_t now)
{
    int i;

    if (g->inflight) {
        lm_jset(t, &s->inflight, MAX(0, s->inflight - 1));
    }
    if (s->tk.limit && g->seq >= s->tk.since) {
        lm_add_debt(t, &s->tk,
                    g->late ? g->act_tokens : g->act_tokens - g->est_tokens,
                    now);
    }
    lm_jadd(t, &s->tk.local, g->act_tokens);
    for (i = 0; i < NB; i++) {
        if (s->b[i].conf) {
            give_budget(t, &s->b[i], g, now);
        }
    }
}

/* ---------------------------------------------------------------------
 * The verdict
 */

static void tightest(apr_int64_t *limit, apr_int64_t *left, apr_time_t *reset,
                     apr_int64_t l, apr_int64_t r, apr_time_t when)
{
    if (*limit < 0 || r < *left || (r == *left && when > *reset)) {
        *limit = l;
        *left = r;
        *reset = when;
    }
}

/* The headers' values over the subjects, and the refusal's details. */
static void describe(tab_t *t, subj_t **subs, int n, apr_time_t now,
                     const refusal_t *r, llmgw_limits_verdict_t *v)
{
    apr_time_t wait = 0;
    int i, k;

    memset(v, 0, sizeof(*v));
    v->subject = -1;
    v->limit_requests = v->limit_tokens = -1;
    for (i = 0; i < n; i++) {
        subj_t *s = subs[i];

        if (s->rq.limit) {
            tightest(&v->limit_requests, &v->remaining_requests,
                     &v->reset_requests, s->rq.limit, bucket_left(&s->rq, now),
                     bucket_reset(&s->rq, now));
        }
        if (s->tk.limit) {
            tightest(&v->limit_tokens, &v->remaining_tokens, &v->reset_tokens,
                     s->tk.limit, bucket_left(&s->tk, now),
                     bucket_reset(&s->tk, now));
        }
        for (k = 0; k < NB; k++) {
            const budget_t *b = &s->b[k];
            apr_int64_t u, res, rem, prev;

            if (B_UNIT(b->conf) != LLMGW_BUDGET_TOKENS) {
                continue;
            }
            budget_view(t, b, now, &u, &res, &rem, &prev);
            tightest(&v->limit_tokens, &v->remaining_tokens, &v->reset_tokens,
                     b->limit, MAX(0, b->limit - u - res - rem),
                     lm_budget_reset(t, b, now) - now);
        }
    }
    if (!r || r->kind == LLMGW_LIMIT_OK) {
        return;
    }
    v->refused = r->kind;
    v->subject = r->place;
    v->spent = r->spent;
    v->too_large = r->too_large;
    v->limit = r->limit;
    v->used = r->used;
    v->requested = r->requested;
    switch (r->kind) {
    case LLMGW_LIMIT_RPM:
        wait = bucket_wait(&subs[r->place]->rq, 1, now);
        break;
    case LLMGW_LIMIT_TPM:
        wait = r->too_large
                   ? 60 * APR_USEC_PER_SEC
                   : bucket_wait(&subs[r->place]->tk, r->requested, now);
        break;
    case LLMGW_LIMIT_BUDGET_TOKENS:
    case LLMGW_LIMIT_BUDGET_COST:
        v->per = B_PER(subs[r->place]->b[r->budget].conf);
        wait =
            r->spent
                ? lm_budget_reset(t, &subs[r->place]->b[r->budget], now) - now
                : APR_USEC_PER_SEC;
        break;
    default: wait = APR_USEC_PER_SEC; break;
    }
    v->retry_after = MAX(1, (wait + APR_USEC_PER_SEC - 1) / APR_USEC_PER_SEC);
}

/* ---------------------------------------------------------------------
 * Reserve, settle, retarget
 */

static int req_valid(const llmgw_limits_req_t *rq)
{
    int i, k;

    if (rq->nsubjects < 1 || rq->nsubjects > NS || rq->prompt < 0
        || rq->prompt > LLMGW_LIMITS_TOKENS_MAX || rq->max_out < 0
        || rq->max_out > LLMGW_LIMITS_TOKENS_MAX || rq->price.in < 0
        || rq->price.in > LLMGW_LIMITS_PRICE_MAX || rq->price.out < 0
        || rq->price.out > LLMGW_LIMITS_PRICE_MAX || rq->ttl < 0) {
        return 0;
    }
    for (i = 0; i < rq->nsubjects; i++) {
        for (k = 0; k < i; k++) {
            if (rq->subject[k].index == rq->subject[i].index) {
                return 0;
            }
        }
    }
    return 1;
}

/* The request's subjects, all live; 0 if one is gone. */
static int subjects_of(tab_t *t, const llmgw_limits_req_t *rq, subj_t **subs)
{
    int i;

    for (i = 0; i < rq->nsubjects; i++) {
        subs[i] = lm_handle(t, rq->subject[i].index, rq->subject[i].gen);
        if (!subs[i] || (subs[i]->state & 0xff) != S_LIVE) {
            return 0;
        }
    }
    return 1;
}

/* A refusal, under the lock: what the taking did is undone, the refusing
 * subject counts it, v describes it; the lock is released. */
static llmgw_limit_kind_t refused(tab_t *t, subj_t **subs, int n,
                                  apr_time_t now, const refusal_t *r,
                                  llmgw_limits_verdict_t *v)
{
    subj_t *s = subs[r->place];

    lm_undo(t);
    if (r->kind > LLMGW_LIMIT_OK && r->kind < LLMGW_LIMIT_NKINDS) {
        lm_jset(t, &s->refused[r->kind], s->refused[r->kind] + 1);
    }
    describe(t, subs, n, now, r, v);
    lm_unlock(t);
    return r->kind;
}

/* What a ticket says of the reservation just made of rq for rec. */
static void ticket_fill(llmgw_limits_ticket_t *tk, const rec_t *rec,
                        const llmgw_limits_req_t *rq, apr_int64_t tokens,
                        apr_int64_t cost, apr_time_t now)
{
    int i;

    tk->t0 = now;
    tk->seq = rec->seq;
    tk->tokens = tokens;
    tk->price = rq->price;
    tk->nsubjects = rq->nsubjects;
    for (i = 0; i < rq->nsubjects; i++) {
        tk->subject[i] = rq->subject[i];
        tk->cost[i] = cost;
    }
}

static llmgw_limit_kind_t early(llmgw_limits_verdict_t *v,
                                llmgw_limit_kind_t kind)
{
    memset(v, 0, sizeof(*v));
    v->refused = kind;
    v->subject = -1;
    v->limit_requests = v->limit_tokens = -1;
    v->retry_after = 1;
    return kind;
}

llmgw_limit_kind_t llmgw_limits_reserve(llmgw_limits_t *t,
                                        const llmgw_limits_req_t *rq,
                                        apr_time_t now,
                                        llmgw_limits_ticket_t *tk,
                                        llmgw_limits_verdict_t *v)
{
    apr_int64_t tokens = rq->prompt + rq->max_out, cost;
    refusal_t r = { LLMGW_LIMIT_OK, -1, 0, 0, 0, 0, 0, 0 };
    subj_t *subs[NS];
    apr_uint64_t ri;
    rec_t *rec;
    int i;

    memset(tk, 0, sizeof(*tk));
    if (!req_valid(rq)) {
        return early(v, LLMGW_LIMIT_GONE);
    }
    cost = request_cost(rq->prompt, rq->max_out, &rq->price);
    if (lm_lock(t) != APR_SUCCESS) {
        return early(v, LLMGW_LIMIT_FULL);
    }
    if (!subjects_of(t, rq, subs)) {
        lm_unlock(t);
        return early(v, LLMGW_LIMIT_GONE);
    }
    if (!t->free_rec) {
        lm_unlock(t);
        return early(v, LLMGW_LIMIT_FULL);
    }
    for (i = 0; i < rq->nsubjects && r.kind == LLMGW_LIMIT_OK; i++) {
        r.place = i;
        take(t, subs[i], T_REQUEST | T_AMOUNTS, tokens, cost, now, &r);
    }
    if (r.kind != LLMGW_LIMIT_OK) {
        return refused(t, subs, rq->nsubjects, now, &r, v);
    }
    /* The record: free until its state says otherwise. */
    ri = (apr_uint64_t)t->free_rec - 1;
    rec = REC(t, ri);
    rec->seq = t->rec_seq;
    rec->owner = rq->owner;
    rec->t0 = now;
    rec->expiry = lm_sat_add(now, rq->ttl ? rq->ttl : t->default_ttl);
    rec->tokens = tokens;
    rec->nsub = rq->nsubjects;
    for (i = 0; i < rq->nsubjects; i++) {
        rec->sub[i] =
            (apr_int64_t)rq->subject[i].index << 32 | rq->subject[i].gen;
        rec->cost[i] = cost;
        lm_jadd(t, &subs[i]->requests, 1);
    }
    lm_jset(t, &t->free_rec, rec->next_free);
    lm_jset(t, &t->nrec, t->nrec + 1);
    lm_jset(t, &t->rec_seq, t->rec_seq + 1);
    lm_jset(t, &rec->state, ((rec->state >> 1) + 1) << 1 | 1);
    describe(t, subs, rq->nsubjects, now, NULL, v);
    tk->rec = ri + 1;
    tk->rec_gen = (apr_uint64_t)rec->state;
    ticket_fill(tk, rec, rq, tokens, cost, now);
    lm_unlock(t);
    return LLMGW_LIMIT_OK;
}

/* The record tk holds, if it is still tk's. */
static rec_t *ticket_rec(tab_t *t, const llmgw_limits_ticket_t *tk)
{
    rec_t *rec;

    if (!tk->rec || tk->rec > t->max_records) {
        return NULL;
    }
    rec = REC(t, tk->rec - 1);
    return (apr_uint64_t)rec->state == tk->rec_gen ? rec : NULL;
}

static void free_rec(tab_t *t, rec_t *rec)
{
    lm_jset(t, &rec->state, rec->state & ~APR_INT64_C(1));
    lm_jset(t, &rec->next_free, t->free_rec);
    lm_jset(t, &t->free_rec, (rec - REC(t, 0)) + 1);
    lm_jset(t, &t->nrec, t->nrec - 1);
}

apr_status_t llmgw_limits_settle(llmgw_limits_t *t, llmgw_limits_ticket_t *tk,
                                 apr_int64_t prompt, apr_int64_t completion,
                                 apr_time_t now)
{
    give_t g;
    rec_t *rec;
    apr_status_t rv;
    apr_int64_t c;
    int i, charged;

    if (!tk->rec || tk->settled) {
        return APR_EINVAL;
    }
    prompt = MAX(0, MIN(prompt, LLMGW_LIMITS_TOKENS_MAX));
    completion = MAX(0, MIN(completion, LLMGW_LIMITS_TOKENS_MAX));
    c = request_cost(prompt, completion, &tk->price);
    if ((rv = lm_lock(t)) != APR_SUCCESS) {
        return rv;
    }
    rec = ticket_rec(t, tk);
    charged = !rec && (t->flags & LLMGW_LIMITS_LEAK_CHARGE);
    give_init(&g, tk->t0, tk->seq, tk->tokens);
    g.act_tokens = prompt + completion;
    g.inflight = rec != NULL;
    g.late = rec == NULL;
    if (charged) {
        /* The sweep charged the reservation in full: only what went
         * past it is left to charge. */
        g.act_tokens = MAX(0, g.act_tokens - tk->tokens);
    }
    /* One transaction: a death half-way must not leave some subjects
     * settled and the record for a sweep to give back again. */
    for (i = 0; i < tk->nsubjects; i++) {
        subj_t *s = lm_handle(t, tk->subject[i].index, tk->subject[i].gen);

        if (!s) {
            continue;
        }
        g.est_cost = tk->cost[i];
        g.act_cost = charged ? MAX(0, c - tk->cost[i]) : c;
        give(t, s, &g, now);
        lm_jadd(t, &s->prompt, prompt);
        lm_jadd(t, &s->completion, completion);
        lm_jadd(t, &s->cost, c);
        if (!rec) {
            lm_jadd(t, &s->late, 1);
        }
    }
    if (rec) {
        free_rec(t, rec);
    }
    lm_unlock(t);
    tk->settled = 1;
    return APR_SUCCESS;
}

static int place_in(const llmgw_limits_subject_t *set, int n,
                    const llmgw_limits_subject_t *s)
{
    int i;

    for (i = 0; i < n; i++) {
        if (set[i].index == s->index && set[i].gen == s->gen) {
            return i;
        }
    }
    return -1;
}

/* The old reservation given back (no usage), on the old subjects. */
static void retarget_release(tab_t *t, const llmgw_limits_ticket_t *tk,
                             const llmgw_limits_req_t *rq, apr_time_t now)
{
    give_t g;
    int i;

    give_init(&g, tk->t0, tk->seq, tk->tokens);
    for (i = 0; i < tk->nsubjects; i++) {
        subj_t *s = lm_handle(t, tk->subject[i].index, tk->subject[i].gen);

        if (s) {
            g.est_cost = tk->cost[i];
            g.inflight =
                place_in(rq->subject, rq->nsubjects, &tk->subject[i]) < 0;
            give(t, s, &g, now);
        }
    }
}

llmgw_limit_kind_t llmgw_limits_retarget(llmgw_limits_t *t,
                                         llmgw_limits_ticket_t *tk,
                                         const llmgw_limits_req_t *rq,
                                         apr_time_t now,
                                         llmgw_limits_verdict_t *v)
{
    apr_int64_t tokens = rq->prompt + rq->max_out, cost;
    refusal_t r = { LLMGW_LIMIT_OK, -1, 0, 0, 0, 0, 0, 0 };
    subj_t *subs[NS];
    rec_t *rec;
    int i;

    if (!req_valid(rq) || !tk->rec || tk->settled) {
        return early(v, LLMGW_LIMIT_GONE);
    }
    cost = request_cost(rq->prompt, rq->max_out, &rq->price);
    if (lm_lock(t) != APR_SUCCESS) {
        return early(v, LLMGW_LIMIT_FULL);
    }
    rec = ticket_rec(t, tk);
    if (!rec || !subjects_of(t, rq, subs)) {
        lm_unlock(t);
        return early(v, LLMGW_LIMIT_GONE);
    }
    retarget_release(t, tk, rq, now);
    for (i = 0; i < rq->nsubjects && r.kind == LLMGW_LIMIT_OK; i++) {
        int kept = place_in(tk->subject, tk->nsubjects, &rq->subject[i]) >= 0;

        r.place = i;
        take(t, subs[i], kept ? T_AMOUNTS : T_REQUEST | T_AMOUNTS, tokens,
             cost, now, &r);
        if (!kept && r.kind == LLMGW_LIMIT_OK) {
            lm_jadd(t, &subs[i]->requests, 1);
        }
    }
    if (r.kind != LLMGW_LIMIT_OK) {
        return refused(t, subs, rq->nsubjects, now, &r, v);
    }
    /* The record now describes a reservation made now. */
    lm_jset(t, &rec->seq, t->rec_seq);
    lm_jset(t, &t->rec_seq, t->rec_seq + 1);
    lm_jset(t, &rec->t0, now);
    lm_jset(t, &rec->tokens, tokens);
    lm_jset(t, &rec->nsub, rq->nsubjects);
    for (i = 0; i < rq->nsubjects; i++) {
        lm_jset(t, &rec->sub[i],
                (apr_int64_t)rq->subject[i].index << 32 | rq->subject[i].gen);
        lm_jset(t, &rec->cost[i], cost);
    }
    describe(t, subs, rq->nsubjects, now, NULL, v);
    ticket_fill(tk, rec, rq, tokens, cost, now);
    lm_unlock(t);
    return LLMGW_LIMIT_OK;
}

/* ---------------------------------------------------------------------
 * Sweeps
 */

/* Gives back (or charges) a record whose request will never settle. */
static void reclaim(tab_t *t, rec_t *rec, apr_time_t now)
{
    int charge = (t->flags & LLMGW_LIMITS_LEAK_CHARGE) != 0;
    give_t g;
    int i;

    give_init(&g, rec->t0, rec->seq, rec->tokens);
    g.act_tokens = charge ? rec->tokens : 0;
    g.inflight = 1;
    for (i = 0; i < rec->nsub && i < NS; i++) {
        subj_t *s = lm_handle(t, (apr_uint32_t)(rec->sub[i] >> 32),
                              (apr_uint32_t)rec->sub[i]);

        if (s) {
            g.est_cost = rec->cost[i];
            g.act_cost = charge ? rec->cost[i] : 0;
            give(t, s, &g, now);
            lm_jadd(t, &s->reclaimed, 1);
        }
    }
    free_rec(t, rec);
    lm_jadd(t, &t->reclaimed, 1);
}

/* Owner 0 (none given) is alive: only its ttl ends it. */
static int process_alive(apr_int64_t pid)
{
    if (pid <= 0 || pid > 0x7fffffff) {
        return 1;
    }
    return kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/* A dynamic subject that holds nothing a new one would not: dropping it
 * loses no usage. */
static int idle(tab_t *t, const subj_t *s, apr_time_t now)
{
    int i;

    if (s->inflight || debt_at(&s->rq, now) || debt_at(&s->tk, now)) {
        return 0;
    }
    for (i = 0; i < NB; i++) {
        apr_int64_t u, res, rem, prev;

        if (s->b[i].conf) {
            budget_view(t, &s->b[i], now, &u, &res, &rem, &prev);
            if (u || res || rem) {
                return 0;
            }
        }
    }
    return 1;
}

static void sweep_subjects(tab_t *t, apr_time_t now)
{
    /* Dynamic subjects make room only when room runs short. */
    int crowded = t->nsubj * 4 > (apr_int64_t)t->max_subjects * 3;
    apr_uint64_t i;

    for (i = 0; i < t->max_subjects; i++) {
        subj_t *s = SUBJ(t, i);
        int st = (int)(s->state & 0xff);

        if ((st == S_RETIRED && !s->inflight)
            || (st == S_LIVE && crowded && (s->flags & SF_DYNAMIC)
                && idle(t, s, now))) {
            lm_drop(t, i);
            lm_commit(t);
        }
    }
    if (t->ntomb * 4 > (apr_int64_t)t->nidx) {
        lm_rebuild_index(t);
    }
}

typedef struct {
    apr_int64_t rec;
    apr_int64_t state;
    apr_int64_t owner;
} cand_t;

int llmgw_limits_sweep(llmgw_limits_t *t, apr_pool_t *p, apr_time_t now,
                       int force)
{
    apr_int64_t last = __atomic_load_n(&t->last_sweep, __ATOMIC_RELAXED);
    apr_int64_t seq, n = 0, i, k, dead_n = 0, room;
    apr_int64_t *dead;
    cand_t *c;
    int taken = 0;

    if (!force && now - last < lm_ld(&t->sweep_interval) && now >= last) {
        return 0;
    }
    if (!__atomic_compare_exchange_n(&t->last_sweep, &last, now, 0,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)
        && !force) {
        return 0; /* another process is sweeping */
    }
    /* Room for what is in flight now and some more; what comes on top
     * waits for the next sweep. Nothing is allocated under the lock. */
    room = MIN(lm_ld(&t->nrec) + 64, (apr_int64_t)t->max_records);
    c = apr_palloc(p, sizeof(*c) * (apr_size_t)room);
    dead = apr_palloc(p, sizeof(*dead) * (apr_size_t)room);
    if (lm_lock(t) != APR_SUCCESS) {
        return 0;
    }
    seq = t->rec_seq;
    for (i = 0; i < (apr_int64_t)t->max_records; i++) {
        rec_t *rec = REC(t, i);

        if ((rec->state & 1) && n < room) {
            c[n].rec = i;
            c[n].state = rec->state;
            c[n++].owner = rec->owner;
        }
    }
    lm_unlock(t);
    /* kill(2) outside the lock, once an owner. A pid dead now had no
     * process from before now: its records made before are leaks. */
    for (i = 0; i < n; i++) {
        for (k = 0; k < dead_n && dead[k] != c[i].owner; k++) {
        }
        if (k == dead_n && !process_alive(c[i].owner)) {
            dead[dead_n++] = c[i].owner;
        }
    }
    if (lm_lock(t) != APR_SUCCESS) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        rec_t *rec = REC(t, c[i].rec);
        int gone = 0;

        if (rec->state != c[i].state || rec->seq >= seq) {
            continue;
        }
        for (k = 0; k < dead_n && !gone; k++) {
            gone = dead[k] == rec->owner;
        }
        if (gone || rec->expiry <= now) {
            reclaim(t, rec, now);
            lm_commit(t);
            taken++;
        }
    }
    sweep_subjects(t, now);
    lm_unlock(t);
    return taken;
}

/* ---------------------------------------------------------------------
 * Reading
 */

apr_int64_t llmgw_limits_headroom(llmgw_limits_t *t,
                                  const llmgw_limits_subject_t *sv, int n,
                                  apr_time_t now)
{
    apr_int64_t left = APR_INT64_MAX;
    int i, k;

    if (lm_lock(t) != APR_SUCCESS) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        subj_t *s = lm_handle(t, sv[i].index, sv[i].gen);

        if (!s) {
            continue;
        }
        if (s->tk.limit) {
            left = MIN(left, bucket_left(&s->tk, now));
        }
        for (k = 0; k < NB; k++) {
            apr_int64_t u, res, rem, prev;

            if (B_UNIT(s->b[k].conf) == LLMGW_BUDGET_TOKENS) {
                budget_view(t, &s->b[k], now, &u, &res, &rem, &prev);
                left = MIN(left, MAX(0, s->b[k].limit - u - res - rem));
            }
        }
    }
    lm_unlock(t);
    return left;
}

static void fill_usage(tab_t *t, apr_uint64_t i, apr_time_t now,
                       llmgw_limits_usage_t *u)
{
    subj_t *s = SUBJ(t, i);
    int k;

    memset(u, 0, sizeof(*u));
    memcpy(u->name, s->name, s->namelen);
    u->subject.index = (apr_uint32_t)i;
    u->subject.gen = (apr_uint32_t)(s->state >> 8);
    u->dynamic = (s->flags & SF_DYNAMIC) != 0;
    u->retired = (s->state & 0xff) == S_RETIRED;
    lm_subj_conf(s, &u->conf);
    u->inflight = s->inflight;
    u->rpm_remaining = s->rq.limit ? bucket_left(&s->rq, now) : -1;
    u->rpm_reset = s->rq.limit ? bucket_reset(&s->rq, now) : 0;
    u->tpm_remaining = s->tk.limit ? bucket_left(&s->tk, now) : -1;
    u->tpm_reset = s->tk.limit ? bucket_reset(&s->tk, now) : 0;
    for (k = 0; k < NB; k++) {
        const budget_t *b = &s->b[k];

        if (!b->conf) {
            continue;
        }
        budget_view(t, b, now, &u->budget[k].used, &u->budget[k].reserved,
                    &u->budget[k].remote, &u->budget[k].prev_used);
        u->budget[k].remaining =
            MAX(0, b->limit - u->budget[k].used - u->budget[k].reserved
                       - u->budget[k].remote);
        u->budget[k].reset = lm_budget_reset(t, b, now);
    }
    u->requests = s->requests;
    memcpy(u->refused, s->refused, sizeof(u->refused));
    u->prompt_tokens = s->prompt;
    u->completion_tokens = s->completion;
    u->cost = s->cost;
    u->reclaimed = s->reclaimed;
    u->late = s->late;
}

apr_status_t llmgw_limits_usage_next(llmgw_limits_t *t, apr_uint32_t *cursor,
                                     apr_time_t now, llmgw_limits_usage_t *u)
{
    apr_status_t rv = APR_NOTFOUND;
    apr_uint64_t i;

    if (lm_lock(t) != APR_SUCCESS) {
        return APR_NOTFOUND;
    }
    for (i = *cursor; i < t->max_subjects; i++) {
        if ((SUBJ(t, i)->state & 0xff) != S_FREE) {
            fill_usage(t, i, now, u);
            rv = APR_SUCCESS;
            break;
        }
    }
    *cursor = (apr_uint32_t)(i + (rv == APR_SUCCESS));
    lm_unlock(t);
    return rv;
}

apr_status_t llmgw_limits_usage(llmgw_limits_t *t,
                                const llmgw_limits_subject_t *s,
                                apr_time_t now, llmgw_limits_usage_t *u)
{
    apr_status_t rv = APR_NOTFOUND;

    if (lm_lock(t) != APR_SUCCESS) {
        return APR_NOTFOUND;
    }
    if (lm_handle(t, s->index, s->gen)) {
        fill_usage(t, s->index, now, u);
        rv = APR_SUCCESS;
    }
    lm_unlock(t);
    return rv;
}

void llmgw_limits_stats(llmgw_limits_t *t, llmgw_limits_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (lm_lock(t) != APR_SUCCESS) {
        return;
    }
    st->subjects = t->nsubj;
    st->max_subjects = (apr_int64_t)t->max_subjects;
    st->records = t->nrec;
    st->max_records = (apr_int64_t)t->max_records;
    st->recoveries = t->recoveries;
    st->reclaimed = t->reclaimed;
    st->journal_max = t->joverflow ? JMAX + t->joverflow : t->jmax_seen;
    st->changes = t->changes;
    lm_unlock(t);
}
