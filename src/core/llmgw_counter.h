/* llmgw_counter: a count in shared memory that several processes move by
 * one with compare-and-swap: up only below a bound, down never below 0
 * (a give-back that was never taken must not wrap it). */
#ifndef LLMGW_COUNTER_H
#define LLMGW_COUNTER_H

#include <apr.h>

/* Adds one unless *c is at max already (max <= 0: never): 1, or 0. */
static APR_INLINE int llmgw_counter_up(apr_int64_t *c, apr_int64_t max)
{
    apr_int64_t cur = __atomic_load_n(c, __ATOMIC_ACQUIRE);

    do {
        if (max <= 0 || cur >= max) {
            return 0;
        }
    } while (!__atomic_compare_exchange_n(c, &cur, cur + 1, 0,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    return 1;
}

/* Takes one off, never below 0. */
static APR_INLINE void llmgw_counter_down(apr_int64_t *c)
{
    apr_int64_t cur = __atomic_load_n(c, __ATOMIC_ACQUIRE);

    while (cur > 0
           && !__atomic_compare_exchange_n(
               c, &cur, cur - 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

#endif
