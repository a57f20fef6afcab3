/* llmgw_metrics: counters in shared memory, added to with atomic adds and
 * read without a lock; series claimed once by compare-and-swap; the
 * ring's snapshots under a sequence counter; and their renderers. */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_hash.h"
#include "llmgw_metrics.h"
#include "llmgw_seqlock.h"

_Static_assert(__atomic_always_lock_free(sizeof(apr_uint64_t), 0),
               "64-bit atomics must be lock-free to be shared");

#define MAGIC 0x6c6c6d6du /* "llmm" */
#define VERSION 1u
#define RING (LLMGW_METRICS_SECONDS + 1)
#define PROBES 256        /* slots a series is looked for in: all */
#define CLAIM_SPINS 64    /* looks at another process's claim, */
#define CLAIM_YIELDS 2000 /* then gives it the CPU, so many times */
#define READ_TRIES 64
#define NWORDS (sizeof(llmgw_metrics_counts_t) / sizeof(apr_uint64_t))

const double llmgw_metrics_bounds[LLMGW_METRICS_BUCKETS] = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
};

enum { S_FREE = 0, S_CLAIMED, S_READY };

typedef struct {
    apr_uint32_t state;
    apr_uint32_t pad;
    apr_uint64_t hash;
    char a[LLMGW_METRICS_LABEL_MAX + 1];
    char b[LLMGW_METRICS_LABEL_MAX + 1];
    apr_int32_t status[LLMGW_METRICS_STATUSES];
    apr_uint64_t status_n[LLMGW_METRICS_STATUSES];
    llmgw_metrics_counts_t c;
} series_t;

typedef struct {
    apr_uint32_t seq;
    apr_uint32_t pad;
    apr_int64_t busy;   /* the second + 1 a writer is writing, else 0 */
    apr_int64_t second; /* of the totals below */
    llmgw_metrics_counts_t c;
} snap_t;

struct llmgw_metrics {
    apr_uint32_t magic;
    apr_uint32_t version;
    apr_uint64_t size;
    apr_int64_t started;
    apr_uint64_t restarts;
    llmgw_metrics_counts_t total;
    series_t models[LLMGW_METRICS_SERIES];
    series_t members[LLMGW_METRICS_MEMBERS];
    snap_t ring[RING];
};

static const char *const cache_names[LLMGW_CR_N] = { "none", "hit", "miss",
                                                     "bypass", "coalesced" };

llmgw_cache_result_t llmgw_metrics_cache_result(const char *note)
{
    static const char *const notes[LLMGW_CR_N] = { "", "HIT", "MISS", "BYPASS",
                                                   "COALESCED" };
    int i;

    for (i = 1; note && i < LLMGW_CR_N; i++) {
        if (strcmp(note, notes[i]) == 0) {
            return (llmgw_cache_result_t)i;
        }
    }
    return LLMGW_CR_NONE;
}

const char *llmgw_metrics_cache_name(llmgw_cache_result_t r)
{
    return (unsigned)r < LLMGW_CR_N ? cache_names[r] : cache_names[0];
}

/* ---------------------------------------------------------------------
 * The table
 */

apr_size_t llmgw_metrics_size(void)
{
    return sizeof(struct llmgw_metrics);
}

static void series_blank(series_t *s, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        s[i].status[LLMGW_METRICS_STATUSES - 1] = -1;
    }
    /* The last one holds what did not fit. */
    strcpy(s[n - 1].a, LLMGW_METRICS_OTHER);
    strcpy(s[n - 1].b, LLMGW_METRICS_OTHER);
    s[n - 1].state = S_READY;
}

llmgw_metrics_t *llmgw_metrics_init(void *mem, apr_size_t size, apr_time_t now)
{
    llmgw_metrics_t *m = mem;

    if (!mem || size < sizeof(*m)) {
        return NULL;
    }
    memset(m, 0, sizeof(*m));
    m->version = VERSION;
    m->size = sizeof(*m);
    m->started = now;
    series_blank(m->models, LLMGW_METRICS_SERIES);
    series_blank(m->members, LLMGW_METRICS_MEMBERS);
    __atomic_store_n(&m->magic, MAGIC, __ATOMIC_RELEASE);
    return m;
}

llmgw_metrics_t *llmgw_metrics_attach(void *mem, apr_size_t size)
{
    llmgw_metrics_t *m = mem;

    if (!mem || size < sizeof(*m)
        || __atomic_load_n(&m->magic, __ATOMIC_ACQUIRE) != MAGIC
        || m->version != VERSION || m->size != sizeof(*m)) {
        return NULL;
    }
    __atomic_fetch_add(&m->restarts, 1, __ATOMIC_RELAXED);
    return m;
}

apr_time_t llmgw_metrics_started(const llmgw_metrics_t *m)
{
    return m->started;
}

apr_uint64_t llmgw_metrics_restarts(const llmgw_metrics_t *m)
{
    return __atomic_load_n(&m->restarts, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------
 * Counting
 */

static int label_ok(const char *s)
{
    apr_size_t n = 0;

    for (; s[n]; n++) {
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f
            || n >= LLMGW_METRICS_LABEL_MAX) {
            return 0;
        }
    }
    return 1;
}

static apr_uint64_t pair_hash(const char *a, const char *b)
{
    apr_uint64_t h = llmgw_fnv1a64(a, strlen(a) + 1);

    return (h ^ llmgw_fnv1a64(b, strlen(b))) | 1;
}

static int series_is(const series_t *s, apr_uint64_t h, const char *a,
                     const char *b)
{
    return s->hash == h && strcmp(s->a, a) == 0 && strcmp(s->b, b) == 0;
}

/* The series of a, b, claimed if new; the last one (other) when they do
 * not fit or the table is full around their place. */
static series_t *series_get(series_t *tab, unsigned n, const char *a,
                            const char *b)
{
    apr_uint64_t h;
    unsigned i, spins;

    a = a ? a : "";
    b = b ? b : "";
    if (!label_ok(a) || !label_ok(b)) {
        return &tab[n - 1];
    }
    h = pair_hash(a, b);
    for (i = 0; i < PROBES && i < n - 1; i++) {
        series_t *s = &tab[(h + i) % (n - 1)];
        apr_uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);

        if (st == S_FREE
            && __atomic_compare_exchange_n(&s->state, &st, S_CLAIMED, 0,
                                           __ATOMIC_ACQUIRE,
                                           __ATOMIC_ACQUIRE)) {
            strcpy(s->a, a);
            strcpy(s->b, b);
            s->hash = h;
            __atomic_store_n(&s->state, S_READY, __ATOMIC_RELEASE);
            return s;
        }
        /* A claim is two string copies: its claimer, unless it was
         * descheduled in between (then it needs the CPU) or died. */
        for (spins = 0; st == S_CLAIMED && spins < CLAIM_SPINS + CLAIM_YIELDS;
             spins++) {
            if (spins >= CLAIM_SPINS) {
                sched_yield();
            }
            st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
        }
        if (st != S_READY) {
            break; /* a claimer died half-way: never a second copy */
        }
        if (series_is(s, h, a, b)) {
            return s;
        }
    }
    return &tab[n - 1];
}

static int bucket_of(apr_interval_time_t t)
{
    double sec = (double)t / APR_USEC_PER_SEC;
    int i;

    for (i = 0; i < LLMGW_METRICS_BUCKETS; i++) {
        if (sec <= llmgw_metrics_bounds[i]) {
            return i;
        }
    }
    return LLMGW_METRICS_BUCKETS;
}

#define ADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)

static apr_uint64_t count_of(apr_int64_t v)
{
    return v > 0 ? (apr_uint64_t)v : 0;
}

static void counts_add(llmgw_metrics_counts_t *c, const llmgw_metrics_obs_t *o)
{
    apr_interval_time_t d = o->duration > 0 ? o->duration : 0;

    ADD(c->requests, 1);
    if (o->error || o->status >= 400) {
        ADD(c->errors, 1);
    }
    ADD(c->prompt, count_of(o->prompt));
    ADD(c->completion, count_of(o->completion));
    ADD(c->saved, count_of(o->saved));
    if ((unsigned)o->cache < LLMGW_CR_N) {
        ADD(c->cache[o->cache], 1);
    }
    ADD(c->duration[bucket_of(d)], 1);
    ADD(c->duration_us, (apr_uint64_t)d);
    if (o->ttft >= 0) {
        ADD(c->ttft[bucket_of(o->ttft)], 1);
        ADD(c->ttft_n, 1);
        ADD(c->ttft_us, (apr_uint64_t)o->ttft);
    }
}

static void status_add(series_t *s, int status)
{
    int i;

    if (status <= 0 || status > 999) {
        status = -1;
    }
    for (i = 0; i < LLMGW_METRICS_STATUSES - 1 && status > 0; i++) {
        apr_int32_t cur = __atomic_load_n(&s->status[i], __ATOMIC_ACQUIRE);

        if (cur == 0) {
            apr_int32_t zero = 0;

            /* On failure zero holds the status another process put. */
            cur =
                __atomic_compare_exchange_n(&s->status[i], &zero, status, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
                    ? status
                    : zero;
        }
        if (cur == status) {
            break;
        }
    }
    ADD(s->status_n[i], 1);
}

static void counts_load(llmgw_metrics_counts_t *to,
                        const llmgw_metrics_counts_t *from)
{
    const apr_uint64_t *f = (const apr_uint64_t *)from;
    apr_uint64_t *t = (apr_uint64_t *)to;
    apr_size_t i;

    for (i = 0; i < NWORDS; i++) {
        t[i] = __atomic_load_n(&f[i], __ATOMIC_RELAXED);
    }
}

/* The totals as of now into this second's snapshot, unless another
 * process is writing it: then its copy or the next second's holds ours. */
static void snapshot(llmgw_metrics_t *m, apr_time_t now)
{
    apr_int64_t sec = apr_time_sec(now), busy;
    snap_t *sn = &m->ring[(apr_uint64_t)sec % RING];

    busy = __atomic_load_n(&sn->busy, __ATOMIC_ACQUIRE);
    /* A busy mark of another second is a writer that died. */
    if (busy == sec + 1
        || !__atomic_compare_exchange_n(&sn->busy, &busy, sec + 1, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        return;
    }
    llmgw_seq_write_begin(&sn->seq);
    __atomic_store_n(&sn->second, sec, __ATOMIC_RELAXED);
    counts_load(&sn->c, &m->total);
    llmgw_seq_write_end(&sn->seq);
    __atomic_store_n(&sn->busy, 0, __ATOMIC_RELEASE);
}

void llmgw_metrics_record(llmgw_metrics_t *m, const llmgw_metrics_obs_t *o,
                          apr_time_t now)
{
    series_t *s =
        series_get(m->models, LLMGW_METRICS_SERIES, o->route, o->model);

    counts_add(&s->c, o);
    status_add(s, o->status);
    if (o->member && *o->member) {
        s = series_get(m->members, LLMGW_METRICS_MEMBERS, o->balancer,
                       o->member);
        counts_add(&s->c, o);
        status_add(s, o->status);
    }
    counts_add(&m->total, o);
    snapshot(m, now);
}

/* ---------------------------------------------------------------------
 * Reading
 */

static void series_read(const series_t *s, llmgw_metrics_series_t *out)
{
    int i;

    memcpy(out->a, s->a, sizeof(out->a));
    memcpy(out->b, s->b, sizeof(out->b));
    for (i = 0; i < LLMGW_METRICS_STATUSES; i++) {
        out->status[i] = __atomic_load_n(&s->status[i], __ATOMIC_ACQUIRE);
        out->status_n[i] = __atomic_load_n(&s->status_n[i], __ATOMIC_RELAXED);
    }
    counts_load(&out->c, &s->c);
}

static const series_t *table_of(const llmgw_metrics_t *m,
                                llmgw_metrics_table_t table, unsigned *n)
{
    *n = table == LLMGW_MT_MEMBERS ? LLMGW_METRICS_MEMBERS
                                   : LLMGW_METRICS_SERIES;
    return table == LLMGW_MT_MEMBERS ? m->members : m->models;
}

int llmgw_metrics_next(const llmgw_metrics_t *m, llmgw_metrics_table_t table,
                       unsigned *cursor, llmgw_metrics_series_t *out)
{
    unsigned n;
    const series_t *tab = table_of(m, table, &n);

    for (; *cursor < n; (*cursor)++) {
        const series_t *s = &tab[*cursor];

        /* The other series only once it counted something. */
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == S_READY
            && (*cursor < n - 1
                || __atomic_load_n(&s->c.requests, __ATOMIC_RELAXED))) {
            series_read(s, out);
            (*cursor)++;
            return 1;
        }
    }
    return 0;
}

int llmgw_metrics_find(const llmgw_metrics_t *m, llmgw_metrics_table_t table,
                       const char *a, const char *b,
                       llmgw_metrics_series_t *out)
{
    unsigned cursor = 0;

    while (llmgw_metrics_next(m, table, &cursor, out)) {
        if (strcmp(out->a, a) == 0 && strcmp(out->b, b) == 0) {
            return 1;
        }
    }
    return 0;
}

void llmgw_metrics_sum(const llmgw_metrics_t *m, llmgw_metrics_table_t table,
                       const char *a, llmgw_metrics_counts_t *c)
{
    llmgw_metrics_series_t s;
    unsigned cursor = 0;
    apr_size_t i;

    memset(c, 0, sizeof(*c));
    while (llmgw_metrics_next(m, table, &cursor, &s)) {
        if (strcmp(s.a, a) == 0) {
            for (i = 0; i < NWORDS; i++) {
                ((apr_uint64_t *)c)[i] += ((const apr_uint64_t *)&s.c)[i];
            }
        }
    }
}

void llmgw_metrics_total(const llmgw_metrics_t *m, llmgw_metrics_counts_t *c)
{
    counts_load(c, &m->total);
}

/* Snapshot of second sec if the ring holds one whole, else 0. */
static int snap_read(const llmgw_metrics_t *m, apr_int64_t sec,
                     llmgw_metrics_counts_t *c)
{
    const snap_t *sn = &m->ring[(apr_uint64_t)sec % RING];
    apr_uint32_t seq;
    int tries;

    for (tries = 0; tries < READ_TRIES; tries++) {
        if (!llmgw_seq_read_begin(&sn->seq, &seq)) {
            continue;
        }
        if (__atomic_load_n(&sn->second, __ATOMIC_RELAXED) != sec) {
            return 0;
        }
        counts_load(c, &sn->c);
        if (llmgw_seq_read_end(&sn->seq, seq)) {
            return 1;
        }
    }
    return 0;
}

/* d = a - b, word by word, never below 0 (a racing writer's older copy). */
static void counts_sub(llmgw_metrics_counts_t *d,
                       const llmgw_metrics_counts_t *a,
                       const llmgw_metrics_counts_t *b)
{
    const apr_uint64_t *x = (const apr_uint64_t *)a;
    const apr_uint64_t *y = (const apr_uint64_t *)b;
    apr_uint64_t *z = (apr_uint64_t *)d;
    apr_size_t i;

    for (i = 0; i < NWORDS; i++) {
        z[i] = x[i] > y[i] ? x[i] - y[i] : 0;
    }
}

/* The totals as they were at the end of second sec: its snapshot, else
 * the latest one before it in the ring, else (the counters are younger)
 * zero. 0 when the ring knows nothing that old. */
static int totals_at(const llmgw_metrics_t *m, apr_int64_t sec,
                     llmgw_metrics_counts_t *c)
{
    apr_int64_t t;

    for (t = sec; t > sec - RING + 1; t--) {
        if (snap_read(m, t, c)) {
            return 1;
        }
        if (t <= apr_time_sec(m->started)) {
            break;
        }
    }
    memset(c, 0, sizeof(*c));
    return t <= apr_time_sec(m->started);
}

void llmgw_metrics_window(const llmgw_metrics_t *m, apr_time_t now, int secs,
                          llmgw_metrics_counts_t *each,
                          llmgw_metrics_counts_t *sum)
{
    apr_int64_t cur = apr_time_sec(now), t;
    llmgw_metrics_counts_t prev, val, first;
    int i;

    if (secs < 1) {
        secs = 1;
    }
    if (secs > LLMGW_METRICS_SECONDS - 1) {
        secs = LLMGW_METRICS_SECONDS - 1;
    }
    if (!totals_at(m, cur - secs, &prev)) {
        /* Nothing that old: the window starts at its oldest snapshot. */
        for (t = cur - secs + 1; t < cur && !snap_read(m, t, &prev); t++) {
        }
        if (t == cur) {
            llmgw_metrics_total(m, &prev);
        }
    }
    first = prev;
    for (i = 0, t = cur - secs + 1; t <= cur; t++, i++) {
        if (t == cur) {
            llmgw_metrics_total(m, &val);
        }
        else if (!snap_read(m, t, &val)) {
            val = prev;
        }
        if (each) {
            counts_sub(&each[i], &val, &prev);
        }
        prev = val;
    }
    counts_sub(sum, &prev, &first);
}

double llmgw_metrics_quantile(const apr_uint64_t *hist, double q)
{
    apr_uint64_t total = 0, seen = 0;
    double rank, lo = 0;
    int i;

    for (i = 0; i <= LLMGW_METRICS_BUCKETS; i++) {
        total += hist[i];
    }
    if (!total) {
        return -1;
    }
    rank = q * (double)total;
    for (i = 0; i < LLMGW_METRICS_BUCKETS; i++) {
        if ((double)(seen + hist[i]) >= rank && hist[i]) {
            return lo
                   + (llmgw_metrics_bounds[i] - lo)
                         * ((rank - (double)seen) / (double)hist[i]);
        }
        seen += hist[i];
        lo = llmgw_metrics_bounds[i];
    }
    return llmgw_metrics_bounds[LLMGW_METRICS_BUCKETS - 1];
}

/* ---------------------------------------------------------------------
 * JSON
 */

static json_object *u64(apr_uint64_t v)
{
    return json_object_new_int64(
        v > (apr_uint64_t)APR_INT64_MAX ? APR_INT64_MAX : (apr_int64_t)v);
}

static json_object *number(double v)
{
    char text[32];

    if (v < 0) {
        return json_object_new_null();
    }
    /* Six digits are all a reader wants of a latency or a rate. */
    snprintf(text, sizeof(text), "%.6g", v);
    return json_object_new_double_s(v, text);
}

json_object *llmgw_metrics_counts_json(const llmgw_metrics_counts_t *c)
{
    json_object *o = json_object_new_object(), *cache;
    apr_uint64_t hits = c->cache[LLMGW_CR_HIT] + c->cache[LLMGW_CR_COALESCED];
    apr_uint64_t looked = hits + c->cache[LLMGW_CR_MISS];
    int i;

    json_object_object_add(o, "requests", u64(c->requests));
    json_object_object_add(o, "errors", u64(c->errors));
    json_object_object_add(o, "prompt_tokens", u64(c->prompt));
    json_object_object_add(o, "completion_tokens", u64(c->completion));
    json_object_object_add(o, "saved_tokens", u64(c->saved));
    cache = json_object_new_object();
    for (i = 1; i < LLMGW_CR_N; i++) {
        json_object_object_add(cache, cache_names[i], u64(c->cache[i]));
    }
    json_object_object_add(o, "cache", cache);
    json_object_object_add(o, "hit_rate",
                           looked ? number((double)hits / (double)looked)
                                  : number(-1));
    json_object_object_add(o, "duration_p50",
                           number(llmgw_metrics_quantile(c->duration, 0.5)));
    json_object_object_add(o, "duration_p95",
                           number(llmgw_metrics_quantile(c->duration, 0.95)));
    json_object_object_add(o, "ttft_p50",
                           number(llmgw_metrics_quantile(c->ttft, 0.5)));
    json_object_object_add(o, "ttft_p95",
                           number(llmgw_metrics_quantile(c->ttft, 0.95)));
    return o;
}

static json_object *series_json(const llmgw_metrics_series_t *s,
                                const char *na, const char *nb)
{
    json_object *o = llmgw_metrics_counts_json(&s->c), *st;
    int i;

    json_object_object_add(o, na, json_object_new_string(s->a));
    json_object_object_add(o, nb, json_object_new_string(s->b));
    st = json_object_new_object();
    for (i = 0; i < LLMGW_METRICS_STATUSES; i++) {
        char code[16];

        if (s->status_n[i]) {
            snprintf(code, sizeof(code), "%d", (int)s->status[i]);
            json_object_object_add(st, s->status[i] < 0 ? "other" : code,
                                   u64(s->status_n[i]));
        }
    }
    json_object_object_add(o, "statuses", st);
    return o;
}

static json_object *table_json(const llmgw_metrics_t *m,
                               llmgw_metrics_table_t table, const char *na,
                               const char *nb)
{
    json_object *arr = json_object_new_array();
    llmgw_metrics_series_t s;
    unsigned cursor = 0;

    while (llmgw_metrics_next(m, table, &cursor, &s)) {
        json_object_array_add(arr, series_json(&s, na, nb));
    }
    return arr;
}

static json_object *chart_json(const llmgw_metrics_counts_t *each, int secs,
                               apr_time_t now)
{
    json_object *o = json_object_new_object();
    json_object *req = json_object_new_array(), *tok = json_object_new_array();
    json_object *err = json_object_new_array(), *hit = json_object_new_array();
    int i;

    json_object_object_add(o, "end", json_object_new_int64(apr_time_sec(now)));
    json_object_object_add(o, "step", json_object_new_int(1));
    for (i = 0; i < secs; i++) {
        json_object_array_add(req, u64(each[i].requests));
        json_object_array_add(tok, u64(each[i].prompt + each[i].completion));
        json_object_array_add(err, u64(each[i].errors));
        json_object_array_add(hit, u64(each[i].cache[LLMGW_CR_HIT]
                                       + each[i].cache[LLMGW_CR_COALESCED]));
    }
    json_object_object_add(o, "requests", req);
    json_object_object_add(o, "tokens", tok);
    json_object_object_add(o, "errors", err);
    json_object_object_add(o, "hits", hit);
    return o;
}

void llmgw_metrics_json(const llmgw_metrics_t *m, apr_time_t now, int secs,
                        json_object *status)
{
    llmgw_metrics_counts_t total, minute, *each;
    json_object *last;

    if (secs < 1 || secs > LLMGW_METRICS_SECONDS - 1) {
        secs = LLMGW_METRICS_SECONDS - 1;
    }
    each = calloc((apr_size_t)secs, sizeof(*each));
    llmgw_metrics_total(m, &total);
    json_object_object_add(status, "started",
                           json_object_new_int64(apr_time_sec(m->started)));
    json_object_object_add(status, "restarts", u64(llmgw_metrics_restarts(m)));
    json_object_object_add(status, "total", llmgw_metrics_counts_json(&total));
    llmgw_metrics_window(m, now, 60, NULL, &minute);
    last = llmgw_metrics_counts_json(&minute);
    json_object_object_add(last, "requests_per_s",
                           number((double)minute.requests / 60.0));
    json_object_object_add(
        last, "tokens_per_s",
        number((double)(minute.prompt + minute.completion) / 60.0));
    json_object_object_add(status, "last_minute", last);
    if (each) {
        llmgw_metrics_window(m, now, secs, each, &minute);
        json_object_object_add(status, "chart", chart_json(each, secs, now));
        free(each);
    }
    json_object_object_add(status, "models",
                           table_json(m, LLMGW_MT_MODELS, "route", "model"));
    json_object_object_add(
        status, "member_stats",
        table_json(m, LLMGW_MT_MEMBERS, "balancer", "member"));
}

/* ---------------------------------------------------------------------
 * Prometheus text
 */

static void add_str(apr_pool_t *p, llmgw_pbuf_t *b, const char *s)
{
    llmgw_pbuf_add(p, b, s, strlen(s));
}

static void add_escaped(apr_pool_t *p, llmgw_pbuf_t *b, const char *s)
{
    const char *run = s;

    for (; *s; s++) {
        const char *esc = *s == '\\'   ? "\\\\"
                          : *s == '"'  ? "\\\""
                          : *s == '\n' ? "\\n"
                                       : NULL;

        if (esc) {
            llmgw_pbuf_add(p, b, run, (apr_size_t)(s - run));
            add_str(p, b, esc);
            run = s + 1;
        }
    }
    llmgw_pbuf_add(p, b, run, (apr_size_t)(s - run));
}

void llmgw_prom_family(apr_pool_t *p, llmgw_pbuf_t *b, const char *name,
                       const char *type, const char *help)
{
    add_str(p, b,
            apr_pstrcat(p, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                        type, "\n", NULL));
}

void llmgw_prom_sample(apr_pool_t *p, llmgw_pbuf_t *b, const char *name, int n,
                       const char *const *label, const char *const *value,
                       double v)
{
    char num[64];
    int i;

    add_str(p, b, name);
    for (i = 0; i < n; i++) {
        add_str(p, b, i ? "," : "{");
        add_str(p, b, label[i]);
        add_str(p, b, "=\"");
        add_escaped(p, b, value[i]);
        add_str(p, b, "\"");
    }
    if (n) {
        add_str(p, b, "}");
    }
    if (isnan(v)) {
        strcpy(num, " NaN\n");
    }
    else if (isinf(v)) {
        strcpy(num, v > 0 ? " +Inf\n" : " -Inf\n");
    }
    else {
        snprintf(num, sizeof(num), " %.15g\n", v);
    }
    add_str(p, b, num);
}

static const char *const model_labels[] = { "route", "model", "status" };
static const char *const kind_labels[] = { "route", "model", "kind" };
static const char *const le_labels[] = { "route", "model", "le" };

static void prom_histogram(apr_pool_t *p, llmgw_pbuf_t *b, const char *name,
                           const llmgw_metrics_series_t *s,
                           const apr_uint64_t *hist, apr_uint64_t sum_us)
{
    const char *v[3] = { s->a, s->b, NULL };
    const char *bucket = apr_pstrcat(p, name, "_bucket", NULL);
    apr_uint64_t acc = 0;
    char le[32];
    int i;

    for (i = 0; i <= LLMGW_METRICS_BUCKETS; i++) {
        acc += hist[i];
        if (i < LLMGW_METRICS_BUCKETS) {
            snprintf(le, sizeof(le), "%g", llmgw_metrics_bounds[i]);
            v[2] = le;
        }
        else {
            v[2] = "+Inf";
        }
        llmgw_prom_sample(p, b, bucket, 3, le_labels, v, (double)acc);
    }
    llmgw_prom_sample(p, b, apr_pstrcat(p, name, "_sum", NULL), 2, le_labels,
                      v, (double)sum_us / APR_USEC_PER_SEC);
    llmgw_prom_sample(p, b, apr_pstrcat(p, name, "_count", NULL), 2, le_labels,
                      v, (double)acc);
}

/* The families of the model series, each a walk over the table (a
 * family's samples must be together). */
enum { F_REQUESTS, F_TOKENS, F_DURATION, F_TTFT, F_NFAM };

static void prom_series(apr_pool_t *p, llmgw_pbuf_t *b, int fam,
                        const llmgw_metrics_series_t *s)
{
    const char *v[3] = { s->a, s->b, NULL };
    char code[16];
    int i;

    switch (fam) {
    case F_REQUESTS:
        for (i = 0; i < LLMGW_METRICS_STATUSES; i++) {
            if (!s->status_n[i]) {
                continue;
            }
            snprintf(code, sizeof(code), "%d", (int)s->status[i]);
            v[2] = s->status[i] < 0 ? "other" : code;
            llmgw_prom_sample(p, b, "llmgw_requests_total", 3, model_labels, v,
                              (double)s->status_n[i]);
        }
        break;
    case F_TOKENS:
        v[2] = "prompt";
        llmgw_prom_sample(p, b, "llmgw_tokens_total", 3, kind_labels, v,
                          (double)s->c.prompt);
        v[2] = "completion";
        llmgw_prom_sample(p, b, "llmgw_tokens_total", 3, kind_labels, v,
                          (double)s->c.completion);
        break;
    case F_DURATION:
        prom_histogram(p, b, "llmgw_request_duration_seconds", s,
                       s->c.duration, s->c.duration_us);
        break;
    default:
        prom_histogram(p, b, "llmgw_ttft_seconds", s, s->c.ttft, s->c.ttft_us);
    }
}

static void prom_members(const llmgw_metrics_t *m, apr_pool_t *p,
                         llmgw_pbuf_t *b)
{
    static const char *const labels[] = { "balancer", "member" };
    llmgw_metrics_series_t s;
    unsigned cursor;
    int errs;

    for (errs = 0; errs < 2; errs++) {
        const char *name =
            errs ? "llmgw_member_errors_total" : "llmgw_member_requests_total";

        llmgw_prom_family(p, b, name, "counter",
                          errs ? "Requests a balancer member served that "
                                 "ended in an error."
                               : "Requests a balancer member served.");
        for (cursor = 0;
             llmgw_metrics_next(m, LLMGW_MT_MEMBERS, &cursor, &s);) {
            const char *v[2] = { s.a, s.b };

            llmgw_prom_sample(p, b, name, 2, labels, v,
                              (double)(errs ? s.c.errors : s.c.requests));
        }
    }
}

void llmgw_metrics_prom(const llmgw_metrics_t *m, apr_pool_t *p,
                        llmgw_pbuf_t *b)
{
    static const struct {
        const char *name, *type, *help;
    } fams[F_NFAM] = {
        { "llmgw_requests_total", "counter",
          "Requests answered, by route, model and HTTP status." },
        { "llmgw_tokens_total", "counter",
          "Tokens the backends reported, by route, model and kind." },
        { "llmgw_request_duration_seconds", "histogram",
          "Time from the request's arrival to its last byte." },
        { "llmgw_ttft_seconds", "histogram",
          "Time from the request's arrival to its first token." },
    };
    static const char *const result[] = { "result" };
    llmgw_metrics_series_t s;
    llmgw_metrics_counts_t total;
    unsigned cursor;
    int f, i;

    for (f = 0; f < F_NFAM; f++) {
        llmgw_prom_family(p, b, fams[f].name, fams[f].type, fams[f].help);
        for (cursor = 0;
             llmgw_metrics_next(m, LLMGW_MT_MODELS, &cursor, &s);) {
            prom_series(p, b, f, &s);
        }
    }
    llmgw_metrics_total(m, &total);
    llmgw_prom_family(p, b, "llmgw_cache_requests_total", "counter",
                      "Cache look-ups by result.");
    for (i = 1; i < LLMGW_CR_N; i++) {
        llmgw_prom_sample(p, b, "llmgw_cache_requests_total", 1, result,
                          &cache_names[i], (double)total.cache[i]);
    }
    llmgw_prom_family(p, b, "llmgw_cache_saved_tokens_total", "counter",
                      "Tokens answered from the cache or a shared "
                      "generation instead of a backend.");
    llmgw_prom_sample(p, b, "llmgw_cache_saved_tokens_total", 0, NULL, NULL,
                      (double)total.saved);
    prom_members(m, p, b);
}
