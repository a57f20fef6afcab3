/* llmgw_metrics: the gateway's request counters, shared by all processes:
 * per route and model, per balancer member, in total, and a ring of
 * per-second snapshots for the console's charts, in memory the caller
 * provides (nothing in it points, so any process may map it anywhere).
 *
 * Writers never lock: every count is one atomic add, a series is claimed
 * once with compare-and-swap, and a second's snapshot is written by one
 * writer at a time under a sequence counter that readers check (see
 * llmgw_seqlock.h). Counts are never lost: a snapshot a writer skips
 * (another one was writing it) shows up in the next second's. */
#ifndef LLMGW_METRICS_H
#define LLMGW_METRICS_H

#include <apr_pools.h>
#include <apr_time.h>
#include <json.h>

#include "llmgw_buf.h"

#define LLMGW_METRICS_LABEL_MAX 128   /* bytes of a label value, kept */
#define LLMGW_METRICS_SERIES 256      /* route and model pairs */
#define LLMGW_METRICS_MEMBERS 64      /* balancer and member pairs */
#define LLMGW_METRICS_STATUSES 12     /* HTTP statuses kept per series */
#define LLMGW_METRICS_BUCKETS 13      /* finite histogram bounds */
#define LLMGW_METRICS_SECONDS 300     /* seconds the charts cover */
#define LLMGW_METRICS_OTHER "(other)" /* the series of what did not fit */

/* What the request's cache look-up gave (the llm-cache note). */
typedef enum {
    LLMGW_CR_NONE = 0, /* no cache in use */
    LLMGW_CR_HIT,
    LLMGW_CR_MISS,
    LLMGW_CR_BYPASS,
    LLMGW_CR_COALESCED,
    LLMGW_CR_N
} llmgw_cache_result_t;

/* The result named by the note's text (HIT, MISS, ...); NONE for NULL or
 * any other text. */
llmgw_cache_result_t llmgw_metrics_cache_result(const char *note);
/* "hit", "miss", "bypass", "coalesced" (NONE: "none"). */
const char *llmgw_metrics_cache_name(llmgw_cache_result_t r);

/* The histograms' upper bounds in seconds (LLMGW_METRICS_BUCKETS of them,
 * then +Inf). */
extern const double llmgw_metrics_bounds[LLMGW_METRICS_BUCKETS];

/* One finished request, as the glue saw it at its end. Strings may be
 * NULL (none); longer than LLMGW_METRICS_LABEL_MAX, or with control
 * characters, they count under LLMGW_METRICS_OTHER. */
typedef struct {
    const char *route;
    const char *model;
    const char *balancer; /* the member that served it, if one did */
    const char *member;
    int status;         /* HTTP status sent */
    int error;          /* the gateway answered or ended it with an
                                   error (status >= 400 counts anyway) */
    apr_int64_t prompt; /* tokens, < 0: none reported */
    apr_int64_t completion;
    apr_int64_t saved; /* tokens the cache answered with */
    apr_interval_time_t duration;
    apr_interval_time_t ttft; /* < 0: no first token */
    llmgw_cache_result_t cache;
} llmgw_metrics_obs_t;

/* Counts of a series, of the total or of a span of seconds. */
typedef struct {
    apr_uint64_t requests;
    apr_uint64_t errors;
    apr_uint64_t prompt;
    apr_uint64_t completion;
    apr_uint64_t saved;
    apr_uint64_t cache[LLMGW_CR_N];
    apr_uint64_t duration[LLMGW_METRICS_BUCKETS + 1]; /* not cumulative */
    apr_uint64_t duration_us;
    apr_uint64_t ttft[LLMGW_METRICS_BUCKETS + 1];
    apr_uint64_t ttft_n;
    apr_uint64_t ttft_us;
} llmgw_metrics_counts_t;

/* One series as read. */
typedef struct {
    char a[LLMGW_METRICS_LABEL_MAX + 1]; /* route, or balancer */
    char b[LLMGW_METRICS_LABEL_MAX + 1]; /* model, or member */
    int status[LLMGW_METRICS_STATUSES];  /* 0: unused, -1: any other */
    apr_uint64_t status_n[LLMGW_METRICS_STATUSES];
    llmgw_metrics_counts_t c;
} llmgw_metrics_series_t;

typedef enum {
    LLMGW_MT_MODELS = 0, /* by route and model */
    LLMGW_MT_MEMBERS     /* by balancer and member */
} llmgw_metrics_table_t;

typedef struct llmgw_metrics llmgw_metrics_t;

/* Bytes the counters take. */
apr_size_t llmgw_metrics_size(void);
/* Lays new counters out in mem (size bytes, 8-byte aligned, any content).
 * NULL if size is too small. */
llmgw_metrics_t *llmgw_metrics_init(void *mem, apr_size_t size,
                                    apr_time_t now);
/* The counters llmgw_metrics_init laid out in mem, kept across a restart
 * (counted: llmgw_metrics_restarts), or NULL if mem holds none of this
 * version and size. */
llmgw_metrics_t *llmgw_metrics_attach(void *mem, apr_size_t size);
/* When the counters started, and the restarts they survived. */
apr_time_t llmgw_metrics_started(const llmgw_metrics_t *m);
apr_uint64_t llmgw_metrics_restarts(const llmgw_metrics_t *m);

/* Counts one finished request: in its route and model's series, its
 * member's (when it has one), the total and the current second. */
void llmgw_metrics_record(llmgw_metrics_t *m, const llmgw_metrics_obs_t *o,
                          apr_time_t now);

/* The series of table at *cursor or after it (start at 0), *cursor moved
 * past it: 0 when there is none left. */
int llmgw_metrics_next(const llmgw_metrics_t *m, llmgw_metrics_table_t table,
                       unsigned *cursor, llmgw_metrics_series_t *out);
/* The series of table named a, b; 0 if there is none. */
int llmgw_metrics_find(const llmgw_metrics_t *m, llmgw_metrics_table_t table,
                       const char *a, const char *b,
                       llmgw_metrics_series_t *out);
/* The counts of every series of table whose first label is a (a route's
 * models, a balancer's members), added up into c. */
void llmgw_metrics_sum(const llmgw_metrics_t *m, llmgw_metrics_table_t table,
                       const char *a, llmgw_metrics_counts_t *c);
/* Every request counted since the start. */
void llmgw_metrics_total(const llmgw_metrics_t *m, llmgw_metrics_counts_t *c);
/* What the seconds (now - secs, now] counted (secs up to
 * LLMGW_METRICS_SECONDS - 1): per second into each[0..secs) (oldest
 * first; NULL: not wanted), their sum into sum. */
void llmgw_metrics_window(const llmgw_metrics_t *m, apr_time_t now, int secs,
                          llmgw_metrics_counts_t *each,
                          llmgw_metrics_counts_t *sum);

/* The q-quantile (0 < q < 1) of a histogram (LLMGW_METRICS_BUCKETS + 1
 * counts), in seconds, interpolated in its bucket as Prometheus'
 * histogram_quantile does; -1 when it counted nothing. */
double llmgw_metrics_quantile(const apr_uint64_t *hist, double q);

/* ---------------------------------------------------------------------
 * Renderers
 */

/* The counters as the status model's members, added to status:
 * "started", "restarts", "total", "last_minute" (counts, rates, p50 and
 * p95), "chart" (per second, the last secs), "models" and
 * "member_stats" (arrays of series). docs/console.md has the shape. */
void llmgw_metrics_json(const llmgw_metrics_t *m, apr_time_t now, int secs,
                        json_object *status);
/* The counts of c as a JSON object (requests, errors, tokens, cache). */
json_object *llmgw_metrics_counts_json(const llmgw_metrics_counts_t *c);

/* The counters in Prometheus text (0.0.4), appended to b in p:
 * llmgw_requests_total, llmgw_tokens_total, llmgw_request_duration_seconds,
 * llmgw_ttft_seconds, llmgw_cache_requests_total,
 * llmgw_cache_saved_tokens_total, llmgw_member_requests_total. */
void llmgw_metrics_prom(const llmgw_metrics_t *m, apr_pool_t *p,
                        llmgw_pbuf_t *b);

/* Prometheus text pieces for what others own: a family's HELP and TYPE,
 * and one sample with n labels (values escaped here). */
void llmgw_prom_family(apr_pool_t *p, llmgw_pbuf_t *b, const char *name,
                       const char *type, const char *help);
void llmgw_prom_sample(apr_pool_t *p, llmgw_pbuf_t *b, const char *name, int n,
                       const char *const *label, const char *const *value,
                       double v);

#endif
