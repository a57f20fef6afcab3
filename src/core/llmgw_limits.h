/* llmgw_limits: rate limits and budgets of keys, routes and users in one
 * table laid out in memory the caller provides and shares between
 * processes: reserve at admission, settle at the end, refund the rest.
 *
 * The caller (the httpd glue) owns the memory, its sharing, the clock and
 * the network; this file owns the arithmetic and the invariants:
 *
 * - used <= limit for every limit, under any concurrency across processes,
 *   whenever the reserved estimate bounds the real usage (llmgw_estimate);
 * - every change is one transaction under a robust process-shared mutex
 *   in the table, journaled, so a process killed in the middle of one
 *   (SIGKILL included) leaves the table as if it had not begun;
 * - a reservation whose process died (or that outlived its ttl) is swept:
 *   it never pins a subject at false 429s;
 * - nothing in the table is a pointer: each process may map it at another
 *   address.
 *
 * Times are apr_time_t (microseconds since the Unix epoch, UTC) given by
 * the caller as 'now'; nothing here reads a clock. docs/limits.md says
 * which call the glue makes when. */
#ifndef LLMGW_LIMITS_H
#define LLMGW_LIMITS_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

#include "llmgw_dialect.h"

#define LLMGW_LIMITS_NAME_MAX 128        /* bytes of a subject's name */
#define LLMGW_LIMITS_BUDGETS 4           /* budgets one subject may have */
#define LLMGW_LIMITS_SUBJECTS 5          /* subjects one request may touch */
#define LLMGW_LIMITS_RATE_MAX 1000000000 /* rpm, tpm, concurrent */
#define LLMGW_LIMITS_AMOUNT_MAX (APR_INT64_C(1) << 52)    /* a budget */
#define LLMGW_LIMITS_TOKENS_MAX (APR_INT64_C(1) << 40)    /* one request */
#define LLMGW_LIMITS_PRICE_MAX APR_INT64_C(1000000000000) /* u/Mtok */

/* What refused a request (or that nothing did). The glue answers each
 * with a 429, except FULL and GONE (see llmgw_limits_reserve). */
typedef enum {
    LLMGW_LIMIT_OK = 0,
    LLMGW_LIMIT_RPM,           /* requests per minute */
    LLMGW_LIMIT_TPM,           /* tokens per minute */
    LLMGW_LIMIT_CONCURRENT,    /* requests in flight */
    LLMGW_LIMIT_BUDGET_TOKENS, /* a token budget of the period */
    LLMGW_LIMIT_BUDGET_COST,   /* a cost budget of the period */
    LLMGW_LIMIT_NKINDS,        /* refusals are counted per kind < this */
    LLMGW_LIMIT_FULL,          /* no reservation free: table too small */
    LLMGW_LIMIT_GONE           /* a subject handle names no subject */
} llmgw_limit_kind_t;

/* Budget periods, calendar-aligned in UTC. */
typedef enum {
    LLMGW_PER_HOUR = 1,
    LLMGW_PER_DAY,
    LLMGW_PER_MONTH
} llmgw_period_t;

typedef enum {
    LLMGW_BUDGET_TOKENS = 1, /* prompt + completion tokens */
    LLMGW_BUDGET_COST        /* micro-units of a currency */
} llmgw_budget_unit_t;

typedef struct {
    int unit;          /* llmgw_budget_unit_t; 0: no budget */
    int per;           /* llmgw_period_t */
    apr_int64_t limit; /* tokens, or micro-units */
} llmgw_budget_conf_t;

/* A subject's limits; 0 means none of that kind. */
typedef struct {
    apr_int64_t rpm;
    apr_int64_t tpm;
    apr_int64_t concurrent;
    llmgw_budget_conf_t budget[LLMGW_LIMITS_BUDGETS];
} llmgw_limits_conf_t;

/* A model's price in micro-units of the currency per million tokens
 * (0.15 per million = 150000). Costs are charged rounded up to a whole
 * micro-unit per request and side: integers only, no drift. */
typedef struct {
    apr_int64_t in;  /* prompt tokens */
    apr_int64_t out; /* completion tokens */
} llmgw_price_t;

/* ---------------------------------------------------------------------
 * Configuration values: the parsers the directives share.
 */

/* NULL if c is usable, else a static text naming what is wrong (a value
 * out of range, a budget with no unit or period, two budgets of one unit
 * and period). */
const char *llmgw_limits_conf_check(const llmgw_limits_conf_t *c);

/* LLMRateLimit's words ("rpm=600", "tpm=200000", "concurrent=8", at least
 * one, each at most once) into c. NULL, or an error from p that shows a
 * good value. Numbers are positive decimal integers, nothing else. */
const char *llmgw_limits_parse_rate(apr_pool_t *p, int argc,
                                    const char *const *argv,
                                    llmgw_limits_conf_t *c);
/* LLMBudget's words ("tokens=N per=day", "cost=12.50 per=month") added as
 * a budget of c (replacing one of the same unit and period). Cost is in
 * currency units with up to 6 decimals, kept in micro-units. */
const char *llmgw_limits_parse_budget(apr_pool_t *p, int argc,
                                      const char *const *argv,
                                      llmgw_limits_conf_t *c);
/* LLMPrice's words after the model ("in=0.15 out=0.60": currency units
 * per million tokens, up to 6 decimals) into pr. */
const char *llmgw_limits_parse_price(apr_pool_t *p, int argc,
                                     const char *const *argv,
                                     llmgw_price_t *pr);

/* ---------------------------------------------------------------------
 * Subjects: what limits and budgets belong to.
 */

typedef enum {
    LLMGW_SUBJECT_KEY = 1,   /* an <LLMKey> */
    LLMGW_SUBJECT_ROUTE,     /* an <LLMRoute> */
    LLMGW_SUBJECT_KEY_ROUTE, /* a key on one route */
    LLMGW_SUBJECT_USER,      /* an authenticated REMOTE_USER */
    LLMGW_SUBJECT_MODEL      /* a model, for usage only */
} llmgw_subject_kind_t;

/* The table's name of a subject: "key:A", "route:A", "key+route:A\037B",
 * "user:A", "model:A", so subjects of two kinds never share one. A name
 * longer than LLMGW_LIMITS_NAME_MAX or with a control character becomes
 * "<kind>#" and the SHA-256 of the rest in hex. From p; b only for
 * LLMGW_SUBJECT_KEY_ROUTE. */
const char *llmgw_limits_subject_name(apr_pool_t *p, llmgw_subject_kind_t kind,
                                      const char *a, const char *b);

/* A subject in a table; a value, valid until the subject is dropped (the
 * table then answers GONE, never another subject's counts). */
typedef struct {
    apr_uint32_t index;
    apr_uint32_t gen;
} llmgw_limits_subject_t;

/* ---------------------------------------------------------------------
 * The table.
 */

typedef struct llmgw_limits llmgw_limits_t;

/* Bytes a table of max_subjects subjects and max_records reservations in
 * flight at once needs (both 1..2^24); 0 if out of range. max_records
 * bounds the requests all processes have in flight (with a key or a
 * limited route): MaxRequestWorkers and some room. */
apr_size_t llmgw_limits_size(apr_uint32_t max_subjects,
                             apr_uint32_t max_records);

/* Sweeps charge a leaked reservation in full instead of refunding it. */
#define LLMGW_LIMITS_LEAK_CHARGE 1

/* Lays a new table out in mem (size bytes, 8-byte aligned, any content;
 * shared memory the caller maps into every process that uses it) and
 * makes its process-shared robust mutex. NULL if size is smaller than
 * llmgw_limits_size or the mutex cannot be made. */
llmgw_limits_t *llmgw_limits_init(void *mem, apr_size_t size,
                                  apr_uint32_t max_subjects,
                                  apr_uint32_t max_records, int flags);

/* The table llmgw_limits_init laid out in mem (in this process or
 * another, at this address or another): NULL unless mem holds one of this
 * version and size. */
llmgw_limits_t *llmgw_limits_attach(void *mem, apr_size_t size);

/* How often llmgw_limits_sweep works unless forced (default 5 s), and
 * the ttl of a reservation whose request gives none (default 1 hour). */
void llmgw_limits_tune(llmgw_limits_t *t, apr_time_t sweep_interval,
                       apr_time_t default_ttl);

/* One configured subject. */
typedef struct {
    const char *name; /* llmgw_limits_subject_name */
    llmgw_limits_conf_t conf;
} llmgw_limits_def_t;

/* Makes the table's configured subjects defs[0..n): new names are added,
 * known ones take the new limits and keep their usage (a budget keeps it
 * when its unit and period stay), configured subjects not in defs are
 * retired (no new admissions, their requests in flight still settle,
 * dropped by a sweep once none is left). dynamic (NULL: none) is the
 * limit block of subjects added at run time (llmgw_limits_find_or_add,
 * REMOTE_USER's); subjects already added take it too (or, with NULL,
 * are retired like removed keys). APR_EINVAL (nothing
 * changed) if a conf fails llmgw_limits_conf_check or a name is given
 * twice, APR_ENOSPC (nothing changed) if the table cannot hold them. Made
 * for post_config, on a new table or the one kept across a restart. */
apr_status_t llmgw_limits_configure(llmgw_limits_t *t,
                                    const llmgw_limits_def_t *defs, int n,
                                    const llmgw_limits_conf_t *dynamic,
                                    apr_time_t now);

/* The live subject named name. Without the lock when it can (a few
 * probes and one compare). APR_NOTFOUND if there is none. */
apr_status_t llmgw_limits_find(llmgw_limits_t *t, const char *name,
                               llmgw_limits_subject_t *s);
/* The same, adding a dynamic subject when there is none: APR_NOTFOUND if
 * the table has no dynamic limits (or the name is a retired subject's),
 * APR_ENOSPC if it is full (a forced sweep may make room by dropping
 * users that hold nothing; else the glue fails open or closed as
 * configured). */
apr_status_t llmgw_limits_find_or_add(llmgw_limits_t *t, const char *name,
                                      apr_time_t now,
                                      llmgw_limits_subject_t *s);

/* ---------------------------------------------------------------------
 * Admission and settlement.
 */

typedef struct {
    llmgw_limits_subject_t subject[LLMGW_LIMITS_SUBJECTS];
    int nsubjects;       /* 1..LLMGW_LIMITS_SUBJECTS, distinct */
    apr_int64_t prompt;  /* bound on prompt tokens */
    apr_int64_t max_out; /* bound on completion tokens (all) */
    llmgw_price_t price; /* the model's; {0, 0} costs nothing */
    apr_int64_t owner;   /* pid of the process that settles */
    apr_time_t ttl;      /* reclaimed after this even with its
                                       owner alive; 0: the table's */
} llmgw_limits_req_t;

/* What the caller keeps between reserve and settle (in r->pool); its
 * members are the table's business. */
typedef struct {
    apr_uint64_t rec; /* record index + 1, 0: none */
    apr_uint64_t rec_gen;
    apr_time_t t0;
    apr_int64_t tokens; /* reserved per subject */
    apr_int64_t cost[LLMGW_LIMITS_SUBJECTS];
    apr_int64_t seq;
    llmgw_price_t price;
    int nsubjects;
    int settled;
    llmgw_limits_subject_t subject[LLMGW_LIMITS_SUBJECTS];
} llmgw_limits_ticket_t;

/* Everything a 429 and OpenAI's x-ratelimit-* headers need. */
typedef struct {
    llmgw_limit_kind_t refused; /* LLMGW_LIMIT_OK when admitted */
    int subject;                /* the refusing one's place, or -1 */
    int spent;     /* a budget whose period's usage alone leaves no room:
                       insufficient_quota, retry at the period's reset */
    int too_large; /* the request alone exceeds the limit: it will never
                       pass as it is */
    int per;       /* the refusing budget's period */
    apr_int64_t retry_after; /* seconds, >= 1 when refused */
    apr_int64_t limit;       /* of the refusing limit */
    apr_int64_t used;        /* of it: in use, reserved included */
    apr_int64_t requested;   /* what this request asked of it */
    /* The tightest request and token limits over the subjects (a token
     * budget counts as a token limit); limit -1 where none applies (the
     * glue leaves those headers out). Resets are durations. */
    apr_int64_t limit_requests;
    apr_int64_t remaining_requests;
    apr_time_t reset_requests;
    apr_int64_t limit_tokens;
    apr_int64_t remaining_tokens;
    apr_time_t reset_tokens;
} llmgw_limits_verdict_t;

/* Admits or refuses a request in one step: every limit of every subject
 * is checked and taken together (a request in flight, one request of
 * rpm, prompt + max_out tokens of tpm and of each token budget, their
 * cost at rq->price of each cost budget), or nothing is. Returns
 * v->refused; on LLMGW_LIMIT_OK tk holds the reservation, which the
 * caller must end with llmgw_limits_settle (or leave to a sweep if its
 * process dies). v is filled either way, with the state after the
 * request (admitted) or without it (refused). LLMGW_LIMIT_GONE: a
 * subject was dropped since it was found (find it again); FULL: every
 * reservation record is in use (answer 503, or admit without limits,
 * as configured); both also when rq is out of range. */
llmgw_limit_kind_t llmgw_limits_reserve(llmgw_limits_t *t,
                                        const llmgw_limits_req_t *rq,
                                        apr_time_t now,
                                        llmgw_limits_ticket_t *tk,
                                        llmgw_limits_verdict_t *v);

/* Ends tk's reservation: charges prompt + completion tokens (and their
 * cost) to the period the request was admitted in, even when more than
 * was reserved (a backend that ignored max_tokens), gives back the rest
 * of tpm and of every budget, and ends the request in flight. 0, 0 is a
 * request that generated nothing (a failure before the answer, a cache
 * hit billed free); rpm keeps counting it. A reservation a sweep took
 * back meanwhile is still charged (a "late" settlement). APR_EINVAL if tk
 * holds no reservation or was settled already (nothing changes). */
apr_status_t llmgw_limits_settle(llmgw_limits_t *t, llmgw_limits_ticket_t *tk,
                                 apr_int64_t prompt, apr_int64_t completion,
                                 apr_time_t now);

/* Moves tk's reservation to other subjects and price (a failover to a
 * fallback route): subjects in both keep their request (rpm, in flight)
 * and re-take tokens and cost at the new price, new ones take everything,
 * old ones give everything back but rpm. All or nothing: when refused,
 * tk and the table are as before. Returns v->refused as reserve does. */
llmgw_limit_kind_t llmgw_limits_retarget(llmgw_limits_t *t,
                                         llmgw_limits_ticket_t *tk,
                                         const llmgw_limits_req_t *rq,
                                         apr_time_t now,
                                         llmgw_limits_verdict_t *v);

/* Takes back reservations whose process is gone (kill(pid, 0) says no
 * such process) or whose ttl ran out, refunding them (or charging them
 * in full with LLMGW_LIMITS_LEAK_CHARGE), and drops retired subjects with
 * nothing in flight. Does nothing unless forced or the sweep interval has
 * passed since the last sweep of any process, so the glue may call it
 * often (at child start forced, then e.g. once a second). Scratch from p.
 * Returns the reservations taken back. */
int llmgw_limits_sweep(llmgw_limits_t *t, apr_pool_t *p, apr_time_t now,
                       int force);

/* The tokens the subjects' token limits (tpm, token budgets) have left
 * now, the least of them; APR_INT64_MAX when none has one. Read without
 * a reservation: what the gateway sets max_tokens from when the client
 * gives none (llmgw_estimate), not a promise. */
apr_int64_t llmgw_limits_headroom(llmgw_limits_t *t,
                                  const llmgw_limits_subject_t *s, int n,
                                  apr_time_t now);

/* ---------------------------------------------------------------------
 * Usage: one view for the console and metrics.
 */

typedef struct {
    char name[LLMGW_LIMITS_NAME_MAX + 1];
    llmgw_limits_subject_t subject;
    int dynamic; /* added at run time */
    int retired; /* out of the config, still settling */
    llmgw_limits_conf_t conf;
    apr_int64_t inflight;
    apr_int64_t rpm_remaining; /* -1 without rpm */
    apr_time_t rpm_reset;      /* duration until full */
    apr_int64_t tpm_remaining; /* -1 without tpm */
    apr_time_t tpm_reset;
    struct {
        apr_int64_t used;      /* this node's, this period */
        apr_int64_t reserved;  /* this node's, in flight */
        apr_int64_t remote;    /* other nodes', as last synced */
        apr_int64_t remaining; /* limit - all three, >= 0 */
        apr_time_t reset;      /* when this period ends (absolute) */
        apr_int64_t prev_used; /* the period before this one */
    } budget[LLMGW_LIMITS_BUDGETS];
    apr_int64_t requests;                    /* admitted, ever */
    apr_int64_t refused[LLMGW_LIMIT_NKINDS]; /* 429s by kind */
    apr_int64_t prompt_tokens;               /* settled, ever */
    apr_int64_t completion_tokens;
    apr_int64_t cost;      /* micro-units, ever */
    apr_int64_t reclaimed; /* reservations a sweep took back */
    apr_int64_t late;      /* settlements after that */
} llmgw_limits_usage_t;

/* The usage of the subject at *cursor or after it (start at 0), *cursor
 * moved past it: APR_NOTFOUND when there is none left. */
apr_status_t llmgw_limits_usage_next(llmgw_limits_t *t, apr_uint32_t *cursor,
                                     apr_time_t now, llmgw_limits_usage_t *u);
/* The usage of one subject; APR_NOTFOUND if s no longer names one. */
apr_status_t llmgw_limits_usage(llmgw_limits_t *t,
                                const llmgw_limits_subject_t *s,
                                apr_time_t now, llmgw_limits_usage_t *u);

/* An operator's reset (the console's action): every budget of the
 * subject s names has used nothing of its period from now on; what is in
 * flight stays reserved and settles as usual (its tokens then count), the
 * rates, request and 429 counters are not touched. This node's counts: a
 * cluster's synced counters of the period keep what they hold (see
 * docs/limits.md). APR_NOTFOUND if s no longer names a subject. */
apr_status_t llmgw_limits_reset(llmgw_limits_t *t,
                                const llmgw_limits_subject_t *s,
                                apr_time_t now);

/* Table-wide counts, for the console and the tests. */
typedef struct {
    apr_int64_t subjects; /* live and retired */
    apr_int64_t max_subjects;
    apr_int64_t records; /* reservations in flight */
    apr_int64_t max_records;
    apr_int64_t recoveries;  /* locks taken over from a dead owner */
    apr_int64_t reclaimed;   /* reservations swept, ever */
    apr_int64_t journal_max; /* the largest transaction, in words */
    apr_int64_t changes;     /* transactions so far: a snapshot is
                                       due only when this moved */
} llmgw_limits_stats_t;

void llmgw_limits_stats(llmgw_limits_t *t, llmgw_limits_stats_t *st);

/* ---------------------------------------------------------------------
 * Persistence: a snapshot the glue writes to a file (atomically, every
 * second) and restores at start.
 */

/* The table's counts as bytes from p: versioned, every subject by name,
 * with a SHA-256 of the rest at the end. Reservations in flight are kept
 * as counts, not as reservations (their processes will not be there).
 * Takes the lock a subject at a time (about 560 bytes each). */
apr_status_t llmgw_limits_snapshot(llmgw_limits_t *t, apr_pool_t *p,
                                   apr_time_t now, const char **buf,
                                   apr_size_t *len);

/* Puts a snapshot's counts back by subject name into a configured table
 * no request has used yet: a subject that is in the table takes its
 * usage (and keeps its configured limits), a dynamic subject not in it is
 * added (while there is room), any other is dropped. Reservations that
 * were in flight are refunded (charged with LLMGW_LIMITS_LEAK_CHARGE).
 * APR_EINVAL, with *why set (a static text) and nothing changed, for a
 * snapshot that is truncated, corrupt or of another version. restored
 * and dropped may be NULL. */
apr_status_t llmgw_limits_restore(llmgw_limits_t *t, const char *buf,
                                  apr_size_t len, apr_time_t now,
                                  int *restored, int *dropped,
                                  const char **why);

/* ---------------------------------------------------------------------
 * Several nodes, one budget: the glue adds each node's counts to
 * memcached counters (incr) on a short interval and brings the totals
 * back; see docs/limits.md for the protocol and the bound it gives.
 */

#define LLMGW_LIMITS_SYNC_KEY_MAX 64

typedef struct {
    char key[LLMGW_LIMITS_SYNC_KEY_MAX]; /* printable ASCII, no spaces:
                                             the glue adds its prefix */
    apr_uint64_t delta;                  /* incr by this (may be 0) */
    apr_uint64_t mark;                   /* this node's whole count the total
                                       includes after the incr */
    apr_int64_t expires;                 /* Unix seconds the counter should
                                       live until (memcached exptime) */
    /* private */
    apr_uint32_t index, gen;
    int counter;
    apr_int64_t period;
} llmgw_limits_sync_t;

/* Fills up to max items for the subjects from *cursor on (one per budget,
 * one for requests when rpm is set, one for tokens when tpm is), cursor
 * moved on. Returns the number filled; 0 when the walk is over (cursor
 * back to 0). */
int llmgw_limits_sync_collect(llmgw_limits_t *t, apr_uint32_t *cursor,
                              apr_time_t now, llmgw_limits_sync_t *items,
                              int max);
/* The cluster total memcached answered the incr of item with: this node
 * counts item->mark as synced and the rest (total - mark) as the other
 * nodes' usage: added to a budget's remote, or drained from a rate
 * bucket. An item of a period that has ended, or of a subject since
 * dropped, changes nothing. A total below mark (memcached lost the
 * counter) changes only the synced mark: see docs/limits.md. */
apr_status_t llmgw_limits_sync_apply(llmgw_limits_t *t,
                                     const llmgw_limits_sync_t *item,
                                     apr_uint64_t total, apr_time_t now);

/* ---------------------------------------------------------------------
 * The answer's headers and the 429.
 */

/* d (a duration, us) as OpenAI writes x-ratelimit-reset-*: Go's
 * duration text at millisecond precision, rounded up: "0s", "17ms",
 * "1s", "1.5s", "6m0s", "1h2m3s". buf of at least 32 bytes. */
const char *llmgw_limits_duration(char *buf, apr_size_t size, apr_time_t d);

/* Sets x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the
 * limits v has, and Retry-After when v refused, on h (r->headers_out or
 * err_headers_out). */
void llmgw_limits_headers(apr_table_t *h, const llmgw_limits_verdict_t *v);

/* The 429 of a refusal in OpenAI's shape (code rate_limit_exceeded, or
 * insufficient_quota for a spent budget), message from p; never names
 * the subject. Returns err->status. */
int llmgw_limits_error(apr_pool_t *p, const llmgw_limits_verdict_t *v,
                       llmgw_error_t *err);

/* The start of the period holding now, and of the next one. */
apr_time_t llmgw_limits_period_start(llmgw_period_t per, apr_time_t now,
                                     int next);

/* Tests only: at the n-th journaled write from now on (0: never), after
 * its journal entry and before the word itself, this process calls fn
 * (which stops it for the test to kill), to prove the journal. */
void llmgw_limits_crash_after(int n, void (*fn)(void));

#endif
