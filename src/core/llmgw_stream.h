/* llmgw_stream: an incremental Server-Sent Events framer for upstream
 * streams: complete events pass on at once, usage is read on the way. */
#ifndef LLMGW_STREAM_H
#define LLMGW_STREAM_H

#include <apr_pools.h>

#include "llmgw_buf.h"
#include "llmgw_dialect.h"

/* The most a stream translator holds of one unfinished event, line, or
 * tool call's arguments being put together: a backend that needs more
 * gets its stream ended with the error tail, never buffered without end.
 * One limit for the SSE framer and the Ollama translators. */
#define LLMGW_STREAM_MAX_EVENT (16 * 1024 * 1024)

typedef struct llmgw_sse {
    apr_pool_t *p;
    apr_pool_t *lp;         /* one event's parse, cleared after it */
    llmgw_buf_t buf;        /* events not yet handed out */
    apr_size_t ready;       /* front bytes handed out by the last feed */
    apr_size_t scanned;     /* bytes after 'ready' already searched */
    int strip_usage;        /* drop the usage-only chunk we asked for */
    int done;               /* "data: [DONE]" seen */
    int failed;             /* an event outgrew LLMGW_STREAM_MAX_EVENT (or
                             * memory ran out): the stream must end with
                             * its error tail; the buffer is freed and
                             * further input ignored */
    int content_events;     /* events that carried generated output */
    apr_int64_t text_bytes; /* of the generated strings, as sent (escapes
                             * included): what bounds the completion's
                             * tokens when no usage comes */
    int choices;            /* the stream's choices (1; the glue sets it) */
    apr_uint64_t finished;  /* bit i: choice i had a finish_reason other
                            * than "error" */
    int malformed;          /* events whose data is neither [DONE] nor a
                             * JSON object (the first object is parsed
                             * whole; the others' first byte is looked at) */
    int events;
    llmgw_usage_t usage;
    const char *id; /* of the first chunk: which generation it is */
    /* Called with each event's JSON data, before it is changed (the
     * cache records streams through it); may be NULL. */
    void (*on_data)(void *baton, const char *data, apr_size_t len);
    void *baton;
} llmgw_sse_t;

llmgw_sse_t *llmgw_sse_create(apr_pool_t *p, int strip_usage);

/* Takes in the next bytes of the stream. Returns how many bytes of
 * complete events are ready to forward, at *out; they stay valid until
 * the next call. Incomplete events are held back, up to
 * LLMGW_STREAM_MAX_EVENT (the memory held is at most that and one call's
 * input); past it s->failed is set. */
apr_size_t llmgw_sse_feed(llmgw_sse_t *s, const char *in, apr_size_t len,
                          const char **out);

/* Whether the stream is whole without its [DONE]: each of the
 * s->choices choices (at most 64) reached a finish_reason other than
 * "error", and, when need_usage, the usage came. Some servers never send
 * [DONE]; what they sent is the whole answer. */
int llmgw_sse_finished(const llmgw_sse_t *s, int need_usage);

/* Bytes held back at the end of the stream (an event cut short). */
apr_size_t llmgw_sse_pending(const llmgw_sse_t *s);

/* What ends a stream that broke: an error event {"error":{...}} and
 * [DONE], so clients see a failure, never a silent truncation. No chunk
 * with an "error" finish_reason: that value is not in OpenAI's schema,
 * and clients with closed enums would fail on the very chunk that says
 * what went wrong. From p. */
const char *llmgw_sse_error_events(apr_pool_t *p, const llmgw_error_t *err,
                                   apr_size_t *len);

#endif
