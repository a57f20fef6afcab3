/* llmgw_ollama: Ollama's native API both ways: OpenAI clients served by an
 * Ollama backend, and Ollama clients served by an OpenAI-style backend. */
#ifndef LLMGW_OLLAMA_H
#define LLMGW_OLLAMA_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

#include "llmgw_dialect.h"
#include "llmgw_stream.h"

/* A malloc'ed byte buffer, reused so a long stream does not grow a pool. */

/* Ollama's time stamps (created_at, modified_at): RFC 3339 in UTC, to the
 * second. */
const char *llmgw_ollama_time(apr_pool_t *p, apr_int64_t secs);
/* The same for a time in microseconds, with its fraction of a second as
 * Ollama writes created_at (Go's RFC3339Nano: no trailing zeros). */
const char *llmgw_ollama_time_us(apr_pool_t *p, apr_time_t when);

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
 * failed, error_line, broke, usage and content_events, and may set
 * on_line; the rest is private. */
typedef struct llmgw_ollama_sse {
    int done;            /* a done:true line was seen and answered */
    int failed;          /* an error line (or bad line) ended it */
    int error_line;      /* it was the backend's own {"error":...} line */
    const char *broke;   /* else why it failed (a static text) */
    int content_events;  /* lines that carried generated output */
    llmgw_usage_t usage; /* counts of the done:true line */
    /* Each line that reads as a JSON object (an error line too), as it
     * came but for its newline, before it is translated; none after the
     * stream's end. NULL: none. */
    void (*on_line)(void *baton, const char *line, apr_size_t len);
    void *line_baton;
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

/* What an Ollama request holds beyond its OpenAI view. */
typedef struct {
    llmgw_json_t *view; /* the client's body, as read */
    int load;   /* nothing to generate from (no messages, prompt, input):
                 * Ollama's request to load the model */
    int unload; /* a load request with keep_alive 0: unload it */
    int beyond; /* members the OpenAI view leaves out that may change the
                 * answer (options such as num_ctx, raw, template, think
                 * as a boolean...): an Ollama backend gets them */
    llmgw_error_t refusal; /* status != 0: what an OpenAI-style backend
                            * cannot serve (the 400 to answer) */
} llmgw_ollama_extra_t;

/* Reads an Ollama request and fills req as llmgw_request_parse would for
 * the OpenAI body it becomes (req->body; *body, *len its text, ready for
 * llmgw_request_upstream_body), and x. Streams default to on, as in
 * Ollama, and ask for include_usage; a load request's view has only its
 * model. Returns 0, or fills err->status and err->message (send them
 * with llmgw_ollama_error_json). */
int llmgw_ollama_front_parse(apr_pool_t *p, llmgw_ollama_ep_t oep,
                             const char *buf, apr_size_t len,
                             llmgw_request_t *req, const char **body,
                             apr_size_t *blen, llmgw_ollama_extra_t *x,
                             llmgw_error_t *err);

/* The same for a request an OpenAI-style backend serves: a load request
 * or x.refusal are errors. */
int llmgw_ollama_front_request(apr_pool_t *p, llmgw_ollama_ep_t oep,
                               const char *buf, apr_size_t len,
                               llmgw_request_t *req, const char **body,
                               apr_size_t *blen, llmgw_error_t *err);

/* An Ollama backend serves an Ollama client natively: the client's body
 * (view, from llmgw_ollama_front_parse) with only its model replaced by
 * upstream_model, every other byte as it came; to the path that
 * llmgw_ollama_native_path gives (NULL: none). From view's pool. */
const char *llmgw_ollama_native_body(apr_pool_t *p, const llmgw_json_t *view,
                                     const char *upstream_model,
                                     apr_size_t *len);
const char *llmgw_ollama_native_path(llmgw_ollama_ep_t oep);

/* For a llama.cpp server (dialect=llamacpp), whose OpenAI endpoints also
 * take its own sampling parameters: the Ollama options that are the same
 * (repeat_penalty, repeat_last_n, min_p, typical_p, tfs_z, mirostat,
 * mirostat_tau, mirostat_eta; num_keep as n_keep, penalize_newline as
 * penalize_nl) added to req's OpenAI view and its text (*body, *blen),
 * so that the cache key covers them too. Returns 0 (nothing changed when
 * there are none), or a 400 in err for one of the wrong type. */
int llmgw_ollama_llamacpp_options(apr_pool_t *p, const llmgw_ollama_extra_t *x,
                                  llmgw_request_t *req, const char **body,
                                  apr_size_t *blen, llmgw_error_t *err);

/* Ollama's answer to a load request (unload: keep_alive 0), as Ollama
 * gives it (chat: message, generate: response, both with done_reason
 * "load" or "unload"; embed: no embeddings), at the time now. */
const char *llmgw_ollama_load_answer(apr_pool_t *p, llmgw_ollama_ep_t oep,
                                     const char *model, int unload,
                                     apr_time_t now, apr_size_t *len);

/* {"error":"message"}, Ollama's error shape. */
const char *llmgw_ollama_error_json(apr_pool_t *p, const char *message);

/* A plain OpenAI answer with HTTP status 'status' as the Ollama body for
 * oep; 'model' is what the client sees, created_at is end and the
 * durations run from start to end (microseconds). Returns 0 with *out and
 * *usage filled, or fills err (status, message) as for
 * llmgw_ollama_front_request and returns its status. */
int llmgw_ollama_front_response(apr_pool_t *p, llmgw_ollama_ep_t oep,
                                int status, const char *buf, apr_size_t len,
                                const char *model, apr_time_t start,
                                apr_time_t end, const char **out,
                                apr_size_t *out_len, llmgw_usage_t *usage,
                                llmgw_error_t *err);

/* An OpenAI SSE stream as Ollama NDJSON lines. Callers read done,
 * failed, usage and content_events; the rest is private. */
typedef struct llmgw_ollama_ndjson {
    int done;                /* the final done:true line went out */
    int failed;              /* an error event ended it */
    int content_events;      /* events that carried generated output */
    llmgw_usage_t usage;     /* from the usage chunk */
    apr_time_t (*now)(void); /* the clock: apr_time_now (tests set one) */
    /* private */
    apr_pool_t *p;
    apr_pool_t *lp; /* one event's trees, cleared after each */
    apr_pool_t *tp; /* tool calls being put together */
    llmgw_ollama_ep_t oep;
    const char *model;
    apr_time_t start; /* the request came */
    apr_time_t first; /* the first output went out */
    const char *done_reason;
    apr_array_header_t *calls;
    llmgw_buf_t in; /* the incomplete line held back */
    llmgw_buf_t ev; /* the data of the event being read */
    llmgw_buf_t out;
} llmgw_ollama_ndjson_t;

/* oep is LLMGW_OLLAMA_EP_CHAT or LLMGW_OLLAMA_EP_GENERATE; start is when
 * the request came. Each line's created_at is the time it is written
 * (by the clock, now); the last line's durations are measured as
 * llmgw_ollama_front_response's, with the first token's time. */
llmgw_ollama_ndjson_t *llmgw_ollama_ndjson_create(apr_pool_t *p,
                                                  llmgw_ollama_ep_t oep,
                                                  const char *model,
                                                  apr_time_t start);

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
