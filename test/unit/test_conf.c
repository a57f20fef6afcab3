/* test_conf.c: the directive value parsers: whole values only, ranges,
 * no overflow, units, keywords and options, and the one error format. */
#include <string.h>

#include "llmgw_conf.h"
#include "test_core.h"

START_TEST(sizes)
{
    static const struct {
        const char *arg;
        apr_off_t want; /* -1: refused */
    } cases[] = {
        { "1", 1 },
        { "8M", 8 << 20 },
        { "8m", 8 << 20 },
        { "64k", 65536 },
        { "2G", (apr_off_t)2 << 30 },
        { "1048576", 1048576 },
        { "0", -1 },
        { "-5", -1 },
        { "12x", -1 },
        { "8MB", -1 },
        { "", -1 },
        { " 8", -1 },
        { "8 ", -1 },
        { "1T", -1 },
        { "M", -1 },
        { "99999999999999999999", -1 },
        { "9000000000G", -1 },
        /* A space, once cased, is a NUL: it once found strchr's
         * terminator and read as a fourth unit (2^40). */
        { "1 ", -1 },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        apr_off_t n = 0;
        const char *err =
            llmgw_conf_size(test_pool, "LLMMaxRequestBody", cases[i].arg, 1,
                            (apr_off_t)1 << 40, "LLMMaxRequestBody 8M", &n);

        if (cases[i].want < 0) {
            ck_assert_msg(err != NULL, "'%s' accepted", cases[i].arg);
            ck_assert_msg(strstr(err, "LLMMaxRequestBody: '")
                              && strstr(err, "e.g. LLMMaxRequestBody 8M"),
                          "%s", err);
        }
        else {
            ck_assert_msg(!err, "'%s': %s", cases[i].arg, err);
            ck_assert_int_eq(n, cases[i].want);
        }
    }
}
END_TEST

START_TEST(numbers_and_times)
{
    apr_int64_t n;
    apr_interval_time_t t;

    ck_assert_ptr_null(llmgw_conf_int(test_pool, "X", "-3", -5, 5, "X 1", &n));
    ck_assert_int_eq(n, -3);
    ck_assert_ptr_nonnull(
        llmgw_conf_int(test_pool, "X", "6", -5, 5, "X 1", &n));
    ck_assert_ptr_nonnull(
        llmgw_conf_int(test_pool, "X", "-1", 0, 5, "X 1", &n));
    ck_assert_ptr_nonnull(
        llmgw_conf_int(test_pool, "X", "1.5", 0, 5, "X 1", &n));
    ck_assert_ptr_nonnull(llmgw_conf_int(test_pool, "X", "9223372036854775808",
                                         0, APR_INT64_MAX, "X 1", &n));
    /* 2^64 + 5 would wrap to 5 without the overflow check. */
    ck_assert_ptr_nonnull(llmgw_conf_int(
        test_pool, "X", "18446744073709551621", 0, 10, "X 1", &n));
    ck_assert_ptr_null(llmgw_conf_int(test_pool, "X", "9223372036854775807", 0,
                                      APR_INT64_MAX, "X 1", &n));
    ck_assert_int_eq(n, APR_INT64_MAX);
    ck_assert_ptr_null(llmgw_conf_int(test_pool, "X", "-9223372036854775808",
                                      APR_INT64_MIN, 0, "X 1", &n));
    ck_assert_int_eq(n, APR_INT64_MIN);
    ck_assert_ptr_null(llmgw_conf_seconds(test_pool, "LLMCoalesce timeout",
                                          "120", 1, 86400, "e", &t));
    ck_assert_int_eq(apr_time_sec(t), 120);
    ck_assert_str_eq(llmgw_conf_seconds(test_pool, "LLMCoalesce timeout", "0",
                                        1, 86400, "LLMCoalesce on timeout=120",
                                        &t),
                     "LLMCoalesce timeout: '0' is not a number of seconds "
                     "from 1 to 86400; e.g. LLMCoalesce on timeout=120");
    ck_assert_ptr_null(
        llmgw_conf_msec(test_pool, "T", "250", 1, 1000, "e", &t));
    ck_assert_int_eq(apr_time_as_msec(t), 250);
}
END_TEST

/* Ranges on one side of 0 (fuzz_conf found each): a number past the
 * range's end never wraps into it, a size is never taken from a range of
 * negative sizes, and a time whose microseconds overflow is refused. */
START_TEST(edges_of_ranges)
{
    apr_int64_t n = 0;
    apr_off_t size = 0;
    apr_interval_time_t t = 0;

    ck_assert_ptr_nonnull(llmgw_conf_int(test_pool, "X", "9999999999999999999",
                                         APR_INT64_MIN, -1, "X 1", &n));
    ck_assert_ptr_nonnull(
        llmgw_conf_int(test_pool, "X", "0", -5, -1, "X 1", &n));
    ck_assert_ptr_null(
        llmgw_conf_int(test_pool, "X", "-5", -5, -1, "X 1", &n));
    ck_assert_int_eq(n, -5);
    ck_assert_ptr_nonnull(
        llmgw_conf_size(test_pool, "X", "0K", -1, -1, "X 1", &size));
    ck_assert_ptr_nonnull(llmgw_conf_seconds(test_pool, "X", "9223372036855",
                                             1, APR_INT64_MAX, "X 1", &t));
    ck_assert_ptr_null(llmgw_conf_seconds(test_pool, "X", "9223372036854", 1,
                                          APR_INT64_MAX, "X 1", &t));
    ck_assert_int_eq(t, (apr_interval_time_t)9223372036854 * 1000000);
    ck_assert_ptr_nonnull(llmgw_conf_msec(test_pool, "X", "-9223372036854776",
                                          APR_INT64_MIN, 0, "X 1", &t));
}
END_TEST

START_TEST(keywords_and_options)
{
    static const char *const names[] = { "off", "openai", "ollama", NULL };
    static const char *const opts[] = { "ttl", "max-item", NULL };
    const char *v;
    int i;

    ck_assert_ptr_null(
        llmgw_conf_keyword(test_pool, "LLMApi", "OpenAI", names, &i));
    ck_assert_int_eq(i, 1);
    ck_assert_str_eq(
        llmgw_conf_keyword(test_pool, "LLMApi", "bogus", names, &i),
        "LLMApi: unknown value 'bogus' (off, openai, ollama)");
    ck_assert_ptr_null(llmgw_conf_flag(test_pool, "F", "On", &i));
    ck_assert_int_eq(i, 1);
    ck_assert_ptr_null(
        llmgw_conf_option(test_pool, "LLMCache", "MAX-ITEM=8k", opts, &i, &v));
    ck_assert_int_eq(i, 1);
    ck_assert_str_eq(v, "8k");
    ck_assert_str_eq(
        llmgw_conf_option(test_pool, "LLMCache", "ttl", opts, &i, &v),
        "LLMCache: unknown option 'ttl' (ttl=, max-item=)");
    ck_assert_ptr_nonnull(
        llmgw_conf_option(test_pool, "LLMCache", "ttlx=1", opts, &i, &v));
}
END_TEST

Suite *conf_suite(void)
{
    return test_suite("conf", "values", 0,
                      TESTS(sizes, numbers_and_times, edges_of_ranges,
                            keywords_and_options));
}
