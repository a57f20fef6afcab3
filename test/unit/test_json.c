/* test_json.c: the json-c wrapper: parse errors by kind, path getters and
 * setters, and compact output; the read view (llmgw_json_read) against
 * json-c's parse. */
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
                            "\"arr\":[1,2,3],\"z\":null}", &err);

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
    ck_assert_int_eq(llmgw_json_array_len(llmgw_json_getj(j, "arr", NULL)),
                     3);
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
    ck_assert_str_eq(llmgw_json_quote(test_pool, "a\"b\n/"),
                     "\"a\\\"b\\n/\"");
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

/* Texts both parsers take: the same canonical text, types and values.
 * (Scalars inside an array: json-c cannot end a number at the end of a
 * text that has no NUL.) */
START_TEST(read_view_agrees_with_json_c)
{
    static const char *const docs[] = {
        "{}", "[]", "[0]", "[-0]", "[12,-7]", "[1.5,1e3,-2.5E-3,1.0]",
        "[9223372036854775807,-9223372036854775808]",
        "[123456789012345678901]", "[true,false,null]", "\"\"",
        "\"plain\"",
        "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041\\u00e9\\u20ac\"",
        "\"pair \\ud83d\\ude00 end\"", "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
        ("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
         "\"temperature\":0,\"top_p\":0.9,\"stream\":false,\"stop\":null}"),
        " { \"b\" : [ 1 , { \"z\" : 1 , \"a\" : [ ] } ] , \"a\" : { } } ",
        "{\"dup\":1,\"x\":2,\"dup\":[3]}", "[[[[[[[[[[1]]]]]]]]]]",
        "{\"k\\u0041\":1,\"kA\":2}",
    };
    size_t i;

    for (i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        llmgw_json_err_t e1, e2;
        llmgw_json_t *a = parse(docs[i], &e1), *b = readj(docs[i], &e2);
        apr_size_t la, lb;
        const char *ca, *cb;

        ck_assert_msg(a && b, "doc %zu: json-c %d, read %d", i, e1, e2);
        ca = llmgw_json_write_canonical(test_pool, a, NULL, &la);
        cb = llmgw_json_write_canonical(test_pool, b, NULL, &lb);
        ck_assert_msg(la == lb && memcmp(ca, cb, la) == 0,
                      "doc %zu: %s vs %s", i, ca, cb);
        ck_assert_int_eq(llmgw_json_type(a, NULL), llmgw_json_type(b, NULL));
        ck_assert(llmgw_json_getd(a, -1, NULL) == llmgw_json_getd(b, -1,
                                                                  NULL));
        ck_assert(llmgw_json_getl(a, -1, NULL) == llmgw_json_getl(b, -1,
                                                                  NULL));
    }
}
END_TEST

START_TEST(read_view_gets_paths)
{
    llmgw_json_err_t err;
    llmgw_json_t *j = readj("{\"a\":{\"b\":\"x\",\"n\":42,\"t\":true},"
                            "\"arr\":[1,2.5,\"s\"],\"z\":null,\"n\":1,"
                            "\"n\":2}", &err), *arr;

    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(llmgw_json_gets(j, "a", "b", NULL), "x");
    ck_assert_int_eq(llmgw_json_getl(j, -1, "a", "n", NULL), 42);
    ck_assert_int_eq(llmgw_json_getb(j, 0, "a", "t", NULL), 1);
    ck_assert_ptr_null(llmgw_json_gets(j, "a", "n", NULL));
    ck_assert_int_eq(llmgw_json_type(j, "z", NULL), LLMGW_JSON_NULL);
    ck_assert_int_eq(llmgw_json_type(j, "z", "deeper", NULL),
                     LLMGW_JSON_MISSING);
    ck_assert_int_eq(llmgw_json_getl(j, 0, "n", NULL), 2);  /* the last */
    arr = llmgw_json_getj(j, "arr", NULL);
    ck_assert_int_eq(llmgw_json_array_len(arr), 3);
    ck_assert(llmgw_json_array_getd(arr, 1, 0) == 2.5);
    ck_assert(llmgw_json_array_getd(arr, 2, -1) == -1);
    ck_assert_str_eq(llmgw_json_gets(llmgw_json_array_get(arr, 2), NULL),
                     "s");
    ck_assert_str_eq(llmgw_json_write(arr, NULL), "[1,2.5,\"s\"]");
}
END_TEST

START_TEST(read_view_reports_error_kinds)
{
    static const struct {
        const char *text;
        llmgw_json_err_t err;
        const char *msg;
    } bad[] = {
        { "", LLMGW_JSON_ERR_SYNTAX, "JSON text ends early" },
        { "{\"a\":", LLMGW_JSON_ERR_SYNTAX, "JSON text ends early" },
        { "{\"a\":1,}", LLMGW_JSON_ERR_SYNTAX, "JSON syntax error" },
        { "[1,]", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "{'a':1}", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "{\"a\":1 /* c */}", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "[NaN]", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "[01]", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "[1.]", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "[-]", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "[tru]", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "\"\\x\"", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "\"\\u12\"", LLMGW_JSON_ERR_SYNTAX, NULL },
        { "\"open", LLMGW_JSON_ERR_SYNTAX, "JSON text ends early" },
        { "{} x", LLMGW_JSON_ERR_TRAILING,
          "unexpected data after the JSON value" },
        { "\"\xff\xfe\"", LLMGW_JSON_ERR_UTF8, "JSON text is not valid UTF-8" },
        { "\"\xc0\xaf\"", LLMGW_JSON_ERR_UTF8, NULL },    /* overlong */
        { "\"\xed\xa0\x80\"", LLMGW_JSON_ERR_UTF8, NULL }, /* surrogate */
        { "\"\xf4\x90\x80\x80\"", LLMGW_JSON_ERR_UTF8, NULL },
        { "\"\xe2\x82\"", LLMGW_JSON_ERR_UTF8, NULL },     /* cut short */
    };
    llmgw_json_err_t err;
    const char *msg;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(!llmgw_json_read(test_pool, bad[i].text,
                                       strlen(bad[i].text), &err, &msg),
                      "accepted %s", bad[i].text);
        ck_assert_msg(err == bad[i].err, "%s: %d", bad[i].text, err);
        if (bad[i].msg) {
            ck_assert_str_eq(msg, bad[i].msg);
        }
    }
    ck_assert_ptr_null(readj(deep(), &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_DEPTH);
    ck_assert_ptr_nonnull(readj("  {\"ok\":1}\n", &err));
    /* No NUL needed after the text: a number ends where the text does. */
    ck_assert_int_eq(llmgw_json_getl(llmgw_json_read(test_pool, "12345", 3,
                                                     &err, &msg),
                                     0, NULL), 123);
}
END_TEST

/* A change turns the view into json-c's tree: the change and the rest. */
START_TEST(read_view_changes_through_json_c)
{
    llmgw_json_err_t err;
    llmgw_json_t *j = readj("{\"model\":\"a\",\"n\":1.5,\"tools\":[{\"t\":1}],"
                            "\"stream\":true}", &err);
    llmgw_json_t *out = llmgw_json_create_object(test_pool);

    llmgw_json_setj(out, llmgw_json_getj(j, "tools", NULL), "copied", NULL);
    llmgw_json_setj(out, llmgw_json_getj(j, "n", NULL), "num", NULL);
    llmgw_json_array_addj(llmgw_json_add_array(out, "list"),
                          llmgw_json_getj(j, "model", NULL));
    ck_assert_str_eq(llmgw_json_write(out, NULL),
                     "{\"copied\":[{\"t\":1}],\"num\":1.5,\"list\":[\"a\"]}");
    llmgw_json_sets(j, "b", "model", NULL);
    llmgw_json_setb(j, 1, "stream_options", "include_usage", NULL);
    ck_assert_str_eq(llmgw_json_write(j, NULL),
                     "{\"model\":\"b\",\"n\":1.5,\"tools\":[{\"t\":1}],"
                     "\"stream\":true,\"stream_options\":{\"include_usage\":"
                     "true}}");
    ck_assert_str_eq(llmgw_json_gets(j, "model", NULL), "b");
}
END_TEST

Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, test_pool_setup, test_pool_teardown);
    tcase_add_test(tc, parses_and_reads_paths);
    tcase_add_test(tc, reports_error_kinds);
    tcase_add_test(tc, sets_paths_and_writes);
    tcase_add_test(tc, quotes_strings);
    tcase_add_test(tc, parses_a_prefix);
    tcase_add_test(tc, read_view_agrees_with_json_c);
    tcase_add_test(tc, read_view_gets_paths);
    tcase_add_test(tc, read_view_reports_error_kinds);
    tcase_add_test(tc, read_view_changes_through_json_c);
    suite_add_tcase(s, tc);
    return s;
}
