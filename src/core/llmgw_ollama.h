/* llmgw_ollama: Ollama's native API both ways: OpenAI clients served by an
 * Ollama backend, and Ollama clients served by an OpenAI-style backend. */
#ifndef LLMGW_OLLAMA_H
#define LLMGW_OLLAMA_H

#include <apr_pools.h>
#include <apr_tables.h>

#include "llmgw_dialect.h"
#include "llmgw_stream.h"

/* A malloc'ed byte buffer, reused so a long stream does not grow a pool. */

/* Ollama's time stamps (created_at, modified_at): RFC 3339 in UTC, to the
 * second. */
const char *llmgw_ollama_time(apr_pool_t *p, apr_int64_t secs);

/* ---------------------------------------------------------------------
 * A. OpenAI clients, Ollama backend (<LLMRoute> ... dialect=ollama)
 */

/* The Ollama body for a parsed OpenAI request; *path gets the upstream
 * path (/api/chat, /api/generate, /api/embed). upstream_model NULL sends
 * the client's model name. Returns 0, or fills err (a 400 naming the
 * param) and returns its status. Everything is allocated from p. */
int llmgw_ollama_request(apr_pool_t *p, const llmgw_request_t *req,
                         const char *upstream_model, const char **path,
                         const char **body, apr_size_t *len,
                         llmgw_error_t *err);

/* A plain (non-stream) Ollama answer with HTTP status 'status' as the
 * OpenAI body the client asked for (req->ep, req->body): 'id' becomes
 * "chatcmpl-<id>" / "cmpl-<id>", 'model' (NULL: req->model) and
 * 'created' are what the client sees. Returns 0 with *out and *usage
 * filled, or fills err (Ollama's {"error":...} with the backend's status,
 * or a 502 for an answer that cannot be read) and returns its status. */
int llmgw_ollama_response(apr_pool_t *p, const llmgw_request_t *req,
                          int status, const char *buf, apr_size_t len,
                          const char *id, const char *model,
                          apr_int64_t created, const char **out,
                          apr_size_t *out_len, llmgw_usage_t *usage,
                          llmgw_error_t *err);

/* Ollama's NDJSON stream as OpenAI Server-Sent Events. Callers read done,
 * failed, usage and content_events; the rest is private. */
typedef struct llmgw_ollama_sse {
    int done;            /* a done:true line was seen and answered */
    int failed;          /* an error line (or bad line) ended it */
    int content_events;  /* lines that carried generated output */
    llmgw_usage_t usage; /* counts of the done:true line */
    /* private */
    apr_pool_t *p;
    apr_pool_t *lp; /* one line's trees, cleared after each */
    llmgw_endpoint_t ep;
    const char *id;
    const char *object;
    const char *model;
    apr_int64_t created;
    int include_usage;
    int started;    /* the role chunk went out */
    int tool_calls; /* tool calls sent so far */
    llmgw_buf_t in; /* the incomplete line held back */
    llmgw_buf_t out;
} llmgw_ollama_sse_t;

/* ep is LLMGW_EP_CHAT or LLMGW_EP_COMPLETIONS; id, model and created
 * are as for llmgw_ollama_response; include_usage adds the usage chunk
 * (and "usage":null to every other chunk, as OpenAI does). */
llmgw_ollama_sse_t *llmgw_ollama_sse_create(apr_pool_t *p, llmgw_endpoint_t ep,
                                            const char *id, const char *model,
                                            apr_int64_t created,
                                            int include_usage);

/* Takes in the next bytes of the stream. Returns how many bytes of SSE
 * are ready to forward, at *out, valid until the next call. A line cut
 * short is held back. After done or failed, input is ignored. */
apr_size_t llmgw_ollama_sse_feed(llmgw_ollama_sse_t *s, const char *in,
                                 apr_size_t len, const char **out);

/* At the end of the input: a last line without its newline is still
 * read. Returns bytes to forward as for feed. */
apr_size_t llmgw_ollama_sse_end(llmgw_ollama_sse_t *s, const char **out);

/* What ends a stream that broke (neither done nor failed): the shape of
 * llmgw_sse_error_events: an error event, [DONE]. Empty when the stream already ended. From p. */
const char *llmgw_ollama_sse_error_tail(const llmgw_ollama_sse_t *s,
                                        apr_pool_t *p,
                                        const llmgw_error_t *err,
                                        apr_size_t *len);

/* ---------------------------------------------------------------------
 * B. Ollama clients, OpenAI-style backend (LLMApi ollama)
 */

typedef enum {
    LLMGW_OLLAMA_EP_NONE = 0,
    LLMGW_OLLAMA_EP_CHAT,      /* POST /api/chat */
    LLMGW_OLLAMA_EP_GENERATE,  /* POST /api/generate */
    LLMGW_OLLAMA_EP_EMBED,     /* POST /api/embed */
    LLMGW_OLLAMA_EP_EMBEDDINGS /* POST /api/embeddings (legacy) */
} llmgw_ollama_ep_t;

/* Maps the path below the API root ("/chat", or "/api/chat") to an
 * endpoint. */
llmgw_ollama_ep_t llmgw_ollama_endpoint_parse(const char *path);

/* The OpenAI endpoint an Ollama one is served by. */
llmgw_endpoint_t llmgw_ollama_openai_endpoint(llmgw_ollama_ep_t oep);

/* Reads an Ollama request and fills req as llmgw_request_parse would for
 * the OpenAI body it becomes (req->body; *body, *len its text, ready for
 * llmgw_request_upstream_body). Streams default to on, as in Ollama, and
 * ask for include_usage. Returns 0, or fills err->status and
 * err->message (send them with llmgw_ollama_error_json). */
int llmgw_ollama_front_request(apr_pool_t *p, llmgw_ollama_ep_t oep,
                               const char *buf, apr_size_t len,
                               llmgw_request_t *req, const char **body,
                               apr_size_t *blen, llmgw_error_t *err);

/* {"error":"message"}, Ollama's error shape. */
const char *llmgw_ollama_error_json(apr_pool_t *p, const char *message);

/* A plain OpenAI answer with HTTP status 'status' as the Ollama body for
 * oep; 'model' and 'created' (seconds) are what the client sees. Returns
 * 0 with *out and *usage filled, or fills err (status, message) as for
 * llmgw_ollama_front_request and returns its status. */
int llmgw_ollama_front_response(apr_pool_t *p, llmgw_ollama_ep_t oep,
                                int status, const char *buf, apr_size_t len,
                                const char *model, apr_int64_t created,
                                const char **out, apr_size_t *out_len,
                                llmgw_usage_t *usage, llmgw_error_t *err);

/* An OpenAI SSE stream as Ollama NDJSON lines. Callers read done,
 * failed, usage and content_events; the rest is private. */
typedef struct llmgw_ollama_ndjson {
    int done;            /* the final done:true line went out */
    int failed;          /* an error event ended it */
    int content_events;  /* events that carried generated output */
    llmgw_usage_t usage; /* from the usage chunk */
    /* private */
    apr_pool_t *p;
    apr_pool_t *lp; /* one event's trees, cleared after each */
    apr_pool_t *tp; /* tool calls being put together */
    llmgw_ollama_ep_t oep;
    const char *model;
    const char *created_at;
    const char *done_reason;
    apr_array_header_t *calls;
    llmgw_buf_t in; /* the incomplete line held back */
    llmgw_buf_t ev; /* the data of the event being read */
    llmgw_buf_t out;
} llmgw_ollama_ndjson_t;

/* oep is LLMGW_OLLAMA_EP_CHAT or LLMGW_OLLAMA_EP_GENERATE. */
llmgw_ollama_ndjson_t *llmgw_ollama_ndjson_create(apr_pool_t *p,
                                                  llmgw_ollama_ep_t oep,
                                                  const char *model,
                                                  apr_int64_t created);

/* As llmgw_ollama_sse_feed, giving NDJSON lines. */
apr_size_t llmgw_ollama_ndjson_feed(llmgw_ollama_ndjson_t *s, const char *in,
                                    apr_size_t len, const char **out);

/* At the end of the input: reads an event left without its blank line,
 * and ends the stream well when the backend gave a finish_reason but no
 * [DONE]. Returns bytes to forward as for feed. */
apr_size_t llmgw_ollama_ndjson_end(llmgw_ollama_ndjson_t *s, const char **out);

/* The line that ends a broken stream, {"error":"message"}\n; empty when
 * the stream already ended. From p. */
const char *llmgw_ollama_ndjson_error_tail(const llmgw_ollama_ndjson_t *s,
                                           apr_pool_t *p, const char *message,
                                           apr_size_t *len);

#endif
