/* llmgw_front: OpenAI passes through untouched (no copy, no parse); for an
 * Ollama client streams become NDJSON and bodies Ollama's JSON. */
#include <string.h>

#include "llmgw_front.h"

struct llmgw_front {
    apr_pool_t *p;
    llmgw_ollama_ep_t oep;
    llmgw_endpoint_t ep;
    const char *model;
    apr_time_t start;
    llmgw_ollama_ndjson_t *nd;
};

llmgw_front_t *llmgw_front_create(apr_pool_t *p, llmgw_ollama_ep_t oep,
                                  llmgw_endpoint_t ep, const char *model,
                                  apr_time_t start)
{
    llmgw_front_t *f = apr_palloc(p, sizeof(*f));

    *f = (llmgw_front_t){
        .p = p, .oep = oep, .ep = ep, .model = model, .start = start
    };
    return f;
}

int llmgw_front_is_openai(const llmgw_front_t *f)
{
    return f->oep == LLMGW_OLLAMA_EP_NONE;
}

const char *llmgw_front_stream_type(const llmgw_front_t *f)
{
    return llmgw_front_is_openai(f) ? "text/event-stream"
                                    : "application/x-ndjson";
}

static llmgw_ollama_ndjson_t *ndjson(llmgw_front_t *f)
{
    if (!f->nd) {
        f->nd = llmgw_ollama_ndjson_create(f->p, f->oep, f->model, f->start);
    }
    return f->nd;
}

apr_size_t llmgw_front_stream(llmgw_front_t *f, const char *in, apr_size_t len,
                              const char **out)
{
    if (llmgw_front_is_openai(f)) {
        *out = in;
        return len;
    }
    return llmgw_ollama_ndjson_feed(ndjson(f), in, len, out);
}

apr_size_t llmgw_front_stream_end(llmgw_front_t *f, const char **out)
{
    if (llmgw_front_is_openai(f)) {
        *out = "";
        return 0;
    }
    return llmgw_ollama_ndjson_end(ndjson(f), out);
}

const char *llmgw_front_stream_error(llmgw_front_t *f,
                                     const llmgw_error_t *err, apr_size_t *len)
{
    if (llmgw_front_is_openai(f)) {
        return llmgw_sse_error_events(f->p, err, len);
    }
    return llmgw_ollama_ndjson_error_tail(ndjson(f), f->p, err->message, len);
}

int llmgw_front_body(llmgw_front_t *f, int status, const char *in,
                     apr_size_t len, const char **out, apr_size_t *outlen)
{
    llmgw_usage_t usage = { 0 };
    llmgw_error_t err;

    if (llmgw_front_is_openai(f)) {
        *out = in;
        *outlen = len;
        return status;
    }
    if (llmgw_ollama_front_response(f->p, f->oep, status, in, len, f->model,
                                    f->start, apr_time_now(), out, outlen,
                                    &usage, &err)) {
        *out = llmgw_ollama_error_json(f->p, err.message);
        *outlen = strlen(*out);
        return err.status;
    }
    return status;
}

const char *llmgw_front_error(apr_pool_t *p, int ollama,
                              const llmgw_error_t *err)
{
    return ollama ? llmgw_ollama_error_json(p, err->message)
                  : llmgw_error_json(p, err);
}
