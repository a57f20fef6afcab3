/* mod_llmgw_failover: commit-point failover. A request's attempts are
 * mod_proxy's handler run again on the same request, each on a member not
 * tried yet, then on LLMFallback's routes; the output filter holds the
 * answer until its commit point and asks here whether to drop it. */
#ifndef MOD_LLMGW_FAILOVER_H
#define MOD_LLMGW_FAILOVER_H

#include <util_filter.h>

#include "llmgw_breaker.h"
#include "mod_llmgw.h"

typedef struct llmgw_failover llmgw_failover_t;

void llmgw_failover_register(void);
/* pre_config: mod_proxy's hooks (looked up at run time: mod_proxy may be
 * loaded after this module). */
void llmgw_failover_pre_config(void);

/* The fixups hook hands ctx to mod_proxy on ctx->route with path: arms
 * the attempts (a route with LLMFailover off gets none). */
void llmgw_failover_arm(request_rec *r, llmgw_req_t *ctx, const char *path);

/* For the output filter. Each is a no-op for a request not armed. */

/* 1 while the answer is held: its commit point not reached, another
 * attempt still possible. */
int llmgw_failover_holding(const llmgw_req_t *ctx);
/* The attempt failed before its commit point (ev, why for the log).
 * Returns 1 when another attempt follows: the filter drops this one's
 * answer (nothing of it reached the client, the cache or followers);
 * 0 when this answer is the client's: it goes out as it is. */
int llmgw_failover_retry(request_rec *r, llmgw_req_t *ctx, llmgw_event_t ev,
                         const char *why);
/* 1 before the commit point (and the attempt not given up). */
int llmgw_failover_before_commit(const llmgw_req_t *ctx);
/* 1 once an attempt was given up: all it passes is dropped. */
int llmgw_failover_dropping(const llmgw_req_t *ctx);
/* The commit point: the first content delta of a stream, a plain
 * answer's end (or more of it than is held). The member is charged a
 * success; the between-token timeout starts. */
void llmgw_failover_commit(request_rec *r, llmgw_req_t *ctx);
/* The response headers came (r->status set): the first-token timeout
 * starts. */
void llmgw_failover_headers(request_rec *r, llmgw_req_t *ctx);
/* A stream's bytes were taken in (the between-token clock). */
void llmgw_failover_read(llmgw_req_t *ctx);
/* After the commit point: the answer broke (ev, or the between-token
 * timeout when it ran out); the member is charged. */
void llmgw_failover_broke(request_rec *r, llmgw_req_t *ctx, llmgw_event_t ev);

/* A piece of the stream for the record and followers: kept back while
 * holding (returns 1: kept); the caller sends it on otherwise. */
int llmgw_failover_defer_chunk(llmgw_req_t *ctx, const char *data,
                               apr_size_t len);
/* Keeps bb's buckets (set aside) while holding: returns 1. When more than
 * max would be held, the answer is the client's (committed): what was
 * held is put back before bb's buckets, to go out now; returns 0. */
int llmgw_failover_hold(ap_filter_t *f, llmgw_req_t *ctx,
                        apr_bucket_brigade *bb, apr_off_t max);
/* What is held, put before bb's buckets. */
void llmgw_failover_unhold(llmgw_req_t *ctx, apr_bucket_brigade *bb);

/* The pieces kept back, through fn, at the commit point. */
void llmgw_failover_flush_chunks(llmgw_req_t *ctx,
                                 void (*fn)(void *, const char *, apr_size_t),
                                 void *baton);

#endif
