/* llmgw_shmtab: the ring holds records back to back at ever-growing
 * positions (taken modulo its size); the bytes written so far, 'head',
 * tell which records are still whole: one at pos is intact as long as
 * head <= pos + ring. An index slot names a record by position, and a key
 * looks at PROBES slots from its hash, so nothing ever scans the table.
 * Nothing here points: the block may sit at another address in each
 * process.
 *
 * Readers need no lock (llmgw_shmtab_peek): a writer moves head past the
 * bytes it is about to overwrite before it writes them, and publishes a
 * slot only once its record is written; a reader copies a record, then
 * looks at head again: if head went past the record meanwhile, the copy
 * may be torn and is thrown away. Writers hold the caller's lock. */
#include <string.h>

#include <apr_errno.h>
#include <apr_strings.h>

#include "llmgw_shmtab.h"
#include "llmgw_hash.h"

#define PROBES 8
#define ALIGN8(n) (((n) + 7) & ~(apr_size_t)7)

typedef struct {
    apr_uint64_t pos1; /* record position + 1; 0: empty */
    apr_uint32_t hash; /* the key's hash, to skip most compares */
    apr_uint32_t pad;
} slot_t;

typedef struct {
    apr_uint32_t klen;
    apr_uint32_t vlen;
    apr_int64_t expiry;
} rec_t;

struct llmgw_shmtab {
    apr_uint64_t nslots;
    apr_uint64_t ring; /* bytes of ring */
    apr_uint64_t head; /* bytes ever written to it */
};

#define SLOTS(t) ((slot_t *)((char *)(t) + ALIGN8(sizeof(llmgw_shmtab_t))))
#define RING(t) ((char *)(SLOTS(t) + (t)->nslots))

llmgw_shmtab_t *llmgw_shmtab_init(void *mem, apr_size_t size,
                                  apr_size_t avg_item)
{
    llmgw_shmtab_t *t = mem;
    apr_size_t top = ALIGN8(sizeof(*t)), n;

    if (avg_item < sizeof(rec_t) || size < top + 64 * sizeof(slot_t)) {
        return NULL;
    }
    /* Each slot costs sizeof(slot_t) and stands for avg_item of ring. */
    n = (size - top) / (avg_item + sizeof(slot_t));
    if (n < PROBES || n > 0xffffffffu) {
        return NULL;
    }
    t->nslots = n;
    t->ring = (size - top - n * sizeof(slot_t)) & ~(apr_uint64_t)7;
    t->head = 0;
    return t;
}

apr_size_t llmgw_shmtab_max_item(const llmgw_shmtab_t *t, apr_size_t klen)
{
    /* At most half the ring: a record never evicts most of the table. */
    apr_uint64_t half = t->ring / 2 < 0x7fffffffu ? t->ring / 2 : 0x7fffffffu;
    apr_size_t over = ALIGN8(sizeof(rec_t) + klen) + 8;

    return half > over ? (apr_size_t)half - over : 0;
}

static apr_uint64_t hash_of(const char *key, apr_size_t klen)
{
    return llmgw_fnv1a64(key, klen);
}

apr_uint64_t llmgw_shmtab_hash(const char *key, apr_size_t klen)
{
    return hash_of(key, klen);
}

/* The record a slot names, or NULL once the ring went past it. */
static rec_t *rec_at(llmgw_shmtab_t *t, const slot_t *s)
{
    apr_uint64_t pos;

    if (!s->pos1) {
        return NULL;
    }
    pos = s->pos1 - 1;
    if (t->head > pos + t->ring) {
        return NULL;
    }
    return (rec_t *)(RING(t) + pos % t->ring);
}

/* The slot holding key, or NULL; *first: the first of its probes. */
static slot_t *find(llmgw_shmtab_t *t, const char *key, apr_size_t klen,
                    apr_uint64_t h, apr_uint32_t *first)
{
    slot_t *slots = SLOTS(t);
    apr_uint32_t i, k = (apr_uint32_t)(h >> 32);

    *first = (apr_uint32_t)(h % t->nslots);
    for (i = 0; i < PROBES; i++) {
        slot_t *s = &slots[(*first + i) % t->nslots];
        rec_t *r;

        if (s->pos1 && s->hash == k && (r = rec_at(t, s)) != NULL
            && r->klen == klen && memcmp(r + 1, key, klen) == 0) {
            return s;
        }
    }
    return NULL;
}

apr_status_t llmgw_shmtab_get(llmgw_shmtab_t *t, const char *key,
                              apr_size_t klen, apr_time_t now, apr_pool_t *p,
                              char **val, apr_size_t *len)
{
    apr_uint32_t first;
    slot_t *s = find(t, key, klen, hash_of(key, klen), &first);
    rec_t *r;

    if (!s) {
        return APR_NOTFOUND;
    }
    r = rec_at(t, s);
    if (r->expiry <= now) {
        __atomic_store_n(&s->pos1, 0, __ATOMIC_RELEASE);
        return APR_NOTFOUND;
    }
    *len = r->vlen;
    *val = apr_pmemdup(p, (char *)(r + 1) + klen, r->vlen);
    return APR_SUCCESS;
}

apr_status_t llmgw_shmtab_peek(llmgw_shmtab_t *t, const char *key,
                               apr_size_t klen, apr_time_t now, apr_pool_t *p,
                               char **val, apr_size_t *len)
{
    apr_uint64_t h = hash_of(key, klen), ring = t->ring;
    slot_t *slots = SLOTS(t);
    apr_uint32_t first = (apr_uint32_t)(h % t->nslots), i;

    for (i = 0; i < PROBES; i++) {
        slot_t *s = &slots[(first + i) % t->nslots];
        apr_uint64_t pos1 = __atomic_load_n(&s->pos1, __ATOMIC_ACQUIRE);
        apr_uint64_t pos = pos1 - 1, off = pos % ring;
        rec_t rec;
        char *copy;

        if (!pos1 || s->hash != (apr_uint32_t)(h >> 32)
            || __atomic_load_n(&t->head, __ATOMIC_ACQUIRE) > pos + ring) {
            continue;
        }
        memcpy(&rec, RING(t) + off, sizeof(rec));
        /* What a torn header could claim must stay inside the ring. */
        if (rec.klen != klen
            || (apr_uint64_t)rec.vlen > ring - off - sizeof(rec) - klen
            || memcmp(RING(t) + off + sizeof(rec), key, klen) != 0) {
            continue;
        }
        copy = apr_palloc(p, rec.vlen ? rec.vlen : 1);
        memcpy(copy, RING(t) + off + sizeof(rec) + klen, rec.vlen);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&t->head, __ATOMIC_RELAXED) > pos + ring) {
            return APR_NOTFOUND; /* overwritten while we copied */
        }
        if (rec.expiry <= now) {
            return APR_NOTFOUND;
        }
        *val = copy;
        *len = rec.vlen;
        return APR_SUCCESS;
    }
    return APR_NOTFOUND;
}

apr_status_t llmgw_shmtab_set(llmgw_shmtab_t *t, const char *key,
                              apr_size_t klen, const char *val, apr_size_t len,
                              apr_time_t expiry)
{
    apr_uint64_t h = hash_of(key, klen), off, pos;
    apr_size_t need = ALIGN8(sizeof(rec_t) + klen + len);
    slot_t *slots = SLOTS(t), *s, *victim = NULL;
    apr_uint32_t first, i;
    rec_t *r;

    if (len > llmgw_shmtab_max_item(t, klen)) {
        return APR_ENOSPC;
    }
    s = find(t, key, klen, h, &first);
    /* Else the first free (or stale) probe, or the oldest. */
    for (i = 0; !s && i < PROBES; i++) {
        slot_t *c = &slots[(first + i) % t->nslots];

        if (!rec_at(t, c)) {
            s = c;
        }
        else if (!victim || c->pos1 < victim->pos1) {
            victim = c;
        }
    }
    if (!s) {
        s = victim;
    }
    /* A record is never split: skip the ring's tail if it is too short. */
    pos = t->head;
    off = pos % t->ring;
    if (off + need > t->ring) {
        pos += t->ring - off;
        off = 0;
    }
    /* Readers must see the bytes below given up before they change. */
    __atomic_store_n(&t->head, pos + need, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    r = (rec_t *)(RING(t) + off);
    r->klen = (apr_uint32_t)klen;
    r->vlen = (apr_uint32_t)len;
    r->expiry = expiry;
    memcpy(r + 1, key, klen);
    memcpy((char *)(r + 1) + klen, val, len);
    s->hash = (apr_uint32_t)(h >> 32);
    __atomic_store_n(&s->pos1, pos + 1, __ATOMIC_RELEASE);
    return APR_SUCCESS;
}

apr_status_t llmgw_shmtab_del(llmgw_shmtab_t *t, const char *key,
                              apr_size_t klen)
{
    apr_uint32_t first;
    slot_t *s = find(t, key, klen, hash_of(key, klen), &first);

    if (!s) {
        return APR_NOTFOUND;
    }
    __atomic_store_n(&s->pos1, 0, __ATOMIC_RELEASE);
    return APR_SUCCESS;
}

apr_size_t llmgw_shmtab_count(const llmgw_shmtab_t *t)
{
    llmgw_shmtab_t *tt = (llmgw_shmtab_t *)t;
    apr_size_t i, n = 0;

    for (i = 0; i < t->nslots; i++) {
        n += rec_at(tt, &SLOTS(tt)[i]) != NULL;
    }
    return n;
}
