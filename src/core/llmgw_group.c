/* llmgw_group: a slot is one 64-bit word, so that joining, leaving, taking
 * and reserving are each one compare-and-swap that every child sees
 * whole; the time a slot was taken is a word beside it, written after the
 * swap (a race may cut one turn short, never lose a count). */
#include <string.h>

#include "llmgw_counter.h"
#include "llmgw_group.h"
#include "llmgw_hash.h"

#define RESERVED 0x80000000u
#define COUNT 0x7fffffffu

#define W_HASH(w) ((apr_uint32_t)((w) >> 32))
#define W_RES(w) (((apr_uint32_t)(w)&RESERVED) != 0)
#define W_COUNT(w) ((apr_uint32_t)(w)&COUNT)
#define W_MAKE(h, res, n)                                \
    (((apr_uint64_t)(h) << 32) | ((res) ? RESERVED : 0u) \
     | ((apr_uint32_t)(n)&COUNT))

apr_uint32_t llmgw_group_hash(const char *model)
{
    apr_uint32_t h = llmgw_fnv1a32(model, strlen(model));

    return h ? h : 1; /* 0 is a slot that never served */
}

static int clamp(int nslots)
{
    if (nslots < 1) {
        return 1;
    }
    return nslots > LLMGW_GROUP_SLOTS ? LLMGW_GROUP_SLOTS : nslots;
}

static apr_uint64_t load(const apr_uint64_t *w)
{
    return __atomic_load_n(w, __ATOMIC_ACQUIRE);
}

static int swap(apr_uint64_t *w, apr_uint64_t *cur, apr_uint64_t next)
{
    return __atomic_compare_exchange_n(w, cur, next, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static apr_int64_t since(const llmgw_group_t *g, int i)
{
    return __atomic_load_n(&g->since[i], __ATOMIC_ACQUIRE);
}

static apr_interval_time_t idle(const llmgw_group_t *g, int i, apr_time_t now)
{
    return now - __atomic_load_n(&g->left[i], __ATOMIC_ACQUIRE);
}

/* What a request for h may do with a slot word, best first. */
typedef enum {
    U_JOIN = 0, /* serves h (or served it last and is free) */
    U_MINE,     /* reserved for h and drained */
    U_FREE,     /* free, last another model's */
    U_STALE,    /* reserved for another model long ago, drained */
    U_NONE      /* busy with another model, or reserved */
} use_t;

static use_t use(apr_uint64_t w, apr_uint32_t h, apr_int64_t age,
                 apr_interval_time_t idle, apr_interval_time_t hold)
{
    if (W_HASH(w) == h) {
        if (!W_RES(w)) {
            return U_JOIN;
        }
        return W_COUNT(w) == 0 ? U_MINE : U_NONE;
    }
    if (W_COUNT(w) != 0) {
        return U_NONE;
    }
    if (!W_RES(w)) {
        return W_HASH(w) == 0 || idle >= LLMGW_GROUP_IDLE ? U_FREE : U_NONE;
    }
    return age >= hold ? U_STALE : U_NONE;
}

/* The best slot for h, and among equals the one taken longest ago (the
 * model least recently given a turn: the one a member evicts first). */
static int best_slot(const llmgw_group_t *g, int n, apr_uint32_t h,
                     apr_interval_time_t hold, apr_time_t now, use_t *how)
{
    int i, best = -1;
    use_t bu = U_NONE, u;

    for (i = 0; i < n; i++) {
        u = use(load(&g->word[i]), h, now - since(g, i), idle(g, i, now),
                hold);
        if (u < bu
            || (u == bu && u != U_NONE && since(g, i) < since(g, best))) {
            best = i;
            bu = u;
        }
    }
    *how = bu;
    return best;
}

/* Takes slot i for h, or joins it, if its word is still w. A turn begins
 * when the slot changes model, or its model comes back after an idle
 * while; a model whose slot empties a moment between its requests keeps
 * its turn (and the time it began, which bounds it). */
static int take(llmgw_group_t *g, int i, apr_uint64_t w, apr_uint32_t h,
                apr_time_t now)
{
    int turn = W_HASH(w) != h || W_RES(w)
               || (W_COUNT(w) == 0 && idle(g, i, now) >= LLMGW_GROUP_IDLE);

    if (!swap(&g->word[i], &w, W_MAKE(h, 0, W_COUNT(w) + 1))) {
        return 0;
    }
    if (turn) {
        __atomic_store_n(&g->joins[i], 1, __ATOMIC_RELEASE);
        __atomic_store_n(&g->since[i], now, __ATOMIC_RELEASE);
    }
    else {
        __atomic_add_fetch(&g->joins[i], 1, __ATOMIC_ACQ_REL);
    }
    return 1;
}

/* Reserves for h the slot whose model has had it longest, if that is
 * hold or longer, unless one is reserved for h already. */
static void reserve(llmgw_group_t *g, int n, apr_uint32_t h,
                    apr_interval_time_t hold, apr_time_t now)
{
    int i, old = -1;
    apr_uint64_t w;

    for (i = 0; i < n; i++) {
        w = load(&g->word[i]);
        if (W_RES(w) && W_HASH(w) == h) {
            return;
        }
        if (!W_RES(w) && now - since(g, i) >= hold
            && (old < 0 || since(g, i) < since(g, old))) {
            old = i;
        }
    }
    if (old < 0) {
        return;
    }
    w = load(&g->word[old]);
    if (!W_RES(w) && W_HASH(w) != h
        && swap(&g->word[old], &w, W_MAKE(h, 1, W_COUNT(w)))) {
        __atomic_store_n(&g->since[old], now, __ATOMIC_RELEASE);
    }
}

llmgw_group_step_t llmgw_group_enter(llmgw_group_t *g, int nslots,
                                     apr_uint32_t h, apr_interval_time_t hold,
                                     apr_time_t now, int *slot)
{
    int n = clamp(nslots), i, tries;
    use_t how;

    /* A lost swap means another child changed the slot: look again. */
    for (tries = 0; tries < 64; tries++) {
        i = best_slot(g, n, h, hold, now, &how);
        if (how == U_NONE) {
            break;
        }
        if (take(g, i, load(&g->word[i]), h, now)) {
            apr_uint64_t mine = h;

            /* Its batch is served: the next one is another model's. */
            __atomic_compare_exchange_n(&g->next, &mine, 0, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
            *slot = i;
            return LLMGW_GROUP_JOINED;
        }
    }
    {
        apr_uint64_t none = 0;

        __atomic_compare_exchange_n(&g->next, &none, h, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
    reserve(g, n, h, hold, now);
    *slot = -1;
    return LLMGW_GROUP_HELD;
}

void llmgw_group_leave(llmgw_group_t *g, int slot, apr_time_t now)
{
    apr_uint64_t w;

    if (slot < 0 || slot >= LLMGW_GROUP_SLOTS) {
        return;
    }
    w = load(&g->word[slot]);
    while (W_COUNT(w) > 0) {
        if (swap(&g->word[slot], &w,
                 W_MAKE(W_HASH(w), W_RES(w), W_COUNT(w) - 1))) {
            if (W_COUNT(w) == 1) {
                __atomic_store_n(&g->left[slot], now, __ATOMIC_RELEASE);
            }
            return;
        }
    }
}

/* Requests a second slot i's model got in its turn so far, counting the
 * turn as hold at least (a turn just begun has few). */
static apr_int64_t rate(const llmgw_group_t *g, int i,
                        apr_interval_time_t hold, apr_time_t now)
{
    apr_interval_time_t turn = now - since(g, i);
    apr_uint64_t n = __atomic_load_n(&g->joins[i], __ATOMIC_ACQUIRE);

    if (turn < hold) {
        turn = hold;
    }
    return turn > 0 ? (apr_int64_t)(n * APR_USEC_PER_SEC / (apr_uint64_t)turn)
                    : (apr_int64_t)n;
}

int llmgw_group_would_hold(const llmgw_group_t *g, int nslots, apr_uint32_t h,
                           apr_interval_time_t hold, apr_time_t now,
                           int *serving, apr_int64_t *displaced)
{
    int n = clamp(nslots), i, held = 1, mine = 0;
    apr_int64_t least = -1, r;
    apr_uint64_t w;

    for (i = 0; i < n; i++) {
        int in_turn;
        use_t u;

        w = load(&g->word[i]);
        in_turn = W_COUNT(w) > 0 || idle(g, i, now) < LLMGW_GROUP_IDLE;
        u = use(w, h, 0, LLMGW_GROUP_IDLE, 1);
        if (W_HASH(w) == h && (W_RES(w) || in_turn)) {
            mine = 1;
        }
        if (u == U_JOIN || u == U_MINE || (u == U_FREE && !in_turn)) {
            held = 0;
        }
        if (!W_RES(w) && W_HASH(w) != h) {
            r = rate(g, i, hold, now);
            least = least < 0 || r < least ? r : least;
        }
    }
    if (held && __atomic_load_n(&g->next, __ATOMIC_ACQUIRE) == h) {
        mine = 1;
    }
    if (serving) {
        *serving = mine;
    }
    if (displaced) {
        *displaced = held && least > 0 ? least : 0;
    }
    return held;
}

int llmgw_group_hold(llmgw_group_t *g, apr_int64_t max)
{
    return llmgw_counter_up(&g->held, max);
}

void llmgw_group_unhold(llmgw_group_t *g)
{
    llmgw_counter_down(&g->held);
}
