/* llmgw_front: the client's side of an answer. Everything inside speaks
 * OpenAI; this turns it into what the client's API expects (Ollama). */
#ifndef LLMGW_FRONT_H
#define LLMGW_FRONT_H

#include <apr_pools.h>

#include "llmgw_dialect.h"
#include "llmgw_ollama.h"
#include "llmgw_stream.h"

typedef struct llmgw_front llmgw_front_t;

/* oep LLMGW_OLLAMA_EP_NONE: an OpenAI client, whose bytes pass unchanged.
 * start: when the request came (an Ollama answer's durations). */
llmgw_front_t *llmgw_front_create(apr_pool_t *p, llmgw_ollama_ep_t oep,
                                  llmgw_endpoint_t ep, const char *model,
                                  apr_time_t start);

int llmgw_front_is_openai(const llmgw_front_t *f);

/* The Content-Type of a streamed answer. */
const char *llmgw_front_stream_type(const llmgw_front_t *f);
/* OpenAI SSE bytes in, client bytes out (valid until the next call). */
apr_size_t llmgw_front_stream(llmgw_front_t *f, const char *in, apr_size_t len,
                              const char **out);
/* What ends a stream that ended well. */
apr_size_t llmgw_front_stream_end(llmgw_front_t *f, const char **out);
/* What ends a broken stream. */
const char *llmgw_front_stream_error(llmgw_front_t *f,
                                     const llmgw_error_t *err,
                                     apr_size_t *len);

/* A whole OpenAI answer (or error body) with its status, as the client
 * wants it; returns the status to send. */
int llmgw_front_body(llmgw_front_t *f, int status, const char *in,
                     apr_size_t len, const char **out, apr_size_t *outlen);
/* An error in the client API's shape. */
const char *llmgw_front_error(apr_pool_t *p, int ollama,
                              const llmgw_error_t *err);

#endif
