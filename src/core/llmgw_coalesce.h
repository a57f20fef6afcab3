/* llmgw_coalesce: identical deterministic requests in flight share one
 * upstream generation, through the shared store, across nodes too. */
#ifndef LLMGW_COALESCE_H
#define LLMGW_COALESCE_H

#include <apr_pools.h>

#include "llmgw_store.h"

typedef enum {
    LLMGW_CO_ALONE = 0, /* no coalescing: ask the backend ourselves */
    LLMGW_CO_LEADER,    /* we generate; others may follow */
    LLMGW_CO_FOLLOW,    /* a stream to tail, piece by piece */
    LLMGW_CO_CACHED,    /* the answer was in the cache already */
    LLMGW_CO_DONE,      /* a leader we waited for left the answer */
    LLMGW_CO_NO_STORE   /* the store failed: ask, and keep nothing */
} llmgw_co_role_t;

typedef struct llmgw_coalesce llmgw_coalesce_t;

/* Per child: what makes its generation names unique. */
void llmgw_coalesce_child_init(void);

/* The cache look-up of a request that may coalesce: returns the cached
 * answer (CACHED, DONE: in *val), or takes the lease and leads, or waits
 * for a leader under way until it has a first piece (streams) or is done.
 * A leader that fails before that is replaced by one of its followers. No
 * progress for 'timeout' means going alone. A stream follower that comes
 * when the first piece is no longer in the store waits for the answer. */
llmgw_co_role_t llmgw_coalesce_join(apr_pool_t *p, llmgw_store_t *st,
                                    const char *key, int stream,
                                    apr_interval_time_t timeout,
                                    llmgw_coalesce_t **c, char **val,
                                    apr_size_t *len);

/* Leader: publish the next piece of the stream (a chunk's JSON), with
 * 'kept', how many chunks the answer's record holds once it is added. */
void llmgw_coalesce_put(llmgw_coalesce_t *c, const char *data, apr_size_t len,
                        apr_size_t kept);
/* Leader: its client left; the generation goes on (logs it). */
void llmgw_coalesce_orphan(llmgw_coalesce_t *c);
/* Leader: the generation ended, well or not; stores the answer (the
 * record, or NULL) over the lease, then marks the end for the followers.
 * Also done by a cleanup of the join's pool (a request's: its parent
 * lives on) for leaders that never get there. */
void llmgw_coalesce_end(llmgw_coalesce_t *c, int ok, const char *record,
                        apr_size_t len);

/* Follower: the next piece (APR_SUCCESS), the end (APR_EOF), the leader's
 * failure (APR_EGENERAL), no progress in time (APR_TIMEUP), or a good end
 * with a piece that left the store before it was read (APR_INCOMPLETE:
 * the rest is in the stored answer, see llmgw_coalesce_rest). While the
 * leader writes later pieces, a lost one does not count as no progress.
 * APR_EAGAIN now and then while it waits: the answer may be stored with
 * its end mark gone; if llmgw_coalesce_rest has not this generation's
 * answer, call again. A piece is valid until the next call: a long stream
 * does not grow the pool. */
apr_status_t llmgw_coalesce_next(llmgw_coalesce_t *c, char **data,
                                 apr_size_t *len);
/* Follower, after APR_INCOMPLETE or APR_EAGAIN: the stored answer (as
 * llmgw_store_get) and in *kept how many of its record's chunks the pieces
 * read hold. */
apr_status_t llmgw_coalesce_rest(llmgw_coalesce_t *c, char **val,
                                 apr_size_t *len, apr_size_t *kept);

#endif
