/* test_cache.c: SHA-256 vectors, cache keys (what changes them and what
 * does not), eligibility, and records built from streams and bodies. */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_cache.h"
#include "llmgw_sha256.h"
#include "llmgw_stream.h"
#include "test_core.h"

static llmgw_request_t *req(llmgw_endpoint_t ep, const char *body)
{
    llmgw_request_t *r = apr_pcalloc(test_pool, sizeof(*r));
    llmgw_error_t err;

    ck_assert_int_eq(
        llmgw_request_parse(test_pool, ep, body, strlen(body), r, &err), 0);
    return r;
}

static const char *key(const char *body)
{
    return llmgw_cache_key(test_pool, req(LLMGW_EP_CHAT, body), "m",
                           "balancer://be", "openai");
}

/* FIPS 180-4's examples and a million 'a's, both with the CPU's SHA
 * extensions (where this machine has them) and in portable C. */
static void check_vectors(void)
{
    char *million = apr_palloc(test_pool, 1000000);

    ck_assert_str_eq(llmgw_sha256_hex(test_pool, "abc", 3),
                     "ba7816bf8f01cfea414140de5dae2223"
                     "b00361a396177a9cb410ff61f20015ad");
    ck_assert_str_eq(llmgw_sha256_hex(test_pool, "", 0),
                     "e3b0c44298fc1c149afbf4c8996fb924"
                     "27ae41e4649b934ca495991b7852b855");
    ck_assert_str_eq(
        llmgw_sha256_hex(
            test_pool,
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56),
        "248d6a61d20638b8e5c026930c3e6039"
        "a33ce45964ff2167f6ecedd419db06c1");
    memset(million, 'a', 1000000);
    ck_assert_str_eq(llmgw_sha256_hex(test_pool, million, 1000000),
                     "cdc76e5c9914fb9281a1c7e284d73e67"
                     "f1809a48a497200e046d39ccc7112cd0");
}

START_TEST(sha256_vectors)
{
    unsigned char data[300];
    const char *cpu[sizeof(data) + 1];
    apr_size_t i;

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (unsigned char)(i * 131 + 7);
    }
    llmgw_sha256_use_cpu(1);
    check_vectors();
    for (i = 0; i <= sizeof(data); i++) {
        cpu[i] = llmgw_sha256_hex(test_pool, data, i);
    }
    llmgw_sha256_use_cpu(0);
    check_vectors();
    /* Every length across several blocks: both ways agree. */
    for (i = 0; i <= sizeof(data); i++) {
        ck_assert_str_eq(llmgw_sha256_hex(test_pool, data, i), cpu[i]);
    }
    llmgw_sha256_use_cpu(1);
}
END_TEST

START_TEST(key_ignores_what_cannot_change_the_answer)
{
    const char *k = key("{\"model\":\"a\",\"messages\":[{\"role\":\"user\","
                        "\"content\":\"hi\"}],\"temperature\":0}");

    ck_assert_int_eq(strlen(k), 64);
    /* member order, 0 vs 0.0, stream, user and the client's model name */
    ck_assert_str_eq(k, key("{\"temperature\":0.0,\"stream\":true,"
                            "\"user\":\"u\",\"messages\":[{\"content\":\"hi\","
                            "\"role\":\"user\"}],\"model\":\"alias\"}"));
}
END_TEST

/* A flush moves the keys of its model (by either name) or of all, at
 * once, and keys stay as they were until something is flushed. */
START_TEST(key_moves_with_a_flush)
{
    const char *a = "{\"model\":\"a\",\"messages\":[{\"role\":\"user\","
                    "\"content\":\"hi\"}],\"temperature\":0}";
    const char *b = "{\"model\":\"b\",\"messages\":[{\"role\":\"user\","
                    "\"content\":\"hi\"}],\"temperature\":0}";
    const char *ka = key(a), *kb = key(b), *ka1;
    void *mem = apr_palloc(test_pool, llmgw_cache_gens_size());
    llmgw_cache_gens_t *g =
        llmgw_cache_gens_init(mem, llmgw_cache_gens_size());

    ck_assert_ptr_null(llmgw_cache_gens_init(mem, 8));
    ck_assert_ptr_null(
        llmgw_cache_gens_init((char *)mem + 4, llmgw_cache_gens_size()));
    llmgw_cache_use_gens(g);
    ck_assert_str_eq(key(a), ka);
    ck_assert_uint_eq(llmgw_cache_flush(g, "a"), 1);
    ka1 = key(a);
    ck_assert_str_ne(ka1, ka);
    ck_assert_str_eq(key(b), kb);
    ck_assert_uint_eq(llmgw_cache_flush(g, NULL), 2);
    ck_assert_str_ne(key(a), ka1);
    ck_assert_str_ne(key(b), kb);
    ck_assert_uint_eq(llmgw_cache_flushes(g), 2);
    llmgw_cache_use_gens(NULL);
    ck_assert_str_eq(key(a), ka);
}
END_TEST

START_TEST(key_changes_with_every_parameter)
{
    const char *base = key("{\"model\":\"a\",\"messages\":[],"
                           "\"temperature\":0}");

    ck_assert_str_ne(base, key("{\"model\":\"a\",\"messages\":[],"
                               "\"temperature\":0.1}"));
    ck_assert_str_ne(base, key("{\"model\":\"a\",\"messages\":[],"
                               "\"temperature\":0,\"top_p\":1}"));
    ck_assert_str_ne(base, key("{\"model\":\"a\",\"messages\":[{}],"
                               "\"temperature\":0}"));
    ck_assert_str_ne(base, key("{\"model\":\"a\",\"messages\":[],"
                               "\"temperature\":0,\"unknown\":null}"));
    ck_assert_str_ne(
        base, llmgw_cache_key(
                  test_pool,
                  req(LLMGW_EP_CHAT,
                      "{\"model\":\"a\",\"messages\":[],\"temperature\":0}"),
                  "other-model", "balancer://be", "openai"));
    ck_assert_str_ne(
        base, llmgw_cache_key(
                  test_pool,
                  req(LLMGW_EP_CHAT,
                      "{\"model\":\"a\",\"messages\":[],\"temperature\":0}"),
                  "m", "balancer://other", "openai"));
    /* The max_tokens the gateway's limits put in the upstream body. */
    {
        llmgw_request_t *r =
            req(LLMGW_EP_CHAT,
                "{\"model\":\"a\",\"messages\":[],\"temperature\":0}");
        const char *k5, *k6;

        r->max_tokens = 5;
        k5 = llmgw_cache_key(test_pool, r, "m", "balancer://be", "openai");
        r->max_tokens = 6;
        k6 = llmgw_cache_key(test_pool, r, "m", "balancer://be", "openai");
        ck_assert_str_ne(base, k5);
        ck_assert_str_ne(k5, k6);
    }
}
END_TEST

START_TEST(eligibility_by_policy)
{
    llmgw_request_t *cold = req(LLMGW_EP_CHAT, "{\"model\":\"a\",\"messages\""
                                               ":[],\"temperature\":0.0}");
    llmgw_request_t *seeded =
        req(LLMGW_EP_CHAT, "{\"model\":\"a\","
                           "\"messages\":[],\"seed\":4}");
    llmgw_request_t *hot = req(LLMGW_EP_CHAT, "{\"model\":\"a\",\"messages\":"
                                              "[],\"temperature\":0.2}");
    llmgw_request_t *plain = req(LLMGW_EP_CHAT, "{\"model\":\"a\","
                                                "\"messages\":[]}");
    llmgw_request_t *emb = req(LLMGW_EP_EMBEDDINGS, "{\"model\":\"a\","
                                                    "\"input\":\"x\"}");

    ck_assert(llmgw_cache_eligible(cold, LLMGW_CACHE_DETERMINISTIC));
    ck_assert(llmgw_cache_eligible(seeded, LLMGW_CACHE_DETERMINISTIC));
    ck_assert(!llmgw_cache_eligible(hot, LLMGW_CACHE_DETERMINISTIC));
    ck_assert(!llmgw_cache_eligible(plain, LLMGW_CACHE_DETERMINISTIC));
    ck_assert(llmgw_cache_eligible(emb, LLMGW_CACHE_DETERMINISTIC));
    ck_assert(llmgw_cache_eligible(plain, LLMGW_CACHE_ALL));
    ck_assert(!llmgw_cache_eligible(cold, LLMGW_CACHE_OFF));
}
END_TEST

static void chunk(llmgw_record_t *rec, const char *json)
{
    llmgw_record_add_chunk(rec, json, strlen(json));
}

/* rec as the cache keeps it, then read back (full: all of it). */
static llmgw_record_t *stored_and_read(llmgw_record_t *rec, int full)
{
    apr_size_t len;
    const char *text = llmgw_record_serialize(rec, &len);
    llmgw_record_t *back;

    ck_assert_ptr_nonnull(text);
    back = llmgw_record_parse(test_pool, text, len, full);
    ck_assert_ptr_nonnull(back);
    return back;
}

START_TEST(record_from_stream_roundtrip)
{
    llmgw_record_t *rec =
        llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);
    llmgw_record_t *back, *refused, *back2;
    llmgw_usage_t u;
    const char *json, *sse;
    apr_size_t len;

    chunk(rec, "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
               "\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,"
               "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
               "\"finish_reason\":null}],\"usage\":null}");
    chunk(rec, "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":"
               "{\"content\":\"Hel\"}}],\"usage\":null}");
    chunk(rec,
          "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":"
          "{\"content\":\"lo\",\"tool_calls\":[{\"index\":0,\"id\":"
          "\"t1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\""
          "}}]}}]}");
    chunk(rec, "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":"
               "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
               "\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}");
    chunk(rec, "{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":"
               "3,\"completion_tokens\":4,\"total_tokens\":7}}");
    back = stored_and_read(rec, 1);
    llmgw_record_usage(back, &u);
    ck_assert_int_eq(u.total, 7);
    json = llmgw_record_render_json(back, &len);
    ck_assert_has(json, "\"object\":\"chat.completion\"",
                  "\"content\":\"Hello\"", "\"arguments\":\"{\\\"a\\\":1}\"",
                  "\"finish_reason\":\"tool_calls\"", "\"total_tokens\":7");
    /* refusal: required by OpenAI's schema, null when none came. */
    ck_assert_has(json, "\"refusal\":null");

    /* A refusal streamed in pieces is the message's refusal. */
    refused = llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);
    chunk(refused, "{\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":"
                   "{\"role\":\"assistant\",\"refusal\":\"I can\"}}]}");
    chunk(refused, "{\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":"
                   "{\"refusal\":\"not.\"},\"finish_reason\":\"stop\"}]}");
    back2 = stored_and_read(refused, 0);
    ck_assert_has(llmgw_record_render_json(back2, &len),
                  "\"content\":\"\",\"refusal\":\"I cannot.\"");

    /* The replay is the original chunks, usage only on request. */
    sse = llmgw_record_render_sse(back, test_pool, 0, &len);
    ck_assert_ptr_null(strstr(sse, "usage"));
    ck_assert_has(sse, "{\"content\":\"Hel\"}", "data: [DONE]\n\n");
    sse = llmgw_record_render_sse(back, test_pool, 1, &len);
    ck_assert_ptr_nonnull(strstr(sse, "\"choices\":[],\"usage\":"));
}
END_TEST

/* Chunks are kept as the bytes they came in, from the stream's buffer
 * that is used again for the next event: every one without its usage,
 * each replayed on one line of data (an event that came over several is
 * written compact), the first one's id, created and model in the answer. */
START_TEST(record_keeps_chunks_as_they_came)
{
    static const char *const in[] = {
        ("{ \"id\":\"c9\", \"object\":\"chat.completion.chunk\",\"created\":5,"
         "\"model\":\"m2\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
         "\"assistant\"}}] }"),
        ("{\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,"
         "\"total_tokens\":3},\"id\":\"c9\",\"choices\":[{\"index\":0,"
         "\"delta\":{\"content\":\"Hi\"}}]}"),
        ("{\"id\":\"c9\",\n\"choices\":[{\"index\":0,\"delta\":{},\n"
         "\"finish_reason\":\"stop\"}]}"),
    };
    llmgw_record_t *rec =
        llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);
    char buf[512];
    const char *text, *json, *sse;
    apr_size_t i, len;

    for (i = 0; i < 3; i++) {
        strcpy(buf, in[i]);
        llmgw_record_add_chunk(rec, buf, strlen(buf));
        memset(buf, 'x', sizeof(buf)); /* the buffer, used again */
    }
    ck_assert_int_eq(llmgw_record_nchunks(rec), 3);
    text = llmgw_record_serialize(rec, &len);
    ck_assert_ptr_nonnull(text);
    /* Written again, the record is the same. */
    ck_assert_str_eq(llmgw_record_serialize(rec, &i), text);
    ck_assert_int_eq(i, len);
    rec = llmgw_record_parse(test_pool, text, len, 1);
    ck_assert_ptr_nonnull(rec);
    json = llmgw_record_render_json(rec, &len);
    ck_assert_has(json, "\"id\":\"c9\"", "\"created\":5", "\"model\":\"m2\"",
                  "\"content\":\"Hi\"", "\"total_tokens\":3");
    sse = llmgw_record_render_sse(rec, test_pool, 0, &len);
    ck_assert_has(sse, apr_pstrcat(test_pool, "data: ", in[0], "\n\n", NULL),
                  "data: {\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":"
                  "{\"content\":\"Hi\"}}]}\n\n",
                  "data: {\"choices\":[{\"delta\":{},\"finish_reason\":"
                  "\"stop\",\"index\":0}],\"id\":\"c9\"}\n\n");
    ck_assert_ptr_null(strstr(sse, "usage"));
}
END_TEST

START_TEST(record_from_body_replays_as_stream)
{
    const char *body = "{\"id\":\"x\",\"object\":\"text_completion\","
                       "\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":"
                       "0,\"text\":\"abc\",\"finish_reason\":\"length\"}],"
                       "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":"
                       "2,\"total_tokens\":3}}";
    llmgw_record_t *rec =
        llmgw_record_create(test_pool, LLMGW_EP_COMPLETIONS, 1 << 20);
    const char *sse;
    apr_size_t len;

    llmgw_record_set_response(rec, body, strlen(body));
    rec = stored_and_read(rec, 0);
    sse = llmgw_record_render_sse(rec, test_pool, 0, &len);
    ck_assert_has(sse, "\"text\":\"abc\"", "\"finish_reason\":\"length\"",
                  "\"object\":\"text_completion\"");
    ck_assert_int_eq(len, strlen(sse));
}
END_TEST

START_TEST(record_refuses_what_it_cannot_keep)
{
    llmgw_record_t *rec = llmgw_record_create(test_pool, LLMGW_EP_CHAT, 64);
    const char *big = "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":"
                      "{\"content\":\"0123456789012345678901234567890123"
                      "45678901234567890123456789\"}}]}";
    apr_size_t len;

    llmgw_record_set_response(rec, big, strlen(big));
    ck_assert_ptr_null(llmgw_record_serialize(rec, &len));
    rec = llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);
    llmgw_record_set_response(rec, "{\"error\":{}}", 12);
    ck_assert_ptr_null(llmgw_record_serialize(rec, &len));
    ck_assert_ptr_null(llmgw_record_parse(test_pool, "{\"v\":99}", 8, 1));
    ck_assert_ptr_null(
        llmgw_record_parse(test_pool, "LLMGW1 chat 2\n{}\nnull", 20, 0));
    ck_assert_ptr_null(
        llmgw_record_parse(test_pool, "LLMGW2 chat 99\n{}\nnull", 21, 0));
    ck_assert_ptr_null(
        llmgw_record_parse(test_pool, "LLMGW2 chat 2\n{]\nnull", 20, 1));
    /* A stream cut before its finish_reason is no answer to keep. */
    rec = llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);
    chunk(rec, "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":"
               "{\"content\":\"half\"},\"finish_reason\":null}]}");
    ck_assert_ptr_null(llmgw_record_serialize(rec, &len));
    ck_assert_ptr_null(llmgw_record_parse(test_pool, "garbage", 7, 0));
}
END_TEST

/* A streamed record and a plain one, serialised, for the tests that break
 * them. */
static const char *stream_record(apr_size_t *len)
{
    llmgw_record_t *rec =
        llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);

    chunk(rec, "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
               "\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,"
               "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
               "\"finish_reason\":null}]}");
    chunk(rec, "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":"
               "{\"content\":\"Hello\"},\"finish_reason\":\"stop\"}]}");
    chunk(rec, "{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":"
               "3,\"completion_tokens\":4,\"total_tokens\":7}}");
    return llmgw_record_serialize(rec, len);
}

static const char *plain_record(apr_size_t *len)
{
    static const char body[] = "{\"id\":\"x\",\"object\":\"chat.completion\","
                               "\"created\":1,\"model\":\"m\",\"choices\":[{"
                               "\"index\":0,\"message\":{\"role\":"
                               "\"assistant\",\"content\":\"abc\"},"
                               "\"finish_reason\":\"stop\"}],\"usage\":{"
                               "\"prompt_tokens\":1,\"completion_tokens\":2,"
                               "\"total_tokens\":3}}";
    llmgw_record_t *rec =
        llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);

    llmgw_record_set_response(rec, body, sizeof(body) - 1);
    return llmgw_record_serialize(rec, len);
}

/* Whatever the store hands back, a record parses whole or not at all:
 * NULL (a miss) for every cut, every flipped bit, bytes added or a length
 * that lies, in both modes (plain hits serve the bytes unparsed, so the
 * check must not depend on a parse). */
static void check_total(const char *text, apr_size_t len)
{
    char *copy = apr_palloc(test_pool, len + 16);
    apr_size_t i;
    int bit, full;

    memcpy(copy, text, len);
    for (full = 0; full < 2; full++) {
        ck_assert_ptr_nonnull(llmgw_record_parse(test_pool, text, len, full));
        for (i = 0; i < len; i++) {
            ck_assert_msg(!llmgw_record_parse(test_pool, text, i, full),
                          "cut at %d of %d parsed (full=%d)", (int)i, (int)len,
                          full);
        }
        for (i = 0; i < len; i++) {
            for (bit = 0; bit < 8; bit++) {
                copy[i] = (char)(text[i] ^ (1 << bit));
                ck_assert_msg(!llmgw_record_parse(test_pool, copy, len, full),
                              "bit %d of byte %d flipped parsed (full=%d)",
                              bit, (int)i, full);
                copy[i] = text[i];
            }
        }
        memcpy(copy + len, "]}\n null", 8);
        for (i = 1; i <= 8; i++) {
            ck_assert(!llmgw_record_parse(test_pool, copy, len + i, full));
        }
    }
}

START_TEST(record_parse_is_total)
{
    apr_size_t len;
    const char *text = stream_record(&len);

    ck_assert_ptr_nonnull(text);
    check_total(text, len);
    text = plain_record(&len);
    ck_assert_ptr_nonnull(text);
    check_total(text, len);
}
END_TEST

START_TEST(record_parse_refuses_lying_headers)
{
    static const char *const bad[] = {
        "",
        "\n",
        "LLMGW",
        "LLMGW3\n",
        "LLMGW3 chat\n{}\nnull",
        "LLMGW3 chat 2\n{}\nnull",
        "LLMGW3 chat -2 0000000000000000\n{}\nnull",
        "LLMGW3 chat 18446744073709551618 0000000000000000\n{}\nnull",
        "LLMGW3 chat 99999999999999999999999 0000000000000000\n{}\nnull",
        "LLMGW3 chat 2 000000000000000\n{}\nnull",
        "LLMGW3 chat 2 00000000000000000\n{}\nnull",
        "LLMGW3 chat 2 000000000000000g\n{}\nnull",
        "LLMGW3 chat  2 0000000000000000\n{}\nnull",
        "LLMGW3 chat +2 0000000000000000\n{}\nnull",
        "LLMGW3 bogus 2 0000000000000000\n{}\nnull",
        "LLMGW3 chat 2 0000000000000000 \n{}\nnull",
        "LLMGW3 chat 9 0000000000000000\n{}\nnull",
        "LLMGW3 chat 0 0000000000000000\n\nnull",
        NULL
    };
    int i;

    for (i = 0; bad[i]; i++) {
        /* Exactly sized, not terminated: valgrind sees a read past it. */
        apr_size_t n = strlen(bad[i]);
        char *v = malloc(n ? n : 1);

        memcpy(v, bad[i], n);
        ck_assert_msg(!llmgw_record_parse(test_pool, v, n, 0), "parsed: %s",
                      bad[i]);
        ck_assert_msg(!llmgw_record_parse(test_pool, v, n, 1), "parsed: %s",
                      bad[i]);
        free(v);
    }
}
END_TEST

/* A chunk nested near the parser's limit is one level deeper inside the
 * record's chunk array: such a record must not be stored, or must read
 * back; never one that a later streamed hit cannot read (that crashed the
 * child on every hit). */
START_TEST(record_never_stores_what_it_cannot_read)
{
    int k, stored = 0;

    for (k = 0; k <= 66; k++) {
        llmgw_record_t *rec = llmgw_record_create(test_pool, LLMGW_EP_CHAT,
                                                  1 << 20),
                       *back;
        char *nest = apr_palloc(test_pool, 2 * k + 1);
        const char *text, *sse;
        apr_size_t len, n;

        memset(nest, '[', k);
        memset(nest + k, ']', k);
        nest[2 * k] = '\0';
        chunk(rec, apr_pstrcat(test_pool,
                               "{\"id\":\"c\",\"choices\":[{"
                               "\"index\":0,\"delta\":{\"content\":\"x\","
                               "\"x\":",
                               k ? nest : "0",
                               "},"
                               "\"finish_reason\":\"stop\"}]}",
                               NULL));
        text = llmgw_record_serialize(rec, &len);
        if (!text) {
            continue;
        }
        stored++;
        back = llmgw_record_parse(test_pool, text, len, 1);
        ck_assert_msg(back != NULL, "stored at depth %d, unreadable", k + 4);
        sse = llmgw_record_render_sse(back, test_pool, 0, &n);
        ck_assert_ptr_nonnull(sse);
        ck_assert_ptr_nonnull(strstr(sse, "data: [DONE]"));
        back = llmgw_record_parse(test_pool, text, len, 0);
        ck_assert_ptr_nonnull(back);
        ck_assert_ptr_nonnull(llmgw_record_render_sse(back, test_pool, 0, &n));
    }
    ck_assert_int_gt(stored, 50);
}
END_TEST

/* Usage of a recorded answer, from its stream or its body, as a hit
 * replays and bills it: clamped, never wrapped into a negative. */
START_TEST(record_usage_is_clamped)
{
    llmgw_record_t *rec =
                       llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20),
                   *back;
    llmgw_usage_t u;
    const char *text;
    apr_size_t len;
    int full;

    chunk(rec, "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":"
               "{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}");
    chunk(rec, "{\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":"
               "9223372036854775807,\"completion_tokens\":"
               "9223372036854775807}}");
    llmgw_record_usage(rec, &u);
    ck_assert(u.prompt == LLMGW_TOKENS_MAX && u.total == LLMGW_TOKENS_MAX);
    text = llmgw_record_serialize(rec, &len);
    ck_assert_ptr_nonnull(text);
    for (full = 0; full < 2; full++) {
        back = llmgw_record_parse(test_pool, text, len, full);
        ck_assert_ptr_nonnull(back);
        llmgw_record_usage(back, &u);
        ck_assert(u.completion == LLMGW_TOKENS_MAX);
        ck_assert(u.total == LLMGW_TOKENS_MAX);
    }
    ck_assert_ptr_nonnull(
        strstr(llmgw_record_render_sse(back, test_pool, 1, &len),
               "\"total_tokens\":1000000000000000"));
}
END_TEST

/* None of the answers bad (NULL ends it) to ep is kept. */
static void none_kept(llmgw_endpoint_t ep, const char *const *bad)
{
    apr_size_t len;
    int i;

    for (i = 0; bad[i]; i++) {
        llmgw_record_t *rec = llmgw_record_create(test_pool, ep, 1 << 20);

        llmgw_record_set_response(rec, bad[i], strlen(bad[i]));
        ck_assert_msg(!llmgw_record_serialize(rec, &len), "kept %s", bad[i]);
    }
}

/* Only a complete, well-formed answer is kept: a body that is not the
 * endpoint's JSON, an answer that says it failed, a stream that ended with
 * the error finish (the backend's, or the gateway's own error tail). */
START_TEST(record_keeps_only_whole_answers)
{
    static const char *const bad_chat[] = {
        "{\"choices\":[}",
        "{\"choices\":[{}]} x",
        "{\"choices\":[{}]}}",
        "{\"x\":\"\\\"choices\\\"\"}",
        "{\"choices\":{}}",
        "{\"choices\":[]}",
        "{\"choices\":[1]}",
        "{\"choices\":[{}],\"error\":{\"message\":"
        "\"x\"}}",
        "{\"choices\":[{\"index\":0,\"finish_reason\":"
        "\"error\"}]}",
        "[{\"choices\":[{}]}]",
        "{\"choices\":[{}],"
        "\"choices\":\"x\"}",
        "{\"choices\":[{\"a\":\"\xff\"}]}",
        "{\"choices\":[{}]",
        NULL
    };
    static const char *const bad_emb[] = { "{\"data\":{}}",
                                           "{\"data\":[],\"error\":\"x\"}",
                                           "{\"data\":[", "{\"choices\":[{}]}",
                                           NULL };
    const char *deep, *text;
    llmgw_error_t err;
    apr_size_t len, n;
    char *nest;
    int i;

    none_kept(LLMGW_EP_CHAT, bad_chat);
    none_kept(LLMGW_EP_EMBEDDINGS, bad_emb);
    /* Too deep to read back. */
    nest = apr_palloc(test_pool, 140);
    memset(nest, '[', 70);
    memset(nest + 70, ']', 70);
    deep = apr_pstrcat(test_pool, "{\"choices\":[{\"index\":0,\"x\":",
                       apr_pstrmemdup(test_pool, nest, 140), "}]}", NULL);
    {
        llmgw_record_t *rec =
            llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);

        llmgw_record_set_response(rec, deep, strlen(deep));
        ck_assert(!llmgw_record_serialize(rec, &len));
    }
    /* What is an answer is kept (error null is no error). */
    {
        static const char ok[] = " {\"choices\":[{\"index\":0,\"message\":"
                                 "{\"content\":\"x\"},\"finish_reason\":"
                                 "\"stop\"}],\"error\":null}\n";
        llmgw_record_t *rec =
            llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);

        llmgw_record_set_response(rec, ok, sizeof(ok) - 1);
        ck_assert_ptr_nonnull(llmgw_record_serialize(rec, &len));
        rec = llmgw_record_create(test_pool, LLMGW_EP_EMBEDDINGS, 1 << 20);
        llmgw_record_set_response(rec, "{\"data\":[]}", 11);
        ck_assert_ptr_nonnull(llmgw_record_serialize(rec, &len));
    }
    /* Streams: the backend's error finish, an error event, our tail. */
    {
        llmgw_record_t *rec =
            llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);

        chunk(rec, "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":"
                   "{\"content\":\"half\"},\"finish_reason\":\"error\"}]}");
        ck_assert_ptr_null(llmgw_record_serialize(rec, &len));
        rec = llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);
        chunk(rec, "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":"
                   "{\"content\":\"half\"}}]}");
        chunk(rec, "{\"error\":{\"message\":\"overloaded\"}}");
        chunk(rec, "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},"
                   "\"finish_reason\":\"stop\"}]}");
        ck_assert_ptr_null(llmgw_record_serialize(rec, &len));
    }
    llmgw_error_set(&err, 502, "server_error", NULL, "upstream_error", "x");
    text = llmgw_sse_error_events(test_pool, &err, &n);
    for (i = 0; i < 2; i++) {
        llmgw_record_t *rec =
            llmgw_record_create(test_pool, LLMGW_EP_CHAT, 1 << 20);
        const char *ev = text;

        chunk(rec, "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":"
                   "{\"content\":\"half\"}}]}");
        /* The tail's events, the first only or all. */
        while ((ev = strstr(ev, "data: {")) != NULL) {
            const char *end = strstr(ev, "\n\n");

            llmgw_record_add_chunk(rec, ev + 6, (apr_size_t)(end - ev - 6));
            ev = end;
            if (!i) {
                break;
            }
        }
        ck_assert_ptr_null(llmgw_record_serialize(rec, &len));
    }
}
END_TEST

Suite *cache_suite(void)
{
    return test_suite(
        "cache", "keys-records", 0,
        TESTS(sha256_vectors, key_ignores_what_cannot_change_the_answer,
              key_moves_with_a_flush, key_changes_with_every_parameter,
              eligibility_by_policy, record_from_stream_roundtrip,
              record_keeps_chunks_as_they_came,
              record_from_body_replays_as_stream,
              record_refuses_what_it_cannot_keep, record_parse_is_total,
              record_parse_refuses_lying_headers,
              record_never_stores_what_it_cannot_read, record_usage_is_clamped,
              record_keeps_only_whole_answers));
}
