/* llmgw_affinity: the scoring of the llm_affinity lbmethod, as a pure
 * function over a small array the glue fills from the balancer's workers
 * and the health table: prefer members that have the model loaded, then
 * the least loaded; spread a model only when its queue grows; knowing
 * nothing, choose as mod_lbmethod_bybusyness does. */
#ifndef LLMGW_AFFINITY_H
#define LLMGW_AFFINITY_H

#include <apr.h>

#include "llmgw_probe.h"

/* What a member is for the requested model. */
typedef enum {
    LLMGW_AFF_UNKNOWN = 0, /* nothing known: maybe there, maybe not */
    LLMGW_AFF_LOADED,      /* loaded (a probe) or served it lately */
    LLMGW_AFF_LOADING,     /* being loaded there now */
    LLMGW_AFF_COLD,        /* there, not loaded: a load first */
    LLMGW_AFF_ABSENT       /* not there: never chosen */
} llmgw_aff_model_t;

typedef struct {
    int usable;           /* 0: never chosen (mod_proxy says not
                                 * usable, draining, breaker open or
                                 * its trial taken) */
    llmgw_hstate_t state; /* READY, BUSY, LOADING (DOWN: never) */
    llmgw_aff_model_t model;
    apr_int64_t inflight;    /* requests in flight to it */
    apr_int64_t slots_total; /* -1 unknown */
    apr_int64_t slots_busy;  /* -1 unknown */
    apr_int64_t waiting;     /* its own queue; -1 unknown */
    apr_int64_t capacity;    /* a configured maximum; 0 none */
    int lbfactor;            /* proxy_worker_shared's: 100 x httpd.conf's */
    int lbstatus;            /* in and out: proxy_worker_shared's */
    /* What else it holds (from the health table's hints): */
    apr_int64_t others; /* requests lately for the other models it has
                         * loaded or is loading, in 1/256ths, decayed:
                         * what loading this one there would displace */
    int loading_other;  /* it is loading another model (a hint, its
                         * probes, or llama.cpp's "Loading model") */
    int resident;       /* models it has loaded or is loading, by the
                         * hints; 0 unknown */
    int model_slots;    /* models it holds at once (LLMCapacity
                         * models=N); 0 unknown */
    /* Grouping by model (LLMCapacity models=N), else both 0: */
    int serving;           /* its model slots serve the model now */
    int held;              /* every slot serves another model: it would wait */
    apr_int64_t displaced; /* held: requests a second of the model it
                            * would switch away from */
} llmgw_aff_member_t;

typedef struct {
    /* The queue on the best member with the model loaded beyond which a
     * less loaded member without it may take the request. */
    apr_int64_t spread_queue;
    /* Requests a member serves at once when nothing says (no slots, no
     * configured maximum): Ollama's OLLAMA_NUM_PARALLEL default is 1. */
    apr_int64_t default_capacity;
} llmgw_aff_params_t;

/* spread_queue 2, default_capacity 1. */
void llmgw_affinity_params_default(llmgw_aff_params_t *p);

/* What the table knows of *m when it knows nothing: state st, the model
 * unknown, nothing in flight, slots and queue unknown, no other models.
 * The fields mod_proxy fills (usable, capacity, lbfactor, lbstatus) are
 * left as they are. */
void llmgw_affinity_unknown(llmgw_aff_member_t *m, llmgw_hstate_t st);

/* The load of a member as a comparable number: requests in flight or in
 * its queue per 1024ths of its capacity. */
apr_int64_t llmgw_affinity_load(const llmgw_aff_member_t *m,
                                const llmgw_aff_params_t *p);
/* Requests waiting at the member (its queue, or what is in flight past
 * its capacity). */
apr_int64_t llmgw_affinity_queue(const llmgw_aff_member_t *m,
                                 const llmgw_aff_params_t *p);

/* The index of the member to send the request to, or -1 when none is
 * usable. The rules, in order:
 * - A member with the model loaded, unless its queue is over spread_queue
 *   and a member without it is less loaded (spreading: only a queue
 *   moves a model onto a second member). That it is loading another
 *   model X (a hint, its probes, llama.cpp's "Loading model") does not
 *   count against it: Ollama and the emulated member serve a loaded
 *   model while they load another beside it. Unless X has no room
 *   beside it: when the member's model slots are known (model_slots)
 *   and the models resident or loading there fill them, X's load
 *   unloads the least recently used one, so the model's requests go
 *   there only as a last resort (they would keep reloading it, evicting
 *   X in turn).
 * - Else one loading it (queue within bound).
 * - Else one where it is cold or unknown and that is ready; among those
 *   first the ones within the queue bound, then the one where it
 *   displaces the least: whose other models were asked the least lately
 *   (others; an idle member displaces nothing), so that a model loaded
 *   nowhere does not go onto the member serving the most asked model
 *   while another member can take it.
 * - Else a busy or loading member, or one where the request would be
 *   held for another model's turn; among those first one that still has
 *   the model loaded (no load now).
 * A member whose slots serve the model counts as having it loaded; one
 * that would hold it, as a last resort whatever its probes say (it is
 * switching models); among those, the one whose model it would displace
 * is the least asked for. Among equals the least loaded; among those the
 * highest lbstatus. Every usable member's lbstatus grows by its lbfactor
 * and the chosen one's shrinks by their sum, as bybusyness does, so that
 * equals take turns by lbfactor; knowing nothing (no hints, no probes),
 * the choice is bybusyness's. */
int llmgw_affinity_pick(llmgw_aff_member_t *m, int n,
                        const llmgw_aff_params_t *p);

#endif
