/* fuzz_answer: a backend's plain (non-stream) answer, untrusted, as the
 * client gets it: an Ollama answer as OpenAI JSON, an OpenAI answer as
 * Ollama JSON, and the usage read from it. Whatever the backend sent,
 * the client gets a JSON object (an answer or an error in its API's
 * shape) and the status is an error when the answer was not one.
 * Input: a selector byte (bits 0-2: 0-2 an Ollama backend answering
 * chat, completions, embeddings; 3-6 an OpenAI backend answering
 * Ollama's chat, generate, embed, embeddings; 7 the same as 0 with
 * base64 embeddings asked for; bits 3-4 the backend's status: 200, 400,
 * 404, 500), then the body. */
#include "fuzz.h"

#include "llmgw_dialect.h"
#include "llmgw_ollama.h"

static const int statuses[] = { 200, 400, 404, 500 };

/* The client requests the answers are for, per endpoint. */
static const char *const requests[] = {
    ("{\"model\":\"mock-small\",\"messages\":[{\"role\":\"user\","
     "\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
     "\"function\":{\"name\":\"f\",\"parameters\":{}}}]}"),
    "{\"model\":\"mock-small\",\"prompt\":\"hi\"}",
    "{\"model\":\"mock-small\",\"input\":[\"a\",\"b\"]}",
    ("{\"model\":\"mock-small\",\"input\":\"a\","
     "\"encoding_format\":\"base64\"}"),
};

static void check_object(apr_pool_t *p, const char *text, apr_size_t len,
                         const char *what)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *j = llmgw_json_parse(p, text, len, &err, &msg);

    FUZZ_CHECK(j && llmgw_json_type(j, NULL) == LLMGW_JSON_OBJECT,
               "%s is no JSON object (%s): %.*s", what,
               msg ? msg : "not an object", (int)len, text);
}

static void check_usage(const llmgw_usage_t *u)
{
    FUZZ_CHECK(!u->found
                   || (u->prompt >= 0 && u->completion >= 0 && u->total >= 0),
               "negative usage %lld+%lld=%lld", (long long)u->prompt,
               (long long)u->completion, (long long)u->total);
}

/* An Ollama backend's answer to an OpenAI client. */
static void openai_client(apr_pool_t *p, unsigned which, int status,
                          const char *buf, apr_size_t len)
{
    static const llmgw_endpoint_t eps[] = { LLMGW_EP_CHAT,
                                            LLMGW_EP_COMPLETIONS,
                                            LLMGW_EP_EMBEDDINGS,
                                            LLMGW_EP_EMBEDDINGS };
    const char *body = requests[which], *out, *e;
    llmgw_request_t req;
    llmgw_error_t err;
    llmgw_usage_t usage = { 0 };
    apr_size_t olen;

    FUZZ_CHECK(
        llmgw_request_parse(p, eps[which], body, strlen(body), &req, &err)
            == 0,
        "request %u", which);
    memset(&err, 0, sizeof(err));
    if (llmgw_ollama_response(p, &req, status, buf, len, "fuzz", NULL,
                              1700000000, &out, &olen, &usage, &err)) {
        FUZZ_CHECK(err.status >= 400 && err.status < 600 && err.message,
                   "error %d", err.status);
        e = llmgw_error_json(p, &err);
        check_object(p, e, strlen(e), "the error");
        return;
    }
    FUZZ_CHECK(status == 200, "a %d answer passed as a success", status);
    check_object(p, out, olen, "the OpenAI answer");
    check_usage(&usage);
}

/* An OpenAI backend's answer to an Ollama client. */
static void ollama_client(apr_pool_t *p, unsigned which, int status,
                          const char *buf, apr_size_t len)
{
    llmgw_ollama_ep_t oep = (llmgw_ollama_ep_t)(LLMGW_OLLAMA_EP_CHAT + which);
    const char *out, *e;
    llmgw_error_t err;
    llmgw_usage_t usage = { 0 };
    apr_size_t olen;

    memset(&err, 0, sizeof(err));
    if (llmgw_ollama_front_response(p, oep, status, buf, len, "mock-small",
                                    apr_time_from_sec(1700000000),
                                    apr_time_from_sec(1700000000), &out, &olen,
                                    &usage, &err)) {
        FUZZ_CHECK(err.status >= 400 && err.status < 600 && err.message,
                   "error %d", err.status);
        e = llmgw_ollama_error_json(p, err.message);
        check_object(p, e, strlen(e), "the error");
        return;
    }
    FUZZ_CHECK(status == 200, "a %d answer passed as a success", status);
    check_object(p, out, olen, "the Ollama answer");
    check_usage(&usage);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    fuzz_in in = { data, size };
    unsigned sel = fuzz_byte(&in), which = sel & 7;
    int status = statuses[(sel >> 3) & 3];
    const char *buf = (const char *)in.d;
    llmgw_usage_t u = { 0 };

    if (which < 3) {
        openai_client(p, which, status, buf, in.n);
    }
    else if (which < 7) {
        ollama_client(p, which - 3, status, buf, in.n);
    }
    else {
        openai_client(p, 3, status, buf, in.n);
    }
    if (llmgw_usage_find(buf, in.n, &u)) {
        check_usage(&u);
    }
    apr_pool_destroy(p);
    return 0;
}
