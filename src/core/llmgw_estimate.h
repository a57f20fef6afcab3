/* llmgw_estimate: what a request may cost before it runs: a bound on its
 * prompt tokens read from the parsed body, and the completion tokens it
 * may take, for the reservation llmgw_limits_reserve makes.
 *
 * The bound: a byte-level BPE tokenizer (GPT's, Llama 3's, Qwen's, ...)
 * or SentencePiece with byte fallback (Llama 2's, Gemma's, Mistral's)
 * never makes more tokens of a text than its UTF-8 bytes, plus one (a
 * SentencePiece dummy prefix). So the prompt is bounded by the bytes of
 * the JSON text the prompt is made of (escapes only make it longer) plus
 * what the chat template adds: per_request, per_message, tools_overhead
 * (the instructions templates wrap tool definitions in) and per_image.
 * It does not hold for a template that adds more than those, an image
 * that takes more than per_image, or a tokenizer that is not byte-level;
 * docs/limits.md says by how much each can overshoot. */
#ifndef LLMGW_ESTIMATE_H
#define LLMGW_ESTIMATE_H

#include "llmgw_dialect.h"

typedef struct {
    apr_int64_t per_request;    /* template tokens around it all */
    apr_int64_t per_message;    /* role markers, separators, BOS/EOS */
    apr_int64_t per_image;      /* what one image may take */
    apr_int64_t tools_overhead; /* a template's words around tools */
    apr_int64_t default_max;    /* the route's max_tokens for a client that
                                   gives none; 0: what the limits leave */
    apr_int64_t max_cap;        /* the most one choice may ask; 0: none */
} llmgw_estimate_conf_t;

/* The defaults: 64, 16, 2048, 512, 0, 0. */
void llmgw_estimate_defaults(llmgw_estimate_conf_t *c);

/* When neither the client nor the route nor any limit bounds the answer,
 * the gateway asks for at most this much. */
#define LLMGW_ESTIMATE_FALLBACK_MAX 4096
/* Choices one request may ask for (n, best_of): OpenAI's own bound. */
#define LLMGW_ESTIMATE_MAX_CHOICES 128

typedef struct {
    apr_int64_t prompt;     /* bound on prompt tokens */
    apr_int64_t max_tokens; /* per choice, what the backend is told */
    apr_int64_t choices;    /* completions generated (n, best_of,
                                   prompts of a batch) */
    apr_int64_t max_out;    /* max_tokens * choices: the reservation's
                                   completion part */
    const char *field;      /* the member that carries max_tokens */
    int set;                /* 1: the upstream body must carry
                                   field = max_tokens (the client gave
                                   none, or more than max_cap) */
} llmgw_estimate_t;

/* Estimates req (parsed by llmgw_request_parse, or by
 * llmgw_ollama_front_request, which makes an Ollama client's
 * options.num_predict its max_tokens) for the reservation. headroom: what
 * the subjects' token limits have left (llmgw_limits_headroom), from
 * which max_tokens is set when neither the client nor the route gives
 * one. The client's max_completion_tokens wins over max_tokens, as with
 * OpenAI; more than max_cap is cut to max_cap (set = 1). Returns 0, or
 * fills err (a 400 naming the param: max_tokens or n below 1, n above
 * 128) and returns its status. */
int llmgw_estimate(const llmgw_request_t *req, const llmgw_estimate_conf_t *c,
                   apr_int64_t headroom, llmgw_estimate_t *e,
                   llmgw_error_t *err);

/* The completion tokens to charge for an answer whose usage never came
 * (a cut stream with no usage chunk): its generated text's bytes bound
 * its tokens, as they bound a prompt's; at most max_out. */
apr_int64_t llmgw_estimate_completion(apr_int64_t content_bytes,
                                      apr_int64_t max_out);

#endif
