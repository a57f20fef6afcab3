/* test_estimate.c: the reservation's estimate: prompt bounds by bytes
 * (escapes, images, tools), max_tokens from the client, the route, the
 * limits' headroom or the fallback, choices, and bad values. */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_estimate.h"
#include "llmgw_ollama.h"
#include "test_core.h"

static llmgw_estimate_conf_t conf(void)
{
    llmgw_estimate_conf_t c;

    llmgw_estimate_defaults(&c);
    return c;
}

static int estimate_ex(llmgw_endpoint_t ep, const char *body,
                       const llmgw_estimate_conf_t *c, apr_int64_t headroom,
                       llmgw_estimate_t *e, llmgw_error_t *err)
{
    llmgw_request_t req;

    ck_assert_int_eq(
        llmgw_request_parse(test_pool, ep, body, strlen(body), &req, err), 0);
    return llmgw_estimate(&req, c, headroom, e, err);
}

static llmgw_estimate_t estimate(llmgw_endpoint_t ep, const char *body)
{
    llmgw_estimate_conf_t c = conf();
    llmgw_estimate_t e;
    llmgw_error_t err;

    ck_assert_int_eq(estimate_ex(ep, body, &c, APR_INT64_MAX, &e, &err), 0);
    return e;
}

#define MSG "{\"role\":\"user\",\"content\":\"hello\"}"
/* A chat body of MSG with these members too. */
#define CHAT_WITH(members) \
    "{\"model\":\"m\",\"messages\":[" MSG "]," members "}"

/* The chat body is refused with a 400 that names param. */
static void refused_naming(const llmgw_estimate_conf_t *c, const char *body,
                           const char *param)
{
    llmgw_estimate_t e;
    llmgw_error_t err;

    ck_assert_int_eq(
        estimate_ex(LLMGW_EP_CHAT, body, c, APR_INT64_MAX, &e, &err), 400);
    ck_assert_str_eq(err.param, param);
}

START_TEST(chat_prompt_is_its_bytes_and_the_template)
{
    llmgw_estimate_t e =
        estimate(LLMGW_EP_CHAT, "{\"model\":\"m\",\"messages\":[" MSG "]}");

    ck_assert_int_eq(e.prompt, 64 + 16 + (apr_int64_t)strlen(MSG));
    ck_assert_int_eq(e.choices, 1);
    ck_assert_int_eq(e.max_tokens, LLMGW_ESTIMATE_FALLBACK_MAX);
    ck_assert_int_eq(e.max_out, LLMGW_ESTIMATE_FALLBACK_MAX);
    ck_assert_int_eq(e.set, 1);
    ck_assert_str_eq(e.field, "max_tokens");
    e = estimate(LLMGW_EP_CHAT,
                 "{\"model\":\"m\",\"messages\":[" MSG "," MSG "," MSG "]}");
    ck_assert_int_eq(e.prompt, 64 + 3 * (16 + (apr_int64_t)strlen(MSG)));
}
END_TEST

START_TEST(escapes_and_multibyte_text_are_never_under_counted)
{
    /* "h\u00e9llo" is 6 bytes of UTF-8 and 11 of JSON; a byte-level
     * tokenizer makes at most 6 tokens of it. */
    static const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":"
                              "\"user\",\"content\":\"h\\u00e9llo "
                              "\xe6\x97\xa5\xe6\x9c\xac \\n\"}]}";
    llmgw_estimate_t e = estimate(LLMGW_EP_CHAT, body);
    apr_int64_t utf8 = 6 + 1 + 6 + 1 + 1;

    ck_assert_int_ge(e.prompt - 64 - 16, utf8);
    ck_assert_int_eq(e.prompt,
                     64 + 16
                         + (apr_int64_t)strlen(
                             "{\"role\":\"user\",\"content\":\"h\\u00e9llo "
                             "\xe6\x97\xa5\xe6\x9c\xac \\n\"}"));
}
END_TEST

START_TEST(images_count_per_image_not_their_bytes)
{
    char *url = apr_palloc(test_pool, 20001);
    const char *body;
    llmgw_estimate_t e;

    memset(url, 'A', 20000);
    url[20000] = '\0';
    body = apr_pstrcat(test_pool,
                       "{\"model\":\"m\",\"messages\":[{\"role\":"
                       "\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                       "\"what is it?\"},{\"type\":\"image_url\","
                       "\"image_url\":{\"url\":\"data:image/png;base64,",
                       url, "\"}}]}]}", NULL);
    e = estimate(LLMGW_EP_CHAT, body);
    ck_assert_int_eq(
        e.prompt, 64 + 16
                      + (apr_int64_t)strlen("{\"role\":\"user\",\"content\":}")
                      + (apr_int64_t)strlen("{\"type\":\"text\",\"text\":"
                                            "\"what is it?\"}")
                      + 2048);
}
END_TEST

START_TEST(tools_add_their_text_and_the_template_words)
{
    static const char *tools = "[{\"type\":\"function\",\"function\":"
                               "{\"name\":\"f\",\"parameters\":{}}}]";
    llmgw_estimate_t e = estimate(
        LLMGW_EP_CHAT,
        apr_pstrcat(test_pool,
                    "{\"model\":\"m\",\"messages\":[" MSG "],\"tools\":",
                    tools, "}", NULL));

    ck_assert_int_eq(e.prompt, 64 + 16 + (apr_int64_t)strlen(MSG)
                                   + (apr_int64_t)strlen(tools) + 512);
}
END_TEST

START_TEST(max_tokens_from_the_client)
{
    llmgw_estimate_conf_t c = conf();
    llmgw_estimate_t e;
    llmgw_error_t err;

    e = estimate(LLMGW_EP_CHAT, CHAT_WITH("\"max_tokens\":100"));
    ck_assert_int_eq(e.max_tokens, 100);
    ck_assert_int_eq(e.max_out, 100);
    ck_assert_int_eq(e.set, 0);
    /* max_completion_tokens wins, as with OpenAI. */
    e = estimate(LLMGW_EP_CHAT,
                 CHAT_WITH("\"max_tokens\":100,\"max_completion_tokens\":50"));
    ck_assert_int_eq(e.max_tokens, 50);
    ck_assert_str_eq(e.field, "max_completion_tokens");
    /* More than the route allows is cut, and the body must say so. */
    c.max_cap = 64;
    ck_assert_int_eq(estimate_ex(LLMGW_EP_CHAT,
                                 CHAT_WITH("\"max_tokens\":100000000000000"),
                                 &c, APR_INT64_MAX, &e, &err),
                     0);
    ck_assert_int_eq(e.max_tokens, 64);
    ck_assert_int_eq(e.set, 1);
    ck_assert_str_eq(e.field, "max_tokens");
    /* Without a cap a huge ask stays huge (and will not fit a limit). */
    c.max_cap = 0;
    estimate_ex(LLMGW_EP_CHAT, CHAT_WITH("\"max_tokens\":9223372036854775807"),
                &c, 10, &e, &err);
    ck_assert_int_eq(e.max_out, APR_INT64_C(1) << 40);
    refused_naming(&c, CHAT_WITH("\"max_tokens\":0"), "max_tokens");
    refused_naming(&c, CHAT_WITH("\"max_completion_tokens\":-3"),
                   "max_completion_tokens");
    /* "options" in an OpenAI body reaches no backend: no bound. */
    e = estimate(LLMGW_EP_CHAT, CHAT_WITH("\"options\":{\"num_predict\":33}"));
    ck_assert_int_eq(e.set, 1);
    ck_assert_int_eq(e.max_tokens, LLMGW_ESTIMATE_FALLBACK_MAX);
    ck_assert_str_eq(e.field, "max_tokens");
}
END_TEST

START_TEST(max_tokens_when_the_client_gives_none)
{
    llmgw_estimate_conf_t c = conf();
    const char *body = "{\"model\":\"m\",\"messages\":[" MSG "]}";
    apr_int64_t prompt = 64 + 16 + (apr_int64_t)strlen(MSG);
    llmgw_estimate_t e;
    llmgw_error_t err;

    c.default_max = 256;
    estimate_ex(LLMGW_EP_CHAT, body, &c, APR_INT64_MAX, &e, &err);
    ck_assert_int_eq(e.max_tokens, 256);
    ck_assert_int_eq(e.set, 1);
    /* What the budget has left, when that is less. */
    estimate_ex(LLMGW_EP_CHAT, body, &c, prompt + 100, &e, &err);
    ck_assert_int_eq(e.max_tokens, 100);
    estimate_ex(LLMGW_EP_CHAT, body, &c, prompt - 5, &e, &err);
    ck_assert_int_eq(e.max_tokens, 1);
    /* The cap bounds the route's default too. */
    c.max_cap = 128;
    estimate_ex(LLMGW_EP_CHAT, body, &c, APR_INT64_MAX, &e, &err);
    ck_assert_int_eq(e.max_tokens, 128);
}
END_TEST

START_TEST(choices_multiply_the_answer)
{
    llmgw_estimate_conf_t c = conf();
    llmgw_estimate_t e;
    llmgw_error_t err;

    e = estimate(LLMGW_EP_CHAT, CHAT_WITH("\"n\":3,\"max_tokens\":10"));
    ck_assert_int_eq(e.choices, 3);
    ck_assert_int_eq(e.max_out, 30);
    refused_naming(&c, CHAT_WITH("\"n\":0"), "n");
    refused_naming(&c, CHAT_WITH("\"n\":129"), "n");
    /* Completions: every prompt of a batch times max(n, best_of). */
    e = estimate(LLMGW_EP_COMPLETIONS,
                 "{\"model\":\"m\",\"prompt\":[\"a\","
                 "\"b\"],\"n\":2,\"best_of\":3,\"max_tokens\":5}");
    ck_assert_int_eq(e.choices, 6);
    ck_assert_int_eq(e.max_out, 30);
    ck_assert_int_eq(e.prompt, 64 + 2 * 16 + 9);
    /* The headroom is shared by the choices. */
    estimate_ex(LLMGW_EP_CHAT, CHAT_WITH("\"n\":4"), &c,
                64 + 16 + (apr_int64_t)strlen(MSG) + 400, &e, &err);
    ck_assert_int_eq(e.max_tokens, 100);
    ck_assert_int_eq(e.max_out, 400);
}
END_TEST

START_TEST(completions_and_embeddings)
{
    llmgw_estimate_t e;

    e = estimate(LLMGW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"abc\","
                                       "\"suffix\":\"xy\",\"max_tokens\":7}");
    ck_assert_int_eq(e.prompt, 64 + 16 + 5 + 4);
    ck_assert_int_eq(e.max_out, 7);
    /* A token array is one prompt, its text longer than its tokens. */
    e = estimate(LLMGW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,2,3],"
                                       "\"max_tokens\":7}");
    ck_assert_int_eq(e.choices, 1);
    ck_assert_int_ge(e.prompt - 64 - 16, 3);
    e = estimate(LLMGW_EP_EMBEDDINGS, "{\"model\":\"m\",\"input\":[\"a\","
                                      "\"bb\"]}");
    ck_assert_int_eq(e.prompt, 64 + 2 * 16 + 10);
    ck_assert_int_eq(e.max_out, 0);
    ck_assert_int_eq(e.set, 0);
}
END_TEST

START_TEST(ollama_clients_num_predict)
{
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":"
                       "\"user\",\"content\":\"hi\"}],\"options\":"
                       "{\"num_predict\":77}}";
    llmgw_estimate_conf_t c = conf();
    llmgw_request_t req;
    llmgw_estimate_t e;
    llmgw_error_t err;
    const char *out;
    apr_size_t len;

    ck_assert_int_eq(
        llmgw_ollama_front_request(test_pool, LLMGW_OLLAMA_EP_CHAT, body,
                                   strlen(body), &req, &out, &len, &err),
        0);
    ck_assert_int_eq(llmgw_estimate(&req, &c, APR_INT64_MAX, &e, &err), 0);
    ck_assert_int_eq(e.max_tokens, 77);
    ck_assert_int_eq(e.set, 0);
    ck_assert_int_ge(e.prompt, 64 + 16 + 2);
    /* -1 (no limit) in Ollama: none given, the gateway sets one. */
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
           "\"content\":\"hi\"}],\"options\":{\"num_predict\":-1}}";
    ck_assert_int_eq(
        llmgw_ollama_front_request(test_pool, LLMGW_OLLAMA_EP_CHAT, body,
                                   strlen(body), &req, &out, &len, &err),
        0);
    ck_assert_int_eq(llmgw_estimate(&req, &c, APR_INT64_MAX, &e, &err), 0);
    ck_assert_int_eq(e.set, 1);
}
END_TEST

START_TEST(completion_of_a_cut_stream)
{
    ck_assert_int_eq(llmgw_estimate_completion(120, 500), 120);
    ck_assert_int_eq(llmgw_estimate_completion(900, 500), 500);
    ck_assert_int_eq(llmgw_estimate_completion(900, 0), 900);
    ck_assert_int_eq(llmgw_estimate_completion(-1, 500), 0);
}
END_TEST

Suite *estimate_suite(void)
{
    return test_suite(
        "estimate", "estimate", 0,
        TESTS(chat_prompt_is_its_bytes_and_the_template,
              escapes_and_multibyte_text_are_never_under_counted,
              images_count_per_image_not_their_bytes,
              tools_add_their_text_and_the_template_words,
              max_tokens_from_the_client,
              max_tokens_when_the_client_gives_none,
              choices_multiply_the_answer, completions_and_embeddings,
              ollama_clients_num_predict, completion_of_a_cut_stream));
}
