/* fuzz_json: the JSON reader on any text, strictly (llmgw_json_read, for
 * requests) and not (llmgw_json_parse, for answers and records): what
 * both take reads alike, and canonical text must round-trip. */
#include "fuzz.h"

#include "llmgw_json.h"

static const char *canon(apr_pool_t *p, const llmgw_json_t *j, apr_size_t *len)
{
    return llmgw_json_write_canonical(p, j, NULL, len);
}

/* The two readers (they take the same arguments), by name. */
typedef llmgw_json_t *reader_fn(apr_pool_t *p, const char *buf, apr_size_t len,
                                llmgw_json_err_t *err, const char **msg);
static const struct {
    const char *name;
    reader_fn *read;
} readers[] = { { "read", llmgw_json_read }, { "parse", llmgw_json_parse } };

/* Canonical text c of an accepted value: both parsers take it (every
 * text we send upstream or hash is canonical or written by us), and it
 * is its own canonical text. */
static void check_canonical(apr_pool_t *p, const char *c, apr_size_t n,
                            const char *who)
{
    llmgw_json_err_t err;
    const char *msg, *c2;
    llmgw_json_t *j;
    apr_size_t n2, i;

    for (i = 0; i < sizeof(readers) / sizeof(readers[0]); i++) {
        j = readers[i].read(p, c, n, &err, &msg);
        FUZZ_CHECK(j, "%s: canonical text %.*s refused by llmgw_json_%s: %s",
                   who, (int)n, c, readers[i].name, msg);
        c2 = canon(p, j, &n2);
        FUZZ_CHECK(n2 == n && memcmp(c, c2, n) == 0,
                   "%s: canonical text not idempotent (%s): %.*s -> %.*s", who,
                   readers[i].name, (int)n, c, (int)n2, c2);
    }
}

/* buf as read: NULL only with a reason. */
static llmgw_json_t *read_by(apr_pool_t *p, reader_fn *read, const char *buf,
                             apr_size_t size)
{
    llmgw_json_err_t err;
    const char *msg = NULL;
    llmgw_json_t *j = read(p, buf, size, &err, &msg);

    FUZZ_CHECK(j || (err != LLMGW_JSON_ERR_NONE && msg),
               "a refusal without a reason");
    return j;
}

/* A change to a read view makes json-c's tree of its values: the other
 * members must all be there after it. */
static void check_change(apr_pool_t *p, llmgw_json_t *j)
{
    static const char *const skip[] = { "\x7f"
                                        "fuzz",
                                        NULL };
    const char *before, *after;
    apr_size_t nb, na;

    if (llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT) {
        return;
    }
    before = llmgw_json_write_canonical(p, j, skip, &nb);
    llmgw_json_sets(j, "x", skip[0], NULL);
    after = llmgw_json_write_canonical(p, j, skip, &na);
    FUZZ_CHECK(na == nb && memcmp(before, after, nb) == 0,
               "a change lost members: %.*s -> %.*s", (int)nb, before, (int)na,
               after);
    FUZZ_CHECK(llmgw_json_gets(j, skip[0], NULL)
                   && !strcmp(llmgw_json_gets(j, skip[0], NULL), "x"),
               "the member set is not there");
}

/* Strings read from JSON are valid UTF-8: quoted again, they read back
 * as the same string. */
static void check_strings(apr_pool_t *p, const llmgw_json_t *j, int depth)
{
    apr_size_t i, n;

    if (depth > 4) {
        return;
    }
    switch (llmgw_json_type(j, NULL)) {
    case LLMGW_JSON_STRING: {
        const char *s = llmgw_json_gets(j, NULL), *q, *back;
        llmgw_json_err_t err;
        const char *msg;
        llmgw_json_t *r;

        q = llmgw_json_quote(p, s);
        r = llmgw_json_read(p, q, strlen(q), &err, &msg);
        FUZZ_CHECK(r, "quoted string %s refused: %s", q, msg);
        back = llmgw_json_gets(r, NULL);
        FUZZ_CHECK(back && !strcmp(back, s), "quote round trip: %s", q);
        break;
    }
    case LLMGW_JSON_ARRAY:
        n = llmgw_json_array_len(j);
        for (i = 0; i < n && i < 8; i++) {
            check_strings(p, llmgw_json_array_get(j, i), depth + 1);
        }
        break;
    default: break;
    }
}

/* Canonical numbers are exact: an integer by its digits, any other
 * number as a text of the same double, whichever way it was spelt. The
 * elements of an array of numbers are looked at (or the one number). */
static void check_numbers(apr_pool_t *p, const llmgw_json_t *j)
{
    apr_size_t i, n = 1;
    int array = llmgw_json_type(j, NULL) == LLMGW_JSON_ARRAY;

    if (array) {
        n = llmgw_json_array_len(j);
    }
    for (i = 0; i < n && i < 16; i++) {
        const llmgw_json_t *e = array ? llmgw_json_array_get(j, i) : j;
        llmgw_json_type_t t = llmgw_json_type(e, NULL);
        const char *lit, *c, *ca, *msg;
        apr_size_t ll, cl, al;
        llmgw_json_err_t err;
        llmgw_json_t *a;
        double d;
        char spelt[40];

        if (t != LLMGW_JSON_INT && t != LLMGW_JSON_DOUBLE) {
            continue;
        }
        lit = llmgw_json_write(e, &ll); /* a read view: as it came */
        c = llmgw_json_write_canonical(p, e, NULL, &cl);
        if (strspn(lit, "-0123456789") == ll) {
            FUZZ_CHECK((cl == ll && !memcmp(c, lit, ll))
                           || (!strcmp(lit, "-0") && !strcmp(c, "0")),
                       "the integer %s written as %.*s", lit, (int)cl, c);
            continue;
        }
        d = strtod(lit, NULL);
        if (!(d > -1.7976931348623157e308 && d < 1.7976931348623157e308)) {
            continue; /* no JSON number is infinite */
        }
        FUZZ_CHECK(strtod(c, NULL) == d, "%s written as %.*s", lit, (int)cl,
                   c);
        /* Another spelling of the same double, the same canonical text. */
        snprintf(spelt, sizeof(spelt), "%.17e", d);
        a = llmgw_json_read(p, spelt, strlen(spelt), &err, &msg);
        FUZZ_CHECK(a, "%s refused: %s", spelt, msg);
        ca = llmgw_json_write_canonical(p, a, NULL, &al);
        FUZZ_CHECK(al == cl && !memcmp(ca, c, cl),
                   "one double, two canonical texts: %s as %.*s, %s as %.*s",
                   lit, (int)cl, c, spelt, (int)al, ca);
    }
}

/* No state carries from one text to the next (json-c's per-thread
 * tokener once kept half a surrogate pair from a text cut short). */
static void check_no_carry(apr_pool_t *p, const char *buf, apr_size_t len,
                           const char *c1, apr_size_t n1)
{
    static const char *const poison[] = { "\"\\ud83d", "[\"\\ud83d\\",
                                          "{\"a\":[1,{\"b\":\"x" };
    llmgw_json_err_t err;
    const char *msg, *c2 = NULL;
    llmgw_json_t *j;
    apr_size_t i, n2 = 0;

    for (i = 0; i < sizeof(poison) / sizeof(poison[0]); i++) {
        llmgw_json_parse(p, poison[i], strlen(poison[i]), &err, &msg);
        j = llmgw_json_parse(p, buf, len, &err, &msg);
        FUZZ_CHECK(!j == !c1, "accepted %s after text %zu",
                   j ? "only" : "no longer", i);
        if (j) {
            c2 = canon(p, j, &n2);
            FUZZ_CHECK(n1 == n2 && memcmp(c1, c2, n1) == 0,
                       "read differently after text %zu: %.*s vs %.*s", i,
                       (int)n1, c1, (int)n2, c2);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *buf = (const char *)data, *msg, *c1 = NULL, *cr = NULL, *c;
    llmgw_json_err_t err;
    llmgw_json_t *r, *j;
    apr_size_t n1 = 0, nr = 0, n, used = 0;

    r = read_by(p, llmgw_json_read, buf, size);
    if (r) {
        cr = canon(p, r, &nr);
        check_canonical(p, cr, nr, "read");
        check_strings(p, r, 0);
        check_numbers(p, r);
    }
    j = read_by(p, llmgw_json_parse, buf, size);
    if (j) {
        c1 = canon(p, j, &n1);
        check_canonical(p, c1, n1, "parse");
        c = llmgw_json_write(j, &n);
        FUZZ_CHECK(llmgw_json_parse(p, c, n, &err, &msg),
                   "its own text %.*s refused: %s", (int)n, c, msg);
    }
    FUZZ_CHECK(!r || j, "taken strictly, refused leniently");
    check_no_carry(p, buf, size, c1, n1);
    /* One meaning, one canonical text: what the strict reading takes, the
     * lenient one reads alike (strings with NULs, numbers, escapes). */
    if (r) {
        FUZZ_CHECK(nr == n1 && memcmp(cr, c1, nr) == 0,
                   "the parsers disagree: read %.*s, parse %.*s", (int)nr, cr,
                   (int)n1, c1);
    }
    /* Last: these change the trees. */
    if (r) {
        check_change(p, r);
    }
    if (j) {
        check_change(p, j);
    }
    if (llmgw_json_parse_prefix(p, buf, size, &used)) {
        FUZZ_CHECK(used <= size, "used %zu of %zu bytes", used, size);
    }
    apr_pool_destroy(p);
    return 0;
}
