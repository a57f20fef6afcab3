/* llmgw_proxy: the request path: URL mapping, fixups (read, check, route,
 * cache, coalesce), the handoff to mod_proxy, and the per-request state
 * that the output filter (llmgw_output) and the handler (llmgw_answer)
 * share. */
#ifndef LLMGW_PROXY_H
#define LLMGW_PROXY_H

#include <httpd.h>
#include <http_config.h>

#include "llmgw_cache.h"
#include "llmgw_coalesce.h"
#include "llmgw_config.h"
#include "llmgw_dialect.h"
#include "llmgw_front.h"
#include "llmgw_ollama.h"
#include "llmgw_stream.h"

#define LLMGW_HANDLER "llm-gateway"
#define LLMGW_VERSION "0.1.0"

/* Bytes in a pool, doubling as they come (an answer held whole). */
typedef struct {
    char *b;
    apr_size_t len;
    apr_size_t cap;
} llmgw_pbuf_t;

void llmgw_pbuf_add(apr_pool_t *p, llmgw_pbuf_t *b, const char *s,
                    apr_size_t n);

typedef enum {
    OUT_UNDECIDED = 0,
    OUT_SSE,                     /* a stream, framed event by event */
    OUT_JSON,                    /* one body, passed as it comes */
    OUT_WHOLE,                   /* one body, held and translated */
    OUT_PASS
} llmgw_out_mode_t;

/* What an Ollama client asks that no backend is needed for. */
typedef enum {
    OLLAMA_INFO_NONE = 0,
    OLLAMA_INFO_TAGS,
    OLLAMA_INFO_PS,
    OLLAMA_INFO_SHOW,
    OLLAMA_INFO_VERSION
} llmgw_ollama_info_t;

typedef struct {
    llmgw_api_t api;             /* the client's API */
    llmgw_endpoint_t ep;         /* the OpenAI endpoint serving it */
    llmgw_ollama_ep_t oep;       /* the Ollama endpoint asked, if any */
    llmgw_ollama_info_t info;
    const char *model_id;        /* GET /models/{id}, POST /api/show */
    llmgw_request_t req;         /* always in OpenAI terms */
    const llmgw_route_t *route;
    const char *upstream_model;  /* the name the backend is asked for */
    int backend_ollama;          /* the route's dialect is ollama */
    llmgw_error_t err;           /* err.status != 0: we answer it */
    llmgw_front_t *front;        /* the client's shape of the answer */
    const char *body;            /* what goes upstream */
    apr_size_t body_len;
    apr_size_t body_sent;
    int eos_sent;
    int strip_usage;
    /* the answer on its way back */
    llmgw_out_mode_t out;
    int finished;
    llmgw_sse_t *sse;
    llmgw_ollama_sse_t *from_ollama;
    char *tail;
    apr_size_t tail_len;
    apr_bucket_brigade *bb;
    /* cache and coalescing */
    llmgw_store_t *store;        /* the cache, for an eligible request */
    const char *cache_key;
    llmgw_record_t *hit;         /* the answer, from the cache */
    llmgw_record_t *rec;         /* the answer being recorded */
    int complete;                /* the answer arrived whole and well */
    int stream_ended;            /* the client's stream has its end */
    int settled;                 /* stored and coalescing ended */
    int client_gone;             /* a leader's client left: finish anyway */
    llmgw_coalesce_t *co;        /* as leader, or as a stream follower */
    int following;
    llmgw_pbuf_t copy;           /* a plain answer being recorded */
    int sniffed;                 /* a plain body's first byte was seen */
    const char *bad_answer;      /* why the backend's body is dropped and
                                  * the client gets a 502 instead */
} llmgw_req_t;

llmgw_req_t *llmgw_req_get(request_rec *r);
void llmgw_set_usage_notes(request_rec *r, const llmgw_usage_t *u);
void llmgw_set_ttft_note(request_rec *r);

int llmgw_translate_name(request_rec *r);
int llmgw_map_to_storage(request_rec *r);
int llmgw_fixups(request_rec *r);

/* Registers the body input filter; called from register_hooks. */
void llmgw_proxy_register(void);

#endif
