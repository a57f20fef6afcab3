/* llmgw_group: grouping requests by model on a member that holds fewer
 * models at once than it is asked for (LLMCapacity models=N): the member's
 * N model slots, each serving one model at a time, in words of shared
 * memory that every child changes with compare-and-swap, never a lock.
 *
 * A request for model M joins a slot that serves M, or takes a free one
 * (nothing in flight for LLMGW_GROUP_IDLE); else it is held (the caller sleeps and steps
 * again). So a member serving X keeps serving X, and a request for Y
 * waits until a slot drains. So that X cannot starve Y, a held request
 * may claim a slot whose model has had it for `hold` while others wait:
 * the slot is then reserved for its model, admits nothing more, and when
 * its last request leaves, the first of the held requests for that model
 * takes it and the rest join it: one switch serves a batch. */
#ifndef LLMGW_GROUP_H
#define LLMGW_GROUP_H

#include <apr.h>
#include <apr_time.h>

#define LLMGW_GROUP_SLOTS 8 /* most model slots of a member */
/* How long a slot stays its model's after its last request left: a
 * client's next request for it comes within this, and a slot empty for
 * that moment is not yet another model's to take. */
#define LLMGW_GROUP_IDLE apr_time_from_msec(100)

/* A member's slots: each a word (the model's 32-bit hash, a reserved bit,
 * the count of its requests in flight) and when its model took it. */
typedef struct {
    apr_uint64_t word[LLMGW_GROUP_SLOTS];
    apr_int64_t since[LLMGW_GROUP_SLOTS];
    apr_uint64_t joins[LLMGW_GROUP_SLOTS]; /* requests of its turn */
    apr_int64_t left[LLMGW_GROUP_SLOTS];   /* when its last one left */
    apr_int64_t held;  /* requests held (the queue's count bound) */
    apr_uint64_t next; /* the model held first, its batch to come; 0 */
} llmgw_group_t;

/* The hash a model goes by in the slots (never 0). */
apr_uint32_t llmgw_group_hash(const char *model);

typedef enum {
    LLMGW_GROUP_JOINED = 0, /* in a slot: *slot to leave with */
    LLMGW_GROUP_HELD        /* another model has every slot: wait */
} llmgw_group_step_t;

/* One try of model hash h at g's first nslots slots (1..
 * LLMGW_GROUP_SLOTS) at time now: joins a slot serving h (not reserved
 * for another model), takes a free one, or one reserved for h that has
 * drained, or one reserved for longer than hold and drained (its model's
 * requests gave up); else, when a slot's model has had it for hold or
 * longer, reserves it for h, and answers HELD. */
llmgw_group_step_t llmgw_group_enter(llmgw_group_t *g, int nslots,
                                     apr_uint32_t h, apr_interval_time_t hold,
                                     apr_time_t now, int *slot);

/* A request that joined slot leaves it (exactly once) at now. */
void llmgw_group_leave(llmgw_group_t *g, int slot, apr_time_t now);

/* For the lbmethod at time now: whether a request for h would be held
 * (every slot serves another model, is reserved for one, or was left by
 * one less than LLMGW_GROUP_IDLE ago); *serving (may be NULL) gets 1
 * when a slot serves h (requests in flight, or left that lately), or
 * when h is the model held first or a slot is reserved for it
 * (the batch a request for h would join: a switch that costs nothing
 * more); *displaced (may be NULL) how many requests a second the model
 * it would displace gets in its turn (the least asked for is the one to
 * switch away from), 0 when not held. */
int llmgw_group_would_hold(const llmgw_group_t *g, int nslots, apr_uint32_t h,
                           apr_interval_time_t hold, apr_time_t now,
                           int *serving, apr_int64_t *displaced);

/* Counts a held request in g->held, unless max are held already: 1, or
 * 0 (the queue is full). llmgw_group_unhold takes it off again. */
int llmgw_group_hold(llmgw_group_t *g, apr_int64_t max);
void llmgw_group_unhold(llmgw_group_t *g);

#endif
