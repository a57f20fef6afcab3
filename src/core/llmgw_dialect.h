/* llmgw_dialect: the OpenAI API as clients speak it: endpoints, request
 * validation, the body sent upstream, usage, and errors in its shape. */
#ifndef LLMGW_DIALECT_H
#define LLMGW_DIALECT_H

#include <apr_pools.h>

#include "llmgw_json.h"

typedef enum {
    LLMGW_EP_NONE = 0,
    LLMGW_EP_CHAT,        /* POST /v1/chat/completions */
    LLMGW_EP_COMPLETIONS, /* POST /v1/completions */
    LLMGW_EP_EMBEDDINGS,  /* POST /v1/embeddings */
    LLMGW_EP_MODELS,      /* GET  /v1/models */
    LLMGW_EP_MODEL        /* GET  /v1/models/{id} */
} llmgw_endpoint_t;

/* A client-visible error: status plus the four OpenAI error fields. */
typedef struct {
    int status;
    const char *type;
    const char *param; /* NULL renders as JSON null */
    const char *code;
    const char *message;
} llmgw_error_t;

/* What the gateway needs to know about a generation request. */
typedef struct {
    apr_pool_t *pool; /* where body and what is made of it live */
    llmgw_endpoint_t ep;
    llmgw_json_t *body; /* a read view (llmgw_json_read) */
    const char *model;
    int stream;
    int wants_usage; /* stream_options.include_usage from client */
    /* Set by the gateway's limits (llmgw_estimate): the body upstream
     * carries max_tokens_field = max_tokens (an Ollama backend gets it
     * as options.num_predict); 0: as the client sent it. */
    apr_int64_t max_tokens;
    const char *max_tokens_field;
} llmgw_request_t;

typedef struct {
    apr_int64_t prompt;
    apr_int64_t completion;
    apr_int64_t total;
    int found;
} llmgw_usage_t;

/* Token counts come from backends, so each is clamped: none is below 0 or
 * above LLMGW_TOKENS_MAX (10^15: far beyond any real count, yet exact in a
 * double, so in every JSON client), a fraction counts as the next whole
 * token, and sums saturate there. No arithmetic on counts can overflow. */
#define LLMGW_TOKENS_MAX APR_INT64_C(1000000000000000)

/* v in [0, LLMGW_TOKENS_MAX]. */
static APR_INLINE apr_int64_t llmgw_tokens_clamp(apr_int64_t v)
{
    return v < 0 ? 0 : v > LLMGW_TOKENS_MAX ? LLMGW_TOKENS_MAX : v;
}

/* a + b, saturated (a and b are clamped first). */
static APR_INLINE apr_int64_t llmgw_tokens_add(apr_int64_t a, apr_int64_t b)
{
    apr_int64_t sum = llmgw_tokens_clamp(a) + llmgw_tokens_clamp(b);

    return sum > LLMGW_TOKENS_MAX ? LLMGW_TOKENS_MAX : sum;
}

/* The count a JSON number v stands for: rounded up, clamped (NaN: 0). */
apr_int64_t llmgw_tokens_of(double v);

/* Usage from the object j (NULL: none found): the counts of the members
 * named prompt, completion and total (NULL: not there), each a number
 * read as llmgw_tokens_of (anything else counts 0); the total is never
 * less than the sum of the other two. */
void llmgw_usage_read(const llmgw_json_t *j, const char *prompt,
                      const char *completion, const char *total,
                      llmgw_usage_t *u);

/* A path below an API's root and the endpoint it names: a table of them
 * ends with a NULL path whose ep is what any other path names. */
typedef struct {
    const char *path;
    int ep;
} llmgw_path_ep_t;

/* path without its leading prefix ("/v1" of "/v1/models"), if it has it. */
const char *llmgw_path_below(const char *path, const char *prefix);
/* The endpoint that t gives path (an exact match). */
int llmgw_path_ep(const char *path, const llmgw_path_ep_t *t);

/* Maps the path below the API root ("/chat/completions", "/models/x",
 * with or without a leading "/v1") to an endpoint; *model_id gets the id
 * of /models/{id}. */
llmgw_endpoint_t llmgw_endpoint_parse(apr_pool_t *p, const char *path,
                                      const char **model_id);
/* "GET" or "POST": the one method an endpoint accepts. */
const char *llmgw_endpoint_method(llmgw_endpoint_t ep);
/* Upstream path of an endpoint for the openai dialect. */
const char *llmgw_endpoint_upstream_path(llmgw_endpoint_t ep);

/* Parses and validates a generation request body. Returns 0, or fills
 * err and returns its status. */
int llmgw_request_parse(apr_pool_t *p, llmgw_endpoint_t ep, const char *buf,
                        apr_size_t len, llmgw_request_t *req,
                        llmgw_error_t *err);

/* The body to send upstream: the client's bytes untouched when nothing
 * changes, else those bytes with only the upstream model's name,
 * stream_options.include_usage (added to streams so accounting never
 * misses one) and the max_tokens the gateway set (req->max_tokens)
 * changed. *strip_usage is set when the usage chunk must be
 * removed again before the client sees it. NULL if req->body is not a
 * read view of an object (it always is after llmgw_request_parse). */
const char *llmgw_request_upstream_body(llmgw_request_t *req,
                                        const char *upstream_model,
                                        const char *orig, apr_size_t orig_len,
                                        apr_size_t *len, int *strip_usage);

/* Finds the last "usage" object in text (a response body or an SSE event)
 * and reads its token counts. Returns 1 when found. */
int llmgw_usage_find(const char *text, apr_size_t len, llmgw_usage_t *usage);

/* Fills err; returns err->status. */
int llmgw_error_set(llmgw_error_t *err, int status, const char *type,
                    const char *param, const char *code, const char *message);
/* {"error":{"message":..,"type":..,"param":..,"code":..}} */
const char *llmgw_error_json(apr_pool_t *p, const llmgw_error_t *err);
/* The canned error for a status the proxy produced (502, 503, 504...). */
void llmgw_error_for_status(int status, llmgw_error_t *err);

#endif
