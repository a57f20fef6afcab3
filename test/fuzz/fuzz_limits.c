/* fuzz_limits: the limits' text and the bytes they are restored from:
 * directive values (LLMRateLimit, LLMBudget, LLMPrice), subject names and
 * durations; a snapshot file (damaged, or any bytes) restored into a
 * table; cluster totals from memcached (untrusted numbers) applied.
 * Input: a selector byte, bits 0-2 the mode:
 *   0 rate, 1 budget (directives split by '|'), 2 price: words split by
 *     spaces;
 *   3 a subject name: a kind byte, then the name ("a\tb" for key+route);
 *   4 a duration: 8 bytes;
 *   5 a snapshot: the table's own damaged by (offset, xor) byte triples,
 *     bit 4 set: the input is the snapshot; sealed again (its SHA-256)
 *     unless bit 3 is set;
 *   6 sync: a total (8 bytes) for each item the table collects. */
#include <unistd.h>

#include <apr_strings.h>

#include "fuzz.h"

#include "llmgw_limits.h"
#include "llmgw_sha256.h"

/* 2026-01-01T00:00:00Z, as the unit tests. */
#define T0 (APR_INT64_C(1767225600) * APR_USEC_PER_SEC)

#define MAX_WORDS 16

/* Words split on spaces, NUL-terminated copies from p. */
static int words(apr_pool_t *p, const char *s, size_t n, const char **argv)
{
    fuzz_in in = { (const uint8_t *)s, n };
    const char *w;
    size_t len;
    int argc = 0;

    while (argc < MAX_WORDS && (w = fuzz_until(&in, ' ', &len)) != NULL) {
        argv[argc++] = apr_pstrmemdup(p, w, len);
    }
    return argc;
}

static void check_conf(const llmgw_limits_conf_t *c)
{
    int i;

    FUZZ_CHECK(!llmgw_limits_conf_check(c), "parsed, then refused: %s",
               llmgw_limits_conf_check(c));
    FUZZ_CHECK(c->rpm >= 0 && c->rpm <= LLMGW_LIMITS_RATE_MAX && c->tpm >= 0
                   && c->tpm <= LLMGW_LIMITS_RATE_MAX && c->concurrent >= 0
                   && c->concurrent <= LLMGW_LIMITS_RATE_MAX,
               "a rate");
    for (i = 0; i < LLMGW_LIMITS_BUDGETS; i++) {
        FUZZ_CHECK(!c->budget[i].unit
                       || (c->budget[i].limit > 0
                           && c->budget[i].limit <= LLMGW_LIMITS_AMOUNT_MAX),
                   "a budget of %lld", (long long)c->budget[i].limit);
    }
}

static void values(apr_pool_t *p, unsigned mode, fuzz_in *in)
{
    const char *argv[MAX_WORDS], *err, *d;
    llmgw_limits_conf_t c;
    llmgw_price_t pr;
    size_t n;
    int argc;

    memset(&c, 0, sizeof(c));
    if (mode == 0) {
        argc = words(p, (const char *)in->d, in->n, argv);
        if (!(err = llmgw_limits_parse_rate(p, argc, argv, &c))) {
            check_conf(&c);
            FUZZ_CHECK(c.rpm || c.tpm || c.concurrent, "a rate of nothing");
        }
        FUZZ_CHECK(!err || *err, "an empty error");
        return;
    }
    if (mode == 1) {
        while ((d = fuzz_until(in, '|', &n)) != NULL) {
            argc = words(p, d, n, argv);
            err = llmgw_limits_parse_budget(p, argc, argv, &c);
            FUZZ_CHECK(!err || *err, "an empty error");
            if (!err) {
                check_conf(&c);
            }
        }
        return;
    }
    argc = words(p, (const char *)in->d, in->n, argv);
    memset(&pr, 0, sizeof(pr));
    if (!(err = llmgw_limits_parse_price(p, argc, argv, &pr))) {
        FUZZ_CHECK(pr.in >= 0 && pr.in <= LLMGW_LIMITS_PRICE_MAX && pr.out >= 0
                       && pr.out <= LLMGW_LIMITS_PRICE_MAX,
                   "price %lld/%lld", (long long)pr.in, (long long)pr.out);
    }
    FUZZ_CHECK(!err || *err, "an empty error");
}

static void subject_name(apr_pool_t *p, fuzz_in *in)
{
    llmgw_subject_kind_t kind = (llmgw_subject_kind_t)(fuzz_byte(in) % 5 + 1);
    size_t n, i, len;
    const char *a = fuzz_until(in, '\t', &n), *name;
    char *ac = apr_pstrmemdup(p, a ? a : "", a ? n : 0), *bc;

    a = fuzz_until(in, '\0', &n);
    bc = apr_pstrmemdup(p, a ? a : "", a ? n : 0);
    name = llmgw_limits_subject_name(p, kind, ac, bc);
    FUZZ_CHECK(name && (len = strlen(name)) > 0
                   && len <= LLMGW_LIMITS_NAME_MAX,
               "a name of %zu bytes", name ? strlen(name) : 0);
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];

        FUZZ_CHECK((ch >= 0x20 && ch != 0x7f)
                       || (kind == LLMGW_SUBJECT_KEY_ROUTE && ch == 037),
                   "a control character in the name %s", name);
    }
}

static void duration(fuzz_in *in)
{
    apr_time_t d = 0;
    char buf[32];
    size_t n;
    const char *b = fuzz_bytes(in, sizeof(d), &n), *s;

    memcpy(&d, b, n);
    s = llmgw_limits_duration(buf, sizeof(buf), d);
    FUZZ_CHECK(s && strlen(s) < sizeof(buf) && strlen(s) > 1
                   && s[strlen(s) - 1] == 's',
               "duration %s", s ? s : "NULL");
}

/* ---- a table with some of everything ------------------------------- */

typedef struct {
    void *mem;
    llmgw_limits_t *t;
} table_t;

static llmgw_limits_conf_t conf_of(apr_int64_t rpm, apr_int64_t tpm)
{
    llmgw_limits_conf_t c;

    memset(&c, 0, sizeof(c));
    c.rpm = rpm;
    c.tpm = tpm;
    return c;
}

/* Configured as the unit tests' snapshot table: key:a (rates, a token and
 * a cost budget), key:b (rpm), users with a daily token budget. */
static void table_make(table_t *tb)
{
    apr_size_t size = llmgw_limits_size(8, 8);
    llmgw_limits_def_t d[2];
    llmgw_limits_conf_t dyn = conf_of(0, 0);

    tb->mem = calloc(1, size);
    FUZZ_CHECK(tb->mem, "out of memory");
    tb->t = llmgw_limits_init(tb->mem, size, 8, 8, 0);
    FUZZ_CHECK(tb->t, "no table");
    memset(d, 0, sizeof(d));
    d[0].name = "key:a";
    d[0].conf = conf_of(10, 5000);
    d[0].conf.budget[0].unit = LLMGW_BUDGET_TOKENS;
    d[0].conf.budget[0].per = LLMGW_PER_DAY;
    d[0].conf.budget[0].limit = 1000;
    d[0].conf.budget[1].unit = LLMGW_BUDGET_COST;
    d[0].conf.budget[1].per = LLMGW_PER_MONTH;
    d[0].conf.budget[1].limit = 1000000;
    d[1].name = "key:b";
    d[1].conf = conf_of(3, 0);
    dyn.budget[0].unit = LLMGW_BUDGET_TOKENS;
    dyn.budget[0].per = LLMGW_PER_DAY;
    dyn.budget[0].limit = 500;
    FUZZ_CHECK(llmgw_limits_configure(tb->t, d, 2, &dyn, T0) == APR_SUCCESS,
               "configure");
}

/* Traffic: settled requests on each subject, one still in flight. */
static void table_use(table_t *tb)
{
    llmgw_limits_subject_t a, b, u;
    llmgw_limits_ticket_t tk, open;
    llmgw_limits_verdict_t v;
    llmgw_limits_req_t rq;

    FUZZ_CHECK(llmgw_limits_find(tb->t, "key:a", &a) == APR_SUCCESS
                   && llmgw_limits_find(tb->t, "key:b", &b) == APR_SUCCESS
                   && llmgw_limits_find_or_add(tb->t, "user:carol", T0, &u)
                          == APR_SUCCESS,
               "subjects");
    memset(&rq, 0, sizeof(rq));
    rq.nsubjects = 1;
    rq.owner = getpid();
    rq.subject[0] = a;
    rq.prompt = rq.max_out = 100;
    rq.price.in = rq.price.out = 1000000;
    if (llmgw_limits_reserve(tb->t, &rq, T0, &tk, &v) == LLMGW_LIMIT_OK) {
        llmgw_limits_settle(tb->t, &tk, 100, 20, T0);
    }
    llmgw_limits_reserve(tb->t, &rq, T0, &open, &v);
    rq.subject[0] = b;
    rq.prompt = rq.max_out = 1;
    if (llmgw_limits_reserve(tb->t, &rq, T0, &tk, &v) == LLMGW_LIMIT_OK) {
        llmgw_limits_settle(tb->t, &tk, 1, 1, T0);
    }
    rq.subject[0] = u;
    rq.prompt = rq.max_out = 50;
    if (llmgw_limits_reserve(tb->t, &rq, T0, &tk, &v) == LLMGW_LIMIT_OK) {
        llmgw_limits_settle(tb->t, &tk, 50, 25, T0);
    }
}

/* What the console shows is never below zero where it cannot be. */
static void table_check(table_t *tb)
{
    apr_uint32_t cursor = 0;
    llmgw_limits_usage_t u;
    int i;

    while (llmgw_limits_usage_next(tb->t, &cursor, T0, &u) == APR_SUCCESS) {
        FUZZ_CHECK(u.inflight >= 0 && u.requests >= 0, "%s: counts", u.name);
        for (i = 0; i < LLMGW_LIMITS_BUDGETS; i++) {
            FUZZ_CHECK(u.budget[i].remaining >= 0, "%s: budget %d has %lld",
                       u.name, i, (long long)u.budget[i].remaining);
        }
    }
}

static void table_free(table_t *tb)
{
    free(tb->mem);
}

static void seal(char *snap, apr_size_t len)
{
    llmgw_sha256_t c;

    if (len < LLMGW_SHA256_LEN) {
        return;
    }
    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, snap, len - LLMGW_SHA256_LEN);
    llmgw_sha256_final(&c, (unsigned char *)snap + len - LLMGW_SHA256_LEN);
}

/* A snapshot the table wrote restores into a table configured alike. */
static void restores(apr_pool_t *p, table_t *from)
{
    const char *snap, *why = NULL;
    apr_size_t len;
    table_t to;

    FUZZ_CHECK(llmgw_limits_snapshot(from->t, p, T0, &snap, &len)
                   == APR_SUCCESS,
               "snapshot");
    table_make(&to);
    FUZZ_CHECK(llmgw_limits_restore(to.t, snap, len, T0, NULL, NULL, &why)
                   == APR_SUCCESS,
               "its own snapshot refused: %s", why ? why : "");
    table_check(&to);
    table_free(&to);
}

static void snapshot(apr_pool_t *p, unsigned sel, fuzz_in *in)
{
    table_t tb, to;
    const char *own, *why = NULL;
    char *snap;
    apr_size_t len;
    apr_status_t rv;

    table_make(&tb);
    table_use(&tb);
    if (sel & 16) {
        len = in->n;
        snap = apr_palloc(p, len + 1);
        if (len) {
            memcpy(snap, in->d, len);
        }
    }
    else {
        FUZZ_CHECK(llmgw_limits_snapshot(tb.t, p, T0, &own, &len)
                       == APR_SUCCESS,
                   "snapshot");
        snap = apr_pmemdup(p, own, len);
        while (in->n >= 3 && len) {
            size_t at = ((size_t)fuzz_byte(in) << 8 | fuzz_byte(in)) % len;

            snap[at] ^= (char)fuzz_byte(in);
        }
    }
    if (!(sel & 8)) {
        seal(snap, len);
    }
    table_make(&to);
    rv = llmgw_limits_restore(to.t, snap, len, T0, NULL, NULL, &why);
    FUZZ_CHECK(rv == APR_SUCCESS || (rv == APR_EINVAL && why && *why),
               "restore: %d", rv);
    table_check(&to);
    table_use(&to);
    table_check(&to);
    restores(p, &to);
    table_free(&to);
    table_free(&tb);
}

static void sync_totals(fuzz_in *in)
{
    llmgw_limits_sync_t items[16];
    apr_uint32_t cursor = 0;
    table_t tb;
    int n, i, rounds = 0;

    table_make(&tb);
    table_use(&tb);
    while ((n = llmgw_limits_sync_collect(tb.t, &cursor, T0, items, 16)) > 0
           && rounds++ < 4) {
        for (i = 0; i < n; i++) {
            apr_uint64_t total = 0;
            size_t got;
            const char *b = fuzz_bytes(in, sizeof(total), &got);

            memcpy(&total, b, got);
            FUZZ_CHECK(items[i].key[0]
                           && memchr(items[i].key, '\0', sizeof(items[i].key)),
                       "a sync key");
            llmgw_limits_sync_apply(tb.t, &items[i], total, T0);
        }
    }
    table_check(&tb);
    table_use(&tb);
    table_check(&tb);
    table_free(&tb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned sel = fuzz_byte(&in), mode = sel & 7;

    switch (mode) {
    case 0:
    case 1:
    case 2: values(p, mode, &in); break;
    case 3: subject_name(p, &in); break;
    case 4: duration(&in); break;
    case 5: snapshot(p, sel, &in); break;
    default: sync_totals(&in); break;
    }
    apr_pool_destroy(p);
    return 0;
}
