/* fuzz_conf: the directives' value parsers (llmgw_conf_*) and LLMCache's
 * arguments (llmgw_store_create): a value is taken exactly when a plain
 * reading of it (digits, one unit, in the range) takes it, as that value;
 * a refusal names the directive and the value and shows an example; a
 * store taken has its settings in their ranges.
 * Input: a selector byte: bits 0-2 the parser (0 int, 1 size, 2 seconds,
 * 3 msec, 4 keyword, 5 flag, 6 option, 7 LLMCache's words split by
 * spaces); bit 3 the range from the next 16 bytes (min, max; little
 * endian), else the range of bits 4-7 from a table; then the value (to a
 * NUL or the end). */
#include <strings.h>

#include <apr_strings.h>
#include <apr_time.h>

#include "fuzz.h"

#include "llmgw_conf.h"
#include "llmgw_store.h"

#define WHAT "LLMFuzz value"
#define EXAMPLE "LLMFuzz value 8"
#define UNKNOWN(what) WHAT ": unknown " what " '"

/* Ranges callers use, and edges. */
static const apr_int64_t ranges[16][2] = {
    { 1, 30 * 86400 },
    { 1, (apr_int64_t)1 << 40 },
    { 64 * 1024, (apr_int64_t)64 << 30 },
    { 0, 100000 },
    { -5, 5 },
    { APR_INT64_MIN, APR_INT64_MAX },
    { 0, APR_INT64_MAX },
    { APR_INT64_MIN, -1 },
    { -1, -1 },
    { 0, 0 },
    { 5, 1 },
    { 1, 60000 },
    { 1, 86400 * 1000 },
    { -9, 0 },
    { APR_INT64_MAX - 1, APR_INT64_MAX },
    { APR_INT64_MIN, APR_INT64_MIN + 1 },
};

static apr_int64_t le64(fuzz_in *in)
{
    apr_uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++) {
        v |= (apr_uint64_t)fuzz_byte(in) << (8 * i);
    }
    return (apr_int64_t)v;
}

/* The plain reading: an optional '-' (only where min is below 0), then
 * digits, then (units) at most one of K, M, G in any case, then nothing;
 * NULL-free. 1 and *v (saturated past 2^70: out of every range) if so. */
static int plain(const char *s, apr_int64_t min, int units, __int128 *v)
{
    int neg = *s == '-' && min < 0;
    __int128 n = 0, lim = (__int128)1 << 70;

    s += neg;
    if (*s < '0' || *s > '9') {
        return 0;
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n < lim ? n * 10 + (*s - '0') : lim;
    }
    if (units && *s && strchr("KkMmGg", *s)) {
        int shift = *s == 'K' || *s == 'k'   ? 10
                    : *s == 'M' || *s == 'm' ? 20
                                             : 30;

        n = n < lim ? n << shift : lim;
        s++;
    }
    *v = neg ? -n : n;
    return *s == '\0';
}

/* A refusal of a number: "WHAT: 'ARG' is not KIND; e.g. EXAMPLE". */
static void check_bad(apr_pool_t *p, const char *err, const char *arg)
{
    const char *head = apr_psprintf(p, WHAT ": '%s' is not ", arg);
    apr_size_t n = strlen(err), e = strlen("; e.g. " EXAMPLE);

    FUZZ_CHECK(!strncmp(err, head, strlen(head)), "error %s", err);
    FUZZ_CHECK(n > e && !strcmp(err + n - e, "; e.g. " EXAMPLE), "error %s",
               err);
}

static void check_number(apr_pool_t *p, int which, const char *arg,
                         apr_int64_t min, apr_int64_t max)
{
    static const apr_int64_t unit[4] = { 1, 1, APR_USEC_PER_SEC, 1000 };
    apr_int64_t n = 0;
    apr_off_t size = 0;
    apr_interval_time_t t = 0;
    const char *err;
    __int128 want, got;
    int ok = plain(arg, which == 1 ? 0 : min, which == 1, &want);

    ok = ok && want >= min && want <= max;
    /* A time is taken only if it is one (no overflow in microseconds). */
    ok = ok && want * unit[which] <= APR_INT64_MAX
         && want * unit[which] >= APR_INT64_MIN;
    switch (which) {
    case 0:
        err = llmgw_conf_int(p, WHAT, arg, min, max, EXAMPLE, &n);
        got = n;
        break;
    case 1:
        err = llmgw_conf_size(p, WHAT, arg, min, max, EXAMPLE, &size);
        got = size;
        break;
    case 2:
        err = llmgw_conf_seconds(p, WHAT, arg, min, max, EXAMPLE, &t);
        got = t;
        break;
    default:
        err = llmgw_conf_msec(p, WHAT, arg, min, max, EXAMPLE, &t);
        got = t;
        break;
    }
    FUZZ_CHECK((err == NULL) == ok, "'%s' in [%lld, %lld] %s: %s", arg,
               (long long)min, (long long)max, ok ? "refused" : "taken",
               err ? err : "");
    if (err) {
        check_bad(p, err, arg);
        return;
    }
    FUZZ_CHECK(got == want * unit[which], "'%s' read as %lld", arg,
               (long long)got);
}

static void check_words(apr_pool_t *p, int which, const char *arg)
{
    static const char *const names[] = { "shm", "memcache", "max-item", NULL };
    const char *err, *v = NULL, *eq = strchr(arg, '=');
    int i = -1, k;

    if (which == 4 || which == 5) {
        err = which == 4 ? llmgw_conf_keyword(p, WHAT, arg, names, &i)
                         : llmgw_conf_flag(p, WHAT, arg, &i);
        for (k = 0; which == 4 ? names[k] != NULL : k < 2; k++) {
            if (!strcasecmp(arg, which == 4 ? names[k] : k ? "on" : "off")) {
                break;
            }
        }
        FUZZ_CHECK((err == NULL) == (which == 4 ? names[k] != NULL : k < 2),
                   "'%s' %s", arg, err ? err : "taken");
        FUZZ_CHECK(err || i == k, "'%s' read as %d", arg, i);
        FUZZ_CHECK(
            !err || !strncmp(err, UNKNOWN("value"), strlen(UNKNOWN("value"))),
            "error %s", err);
        return;
    }
    err = llmgw_conf_option(p, WHAT, arg, names, &i, &v);
    for (k = 0; eq && names[k]; k++) {
        if (strlen(names[k]) == (size_t)(eq - arg)
            && !strncasecmp(arg, names[k], strlen(names[k]))) {
            break;
        }
    }
    FUZZ_CHECK((err == NULL) == (eq && names[k]), "'%s' %s", arg,
               err ? err : "taken");
    FUZZ_CHECK(err || (i == k && v == eq + 1), "'%s' read as %d", arg, i);
    FUZZ_CHECK(
        !err || !strncmp(err, UNKNOWN("option"), strlen(UNKNOWN("option"))),
        "error %s", err);
}

/* LLMCache's words: taken or refused with a reason; a shm store taken
 * has room for its largest item eight times over. */
static void check_store(apr_pool_t *p, char *arg)
{
    char *argv[8], *last;
    llmgw_store_t *st = NULL;
    const char *err;
    int argc = 0;
    char *w = apr_strtok(arg, " ", &last);

    for (; w && argc < 8; w = apr_strtok(NULL, " ", &last)) {
        argv[argc++] = w;
    }
    if (!argc) {
        return;
    }
    err = llmgw_store_create(p, argc, argv, &st);
    FUZZ_CHECK(!err == !!st, "a store both taken and refused, or neither");
    FUZZ_CHECK(!err || *err, "an empty reason");
    if (!st) {
        return;
    }
    FUZZ_CHECK(st->ttl >= 1 && st->ttl <= 30 * 86400, "ttl %u", st->ttl);
    FUZZ_CHECK(st->max_item >= 1 && st->max_item <= 1 << 30, "max-item %zu",
               (size_t)st->max_item);
    if (llmgw_store_is_shm(st)) {
        FUZZ_CHECK(st->shm_size >= 64 * 1024
                       && st->max_item <= st->shm_size / 8,
                   "shm of %zu for items of %zu", (size_t)st->shm_size,
                   (size_t)st->max_item);
    }
    else {
        FUZZ_CHECK(st->servers && *st->servers && st->timeout > 0
                       && st->timeout <= apr_time_from_sec(60),
                   "memcache servers or timeout");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned sel = fuzz_byte(&in);
    int which = (int)(sel & 7);
    apr_int64_t min = ranges[sel >> 4][0], max = ranges[sel >> 4][1];
    size_t n = 0;
    const char *s;
    char *arg;

    if (sel & 8) {
        min = le64(&in);
        max = le64(&in);
    }
    s = fuzz_until(&in, '\0', &n);
    /* A copy of exactly the value: ASan sees a read past it. */
    arg = malloc(n + 1);
    memcpy(arg, s ? s : "", n);
    arg[n] = '\0';
    if (which <= 3) {
        check_number(p, which, arg, min, max);
    }
    else if (which <= 6) {
        check_words(p, which, arg);
    }
    else {
        check_store(p, arg);
    }
    free(arg);
    apr_pool_destroy(p);
    return 0;
}
