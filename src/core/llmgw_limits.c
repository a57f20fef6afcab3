/* llmgw_limits: the limits table (subjects, their buckets and budgets, the
 * reservations in flight): its layout, journaled transactions, names,
 * configuration and lookups. Admission is llmgw_limits_admit.c's,
 * snapshots and cluster sync llmgw_limits_persist.c's, the text side
 * (parsers, headers, 429s) llmgw_limits_text.c's; llmgw_limits_int.h has
 * what they share.
 *
 * Layout, all 64-bit words at offsets from the table's start (nothing
 * points, so each process may map it elsewhere): the header with the
 * mutex and the journal, max_subjects subjects, an open-addressed index of
 * names (4 entries a subject), max_records reservation records.
 *
 * Every change happens under the mutex, as one transaction: lm_jset() puts
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
 * lock. */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "llmgw_limits_int.h"
#include "llmgw_hash.h"
#include "llmgw_sha256.h"

#define MAGIC APR_UINT64_C(0x314d494c57474c4c) /* "LLGWLIM1" */
#define IDX_TOMB 1

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

apr_int64_t lm_ld(const void *p)
{
    return __atomic_load_n((const apr_int64_t *)p, __ATOMIC_RELAXED);
}

void lm_jset(tab_t *t, void *p, apr_int64_t v)
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

void lm_commit(tab_t *t)
{
    if (t->jn > t->jmax_seen) {
        t->jmax_seen = t->jn;
    }
    __atomic_store_n(&t->jn, 0, __ATOMIC_RELEASE);
}

void lm_undo(tab_t *t)
{
    apr_int64_t n = t->jn;

    while (n-- > 0) {
        if (t->j[n].off + 8 <= t->size) {
            __atomic_store_n((apr_int64_t *)((char *)t + t->j[n].off),
                             t->j[n].old, __ATOMIC_RELEASE);
        }
    }
    lm_commit(t);
}

apr_status_t lm_lock(tab_t *t)
{
    int rv = pthread_mutex_lock(&t->mu.m);

    if (rv == EOWNERDEAD) {
        /* Its owner died inside a transaction: as if it never began. */
        lm_undo(t);
        if (t->rebuilding) {
            lm_rebuild_index(t);
        }
        t->recoveries++;
        if ((rv = pthread_mutex_consistent(&t->mu.m)) != 0) {
            pthread_mutex_unlock(&t->mu.m);
        }
    }
    return rv ? APR_FROM_OS_ERROR(rv) : APR_SUCCESS;
}

void lm_unlock(tab_t *t)
{
    if (t->jn) {
        t->changes++;
    }
    lm_commit(t);
    pthread_mutex_unlock(&t->mu.m);
}

/* ---------------------------------------------------------------------
 * Limits
 */

const char *llmgw_limits_conf_check(const llmgw_limits_conf_t *c)
{
    int i, k;

    if (c->rpm < 0 || c->rpm > LLMGW_LIMITS_RATE_MAX || c->tpm < 0
        || c->tpm > LLMGW_LIMITS_RATE_MAX || c->concurrent < 0
        || c->concurrent > LLMGW_LIMITS_RATE_MAX) {
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

void lm_subj_conf(const subj_t *s, llmgw_limits_conf_t *c)
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
        lm_jset(t, &s->rq.since, t->rec_seq);
        lm_jset(t, &s->rq.debt, 0);
    }
    if (!s->tk.limit != !w[1]) {
        lm_jset(t, &s->tk.since, t->rec_seq);
        lm_jset(t, &s->tk.debt, 0);
    }
    lm_jset(t, &s->rq.limit, w[0]);
    lm_jset(t, &s->tk.limit, w[1]);
    lm_jset(t, &s->concurrent, w[2]);
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
                lm_jset(t, dst, v);
            }
        }
    }
}

/* ---------------------------------------------------------------------
 * Names and the index
 */

apr_uint64_t lm_hash_of(const char *s, apr_size_t n)
{
    return llmgw_fnv1a64(s, n);
}

static apr_uint64_t idx_entry(apr_uint64_t h, apr_uint64_t i)
{
    return (h >> 32) << 32 | (i + 2);
}

#define M_LIVE (1 << S_LIVE)
#define M_ANY (1 << S_LIVE | 1 << S_RETIRED)

/* The subject of that name in one of the states in 'want', found with or
 * without the lock. */
static int lookup(tab_t *t, const char *name, apr_size_t len, apr_uint64_t h,
                  int want, apr_uint32_t *index, apr_uint32_t *gen)
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

void lm_rebuild_index(tab_t *t)
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

subj_t *lm_insert(tab_t *t, const char *name, apr_size_t len, apr_uint64_t h,
                  const apr_int64_t *conf, int flags)
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
    lm_jset(t, &t->free_subj, next);
    if (idx[pos] == IDX_TOMB) {
        lm_jset(t, &t->ntomb, t->ntomb - 1);
    }
    lm_jset(t, &idx[pos], (apr_int64_t)idx_entry(h, i));
    lm_jset(t, &t->nsubj, t->nsubj + 1);
    lm_jset(t, &s->state, (apr_int64_t)((s->state >> 8) << 8 | S_LIVE));
    return s;
}

void lm_drop(tab_t *t, apr_uint64_t i)
{
    subj_t *s = SUBJ(t, i);
    apr_int64_t pos = idx_pos_of(t, i);

    if (pos >= 0) {
        lm_jset(t, &IDX(t)[pos], IDX_TOMB);
        lm_jset(t, &t->ntomb, t->ntomb + 1);
    }
    lm_jset(t, &s->state, (apr_int64_t)(((s->state >> 8) + 1) << 8 | S_FREE));
    lm_jset(t, &s->next_free, t->free_subj);
    lm_jset(t, &t->free_subj, (apr_int64_t)i + 1);
    lm_jset(t, &t->nsubj, t->nsubj - 1);
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
    if (max_subjects < 1 || max_subjects > (1u << 24) || max_records < 1
        || max_records > (1u << 24)) {
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
                             (apr_uint32_t)t->max_records)
               > size) {
        return NULL;
    }
    return t;
}

void llmgw_limits_tune(llmgw_limits_t *t, apr_time_t sweep_interval,
                       apr_time_t default_ttl)
{
    if (sweep_interval > 0) {
        __atomic_store_n(&t->sweep_interval, sweep_interval, __ATOMIC_RELAXED);
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

apr_int64_t lm_find_any(tab_t *t, const char *name, apr_size_t len)
{
    apr_uint32_t i, gen;

    return lookup(t, name, len, lm_hash_of(name, len), M_ANY, &i, &gen)
               ? (apr_int64_t)i
               : -1;
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
    if ((rv = lm_lock(t)) != APR_SUCCESS) {
        return rv;
    }
    for (k = 0; k < n; k++) {
        missing += lm_find_any(t, defs[k].name, strlen(defs[k].name)) < 0;
    }
    if (missing > (apr_int64_t)t->max_subjects - t->nsubj) {
        lm_unlock(t);
        return APR_ENOSPC;
    }
    memset(dw, 0, sizeof(dw));
    if (dynamic) {
        conf_to_words(dynamic, dw);
    }
    for (k = 0; k < NCONF; k++) {
        lm_jset(t, &t->dyn[k], dw[k]);
    }
    lm_jset(t, &t->has_dynamic, dynamic != NULL);
    lm_commit(t);
    /* One transaction a subject: the journal bounds each. */
    for (i = 0; i < t->max_subjects; i++) {
        subj_t *s = SUBJ(t, i);
        int st = (int)(s->state & 0xff), d;

        if (st == S_FREE) {
            continue;
        }
        d = (s->flags & SF_DYNAMIC) ? (dynamic ? n : -1) : def_of(defs, n, s);
        if (d >= 0) {
            if (d < n) {
                conf_to_words(&defs[d].conf, w);
            }
            apply_conf(t, s, d < n ? w : dw);
            if (st == S_RETIRED) {
                lm_jset(t, &s->state,
                        (apr_int64_t)((s->state >> 8) << 8 | S_LIVE));
            }
        }
        else if (st == S_LIVE) {
            lm_jset(t, &s->state,
                    (apr_int64_t)((s->state >> 8) << 8 | S_RETIRED));
        }
        lm_commit(t);
    }
    for (k = 0; k < n; k++) {
        apr_size_t len = strlen(defs[k].name);

        if (lm_find_any(t, defs[k].name, len) < 0) {
            conf_to_words(&defs[k].conf, w);
            lm_insert(t, defs[k].name, len, lm_hash_of(defs[k].name, len), w,
                      0);
            lm_commit(t);
        }
    }
    lm_unlock(t);
    (void)now;
    return APR_SUCCESS;
}

static apr_status_t find(tab_t *t, const char *name, int add,
                         llmgw_limits_subject_t *out)
{
    apr_size_t len = name ? strlen(name) : 0;
    apr_uint64_t h = lm_hash_of(name, len);
    apr_status_t rv;
    subj_t *s;

    if (!len || len > LLMGW_LIMITS_NAME_MAX) {
        return APR_NOTFOUND;
    }
    if (lookup(t, name, len, h, M_LIVE, &out->index, &out->gen)) {
        return APR_SUCCESS;
    }
    if ((rv = lm_lock(t)) != APR_SUCCESS) {
        return rv;
    }
    rv = APR_NOTFOUND;
    if (lookup(t, name, len, h, M_LIVE, &out->index, &out->gen)) {
        rv = APR_SUCCESS;
    }
    else if (add && t->has_dynamic && lm_find_any(t, name, len) < 0) {
        s = lm_insert(t, name, len, h, t->dyn, SF_DYNAMIC);
        if (s) {
            out->index = (apr_uint32_t)(s - SUBJ(t, 0));
            out->gen = (apr_uint32_t)(s->state >> 8);
            rv = APR_SUCCESS;
        }
        else {
            rv = APR_ENOSPC;
        }
    }
    lm_unlock(t);
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
