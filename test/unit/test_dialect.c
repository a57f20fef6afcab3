/* test_dialect.c: OpenAI endpoints, request validation with the right
 * error fields, the upstream body, usage extraction and error JSON. */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_dialect.h"
#include "test_core.h"

static int parse(llmgw_endpoint_t ep, const char *body, llmgw_request_t *req,
                 llmgw_error_t *err)
{
    memset(err, 0, sizeof(*err));
    return llmgw_request_parse(test_pool, ep, body, strlen(body), req, err);
}

START_TEST(maps_endpoints)
{
    const char *id;

    ck_assert_int_eq(llmgw_endpoint_parse(test_pool, "/chat/completions", &id),
                     LLMGW_EP_CHAT);
    ck_assert_int_eq(llmgw_endpoint_parse(test_pool, "/v1/completions", &id),
                     LLMGW_EP_COMPLETIONS);
    ck_assert_int_eq(llmgw_endpoint_parse(test_pool, "/embeddings", &id),
                     LLMGW_EP_EMBEDDINGS);
    ck_assert_int_eq(llmgw_endpoint_parse(test_pool, "/models", &id),
                     LLMGW_EP_MODELS);
    ck_assert_int_eq(llmgw_endpoint_parse(test_pool, "/models/org/m:1", &id),
                     LLMGW_EP_MODEL);
    ck_assert_str_eq(id, "org/m:1");
    ck_assert_int_eq(
        llmgw_endpoint_parse(test_pool, "/images/generations", &id),
        LLMGW_EP_NONE);
    ck_assert_str_eq(llmgw_endpoint_method(LLMGW_EP_CHAT), "POST");
    ck_assert_str_eq(llmgw_endpoint_method(LLMGW_EP_MODELS), "GET");
    ck_assert_str_eq(llmgw_endpoint_upstream_path(LLMGW_EP_EMBEDDINGS),
                     "/v1/embeddings");
}
END_TEST

START_TEST(accepts_valid_requests)
{
    llmgw_request_t req;
    llmgw_error_t err;

    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":[],"
                           "\"stream\":true}",
                           &req, &err),
                     0);
    ck_assert_str_eq(req.model, "m");
    ck_assert_int_eq(req.stream, 1);
    ck_assert_int_eq(req.wants_usage, 0);
    ck_assert_int_eq(parse(LLMGW_EP_COMPLETIONS,
                           "{\"model\":\"m\","
                           "\"prompt\":\"hi\",\"stream_options\":"
                           "{\"include_usage\":true}}",
                           &req, &err),
                     0);
    ck_assert_int_eq(req.wants_usage, 1);
    ck_assert_int_eq(parse(LLMGW_EP_EMBEDDINGS,
                           "{\"model\":\"m\","
                           "\"input\":[\"a\"],\"stream\":true}",
                           &req, &err),
                     0);
    ck_assert_int_eq(req.stream, 0);
}
END_TEST

START_TEST(rejects_bad_requests_with_param)
{
    llmgw_request_t req;
    llmgw_error_t err;

    ck_assert_int_eq(parse(LLMGW_EP_CHAT, "{", &req, &err), 400);
    ck_assert_str_eq(err.code, "invalid_json");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT, "[1]", &req, &err), 400);
    ck_assert_str_eq(err.code, "invalid_json");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT, "{\"messages\":[]}", &req, &err),
                     400);
    ck_assert_str_eq(err.param, "model");
    ck_assert_str_eq(err.code, "missing_required_parameter");
    ck_assert_int_eq(
        parse(LLMGW_EP_CHAT, "{\"model\":5,\"messages\":[]}", &req, &err),
        400);
    ck_assert_str_eq(err.code, "invalid_type");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT, "{\"model\":\"m\"}", &req, &err),
                     400);
    ck_assert_str_eq(err.param, "messages");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":"
                           "\"hi\"}",
                           &req, &err),
                     400);
    ck_assert_str_eq(err.param, "messages");
    ck_assert_str_eq(err.code, "invalid_type");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":[],"
                           "\"stream\":\"yes\"}",
                           &req, &err),
                     400);
    ck_assert_str_eq(err.param, "stream");
    ck_assert_int_eq(
        parse(LLMGW_EP_EMBEDDINGS, "{\"model\":\"m\"}", &req, &err), 400);
    ck_assert_str_eq(err.param, "input");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":[],"
                           "\"temperature\":\"hot\"}",
                           &req, &err),
                     400);
    ck_assert_str_eq(err.param, "temperature");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":[],"
                           "\"max_tokens\":1.5}",
                           &req, &err),
                     400);
    ck_assert_str_eq(err.param, "max_tokens");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":[],"
                           "\"stop\":5}",
                           &req, &err),
                     400);
    ck_assert_str_eq(err.param, "stop");
    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":[],"
                           "\"tools\":{}}",
                           &req, &err),
                     400);
    ck_assert_str_eq(err.param, "tools");
    /* null means "not given"; unknown members pass. */
    ck_assert_int_eq(parse(LLMGW_EP_CHAT,
                           "{\"model\":\"m\",\"messages\":[],"
                           "\"seed\":null,\"x-vendor\":{}}",
                           &req, &err),
                     0);
}
END_TEST

START_TEST(keeps_body_when_nothing_changes)
{
    const char *body = "{\"model\":\"m\",\"messages\":[]}";
    llmgw_request_t req;
    llmgw_error_t err;
    apr_size_t len;
    int strip;

    ck_assert_int_eq(parse(LLMGW_EP_CHAT, body, &req, &err), 0);
    ck_assert_ptr_eq(llmgw_request_upstream_body(&req, "m", body, strlen(body),
                                                 &len, &strip),
                     body);
    ck_assert_int_eq(strip, 0);
}
END_TEST

START_TEST(renames_and_injects_usage)
{
    const char *body = "{\"model\":\"gpt-4o\",\"messages\":[],"
                       "\"stream\":true}";
    llmgw_request_t req;
    llmgw_error_t err;
    apr_size_t len;
    int strip;
    const char *out;

    ck_assert_int_eq(parse(LLMGW_EP_CHAT, body, &req, &err), 0);
    out = llmgw_request_upstream_body(&req, "local", body, strlen(body), &len,
                                      &strip);
    ck_assert_int_eq(strip, 1);
    ck_assert_str_eq(out, "{\"model\":\"local\",\"messages\":[],\"stream\":"
                          "true,\"stream_options\":{\"include_usage\":true}}");
    ck_assert_int_eq(len, strlen(out));
}
END_TEST

/* What the backend gets is the client's bytes but for the two edits:
 * numbers of any size, spacing and the other stream options as sent. */
START_TEST(upstream_edits_keep_the_clients_bytes)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "{\"model\":\"gpt-4o\", \"seed\":18446744073709551617,"
          "\"temperature\":0.70,\"messages\":[],\"stream\":true,"
          "\"stream_options\":{\"x\":1}}",
          "{\"model\":\"local\", \"seed\":18446744073709551617,"
          "\"temperature\":0.70,\"messages\":[],\"stream\":true,"
          "\"stream_options\":{\"x\":1,\"include_usage\":true}}" },
        { "{\"model\":\"gpt-4o\",\"messages\":[],\"stream\":true,"
          "\"stream_options\":null}",
          "{\"model\":\"local\",\"messages\":[],\"stream\":true,"
          "\"stream_options\":{\"include_usage\":true}}" },
        { "{\"model\":\"gpt-4o\",\"messages\":[],\"stream\":true,"
          "\"stream_options\":{\"include_usage\":false}}",
          "{\"model\":\"local\",\"messages\":[],\"stream\":true,"
          "\"stream_options\":{\"include_usage\":true}}" },
        { "{\"model\":\"gpt-4o\",\"messages\":[{\"content\":\"\\u00e9\\n\"}]}",
          "{\"model\":\"local\",\"messages\":[{\"content\":\"\\u00e9\\n\"}]"
          "}" },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        llmgw_request_t req;
        llmgw_error_t err;
        apr_size_t len;
        int strip;
        const char *out;

        ck_assert_int_eq(parse(LLMGW_EP_CHAT, cases[i].in, &req, &err), 0);
        out = llmgw_request_upstream_body(&req, "local", cases[i].in,
                                          strlen(cases[i].in), &len, &strip);
        ck_assert_str_eq(out, cases[i].out);
        ck_assert_int_eq(len, strlen(out));
    }
}
END_TEST

/* U+0000, duplicate keys, lone surrogates and control characters in a
 * request are refused before anything routes or keys on it. */
START_TEST(refuses_ambiguous_requests)
{
    static const char *const bodies[] = {
        "{\"model\":\"mock-small\\u0000evil\",\"messages\":[]}",
        "{\"model\":\"m\",\"messages\\u0000\":[],\"messages\":[]}",
        "{\"model\":\"m\",\"model\":\"n\",\"messages\":[]}",
        "{\"model\":\"m\",\"messages\":[{\"content\":\"\\udc00\"}]}",
        "{\"model\":\"m\",\"messages\":[{\"content\":\"a\tb\"}]}",
        "{\"model\":\"m\",\"messages\":[],\"temperature\":1e999}",
    };
    size_t i;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        llmgw_request_t req;
        llmgw_error_t err;

        ck_assert_int_eq(parse(LLMGW_EP_CHAT, bodies[i], &req, &err), 400);
        ck_assert_str_eq(err.code, "invalid_json");
    }
}
END_TEST

/* llmgw_usage_find on text from a fresh result: found, and the counts. */
static void check_usage(const char *text, apr_size_t len, int found,
                        apr_int64_t prompt, apr_int64_t completion,
                        apr_int64_t total)
{
    llmgw_usage_t u = { 0 };

    ck_assert_int_eq(llmgw_usage_find(text, len, &u), found);
    ck_assert_int_eq(u.found, found);
    if (found) {
        ck_assert_int_eq(u.prompt, prompt);
        ck_assert_int_eq(u.completion, completion);
        ck_assert_int_eq(u.total, total);
    }
}

START_TEST(finds_usage)
{
    static const struct {
        const char *text;
        int found;
        apr_int64_t prompt, completion, total;
    } cases[] = {
        { "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
          "\"completion_tokens\":7,\"total_tokens\":12},\"timings\":{}}",
          1, 5, 7, 12 },
        { "{\"usage\":null}", 0, 0, 0, 0 },
        /* no total: the sum */
        { "{\"usage\": {\"prompt_tokens\":1,\"completion_tokens\":2}}", 1, 1,
          2, 3 },
        /* Details, strings with braces and quotes, floats: skipped over. */
        { "{\"usage\":{\"prompt_tokens_details\":"
          "{\"cached_tokens\":3,\"x\":[1,{\"a\":\"}\\\"\"}]},"
          " \"note\" : \"usage: {\" , \"completion_tokens\" :"
          " 40 ,\"prompt_tokens\":9,\"cost\":1.5e-3,"
          "\"ok\":true,\"none\":null}}",
          1, 9, 40, 49 },
        /* cut short */
        { "{\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4", 0, 0, 0,
          0 },
    };
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_usage(cases[i].text, strlen(cases[i].text), cases[i].found,
                    cases[i].prompt, cases[i].completion, cases[i].total);
    }
    /* A window that starts mid-object still finds the last usage. */
    check_usage(cases[0].text + 9, strlen(cases[0].text) - 9, 1, 5, 7, 12);
}
END_TEST

/* Counts as backends may write them, and what the gateway makes of them:
 * clamped to [0, LLMGW_TOKENS_MAX], a fraction rounded up; the total is
 * never below the sum of its parts (which saturates too). */
static const struct {
    const char *count;
    apr_int64_t v;
} counts[] = {
    { "0", 0 },
    { "7", 7 },
    { "999999999999999", 999999999999999 },
    { "1000000000000000", LLMGW_TOKENS_MAX },
    { "1000000000000001", LLMGW_TOKENS_MAX },
    { "9223372036854775807", LLMGW_TOKENS_MAX },  /* 2^63 - 1 */
    { "9223372036854775808", LLMGW_TOKENS_MAX },  /* 2^63 */
    { "18446744073709551615", LLMGW_TOKENS_MAX }, /* 2^64 - 1 */
    { "18446744073709551616", LLMGW_TOKENS_MAX }, /* 2^64 */
    { "123456789012345678901234567890", LLMGW_TOKENS_MAX },
    { "1e300", LLMGW_TOKENS_MAX },
    { "9.3e18", LLMGW_TOKENS_MAX },
    { "-1", 0 },
    { "-9223372036854775808", 0 },
    { "-0.5", 0 },
    { "-1e300", 0 },
    { "12.5", 13 },
    { "12.0", 12 },
    { "1e3", 1000 },
    { "1.5E1", 15 },
    { "25e-1", 3 },
    { "0.25", 1 },
    { "100e-2", 1 },
    { "0e5", 0 },
};

static void check_text(const char *text, int found, apr_int64_t prompt,
                       apr_int64_t completion, apr_int64_t total)
{
    check_usage(text, strlen(text), found, prompt, completion, total);
}

static apr_int64_t twice(apr_int64_t v)
{
    return v > LLMGW_TOKENS_MAX / 2 ? LLMGW_TOKENS_MAX : 2 * v;
}

START_TEST(usage_counts_are_clamped)
{
    apr_size_t i;

    for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        const char *c = counts[i].count;
        const char *text = apr_pstrcat(test_pool,
                                       "{\"usage\":{"
                                       "\"prompt_tokens\":",
                                       c,
                                       ","
                                       "\"completion_tokens\":",
                                       c,
                                       ","
                                       "\"total_tokens\":",
                                       c, "}}", NULL);
        llmgw_usage_t u = { 0 };

        ck_assert_msg(llmgw_usage_find(text, strlen(text), &u), "%s", c);
        ck_assert_msg(u.prompt == counts[i].v && u.completion == counts[i].v
                          && u.total == twice(counts[i].v),
                      "%s: %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                      " %" APR_INT64_T_FMT,
                      c, u.prompt, u.completion, u.total);
    }
    /* What is not a number is not a count; a tiny fraction is a token. */
    check_text("{\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":"
               "null,\"total_tokens\":true}}",
               1, 0, 0, 0);
    check_text("{\"usage\":{\"prompt_tokens\":1e-99999,"
               "\"completion_tokens\":0e99999}}",
               1, 1, 0, 1);
    /* A total below the parts' sum is the sum; above it, itself. */
    check_text("{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4,"
               "\"total_tokens\":1}}",
               1, 5, 4, 9);
    check_text("{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4,"
               "\"total_tokens\":11}}",
               1, 5, 4, 11);
    check_text("{\"usage\":{\"prompt_tokens\":900000000000000,"
               "\"completion_tokens\":900000000000000}}",
               1, 900000000000000, 900000000000000, LLMGW_TOKENS_MAX);
}
END_TEST

START_TEST(token_helpers_saturate)
{
    double zero = 0;

    ck_assert(llmgw_tokens_of(0) == 0);
    ck_assert(llmgw_tokens_of(-3) == 0);
    ck_assert(llmgw_tokens_of(0.1) == 1);
    ck_assert(llmgw_tokens_of(41.0) == 41);
    ck_assert(llmgw_tokens_of(41.000001) == 42);
    ck_assert(llmgw_tokens_of(999999999999999.0) == 999999999999999);
    ck_assert(llmgw_tokens_of(9223372036854775807.0) == LLMGW_TOKENS_MAX);
    ck_assert(llmgw_tokens_of(1e300) == LLMGW_TOKENS_MAX);
    ck_assert(llmgw_tokens_of(1 / zero) == LLMGW_TOKENS_MAX);
    ck_assert(llmgw_tokens_of(-1 / zero) == 0);
    ck_assert(llmgw_tokens_of(zero / zero) == 0);
    ck_assert(llmgw_tokens_add(APR_INT64_MAX, APR_INT64_MAX)
              == LLMGW_TOKENS_MAX);
    ck_assert(llmgw_tokens_add(APR_INT64_MIN, 5) == 5);
    ck_assert(llmgw_tokens_add(LLMGW_TOKENS_MAX - 1, 1) == LLMGW_TOKENS_MAX);
    ck_assert(llmgw_tokens_add(LLMGW_TOKENS_MAX - 2, 1)
              == LLMGW_TOKENS_MAX - 1);
}
END_TEST

START_TEST(writes_error_shape)
{
    llmgw_error_t err;

    llmgw_error_set(&err, 404, "invalid_request_error", "model",
                    "model_not_found", "no \"x\"");
    ck_assert_str_eq(llmgw_error_json(test_pool, &err),
                     "{\"error\":{\"message\":\"no \\\"x\\\"\",\"type\":"
                     "\"invalid_request_error\",\"param\":\"model\","
                     "\"code\":\"model_not_found\"}}");
    llmgw_error_for_status(504, &err);
    ck_assert_str_eq(err.code, "upstream_timeout");
    ck_assert_ptr_null(err.param);
    llmgw_error_for_status(503, &err);
    ck_assert_str_eq(err.code, "no_backend_available");
}
END_TEST

Suite *dialect_suite(void)
{
    return test_suite(
        "dialect", "openai", 0,
        TESTS(maps_endpoints, accepts_valid_requests,
              rejects_bad_requests_with_param, keeps_body_when_nothing_changes,
              renames_and_injects_usage, upstream_edits_keep_the_clients_bytes,
              refuses_ambiguous_requests, finds_usage,
              usage_counts_are_clamped, token_helpers_saturate,
              writes_error_shape));
}
