/* test_stream.c: SSE framing at every byte boundary, usage read from the
 * stream, the injected usage chunk removed, and the error tail. */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_stream.h"
#include "test_core.h"

#define EV(s) "data: " s "\n\n"

static const char *stream = EV(
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":9,"
    "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
    "\"assistant\",\"content\":\"\"}}],\"usage\":null}")
    EV("{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
       "\"hi \"}}],\"usage\":null}")
        EV("{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},"
           "\"finish_reason\":\"stop\"}],\"usage\":null}")
            EV("{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
               "\"completion_tokens\":1,\"total_tokens\":4}}") EV("[DONE]");

/* Feeds the stream in pieces of 'step' bytes, collecting the output. */
static char *run(const char *in, apr_size_t step, int strip,
                 llmgw_sse_t **out_s)
{
    llmgw_sse_t *s = llmgw_sse_create(test_pool, strip);
    apr_size_t len = strlen(in), off = 0, n;
    char *out = apr_pcalloc(test_pool, len + 1);
    apr_size_t olen = 0;
    const char *ready;

    while (off < len) {
        apr_size_t take = len - off < step ? len - off : step;

        n = llmgw_sse_feed(s, in + off, take, &ready);
        memcpy(out + olen, ready, n);
        olen += n;
        off += take;
    }
    *out_s = s;
    return out;
}

static const char *without_null_usage(const char *in)
{
    char *out = apr_pstrdup(test_pool, in), *at;

    while ((at = strstr(out, ",\"usage\":null")) != NULL) {
        memmove(at, at + 13, strlen(at + 13) + 1);
    }
    return out;
}

START_TEST(frames_at_every_boundary)
{
    apr_size_t step;

    for (step = 1; step <= strlen(stream); step++) {
        llmgw_sse_t *s;
        char *out = run(stream, step, 0, &s);

        /* As it came but for "usage":null, which OpenAI's schema has not:
         * the usage chunk the client asked for stays. */
        ck_assert_str_eq(out, without_null_usage(stream));
        ck_assert_int_eq(s->done, 1);
        ck_assert_int_eq(s->usage.found, 1);
        ck_assert_int_eq(s->usage.total, 4);
        ck_assert_int_eq(s->content_events, 1);
        ck_assert_int_eq(s->text_bytes, 3); /* "hi " */
        ck_assert_int_eq(llmgw_sse_pending(s), 0);
    }
}
END_TEST

START_TEST(strips_injected_usage_chunk)
{
    apr_size_t step;

    for (step = 1; step <= strlen(stream); step += 7) {
        llmgw_sse_t *s;
        char *out = run(stream, step, 1, &s);

        ck_assert_lacks(out, "\"choices\":[]", "\"usage\"");
        ck_assert_has(out, "\"content\":\"hi \"}}]}\n\n", "data: [DONE]\n\n");
        ck_assert_int_eq(s->usage.total, 4);
    }
}
END_TEST

START_TEST(counts_output_with_spaced_json)
{
    llmgw_sse_t *s;

    run(EV("{\"choices\": [{\"delta\": {\"role\": \"assistant\", "
           "\"content\": \"\"}}]}")
            EV("{\"choices\": [{\"delta\": {\"content\": \"w \"}}]}"),
        4, 0, &s);
    ck_assert_int_eq(s->content_events, 1);
}
END_TEST

START_TEST(counts_malformed_events)
{
    llmgw_sse_t *s;

    run(EV("{\"id\":\"c1\",\"choices\":[]}")
            EV("not json") ": a comment, no data\n\n" EV("{\"choices\":[]}")
                EV("[DONE]"),
        5, 0, &s);
    ck_assert_int_eq(s->malformed, 1);
    run(EV("{\"id\":\"c1\",") EV("{\"choices\":[]}"), 5, 0, &s);
    ck_assert_int_eq(s->malformed, 1); /* a first object cut short */
    run(stream, 3, 0, &s);
    ck_assert_int_eq(s->malformed, 0);
}
END_TEST

START_TEST(accepts_crlf_events)
{
    llmgw_sse_t *s;
    char *out =
        run("data: {\"id\":\"x\"}\r\n\r\ndata: [DONE]\r\n\r\n", 3, 0, &s);

    ck_assert_str_eq(out, "data: {\"id\":\"x\"}\r\n\r\ndata: [DONE]\r\n\r\n");
    ck_assert_int_eq(s->done, 1);
}
END_TEST

START_TEST(holds_back_partial_event_and_ends_with_error)
{
    llmgw_sse_t *s;
    llmgw_error_t err;
    const char *cut =
        EV("{\"id\":\"c9\",\"object\":\"chat.completion.chunk\","
           "\"created\":5,\"model\":\"m\",\"choices\":[]}") "data: "
                                                            "{\"id\":\"c9\","
                                                            "\"choi";
    char *out = run(cut, 5, 0, &s);
    const char *tail;
    apr_size_t n;

    ck_assert_ptr_null(strstr(out, "choi\""));
    ck_assert_int_gt(llmgw_sse_pending(s), 0);
    ck_assert_int_eq(s->done, 0);
    llmgw_error_set(&err, 502, "server_error", NULL, "upstream_stream_error",
                    "broke");
    tail = llmgw_sse_error_events(test_pool, &err, &n);
    ck_assert_int_eq(n, strlen(tail));
    /* The error event and [DONE], no chunk: "error" is no finish_reason
     * of OpenAI's schema. */
    ck_assert_str_eq(tail, "data: {\"error\":{\"message\":\"broke\",\"type\":"
                           "\"server_error\",\"param\":null,\"code\":"
                           "\"upstream_stream_error\"}}\n\ndata: [DONE]\n\n");
    ck_assert_str_eq(s->id, "c9");
}
END_TEST

/* The cap on what a stream holds: 16 MB, LLMGW_STREAM_MAX_EVENT. */
#define LIMIT (16 * 1024 * 1024)
#define PIECE 65536

/* One event that never ends, fed as a backend sends it: the framer holds
 * at most the limit and a read, then refuses it (its complete events
 * before it still go out) and lets go of its memory. */
START_TEST(unfinished_event_is_capped)
{
    llmgw_sse_t *s = llmgw_sse_create(test_pool, 0);
    char *junk = malloc(PIECE);
    const char *ready;
    apr_size_t n, fed = 0, got = 0;
    static const char first[] = EV("{\"id\":\"c\",\"choices\":[{\"index\":"
                                   "0,\"delta\":{\"content\":\"a\"}}]}");
    const char *head =
        apr_pstrcat(test_pool, first, "data: {\"id\":\"c\",\"x\":\"", NULL);

    memset(junk, 'a', PIECE);
    n = llmgw_sse_feed(s, head, strlen(head), &ready);
    ck_assert_uint_eq(n, sizeof(first) - 1);
    ck_assert_int_eq(s->content_events, 1);
    while (fed < 2 * (apr_size_t)LIMIT) {
        got += llmgw_sse_feed(s, junk, PIECE, &ready);
        fed += PIECE;
        ck_assert_uint_le(s->buf.cap, 2 * (apr_size_t)(LIMIT + PIECE));
    }
    free(junk);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(s->failed, 1);
    ck_assert_uint_eq(s->buf.cap, 0);
    ck_assert_uint_eq(llmgw_sse_pending(s), 0);
    /* Over: what comes after is not framed. */
    ck_assert_uint_eq(llmgw_sse_feed(s, EV("{\"id\":\"c\"}"), 18, &ready), 0);
    ck_assert_int_eq(s->events, 1);
}
END_TEST

/* Events up to the limit pass, whole, however they are cut. */
START_TEST(big_event_under_the_cap_passes)
{
    llmgw_sse_t *s = llmgw_sse_create(test_pool, 0);
    apr_size_t len = LIMIT - 64, off = 0, got = 0, n;
    char *ev = malloc(len);
    const char *ready;

    memset(ev, 'b', len);
    memcpy(ev, "data: {\"id\":\"c\",\"x\":\"", 22);
    memcpy(ev + len - 4, "\"}\n\n", 4);
    while (off < len) {
        apr_size_t take = len - off < PIECE ? len - off : PIECE;

        n = llmgw_sse_feed(s, ev + off, take, &ready);
        if (n) {
            ck_assert(memcmp(ready, ev, n) == 0);
        }
        got += n;
        off += take;
    }
    free(ev);
    ck_assert_uint_eq(got, len);
    ck_assert_int_eq(s->failed, 0);
    ck_assert_int_eq(s->events, 1);
}
END_TEST

/* Usage chunks, however many a backend sends, are read without growing
 * the request's pool: a long stream is held in bounded memory. */
START_TEST(usage_chunks_do_not_grow_the_pool)
{
    apr_pool_t *p;
    llmgw_sse_t *s;
    const char *out;
    apr_size_t before, i;
    static const char ev[] = EV("{\"id\":\"c\",\"choices\":[],\"usage\":{"
                                "\"prompt_tokens\":1,\"completion_tokens\":"
                                "2,\"total_tokens\":3}}")
        EV("{\"id\":\"c\",\"choices\":[{\"index\":0,"
           "\"delta\":{\"content\":\"x\"}}],\"usage\":{"
           "\"prompt_tokens\":1}}");

    apr_pool_create(&p, test_pool);
    s = llmgw_sse_create(p, 1);
    for (i = 0; i < 100; i++) {
        llmgw_sse_feed(s, ev, sizeof(ev) - 1, &out);
    }
    /* As in test_ollama: 10000 more events take no new pool block. */
    before = (apr_size_t)apr_palloc(p, 1);
    for (i = 0; i < 10000; i++) {
        ck_assert_uint_gt(llmgw_sse_feed(s, ev, sizeof(ev) - 1, &out), 0);
    }
    ck_assert_uint_eq((apr_size_t)apr_palloc(p, 1), before + 8);
    ck_assert_int_eq(s->usage.total, 1);
    apr_pool_destroy(p);
}
END_TEST

/* A stream is whole without [DONE] once every choice asked for has a
 * finish_reason other than "error" (and the usage, when it is needed). */
START_TEST(finished_without_done)
{
    static const char two[] =
        EV("{\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{},"
           "\"finish_reason\":\"length\"}]}")
            EV("{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},"
               "\"finish_reason\":null}]}");
    static const char err[] =
        EV("{\"id\":\"c\",\"choices\":[{\"index\":0,"
           "\"delta\":{},\"finish_reason\":\"error\"}]}");
    static const char zero[] =
        EV("{\"id\":\"c\",\"choices\":[{\"index\":0,"
           "\"delta\":{},\"finish_reason\":\"stop\"}]}");
    llmgw_sse_t *s;
    const char *ready;
    apr_size_t cut = strstr(stream, "data: [DONE]") - stream;
    char *no_done = apr_pstrndup(test_pool, stream, cut);
    char *no_usage = apr_pstrndup(
        test_pool, stream,
        strstr(stream, "data: {\"id\":\"c1\",\"choices\":[]") - stream);

    run(no_done, 7, 0, &s);
    ck_assert_int_eq(s->done, 0);
    ck_assert(llmgw_sse_finished(s, 1));
    run(no_usage, 7, 0, &s);
    ck_assert(llmgw_sse_finished(s, 0));
    ck_assert(!llmgw_sse_finished(s, 1));
    /* Until its first finish_reason. */
    run(apr_pstrndup(test_pool, stream,
                     strstr(stream, "\"finish_reason\"") - stream),
        1000, 0, &s);
    ck_assert(!llmgw_sse_finished(s, 0));
    run(two, 5, 0, &s);
    s->choices = 2;
    ck_assert(!llmgw_sse_finished(s, 0)); /* choice 0 has no finish */
    llmgw_sse_feed(s, zero, sizeof(zero) - 1, &ready);
    ck_assert(llmgw_sse_finished(s, 0));
    run(err, 5, 0, &s);
    ck_assert(!llmgw_sse_finished(s, 0));
}
END_TEST

/* What bounds a completion whose usage never comes: the bytes of the
 * strings it generated, as written, whatever the keys' spacing. */
START_TEST(counts_generated_bytes)
{
    llmgw_sse_t *s;

    run(EV("{\"choices\":[{\"index\":0,\"delta\":{\"content\" : "
           "\"a\\\"b\",\"reasoning_content\":\"think\"}}]}")
            EV("{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
               "[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}")
                EV("{\"choices\":[{\"index\":0,\"text\":\"xyz\"}]}")
                    EV("{\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                       "\"assistant\",\"content\":\"\"}}]}"),
        9, 0, &s);
    /* a\"b (4), think (5), {} (2), xyz (3); the role chunk none. */
    ck_assert_int_eq(s->text_bytes, 14);
    ck_assert_int_eq(s->content_events, 3);
}
END_TEST

Suite *stream_suite(void)
{
    return test_suite(
        "stream", "sse", 0,
        TESTS(frames_at_every_boundary, strips_injected_usage_chunk,
              counts_output_with_spaced_json, counts_malformed_events,
              accepts_crlf_events,
              holds_back_partial_event_and_ends_with_error,
              unfinished_event_is_capped, big_event_under_the_cap_passes,
              usage_chunks_do_not_grow_the_pool, finished_without_done,
              counts_generated_bytes));
}
