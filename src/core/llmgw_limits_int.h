/* llmgw_limits_int: what the limits table's files share (llmgw_limits.c,
 * llmgw_limits_admit.c, llmgw_limits_persist.c): the layout and the
 * helpers each lends the others; private to them. */
#ifndef LLMGW_LIMITS_INT_H
#define LLMGW_LIMITS_INT_H

#include <pthread.h>

#include "llmgw_limits.h"

#define VERSION 1
#define JMAX 1024 /* journal words: a transaction's bound */
#define NCONF (3 + 2 * LLMGW_LIMITS_BUDGETS)
#define NB LLMGW_LIMITS_BUDGETS
#define NS LLMGW_LIMITS_SUBJECTS

enum { S_FREE = 0, S_LIVE = 1, S_RETIRED = 2 };
#define SF_DYNAMIC 1

typedef struct {
    apr_int64_t limit; /* per minute; 0: none */
    apr_int64_t since; /* records from this seq on took it */
    apr_int64_t debt;  /* ticks owed at 'last' */
    apr_int64_t last;
    apr_int64_t local;  /* this node's count, ever (sync) */
    apr_int64_t synced; /* of it, added to the cluster's */
    apr_int64_t seen;   /* the other nodes' count, as last seen */
} bucket_t;

typedef struct {
    apr_int64_t conf; /* unit << 8 | per; 0: none */
    apr_int64_t limit;
    apr_int64_t since;  /* records from this seq on took it */
    apr_int64_t period; /* the counts below are of this period */
    apr_int64_t used;
    apr_int64_t reserved;
    apr_int64_t remote; /* the other nodes' used, as last synced */
    apr_int64_t synced; /* of used, added to the cluster's */
    apr_int64_t prev_period;
    apr_int64_t prev_used;
} budget_t;

typedef struct {
    apr_uint64_t state; /* gen << 8 | S_*; read without the lock */
    apr_uint64_t namelen;
    char name[LLMGW_LIMITS_NAME_MAX];
    apr_uint64_t hash;
    apr_uint64_t digest; /* the name's SHA-256, first 8 bytes */
    apr_int64_t flags;
    apr_int64_t next_free; /* index + 1 of the next free subject */
    apr_int64_t concurrent;
    apr_int64_t inflight;
    bucket_t rq; /* rpm */
    bucket_t tk; /* tpm */
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
    apr_int64_t state; /* gen << 1 | 1 while in use */
    apr_int64_t seq;
    apr_int64_t owner;
    apr_int64_t t0;
    apr_int64_t expiry;
    apr_int64_t tokens;
    apr_int64_t nsub;
    apr_int64_t sub[NS]; /* index << 32 | gen */
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
    apr_uint64_t nidx; /* a power of 2 */
    apr_uint64_t max_records;
    apr_uint64_t off_subj;
    apr_uint64_t off_idx;
    apr_uint64_t off_rec;
    apr_int64_t flags;
    apr_int64_t sweep_interval;
    apr_int64_t default_ttl;
    apr_int64_t last_sweep; /* claimed by CAS, without the lock */
    union {
        pthread_mutex_t m;
        apr_uint64_t pad[8];
    } mu;
    apr_int64_t jn; /* journal entries in use */
    apr_int64_t jmax_seen;
    apr_int64_t joverflow;
    apr_int64_t rebuilding; /* the index is being rebuilt */
    apr_int64_t recoveries;
    apr_int64_t reclaimed;
    apr_int64_t changes;   /* locked sections that wrote */
    apr_int64_t free_subj; /* index + 1; 0: none */
    apr_int64_t free_rec;
    apr_int64_t nsubj;
    apr_int64_t ntomb;
    apr_int64_t nrec;
    apr_int64_t rec_seq;
    apr_int64_t has_dynamic;
    apr_int64_t dyn[NCONF];
    pcache_t pc[4]; /* the current period of each kind */
    jent_t j[JMAX];
};

typedef llmgw_limits_t tab_t;

#define SUBJ(t, i) ((subj_t *)((char *)(t) + (t)->off_subj) + (i))
#define IDX(t) ((apr_uint64_t *)((char *)(t) + (t)->off_idx))
#define REC(t, i) ((rec_t *)((char *)(t) + (t)->off_rec) + (i))
#define ALIGN8(n) (((n) + 7) & ~(apr_size_t)7)
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))

#define B_UNIT(c) ((int)((c) >> 8))
#define B_PER(c) ((int)((c)&0xff))

/* The helpers below are the table's own: hidden, so that the module
 * exports none of them and calls to them are direct (and within their
 * file inlinable) under -fPIC, as when they were static. */
#pragma GCC visibility push(hidden)

/* ---------------------------------------------------------------------
 * llmgw_limits.c: transactions
 */

apr_int64_t lm_ld(const void *p);

/* Writes v at p inside the open transaction, its old value journaled
 * first: the journal entry, then the count that makes it valid, then the
 * word, in that order for a reader that comes after our death. */
void lm_jset(tab_t *t, void *p, apr_int64_t v);
void lm_commit(tab_t *t);
/* Puts back every word of the open transaction, newest first. */
void lm_undo(tab_t *t);
apr_status_t lm_lock(tab_t *t);
void lm_unlock(tab_t *t);

/* ---------------------------------------------------------------------
 * llmgw_limits.c: limits, names and the index, lookups
 */

void lm_subj_conf(const subj_t *s, llmgw_limits_conf_t *c);
apr_uint64_t lm_hash_of(const char *s, apr_size_t n);
/* Rebuilt from the subjects (the truth) when tombstones pile up, and by
 * the recovery when a rebuild died half-way; lookups meanwhile miss and
 * ask again under the lock. */
void lm_rebuild_index(tab_t *t);
/* Adds a subject (the name known to be absent); NULL when full. */
subj_t *lm_insert(tab_t *t, const char *name, apr_size_t len, apr_uint64_t h,
                  const apr_int64_t *conf, int flags);
/* Frees subject i (nothing in flight): a tombstone in the index, a new
 * generation so that old handles answer GONE. */
void lm_drop(tab_t *t, apr_uint64_t i);
/* Any subject of that name, live or retired (under the lock). */
apr_int64_t lm_find_any(tab_t *t, const char *name, apr_size_t len);

/* ---------------------------------------------------------------------
 * llmgw_limits_admit.c: buckets and budgets
 */

/* Sets the debt to d at now, bounded by what DEBT_CAP minutes pay. */
void lm_set_debt(tab_t *t, bucket_t *b, apr_int64_t d, apr_time_t now);
/* tokens more (or fewer, < 0) owed; a count too big for ticks is the
 * cap. */
void lm_add_debt(tab_t *t, bucket_t *b, apr_int64_t tokens, apr_time_t now);
/* The counts of b are of the period holding now from here on; the
 * period before is kept for late settlements and the console. A clock
 * that steps back never resets a period. */
void lm_roll(tab_t *t, budget_t *b, apr_time_t now);
/* When the period of b's counts ends. */
apr_time_t lm_budget_reset(tab_t *t, const budget_t *b, apr_time_t now);
apr_int64_t lm_sat_add(apr_int64_t a, apr_int64_t b);

#pragma GCC visibility pop

/* ---------------------------------------------------------------------
 * Inline here, not in llmgw_limits.c: each reservation and settlement
 * calls them for every subject, and a call across files costs more than
 * they do.
 */

static inline void lm_jadd(tab_t *t, apr_int64_t *p, apr_int64_t d)
{
    if (d) {
        lm_jset(t, p, *p + d);
    }
}

/* The subject a handle names, live or retired; NULL: GONE. */
static inline subj_t *lm_handle(tab_t *t, apr_uint32_t index, apr_uint32_t gen)
{
    subj_t *s;

    if (index >= t->max_subjects) {
        return NULL;
    }
    s = SUBJ(t, index);
    if ((apr_uint32_t)(s->state >> 8) != gen || (s->state & 0xff) == S_FREE) {
        return NULL;
    }
    return s;
}

#endif
