/* llmgw_affinity: members fall into tiers by what they know of the model
 * (loaded, loading, cold, last resort); the best of each tier is found in
 * one pass, then a few rules choose between tiers. A cold load costs
 * seconds where a queue costs a request's time, so only a long queue on
 * the warm member sends the model elsewhere. */
#include "llmgw_affinity.h"

typedef enum {
    T_WARM = 0, /* has it loaded */
    T_WARMING,  /* is loading it */
    T_COLD,     /* ready, would load it (or might) */
    T_LAST,     /* busy or loading something else */
    T_TIERS,
    T_NONE = T_TIERS /* not a candidate */
} tier_t;

void llmgw_affinity_params_default(llmgw_aff_params_t *p)
{
    p->spread_queue = 2;
    p->default_capacity = 1;
}

void llmgw_affinity_unknown(llmgw_aff_member_t *m, llmgw_hstate_t st)
{
    m->state = st;
    m->model = LLMGW_AFF_UNKNOWN;
    m->inflight = 0;
    m->slots_total = m->slots_busy = m->waiting = -1;
    m->others = 0;
    m->loading_other = m->resident = 0;
}

static apr_int64_t capacity(const llmgw_aff_member_t *m,
                            const llmgw_aff_params_t *p)
{
    if (m->slots_total > 0) {
        return m->slots_total;
    }
    if (m->capacity > 0) {
        return m->capacity;
    }
    return p->default_capacity > 0 ? p->default_capacity : 1;
}

/* What occupies the member: the gateway's requests or what its slots
 * show (other clients' too), whichever is more. */
static apr_int64_t used(const llmgw_aff_member_t *m)
{
    apr_int64_t u = m->inflight > 0 ? m->inflight : 0;

    return m->slots_busy > u ? m->slots_busy : u;
}

apr_int64_t llmgw_affinity_load(const llmgw_aff_member_t *m,
                                const llmgw_aff_params_t *p)
{
    apr_int64_t u = used(m) + (m->waiting > 0 ? m->waiting : 0);

    return u * 1024 / capacity(m, p);
}

apr_int64_t llmgw_affinity_queue(const llmgw_aff_member_t *m,
                                 const llmgw_aff_params_t *p)
{
    apr_int64_t over;

    /* A server that queues itself (vLLM) knows its queue best. */
    if (m->waiting >= 0) {
        return m->waiting;
    }
    over = used(m) - capacity(m, p);
    return over > 0 ? over : 0;
}

/* Whether the member's load of another model unloads this one: its model
 * slots are known and full. Unknown slots: the server has room (Ollama
 * and the emulated member keep a loaded model while they load another
 * beside it, and unload only past their limit). */
static int evicted(const llmgw_aff_member_t *m)
{
    return m->loading_other && m->model_slots > 0
           && m->resident > m->model_slots;
}

static tier_t tier(const llmgw_aff_member_t *m)
{
    int ready = m->state == LLMGW_HS_READY || m->state == LLMGW_HS_UNKNOWN;

    if (!m->usable || m->model == LLMGW_AFF_ABSENT || m->state == LLMGW_HS_DOWN
        || m->state == LLMGW_HS_ABSENT) {
        return T_NONE;
    }
    if (m->serving) {
        return T_WARM;
    }
    if (m->held) {
        return T_LAST;
    }
    switch (m->model) {
    case LLMGW_AFF_LOADED: return evicted(m) ? T_LAST : T_WARM;
    case LLMGW_AFF_LOADING: return T_WARMING;
    default: return ready ? T_COLD : T_LAST;
    }
}

/* a better than b (b may be -1): less loaded, or as loaded with a higher
 * lbstatus, as bybusyness breaks its ties. */
static int better(const llmgw_aff_member_t *m, int a, int b,
                  const llmgw_aff_params_t *p)
{
    apr_int64_t la, lb;

    if (b < 0) {
        return 1;
    }
    if (a < 0) {
        return 0;
    }
    if (m[a].held && m[b].held && m[a].displaced != m[b].displaced) {
        return m[a].displaced < m[b].displaced;
    }
    la = llmgw_affinity_load(&m[a], p);
    lb = llmgw_affinity_load(&m[b], p);
    return la < lb || (la == lb && m[a].lbstatus > m[b].lbstatus);
}

static int within(const llmgw_aff_member_t *m, int i,
                  const llmgw_aff_params_t *p)
{
    return i >= 0 && llmgw_affinity_queue(&m[i], p) <= p->spread_queue;
}

/* a better than b within tier t: for a cold load, first a member within
 * the queue bound, then the one that displaces the least; as a last
 * resort, one that still has it loaded (no load now; one that would
 * hold it is switching away whatever its probes say). */
static int better_in(const llmgw_aff_member_t *m, int a, int b, tier_t t,
                     const llmgw_aff_params_t *p)
{
    int wa, wb;

    if (t == T_LAST && b >= 0 && !m[a].held && !m[b].held
        && (m[a].model == LLMGW_AFF_LOADED)
               != (m[b].model == LLMGW_AFF_LOADED)) {
        return m[a].model == LLMGW_AFF_LOADED;
    }

    if (t == T_COLD && b >= 0) {
        wa = within(m, a, p);
        wb = within(m, b, p);
        if (wa != wb) {
            return wa;
        }
        if (m[a].others != m[b].others) {
            return m[a].others < m[b].others;
        }
    }
    return better(m, a, b, p);
}

/* The rules between the tiers' best members. */
static int choose(const llmgw_aff_member_t *m, const int *best,
                  const llmgw_aff_params_t *p)
{
    int warm = best[T_WARM], warming = best[T_WARMING];
    int cold = best[T_COLD], alt;

    if (warm >= 0) {
        if (within(m, warm, p)) {
            return warm;
        }
        /* Its queue grew: another member may take the model on, if it
         * is less loaded (one already loading it first, on a tie). */
        alt = better(m, cold, warming, p) ? cold : warming;
        return alt >= 0 && better(m, alt, warm, p) ? alt : warm;
    }
    if (within(m, warming, p)) {
        return warming;
    }
    if (cold >= 0) {
        return cold;
    }
    return warming >= 0 ? warming : best[T_LAST];
}

int llmgw_affinity_pick(llmgw_aff_member_t *m, int n,
                        const llmgw_aff_params_t *p)
{
    int best[T_TIERS] = { -1, -1, -1, -1 };
    int i, total = 0, pick;

    for (i = 0; i < n; i++) {
        tier_t t = tier(&m[i]);

        if (t == T_NONE) {
            continue;
        }
        m[i].lbstatus += m[i].lbfactor > 0 ? m[i].lbfactor : 1;
        total += m[i].lbfactor > 0 ? m[i].lbfactor : 1;
        if (better_in(m, i, best[t], t, p)) {
            best[t] = i;
        }
    }
    pick = choose(m, best, p);
    if (pick >= 0) {
        m[pick].lbstatus -= total;
    }
    return pick;
}
