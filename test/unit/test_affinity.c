/* test_affinity.c: the llm_affinity choice, table-driven: loaded before
 * cold, the least loaded among equals, spreading only past the queue
 * bound, never absent, down or unusable members; and with nothing known
 * the very choices (and lbstatus) of mod_lbmethod_bybusyness. */
#include <string.h>

#include "llmgw_affinity.h"
#include "test_core.h"

#define R LLMGW_HS_READY
#define B LLMGW_HS_BUSY
#define L LLMGW_HS_LOADING
#define D LLMGW_HS_DOWN
#define UNK LLMGW_AFF_UNKNOWN
#define HOT LLMGW_AFF_LOADED
#define WARMING LLMGW_AFF_LOADING
#define COLD LLMGW_AFF_COLD
#define ABS LLMGW_AFF_ABSENT

/* usable, state, model, inflight, slots total, slots busy, waiting,
 * capacity, lbfactor, lbstatus */
#define M(u, st, mo, in, tot, bu, wa, cap)    \
    {                                         \
        u, st, mo, in, tot, bu, wa, cap, 1, 0 \
    }
#define END                           \
    {                                 \
        -1, 0, 0, 0, 0, 0, 0, 0, 0, 0 \
    }

static const struct {
    const char *why;
    llmgw_aff_member_t m[5];
    int want;
} cases[] = {
    { "loaded beats an idle cold member",
      { M(1, R, COLD, 0, -1, -1, -1, 0), M(1, R, HOT, 1, -1, -1, -1, 0), END },
      1 },
    { "loaded, queue at the bound: stays",
      { M(1, R, HOT, 3, -1, -1, -1, 0), M(1, R, COLD, 0, -1, -1, -1, 0), END },
      0 },
    { "loaded, queue past the bound: a less loaded cold member",
      { M(1, R, HOT, 4, -1, -1, -1, 0), M(1, R, COLD, 0, -1, -1, -1, 0), END },
      1 },
    { "queue past the bound, but the other is more loaded",
      { M(1, R, HOT, 4, -1, -1, -1, 0), M(1, R, COLD, 5, -1, -1, -1, 0), END },
      0 },
    { "past the bound: one already loading it beats cold on a tie",
      { M(1, R, HOT, 9, -1, -1, -1, 0), M(1, R, COLD, 1, -1, -1, -1, 0),
        M(1, R, WARMING, 1, -1, -1, -1, 0), END },
      2 },
    { "two loaded: the less loaded",
      { M(1, R, HOT, 2, -1, -1, -1, 0), M(1, R, HOT, 1, -1, -1, -1, 0), END },
      1 },
    { "slots: the lower share of slots in use",
      { M(1, R, HOT, 0, 1, 1, -1, 0), M(1, R, HOT, 0, 4, 2, -1, 0), END },
      1 },
    { "slots busy by other clients count as load",
      { M(1, R, HOT, 0, 2, 2, -1, 0), M(1, R, HOT, 1, 2, 0, -1, 0), END },
      1 },
    { "a busy loaded member within the bound beats a cold load",
      { M(1, B, HOT, 1, 1, 1, -1, 0), M(1, R, COLD, 0, -1, -1, -1, 0), END },
      0 },
    { "vLLM: its own queue past the bound spreads",
      { M(1, R, HOT, 10, -1, -1, 5, 0), M(1, R, UNK, 0, -1, -1, 0, 0), END },
      1 },
    { "vLLM: a queue within the bound stays, whatever is in flight",
      { M(1, R, HOT, 40, -1, -1, 2, 0), M(1, R, UNK, 0, -1, -1, 0, 0), END },
      0 },
    { "a configured capacity: no queue yet",
      { M(1, R, HOT, 3, -1, -1, -1, 4), M(1, R, COLD, 0, -1, -1, -1, 0), END },
      0 },
    { "one loading it beats a cold member",
      { M(1, R, COLD, 0, -1, -1, -1, 0), M(1, R, WARMING, 1, -1, -1, -1, 0),
        END },
      1 },
    { "one loading it with a long queue: cold instead",
      { M(1, R, COLD, 0, -1, -1, -1, 0), M(1, R, WARMING, 5, -1, -1, -1, 0),
        END },
      0 },
    { "loaded on a member that is loading another: as loaded as elsewhere",
      { M(1, L, HOT, 0, -1, -1, -1, 0), M(1, R, HOT, 1, -1, -1, -1, 0), END },
      0 },
    { "absent is never chosen",
      { M(1, R, ABS, 0, -1, -1, -1, 0), M(1, R, COLD, 9, -1, -1, -1, 0), END },
      1 },
    { "unusable and down are never chosen",
      { M(0, R, HOT, 0, -1, -1, -1, 0), M(1, D, HOT, 0, -1, -1, -1, 0),
        M(1, R, COLD, 7, -1, -1, -1, 0), END },
      2 },
    { "busy or loading something else: last",
      { M(1, B, COLD, 0, -1, -1, -1, 0), M(1, L, UNK, 0, -1, -1, -1, 0),
        M(1, R, UNK, 3, -1, -1, -1, 0), END },
      2 },
    { "only busy and loading ones: the less loaded",
      { M(1, B, COLD, 2, -1, -1, -1, 0), M(1, L, UNK, 1, -1, -1, -1, 0), END },
      1 },
    { "none usable",
      { M(0, R, HOT, 0, -1, -1, -1, 0), M(1, R, ABS, 0, -1, -1, -1, 0),
        M(1, D, UNK, 0, -1, -1, -1, 0), END },
      -1 },
    { "nothing known: the least busy",
      { M(1, R, UNK, 2, -1, -1, -1, 0), M(1, R, UNK, 0, -1, -1, -1, 0),
        M(1, R, UNK, 1, -1, -1, -1, 0), END },
      1 },
    { "no members", { END }, -1 },
};

static int count(const llmgw_aff_member_t *m)
{
    int n = 0;

    while (n < 5 && m[n].usable >= 0) {
        n++;
    }
    return n;
}

START_TEST(table_of_choices)
{
    llmgw_aff_params_t p;
    apr_size_t i;

    llmgw_affinity_params_default(&p);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        llmgw_aff_member_t m[5];
        int n = count(cases[i].m), got;

        memcpy(m, cases[i].m, sizeof(m));
        got = llmgw_affinity_pick(m, n, &p);
        if (got != cases[i].want) {
            ck_abort_msg("%s: chose %d, want %d", cases[i].why, got,
                         cases[i].want);
        }
    }
}
END_TEST

/* Grouping by model: the member whose slots serve the model is as good as
 * loaded; one that would hold the request for another model's turn comes
 * after any ready member, whatever its probes say. */
START_TEST(grouping_by_model)
{
    llmgw_aff_params_t p;
    llmgw_aff_member_t m[3] = { M(1, R, COLD, 4, -1, -1, -1, 8),
                                M(1, R, COLD, 1, -1, -1, -1, 8),
                                M(1, R, COLD, 0, -1, -1, -1, 8) };

    llmgw_affinity_params_default(&p);
    m[0].serving = 1;
    ck_assert_int_eq(llmgw_affinity_pick(m, 3, &p), 0);
    m[0].serving = 0;
    m[2].held = 1;
    ck_assert_int_eq(llmgw_affinity_pick(m, 3, &p), 1);
    m[1].held = 1;
    m[1].model = HOT; /* its probe lags: it is switching away */
    m[0].held = 1;
    /* All would hold: the least loaded. */
    ck_assert_int_eq(llmgw_affinity_pick(m, 3, &p), 2);
}
END_TEST

/* Two ready members: m[0] with model a and ia in flight, m[1] with b and
 * ib, both of capacity cap. */
static void two(llmgw_aff_member_t *m, llmgw_aff_model_t a, apr_int64_t ia,
                llmgw_aff_model_t b, apr_int64_t ib, apr_int64_t cap)
{
    m[0] = (llmgw_aff_member_t)M(1, R, a, ia, -1, -1, -1, cap);
    m[1] = (llmgw_aff_member_t)M(1, R, b, ib, -1, -1, -1, cap);
}

#define PICKS(m, want) ck_assert_int_eq(llmgw_affinity_pick(m, 2, &p), want)

/* A load of another model X on a member keeps the model loaded there
 * warm, unless X fills its last model slot. */
START_TEST(loading_another_model)
{
    llmgw_aff_params_t p;
    llmgw_aff_member_t m[2];

    llmgw_affinity_params_default(&p);
    /* Loading X beside it (the emulated member, Ollama with room): the
     * warm member stays first, though the other is idle. */
    two(m, HOT, 1, COLD, 0, 0);
    m[0].loading_other = 1;
    m[0].resident = 2;
    PICKS(m, 0);
    m[0].model_slots = 2; /* room for both */
    PICKS(m, 0);
    /* X takes its one slot: it unloads this model, go elsewhere... */
    m[0].model_slots = 1;
    PICKS(m, 1);
    /* ...unless nothing else can take it. */
    m[1].state = LLMGW_HS_BUSY;
    PICKS(m, 0);
    m[1].usable = 0;
    PICKS(m, 0);
}
END_TEST

/* A model loaded nowhere goes where it displaces the least: not onto the
 * member serving the most asked model (though it is the idler one), onto
 * the one whose models were asked less. */
START_TEST(cold_where_it_displaces_least)
{
    llmgw_aff_params_t p;
    llmgw_aff_member_t m[2];

    llmgw_affinity_params_default(&p);
    two(m, COLD, 0, COLD, 3, 8);
    m[0].others = 40 * 256;
    m[1].others = 6 * 256;
    PICKS(m, 1);
    m[1].others = 0; /* idle of others (it serves only this one) */
    PICKS(m, 1);
    m[1].model = UNK; /* maybe there: as cold */
    PICKS(m, 1);
    /* Unless its queue is past the bound: the other can take it. */
    m[1].inflight = 11;
    PICKS(m, 0);
    /* As much displaced on both: the less loaded (bybusyness). */
    m[1].inflight = 3;
    m[1].others = m[0].others;
    PICKS(m, 0);
}
END_TEST

START_TEST(load_and_queue)
{
    llmgw_aff_params_t p;
    llmgw_aff_member_t m = M(1, R, HOT, 3, -1, -1, -1, 0);

    llmgw_affinity_params_default(&p);
    ck_assert_int_eq(llmgw_affinity_load(&m, &p), 3 * 1024);
    ck_assert_int_eq(llmgw_affinity_queue(&m, &p), 2);
    m.slots_total = 4;
    m.slots_busy = 2;
    ck_assert_int_eq(llmgw_affinity_load(&m, &p), 3 * 1024 / 4);
    ck_assert_int_eq(llmgw_affinity_queue(&m, &p), 0);
    m.inflight = 6;
    ck_assert_int_eq(llmgw_affinity_queue(&m, &p), 2);
    m.waiting = 7;
    ck_assert_int_eq(llmgw_affinity_queue(&m, &p), 7);
    ck_assert_int_eq(llmgw_affinity_load(&m, &p), 13 * 1024 / 4);
    p.default_capacity = 4;
    m = (llmgw_aff_member_t)M(1, R, HOT, 3, -1, -1, -1, 0);
    ck_assert_int_eq(llmgw_affinity_queue(&m, &p), 0);
    m.capacity = 2;
    ck_assert_int_eq(llmgw_affinity_queue(&m, &p), 1);
}
END_TEST

/* mod_lbmethod_bybusyness's choice, written from its description: each
 * usable worker's lbstatus grows by its lbfactor as it is looked at; the
 * least busy wins, on a tie the higher lbstatus (the first on a full
 * tie); the winner's lbstatus shrinks by the sum of the factors. */
static int bybusyness(llmgw_aff_member_t *m, int n)
{
    int i, best = -1, total = 0;

    for (i = 0; i < n; i++) {
        if (!m[i].usable) {
            continue;
        }
        m[i].lbstatus += m[i].lbfactor;
        total += m[i].lbfactor;
        if (best < 0 || m[i].inflight < m[best].inflight
            || (m[i].inflight == m[best].inflight
                && m[i].lbstatus > m[best].lbstatus)) {
            best = i;
        }
    }
    if (best >= 0) {
        m[best].lbstatus -= total;
    }
    return best;
}

/* Knowing nothing of models, slots or queues, llm_affinity is
 * bybusyness: the same member, the same lbstatus after, every time. */
START_TEST(nothing_known_is_bybusyness)
{
    llmgw_aff_params_t p;
    llmgw_aff_member_t a[6], b[6];
    unsigned long rnd = 7;
    int round, i, n = 6;

    llmgw_affinity_params_default(&p);
    memset(a, 0, sizeof(a));
    for (i = 0; i < n; i++) {
        a[i].state = LLMGW_HS_READY;
        a[i].model = LLMGW_AFF_UNKNOWN;
        a[i].slots_total = a[i].slots_busy = a[i].waiting = -1;
        a[i].lbfactor = 1 + i % 3;
    }
    for (round = 0; round < 20000; round++) {
        for (i = 0; i < n; i++) {
            rnd = rnd * 6364136223846793005ul + 1442695040888963407ul;
            a[i].inflight = (apr_int64_t)((rnd >> 40) % 3);
            a[i].usable = ((rnd >> 50) % 5) != 0;
        }
        memcpy(b, a, sizeof(a));
        ck_assert_int_eq(llmgw_affinity_pick(a, n, &p), bybusyness(b, n));
        for (i = 0; i < n; i++) {
            ck_assert_int_eq(a[i].lbstatus, b[i].lbstatus);
        }
    }
}
END_TEST

/* Equals take turns by lbfactor: 1, 2, 1 share 25 %, 50 %, 25 %. */
START_TEST(equals_share_by_lbfactor)
{
    llmgw_aff_params_t p;
    llmgw_aff_member_t m[3] = {
        M(1, R, HOT, 0, -1, -1, -1, 0),
        M(1, R, HOT, 0, -1, -1, -1, 0),
        M(1, R, HOT, 0, -1, -1, -1, 0),
    };
    int got[3] = { 0, 0, 0 }, i;

    llmgw_affinity_params_default(&p);
    m[1].lbfactor = 2;
    for (i = 0; i < 400; i++) {
        got[llmgw_affinity_pick(m, 3, &p)]++;
    }
    ck_assert_int_eq(got[0], 100);
    ck_assert_int_eq(got[1], 200);
    ck_assert_int_eq(got[2], 100);
    /* An unset lbfactor counts as 1. */
    m[0].lbfactor = 0;
    ck_assert_int_ge(llmgw_affinity_pick(m, 3, &p), 0);
}
END_TEST

Suite *affinity_suite(void)
{
    return test_suite(
        "affinity", "core", 0,
        TESTS(table_of_choices, grouping_by_model, loading_another_model,
              cold_where_it_displaces_least, load_and_queue,
              nothing_known_is_bybusyness, equals_share_by_lbfactor));
}
