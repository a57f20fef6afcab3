/* test_json.c: the reader (errors by kind, strict and not), getters,
 * setters, exact copies into json-c, edits, canonical text, UTF-8. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmgw_json.h"
#include "test_core.h"

static llmgw_json_t *parse(const char *s, llmgw_json_err_t *err)
{
    const char *msg;

    return llmgw_json_parse(test_pool, s, strlen(s), err, &msg);
}

START_TEST(parses_and_reads_paths)
{
    llmgw_json_err_t err;
    llmgw_json_t *j = parse("{\"a\":{\"b\":\"x\",\"n\":42,\"t\":true},"
                            "\"arr\":[1,2,3],\"z\":null}",
                            &err);

    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(llmgw_json_gets(j, "a", "b", NULL), "x");
    ck_assert_int_eq(llmgw_json_getl(j, -1, "a", "n", NULL), 42);
    ck_assert_int_eq(llmgw_json_getb(j, 0, "a", "t", NULL), 1);
    ck_assert_int_eq(llmgw_json_getl(j, -1, "a", "missing", NULL), -1);
    ck_assert_ptr_null(llmgw_json_gets(j, "a", "n", NULL));
    ck_assert_int_eq(llmgw_json_type(j, "z", NULL), LLMGW_JSON_NULL);
    ck_assert_int_eq(llmgw_json_type(j, "nope", NULL), LLMGW_JSON_MISSING);
    ck_assert_int_eq(llmgw_json_type(j, "z", "deeper", NULL),
                     LLMGW_JSON_MISSING);
    ck_assert_int_eq(llmgw_json_array_len(llmgw_json_getj(j, "arr", NULL)), 3);
}
END_TEST

/* 200 arrays, one in the other: deeper than LLMGW_JSON_MAX_DEPTH. */
static const char *deep(void)
{
    char *d = apr_palloc(test_pool, 400);

    memset(d, '[', 200);
    memset(d + 200, ']', 199);
    d[399] = '\0';
    return d;
}

START_TEST(reports_error_kinds)
{
    llmgw_json_err_t err;

    ck_assert_ptr_null(parse("{\"a\":", &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_SYNTAX);
    ck_assert_ptr_null(parse("{} x", &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_TRAILING);
    ck_assert_ptr_null(parse("\"\xff\xfe\"", &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_UTF8);
    ck_assert_ptr_null(parse(deep(), &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_DEPTH);
    ck_assert_ptr_nonnull(parse("  {\"ok\":1}\n", &err));
}
END_TEST

START_TEST(sets_paths_and_writes)
{
    llmgw_json_t *j = llmgw_json_create_object(test_pool);
    llmgw_json_t *arr;

    llmgw_json_sets(j, "m", "model", NULL);
    llmgw_json_setb(j, 1, "stream_options", "include_usage", NULL);
    llmgw_json_setl(j, 7, "n", NULL);
    arr = llmgw_json_add_array(j, "list");
    llmgw_json_array_adds(arr, "a/b");
    ck_assert_str_eq(llmgw_json_write(j, NULL),
                     "{\"model\":\"m\",\"stream_options\":{\"include_usage\":"
                     "true},\"n\":7,\"list\":[\"a/b\"]}");
}
END_TEST

START_TEST(quotes_strings)
{
    ck_assert_str_eq(llmgw_json_quote(test_pool, "a\"b\n/"), "\"a\\\"b\\n/\"");
    ck_assert_str_eq(llmgw_json_quote(test_pool, NULL), "\"\"");
}
END_TEST

START_TEST(parses_a_prefix)
{
    const char *s = "{\"a\":1} trailing";
    apr_size_t used = 0;
    llmgw_json_t *j = llmgw_json_parse_prefix(test_pool, s, strlen(s), &used);

    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(llmgw_json_getl(j, 0, "a", NULL), 1);
    /* json-c may consume the whitespace after the value, no more. */
    ck_assert_int_ge(used, 7);
    ck_assert_int_le(used, 8);
}
END_TEST

static llmgw_json_t *readj(const char *s, llmgw_json_err_t *err)
{
    const char *msg;

    return llmgw_json_read(test_pool, s, strlen(s), err, &msg);
}

static const char *canon_of(const llmgw_json_t *j)
{
    return llmgw_json_write_canonical(test_pool, j, NULL, NULL);
}

/* A view copied into a built tree (what a change does) writes the same
 * values: numbers keep their text, strings every byte. */
START_TEST(converts_views_exactly)
{
    static const char *const docs[] = {
        "{}",
        "[]",
        "[0]",
        "[-0]",
        "[12,-7]",
        "[1.5,1e3,-2.5E-3,1.0,1.10]",
        "[9223372036854775807,-9223372036854775808]",
        "[123456789012345678901,-99999999999999999999999]",
        "[18446744073709551616]",
        "[1e-320,4.9e-324,1.7976931348623157e308]",
        "[true,false,null]",
        "\"\"",
        "\"plain\"",
        "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041\\u00e9\\u20ac\"",
        "\"pair \\ud83d\\ude00 end\"",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
        ("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
         "\"hi\"}],"
         "\"temperature\":0,\"top_p\":0.9,\"stream\":false,\"stop\":null}"),
        " { \"b\" : [ 1 , { \"z\" : 1 , \"a\" : [ ] } ] , \"a\" : { } } ",
        "[[[[[[[[[[1]]]]]]]]]]",
        "{\"k\\u0041\":1,\"kB\":2}",
    };
    size_t i;

    for (i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        llmgw_json_err_t err;
        llmgw_json_t *v = readj(docs[i], &err), *o, *back;
        const char *text;

        ck_assert_msg(v != NULL, "doc %zu: %d", i, err);
        o = llmgw_json_create_object(test_pool);
        llmgw_json_setj(o, v, "x", NULL);
        text = llmgw_json_write(o, NULL);
        back = llmgw_json_getj(readj(text, &err), "x", NULL);
        ck_assert_msg(back != NULL, "doc %zu: wrote %s", i, text);
        ck_assert_msg(strcmp(canon_of(v), canon_of(back)) == 0,
                      "doc %zu: %s vs %s", i, canon_of(v), canon_of(back));
        ck_assert_int_eq(llmgw_json_type(v, NULL),
                         llmgw_json_type(back, NULL));
    }
}
END_TEST

START_TEST(read_view_gets_paths)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *j = readj("{\"a\":{\"b\":\"x\",\"n\":42,\"t\":true},"
                            "\"arr\":[1,2.5,\"s\"],\"z\":null,\"n\":2}",
                            &err),
                 *arr;

    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(llmgw_json_gets(j, "a", "b", NULL), "x");
    ck_assert_int_eq(llmgw_json_getl(j, -1, "a", "n", NULL), 42);
    ck_assert_int_eq(llmgw_json_getb(j, 0, "a", "t", NULL), 1);
    ck_assert_ptr_null(llmgw_json_gets(j, "a", "n", NULL));
    ck_assert_int_eq(llmgw_json_type(j, "z", NULL), LLMGW_JSON_NULL);
    ck_assert_int_eq(llmgw_json_type(j, "z", "deeper", NULL),
                     LLMGW_JSON_MISSING);
    arr = llmgw_json_getj(j, "arr", NULL);
    ck_assert_int_eq(llmgw_json_array_len(arr), 3);
    ck_assert(llmgw_json_array_getd(arr, 1, 0) == 2.5);
    ck_assert(llmgw_json_array_getd(arr, 2, -1) == -1);
    ck_assert_str_eq(llmgw_json_gets(llmgw_json_array_get(arr, 2), NULL), "s");
    ck_assert_str_eq(llmgw_json_write(arr, NULL), "[1,2.5,\"s\"]");
    /* An answer may name a key twice: the last counts, as for json-c. */
    j = llmgw_json_parse(test_pool, "{\"n\":1,\"x\":0,\"n\":2}", 19, &err,
                         &msg);
    ck_assert_int_eq(llmgw_json_getl(j, 0, "n", NULL), 2);
    ck_assert_str_eq(canon_of(j), "{\"n\":2,\"x\":0}");
    /* NULL handles read as missing (a failed parse handed on). */
    ck_assert_int_eq(llmgw_json_type(NULL, "x", NULL), LLMGW_JSON_MISSING);
    ck_assert_ptr_null(llmgw_json_gets(NULL, "x", NULL));
    ck_assert_int_eq(llmgw_json_getl(NULL, 7, "x", NULL), 7);
    ck_assert_int_eq(llmgw_json_array_len(NULL), 0);
}
END_TEST

/* What is refused: a length, since some texts hold a NUL byte. */
static const struct {
    const char *text;
    apr_size_t len; /* 0: strlen */
    int strict_only;
    llmgw_json_err_t err;
    const char *msg;
} refused[] = {
    { "", 0, 0, LLMGW_JSON_ERR_SYNTAX, "JSON text ends early" },
    { "{\"a\":", 0, 0, LLMGW_JSON_ERR_SYNTAX, "JSON text ends early" },
    { "{\"a\":1,}", 0, 0, LLMGW_JSON_ERR_SYNTAX, "JSON syntax error" },
    { "[1,]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "{'a':1}", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "{\"a\":1 /* c */}", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "[NaN]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "[Infinity]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "[01]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "[1.]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "[-]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "[+1]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "[tru]", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "\"\\x\"", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "\"\\u12\"", 0, 0, LLMGW_JSON_ERR_SYNTAX, NULL },
    { "\"open", 0, 0, LLMGW_JSON_ERR_SYNTAX, "JSON text ends early" },
    { "{} x", 0, 0, LLMGW_JSON_ERR_TRAILING,
      "unexpected data after the JSON value" },
    { "\"\xff\xfe\"", 0, 0, LLMGW_JSON_ERR_UTF8,
      "JSON text is not valid UTF-8" },
    { "\"\xc0\xaf\"", 0, 0, LLMGW_JSON_ERR_UTF8, NULL },     /* overlong */
    { "\"\xed\xa0\x80\"", 0, 0, LLMGW_JSON_ERR_UTF8, NULL }, /* surrogate */
    { "\"\xf4\x90\x80\x80\"", 0, 0, LLMGW_JSON_ERR_UTF8, NULL },
    { "\"\xe2\x82\"", 0, 0, LLMGW_JSON_ERR_UTF8, NULL }, /* cut short */
    /* RFC 8259: control characters in strings must be escaped. */
    { "\"a\x01"
      "b\"",
      0, 0, LLMGW_JSON_ERR_CONTROL,
      "a control character in a JSON string must be escaped" },
    { "\"line\nbreak\"", 0, 0, LLMGW_JSON_ERR_CONTROL, NULL },
    { "{\"k\x1f\":1}", 0, 0, LLMGW_JSON_ERR_CONTROL, NULL },
    /* U+0000, raw or escaped, in a value or a key. */
    { "{\"model\":\"a\0b\"}", 15, 0, LLMGW_JSON_ERR_NUL,
      "JSON strings must not contain U+0000" },
    { "{\"model\":\"mock-small\\u0000evil\"}", 0, 0, LLMGW_JSON_ERR_NUL,
      NULL },
    { "{\"messages\\u0000\":[]}", 0, 0, LLMGW_JSON_ERR_NUL, NULL },
    /* Out of a double's range. */
    { "[1e999]", 0, 0, LLMGW_JSON_ERR_RANGE, "a JSON number is out of range" },
    { "{\"temperature\":-1e400}", 0, 0, LLMGW_JSON_ERR_RANGE, NULL },
    /* Strictly: lone surrogates, and a key twice. */
    { "\"\\ud800\"", 0, 1, LLMGW_JSON_ERR_SURROGATE,
      "a JSON string holds a lone UTF-16 surrogate" },
    { "\"\\udc00\\ud800\"", 0, 1, LLMGW_JSON_ERR_SURROGATE, NULL },
    { "\"\\ud800\\u0041\"", 0, 1, LLMGW_JSON_ERR_SURROGATE, NULL },
    { "{\"model\":\"a\",\"model\":\"b\"}", 0, 1, LLMGW_JSON_ERR_DUPLICATE,
      "a JSON object has the same key twice" },
    { "{\"a\":{\"k\":1,\"k\\u0041\":2,\"kA\":3}}", 0, 1,
      LLMGW_JSON_ERR_DUPLICATE, NULL },
    { "{\"a\":1,\"b\":1,\"c\":1,\"d\":1,\"e\":1,\"f\":1,\"g\":1,\"h\":1,"
      "\"i\":1,\"j\":1,\"k\":1,\"l\":1,\"m\":1,\"n\":1,\"o\":1,\"p\":1,"
      "\"q\":1,\"r\":1,\"c\":2}",
      0, 1, LLMGW_JSON_ERR_DUPLICATE, NULL },
};

START_TEST(read_view_reports_error_kinds)
{
    llmgw_json_err_t err;
    const char *msg;
    size_t i;

    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        const char *t = refused[i].text;
        apr_size_t n = refused[i].len ? refused[i].len : strlen(t);
        llmgw_json_t *lax = llmgw_json_parse(test_pool, t, n, &err, &msg);

        ck_assert_msg(refused[i].strict_only ? lax != NULL : lax == NULL,
                      "#%zu: %s by the lax reader", i,
                      lax ? "accepted" : "refused");
        ck_assert_msg(!llmgw_json_read(test_pool, t, n, &err, &msg),
                      "#%zu: accepted %s", i, t);
        ck_assert_msg(err == refused[i].err, "#%zu: %d", i, err);
        if (refused[i].msg) {
            ck_assert_str_eq(msg, refused[i].msg);
        }
    }
    ck_assert_ptr_null(readj(deep(), &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_DEPTH);
    ck_assert_ptr_nonnull(readj("  {\"ok\":1}\n", &err));
    /* No NUL needed after the text: a number ends where the text does. */
    ck_assert_int_eq(
        llmgw_json_getl(llmgw_json_read(test_pool, "12345", 3, &err, &msg), 0,
                        NULL),
        123);
    /* Escaped control characters are fine; an underflow reads as 0. */
    ck_assert_ptr_nonnull(readj("\"\\u0001\\n\\u001f\"", &err));
    ck_assert(llmgw_json_getd(readj("[1e-400]", &err), -1, NULL) == -1);
    ck_assert(llmgw_json_array_getd(readj("[1e-400]", &err), 0, -1) == 0);
}
END_TEST

/* Answers: a lone surrogate reads as U+FFFD. Nothing of one text is left
 * for the next (json-c's tokener once kept half a surrogate pair from a
 * failed text and made an emoji of the next text's lone half). */
START_TEST(lone_surrogates_in_answers)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *j;

    ck_assert_ptr_null(
        llmgw_json_parse(test_pool, "\"\\ud83d", 7, &err, &msg));
    j = llmgw_json_parse(test_pool, "\"\\ude00\"", 8, &err, &msg);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(llmgw_json_gets(j, NULL), "\xef\xbf\xbd");
    j = llmgw_json_parse(test_pool, "\"a\\ud800b\"", 10, &err, &msg);
    ck_assert_str_eq(llmgw_json_gets(j, NULL), "a\xef\xbf\xbd"
                                               "b");
    j = llmgw_json_parse(test_pool, "\"\\ud83d\\ude00\"", 14, &err, &msg);
    ck_assert_str_eq(llmgw_json_gets(j, NULL), "\xf0\x9f\x98\x80");
}
END_TEST

/* Distinct numbers never share a canonical text; equal ones always do. */
START_TEST(canonical_numbers_are_exact)
{
    static const char *const differ[][2] = {
        { "1e100", "1e300" },
        { "1e100", "5e300" },
        { "1.5e200", "2.5e200" },
        { "9223372036854775807", "9223372036854775808" },
        { "9223372036854775808", "18446744073709551616" },
        { "18446744073709551616", "18446744073709551617" },
        { "-9223372036854775809", "-9223372036854775808" },
        { "0.1", "0.10000000000000002" },
        { "100000000000000000000", "1e20" },
        { "1", "1.0000000000000002" },
    };
    static const char *const same[][2] = {
        { "1", "1.0" },
        { "1", "1e0" },
        { "100", "1e2" },
        { "0", "-0" },
        { "0", "-0.0" },
        { "0.1", "0.1000000000000000055511151231257827" },
        { "1e100", "1E+100" },
        { "0.5", "5e-1" },
    };
    llmgw_json_err_t err;
    double d = 0.0;
    size_t i;

    for (i = 0; i < sizeof(differ) / sizeof(differ[0]); i++) {
        const char *a = canon_of(readj(differ[i][0], &err));
        const char *b = canon_of(readj(differ[i][1], &err));

        ck_assert_msg(strcmp(a, b) != 0, "%s and %s both give %s",
                      differ[i][0], differ[i][1], a);
    }
    for (i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        const char *a = canon_of(readj(same[i][0], &err));
        const char *b = canon_of(readj(same[i][1], &err));

        ck_assert_msg(strcmp(a, b) == 0, "%s: %s, %s: %s", same[i][0], a,
                      same[i][1], b);
    }
    ck_assert_str_eq(canon_of(readj("[0.1,1e100,-2.5e-7,1.0]", &err)),
                     "[0.1,1e+100,-2.5e-07,1]");
    /* Neighbouring doubles in [0, 2]: each its own text, which reads back
     * as that very double. */
    for (i = 0; i < 20000; i++) {
        double next;
        const char *a, *b;
        char num[40];

        d = (double)(i * 7919 % 20000) / 10000.0 + 1e-9 * (double)i;
        next = nextafter(d, 3.0);
        snprintf(num, sizeof(num), "%.17g", d);
        a = canon_of(readj(num, &err));
        snprintf(num, sizeof(num), "%.17g", next);
        b = canon_of(readj(num, &err));
        ck_assert_msg(strcmp(a, b) != 0, "%.17g and next: %s", d, a);
        ck_assert(strtod(a, NULL) == d && strtod(b, NULL) == next);
    }
}
END_TEST

/* The few changes made to a request keep every other byte. */
START_TEST(edits_keep_the_rest)
{
    llmgw_json_err_t err;
    const char *body = "{ \"model\" : \"a\", \"seed\":18446744073709551616,"
                       "\"t\":1.10,\"stream_options\":{\"x\":1} }";
    llmgw_json_t *j = readj(body, &err);
    const char *keys[] = { "model", "extra" }, *vals[] = { "\"b\"", "[1]" };
    const char *out;
    apr_size_t len;

    out = llmgw_json_edit(j, keys, vals, 2, &len);
    ck_assert_str_eq(out, "{ \"model\" : \"b\", \"seed\":18446744073709551616,"
                          "\"t\":1.10,\"stream_options\":{\"x\":1} ,"
                          "\"extra\":[1]}");
    ck_assert_int_eq(len, strlen(out));
    out = llmgw_json_edit(llmgw_json_getj(j, "stream_options", NULL),
                          (const char *[]){ "include_usage" },
                          (const char *[]){ "true" }, 1, NULL);
    ck_assert_str_eq(out, "{\"x\":1,\"include_usage\":true}");
    out = llmgw_json_edit(readj(" {  } ", &err), keys, vals, 2, NULL);
    ck_assert_str_eq(out, "{  \"model\":\"b\",\"extra\":[1]}");
    ck_assert_ptr_null(
        llmgw_json_edit(readj("[1]", &err), keys, vals, 1, NULL));
}
END_TEST

/* A NULL value leaves the member out with one of its commas, wherever it
 * stands and however often (an answer may give a key twice); the rest is
 * every byte as it came. */
START_TEST(edits_leave_members_out)
{
    static const struct {
        const char *in, *out;
    } t[] = {
        { "{\"usage\":null}", "{}" },
        { "{ \"usage\" : 1 , \"a\":2}", "{ \"a\":2}" },
        { "{\"a\":1, \"usage\":{\"b\":[]} ,\"c\":3}", "{\"a\":1 ,\"c\":3}" },
        { "{\"a\":1,\"usage\":null}", "{\"a\":1}" },
        { "{\"usage\":1,\"usage\":2,\"a\":3}", "{\"a\":3}" },
        { "{\"a\":1,\"usage\":1,\"usage\":2,\"b\":2}", "{\"a\":1,\"b\":2}" },
        { "{\"usage\":1,\"a\":2,\"usage\":3}", "{\"a\":2}" },
        { "{\"a\":1}", "{\"a\":1}" },
    };
    const char *keys[] = { "usage", "x" }, *vals[] = { NULL, "1" };
    llmgw_json_err_t err;
    const char *msg, *out;
    apr_size_t i, len;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        llmgw_json_t *j =
            llmgw_json_parse(test_pool, t[i].in, strlen(t[i].in), &err, &msg);

        ck_assert_ptr_nonnull(j);
        out = llmgw_json_edit(j, keys, vals, 1, &len);
        ck_assert_str_eq(out, t[i].out);
        ck_assert_int_eq(len, strlen(out));
    }
    /* A member added after every other one left: no stray comma. */
    out = llmgw_json_edit(readj("{\"usage\":1}", &err), keys, vals, 2, NULL);
    ck_assert_str_eq(out, "{\"x\":1}");
}
END_TEST

/* A change turns the view into json-c's tree: the change and the rest,
 * numbers as they came. */
START_TEST(read_view_changes_through_json_c)
{
    llmgw_json_err_t err;
    llmgw_json_t *j =
        readj("{\"model\":\"a\",\"n\":1.50,\"tools\":[{\"t\":1}],"
              "\"seed\":99999999999999999999,\"stream\":true}",
              &err);
    llmgw_json_t *out = llmgw_json_create_object(test_pool);

    llmgw_json_setj(out, llmgw_json_getj(j, "tools", NULL), "copied", NULL);
    llmgw_json_setj(out, llmgw_json_getj(j, "n", NULL), "num", NULL);
    llmgw_json_array_addj(llmgw_json_add_array(out, "list"),
                          llmgw_json_getj(j, "model", NULL));
    ck_assert_str_eq(llmgw_json_write(out, NULL),
                     "{\"copied\":[{\"t\":1}],\"num\":1.50,\"list\":[\"a\"]}");
    llmgw_json_sets(j, "b", "model", NULL);
    llmgw_json_setb(j, 1, "stream_options", "include_usage", NULL);
    ck_assert_str_eq(llmgw_json_write(j, NULL),
                     "{\"model\":\"b\",\"n\":1.50,\"tools\":[{\"t\":1}],"
                     "\"seed\":99999999999999999999,\"stream\":true,"
                     "\"stream_options\":{\"include_usage\":true}}");
    ck_assert_str_eq(llmgw_json_gets(j, "model", NULL), "b");
    /* Deleting what is not there changes nothing. */
    j = readj("{\"a\":1}", &err);
    llmgw_json_del(j, "usage");
    ck_assert_str_eq(llmgw_json_write(j, NULL), "{\"a\":1}");
}
END_TEST

/* What the gateway writes is valid UTF-8 whatever it is given. */
START_TEST(writes_only_valid_utf8)
{
    const char *ok = "caf\xc3\xa9";
    llmgw_json_t *j = llmgw_json_create_object(test_pool);
    apr_size_t n;

    ck_assert_ptr_eq(llmgw_json_utf8_clean(test_pool, ok, strlen(ok), &n), ok);
    ck_assert_str_eq(llmgw_json_utf8_clean(test_pool,
                                           "a\xff"
                                           "b\xe2\x82",
                                           5, &n),
                     "a\xef\xbf\xbd"
                     "b\xef\xbf\xbd\xef\xbf\xbd");
    ck_assert_str_eq(llmgw_json_quote(test_pool, "mock-\xff"),
                     "\"mock-\xef\xbf\xbd\"");
    llmgw_json_sets(j, "x\xc0\xaf", "id", NULL);
    llmgw_json_array_adds(llmgw_json_add_array(j, "a"), "\xed\xa0\x80");
    ck_assert_str_eq(llmgw_json_write(j, NULL),
                     "{\"id\":\"x\xef\xbf\xbd\xef\xbf\xbd\",\"a\":[\""
                     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"]}");
}
END_TEST

/* Whether an object's members are all named, for a read view and a
 * json-c tree alike. */
START_TEST(keys_within_a_list)
{
    static const char *const allowed[] = { "model", "options", NULL };
    static const char body[] = "{\"model\":\"m\",\"options\":{}}";
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *view =
        llmgw_json_read(test_pool, body, strlen(body), &err, &msg);
    llmgw_json_t *built = llmgw_json_create_object(test_pool);

    ck_assert_int_eq(llmgw_json_keys_within(view, allowed), 1);
    ck_assert_int_eq(llmgw_json_keys_within(NULL, allowed), 1);
    llmgw_json_sets(built, "m", "model", NULL);
    ck_assert_int_eq(llmgw_json_keys_within(built, allowed), 1);
    llmgw_json_sets(built, "x", "raw", NULL);
    ck_assert_int_eq(llmgw_json_keys_within(built, allowed), 0);
    view = llmgw_json_read(test_pool, "{\"model\":1,\"raw\":true}", 22, &err,
                           &msg);
    ck_assert_ptr_nonnull(view);
    ck_assert_int_eq(llmgw_json_keys_within(view, allowed), 0);
    view = llmgw_json_read(test_pool, "[1]", 3, &err, &msg);
    ck_assert_int_eq(llmgw_json_keys_within(view, allowed), 1);
}
END_TEST

Suite *json_suite(void)
{
    return test_suite(
        "json", "core", 0,
        TESTS(parses_and_reads_paths, reports_error_kinds,
              sets_paths_and_writes, quotes_strings, parses_a_prefix,
              converts_views_exactly, read_view_gets_paths,
              read_view_reports_error_kinds, lone_surrogates_in_answers,
              canonical_numbers_are_exact, edits_keep_the_rest,
              edits_leave_members_out, read_view_changes_through_json_c,
              writes_only_valid_utf8, keys_within_a_list));
}
