/* llmgw_limits_reset: an operator's reset of a subject's budgets (the
 * console's action): the period's usage back to nothing in one journaled
 * transaction, what is in flight kept, so the requests still out settle
 * as before and nothing is refunded twice. */
#include "llmgw_limits_int.h"

apr_status_t llmgw_limits_reset(llmgw_limits_t *t,
                                const llmgw_limits_subject_t *s,
                                apr_time_t now)
{
    subj_t *sj;
    int i;

    if (lm_lock(t) != APR_SUCCESS) {
        return APR_EGENERAL;
    }
    sj = lm_handle(t, s->index, s->gen);
    if (!sj) {
        lm_unlock(t);
        return APR_NOTFOUND;
    }
    for (i = 0; i < NB; i++) {
        budget_t *b = &sj->b[i];

        if (!b->conf) {
            continue;
        }
        /* The counts are of this period from here on, then nothing. */
        lm_roll(t, b, now);
        lm_jset(t, &b->used, 0);
        lm_jset(t, &b->remote, 0);
        lm_jset(t, &b->synced, 0);
    }
    lm_unlock(t);
    return APR_SUCCESS;
}
