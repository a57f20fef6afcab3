/* llmgw_breaker: the transitions, written as plain functions of values so
 * that each is a test case, and the 64-bit packing that lets the shared
 * table publish a whole state with one compare-and-swap. */
#include "llmgw_breaker.h"

static const char *const event_names[LLMGW_EV_COUNT] = {
    "success",
    "connect-error",
    "5xx",
    "timeout-first-byte",
    "timeout-first-token",
    "timeout-between-tokens",
    "bad-answer",
    "loading",
    "busy",
    "client-abort",
    "client-error",
    "probe-ok",
    "probe-fail",
};

int llmgw_event_is_failure(llmgw_event_t ev)
{
    switch (ev) {
    case LLMGW_EV_CONNECT_ERROR:
    case LLMGW_EV_HTTP_5XX:
    case LLMGW_EV_TIMEOUT_FIRST_BYTE:
    case LLMGW_EV_TIMEOUT_FIRST_TOKEN:
    case LLMGW_EV_TIMEOUT_BETWEEN_TOKENS:
    case LLMGW_EV_BAD_ANSWER:
    case LLMGW_EV_PROBE_FAIL: return 1;
    default: return 0;
    }
}

const char *llmgw_event_name(llmgw_event_t ev)
{
    return (unsigned)ev < LLMGW_EV_COUNT ? event_names[ev] : "unknown";
}

const char *llmgw_br_state_name(llmgw_br_state_t s)
{
    switch (s) {
    case LLMGW_BR_CLOSED: return "closed";
    case LLMGW_BR_OPEN: return "open";
    case LLMGW_BR_HALF_OPEN: return "half-open";
    default: return "unknown";
    }
}

void llmgw_breaker_params_default(llmgw_breaker_params_t *p)
{
    p->fails_to_open = 3;
    p->successes_to_close = 2;
    p->backoff = apr_time_from_sec(1);
    p->backoff_max = apr_time_from_sec(60);
    p->trial_timeout = apr_time_from_sec(30);
}

const char *llmgw_breaker_params_check(const llmgw_breaker_params_t *p)
{
    if (p->fails_to_open < 1 || p->fails_to_open > LLMGW_BR_MAX_FAILS) {
        return "failures to open must be 1 to 127";
    }
    if (p->successes_to_close < 1
        || p->successes_to_close > LLMGW_BR_MAX_SUCCESSES) {
        return "successes to close must be 1 to 31";
    }
    if (p->backoff < 1000 || p->backoff_max < p->backoff
        || p->backoff_max > LLMGW_BR_MAX_BACKOFF) {
        return "the back-off must be at least 1 ms, its maximum at least "
               "the back-off and at most a day";
    }
    if (p->trial_timeout < 1000 || p->trial_timeout > LLMGW_BR_MAX_BACKOFF) {
        return "the trial timeout must be 1 ms to a day";
    }
    return NULL;
}

apr_interval_time_t llmgw_breaker_backoff(unsigned opens,
                                          const llmgw_breaker_params_t *p)
{
    apr_interval_time_t d = p->backoff;

    while (opens-- > 1 && d < p->backoff_max) {
        d *= 2;
    }
    return d < p->backoff_max ? d : p->backoff_max;
}

llmgw_br_state_t llmgw_breaker_state(const llmgw_breaker_t *b, apr_time_t now)
{
    if (b->state == LLMGW_BR_OPEN && b->at <= now) {
        return LLMGW_BR_HALF_OPEN;
    }
    return b->state;
}

static llmgw_breaker_t closed(llmgw_breaker_t b)
{
    b.state = LLMGW_BR_CLOSED;
    b.fails = b.successes = b.opens = b.trial = 0;
    b.at = 0;
    return b;
}

static llmgw_breaker_t opened(llmgw_breaker_t b, apr_time_t now,
                              const llmgw_breaker_params_t *p)
{
    b.state = LLMGW_BR_OPEN;
    b.fails = b.successes = b.trial = 0;
    b.opens = b.opens < LLMGW_BR_MAX_OPENS ? b.opens + 1 : b.opens;
    b.at = now + llmgw_breaker_backoff(b.opens, p);
    return b;
}

/* An open breaker whose back-off is over, as the half-open one it is. */
static llmgw_breaker_t half_open(llmgw_breaker_t b)
{
    if (b.state == LLMGW_BR_OPEN) {
        b.state = LLMGW_BR_HALF_OPEN;
        b.successes = b.trial = 0;
    }
    return b;
}

static llmgw_breaker_t succeeded(llmgw_breaker_t b,
                                 const llmgw_breaker_params_t *p)
{
    if (++b.successes >= p->successes_to_close) {
        return closed(b);
    }
    return b;
}

static llmgw_breaker_t next_closed(llmgw_breaker_t b, llmgw_event_t ev,
                                   apr_time_t now,
                                   const llmgw_breaker_params_t *p)
{
    if (llmgw_event_is_failure(ev)) {
        if (++b.fails >= p->fails_to_open) {
            return opened(b, now, p);
        }
        /* p->fails_to_open <= LLMGW_BR_MAX_FAILS keeps it in its 7 bits */
    }
    else if (ev == LLMGW_EV_SUCCESS) {
        b.fails = 0;
    }
    return b;
}

static llmgw_breaker_t next_half_open(llmgw_breaker_t b, llmgw_event_t ev,
                                      int trial, apr_time_t now,
                                      const llmgw_breaker_params_t *p)
{
    b = half_open(b);
    if (ev == LLMGW_EV_PROBE_OK) {
        return succeeded(b, p);
    }
    if (ev == LLMGW_EV_PROBE_FAIL) {
        return opened(b, now, p);
    }
    if (!b.trial || trial != (int)b.gen) {
        return b; /* not the trial: sent before it opened */
    }
    b.trial = 0;
    b.at = 0;
    if (ev == LLMGW_EV_SUCCESS) {
        return succeeded(b, p);
    }
    if (llmgw_event_is_failure(ev)) {
        return opened(b, now, p);
    }
    return b; /* loading, busy, the client: nothing */
}

llmgw_breaker_t llmgw_breaker_next(llmgw_breaker_t b, llmgw_event_t ev,
                                   int trial, apr_time_t now,
                                   const llmgw_breaker_params_t *p)
{
    if ((unsigned)ev >= LLMGW_EV_COUNT) {
        return b;
    }
    switch (llmgw_breaker_state(&b, now)) {
    case LLMGW_BR_CLOSED: return next_closed(b, ev, now, p);
    case LLMGW_BR_HALF_OPEN: return next_half_open(b, ev, trial, now, p);
    default: return b; /* backing off: nothing counts */
    }
}

int llmgw_breaker_claim(llmgw_breaker_t b, apr_time_t now,
                        const llmgw_breaker_params_t *p, llmgw_breaker_t *next)
{
    if (llmgw_breaker_state(&b, now) != LLMGW_BR_HALF_OPEN) {
        return 0;
    }
    b = half_open(b);
    if (b.trial && b.at > now) {
        return 0; /* out, and not yet timed out */
    }
    b.trial = 1;
    b.gen = (b.gen + 1) & 15;
    b.at = now + p->trial_timeout;
    *next = b;
    return 1;
}

#define AT_BITS 40
#define AT_MAX ((APR_UINT64_C(1) << AT_BITS) - 1)

apr_uint64_t llmgw_breaker_pack(const llmgw_breaker_t *b, apr_time_t base)
{
    apr_uint64_t at = 0;

    if (b->state != LLMGW_BR_CLOSED && b->at > base) {
        /* Up to the next millisecond: a back-off never ends early. */
        at = (apr_uint64_t)(b->at - base + 999) / 1000;
        at = at > AT_MAX ? AT_MAX : at;
    }
    return ((apr_uint64_t)b->state & 3) | ((apr_uint64_t)(b->trial & 1) << 2)
           | ((apr_uint64_t)(b->gen & 15) << 3)
           | ((apr_uint64_t)(b->fails & 127) << 7)
           | ((apr_uint64_t)(b->successes & 31) << 14)
           | ((apr_uint64_t)(b->opens & 31) << 19) | (at << 24);
}

llmgw_breaker_t llmgw_breaker_unpack(apr_uint64_t w, apr_time_t base)
{
    llmgw_breaker_t b;

    b.state = (llmgw_br_state_t)(w & 3);
    if (b.state > LLMGW_BR_HALF_OPEN) {
        b.state = LLMGW_BR_OPEN; /* cannot be written; be safe */
    }
    b.trial = (unsigned)(w >> 2) & 1;
    b.gen = (unsigned)(w >> 3) & 15;
    b.fails = (unsigned)(w >> 7) & 127;
    b.successes = (unsigned)(w >> 14) & 31;
    b.opens = (unsigned)(w >> 19) & 31;
    b.at =
        b.state == LLMGW_BR_CLOSED ? 0 : base + (apr_time_t)(w >> 24) * 1000;
    return b;
}
