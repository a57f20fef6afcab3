/* test_json.c: the json-c wrapper: parse errors by kind, path getters and
 * setters, and compact output. */
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

START_TEST(reports_error_kinds)
{
    llmgw_json_err_t err;
    char deep[400];
    int i;

    ck_assert_ptr_null(parse("{\"a\":", &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_SYNTAX);
    ck_assert_ptr_null(parse("{} x", &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_TRAILING);
    ck_assert_ptr_null(parse("\"\xff\xfe\"", &err));
    ck_assert_int_eq(err, LLMGW_JSON_ERR_UTF8);
    for (i = 0; i < 200; i++) {
        deep[i] = '[';
    }
    for (; i < 399; i++) {
        deep[i] = ']';
    }
    deep[399] = '\0';
    ck_assert_ptr_null(parse(deep, &err));
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
    suite_add_tcase(s, tc);
    return s;
}
