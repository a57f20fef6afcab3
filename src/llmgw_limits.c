/* llmgw_limits: the table (subjects, their buckets and budgets, the
 * reservations in flight), its journaled transactions, snapshots and
 * cluster sync. The text side (parsers, headers, 429s) is in
 * llmgw_limits_text.c.
 *
 * Layout, all 64-bit words at offsets from the table's start (nothing
 * points, so each process may map it elsewhere): the header with the
 * mutex and the journal, max_subjects subjects, an open-addressed index of
 * names (4 entries a subject), max_records reservation records.
 *
 * Every change happens under the mutex, as one transaction: jset() puts
 * the word's old value in the journal before it writes the new one, and
 * commit empties the journal. A process that dies holding the mutex
 * leaves the journal full; the next locker gets EOWNERDEAD and undoes it,
 * so the table is as the dead process found it. Refusals use the same
 * undo: a request takes every limit in turn and, when one says no, the
 * journal gives all of it back. Checking and taking under one lock is
 * what makes a reservation atomic; the journal is what makes it safe
 * against SIGKILL.
 *
 * Lookups by name need no lock: an index entry names a subject, whose
 * state word (generation and liveness) is read before and after its name
 * is compared, as a sequence lock. A subject's name is written only while
 * it is free and unreachable; a miss is always checked again under the
 * lock.
 *
 * Rate limits are token buckets kept as a debt in ticks: a token is
 * 60,000,000 ticks (microseconds in a minute) and a limit of R per minute
 * pays back R ticks a microsecond, so capacity (R tokens) and refill are
 * exact integers: R requests at once, then R a minute. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <apr_strings.h>

#include "llmgw_limits.h"
#include "llmgw_sha256.h"

#define MAGIC APR_UINT64_C(0x314d494c57474c4c)      /* "LLGWLIM1" */
#define VERSION 1
#define JMAX 1024               /* journal words: a transaction's bound */
#define TICKS APR_INT64_C(60000000)                /* a token's debt */
#define DEBT_CAP 16             /* minutes of debt a bucket may owe */
#define NCONF (3 + 2 * LLMGW_LIMITS_BUDGETS)
#define NB LLMGW_LIMITS_BUDGETS
#define NS LLMGW_LIMITS_SUBJECTS

enum { S_FREE = 0, S_LIVE = 1, S_RETIRED = 2 };
#define SF_DYNAMIC 1
#define IDX_TOMB 1

typedef struct {
    apr_int64_t limit;          /* per minute; 0: none */
    apr_int64_t since;          /* records from this seq on took it */
    apr_int64_t debt;           /* ticks owed at 'last' */
    apr_int64_t last;
    apr_int64_t local;          /* this node's count, ever (sync) */
    apr_int64_t synced;         /* of it, added to the cluster's */
    apr_int64_t seen;           /* the other nodes' count, as last seen */
} bucket_t;

typedef struct {
    apr_int64_t conf;           /* unit << 8 | per; 0: none */
    apr_int64_t limit;
    apr_int64_t since;          /* records from this seq on took it */
    apr_int64_t period;         /* the counts below are of this period */
    apr_int64_t used;
    apr_int64_t reserved;
    apr_int64_t remote;         /* the other nodes' used, as last synced */
    apr_int64_t synced;         /* of used, added to the cluster's */
    apr_int64_t prev_period;
    apr_int64_t prev_used;
} budget_t;

typedef struct {
    apr_uint64_t state;         /* gen << 8 | S_*; read without the lock */
    apr_uint64_t namelen;
    char name[LLMGW_LIMITS_NAME_MAX];
    apr_uint64_t hash;
    apr_uint64_t digest;        /* the name's SHA-256, first 8 bytes */
    apr_int64_t flags;
    apr_int64_t next_free;      /* index + 1 of the next free subject */
    apr_int64_t concurrent;
    apr_int64_t inflight;
    bucket_t rq;                /* rpm */
    bucket_t tk;                /* tpm */
    budget_t b[NB];
    apr_int64_t requests;
    apr_int64_t refused[LLMGW_LIMIT_NKINDS];
    apr_int64_t prompt;
    apr_int64_t completion;
    apr_int64_t cost;
    apr_int64_t reclaimed;
    apr_int64_t late;
} subj_t;

typedef struct {
    apr_int64_t state;          /* gen << 1 | 1 while in use */
    apr_int64_t seq;
    apr_int64_t owner;
    apr_int64_t t0;
    apr_int64_t expiry;
    apr_int64_t tokens;
    apr_int64_t nsub;
    apr_int64_t sub[NS];        /* index << 32 | gen */
    apr_int64_t cost[NS];
    apr_int64_t next_free;
} rec_t;

typedef struct {
    apr_uint64_t off;
    apr_int64_t old;
} jent_t;

typedef struct {
    apr_int64_t valid, id, start, end;
} pcache_t;

struct llmgw_limits {
    apr_uint64_t magic;
    apr_uint64_t version;
    apr_uint64_t size;
    apr_uint64_t max_subjects;
    apr_uint64_t nidx;          /* a power of 2 */
    apr_uint64_t max_records;
    apr_uint64_t off_subj;
    apr_uint64_t off_idx;
    apr_uint64_t off_rec;
    apr_int64_t flags;
    apr_int64_t sweep_interval;
    apr_int64_t default_ttl;
    apr_int64_t last_sweep;     /* claimed by CAS, without the lock */
    union {
        pthread_mutex_t m;
        apr_uint64_t pad[8];
    } mu;
    apr_int64_t jn;             /* journal entries in use */
    apr_int64_t jmax_seen;
    apr_int64_t joverflow;
    apr_int64_t rebuilding;     /* the index is being rebuilt */
    apr_int64_t recoveries;
    apr_int64_t reclaimed;
    apr_int64_t changes;        /* locked sections that wrote */
    apr_int64_t free_subj;      /* index + 1; 0: none */
    apr_int64_t free_rec;
    apr_int64_t nsubj;
    apr_int64_t ntomb;
    apr_int64_t nrec;
    apr_int64_t rec_seq;
    apr_int64_t has_dynamic;
    apr_int64_t dyn[NCONF];
    pcache_t pc[4];             /* the current period of each kind */
    jent_t j[JMAX];
};

typedef llmgw_limits_t tab_t;

#define SUBJ(t, i) ((subj_t *)((char *)(t) + (t)->off_subj) + (i))
#define IDX(t) ((apr_uint64_t *)((char *)(t) + (t)->off_idx))
#define REC(t, i) ((rec_t *)((char *)(t) + (t)->off_rec) + (i))
#define ALIGN8(n) (((n) + 7) & ~(apr_size_t)7)
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---------------------------------------------------------------------
 * Transactions
 */

static int crash_countdown;
static void (*crash_fn)(void);

void llmgw_limits_crash_after(int n, void (*fn)(void))
{
    crash_countdown = n;
    crash_fn = fn;
}

static apr_int64_t ld(const void *p)
{
    return __atomic_load_n((const apr_int64_t *)p, __ATOMIC_RELAXED);
}

/* Writes v at p inside the open transaction, its old value journaled
 * first: the journal entry, then the count that makes it valid, then the
 * word, in that order for a reader that comes after our death. */
static void jset(tab_t *t, void *p, apr_int64_t v)
{
    apr_int64_t *w = p, n = t->jn;

    if (n < JMAX) {
        t->j[n].off = (apr_uint64_t)((char *)w - (char *)t);
        t->j[n].old = *w;
        __atomic_store_n(&t->jn, n + 1, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    else {
        t->joverflow++;
    }
    /* Dying here at the n-th write leaves n - 1 words written and the
     * n-th journaled: each state a death can leave, one n at a time. */
    if (crash_countdown > 0 && --crash_countdown == 0 && crash_fn) {
        crash_fn();
    }
    __atomic_store_n(w, v, __ATOMIC_RELEASE);
}

static void jadd(tab_t *t, apr_int64_t *p, apr_int64_t d)
{
    if (d) {
        jset(t, p, *p + d);
    }
}

static void commit(tab_t *t)
{
    if (t->jn > t->jmax_seen) {
        t->jmax_seen = t->jn;
    }
    __atomic_store_n(&t->jn, 0, __ATOMIC_RELEASE);
}

/* Puts back every word of the open transaction, newest first. */
static void undo(tab_t *t)
{
    apr_int64_t n = t->jn;

    while (n-- > 0) {
        if (t->j[n].off + 8 <= t->size) {
            __atomic_store_n((apr_int64_t *)((char *)t + t->j[n].off),
                             t->j[n].old, __ATOMIC_RELEASE);
        }
    }
    commit(t);
}

static void rebuild_index(tab_t *t);

static apr_status_t lock(tab_t *t)
{
    int rv = pthread_mutex_lock(&t->mu.m);

    if (rv == EOWNERDEAD) {
        /* Its owner died inside a transaction: as if it never began. */
        undo(t);
        if (t->rebuilding) {
            rebuild_index(t);
        }
        t->recoveries++;
        if ((rv = pthread_mutex_consistent(&t->mu.m)) != 0) {
            pthread_mutex_unlock(&t->mu.m);
        }
    }
    return rv ? APR_FROM_OS_ERROR(rv) : APR_SUCCESS;
}

static void unlock(tab_t *t)
{
    if (t->jn) {
        t->changes++;
    }
    commit(t);
    pthread_mutex_unlock(&t->mu.m);
}

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
    case LLMGW_PER_HOUR:
        return floor_div(sec, 3600);
    case LLMGW_PER_DAY:
        return floor_div(sec, 86400);
    default:
        civil_from_days(floor_div(sec, 86400), &y, &m);
        return y * 12 + (m - 1);
    }
}

static apr_time_t period_begin(int per, apr_int64_t id)
{
    switch (per) {
    case LLMGW_PER_HOUR:
        return id * 3600 * APR_USEC_PER_SEC;
    case LLMGW_PER_DAY:
        return id * 86400 * APR_USEC_PER_SEC;
    default:
        return days_from_civil(floor_div(id, 12), (int)(id - floor_div(id, 12)
                                                         * 12) + 1, 1)
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
 * Limits
 */

#define B_UNIT(c) ((int)((c) >> 8))
#define B_PER(c) ((int)((c) & 0xff))

const char *llmgw_limits_conf_check(const llmgw_limits_conf_t *c)
{
    int i, k;

    if (c->rpm < 0 || c->rpm > LLMGW_LIMITS_RATE_MAX
        || c->tpm < 0 || c->tpm > LLMGW_LIMITS_RATE_MAX
        || c->concurrent < 0 || c->concurrent > LLMGW_LIMITS_RATE_MAX) {
        return "a rate limit is out of range (1 to 1000000000)";
    }
    for (i = 0; i < NB; i++) {
        const llmgw_budget_conf_t *b = &c->budget[i];

        if (!b->unit) {
            continue;
        }
        if (b->unit != LLMGW_BUDGET_TOKENS && b->unit != LLMGW_BUDGET_COST) {
            return "a budget has no unit (tokens or cost)";
        }
        if (b->per < LLMGW_PER_HOUR || b->per > LLMGW_PER_MONTH) {
            return "a budget has no period (hour, day or month)";
        }
        if (b->limit < 1 || b->limit > LLMGW_LIMITS_AMOUNT_MAX) {
            return "a budget is out of range";
        }
        for (k = 0; k < i; k++) {
            if (c->budget[k].unit == b->unit && c->budget[k].per == b->per) {
                return "two budgets of one unit and period";
            }
        }
    }
    return NULL;
}

static void conf_to_words(const llmgw_limits_conf_t *c, apr_int64_t *w)
{
    int i;

    w[0] = c->rpm;
    w[1] = c->tpm;
    w[2] = c->concurrent;
    for (i = 0; i < NB; i++) {
        const llmgw_budget_conf_t *b = &c->budget[i];

        w[3 + 2 * i] = b->unit ? (apr_int64_t)b->unit << 8 | b->per : 0;
        w[4 + 2 * i] = b->unit ? b->limit : 0;
    }
}

static void subj_conf(const subj_t *s, llmgw_limits_conf_t *c)
{
    int i;

    memset(c, 0, sizeof(*c));
    c->rpm = s->rq.limit;
    c->tpm = s->tk.limit;
    c->concurrent = s->concurrent;
    for (i = 0; i < NB; i++) {
        if (s->b[i].conf) {
            c->budget[i].unit = B_UNIT(s->b[i].conf);
            c->budget[i].per = B_PER(s->b[i].conf);
            c->budget[i].limit = s->b[i].limit;
        }
    }
}

/* Gives s the limits w, keeping what stays the same: a bucket's debt
 * (it is in tokens, whatever the rate), a budget's counts when one of
 * the same unit and period was there. What is new counts only the
 * records from now on (since). */
static void apply_conf(tab_t *t, subj_t *s, const apr_int64_t *w)
{
    budget_t old[NB];
    int i, k;

    if (!s->rq.limit != !w[0]) {
        jset(t, &s->rq.since, t->rec_seq);
        jset(t, &s->rq.debt, 0);
    }
    if (!s->tk.limit != !w[1]) {
        jset(t, &s->tk.since, t->rec_seq);
        jset(t, &s->tk.debt, 0);
    }
    jset(t, &s->rq.limit, w[0]);
    jset(t, &s->tk.limit, w[1]);
    jset(t, &s->concurrent, w[2]);
    memcpy(old, s->b, sizeof(old));
    for (i = 0; i < NB; i++) {
        apr_int64_t conf = w[3 + 2 * i];
        const budget_t *from = NULL;
        budget_t nb;

        for (k = 0; conf && k < NB; k++) {
            if (old[k].conf == conf) {
                from = &old[k];
            }
        }
        if (from) {
            nb = *from;
        }
        else {
            memset(&nb, 0, sizeof(nb));
            nb.since = t->rec_seq;
        }
        nb.conf = conf;
        nb.limit = w[4 + 2 * i];
        for (k = 0; k < (int)(sizeof(nb) / 8); k++) {
            apr_int64_t *dst = (apr_int64_t *)&s->b[i] + k;
            apr_int64_t v = ((apr_int64_t *)&nb)[k];

            if (*dst != v) {
                jset(t, dst, v);
            }
        }
    }
}

/* ---------------------------------------------------------------------
 * Names and the index
 */

static apr_uint64_t hash_of(const char *s, apr_size_t n)
{
    apr_uint64_t h = APR_UINT64_C(14695981039346656037);

    while (n--) {
        h = (h ^ (unsigned char)*s++) * APR_UINT64_C(1099511628211);
    }
    return h;
}

static apr_uint64_t idx_entry(apr_uint64_t h, apr_uint64_t i)
{
    return (h >> 32) << 32 | (i + 2);
}

#define M_LIVE (1 << S_LIVE)
#define M_ANY (1 << S_LIVE | 1 << S_RETIRED)

/* The subject of that name in one of the states in 'want', found with or
 * without the lock. */
static int lookup(tab_t *t, const char *name, apr_size_t len,
                  apr_uint64_t h, int want, apr_uint32_t *index,
                  apr_uint32_t *gen)
{
    apr_uint64_t mask = t->nidx - 1, pos = h & mask, n;
    apr_uint64_t *idx = IDX(t);

    for (n = 0; n < t->nidx; n++, pos = (pos + 1) & mask) {
        apr_uint64_t e = __atomic_load_n(&idx[pos], __ATOMIC_ACQUIRE);
        apr_uint64_t i = (e & 0xffffffffu) - 2, st;
        subj_t *s;

        if (!e) {
            return 0;
        }
        if (e == IDX_TOMB || e >> 32 != h >> 32 || i >= t->max_subjects) {
            continue;
        }
        s = SUBJ(t, i);
        st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
        if (!(want & 1 << (st & 0xff))
            || __atomic_load_n(&s->namelen, __ATOMIC_RELAXED) != len
            || memcmp(s->name, name, len) != 0) {
            continue;
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&s->state, __ATOMIC_RELAXED) == st) {
            *index = (apr_uint32_t)i;
            *gen = (apr_uint32_t)(st >> 8);
            return 1;
        }
    }
    return 0;
}

/* Where subject i's index entry is; -1 if it has none. */
static apr_int64_t idx_pos_of(tab_t *t, apr_uint64_t i)
{
    apr_uint64_t mask = t->nidx - 1, pos = SUBJ(t, i)->hash & mask, n;
    apr_uint64_t want = idx_entry(SUBJ(t, i)->hash, i);

    for (n = 0; n < t->nidx; n++, pos = (pos + 1) & mask) {
        apr_uint64_t e = IDX(t)[pos];

        if (e == want) {
            return (apr_int64_t)pos;
        }
        if (!e) {
            break;
        }
    }
    return -1;
}

/* Rebuilt from the subjects (the truth) when tombstones pile up, and by
 * the recovery when a rebuild died half-way; lookups meanwhile miss and
 * ask again under the lock. */
static void rebuild_index(tab_t *t)
{
    apr_uint64_t i, mask = t->nidx - 1;
    apr_uint64_t *idx = IDX(t);

    __atomic_store_n(&t->rebuilding, 1, __ATOMIC_SEQ_CST);
    for (i = 0; i < t->nidx; i++) {
        __atomic_store_n(&idx[i], 0, __ATOMIC_RELAXED);
    }
    for (i = 0; i < t->max_subjects; i++) {
        subj_t *s = SUBJ(t, i);
        apr_uint64_t pos = s->hash & mask;

        if ((s->state & 0xff) == S_FREE) {
            continue;
        }
        while (idx[pos]) {
            pos = (pos + 1) & mask;
        }
        __atomic_store_n(&idx[pos], idx_entry(s->hash, i), __ATOMIC_RELEASE);
    }
    t->ntomb = 0;
    __atomic_store_n(&t->rebuilding, 0, __ATOMIC_SEQ_CST);
}

/* Adds a subject (the name known to be absent); NULL when full. */
static subj_t *insert(tab_t *t, const char *name, apr_size_t len,
                      apr_uint64_t h, const apr_int64_t *conf, int flags)
{
    apr_uint64_t mask = t->nidx - 1, pos = h & mask, i, n;
    apr_uint64_t *idx = IDX(t);
    apr_int64_t next;
    unsigned char d[LLMGW_SHA256_LEN];
    llmgw_sha256_t c;
    subj_t *s;

    if (!t->free_subj) {
        return NULL;
    }
    for (n = 0; n < t->nidx; n++, pos = (pos + 1) & mask) {
        if (idx[pos] == 0 || idx[pos] == IDX_TOMB) {
            break;
        }
    }
    if (n == t->nidx) {
        return NULL;
    }
    i = (apr_uint64_t)t->free_subj - 1;
    s = SUBJ(t, i);
    next = s->next_free;
    /* Free and unreachable: its words need no journal, only the links
     * that make it reachable do, and those come last. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memset((char *)s + offsetof(subj_t, namelen), 0,
           sizeof(*s) - offsetof(subj_t, namelen));
    memcpy(s->name, name, len);
    s->namelen = len;
    s->hash = h;
    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, name, len);
    llmgw_sha256_final(&c, d);
    memcpy(&s->digest, d, 8);
    s->flags = flags;
    s->rq.since = s->tk.since = t->rec_seq;
    for (n = 0; n < NB; n++) {
        s->b[n].since = t->rec_seq;
    }
    apply_conf(t, s, conf);
    s->next_free = next;
    jset(t, &t->free_subj, next);
    if (idx[pos] == IDX_TOMB) {
        jset(t, &t->ntomb, t->ntomb - 1);
    }
    jset(t, &idx[pos], (apr_int64_t)idx_entry(h, i));
    jset(t, &t->nsubj, t->nsubj + 1);
    jset(t, &s->state, (apr_int64_t)((s->state >> 8) << 8 | S_LIVE));
    return s;
}

/* Frees subject i (nothing in flight): a tombstone in the index, a new
 * generation so that old handles answer GONE. */
static void drop(tab_t *t, apr_uint64_t i)
{
    subj_t *s = SUBJ(t, i);
    apr_int64_t pos = idx_pos_of(t, i);

    if (pos >= 0) {
        jset(t, &IDX(t)[pos], IDX_TOMB);
        jset(t, &t->ntomb, t->ntomb + 1);
    }
    jset(t, &s->state, (apr_int64_t)(((s->state >> 8) + 1) << 8 | S_FREE));
    jset(t, &s->next_free, t->free_subj);
    jset(t, &t->free_subj, (apr_int64_t)i + 1);
    jset(t, &t->nsubj, t->nsubj - 1);
}

/* The subject a handle names, live or retired; NULL: GONE. */
static subj_t *handle(tab_t *t, apr_uint32_t index, apr_uint32_t gen)
{
    subj_t *s;

    if (index >= t->max_subjects) {
        return NULL;
    }
    s = SUBJ(t, index);
    if ((apr_uint32_t)(s->state >> 8) != gen
        || (s->state & 0xff) == S_FREE) {
        return NULL;
    }
    return s;
}

/* ---------------------------------------------------------------------
 * Layout
 */

static apr_uint64_t nidx_for(apr_uint64_t max_subjects)
{
    apr_uint64_t n = 16;

    while (n < 4 * max_subjects) {
        n <<= 1;
    }
    return n;
}

apr_size_t llmgw_limits_size(apr_uint32_t max_subjects,
                             apr_uint32_t max_records)
{
    if (max_subjects < 1 || max_subjects > (1u << 24)
        || max_records < 1 || max_records > (1u << 24)) {
        return 0;
    }
    return ALIGN8(sizeof(tab_t)) + max_subjects * sizeof(subj_t)
           + nidx_for(max_subjects) * 8 + max_records * sizeof(rec_t);
}

llmgw_limits_t *llmgw_limits_init(void *mem, apr_size_t size,
                                  apr_uint32_t max_subjects,
                                  apr_uint32_t max_records, int flags)
{
    apr_size_t need = llmgw_limits_size(max_subjects, max_records);
    pthread_mutexattr_t a;
    tab_t *t = mem;
    apr_uint64_t i;
    int rv;

    if (!need || size < need || ((apr_uintptr_t)mem & 7)) {
        return NULL;
    }
    memset(mem, 0, need);
    t->version = VERSION;
    t->size = size;
    t->max_subjects = max_subjects;
    t->nidx = nidx_for(max_subjects);
    t->max_records = max_records;
    t->off_subj = ALIGN8(sizeof(tab_t));
    t->off_idx = t->off_subj + max_subjects * sizeof(subj_t);
    t->off_rec = t->off_idx + t->nidx * 8;
    t->flags = flags;
    t->sweep_interval = 5 * APR_USEC_PER_SEC;
    t->default_ttl = 3600 * APR_USEC_PER_SEC;
    for (i = 0; i < max_subjects; i++) {
        SUBJ(t, i)->next_free = i + 1 < max_subjects ? (apr_int64_t)i + 2 : 0;
    }
    t->free_subj = 1;
    for (i = 0; i < max_records; i++) {
        REC(t, i)->next_free = i + 1 < max_records ? (apr_int64_t)i + 2 : 0;
    }
    t->free_rec = 1;
    t->rec_seq = 1;
    if (pthread_mutexattr_init(&a)) {
        return NULL;
    }
    rv = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)
         || pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)
         || pthread_mutex_init(&t->mu.m, &a);
    pthread_mutexattr_destroy(&a);
    if (rv) {
        return NULL;
    }
    __atomic_store_n(&t->magic, MAGIC, __ATOMIC_RELEASE);
    return t;
}

llmgw_limits_t *llmgw_limits_attach(void *mem, apr_size_t size)
{
    tab_t *t = mem;

    if (!mem || ((apr_uintptr_t)mem & 7) || size < sizeof(tab_t)
        || __atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != MAGIC
        || t->version != VERSION || t->size != size
        || llmgw_limits_size((apr_uint32_t)t->max_subjects,
                             (apr_uint32_t)t->max_records) > size) {
        return NULL;
    }
    return t;
}

void llmgw_limits_tune(llmgw_limits_t *t, apr_time_t sweep_interval,
                       apr_time_t default_ttl)
{
    if (sweep_interval > 0) {
        __atomic_store_n(&t->sweep_interval, sweep_interval,
                         __ATOMIC_RELAXED);
    }
    if (default_ttl > 0) {
        __atomic_store_n(&t->default_ttl, default_ttl, __ATOMIC_RELAXED);
    }
}

/* ---------------------------------------------------------------------
 * Configuration and lookups
 */

static int defs_valid(const llmgw_limits_def_t *defs, int n)
{
    int i, k;

    for (i = 0; i < n; i++) {
        apr_size_t len = defs[i].name ? strlen(defs[i].name) : 0;

        if (!len || len > LLMGW_LIMITS_NAME_MAX
            || llmgw_limits_conf_check(&defs[i].conf)) {
            return 0;
        }
        for (k = 0; k < i; k++) {
            if (strcmp(defs[k].name, defs[i].name) == 0) {
                return 0;
            }
        }
    }
    return 1;
}

static int def_of(const llmgw_limits_def_t *defs, int n, const subj_t *s)
{
    int i;

    for (i = 0; i < n; i++) {
        if (strlen(defs[i].name) == s->namelen
            && memcmp(defs[i].name, s->name, s->namelen) == 0) {
            return i;
        }
    }
    return -1;
}

/* Any subject of that name, live or retired (under the lock). */
static apr_int64_t find_any(tab_t *t, const char *name, apr_size_t len)
{
    apr_uint32_t i, gen;

    return lookup(t, name, len, hash_of(name, len), M_ANY, &i, &gen)
           ? (apr_int64_t)i : -1;
}

apr_status_t llmgw_limits_configure(llmgw_limits_t *t,
                                    const llmgw_limits_def_t *defs, int n,
                                    const llmgw_limits_conf_t *dynamic,
                                    apr_time_t now)
{
    apr_int64_t w[NCONF], dw[NCONF];
    apr_uint64_t i;
    apr_status_t rv;
    int k, missing = 0;

    if (n < 0 || !defs_valid(defs, n)
        || (dynamic && llmgw_limits_conf_check(dynamic))) {
        return APR_EINVAL;
    }
    if ((rv = lock(t)) != APR_SUCCESS) {
        return rv;
    }
    for (k = 0; k < n; k++) {
        missing += find_any(t, defs[k].name, strlen(defs[k].name)) < 0;
    }
    if (missing > (apr_int64_t)t->max_subjects - t->nsubj) {
        unlock(t);
        return APR_ENOSPC;
    }
    memset(dw, 0, sizeof(dw));
    if (dynamic) {
        conf_to_words(dynamic, dw);
    }
    for (k = 0; k < NCONF; k++) {
        jset(t, &t->dyn[k], dw[k]);
    }
    jset(t, &t->has_dynamic, dynamic != NULL);
    commit(t);
    /* One transaction a subject: the journal bounds each. */
    for (i = 0; i < t->max_subjects; i++) {
        subj_t *s = SUBJ(t, i);
        int st = (int)(s->state & 0xff), d;

        if (st == S_FREE) {
            continue;
        }
        d = (s->flags & SF_DYNAMIC) ? (dynamic ? n : -1)
                                    : def_of(defs, n, s);
        if (d >= 0) {
            if (d < n) {
                conf_to_words(&defs[d].conf, w);
            }
            apply_conf(t, s, d < n ? w : dw);
            if (st == S_RETIRED) {
                jset(t, &s->state, (apr_int64_t)((s->state >> 8) << 8
                                                 | S_LIVE));
            }
        }
        else if (st == S_LIVE) {
            jset(t, &s->state, (apr_int64_t)((s->state >> 8) << 8
                                             | S_RETIRED));
        }
        commit(t);
    }
    for (k = 0; k < n; k++) {
        apr_size_t len = strlen(defs[k].name);

        if (find_any(t, defs[k].name, len) < 0) {
            conf_to_words(&defs[k].conf, w);
            insert(t, defs[k].name, len, hash_of(defs[k].name, len), w, 0);
            commit(t);
        }
    }
    unlock(t);
    (void)now;
    return APR_SUCCESS;
}

static apr_status_t find(tab_t *t, const char *name, int add,
                         llmgw_limits_subject_t *out)
{
    apr_size_t len = name ? strlen(name) : 0;
    apr_uint64_t h = hash_of(name, len);
    apr_status_t rv;
    subj_t *s;

    if (!len || len > LLMGW_LIMITS_NAME_MAX) {
        return APR_NOTFOUND;
    }
    if (lookup(t, name, len, h, M_LIVE, &out->index, &out->gen)) {
        return APR_SUCCESS;
    }
    if ((rv = lock(t)) != APR_SUCCESS) {
        return rv;
    }
    rv = APR_NOTFOUND;
    if (lookup(t, name, len, h, M_LIVE, &out->index, &out->gen)) {
        rv = APR_SUCCESS;
    }
    else if (add && t->has_dynamic && find_any(t, name, len) < 0) {
        s = insert(t, name, len, h, t->dyn, SF_DYNAMIC);
        if (s) {
            out->index = (apr_uint32_t)(s - SUBJ(t, 0));
            out->gen = (apr_uint32_t)(s->state >> 8);
            rv = APR_SUCCESS;
        }
        else {
            rv = APR_ENOSPC;
        }
    }
    unlock(t);
    return rv;
}

apr_status_t llmgw_limits_find(llmgw_limits_t *t, const char *name,
                               llmgw_limits_subject_t *s)
{
    return find(t, name, 0, s);
}

apr_status_t llmgw_limits_find_or_add(llmgw_limits_t *t, const char *name,
                                      apr_time_t now,
                                      llmgw_limits_subject_t *s)
{
    (void)now;
    return find(t, name, 1, s);
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

/* Sets the debt to d at now, bounded by what DEBT_CAP minutes pay. */
static void set_debt(tab_t *t, bucket_t *b, apr_int64_t d, apr_time_t now)
{
    d = MAX(0, MIN(d, DEBT_CAP * cap_of(b)));
    if (d != b->debt) {
        jset(t, &b->debt, d);
    }
    if (now > b->last) {
        jset(t, &b->last, now);
    }
}

/* tokens more (or fewer, < 0) owed; a count too big for ticks is the
 * cap. */
static void add_debt(tab_t *t, bucket_t *b, apr_int64_t tokens,
                     apr_time_t now)
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
    set_debt(t, b, d, now);
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
static apr_time_t bucket_wait(const bucket_t *b, apr_int64_t n,
                              apr_time_t now)
{
    apr_int64_t over = debt_at(b, now) - (cap_of(b) - n * TICKS);

    return over > 0 ? (over + b->limit - 1) / b->limit : 0;
}

/* The counts of b are of the period holding now from here on; the
 * period before is kept for late settlements and the console. A clock
 * that steps back never resets a period. */
static void roll(tab_t *t, budget_t *b, apr_time_t now)
{
    apr_int64_t cur = cur_period(t, B_PER(b->conf), now, NULL);

    if (b->period >= cur) {
        return;
    }
    jset(t, &b->prev_period, b->period);
    jset(t, &b->prev_used, b->used);
    jset(t, &b->period, cur);
    jset(t, &b->used, 0);
    jset(t, &b->reserved, 0);
    jset(t, &b->remote, 0);
    jset(t, &b->synced, 0);
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

/* When the period of b's counts ends. */
static apr_time_t budget_reset(tab_t *t, const budget_t *b, apr_time_t now)
{
    int per = B_PER(b->conf);
    apr_time_t end;

    if (b->period > cur_period(t, per, now, &end)) {
        return period_begin(per, b->period + 1);
    }
    return end;
}

static apr_int64_t sat_add(apr_int64_t a, apr_int64_t b)
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
    return sat_add(cost_of(prompt, pr->in), cost_of(out, pr->out));
}

/* ---------------------------------------------------------------------
 * Taking and giving back
 */

typedef struct {
    llmgw_limit_kind_t kind;
    int place;                  /* in the request's subjects */
    int budget;
    int spent;
    int too_large;
    apr_int64_t limit;
    apr_int64_t used;
    apr_int64_t requested;
} refusal_t;

#define T_REQUEST 1             /* in flight, rpm */
#define T_AMOUNTS 2             /* tpm, budgets */

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

static llmgw_limit_kind_t take_budgets(tab_t *t, subj_t *s,
                                       apr_int64_t tokens, apr_int64_t cost,
                                       apr_time_t now, refusal_t *r)
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
        roll(t, b, now);
        settled = sat_add(b->used, b->remote);
        held = sat_add(settled, b->reserved);
        /* A spent budget refuses even what costs nothing (a model with
         * no price under a cost budget). */
        if (a > b->limit - held || held >= b->limit) {
            r->budget = i;
            r->spent = a > b->limit - settled || settled >= b->limit;
            r->too_large = a > b->limit;
            return refuse(r, unit == LLMGW_BUDGET_TOKENS
                                 ? LLMGW_LIMIT_BUDGET_TOKENS
                                 : LLMGW_LIMIT_BUDGET_COST,
                          b->limit, held, a);
        }
        jset(t, &b->reserved, b->reserved + a);
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
        jset(t, &s->inflight, s->inflight + 1);
        if (s->rq.limit) {
            apr_int64_t d = debt_at(&s->rq, now);

            if (d + TICKS > cap_of(&s->rq)) {
                return refuse(r, LLMGW_LIMIT_RPM, s->rq.limit,
                              s->rq.limit - bucket_left(&s->rq, now), 1);
            }
            set_debt(t, &s->rq, d + TICKS, now);
        }
        jset(t, &s->rq.local, s->rq.local + 1);
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
        set_debt(t, &s->tk, d + tokens * TICKS, now);
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
    int inflight;               /* end the request in flight */
    int late;
} give_t;

static void give_budget(tab_t *t, budget_t *b, const give_t *g,
                        apr_time_t now)
{
    int tokens = B_UNIT(b->conf) == LLMGW_BUDGET_TOKENS;
    apr_int64_t est = tokens ? g->est_tokens : g->est_cost;
    apr_int64_t act = tokens ? g->act_tokens : g->act_cost;
    apr_int64_t p0 = cur_period(t, B_PER(b->conf), g->t0, NULL);

    roll(t, b, now);
    if (b->period == p0) {
        if (!g->late && g->seq >= b->since) {
            jset(t, &b->reserved, MAX(0, b->reserved - est));
        }
        jadd(t, &b->used, act);
    }
    else if (b->prev_period == p0) {
        jadd(t, &b->prev_used, act);
    }
}

static void give(tab_t *t, subj_t *s, const give_t *g, apr_time_t now)
{
    int i;

    if (g->inflight) {
        jset(t, &s->inflight, MAX(0, s->inflight - 1));
    }
    if (s->tk.limit && g->seq >= s->tk.since) {
        add_debt(t, &s->tk, g->late ? g->act_tokens
                                    : g->act_tokens - g->est_tokens, now);
    }
    jadd(t, &s->tk.local, g->act_tokens);
    for (i = 0; i < NB; i++) {
        if (s->b[i].conf) {
            give_budget(t, &s->b[i], g, now);
        }
    }
}

/* ---------------------------------------------------------------------
 * The verdict
 */

static void tightest(apr_int64_t *limit, apr_int64_t *left,
                     apr_time_t *reset, apr_int64_t l, apr_int64_t r,
                     apr_time_t when)
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
                     &v->reset_requests, s->rq.limit,
                     bucket_left(&s->rq, now), bucket_reset(&s->rq, now));
        }
        if (s->tk.limit) {
            tightest(&v->limit_tokens, &v->remaining_tokens,
                     &v->reset_tokens, s->tk.limit,
                     bucket_left(&s->tk, now), bucket_reset(&s->tk, now));
        }
        for (k = 0; k < NB; k++) {
            const budget_t *b = &s->b[k];
            apr_int64_t u, res, rem, prev;

            if (B_UNIT(b->conf) != LLMGW_BUDGET_TOKENS) {
                continue;
            }
            budget_view(t, b, now, &u, &res, &rem, &prev);
            tightest(&v->limit_tokens, &v->remaining_tokens,
                     &v->reset_tokens, b->limit,
                     MAX(0, b->limit - u - res - rem),
                     budget_reset(t, b, now) - now);
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
        wait = r->too_large ? 60 * APR_USEC_PER_SEC
                            : bucket_wait(&subs[r->place]->tk, r->requested,
                                          now);
        break;
    case LLMGW_LIMIT_BUDGET_TOKENS:
    case LLMGW_LIMIT_BUDGET_COST:
        v->per = B_PER(subs[r->place]->b[r->budget].conf);
        wait = r->spent ? budget_reset(t, &subs[r->place]->b[r->budget], now)
                          - now
                        : APR_USEC_PER_SEC;
        break;
    default:
        wait = APR_USEC_PER_SEC;
        break;
    }
    v->retry_after = MAX(1, (wait + APR_USEC_PER_SEC - 1) / APR_USEC_PER_SEC);
}

/* ---------------------------------------------------------------------
 * Reserve, settle, retarget
 */

static int req_valid(const llmgw_limits_req_t *rq)
{
    int i, k;

    if (rq->nsubjects < 1 || rq->nsubjects > NS
        || rq->prompt < 0 || rq->prompt > LLMGW_LIMITS_TOKENS_MAX
        || rq->max_out < 0 || rq->max_out > LLMGW_LIMITS_TOKENS_MAX
        || rq->price.in < 0 || rq->price.in > LLMGW_LIMITS_PRICE_MAX
        || rq->price.out < 0 || rq->price.out > LLMGW_LIMITS_PRICE_MAX
        || rq->ttl < 0) {
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
        subs[i] = handle(t, rq->subject[i].index, rq->subject[i].gen);
        if (!subs[i] || (subs[i]->state & 0xff) != S_LIVE) {
            return 0;
        }
    }
    return 1;
}

static void count_refusal(tab_t *t, subj_t *s, llmgw_limit_kind_t kind)
{
    if (kind > LLMGW_LIMIT_OK && kind < LLMGW_LIMIT_NKINDS) {
        jset(t, &s->refused[kind], s->refused[kind] + 1);
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
    if (lock(t) != APR_SUCCESS) {
        return early(v, LLMGW_LIMIT_FULL);
    }
    if (!subjects_of(t, rq, subs)) {
        unlock(t);
        return early(v, LLMGW_LIMIT_GONE);
    }
    if (!t->free_rec) {
        unlock(t);
        return early(v, LLMGW_LIMIT_FULL);
    }
    for (i = 0; i < rq->nsubjects && r.kind == LLMGW_LIMIT_OK; i++) {
        r.place = i;
        take(t, subs[i], T_REQUEST | T_AMOUNTS, tokens, cost, now, &r);
    }
    if (r.kind != LLMGW_LIMIT_OK) {
        undo(t);
        count_refusal(t, subs[r.place], r.kind);
        describe(t, subs, rq->nsubjects, now, &r, v);
        unlock(t);
        return r.kind;
    }
    /* The record: free until its state says otherwise. */
    ri = (apr_uint64_t)t->free_rec - 1;
    rec = REC(t, ri);
    rec->seq = t->rec_seq;
    rec->owner = rq->owner;
    rec->t0 = now;
    rec->expiry = sat_add(now, rq->ttl ? rq->ttl : t->default_ttl);
    rec->tokens = tokens;
    rec->nsub = rq->nsubjects;
    for (i = 0; i < rq->nsubjects; i++) {
        rec->sub[i] = (apr_int64_t)rq->subject[i].index << 32
                      | rq->subject[i].gen;
        rec->cost[i] = cost;
        jadd(t, &subs[i]->requests, 1);
    }
    jset(t, &t->free_rec, rec->next_free);
    jset(t, &t->nrec, t->nrec + 1);
    jset(t, &t->rec_seq, t->rec_seq + 1);
    jset(t, &rec->state, ((rec->state >> 1) + 1) << 1 | 1);
    describe(t, subs, rq->nsubjects, now, NULL, v);
    tk->rec = ri + 1;
    tk->rec_gen = (apr_uint64_t)rec->state;
    tk->t0 = now;
    tk->tokens = tokens;
    tk->seq = rec->seq;
    tk->price = rq->price;
    tk->nsubjects = rq->nsubjects;
    for (i = 0; i < rq->nsubjects; i++) {
        tk->subject[i] = rq->subject[i];
        tk->cost[i] = cost;
    }
    unlock(t);
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
    jset(t, &rec->state, rec->state & ~APR_INT64_C(1));
    jset(t, &rec->next_free, t->free_rec);
    jset(t, &t->free_rec, (rec - REC(t, 0)) + 1);
    jset(t, &t->nrec, t->nrec - 1);
}

apr_status_t llmgw_limits_settle(llmgw_limits_t *t,
                                 llmgw_limits_ticket_t *tk,
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
    if ((rv = lock(t)) != APR_SUCCESS) {
        return rv;
    }
    rec = ticket_rec(t, tk);
    charged = !rec && (t->flags & LLMGW_LIMITS_LEAK_CHARGE);
    memset(&g, 0, sizeof(g));
    g.t0 = tk->t0;
    g.seq = tk->seq;
    g.est_tokens = tk->tokens;
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
        subj_t *s = handle(t, tk->subject[i].index, tk->subject[i].gen);

        if (!s) {
            continue;
        }
        g.est_cost = tk->cost[i];
        g.act_cost = charged ? MAX(0, c - tk->cost[i]) : c;
        give(t, s, &g, now);
        jadd(t, &s->prompt, prompt);
        jadd(t, &s->completion, completion);
        jadd(t, &s->cost, c);
        if (!rec) {
            jadd(t, &s->late, 1);
        }
    }
    if (rec) {
        free_rec(t, rec);
    }
    unlock(t);
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

    memset(&g, 0, sizeof(g));
    g.t0 = tk->t0;
    g.seq = tk->seq;
    g.est_tokens = tk->tokens;
    for (i = 0; i < tk->nsubjects; i++) {
        subj_t *s = handle(t, tk->subject[i].index, tk->subject[i].gen);

        if (s) {
            g.est_cost = tk->cost[i];
            g.inflight = place_in(rq->subject, rq->nsubjects,
                                  &tk->subject[i]) < 0;
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
    if (lock(t) != APR_SUCCESS) {
        return early(v, LLMGW_LIMIT_FULL);
    }
    rec = ticket_rec(t, tk);
    if (!rec || !subjects_of(t, rq, subs)) {
        unlock(t);
        return early(v, LLMGW_LIMIT_GONE);
    }
    retarget_release(t, tk, rq, now);
    for (i = 0; i < rq->nsubjects && r.kind == LLMGW_LIMIT_OK; i++) {
        int kept = place_in(tk->subject, tk->nsubjects, &rq->subject[i]) >= 0;

        r.place = i;
        take(t, subs[i], kept ? T_AMOUNTS : T_REQUEST | T_AMOUNTS, tokens,
             cost, now, &r);
        if (!kept && r.kind == LLMGW_LIMIT_OK) {
            jadd(t, &subs[i]->requests, 1);
        }
    }
    if (r.kind != LLMGW_LIMIT_OK) {
        undo(t);
        count_refusal(t, subs[r.place], r.kind);
        describe(t, subs, rq->nsubjects, now, &r, v);
        unlock(t);
        return r.kind;
    }
    /* The record now describes a reservation made now. */
    jset(t, &rec->seq, t->rec_seq);
    jset(t, &t->rec_seq, t->rec_seq + 1);
    jset(t, &rec->t0, now);
    jset(t, &rec->tokens, tokens);
    jset(t, &rec->nsub, rq->nsubjects);
    for (i = 0; i < rq->nsubjects; i++) {
        jset(t, &rec->sub[i], (apr_int64_t)rq->subject[i].index << 32
                              | rq->subject[i].gen);
        jset(t, &rec->cost[i], cost);
    }
    describe(t, subs, rq->nsubjects, now, NULL, v);
    tk->t0 = now;
    tk->seq = rec->seq;
    tk->tokens = tokens;
    tk->price = rq->price;
    tk->nsubjects = rq->nsubjects;
    for (i = 0; i < rq->nsubjects; i++) {
        tk->subject[i] = rq->subject[i];
        tk->cost[i] = cost;
    }
    unlock(t);
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

    memset(&g, 0, sizeof(g));
    g.t0 = rec->t0;
    g.seq = rec->seq;
    g.est_tokens = rec->tokens;
    g.act_tokens = charge ? rec->tokens : 0;
    g.inflight = 1;
    for (i = 0; i < rec->nsub && i < NS; i++) {
        subj_t *s = handle(t, (apr_uint32_t)(rec->sub[i] >> 32),
                           (apr_uint32_t)rec->sub[i]);

        if (s) {
            g.est_cost = rec->cost[i];
            g.act_cost = charge ? rec->cost[i] : 0;
            give(t, s, &g, now);
            jadd(t, &s->reclaimed, 1);
        }
    }
    free_rec(t, rec);
    jadd(t, &t->reclaimed, 1);
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
            drop(t, i);
            commit(t);
        }
    }
    if (t->ntomb * 4 > (apr_int64_t)t->nidx) {
        rebuild_index(t);
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

    if (!force && now - last < ld(&t->sweep_interval) && now >= last) {
        return 0;
    }
    if (!__atomic_compare_exchange_n(&t->last_sweep, &last, now, 0,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)
        && !force) {
        return 0;               /* another process is sweeping */
    }
    /* Room for what is in flight now and some more; what comes on top
     * waits for the next sweep. Nothing is allocated under the lock. */
    room = MIN(ld(&t->nrec) + 64, (apr_int64_t)t->max_records);
    c = apr_palloc(p, sizeof(*c) * (apr_size_t)room);
    dead = apr_palloc(p, sizeof(*dead) * (apr_size_t)room);
    if (lock(t) != APR_SUCCESS) {
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
    unlock(t);
    /* kill(2) outside the lock, once an owner. A pid dead now had no
     * process from before now: its records made before are leaks. */
    for (i = 0; i < n; i++) {
        for (k = 0; k < dead_n && dead[k] != c[i].owner; k++) {
        }
        if (k == dead_n && !process_alive(c[i].owner)) {
            dead[dead_n++] = c[i].owner;
        }
    }
    if (lock(t) != APR_SUCCESS) {
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
            commit(t);
            taken++;
        }
    }
    sweep_subjects(t, now);
    unlock(t);
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

    if (lock(t) != APR_SUCCESS) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        subj_t *s = handle(t, sv[i].index, sv[i].gen);

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
    unlock(t);
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
    subj_conf(s, &u->conf);
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
        u->budget[k].remaining = MAX(0, b->limit - u->budget[k].used
                                        - u->budget[k].reserved
                                        - u->budget[k].remote);
        u->budget[k].reset = budget_reset(t, b, now);
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
                                     apr_time_t now,
                                     llmgw_limits_usage_t *u)
{
    apr_status_t rv = APR_NOTFOUND;
    apr_uint64_t i;

    if (lock(t) != APR_SUCCESS) {
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
    unlock(t);
    return rv;
}

apr_status_t llmgw_limits_usage(llmgw_limits_t *t,
                                const llmgw_limits_subject_t *s,
                                apr_time_t now, llmgw_limits_usage_t *u)
{
    apr_status_t rv = APR_NOTFOUND;

    if (lock(t) != APR_SUCCESS) {
        return APR_NOTFOUND;
    }
    if (handle(t, s->index, s->gen)) {
        fill_usage(t, s->index, now, u);
        rv = APR_SUCCESS;
    }
    unlock(t);
    return rv;
}

void llmgw_limits_stats(llmgw_limits_t *t, llmgw_limits_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (lock(t) != APR_SUCCESS) {
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
    unlock(t);
}

/* ---------------------------------------------------------------------
 * Snapshots: "LLGWLSN1", version, subjects, time, then per subject its
 * name and the words below, then the SHA-256 of all before it. Words are
 * little-endian whatever the machine.
 */

#define SNAP_MAGIC "LLGWLSN1"
#define SNAP_HEAD 32

static const apr_size_t snap_words[] = {
    offsetof(subj_t, rq.debt), offsetof(subj_t, rq.last),
    offsetof(subj_t, rq.local), offsetof(subj_t, rq.synced),
    offsetof(subj_t, rq.seen), offsetof(subj_t, tk.debt),
    offsetof(subj_t, tk.last), offsetof(subj_t, tk.local),
    offsetof(subj_t, tk.synced), offsetof(subj_t, tk.seen),
    offsetof(subj_t, requests), offsetof(subj_t, refused[1]),
    offsetof(subj_t, refused[2]), offsetof(subj_t, refused[3]),
    offsetof(subj_t, refused[4]), offsetof(subj_t, refused[5]),
    offsetof(subj_t, prompt), offsetof(subj_t, completion),
    offsetof(subj_t, cost), offsetof(subj_t, reclaimed),
    offsetof(subj_t, late)
};
#define SNAP_NW (sizeof(snap_words) / sizeof(snap_words[0]))

static const apr_size_t snap_budget[] = {
    offsetof(budget_t, conf), offsetof(budget_t, period),
    offsetof(budget_t, used), offsetof(budget_t, reserved),
    offsetof(budget_t, remote), offsetof(budget_t, synced),
    offsetof(budget_t, prev_period), offsetof(budget_t, prev_used)
};
#define SNAP_NB (sizeof(snap_budget) / sizeof(snap_budget[0]))
#define SNAP_REC_WORDS (SNAP_NW + NB * SNAP_NB)

static void put64(unsigned char *p, apr_uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static apr_uint64_t get64(const unsigned char *p)
{
    apr_uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static apr_size_t snap_rec_size(apr_size_t namelen)
{
    return 8 + ALIGN8(namelen) + 8 * SNAP_REC_WORDS;
}

static apr_int64_t word_at(const void *base, apr_size_t off)
{
    return *(const apr_int64_t *)((const char *)base + off);
}

/* One subject's name and words at out; returns the bytes written. */
static apr_size_t snap_write(unsigned char *out, const subj_t *s)
{
    apr_size_t off = 8 + ALIGN8(s->namelen), k;
    int b;

    memset(out, 0, off);
    out[0] = (unsigned char)s->namelen;
    out[1] = (unsigned char)(s->namelen >> 8);
    out[2] = (unsigned char)s->flags;
    memcpy(out + 8, s->name, s->namelen);
    for (k = 0; k < SNAP_NW; k++, off += 8) {
        put64(out + off, (apr_uint64_t)word_at(s, snap_words[k]));
    }
    for (b = 0; b < NB; b++) {
        for (k = 0; k < SNAP_NB; k++, off += 8) {
            put64(out + off, (apr_uint64_t)word_at(&s->b[b], snap_budget[k]));
        }
    }
    return off;
}

apr_status_t llmgw_limits_snapshot(llmgw_limits_t *t, apr_pool_t *p,
                                   apr_time_t now, const char **buf,
                                   apr_size_t *len)
{
    apr_size_t size = SNAP_HEAD + LLMGW_SHA256_LEN, off = SNAP_HEAD;
    apr_uint64_t i, n = 0;
    unsigned char *out;
    llmgw_sha256_t c;
    apr_status_t rv;
    subj_t copy;

    if ((rv = lock(t)) != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; i < t->max_subjects; i++) {
        if ((SUBJ(t, i)->state & 0xff) != S_FREE) {
            size += snap_rec_size(SUBJ(t, i)->namelen);
        }
    }
    unlock(t);
    out = apr_palloc(p, size);
    /* A subject at a time: a big table never holds admissions up. One
     * added since the count waits for the next snapshot. */
    for (i = 0; i < t->max_subjects; i++) {
        if ((rv = lock(t)) != APR_SUCCESS) {
            return rv;
        }
        memcpy(&copy, SUBJ(t, i), sizeof(copy));
        unlock(t);
        if ((copy.state & 0xff) == S_FREE
            || snap_rec_size(copy.namelen) > size - LLMGW_SHA256_LEN - off) {
            continue;
        }
        off += snap_write(out + off, &copy);
        n++;
    }
    memcpy(out, SNAP_MAGIC, 8);
    put64(out + 8, VERSION | (apr_uint64_t)SNAP_REC_WORDS << 32);
    put64(out + 16, n);
    put64(out + 24, (apr_uint64_t)now);
    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, out, off);
    llmgw_sha256_final(&c, out + off);
    *buf = (const char *)out;
    *len = off + LLMGW_SHA256_LEN;
    return APR_SUCCESS;
}

/* One subject of a snapshot, read and checked. */
typedef struct {
    const char *name;
    apr_size_t namelen;
    int flags;
    apr_int64_t w[SNAP_NW];
    apr_int64_t b[NB][SNAP_NB];
} snap_subj_t;

static const char *snap_read(const unsigned char *in, apr_size_t len,
                             apr_size_t *off, snap_subj_t *ss)
{
    apr_size_t k, o = *off;
    int b;

    if (len - o < 8) {
        return "truncated";
    }
    ss->namelen = in[o] | (apr_size_t)in[o + 1] << 8;
    ss->flags = in[o + 2];
    if (!ss->namelen || ss->namelen > LLMGW_LIMITS_NAME_MAX
        || (ss->flags & ~SF_DYNAMIC)) {
        return "a subject's header is invalid";
    }
    if (len - o < snap_rec_size(ss->namelen)) {
        return "truncated";
    }
    ss->name = (const char *)in + o + 8;
    o += 8 + ALIGN8(ss->namelen);
    for (k = 0; k < SNAP_NW; k++, o += 8) {
        ss->w[k] = (apr_int64_t)get64(in + o);
        if (ss->w[k] < 0) {
            return "a count is negative";
        }
    }
    for (b = 0; b < NB; b++) {
        for (k = 0; k < SNAP_NB; k++, o += 8) {
            ss->b[b][k] = (apr_int64_t)get64(in + o);
            if (ss->b[b][k] < 0) {
                return "a count is negative";
            }
        }
    }
    *off = o;
    return NULL;
}

static const char *snap_check(const unsigned char *in, apr_size_t len,
                              apr_uint64_t *n)
{
    unsigned char d[LLMGW_SHA256_LEN];
    llmgw_sha256_t c;
    apr_size_t off = SNAP_HEAD, body;
    snap_subj_t ss;
    apr_uint64_t i;
    const char *why;

    if (len < SNAP_HEAD + LLMGW_SHA256_LEN || memcmp(in, SNAP_MAGIC, 8) != 0) {
        return "not a limits snapshot";
    }
    if (get64(in + 8) != (VERSION | (apr_uint64_t)SNAP_REC_WORDS << 32)) {
        return "a snapshot of another version";
    }
    body = len - LLMGW_SHA256_LEN;
    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, in, body);
    llmgw_sha256_final(&c, d);
    if (memcmp(d, in + body, LLMGW_SHA256_LEN) != 0) {
        return "checksum mismatch (truncated or corrupt)";
    }
    *n = get64(in + 16);
    for (i = 0; i < *n; i++) {
        if ((why = snap_read(in, body, &off, &ss)) != NULL) {
            return why;
        }
    }
    return off == body ? NULL : "trailing bytes";
}

/* Puts one snapshot subject's counts into s. */
static void snap_apply(tab_t *t, subj_t *s, const snap_subj_t *ss)
{
    int charge = (t->flags & LLMGW_LIMITS_LEAK_CHARGE) != 0;
    apr_size_t k;
    int i, j;

    for (k = 0; k < SNAP_NW; k++) {
        jset(t, (char *)s + snap_words[k], ss->w[k]);
    }
    set_debt(t, &s->rq, s->rq.debt, s->rq.last);
    set_debt(t, &s->tk, s->tk.debt, s->tk.last);
    for (i = 0; i < NB; i++) {
        budget_t *b = &s->b[i];

        for (j = 0; b->conf && j < NB; j++) {
            const apr_int64_t *w = ss->b[j];

            if (w[0] != b->conf) {
                continue;
            }
            jset(t, &b->period, w[1]);
            jset(t, &b->used, charge ? sat_add(w[2], w[3]) : w[2]);
            jset(t, &b->reserved, 0);
            jset(t, &b->remote, w[4]);
            jset(t, &b->synced, MIN(w[5], b->used));
            jset(t, &b->prev_period, w[6]);
            jset(t, &b->prev_used, w[7]);
        }
    }
}

apr_status_t llmgw_limits_restore(llmgw_limits_t *t, const char *buf,
                                  apr_size_t len, apr_time_t now,
                                  int *restored, int *dropped,
                                  const char **why)
{
    const unsigned char *in = (const unsigned char *)buf;
    apr_size_t off = SNAP_HEAD;
    int ok = 0, lost = 0;
    const char *bad;
    apr_uint64_t n, i;
    snap_subj_t ss;
    apr_status_t rv;

    if (!buf || (bad = snap_check(in, len, &n)) != NULL) {
        *why = buf ? bad : "no snapshot";
        return APR_EINVAL;
    }
    if ((rv = lock(t)) != APR_SUCCESS) {
        *why = "the table's lock failed";
        return rv;
    }
    for (i = 0; i < n; i++) {
        apr_int64_t at;
        subj_t *s = NULL;

        snap_read(in, len - LLMGW_SHA256_LEN, &off, &ss);
        at = find_any(t, ss.name, ss.namelen);
        if (at >= 0) {
            s = SUBJ(t, at);
        }
        else if ((ss.flags & SF_DYNAMIC) && t->has_dynamic) {
            s = insert(t, ss.name, ss.namelen,
                       hash_of(ss.name, ss.namelen), t->dyn, SF_DYNAMIC);
        }
        if (s) {
            snap_apply(t, s, &ss);
            ok++;
        }
        else {
            lost++;
        }
        commit(t);
    }
    unlock(t);
    (void)now;
    if (restored) {
        *restored = ok;
    }
    if (dropped) {
        *dropped = lost;
    }
    *why = NULL;
    return APR_SUCCESS;
}

/* ---------------------------------------------------------------------
 * Cluster sync
 */

enum { C_REQUESTS = NB, C_TOKENS = NB + 1, C_END = NB + 2 };
#define CURSOR_DONE 0xffffffffu

static int sync_item(tab_t *t, apr_uint64_t i, int counter, apr_time_t now,
                     llmgw_limits_sync_t *it)
{
    static const char per_code[] = "?hdm";
    subj_t *s = SUBJ(t, i);
    apr_int64_t local, synced;
    char hex[17];

    if (counter < NB) {
        budget_t *b = &s->b[counter];

        if (!b->conf) {
            return 0;
        }
        roll(t, b, now);
        commit(t);
        local = b->used;
        synced = b->synced;
        it->period = b->period;
        it->expires = budget_reset(t, b, now) / APR_USEC_PER_SEC
                      + (B_PER(b->conf) == LLMGW_PER_HOUR ? 3600 : 86400);
    }
    else {
        bucket_t *q = counter == C_REQUESTS ? &s->rq : &s->tk;

        if (!q->limit) {
            return 0;
        }
        local = q->local;
        synced = q->synced;
        it->period = 0;
        it->expires = 0;
    }
    apr_snprintf(hex, sizeof(hex), "%016" APR_UINT64_T_HEX_FMT,
                 (apr_uint64_t)s->digest);
    if (counter < NB) {
        apr_snprintf(it->key, sizeof(it->key), "lim:%s:%c%c:%" APR_INT64_T_FMT,
                     hex, B_UNIT(s->b[counter].conf) == LLMGW_BUDGET_TOKENS
                          ? 't' : 'c',
                     per_code[B_PER(s->b[counter].conf)], it->period);
    }
    else {
        apr_snprintf(it->key, sizeof(it->key), "lim:%s:%s", hex,
                     counter == C_REQUESTS ? "rq" : "tk");
    }
    it->delta = (apr_uint64_t)MAX(0, local - synced);
    it->mark = (apr_uint64_t)local;
    it->index = (apr_uint32_t)i;
    it->gen = (apr_uint32_t)(s->state >> 8);
    it->counter = counter;
    return 1;
}

int llmgw_limits_sync_collect(llmgw_limits_t *t, apr_uint32_t *cursor,
                              apr_time_t now, llmgw_limits_sync_t *items,
                              int max)
{
    apr_uint64_t at = *cursor / C_END;
    int counter = (int)(*cursor % C_END), n = 0;

    if (*cursor == CURSOR_DONE) {
        *cursor = 0;
        return 0;
    }
    if (max < 1 || lock(t) != APR_SUCCESS) {
        return 0;
    }
    for (; at < t->max_subjects && n < max; at++, counter = 0) {
        if ((SUBJ(t, at)->state & 0xff) != S_LIVE) {
            continue;
        }
        for (; counter < C_END && n < max; counter++) {
            n += sync_item(t, at, counter, now, &items[n]);
        }
        if (counter < C_END) {
            break;
        }
    }
    unlock(t);
    *cursor = at < t->max_subjects ? (apr_uint32_t)(at * C_END + counter)
                                   : CURSOR_DONE;
    if (!n && *cursor == CURSOR_DONE) {
        *cursor = 0;
    }
    return n;
}

apr_status_t llmgw_limits_sync_apply(llmgw_limits_t *t,
                                     const llmgw_limits_sync_t *it,
                                     apr_uint64_t total, apr_time_t now)
{
    apr_int64_t mark = (apr_int64_t)MIN(it->mark, (apr_uint64_t)APR_INT64_MAX);
    apr_int64_t others = total >= it->mark
                         ? (apr_int64_t)MIN(total - it->mark,
                                            (apr_uint64_t)APR_INT64_MAX)
                         : -1;
    apr_status_t rv;
    subj_t *s;

    if (it->counter < 0 || it->counter >= C_END) {
        return APR_EINVAL;
    }
    if ((rv = lock(t)) != APR_SUCCESS) {
        return rv;
    }
    s = handle(t, it->index, it->gen);
    if (s && it->counter < NB && s->b[it->counter].conf) {
        budget_t *b = &s->b[it->counter];

        roll(t, b, now);
        if (b->period == it->period) {
            jset(t, &b->synced, MAX(b->synced, MIN(mark, b->used)));
            if (others > b->remote) {
                jset(t, &b->remote, MIN(others, LLMGW_LIMITS_AMOUNT_MAX));
            }
        }
    }
    else if (s && it->counter >= NB) {
        bucket_t *q = it->counter == C_REQUESTS ? &s->rq : &s->tk;

        jset(t, &q->synced, MAX(q->synced, MIN(mark, q->local)));
        if (others > q->seen) {
            if (q->limit) {
                add_debt(t, q, others - q->seen, now);
            }
            jset(t, &q->seen, others);
        }
    }
    unlock(t);
    return APR_SUCCESS;
}
