/* llmgw_limits_persist: the limits table beyond one process's lifetime
 * and one node: snapshots (write, check, restore) and cluster sync. */
#include <stddef.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_limits_int.h"
#include "llmgw_sha256.h"

/* ---------------------------------------------------------------------
 * Snapshots: "LLGWLSN1", version, subjects, time, then per subject its
 * name and the words below, then the SHA-256 of all before it. Words are
 * little-endian whatever the machine.
 */

#define SNAP_MAGIC "LLGWLSN1"
#define SNAP_HEAD 32

static const apr_size_t snap_words[] = {
    offsetof(subj_t, rq.debt),    offsetof(subj_t, rq.last),
    offsetof(subj_t, rq.local),   offsetof(subj_t, rq.synced),
    offsetof(subj_t, rq.seen),    offsetof(subj_t, tk.debt),
    offsetof(subj_t, tk.last),    offsetof(subj_t, tk.local),
    offsetof(subj_t, tk.synced),  offsetof(subj_t, tk.seen),
    offsetof(subj_t, requests),   offsetof(subj_t, refused[1]),
    offsetof(subj_t, refused[2]), offsetof(subj_t, refused[3]),
    offsetof(subj_t, refused[4]), offsetof(subj_t, refused[5]),
    offsetof(subj_t, prompt),     offsetof(subj_t, completion),
    offsetof(subj_t, cost),       offsetof(subj_t, reclaimed),
    offsetof(subj_t, late)
};
#define SNAP_NW (sizeof(snap_words) / sizeof(snap_words[0]))

static const apr_size_t snap_budget[] = {
    offsetof(budget_t, conf),        offsetof(budget_t, period),
    offsetof(budget_t, used),        offsetof(budget_t, reserved),
    offsetof(budget_t, remote),      offsetof(budget_t, synced),
    offsetof(budget_t, prev_period), offsetof(budget_t, prev_used)
};
#define SNAP_NB (sizeof(snap_budget) / sizeof(snap_budget[0]))
#define SNAP_REC_WORDS (SNAP_NW + NB * SNAP_NB)

static void put64(unsigned char *p, apr_uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static apr_uint64_t get64(const unsigned char *p)
{
    apr_uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static apr_size_t snap_rec_size(apr_size_t namelen)
{
    return 8 + ALIGN8(namelen) + 8 * SNAP_REC_WORDS;
}

/* What a snapshot may hold (it is read back from a file anyone with the
 * runtime directory could have written): counts far below 2^63, so that
 * sums of a few never overflow, and period ids whose start is a time
 * (under 2^63 microseconds: about year 200000). */
#define SNAP_COUNT_MAX ((apr_int64_t)1 << 60)

static apr_int64_t word_at(const void *base, apr_size_t off)
{
    return *(const apr_int64_t *)((const char *)base + off);
}

/* The count at base + off as a snapshot holds it: a table restored from a
 * snapshot at the bound may count past it, and a snapshot the reader
 * refuses would lose every count at the next start; so it is written at
 * the bound (2^60 tokens or requests never come otherwise). */
static apr_int64_t count_at(const void *base, apr_size_t off)
{
    apr_int64_t v = word_at(base, off);

    return v > SNAP_COUNT_MAX ? SNAP_COUNT_MAX : v;
}

/* One subject's name and words at out; returns the bytes written. */
static apr_size_t snap_write(unsigned char *out, const subj_t *s)
{
    apr_size_t off = 8 + ALIGN8(s->namelen), k;
    int b;

    memset(out, 0, off);
    out[0] = (unsigned char)s->namelen;
    out[1] = (unsigned char)(s->namelen >> 8);
    out[2] = (unsigned char)s->flags;
    memcpy(out + 8, s->name, s->namelen);
    for (k = 0; k < SNAP_NW; k++, off += 8) {
        put64(out + off, (apr_uint64_t)count_at(s, snap_words[k]));
    }
    for (b = 0; b < NB; b++) {
        for (k = 0; k < SNAP_NB; k++, off += 8) {
            /* Its first word is the budget's conf, not a count. */
            put64(out + off,
                  (apr_uint64_t)(k ? count_at(&s->b[b], snap_budget[k])
                                   : word_at(&s->b[b], snap_budget[k])));
        }
    }
    return off;
}

apr_status_t llmgw_limits_snapshot(llmgw_limits_t *t, apr_pool_t *p,
                                   apr_time_t now, const char **buf,
                                   apr_size_t *len)
{
    apr_size_t size = SNAP_HEAD + LLMGW_SHA256_LEN, off = SNAP_HEAD;
    apr_uint64_t i, n = 0;
    unsigned char *out;
    llmgw_sha256_t c;
    apr_status_t rv;
    subj_t copy;

    if ((rv = lm_lock(t)) != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; i < t->max_subjects; i++) {
        if ((SUBJ(t, i)->state & 0xff) != S_FREE) {
            size += snap_rec_size(SUBJ(t, i)->namelen);
        }
    }
    lm_unlock(t);
    out = apr_palloc(p, size);
    /* A subject at a time: a big table never holds admissions up. One
     * added since the count waits for the next snapshot. */
    for (i = 0; i < t->max_subjects; i++) {
        if ((rv = lm_lock(t)) != APR_SUCCESS) {
            return rv;
        }
        memcpy(&copy, SUBJ(t, i), sizeof(copy));
        lm_unlock(t);
        if ((copy.state & 0xff) == S_FREE
            || snap_rec_size(copy.namelen) > size - LLMGW_SHA256_LEN - off) {
            continue;
        }
        off += snap_write(out + off, &copy);
        n++;
    }
    memcpy(out, SNAP_MAGIC, 8);
    put64(out + 8, VERSION | (apr_uint64_t)SNAP_REC_WORDS << 32);
    put64(out + 16, n);
    put64(out + 24, (apr_uint64_t)now);
    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, out, off);
    llmgw_sha256_final(&c, out + off);
    *buf = (const char *)out;
    *len = off + LLMGW_SHA256_LEN;
    return APR_SUCCESS;
}

static int period_ok(apr_int64_t conf, apr_int64_t id)
{
    static const apr_int64_t most[] = { 0, 2000000000, 80000000, 2400000 };
    int per = B_PER(conf);

    return id >= 0
           && (!conf
               || (per >= LLMGW_PER_HOUR && per <= LLMGW_PER_MONTH
                   && id <= most[per]));
}

/* One subject of a snapshot, read and checked. */
typedef struct {
    const char *name;
    apr_size_t namelen;
    int flags;
    apr_int64_t w[SNAP_NW];
    apr_int64_t b[NB][SNAP_NB];
} snap_subj_t;

static const char *snap_read(const unsigned char *in, apr_size_t len,
                             apr_size_t *off, snap_subj_t *ss)
{
    apr_size_t k, o = *off;
    int b;

    if (len - o < 8) {
        return "truncated";
    }
    ss->namelen = in[o] | (apr_size_t)in[o + 1] << 8;
    ss->flags = in[o + 2];
    if (!ss->namelen || ss->namelen > LLMGW_LIMITS_NAME_MAX
        || (ss->flags & ~SF_DYNAMIC)) {
        return "a subject's header is invalid";
    }
    if (len - o < snap_rec_size(ss->namelen)) {
        return "truncated";
    }
    ss->name = (const char *)in + o + 8;
    o += 8 + ALIGN8(ss->namelen);
    for (k = 0; k < SNAP_NW; k++, o += 8) {
        ss->w[k] = (apr_int64_t)get64(in + o);
        if (ss->w[k] < 0 || ss->w[k] > SNAP_COUNT_MAX) {
            return "a count is out of range";
        }
    }
    for (b = 0; b < NB; b++) {
        for (k = 0; k < SNAP_NB; k++, o += 8) {
            ss->b[b][k] = (apr_int64_t)get64(in + o);
            if (ss->b[b][k] < 0 || (k != 0 && ss->b[b][k] > SNAP_COUNT_MAX)) {
                return "a count is out of range";
            }
        }
        if (!period_ok(ss->b[b][0], ss->b[b][1])
            || !period_ok(ss->b[b][0], ss->b[b][6])) {
            return "a budget's period is out of range";
        }
    }
    *off = o;
    return NULL;
}

static const char *snap_check(const unsigned char *in, apr_size_t len,
                              apr_uint64_t *n)
{
    unsigned char d[LLMGW_SHA256_LEN];
    llmgw_sha256_t c;
    apr_size_t off = SNAP_HEAD, body;
    snap_subj_t ss;
    apr_uint64_t i;
    const char *why;

    if (len < SNAP_HEAD + LLMGW_SHA256_LEN || memcmp(in, SNAP_MAGIC, 8) != 0) {
        return "not a limits snapshot";
    }
    if (get64(in + 8) != (VERSION | (apr_uint64_t)SNAP_REC_WORDS << 32)) {
        return "a snapshot of another version";
    }
    body = len - LLMGW_SHA256_LEN;
    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, in, body);
    llmgw_sha256_final(&c, d);
    if (memcmp(d, in + body, LLMGW_SHA256_LEN) != 0) {
        return "checksum mismatch (truncated or corrupt)";
    }
    *n = get64(in + 16);
    for (i = 0; i < *n; i++) {
        if ((why = snap_read(in, body, &off, &ss)) != NULL) {
            return why;
        }
    }
    return off == body ? NULL : "trailing bytes";
}

/* Puts one snapshot subject's counts into s. */
static void snap_apply(tab_t *t, subj_t *s, const snap_subj_t *ss)
{
    int charge = (t->flags & LLMGW_LIMITS_LEAK_CHARGE) != 0;
    apr_size_t k;
    int i, j;

    for (k = 0; k < SNAP_NW; k++) {
        lm_jset(t, (char *)s + snap_words[k], ss->w[k]);
    }
    lm_set_debt(t, &s->rq, s->rq.debt, s->rq.last);
    lm_set_debt(t, &s->tk, s->tk.debt, s->tk.last);
    for (i = 0; i < NB; i++) {
        budget_t *b = &s->b[i];

        for (j = 0; b->conf && j < NB; j++) {
            const apr_int64_t *w = ss->b[j];

            if (w[0] != b->conf) {
                continue;
            }
            lm_jset(t, &b->period, w[1]);
            lm_jset(t, &b->used, charge ? lm_sat_add(w[2], w[3]) : w[2]);
            lm_jset(t, &b->reserved, 0);
            lm_jset(t, &b->remote, w[4]);
            lm_jset(t, &b->synced, MIN(w[5], b->used));
            lm_jset(t, &b->prev_period, w[6]);
            lm_jset(t, &b->prev_used, w[7]);
        }
    }
}

apr_status_t llmgw_limits_restore(llmgw_limits_t *t, const char *buf,
                                  apr_size_t len, apr_time_t now,
                                  int *restored, int *dropped,
                                  const char **why)
{
    const unsigned char *in = (const unsigned char *)buf;
    apr_size_t off = SNAP_HEAD;
    int ok = 0, lost = 0;
    const char *bad;
    apr_uint64_t n, i;
    snap_subj_t ss;
    apr_status_t rv;

    if (!buf || (bad = snap_check(in, len, &n)) != NULL) {
        *why = buf ? bad : "no snapshot";
        return APR_EINVAL;
    }
    if ((rv = lm_lock(t)) != APR_SUCCESS) {
        *why = "the table's lock failed";
        return rv;
    }
    for (i = 0; i < n; i++) {
        apr_int64_t at;
        subj_t *s = NULL;

        snap_read(in, len - LLMGW_SHA256_LEN, &off, &ss);
        at = lm_find_any(t, ss.name, ss.namelen);
        if (at >= 0) {
            s = SUBJ(t, at);
        }
        else if ((ss.flags & SF_DYNAMIC) && t->has_dynamic) {
            s = lm_insert(t, ss.name, ss.namelen,
                          lm_hash_of(ss.name, ss.namelen), t->dyn, SF_DYNAMIC);
        }
        if (s) {
            snap_apply(t, s, &ss);
            ok++;
        }
        else {
            lost++;
        }
        lm_commit(t);
    }
    lm_unlock(t);
    (void)now;
    if (restored) {
        *restored = ok;
    }
    if (dropped) {
        *dropped = lost;
    }
    *why = NULL;
    return APR_SUCCESS;
}

/* ---------------------------------------------------------------------
 * Cluster sync
 */

enum { C_REQUESTS = NB, C_TOKENS = NB + 1, C_END = NB + 2 };
#define CURSOR_DONE 0xffffffffu

static int sync_item(tab_t *t, apr_uint64_t i, int counter, apr_time_t now,
                     llmgw_limits_sync_t *it)
{
    static const char per_code[] = "?hdm";
    subj_t *s = SUBJ(t, i);
    apr_int64_t local, synced;
    char hex[17];

    if (counter < NB) {
        budget_t *b = &s->b[counter];

        if (!b->conf) {
            return 0;
        }
        lm_roll(t, b, now);
        lm_commit(t);
        local = b->used;
        synced = b->synced;
        it->period = b->period;
        it->expires = lm_budget_reset(t, b, now) / APR_USEC_PER_SEC
                      + (B_PER(b->conf) == LLMGW_PER_HOUR ? 3600 : 86400);
    }
    else {
        bucket_t *q = counter == C_REQUESTS ? &s->rq : &s->tk;

        if (!q->limit) {
            return 0;
        }
        local = q->local;
        synced = q->synced;
        it->period = 0;
        it->expires = 0;
    }
    apr_snprintf(hex, sizeof(hex), "%016" APR_UINT64_T_HEX_FMT,
                 (apr_uint64_t)s->digest);
    if (counter < NB) {
        apr_snprintf(
            it->key, sizeof(it->key), "lim:%s:%c%c:%" APR_INT64_T_FMT, hex,
            B_UNIT(s->b[counter].conf) == LLMGW_BUDGET_TOKENS ? 't' : 'c',
            per_code[B_PER(s->b[counter].conf)], it->period);
    }
    else {
        apr_snprintf(it->key, sizeof(it->key), "lim:%s:%s", hex,
                     counter == C_REQUESTS ? "rq" : "tk");
    }
    it->delta = (apr_uint64_t)MAX(0, local - synced);
    it->mark = (apr_uint64_t)local;
    it->index = (apr_uint32_t)i;
    it->gen = (apr_uint32_t)(s->state >> 8);
    it->counter = counter;
    return 1;
}

int llmgw_limits_sync_collect(llmgw_limits_t *t, apr_uint32_t *cursor,
                              apr_time_t now, llmgw_limits_sync_t *items,
                              int max)
{
    apr_uint64_t at = *cursor / C_END;
    int counter = (int)(*cursor % C_END), n = 0;

    if (*cursor == CURSOR_DONE) {
        *cursor = 0;
        return 0;
    }
    if (max < 1 || lm_lock(t) != APR_SUCCESS) {
        return 0;
    }
    for (; at < t->max_subjects && n < max; at++, counter = 0) {
        if ((SUBJ(t, at)->state & 0xff) != S_LIVE) {
            continue;
        }
        for (; counter < C_END && n < max; counter++) {
            n += sync_item(t, at, counter, now, &items[n]);
        }
        if (counter < C_END) {
            break;
        }
    }
    lm_unlock(t);
    *cursor = at < t->max_subjects ? (apr_uint32_t)(at * C_END + counter)
                                   : CURSOR_DONE;
    if (!n && *cursor == CURSOR_DONE) {
        *cursor = 0;
    }
    return n;
}

apr_status_t llmgw_limits_sync_apply(llmgw_limits_t *t,
                                     const llmgw_limits_sync_t *it,
                                     apr_uint64_t total, apr_time_t now)
{
    apr_int64_t mark = (apr_int64_t)MIN(it->mark, (apr_uint64_t)APR_INT64_MAX);
    apr_int64_t others =
        total >= it->mark
            ? (apr_int64_t)MIN(total - it->mark, (apr_uint64_t)APR_INT64_MAX)
            : -1;
    apr_status_t rv;
    subj_t *s;

    if (it->counter < 0 || it->counter >= C_END) {
        return APR_EINVAL;
    }
    if ((rv = lm_lock(t)) != APR_SUCCESS) {
        return rv;
    }
    s = lm_handle(t, it->index, it->gen);
    if (s && it->counter < NB && s->b[it->counter].conf) {
        budget_t *b = &s->b[it->counter];

        lm_roll(t, b, now);
        if (b->period == it->period) {
            lm_jset(t, &b->synced, MAX(b->synced, MIN(mark, b->used)));
            if (others > b->remote) {
                lm_jset(t, &b->remote, MIN(others, LLMGW_LIMITS_AMOUNT_MAX));
            }
        }
    }
    else if (s && it->counter >= NB) {
        bucket_t *q = it->counter == C_REQUESTS ? &s->rq : &s->tk;

        lm_jset(t, &q->synced, MAX(q->synced, MIN(mark, q->local)));
        if (others > q->seen) {
            if (q->limit) {
                lm_add_debt(t, q, others - q->seen, now);
            }
            lm_jset(t, &q->seen, others);
        }
    }
    lm_unlock(t);
    return APR_SUCCESS;
}
