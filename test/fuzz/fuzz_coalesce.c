/* fuzz_coalesce: a follower tailing a shared generation through a store
 * whose values are untrusted (memcached's: evicted, damaged, another
 * node's garbage): a leader publishes the input's chunks, the store is
 * damaged, a follower joins and reads. What it takes is what the store
 * held (a piece's text after its count), in order and at most once each;
 * it ends at the end mark's count or not well; it always ends;
 * untouched, it reads every chunk, then the end, and the
 * answer's kept count is the chunks'.
 * Input: a flag byte (bit 0 the follower streams); then lines: the
 * leader's chunks up to a line "--"; changes to the store made before the
 * follower joins, up to a line "--"; changes made after the leader ended.
 * A change is "NAME\tVALUE" (set) or "NAME" (delete); NAME is a piece's
 * number or "end" (KEY:GEN:NAME), or "=" for the answer's key. */
#include <apr_strings.h>

#include "fuzz.h"

#include "llmgw_coalesce.h"

#define KEY "k0"
#define LEASE "LLMGW-lease " /* as llmgw_store writes a lease */
#define SLOTS 64

/* The store: a few keys, each value a copy of exactly its bytes. */
static struct {
    char *key, *val;
    apr_size_t len;
} slot[SLOTS];

static int find(const char *key)
{
    int i;

    for (i = 0; i < SLOTS; i++) {
        if (slot[i].key && !strcmp(slot[i].key, key)) {
            return i;
        }
    }
    return -1;
}

static void put(const char *key, const char *val, apr_size_t len)
{
    int i = find(key);

    for (i = i < 0 ? 0 : i; i < SLOTS && slot[i].key; i++) {
        if (!strcmp(slot[i].key, key)) {
            break;
        }
    }
    if (i == SLOTS) {
        return; /* full: as an eviction */
    }
    free(slot[i].val);
    if (!slot[i].key) {
        slot[i].key = strdup(key);
    }
    slot[i].val = malloc(len ? len : 1);
    memcpy(slot[i].val, val, len);
    slot[i].len = len;
}

static void drop(const char *key)
{
    int i = find(key);

    if (i >= 0) {
        free(slot[i].key);
        free(slot[i].val);
        memset(&slot[i], 0, sizeof(slot[i]));
    }
}

static apr_status_t st_init(llmgw_store_t *st, apr_pool_t *p, int n)
{
    return APR_SUCCESS;
}

static apr_status_t st_get(llmgw_store_t *st, apr_pool_t *p, const char *key,
                           char **val, apr_size_t *len)
{
    int i = find(key);

    if (i < 0) {
        return APR_NOTFOUND;
    }
    *val = apr_pstrmemdup(p, slot[i].val, slot[i].len);
    *len = slot[i].len;
    return APR_SUCCESS;
}

static apr_status_t st_set(llmgw_store_t *st, apr_pool_t *p, const char *key,
                           const char *val, apr_size_t len, apr_uint32_t ttl)
{
    put(key, val, len);
    return APR_SUCCESS;
}

/* memcached's add, then a get: the lease taken, another's, or the answer. */
static apr_status_t st_claim(llmgw_store_t *st, apr_pool_t *p, const char *key,
                             const char *lease, apr_uint32_t ttl, char **val,
                             apr_size_t *len)
{
    apr_size_t n = strlen(LEASE);

    if (st_get(st, p, key, val, len) != APR_SUCCESS) {
        put(key, lease, strlen(lease));
        return APR_NOTFOUND;
    }
    if (*len >= n && !memcmp(*val, LEASE, n)) {
        *val += n;
        *len -= n;
        return APR_EEXIST;
    }
    return APR_SUCCESS;
}

static apr_status_t st_settle(llmgw_store_t *st, apr_pool_t *p,
                              const char *key, const char *val, apr_size_t len,
                              apr_uint32_t ttl)
{
    if (val) {
        put(key, val, len);
    }
    else {
        drop(key);
    }
    return APR_SUCCESS;
}

static const llmgw_store_ops_t ops = { "fuzz", st_init,  st_get,
                                       st_set, st_claim, st_settle };

/* The changes up to a line "--" (or the end); 1 if any. */
static int damage(apr_pool_t *p, fuzz_in *in, const char *gen)
{
    const char *line, *tab;
    size_t n;
    int any = 0;

    while ((line = fuzz_until(in, '\n', &n)) != NULL
           && !(n == 2 && !memcmp(line, "--", 2))) {
        char *name;

        tab = memchr(line, '\t', n);
        name = apr_pstrmemdup(p, line, tab ? (apr_size_t)(tab - line) : n);
        name = strcmp(name, "=")
                   ? apr_pstrcat(p, KEY ":", gen, ":", name, NULL)
                   : (char *)KEY;
        if (tab) {
            put(name, tab + 1, (apr_size_t)(line + n - tab - 1));
        }
        else {
            drop(name);
        }
        any = 1;
    }
    return any;
}

/* A piece taken must be what the store held for it (want, wlen): its
 * count, a space, then exactly these bytes. */
static void check_piece(apr_size_t i, const char *want, apr_size_t wlen,
                        const char *data, apr_size_t len)
{
    apr_size_t off, j;

    FUZZ_CHECK(want, "piece %zu taken, but not in the store", (size_t)i);
    FUZZ_CHECK(wlen > len, "piece %zu longer than its value", (size_t)i);
    off = wlen - len;
    FUZZ_CHECK(!memcmp(want + off, data, len) && off >= 2
                   && want[off - 1] == ' ',
               "piece %zu is not its value's text", (size_t)i);
    for (j = 0; j + 1 < off; j++) {
        FUZZ_CHECK(want[j] >= '0' && want[j] <= '9',
                   "piece %zu taken with a bad count", (size_t)i);
    }
}

/* The store's value of piece i now, a copy from p (NULL: none). */
static char *piece_now(apr_pool_t *p, const char *gen, apr_size_t i,
                       apr_size_t *len)
{
    int k = find(apr_psprintf(p, KEY ":%s:%" APR_SIZE_T_FMT, gen, i));

    *len = k < 0 ? 0 : slot[k].len;
    return k < 0 ? NULL : apr_pstrmemdup(p, slot[k].val, slot[k].len);
}

/* Whether the end mark says the leader wrote exactly n pieces. */
static int ends_at(apr_pool_t *p, const char *gen, apr_size_t n)
{
    int k = find(apr_pstrcat(p, KEY ":", gen, ":end", NULL));
    char *v = k < 0 ? NULL : apr_pstrmemdup(p, slot[k].val, slot[k].len);

    return v && slot[k].len > 3 && !strncmp(v, "ok:", 3)
           && apr_strtoi64(v + 3, NULL, 10) == (apr_int64_t)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int seeded;
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    int stream = (int)(fuzz_byte(&in) & 1), damaged, nchunks = 0, i;
    llmgw_store_t st = { &ops };
    llmgw_coalesce_t *lead, *follow;
    struct {
        const char *s;
        size_t n;
    } chunk[32];
    const char *line, *gen;
    char *val, *piece, *first;
    apr_size_t n, len, got = 0, kept, first_len;
    apr_status_t rv = APR_SUCCESS;
    llmgw_co_role_t role;

    if (!seeded) {
        llmgw_coalesce_child_init();
        seeded = 1;
    }
    st.max_item = 1 << 20;
    st.ttl = 60;
    role = llmgw_coalesce_join(p, &st, KEY, 1, -1, &lead, &val, &n);
    FUZZ_CHECK(role == LLMGW_CO_LEADER, "the first one does not lead");
    i = find(KEY);
    gen = apr_pstrmemdup(p, slot[i].val + strlen(LEASE),
                         slot[i].len - strlen(LEASE));
    while (nchunks < 32
           && (line = fuzz_until(&in, '\n', &chunk[nchunks].n)) != NULL
           && !(chunk[nchunks].n == 2 && !memcmp(line, "--", 2))) {
        chunk[nchunks].s = line;
        llmgw_coalesce_put(lead, line, chunk[nchunks].n,
                           (apr_size_t)nchunks + 1);
        nchunks++;
    }
    damaged = damage(p, &in, gen);
    /* Piece 0 as the follower finds it when it joins. */
    first = piece_now(p, gen, 0, &first_len);
    role = llmgw_coalesce_join(p, &st, KEY, stream, -1, &follow, &val, &n);
    llmgw_coalesce_end(lead, 1, "the answer", 10);
    damaged |= damage(p, &in, gen);
    if (role == LLMGW_CO_FOLLOW) {
        /* Each call takes a piece or ends: at most one per piece, then
         * the end (no waiting: the timeout has passed). */
        for (i = 0; i < SLOTS + 2; i++) {
            char *want;
            apr_size_t wlen;

            want = got ? piece_now(p, gen, got, &wlen) : first;
            wlen = got ? wlen : first_len;
            rv = llmgw_coalesce_next(follow, &piece, &len);
            if (rv != APR_SUCCESS) {
                break;
            }
            check_piece(got, want, wlen, piece, len);
            FUZZ_CHECK(damaged
                           || (got < (apr_size_t)nchunks && len == chunk[got].n
                               && !memcmp(piece, chunk[got].s, len)),
                       "piece %zu is not the leader's", (size_t)got);
            got++;
        }
        FUZZ_CHECK(rv != APR_SUCCESS, "no end after %zu pieces", (size_t)got);
        FUZZ_CHECK(rv == APR_EOF || rv == APR_INCOMPLETE || rv == APR_EGENERAL
                       || rv == APR_TIMEUP || rv == APR_EAGAIN,
                   "ended with %d", rv);
        FUZZ_CHECK(rv != APR_EOF || ends_at(p, gen, got),
                   "the end after %zu pieces, not the end mark's count",
                   (size_t)got);
        FUZZ_CHECK(damaged || (rv == APR_EOF && got == (apr_size_t)nchunks),
                   "an untouched store read %zu of %d pieces, then %d",
                   (size_t)got, nchunks, rv);
        FUZZ_CHECK(
            damaged
                || (llmgw_coalesce_rest(follow, &val, &n, &kept) == APR_SUCCESS
                    && kept == got && n == 10),
            "the answer or its count lost");
    }
    else {
        /* Only a store changed under it, or no piece, keeps a stream
         * follower from following. */
        FUZZ_CHECK(damaged || !stream || !nchunks,
                   "a stream follower of %d pieces got role %d", nchunks,
                   role);
        FUZZ_CHECK((role != LLMGW_CO_CACHED && role != LLMGW_CO_DONE) || val,
                   "an answer without its value");
    }
    for (i = 0; i < SLOTS; i++) {
        free(slot[i].key);
        free(slot[i].val);
        memset(&slot[i], 0, sizeof(slot[i]));
    }
    apr_pool_destroy(p);
    return 0;
}
