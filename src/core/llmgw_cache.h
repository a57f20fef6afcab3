/* llmgw_cache: what may be cached, under which key, and the cached record:
 * an answer kept as its chunk sequence and as one assembled response. */
#ifndef LLMGW_CACHE_H
#define LLMGW_CACHE_H

#include <apr_pools.h>
#include <apr_tables.h>

#include "llmgw_dialect.h"
#include "llmgw_json.h"

typedef enum {
    LLMGW_CACHE_DETERMINISTIC = 0, /* temperature 0 or a fixed seed */
    LLMGW_CACHE_ALL,
    LLMGW_CACHE_OFF
} llmgw_cache_policy_t;

/* Whether a request may be served from, and stored in, the cache. */
int llmgw_cache_eligible(const llmgw_request_t *req,
                         llmgw_cache_policy_t policy);

/* The cache key: SHA-256 (hex) of a version tag, the endpoint, dialect,
 * backend and upstream model, and the canonical JSON of every request
 * member except those that cannot change the answer (model, stream,
 * stream_options, user, metadata, store). */
const char *llmgw_cache_key(apr_pool_t *p, const llmgw_request_t *req,
                            const char *upstream_model, const char *backend,
                            const char *dialect);

/* Flushing the cache in O(1): a generation per model name (a fixed table
 * of LLMGW_CACHE_GENS counters by the name's hash; two names that share
 * one flush together) and one for everything, in memory the caller
 * shares. A key made while any of its generations is not 0 includes
 * them, so what was stored before a flush is never found again (the
 * store ages it out). The generations are this node's. */
#define LLMGW_CACHE_GENS 1024

typedef struct llmgw_cache_gens llmgw_cache_gens_t;

apr_size_t llmgw_cache_gens_size(void);
/* Laid out in mem (8-byte aligned; zeroed: nothing flushed), or NULL if
 * size is short or mem is not aligned. */
llmgw_cache_gens_t *llmgw_cache_gens_init(void *mem, apr_size_t size);
/* The generations the keys of this process include (NULL: none). */
void llmgw_cache_use_gens(llmgw_cache_gens_t *g);
/* Flushes model (by the name the client asked for or the upstream one),
 * or everything for NULL; returns the flushes so far. */
apr_uint64_t llmgw_cache_flush(llmgw_cache_gens_t *g, const char *model);
apr_uint64_t llmgw_cache_flushes(const llmgw_cache_gens_t *g);

typedef struct llmgw_record llmgw_record_t;

/* A record being built from an upstream answer; max is the largest
 * serialised size the store takes (a bigger answer is not cached). */
llmgw_record_t *llmgw_record_create(apr_pool_t *p, llmgw_endpoint_t ep,
                                    apr_size_t max);
/* Feeds one SSE data payload (a chunk's JSON) of a streamed answer. A
 * payload that is not a chunk, an error event, or a choice finished with
 * "error" makes the answer one not to keep. */
void llmgw_record_add_chunk(llmgw_record_t *rec, const char *data,
                            apr_size_t len);
/* Sets the whole body of a non-streamed answer: kept only if it is the
 * endpoint's answer, strict JSON read whole: an object without an error,
 * with choices (objects, none finished with "error") or, for embeddings,
 * data. */
void llmgw_record_set_response(llmgw_record_t *rec, const char *body,
                               apr_size_t len);
/* The same for a body already read whole (llmgw_json_read of body[0..len),
 * in a pool that outlives rec): the answer is not read again. */
void llmgw_record_set_read_response(llmgw_record_t *rec, const char *body,
                                    apr_size_t len, const llmgw_json_t *j);
/* The text to store, or NULL when the answer cannot be cached (too big,
 * not understood, not whole, or not readable back as a record). */
const char *llmgw_record_serialize(llmgw_record_t *rec, apr_size_t *len);

/* A stored record, or NULL when text[0..len) is not one, whatever it
 * holds: another version, a cut, a changed bit, a length that lies (the
 * header's length and check), JSON that does not read. With full, its
 * JSON is read now (a stream replay needs it); else a plain hit serves
 * the stored response bytes as they are. text must live as long as the
 * record. */
llmgw_record_t *llmgw_record_parse(apr_pool_t *p, const char *text,
                                   apr_size_t len, int full);
/* The answer as a non-streamed JSON body. */
const char *llmgw_record_render_json(llmgw_record_t *rec, apr_size_t *len);
/* The answer as an SSE stream, [DONE] included; the usage chunk only
 * when the client asked for it. NULL if the stored JSON is unreadable. */
const char *llmgw_record_render_sse(llmgw_record_t *rec, apr_pool_t *p,
                                    int include_usage, apr_size_t *len);
/* Usage of the recorded answer. */
void llmgw_record_usage(llmgw_record_t *rec, llmgw_usage_t *usage);
/* How many stream chunks the record holds (those with choices: what a
 * replay sends before the usage chunk); 0 for a plain answer, and for a
 * stored record parsed without full. */
apr_size_t llmgw_record_nchunks(const llmgw_record_t *rec);

#endif
