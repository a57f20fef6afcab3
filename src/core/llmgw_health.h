/* llmgw_health: the health of every balancer member, shared by all httpd
 * children: its circuit breaker, what its probes last said (state, slots,
 * queue, models), which models it served lately, and its admission
 * counters. Laid out in memory the caller provides (shared memory, mapped
 * anywhere in each process: nothing in it points); what several
 * processes write is published with atomic operations, never a lock. */
#ifndef LLMGW_HEALTH_H
#define LLMGW_HEALTH_H

#include <apr.h>
#include <apr_time.h>

#include "llmgw_affinity.h"
#include "llmgw_breaker.h"
#include "llmgw_group.h"
#include "llmgw_probe.h"

#define LLMGW_HEALTH_NAME_MAX 384   /* a worker's name_ex, with its NUL */
#define LLMGW_HEALTH_MODELS 32      /* models kept per member */
#define LLMGW_HEALTH_MODEL_NAME 160 /* longest model name kept, with NUL */
#define LLMGW_HEALTH_HINTS 8        /* models recently seen per member */

/* A model's flags besides LLMGW_PM_* (llmgw_probe.h). */
#define LLMGW_HM_SERVED 0x10 /* served it lately */

typedef struct llmgw_health llmgw_health_t;

/* Bytes a table of n members takes. */
apr_size_t llmgw_health_size(unsigned nmembers);

/* Lays a table for nmembers out in mem (size bytes, 8-byte aligned,
 * zeroed); now is the origin of its clock. NULL if size is too small. */
llmgw_health_t *llmgw_health_init(void *mem, apr_size_t size,
                                  unsigned nmembers, apr_time_t now);

/* The table llmgw_health_init laid out in mem (in any process), or NULL
 * if mem does not hold one that fits size. */
llmgw_health_t *llmgw_health_attach(void *mem, apr_size_t size);

/* Registers a member by its worker name (proxy_worker_shared.name_ex),
 * before the children start. Its index; the same one for a name already
 * there (its state kept); -1 when the table is full or the name is empty
 * or too long. */
int llmgw_health_add(llmgw_health_t *t, const char *name);
/* The same for a member added at run time, from any process at any time
 * (the entries the table has beyond those added at start are for them):
 * a new name takes a free entry, which every process finds from then on;
 * a name already there (a member removed and added again) takes its
 * entry back with the state of a new member: breaker closed, no hints,
 * what its probes stored before now unknown, no probe set of its own.
 * Its epoch moves either way. Two joins of one name at the same moment
 * may take two entries: llmgw_health_find gives the first. */
int llmgw_health_join(llmgw_health_t *t, const char *name, apr_time_t now);
/* Entries not taken yet. */
unsigned llmgw_health_free(const llmgw_health_t *t);
/* How many times member m was joined (1 after its first); 0 for none:
 * a process that keeps something of its own per member learns again
 * when it moves. */
unsigned llmgw_health_epoch(const llmgw_health_t *t, int m);
/* The index of a member, or -1. */
int llmgw_health_find(const llmgw_health_t *t, const char *name);
/* Entries taken (some of them may not show their name yet). */
unsigned llmgw_health_count(const llmgw_health_t *t);
/* A member's name (in the table), NULL for no such member or one whose
 * name is not published yet. */
const char *llmgw_health_name(const llmgw_health_t *t, int m);

/* Member m's own probe set (n kinds, at most LLMGW_PROBE_SET_MAX), for
 * every process; n 0 clears it. */
void llmgw_health_set_probes(llmgw_health_t *t, int m,
                             const llmgw_probe_kind_t *kinds, int n);
/* Its kinds into kinds (LLMGW_PROBE_SET_MAX of room); how many, 0 for
 * none of its own. */
int llmgw_health_probes(const llmgw_health_t *t, int m,
                        llmgw_probe_kind_t *kinds);

/* Zeroes the admission counters: the glue calls it when no request can
 * be in flight (a restart), since a process that died holding a claim
 * never gave it back. */
void llmgw_health_reset_counts(llmgw_health_t *t);

/* Member m's model slots (llmgw_group), or NULL for no such member. */
llmgw_group_t *llmgw_health_group(llmgw_health_t *t, int m);

/* ---- the breaker ----------------------------------------------------- */

/* Member m's breaker as of now (open turns half-open by itself). */
llmgw_breaker_t llmgw_health_breaker(const llmgw_health_t *t, int m);

/* Applies event ev of a request holding trial token 'trial' (or
 * LLMGW_BR_NO_TRIAL) with llmgw_breaker_next and publishes the result;
 * *before and *after (either may be NULL) get the states it went from
 * and to. 1 if the state (closed/open/half-open) changed, 0 if not, -1
 * for no such member. */
int llmgw_health_event(llmgw_health_t *t, int m, llmgw_event_t ev, int trial,
                       apr_time_t now, const llmgw_breaker_params_t *bp,
                       llmgw_breaker_t *before, llmgw_breaker_t *after);

/* Takes member m's trial if it is half-open and the trial is free: 1 and
 * *token (to give back with the request's event), else 0. Exactly one
 * caller, in whichever process, gets each trial. */
int llmgw_health_claim(llmgw_health_t *t, int m, apr_time_t now,
                       const llmgw_breaker_params_t *bp, int *token);

/* ---- what probes and requests tell ---------------------------------- */

typedef struct {
    apr_interval_time_t fresh;       /* probe facts older are unknown */
    apr_interval_time_t hint_ttl;    /* how long "served lately" holds */
    apr_interval_time_t loading_ttl; /* how long a "loading" hint holds */
    apr_int64_t busy_queue;          /* a queue this long makes it busy;
                                     * 0: only full slots do */
} llmgw_health_params_t;

/* fresh 30 s, hint 5 min (Ollama's keep_alive), loading 2 min, busy
 * queue 4. */
void llmgw_health_params_default(llmgw_health_params_t *p);

/* Stores what a probe found about member m: the facts r establishes
 * (r->knows) replace the member's, the others stay. Models that do not
 * fit (LLMGW_HEALTH_MODELS, LLMGW_HEALTH_MODEL_NAME) are left out, loaded
 * ones last. One writer per member at a time (the watchdog probes a
 * member after the other); readers never wait. The number of models left
 * out, or -1 for no such member. */
int llmgw_health_store(llmgw_health_t *t, int m, const llmgw_probe_t *r,
                       apr_time_t now);

/* The event a probe's result is for the breaker: PROBE_OK for an answer
 * that reads (ready or busy), LOADING, or PROBE_FAIL. */
llmgw_event_t llmgw_probe_event(const llmgw_probe_t *r);

/* The event for a backend's answer by its status (and body, read in p):
 * 503 with llama.cpp's "Loading model" is LOADING, 429 and Ollama's 503
 * "server busy" BUSY, another 5xx HTTP_5XX, another 4xx CLIENT_ERROR,
 * else SUCCESS. */
llmgw_event_t llmgw_status_event(apr_pool_t *p, int status, const char *body,
                                 apr_size_t len);

typedef enum {
    LLMGW_HINT_SERVED = 1, /* it answered for the model */
    LLMGW_HINT_LOADING,    /* a request for it waits on a load */
    LLMGW_HINT_CLEAR       /* forget that it served the model (a
                            * loading hint stays: a probe does not list
                            * a model being loaded) */
} llmgw_hint_t;

/* Notes what a request showed of model on member m. Any process; a race
 * may lose a hint, never corrupt the table. */
void llmgw_health_hint(llmgw_health_t *t, int m, const char *model,
                       llmgw_hint_t kind, apr_time_t now);

/* Counts one request llm_affinity sent to member m for model, in the
 * model's hint there (none: nothing counted, unless loaded: the probes
 * saw it there, then it gets a "served" hint), decayed by halves every
 * few seconds: what a load of another model there would displace
 * (llmgw_health_affinity's 'others'). Any process; a race may lose a
 * count. */
void llmgw_health_asked(llmgw_health_t *t, int m, const char *model,
                        int loaded, apr_time_t now);

/* A timeout to the first byte or token while the model was loading on
 * that member (a probe or a hint says so) is LOADING, not a failure;
 * other events stay as they are. */
llmgw_event_t llmgw_health_classify(const llmgw_health_t *t, int m,
                                    llmgw_event_t ev, const char *model,
                                    apr_time_t now,
                                    const llmgw_health_params_t *hp);

/* ---- views ----------------------------------------------------------- */

typedef struct {
    llmgw_hstate_t state; /* DOWN while the breaker is not closed;
                                 * else LOADING, BUSY or READY */
    llmgw_breaker_t breaker;
    llmgw_br_state_t br_state; /* as of now */
    int trial_free;            /* half-open and its trial not taken */
    apr_int64_t inflight;      /* admitted and not yet released */
    apr_int64_t waiters;       /* waiting for admission */
    apr_int64_t slots_total;   /* -1: unknown or not fresh */
    apr_int64_t slots_busy;
    apr_int64_t running;
    apr_int64_t waiting;
    double kv_usage;            /* -1: unknown or not fresh */
    apr_time_t probed_at;       /* the last probe stored; 0: none */
    llmgw_hstate_t probe_state; /* what that probe said */
    int probe_ok;
    int models; /* models kept */
} llmgw_member_view_t;

/* A member as of now; 0, or -1 for no such member. */
int llmgw_health_member(const llmgw_health_t *t, int m, apr_time_t now,
                        const llmgw_health_params_t *hp,
                        llmgw_member_view_t *v);

/* The state of model on member m: DOWN with the member, LOADING while
 * it loads there, ABSENT when a fresh list of the member's models lacks
 * it, else the member's state. *flags (may be NULL) gets its fresh
 * LLMGW_PM_* and LLMGW_HM_SERVED. */
llmgw_hstate_t llmgw_health_model(const llmgw_health_t *t, int m,
                                  const char *model, apr_time_t now,
                                  const llmgw_health_params_t *hp,
                                  unsigned *flags);

typedef struct {
    char name[LLMGW_HEALTH_MODEL_NAME];
    unsigned flags;        /* LLMGW_PM_*, as last stored */
    apr_int64_t size_vram; /* -1 unknown */
    apr_time_t expires_at; /* 0 unknown */
    apr_int64_t running;   /* -1 unknown */
    apr_int64_t waiting;
    double kv_usage; /* -1 unknown */
} llmgw_health_model_t;

/* Copies member m's models (at most max) for display; how many, or -1
 * if there is no such member or its probe kept changing them. */
int llmgw_health_models(const llmgw_health_t *t, int m,
                        llmgw_health_model_t *out, int max);

/* Fills what the table knows of member m for the llm_affinity choice of
 * model: state, model, inflight, slots, waiting, and from the hints of
 * the other models there others, loading_other and resident; usable,
 * capacity, model_slots, lbfactor and lbstatus are the caller's. A member open, or half-open
 * with its trial taken, is DOWN; half-open with the trial free, it
 * counts by its probes: the caller claims the trial (llmgw_health_claim)
 * once it picked it, and picks again without it if the claim fails. */
void llmgw_health_affinity(const llmgw_health_t *t, int m, const char *model,
                           apr_time_t now, const llmgw_health_params_t *hp,
                           llmgw_aff_member_t *out);

/* ---- admission ------------------------------------------------------- */

/* How many requests member m may have in flight: the configured maximum
 * if there is one (> 0), else its slots as a fresh probe counted them;
 * while a fresh probe shows vLLM queueing, no more than are in flight
 * (at least 1). 0: no limit. */
apr_int64_t llmgw_health_limit(const llmgw_health_t *t, int m,
                               apr_int64_t configured, apr_time_t now,
                               const llmgw_health_params_t *hp);

/* Claims one of member m's places (limit 0: no limit): 1, or 0 when all
 * limit are taken. Every claim is released exactly once. */
int llmgw_health_admit(llmgw_health_t *t, int m, apr_int64_t limit);
void llmgw_health_release(llmgw_health_t *t, int m);

typedef enum {
    LLMGW_ADMIT_GO = 0, /* claimed: send it */
    LLMGW_ADMIT_WAIT,   /* in the queue: sleep a little, again */
    LLMGW_ADMIT_FULL,   /* the queue is full: 503/429 now */
    LLMGW_ADMIT_TIMEOUT /* waited until the deadline: 503/429 */
} llmgw_admit_t;

/* One step of a bounded wait for a place on member m. *queued starts at
 * 0 and is kept by the step: a request joins the queue (at most
 * max_waiters) when no place is free or others already wait (they come
 * first), and leaves it on GO or TIMEOUT. The caller sleeps between
 * WAIT steps and calls llmgw_health_admit_cancel if it gives up. */
llmgw_admit_t llmgw_health_admit_step(llmgw_health_t *t, int m,
                                      apr_int64_t limit,
                                      apr_int64_t max_waiters,
                                      apr_time_t deadline, apr_time_t now,
                                      int *queued);
void llmgw_health_admit_cancel(llmgw_health_t *t, int m, int *queued);

/* ---- mod_proxy's view ------------------------------------------------ */

/* What the glue mirrors into the worker's status flags. HC_FAIL makes a
 * worker unusable for everything (ap_proxy_acquire_connection refuses
 * it); DRAIN only keeps the stock lbmethods away (their choice skips
 * draining workers) while a request sent to it still connects: so the
 * half-open member's one trial, chosen by llm_affinity or sent to it
 * directly, can reach it and nothing else does. */
#define LLMGW_MIRROR_FAIL 0x1  /* open: HC_FAIL ('C') */
#define LLMGW_MIRROR_DRAIN 0x2 /* half-open, or loading: DRAIN ('N') */

/* The flags member view v calls for; drain_loading: mark a loading
 * member draining too, so that lbmethods other than llm_affinity route
 * around it. */
unsigned llmgw_health_mirror_want(const llmgw_member_view_t *v,
                                  int drain_loading);

/* Records want as what member m's worker shows and gives the flags to
 * set and to clear (only those the gateway set itself are ever
 * cleared). Returns what was recorded before; 0 for no such member. */
unsigned llmgw_health_mirror_swap(llmgw_health_t *t, int m, unsigned want,
                                  unsigned *set, unsigned *clear);

#endif
