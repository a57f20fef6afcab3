/* llmgw_health: a header and one fixed-size record per member. What any
 * child may write is a single word each (the breaker, the counters, the
 * hints), changed with compare-and-swap or plain atomic stores; what a
 * probe stores is many words, written by one writer at a time under a
 * sequence counter that readers check around their copy (a seqlock), so
 * a reader never waits and never keeps a torn copy. */
#include <string.h>

#include "llmgw_counter.h"
#include "llmgw_health.h"
#include "llmgw_hash.h"
#include "llmgw_json.h"
#include "llmgw_seqlock.h"

/* Every process must see the same words: they must be lock-free. */
_Static_assert(__atomic_always_lock_free(sizeof(apr_uint64_t), 0),
               "64-bit atomics must be lock-free to be shared");

#define MAGIC 0x6c6c6d68u /* "llmh" */
#define VERSION 4u
#define ALIGN8(n) (((n) + 7) & ~(apr_size_t)7)
#define READ_TRIES 64 /* a reader's attempts beside a writer */

/* The probe facts by their LLMGW_PK_* bit, each with its own time. */
enum { F_STATE, F_LOADED, F_AVAILABLE, F_SLOTS, F_QUEUE, F_KV, F_FACTS };

struct llmgw_health {
    apr_uint32_t magic;
    apr_uint32_t version;
    apr_uint32_t nmax;
    apr_uint32_t n;   /* entries taken (a name published in each, or
                       * about to be) */
    apr_int64_t base; /* origin of the breakers' clock */
    apr_uint64_t size;
};

typedef struct {
    apr_uint64_t hash; /* of the model's name; 0: free */
    apr_int64_t at;
    apr_uint32_t kind; /* llmgw_hint_t */
    apr_uint32_t pad;
    /* Requests llm_affinity sent lately for the model: the time in ms
     * (high 32 bits, wrapping) and a count in 1/256ths halved every
     * ASKED_HALF_MS (low 32), one word for compare-and-swap. */
    apr_uint64_t asked;
} hint_t;

#define ASKED_HALF_MS 4000 /* "lately": a few seconds of traffic */
#define ASKED_ONE 256

typedef struct {
    apr_int64_t size_vram;
    apr_int64_t expires_at;
    apr_int64_t running;
    apr_int64_t waiting;
    apr_int64_t kv_ppm; /* KV cache use in millionths; -1 */
    char name[LLMGW_HEALTH_MODEL_NAME];
} pmodel_t;

typedef struct {
    apr_uint32_t seq; /* odd while written */
    apr_uint32_t nmodels;
    apr_int32_t state; /* llmgw_hstate_t of the last probe */
    apr_int32_t ok;
    apr_int64_t probed_at;
    apr_int64_t at[F_FACTS]; /* when each fact was last stored */
    apr_int64_t slots_total;
    apr_int64_t slots_busy;
    apr_int64_t running;
    apr_int64_t waiting;
    apr_int64_t kv_ppm;
    apr_uint64_t mhash[LLMGW_HEALTH_MODELS];
    apr_uint32_t mflags[LLMGW_HEALTH_MODELS];
    pmodel_t models[LLMGW_HEALTH_MODELS];
} probe_t;

typedef struct {
    char name[LLMGW_HEALTH_NAME_MAX];
    apr_uint64_t breaker; /* llmgw_breaker_pack */
    apr_int64_t inflight;
    apr_int64_t waiters;
    apr_uint32_t mirrored; /* LLMGW_MIRROR_* the worker shows */
    /* Of the name, published last (release): 0 while the name is being
     * written, so a reader never compares half a name. */
    apr_uint32_t name_hash;
    apr_uint32_t epoch;  /* 1 at the first join, one more at each */
    apr_uint32_t probes; /* its own probe set: PROBES_* packing; 0 */
    apr_int64_t renewed; /* the last join again: older probes unknown */
    llmgw_group_t group; /* its model slots (LLMCapacity models=N) */
    hint_t hints[LLMGW_HEALTH_HINTS];
    probe_t probe;
} member_t;

#define MEMBERS(t) ((member_t *)((char *)(t) + ALIGN8(sizeof(*(t)))))

/* What a reader copies of a probe record, models aside. */
typedef struct {
    int valid;
    apr_int32_t state;
    apr_int32_t ok;
    apr_uint32_t nmodels;
    apr_int64_t probed_at;
    apr_int64_t at[F_FACTS];
    apr_int64_t slots_total;
    apr_int64_t slots_busy;
    apr_int64_t running;
    apr_int64_t waiting;
    apr_int64_t kv_ppm;
} psum_t;

/* ---- the table -------------------------------------------------------- */

apr_size_t llmgw_health_size(unsigned nmembers)
{
    return ALIGN8(sizeof(llmgw_health_t)) + nmembers * sizeof(member_t);
}

llmgw_health_t *llmgw_health_init(void *mem, apr_size_t size,
                                  unsigned nmembers, apr_time_t now)
{
    llmgw_health_t *t = mem;

    if (!mem || nmembers < 1 || nmembers > 65536
        || size < llmgw_health_size(nmembers)) {
        return NULL;
    }
    memset(mem, 0, llmgw_health_size(nmembers));
    t->version = VERSION;
    t->nmax = nmembers;
    t->base = now;
    t->size = llmgw_health_size(nmembers);
    __atomic_store_n(&t->magic, MAGIC, __ATOMIC_RELEASE);
    return t;
}

llmgw_health_t *llmgw_health_attach(void *mem, apr_size_t size)
{
    llmgw_health_t *t = mem;

    if (!mem || size < sizeof(*t)
        || __atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != MAGIC
        || t->version != VERSION || t->nmax < 1 || t->nmax > 65536
        || size < llmgw_health_size(t->nmax)) {
        return NULL;
    }
    return t;
}

static member_t *member(const llmgw_health_t *t, int m)
{
    if (!t || m < 0
        || (unsigned)m >= __atomic_load_n(&t->n, __ATOMIC_ACQUIRE)) {
        return NULL;
    }
    return &MEMBERS(t)[m];
}

static apr_uint32_t name_hash(const char *s)
{
    apr_uint32_t h = llmgw_fnv1a32(s, strlen(s));

    return h ? h : 1; /* 0: no name (yet) */
}

int llmgw_health_find(const llmgw_health_t *t, const char *name)
{
    apr_uint32_t h, i, n;

    if (!t || !name) {
        return -1;
    }
    h = name_hash(name);
    n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
    for (i = 0; i < n; i++) {
        const member_t *mb = &MEMBERS(t)[i];

        if (__atomic_load_n(&mb->name_hash, __ATOMIC_ACQUIRE) == h
            && strcmp(mb->name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Takes the next free entry for name (any process: the index by
 * compare-and-swap, the name published by its hash last); -1 if full. */
static int take_entry(llmgw_health_t *t, const char *name, apr_size_t len,
                      apr_time_t now)
{
    apr_uint32_t i = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
    member_t *mb;

    do {
        if (i >= t->nmax) {
            return -1;
        }
    } while (!__atomic_compare_exchange_n(&t->n, &i, i + 1, 0,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    /* Never shown before: zero since the table was laid out. */
    mb = &MEMBERS(t)[i];
    memcpy(mb->name, name, len + 1);
    mb->probe.state = LLMGW_HS_UNKNOWN;
    mb->renewed = now;
    __atomic_store_n(&mb->epoch, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&mb->name_hash, name_hash(name), __ATOMIC_RELEASE);
    return (int)i;
}

static int valid_name(const char *name, apr_size_t *len)
{
    *len = name ? strlen(name) : 0;
    return *len && *len < LLMGW_HEALTH_NAME_MAX;
}

int llmgw_health_add(llmgw_health_t *t, const char *name)
{
    apr_size_t len;
    int i;

    if (!t || !valid_name(name, &len)) {
        return -1;
    }
    if ((i = llmgw_health_find(t, name)) >= 0) {
        return i;
    }
    return take_entry(t, name, len, 0);
}

/* A member back as new: its breaker closed, its hints gone, what probes
 * stored before now unknown (the probe record has one writer, the
 * watchdog's, so it is not written here); its admission counters stay:
 * requests still in flight on it give their places back. */
static void renew(member_t *mb, apr_time_t now)
{
    int i;

    __atomic_store_n(&mb->breaker, 0, __ATOMIC_RELEASE);
    for (i = 0; i < LLMGW_HEALTH_HINTS; i++) {
        __atomic_store_n(&mb->hints[i].hash, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&mb->hints[i].asked, 0, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&mb->probes, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&mb->renewed, now, __ATOMIC_RELEASE);
    __atomic_add_fetch(&mb->epoch, 1, __ATOMIC_ACQ_REL);
}

int llmgw_health_join(llmgw_health_t *t, const char *name, apr_time_t now)
{
    apr_size_t len;
    int i;

    if (!t || !valid_name(name, &len)) {
        return -1;
    }
    if ((i = llmgw_health_find(t, name)) >= 0) {
        renew(&MEMBERS(t)[i], now);
        return i;
    }
    return take_entry(t, name, len, now);
}

unsigned llmgw_health_free(const llmgw_health_t *t)
{
    return t ? t->nmax - __atomic_load_n(&t->n, __ATOMIC_ACQUIRE) : 0;
}

unsigned llmgw_health_epoch(const llmgw_health_t *t, int m)
{
    const member_t *mb = member(t, m);

    return mb ? __atomic_load_n(&mb->epoch, __ATOMIC_ACQUIRE) : 0;
}

/* A probe set in one word: the count in the low 4 bits, each kind in
 * 8 bits above. */
#define PROBES_KIND(w, i) ((int)(((w) >> (4 + 8 * (i))) & 0xff))

void llmgw_health_set_probes(llmgw_health_t *t, int m,
                             const llmgw_probe_kind_t *kinds, int n)
{
    member_t *mb = member(t, m);
    apr_uint32_t w;
    int i;

    if (!mb || n < 0 || n > LLMGW_PROBE_SET_MAX) {
        return;
    }
    for (i = 0, w = (apr_uint32_t)n; i < n; i++) {
        w |= ((apr_uint32_t)kinds[i] & 0xff) << (4 + 8 * i);
    }
    __atomic_store_n(&mb->probes, w, __ATOMIC_RELEASE);
}

int llmgw_health_probes(const llmgw_health_t *t, int m,
                        llmgw_probe_kind_t *kinds)
{
    const member_t *mb = member(t, m);
    apr_uint32_t w = mb ? __atomic_load_n(&mb->probes, __ATOMIC_ACQUIRE) : 0;
    int i, n = (int)(w & 0xf);

    if (n > LLMGW_PROBE_SET_MAX) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        kinds[i] = (llmgw_probe_kind_t)PROBES_KIND(w, i);
    }
    return n;
}

unsigned llmgw_health_count(const llmgw_health_t *t)
{
    return t ? __atomic_load_n(&t->n, __ATOMIC_ACQUIRE) : 0;
}

const char *llmgw_health_name(const llmgw_health_t *t, int m)
{
    const member_t *mb = member(t, m);

    return mb && __atomic_load_n(&mb->name_hash, __ATOMIC_ACQUIRE) ? mb->name
                                                                   : NULL;
}

void llmgw_health_reset_counts(llmgw_health_t *t)
{
    unsigned i, n = llmgw_health_count(t);

    for (i = 0; i < n; i++) {
        __atomic_store_n(&MEMBERS(t)[i].inflight, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&MEMBERS(t)[i].waiters, 0, __ATOMIC_RELEASE);
        /* Its requests in flight are gone too (nothing else in it
         * points anywhere). */
        memset(&MEMBERS(t)[i].group, 0, sizeof(MEMBERS(t)[i].group));
    }
}

llmgw_group_t *llmgw_health_group(llmgw_health_t *t, int m)
{
    member_t *mb = member(t, m);

    return mb ? &mb->group : NULL;
}

/* ---- the breaker ------------------------------------------------------ */

llmgw_breaker_t llmgw_health_breaker(const llmgw_health_t *t, int m)
{
    const member_t *mb = member(t, m);
    llmgw_breaker_t none = { LLMGW_BR_CLOSED, 0, 0, 0, 0, 0, 0 };

    if (!mb) {
        return none;
    }
    return llmgw_breaker_unpack(
        __atomic_load_n(&mb->breaker, __ATOMIC_ACQUIRE), t->base);
}

int llmgw_health_event(llmgw_health_t *t, int m, llmgw_event_t ev, int trial,
                       apr_time_t now, const llmgw_breaker_params_t *bp,
                       llmgw_breaker_t *before, llmgw_breaker_t *after)
{
    member_t *mb = member(t, m);
    apr_uint64_t old, nw;
    llmgw_breaker_t b, nb;

    if (!mb) {
        return -1;
    }
    old = __atomic_load_n(&mb->breaker, __ATOMIC_ACQUIRE);
    for (;;) {
        b = llmgw_breaker_unpack(old, t->base);
        nb = llmgw_breaker_next(b, ev, trial, now, bp);
        nw = llmgw_breaker_pack(&nb, t->base);
        /* On failure old is reloaded: the next turn starts from what
         * another process published meanwhile. */
        if (nw == old
            || __atomic_compare_exchange_n(&mb->breaker, &old, nw, 0,
                                           __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE)) {
            break;
        }
    }
    nb = llmgw_breaker_unpack(nw, t->base);
    if (before) {
        *before = b;
    }
    if (after) {
        *after = nb;
    }
    return llmgw_breaker_state(&b, now) != llmgw_breaker_state(&nb, now);
}

int llmgw_health_claim(llmgw_health_t *t, int m, apr_time_t now,
                       const llmgw_breaker_params_t *bp, int *token)
{
    member_t *mb = member(t, m);
    apr_uint64_t old, nw;
    llmgw_breaker_t nb;

    if (!mb) {
        return 0;
    }
    old = __atomic_load_n(&mb->breaker, __ATOMIC_ACQUIRE);
    for (;;) {
        if (!llmgw_breaker_claim(llmgw_breaker_unpack(old, t->base), now, bp,
                                 &nb)) {
            return 0;
        }
        nw = llmgw_breaker_pack(&nb, t->base);
        if (__atomic_compare_exchange_n(&mb->breaker, &old, nw, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            *token = (int)nb.gen;
            return 1;
        }
    }
}

/* ---- model names ------------------------------------------------------ */

/* Ollama's "llama3" is its "llama3:latest": compare without the tag. */
static apr_size_t model_len(const char *s)
{
    apr_size_t n = strlen(s);

    if (n > 7 && memcmp(s + n - 7, ":latest", 7) == 0) {
        n -= 7;
    }
    return n;
}

static apr_uint64_t model_hash(const char *s)
{
    apr_uint64_t h = llmgw_fnv1a64(s, model_len(s));

    return h ? h : 1; /* 0 marks a free hint */
}

static int model_same(const char *a, const char *b)
{
    apr_size_t n = model_len(a);

    return n == model_len(b) && memcmp(a, b, n) == 0;
}

/* ---- the probe record (seqlock) --------------------------------------- */

/* Whether a probe of probed_at came before the member was joined again
 * (what it stored is another member's, as far as anyone knows). */
static int stale(const member_t *mb, apr_time_t probed_at)
{
    apr_time_t renewed = __atomic_load_n(&mb->renewed, __ATOMIC_ACQUIRE);

    return renewed > 0 && probed_at <= renewed;
}

static void read_summary(const member_t *mb, psum_t *out)
{
    const probe_t *pr = &mb->probe;
    apr_uint32_t s;
    int i;

    for (i = 0; i < READ_TRIES; i++) {
        if (!llmgw_seq_read_begin(&pr->seq, &s)) {
            continue;
        }
        out->state = pr->state;
        out->ok = pr->ok;
        out->nmodels = pr->nmodels;
        out->probed_at = pr->probed_at;
        memcpy(out->at, pr->at, sizeof(out->at));
        out->slots_total = pr->slots_total;
        out->slots_busy = pr->slots_busy;
        out->running = pr->running;
        out->waiting = pr->waiting;
        out->kv_ppm = pr->kv_ppm;
        if (llmgw_seq_read_end(&pr->seq, s)) {
            out->valid = out->nmodels <= LLMGW_HEALTH_MODELS
                         && !stale(mb, out->probed_at);
            return;
        }
    }
    out->valid = 0; /* the writer kept at it: know nothing */
}

/* The stored flags of the model, or -1 if the record kept changing. */
static int read_model_flags(const member_t *mb, const char *model,
                            apr_uint64_t h)
{
    const probe_t *pr = &mb->probe;
    apr_uint32_t s, i, n;
    int tries, flags;

    for (tries = 0; tries < READ_TRIES; tries++) {
        if (!llmgw_seq_read_begin(&pr->seq, &s)) {
            continue;
        }
        flags = 0;
        n = pr->nmodels;
        for (i = 0; i < n && i < LLMGW_HEALTH_MODELS; i++) {
            if (pr->mhash[i] == h) {
                char name[LLMGW_HEALTH_MODEL_NAME];

                memcpy(name, pr->models[i].name, sizeof(name));
                name[sizeof(name) - 1] = '\0';
                if (model_same(name, model)) {
                    flags = (int)pr->mflags[i];
                    break;
                }
            }
        }
        if (llmgw_seq_read_end(&pr->seq, s)) {
            return flags;
        }
    }
    return -1;
}

static int fresh(const psum_t *ps, int fact, apr_time_t now,
                 const llmgw_health_params_t *hp)
{
    return ps->valid && ps->at[fact] > 0 && now - ps->at[fact] <= hp->fresh;
}

/* ---- storing a probe -------------------------------------------------- */

static int find_model(const probe_t *pr, const char *name, apr_uint64_t h)
{
    apr_uint32_t i;

    for (i = 0; i < pr->nmodels; i++) {
        if (pr->mhash[i] == h && model_same(pr->models[i].name, name)) {
            return (int)i;
        }
    }
    return -1;
}

static void clear_model_facts(probe_t *pr, unsigned knows)
{
    apr_uint32_t i;

    for (i = 0; i < pr->nmodels; i++) {
        if (knows & LLMGW_PK_LOADED) {
            pr->mflags[i] &=
                ~(apr_uint32_t)(LLMGW_PM_LOADED | LLMGW_PM_LOADING);
        }
        if (knows & LLMGW_PK_AVAILABLE) {
            pr->mflags[i] &= ~(apr_uint32_t)LLMGW_PM_AVAILABLE;
        }
        if (knows & LLMGW_PK_QUEUE) {
            pr->models[i].running = pr->models[i].waiting = -1;
        }
        if (knows & LLMGW_PK_KV) {
            pr->models[i].kv_ppm = -1;
        }
    }
}

static apr_int64_t kv_ppm(double kv)
{
    return kv >= 0.0 && kv <= 1.0 ? (apr_int64_t)(kv * 1e6 + 0.5) : -1;
}

/* Puts one probe model into the record; 0, or 1 if it does not fit. */
static int put_model(probe_t *pr, const llmgw_probe_model_t *pm,
                     unsigned knows)
{
    apr_size_t len = strlen(pm->name);
    apr_uint64_t h = model_hash(pm->name);
    unsigned keep = 0;
    pmodel_t *e;
    int i;

    if (len >= LLMGW_HEALTH_MODEL_NAME) {
        return 1;
    }
    if ((i = find_model(pr, pm->name, h)) < 0) {
        if (pr->nmodels >= LLMGW_HEALTH_MODELS) {
            return 1;
        }
        i = (int)pr->nmodels;
        e = &pr->models[i];
        memcpy(e->name, pm->name, len + 1);
        e->size_vram = -1;
        e->expires_at = 0;
        e->running = e->waiting = e->kv_ppm = -1;
        pr->mhash[i] = h;
        pr->mflags[i] = 0;
        pr->nmodels++;
    }
    e = &pr->models[i];
    if (knows & LLMGW_PK_LOADED) {
        keep |= pm->flags & (LLMGW_PM_LOADED | LLMGW_PM_LOADING);
    }
    if (knows & LLMGW_PK_AVAILABLE) {
        keep |= pm->flags & LLMGW_PM_AVAILABLE;
    }
    pr->mflags[i] |= keep;
    if (pm->size_vram >= 0) {
        e->size_vram = pm->size_vram;
    }
    if (pm->expires_at) {
        e->expires_at = pm->expires_at;
    }
    if (knows & LLMGW_PK_QUEUE) {
        e->running = pm->running;
        e->waiting = pm->waiting;
    }
    if (knows & LLMGW_PK_KV) {
        e->kv_ppm = kv_ppm(pm->kv_usage);
    }
    return 0;
}

/* Drops the models no fact speaks for any more. */
static void compact_models(probe_t *pr)
{
    apr_uint32_t i, w = 0;

    for (i = 0; i < pr->nmodels; i++) {
        if (!pr->mflags[i]) {
            continue;
        }
        if (w != i) {
            pr->mhash[w] = pr->mhash[i];
            pr->mflags[w] = pr->mflags[i];
            pr->models[w] = pr->models[i];
        }
        w++;
    }
    pr->nmodels = w;
}

static int store_models(probe_t *pr, const llmgw_probe_t *r)
{
    unsigned knows = r->knows
                     & (LLMGW_PK_LOADED | LLMGW_PK_AVAILABLE | LLMGW_PK_QUEUE
                        | LLMGW_PK_KV);
    int pass, i, left = 0;

    clear_model_facts(pr, knows);
    compact_models(pr); /* room for this probe's models */
    /* Loaded models first: when not all fit, those matter most. */
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; r->models && i < r->models->nelts; i++) {
            const llmgw_probe_model_t *pm =
                &APR_ARRAY_IDX(r->models, i, llmgw_probe_model_t);
            int loaded =
                (pm->flags & (LLMGW_PM_LOADED | LLMGW_PM_LOADING)) != 0;

            if (loaded == (pass == 0)) {
                left += put_model(pr, pm, knows);
            }
        }
    }
    compact_models(pr);
    return left;
}

int llmgw_health_store(llmgw_health_t *t, int m, const llmgw_probe_t *r,
                       apr_time_t now)
{
    member_t *mb = member(t, m);
    probe_t *pr;
    int left = 0;

    if (!mb || !r) {
        return -1;
    }
    pr = &mb->probe;
    llmgw_seq_write_begin(&pr->seq);
    pr->probed_at = now;
    pr->ok = r->ok;
    pr->state = r->state;
    pr->at[F_STATE] = now;
    if (r->knows & LLMGW_PK_SLOTS) {
        pr->slots_total = r->slots_total;
        pr->slots_busy = r->slots_busy;
        pr->at[F_SLOTS] = now;
    }
    if (r->knows & LLMGW_PK_QUEUE) {
        pr->running = r->running;
        pr->waiting = r->waiting;
        pr->at[F_QUEUE] = now;
    }
    if (r->knows & LLMGW_PK_KV) {
        pr->kv_ppm = kv_ppm(r->kv_usage);
        pr->at[F_KV] = now;
    }
    if (r->knows
        & (LLMGW_PK_LOADED | LLMGW_PK_AVAILABLE | LLMGW_PK_QUEUE
           | LLMGW_PK_KV)) {
        left = store_models(pr, r);
    }
    if (r->knows & LLMGW_PK_LOADED) {
        pr->at[F_LOADED] = now;
    }
    if (r->knows & LLMGW_PK_AVAILABLE) {
        pr->at[F_AVAILABLE] = now;
    }
    llmgw_seq_write_end(&pr->seq);
    return left + (int)r->models_skipped;
}

llmgw_event_t llmgw_probe_event(const llmgw_probe_t *r)
{
    if (!r || !r->ok) {
        return LLMGW_EV_PROBE_FAIL;
    }
    return r->state == LLMGW_HS_LOADING ? LLMGW_EV_LOADING : LLMGW_EV_PROBE_OK;
}

/* Ollama's 503 when its queue is full (OLLAMA_MAX_QUEUE): {"error":
 * "server busy, please try again.  maximum pending requests exceeded"}. */
static int ollama_busy(apr_pool_t *p, const char *body, apr_size_t len)
{
    llmgw_json_err_t err;
    const char *msg, *e;
    llmgw_json_t *j;

    if (len > LLMGW_PROBE_MAX_BODY
        || !(j = llmgw_json_parse(p, body, len, &err, &msg))) {
        return 0;
    }
    e = llmgw_json_gets(j, "error", NULL);
    return e && strncmp(e, "server busy", 11) == 0;
}

llmgw_event_t llmgw_status_event(apr_pool_t *p, int status, const char *body,
                                 apr_size_t len)
{
    if (status == 429) {
        return LLMGW_EV_BUSY;
    }
    if (status == 503 && body && len) {
        llmgw_probe_t *r = llmgw_probe_parse(p, LLMGW_PROBE_LLAMACPP_HEALTH,
                                             status, body, len);

        if (r->ok && r->state == LLMGW_HS_LOADING) {
            return LLMGW_EV_LOADING;
        }
        if (ollama_busy(p, body, len)) {
            return LLMGW_EV_BUSY;
        }
    }
    if (status >= 500) {
        return LLMGW_EV_HTTP_5XX;
    }
    return status >= 400 ? LLMGW_EV_CLIENT_ERROR : LLMGW_EV_SUCCESS;
}

/* ---- hints ------------------------------------------------------------ */

/* Member mb's hint of the model of hash h, or NULL. */
static hint_t *find_hint(member_t *mb, apr_uint64_t h)
{
    int i;

    for (i = 0; i < LLMGW_HEALTH_HINTS; i++) {
        if (__atomic_load_n(&mb->hints[i].hash, __ATOMIC_ACQUIRE) == h) {
            return &mb->hints[i];
        }
    }
    return NULL;
}

void llmgw_health_hint(llmgw_health_t *t, int m, const char *model,
                       llmgw_hint_t kind, apr_time_t now)
{
    member_t *mb = member(t, m);
    apr_uint64_t h;
    hint_t *e = NULL;
    int i;

    if (!mb || !model || !*model) {
        return;
    }
    h = model_hash(model);
    e = find_hint(mb, h);
    if (kind == LLMGW_HINT_CLEAR) {
        /* A model being loaded is not listed yet: its hint stays. */
        if (e
            && __atomic_load_n(&e->kind, __ATOMIC_ACQUIRE)
                   != LLMGW_HINT_LOADING) {
            __atomic_store_n(&e->at, 0, __ATOMIC_RELEASE);
        }
        return;
    }
    if (!e) {
        /* The oldest gives way; two writers may pick the same one and
         * one hint is lost, which a hint may be. */
        e = &mb->hints[0];
        for (i = 1; i < LLMGW_HEALTH_HINTS; i++) {
            if (__atomic_load_n(&mb->hints[i].at, __ATOMIC_RELAXED)
                < __atomic_load_n(&e->at, __ATOMIC_RELAXED)) {
                e = &mb->hints[i];
            }
        }
        __atomic_store_n(&e->at, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&e->asked, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&e->hash, h, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&e->kind, (apr_uint32_t)kind, __ATOMIC_RELEASE);
    __atomic_store_n(&e->at, now, __ATOMIC_RELEASE);
}

/* The count in word w decayed to time ms. */
static apr_uint32_t asked_at(apr_uint64_t w, apr_uint32_t ms)
{
    apr_uint32_t c = (apr_uint32_t)w, dt = ms - (apr_uint32_t)(w >> 32);

    if (dt >= 32u * ASKED_HALF_MS) {
        return 0;
    }
    c >>= dt / ASKED_HALF_MS;
    /* Between two halvings, linearly: within 6 % of 2^-x. */
    return c
           - (apr_uint32_t)((apr_uint64_t)c * (dt % ASKED_HALF_MS)
                            / (2 * ASKED_HALF_MS));
}

void llmgw_health_asked(llmgw_health_t *t, int m, const char *model,
                        int loaded, apr_time_t now)
{
    member_t *mb = member(t, m);
    apr_uint32_t ms = (apr_uint32_t)apr_time_as_msec(now);
    apr_uint64_t h, old, w;
    hint_t *e;

    if (!mb || !model || !*model) {
        return;
    }
    h = model_hash(model);
    if (!(e = find_hint(mb, h))) {
        if (!loaded) {
            return; /* nothing loaded or loading there to weigh */
        }
        /* Loaded by the probes alone (preloaded, or another client's):
         * it is served now. */
        llmgw_health_hint(t, m, model, LLMGW_HINT_SERVED, now);
        if (!(e = find_hint(mb, h))) {
            return;
        }
    }
    old = __atomic_load_n(&e->asked, __ATOMIC_RELAXED);
    do {
        apr_uint32_t c = asked_at(old, ms);

        c = c > APR_UINT32_MAX - ASKED_ONE ? c : c + ASKED_ONE;
        w = (apr_uint64_t)ms << 32 | c;
    } while (!__atomic_compare_exchange_n(&e->asked, &old, w, 1,
                                          __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
}

/* LLMGW_HM_SERVED and LLMGW_PM_LOADING from the model's fresh hint. */
static unsigned hint_flags(const member_t *mb, apr_uint64_t h, apr_time_t now,
                           const llmgw_health_params_t *hp)
{
    int i;

    for (i = 0; i < LLMGW_HEALTH_HINTS; i++) {
        const hint_t *e = &mb->hints[i];
        apr_time_t at;
        apr_uint32_t kind;

        if (__atomic_load_n(&e->hash, __ATOMIC_ACQUIRE) != h) {
            continue;
        }
        /* 'at' is stored last: the kind read after it is as new. */
        at = __atomic_load_n(&e->at, __ATOMIC_ACQUIRE);
        kind = __atomic_load_n(&e->kind, __ATOMIC_ACQUIRE);
        if (at > 0 && kind == LLMGW_HINT_SERVED && now - at <= hp->hint_ttl) {
            return LLMGW_HM_SERVED;
        }
        if (at > 0 && kind == LLMGW_HINT_LOADING
            && now - at <= hp->loading_ttl) {
            return LLMGW_PM_LOADING;
        }
    }
    return 0;
}

/* ---- views ------------------------------------------------------------ */

void llmgw_health_params_default(llmgw_health_params_t *p)
{
    p->fresh = apr_time_from_sec(30);
    p->hint_ttl = apr_time_from_sec(300);
    p->loading_ttl = apr_time_from_sec(120);
    p->busy_queue = 4;
}

/* The state the probes give, breaker aside. */
static llmgw_hstate_t probed_state(const psum_t *ps,
                                   const llmgw_member_view_t *v,
                                   apr_time_t now,
                                   const llmgw_health_params_t *hp)
{
    int state_fresh = fresh(ps, F_STATE, now, hp);

    if (state_fresh && ps->state == LLMGW_HS_LOADING) {
        return LLMGW_HS_LOADING;
    }
    if ((state_fresh && ps->state == LLMGW_HS_BUSY)
        || (v->slots_total > 0 && v->slots_busy >= v->slots_total)
        || (hp->busy_queue > 0 && v->waiting >= hp->busy_queue)) {
        return LLMGW_HS_BUSY;
    }
    return LLMGW_HS_READY;
}

/* The member view, and the state its probes give (*probed). */
static int member_view(const llmgw_health_t *t, int m, apr_time_t now,
                       const llmgw_health_params_t *hp, llmgw_member_view_t *v,
                       llmgw_hstate_t *probed, psum_t *ps)
{
    const member_t *mb = member(t, m);

    memset(v, 0, sizeof(*v));
    memset(ps, 0, sizeof(*ps));
    if (!mb) {
        return -1;
    }
    v->breaker = llmgw_health_breaker(t, m);
    v->br_state = llmgw_breaker_state(&v->breaker, now);
    v->trial_free = v->br_state == LLMGW_BR_HALF_OPEN
                    && (v->breaker.state == LLMGW_BR_OPEN || !v->breaker.trial
                        || v->breaker.at <= now);
    v->inflight = __atomic_load_n(&mb->inflight, __ATOMIC_ACQUIRE);
    v->waiters = __atomic_load_n(&mb->waiters, __ATOMIC_ACQUIRE);
    v->slots_total = v->slots_busy = v->running = v->waiting = -1;
    v->kv_usage = -1.0;
    read_summary(mb, ps);
    if (ps->valid) {
        v->probed_at = ps->probed_at;
        v->probe_state = (llmgw_hstate_t)ps->state;
        v->probe_ok = ps->ok;
        v->models = (int)ps->nmodels;
    }
    if (fresh(ps, F_SLOTS, now, hp)) {
        v->slots_total = ps->slots_total;
        v->slots_busy = ps->slots_busy;
    }
    if (fresh(ps, F_QUEUE, now, hp)) {
        v->running = ps->running;
        v->waiting = ps->waiting;
    }
    if (fresh(ps, F_KV, now, hp) && ps->kv_ppm >= 0) {
        v->kv_usage = (double)ps->kv_ppm / 1e6;
    }
    *probed = probed_state(ps, v, now, hp);
    v->state = v->br_state == LLMGW_BR_CLOSED ? *probed : LLMGW_HS_DOWN;
    return 0;
}

int llmgw_health_member(const llmgw_health_t *t, int m, apr_time_t now,
                        const llmgw_health_params_t *hp,
                        llmgw_member_view_t *v)
{
    llmgw_hstate_t probed;
    psum_t ps;

    return member_view(t, m, now, hp, v, &probed, &ps);
}

/* The fresh flags of model on member m. */
static unsigned model_flags(const llmgw_health_t *t, int m, const char *model,
                            const psum_t *ps, apr_time_t now,
                            const llmgw_health_params_t *hp)
{
    const member_t *mb = member(t, m);
    apr_uint64_t h = model_hash(model);
    int stored = read_model_flags(mb, model, h);
    unsigned f = 0;

    if (stored > 0 && fresh(ps, F_LOADED, now, hp)) {
        f |= (unsigned)stored & (LLMGW_PM_LOADED | LLMGW_PM_LOADING);
    }
    if (stored > 0 && fresh(ps, F_AVAILABLE, now, hp)) {
        f |= (unsigned)stored & LLMGW_PM_AVAILABLE;
    }
    return f | hint_flags(mb, h, now, hp);
}

static llmgw_hstate_t model_state(llmgw_hstate_t member_state, unsigned f,
                                  const psum_t *ps, apr_time_t now,
                                  const llmgw_health_params_t *hp)
{
    if (member_state == LLMGW_HS_DOWN) {
        return LLMGW_HS_DOWN;
    }
    if ((f & LLMGW_PM_LOADING) && !(f & (LLMGW_PM_LOADED | LLMGW_HM_SERVED))) {
        return LLMGW_HS_LOADING;
    }
    if (!f && fresh(ps, F_AVAILABLE, now, hp)) {
        return LLMGW_HS_ABSENT;
    }
    return member_state;
}

llmgw_hstate_t llmgw_health_model(const llmgw_health_t *t, int m,
                                  const char *model, apr_time_t now,
                                  const llmgw_health_params_t *hp,
                                  unsigned *flags)
{
    llmgw_member_view_t v;
    llmgw_hstate_t probed;
    psum_t ps;
    unsigned f;

    if (flags) {
        *flags = 0;
    }
    if (member_view(t, m, now, hp, &v, &probed, &ps) != 0 || !model) {
        return LLMGW_HS_UNKNOWN;
    }
    f = model_flags(t, m, model, &ps, now, hp);
    if (flags) {
        *flags = f;
    }
    return model_state(v.state, f, &ps, now, hp);
}

int llmgw_health_models(const llmgw_health_t *t, int m,
                        llmgw_health_model_t *out, int max)
{
    const member_t *mb = member(t, m);
    const probe_t *pr;
    apr_uint32_t s;
    int tries, i, n = 0;

    if (!mb || max < 0) {
        return -1;
    }
    pr = &mb->probe;
    for (tries = 0; tries < READ_TRIES; tries++) {
        if (!llmgw_seq_read_begin(&pr->seq, &s)) {
            continue;
        }
        n = (int)(pr->nmodels < LLMGW_HEALTH_MODELS ? pr->nmodels
                                                    : LLMGW_HEALTH_MODELS);
        n = n < max ? n : max;
        n = stale(mb, pr->probed_at) ? 0 : n;
        for (i = 0; i < n; i++) {
            const pmodel_t *e = &pr->models[i];

            memcpy(out[i].name, e->name, sizeof(out[i].name));
            out[i].name[sizeof(out[i].name) - 1] = '\0';
            out[i].flags = pr->mflags[i];
            out[i].size_vram = e->size_vram;
            out[i].expires_at = e->expires_at;
            out[i].running = e->running;
            out[i].waiting = e->waiting;
            out[i].kv_usage = e->kv_ppm >= 0 ? (double)e->kv_ppm / 1e6 : -1.0;
        }
        if (llmgw_seq_read_end(&pr->seq, s)) {
            return n;
        }
    }
    return -1;
}

/* What member m holds besides hash h, by the hints (into out): what the
 * others were asked lately, whether one is loading, how many there are. */
static void affinity_others(const member_t *mb, apr_uint64_t h, apr_time_t now,
                            const llmgw_health_params_t *hp,
                            llmgw_aff_member_t *out)
{
    apr_uint32_t ms = (apr_uint32_t)apr_time_as_msec(now);
    int i;

    for (i = 0; i < LLMGW_HEALTH_HINTS; i++) {
        const hint_t *e = &mb->hints[i];
        apr_uint64_t eh = __atomic_load_n(&e->hash, __ATOMIC_ACQUIRE);
        apr_time_t at = __atomic_load_n(&e->at, __ATOMIC_ACQUIRE);
        apr_uint32_t kind = __atomic_load_n(&e->kind, __ATOMIC_ACQUIRE);
        int loading =
            kind == LLMGW_HINT_LOADING && now - at <= hp->loading_ttl;

        if (!eh || at <= 0
            || (!loading
                && (kind != LLMGW_HINT_SERVED || now - at > hp->hint_ttl))) {
            continue;
        }
        out->resident++;
        if (eh == h) {
            continue;
        }
        out->loading_other |= loading;
        out->others +=
            asked_at(__atomic_load_n(&e->asked, __ATOMIC_RELAXED), ms);
    }
}

void llmgw_health_affinity(const llmgw_health_t *t, int m, const char *model,
                           apr_time_t now, const llmgw_health_params_t *hp,
                           llmgw_aff_member_t *out)
{
    llmgw_member_view_t v;
    llmgw_hstate_t probed, st;
    psum_t ps;
    unsigned f = 0;

    llmgw_affinity_unknown(out, LLMGW_HS_DOWN);
    if (member_view(t, m, now, hp, &v, &probed, &ps) != 0) {
        return;
    }
    affinity_others(member(t, m), model ? model_hash(model) : 0, now, hp, out);
    /* Half-open with the trial free: a candidate on its merits. */
    out->state =
        v.br_state == LLMGW_BR_CLOSED || v.trial_free ? probed : LLMGW_HS_DOWN;
    out->inflight = v.inflight;
    out->slots_total = v.slots_total;
    out->slots_busy = v.slots_busy;
    out->waiting = v.waiting;
    if (model) {
        f = model_flags(t, m, model, &ps, now, hp);
    }
    st = model_state(out->state, f, &ps, now, hp);
    if (st == LLMGW_HS_ABSENT) {
        out->model = LLMGW_AFF_ABSENT;
    }
    else if (f & (LLMGW_PM_LOADED | LLMGW_HM_SERVED)) {
        out->model = LLMGW_AFF_LOADED;
    }
    else if (f & LLMGW_PM_LOADING) {
        out->model = LLMGW_AFF_LOADING;
    }
    else if (f & LLMGW_PM_AVAILABLE) {
        out->model = LLMGW_AFF_COLD;
    }
    /* llama.cpp's "Loading model" (the emulated member says it while it
     * loads any model) is a load of another one, unless of this one. */
    if (probed == LLMGW_HS_LOADING && out->model != LLMGW_AFF_LOADING) {
        out->loading_other = 1;
    }
}

llmgw_event_t llmgw_health_classify(const llmgw_health_t *t, int m,
                                    llmgw_event_t ev, const char *model,
                                    apr_time_t now,
                                    const llmgw_health_params_t *hp)
{
    llmgw_member_view_t v;
    llmgw_hstate_t probed;
    psum_t ps;

    if ((ev != LLMGW_EV_TIMEOUT_FIRST_BYTE
         && ev != LLMGW_EV_TIMEOUT_FIRST_TOKEN)
        || member_view(t, m, now, hp, &v, &probed, &ps) != 0) {
        return ev;
    }
    if (probed == LLMGW_HS_LOADING
        || (model
            && (model_flags(t, m, model, &ps, now, hp) & LLMGW_PM_LOADING))) {
        return LLMGW_EV_LOADING;
    }
    return ev;
}

/* ---- admission -------------------------------------------------------- */

apr_int64_t llmgw_health_limit(const llmgw_health_t *t, int m,
                               apr_int64_t configured, apr_time_t now,
                               const llmgw_health_params_t *hp)
{
    llmgw_member_view_t v;

    if (configured > 0) {
        return configured;
    }
    if (llmgw_health_member(t, m, now, hp, &v) != 0) {
        return 0;
    }
    if (v.slots_total > 0) {
        return v.slots_total;
    }
    if (v.waiting > 0) {
        return v.inflight > 0 ? v.inflight : 1;
    }
    return 0;
}

int llmgw_health_admit(llmgw_health_t *t, int m, apr_int64_t limit)
{
    member_t *mb = member(t, m);
    apr_int64_t cur;

    if (!mb) {
        return 0;
    }
    cur = __atomic_load_n(&mb->inflight, __ATOMIC_ACQUIRE);
    do {
        if (limit > 0 && cur >= limit) {
            return 0;
        }
    } while (!__atomic_compare_exchange_n(&mb->inflight, &cur, cur + 1, 0,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    return 1;
}

void llmgw_health_release(llmgw_health_t *t, int m)
{
    member_t *mb = member(t, m);

    if (mb) {
        llmgw_counter_down(&mb->inflight);
    }
}

llmgw_admit_t llmgw_health_admit_step(llmgw_health_t *t, int m,
                                      apr_int64_t limit,
                                      apr_int64_t max_waiters,
                                      apr_time_t deadline, apr_time_t now,
                                      int *queued)
{
    member_t *mb = member(t, m);

    if (!mb) {
        return LLMGW_ADMIT_FULL;
    }
    if (!*queued) {
        if (__atomic_load_n(&mb->waiters, __ATOMIC_ACQUIRE) == 0
            && llmgw_health_admit(t, m, limit)) {
            return LLMGW_ADMIT_GO;
        }
        if (now >= deadline) {
            return LLMGW_ADMIT_TIMEOUT;
        }
        if (!llmgw_counter_up(&mb->waiters, max_waiters)) {
            return LLMGW_ADMIT_FULL;
        }
        *queued = 1;
        return LLMGW_ADMIT_WAIT;
    }
    if (llmgw_health_admit(t, m, limit)) {
        llmgw_health_admit_cancel(t, m, queued);
        return LLMGW_ADMIT_GO;
    }
    if (now >= deadline) {
        llmgw_health_admit_cancel(t, m, queued);
        return LLMGW_ADMIT_TIMEOUT;
    }
    return LLMGW_ADMIT_WAIT;
}

void llmgw_health_admit_cancel(llmgw_health_t *t, int m, int *queued)
{
    member_t *mb = member(t, m);

    if (mb && *queued) {
        llmgw_counter_down(&mb->waiters);
    }
    *queued = 0;
}

/* ---- mod_proxy's view ------------------------------------------------- */

unsigned llmgw_health_mirror_want(const llmgw_member_view_t *v,
                                  int drain_loading)
{
    unsigned want = 0;

    if (v->br_state == LLMGW_BR_OPEN) {
        want |= LLMGW_MIRROR_FAIL;
    }
    else if (v->br_state == LLMGW_BR_HALF_OPEN
             || (drain_loading && v->state == LLMGW_HS_LOADING)) {
        want |= LLMGW_MIRROR_DRAIN;
    }
    return want;
}

unsigned llmgw_health_mirror_swap(llmgw_health_t *t, int m, unsigned want,
                                  unsigned *set, unsigned *clear)
{
    member_t *mb = member(t, m);
    unsigned old;

    *set = *clear = 0;
    if (!mb) {
        return 0;
    }
    old = __atomic_exchange_n(&mb->mirrored, want, __ATOMIC_ACQ_REL);
    *set = want & ~old;
    *clear = old & ~want;
    return old;
}
