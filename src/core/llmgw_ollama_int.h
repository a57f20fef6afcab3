/* llmgw_ollama_int: what the two halves of the Ollama part share (its
 * backend dialect, llmgw_ollama_backend.c, and its client front,
 * llmgw_ollama_front.c); private to them and llmgw_ollama.c. */
#ifndef LLMGW_OLLAMA_INT_H
#define LLMGW_OLLAMA_INT_H

#include "llmgw_ollama.h"

/* A line longer than this is no stream we can serve: it would only grow
 * the buffer without end. */
#define MAX_LINE LLMGW_STREAM_MAX_EVENT

typedef void ol_line_fn(void *baton, const char *line, apr_size_t len);

/* One line to fn, without a '\r' before its end. */
void ol_deliver(ol_line_fn *fn, void *baton, const char *line, apr_size_t len);

/* Hands each complete line of in to fn (without its "\n" or "\r\n");
 * the rest waits in pending for the next call. Lines need no copy
 * unless they straddle two calls. Returns 0 when the waiting line grows
 * past MAX_LINE or memory. */
int ol_split_lines(llmgw_buf_t *pending, const char *in, apr_size_t len,
                   ol_line_fn *fn, void *baton);

/* What the feed and the end of both stream translators share. feed: out
 * emptied for what this call gives, in's lines to fn unless the stream is
 * over (done or failed: then input is ignored); 0 when a line grew past
 * what can be held (the caller fails the stream). end: out emptied, the
 * line held back in pending (one without its newline) to fn. */
int ol_feed(llmgw_buf_t *pending, llmgw_buf_t *out, int over, const char *in,
            apr_size_t len, ol_line_fn *fn, void *baton);
void ol_end(llmgw_buf_t *pending, llmgw_buf_t *out, ol_line_fn *fn,
            void *baton);

/* What a stream translator's call gives to forward: out's bytes (*o,
 * "" when there are none) and their count. */
apr_size_t ol_output(const llmgw_buf_t *out, const char **o);

/* The sampling options with the same name in both APIs (OpenAI's at the
 * top level, Ollama's in options), NULL-terminated. */
extern const char *const ol_same_options[];

int ol_is_num(llmgw_json_type_t t);
int ol_absent(llmgw_json_type_t t);
apr_size_t ol_len_of(const llmgw_json_t *a);
/* Element i of a, which may be missing (NULL), as may the element. */
llmgw_json_t *ol_item(const llmgw_json_t *a, apr_size_t i);

/* Tool call arguments as the object Ollama wants: blank text is {};
 * NULL when the text is not a JSON object. */
llmgw_json_t *ol_args_object(apr_pool_t *p, const char *s, apr_size_t len);
/* Tool call arguments as the JSON string OpenAI wants. */
const char *ol_args_text(const llmgw_json_t *tc);
/* Fills o as OpenAI's tool call with id and name of Ollama's tool call
 * tc (its arguments as ol_args_text gives them). */
void ol_openai_call(llmgw_json_t *o, const char *id, const char *name,
                    const llmgw_json_t *tc);

/* OpenAI's finish_reason for Ollama's done_reason. Ollama says "stop"
 * after tool calls too; its other reasons (load, unload) mean nothing
 * to OpenAI clients. */
const char *ol_finish_reason(const char *reason, int tool_calls);
/* Ollama's done_reason for OpenAI's finish_reason. */
const char *ol_done_reason(const char *reason);

/* OpenAI's usage object of j, if it has one. */
void ol_openai_usage(const llmgw_json_t *j, llmgw_usage_t *usage);

#endif
