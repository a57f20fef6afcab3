/* llmgw_breaker: the circuit breaker of one balancer member as a value.
 * Every transition is a pure function of (state, event, now); the shared
 * table (llmgw_health) publishes each result with one compare-and-swap
 * of the packed 64-bit word, so every httpd child sees the same state. */
#ifndef LLMGW_BREAKER_H
#define LLMGW_BREAKER_H

#include <apr.h>
#include <apr_time.h>

typedef enum {
    LLMGW_BR_CLOSED = 0, /* traffic flows; failures are counted */
    LLMGW_BR_OPEN,       /* backing off: no traffic at all */
    LLMGW_BR_HALF_OPEN   /* one trial request at a time */
} llmgw_br_state_t;

/* What happened to a request on a member, or to a probe of it. */
typedef enum {
    LLMGW_EV_SUCCESS = 0,   /* past its commit point (or done) */
    LLMGW_EV_CONNECT_ERROR, /* refused, reset, unreachable */
    LLMGW_EV_HTTP_5XX,      /* a 5xx other than "loading" */
    LLMGW_EV_TIMEOUT_FIRST_BYTE,
    LLMGW_EV_TIMEOUT_FIRST_TOKEN,
    LLMGW_EV_TIMEOUT_BETWEEN_TOKENS,
    LLMGW_EV_BAD_ANSWER,   /* cut, or not what the API says */
    LLMGW_EV_LOADING,      /* 503 "Loading model", a cold load */
    LLMGW_EV_BUSY,         /* 429, no free slot */
    LLMGW_EV_CLIENT_ABORT, /* the client went away */
    LLMGW_EV_CLIENT_ERROR, /* a 4xx: the request's own fault */
    LLMGW_EV_PROBE_OK,     /* an active probe was answered */
    LLMGW_EV_PROBE_FAIL,   /* an active probe failed */
    LLMGW_EV_COUNT
} llmgw_event_t;

/* 1 for the events that count against a member: connect errors, 5xx,
 * timeouts, bad answers, failed probes. Loading, busy, a client's abort
 * or error never do. */
int llmgw_event_is_failure(llmgw_event_t ev);
const char *llmgw_event_name(llmgw_event_t ev);
const char *llmgw_br_state_name(llmgw_br_state_t s);

/* Limits of what the packed word holds. */
#define LLMGW_BR_MAX_FAILS 127
#define LLMGW_BR_MAX_SUCCESSES 31
#define LLMGW_BR_MAX_OPENS 31
#define LLMGW_BR_MAX_BACKOFF apr_time_from_sec(86400)

typedef struct {
    unsigned fails_to_open;            /* N failures in a row open it */
    unsigned successes_to_close;       /* M successes in half-open close it */
    apr_interval_time_t backoff;       /* open this long the first time, */
    apr_interval_time_t backoff_max;   /* doubling each time up to this */
    apr_interval_time_t trial_timeout; /* a trial not reported by then
                                         * is given to another request */
} llmgw_breaker_params_t;

/* 3 failures, 2 successes, back-off 1 s doubling to 60 s, trial 30 s. */
void llmgw_breaker_params_default(llmgw_breaker_params_t *p);
/* NULL if p is within the limits above, else why not (static text). */
const char *llmgw_breaker_params_check(const llmgw_breaker_params_t *p);

typedef struct {
    llmgw_br_state_t state;
    unsigned fails;     /* closed: failures in a row */
    unsigned successes; /* half-open: successes so far */
    unsigned opens;     /* times opened since last closed */
    unsigned trial;     /* half-open: 1 while a trial is out */
    unsigned gen;       /* the trial's number, mod 16 */
    apr_time_t at;      /* open: when the back-off ends;
                                 * half-open with a trial: when the
                                 * trial times out; closed: 0 */
} llmgw_breaker_t;

/* The token of a request that holds no trial. */
#define LLMGW_BR_NO_TRIAL (-1)

/* The state as of now: an open breaker whose back-off is over is
 * half-open (without a trial) even before anything touched it. */
llmgw_br_state_t llmgw_breaker_state(const llmgw_breaker_t *b, apr_time_t now);

/* The breaker after event ev of a request holding trial token 'trial'
 * (LLMGW_BR_NO_TRIAL for one that holds none), at now:
 * closed: a failure adds one (N in a row open it), a success resets;
 * open: nothing counts until the back-off is over;
 * half-open: the trial's success adds one (M close it), its failure
 * opens again with twice the back-off, its loading, busy, abort or
 * client error hands the trial back; a probe's answer counts as a
 * success, its failure opens; what other requests report is ignored
 * (they were sent before). */
llmgw_breaker_t llmgw_breaker_next(llmgw_breaker_t b, llmgw_event_t ev,
                                   int trial, apr_time_t now,
                                   const llmgw_breaker_params_t *p);

/* Whether a request may take the trial now: 1 and *next (the breaker
 * with the trial out, its token in next->gen), else 0. Closed breakers
 * need no trial and give 0. */
int llmgw_breaker_claim(llmgw_breaker_t b, apr_time_t now,
                        const llmgw_breaker_params_t *p,
                        llmgw_breaker_t *next);

/* The back-off of the opens'th opening in a row (opens >= 1). */
apr_interval_time_t llmgw_breaker_backoff(unsigned opens,
                                          const llmgw_breaker_params_t *p);

/* The breaker in 64 bits: state 2, trial 1, gen 4, fails 7, successes 5,
 * opens 5, and 40 for 'at' in milliseconds since base (34 years), rounded
 * up so a back-off never ends early. */
apr_uint64_t llmgw_breaker_pack(const llmgw_breaker_t *b, apr_time_t base);
llmgw_breaker_t llmgw_breaker_unpack(apr_uint64_t w, apr_time_t base);

#endif
