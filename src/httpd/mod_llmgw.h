/* mod_llmgw: what all of the httpd glue shares: the module, the request
 * notes, the configuration, the per-request context and how the glue
 * answers in the client's API. It includes core headers only. */
#ifndef MOD_LLMGW_H
#define MOD_LLMGW_H

#include <httpd.h>
#include <http_config.h>
#include <apr_buckets.h>

#include "llmgw_buf.h"
#include "llmgw_cache.h"
#include "llmgw_coalesce.h"
#include "llmgw_dialect.h"
#include "llmgw_front.h"
#include "llmgw_limits.h"
#include "llmgw_log.h"
#include "llmgw_ollama.h"
#include "llmgw_route.h"
#include "llmgw_store.h"
#include "llmgw_stream.h"

extern module AP_MODULE_DECLARE_DATA llm_gateway_module;

#include "mod_llmgw_version.h"

/* What the Server header and the error log's start line name. */
#define LLMGW_SERVER_COMPONENT "mod_llm_gateway/" LLMGW_VERSION

#define LLMGW_HANDLER "llm-gateway"

/* The request notes for mod_log_config, e.g. %{llm-model}n, one line each
 * (docs/directives.md documents them; the tests read them from here). */
#define LLMGW_NOTE_MODEL "llm-model"
#define LLMGW_NOTE_ROUTE "llm-route"
#define LLMGW_NOTE_UPSTREAM_MODEL "llm-upstream-model"
#define LLMGW_NOTE_STREAM "llm-stream"
#define LLMGW_NOTE_PROMPT_TOKENS "llm-prompt-tokens"
#define LLMGW_NOTE_COMPLETION_TOKENS "llm-completion-tokens"
#define LLMGW_NOTE_TOTAL_TOKENS "llm-total-tokens"
#define LLMGW_NOTE_TTFT_MS "llm-ttft-ms"
#define LLMGW_NOTE_ERROR "llm-error"
#define LLMGW_NOTE_CACHE "llm-cache"
#define LLMGW_NOTE_CACHED_TOKENS "llm-cached-tokens"
#define LLMGW_NOTE_KEY_TEAM "llm-key-team"
/* Failover: how many attempts the request took, and the balancer member
 * (its URL, as BalancerMember names it) that made the answer; llm-route
 * is then the route that answered (a fallback's, after LLMFallback). */
#define LLMGW_NOTE_ATTEMPTS "llm-attempts"
#define LLMGW_NOTE_MEMBER "llm-member"

/* The environment variable that keeps a request out of the cache (e.g.
 * SetEnvIf Authorization "^Bearer nocache-" llm-no-cache). */
#define LLMGW_ENV_NO_CACHE "llm-no-cache"

/* ---------------------------------------------------------------------
 * Configuration (parsed in mod_llmgw_config.c)
 */

#define LLMGW_DEFAULT_MAX_BODY (8 * 1024 * 1024)
#define LLMGW_DEFAULT_COALESCE_TIMEOUT apr_time_from_sec(120)
/* LLMFailover: attempts per request, and how long after the request came
 * a new attempt may still start. */
#define LLMGW_DEFAULT_FAILOVER_ATTEMPTS 3
#define LLMGW_FAILOVER_MAX_ATTEMPTS 16
#define LLMGW_DEFAULT_FAILOVER_TIME apr_time_from_sec(30)

typedef enum {
    LLMGW_API_UNSET = -1,
    LLMGW_API_OFF = 0,
    LLMGW_API_OPENAI = 1,
    LLMGW_API_OLLAMA = 2
} llmgw_api_t;

/* An <LLMKey> (or the <LLMUserLimits> block every REMOTE_USER gets). */
typedef struct llmgw_key {
    const char *name;
    const char *subject;    /* its subject's name in the table */
    unsigned char hash[32]; /* SHA-256 of the key (LLMKeyHash) */
    int has_hash;
    int disabled;               /* LLMKeyDisabled */
    const char *team;           /* LLMKeyTeam, or NULL */
    apr_array_header_t *models; /* const char * globs; NULL: any */
    llmgw_limits_conf_t conf;   /* LLMRateLimit, LLMBudget */
    int rate_set;
    apr_hash_t *per_route; /* route name -> llmgw_key_route_t * */
    const char *file;
    int line;
} llmgw_key_t;

/* Whether key k (NULL: a request without one) may ask for model: its
 * LLMKeyModels globs, or any model without them. */
int llmgw_key_allows(const llmgw_key_t *k, const char *model);

/* A key's limits on one route (LLMRateLimit/LLMBudget route=NAME). */
typedef struct {
    const char *route;
    const char *subject;
    llmgw_limits_conf_t conf;
    int rate_set;
} llmgw_key_route_t;

/* A route's limits (route->limits): LLMRateLimit, LLMBudget and
 * LLMMaxTokens inside <LLMRoute>. */
typedef struct {
    const char *subject; /* NULL: the route has no limits */
    llmgw_limits_conf_t conf;
    int rate_set;
    apr_int64_t default_max; /* LLMMaxTokens N: 0 none */
    apr_int64_t max_cap;     /* LLMMaxTokens cap=N: 0 none */
} llmgw_route_limits_t;

/* LLMPrice MODEL in= out=. */
typedef struct {
    const char *model; /* a name or glob */
    llmgw_price_t price;
} llmgw_model_price_t;

typedef struct {
    llmgw_router_t *router;
    llmgw_route_t *cur_route;   /* while an <LLMRoute> body is parsed */
    llmgw_key_t *cur_key;       /* while an <LLMKey> body is parsed */
    apr_array_header_t *keys;   /* llmgw_key_t *, config order; NULL none */
    llmgw_key_t *users;         /* <LLMUserLimits>, or NULL */
    apr_array_header_t *prices; /* llmgw_model_price_t, config order */
    /* LLMLimitStore: memcache servers to sync through ("" off, NULL
     * unset: LLMCache's memcached, if any) */
    const char *limit_servers;
    apr_interval_time_t limit_interval; /* 0: default */
    int limit_fail_closed;              /* -1 unset (open) */
    apr_interval_time_t limit_stale;    /* fail=closed after this */
    apr_off_t max_body;                 /* 0: unset */
    llmgw_store_t *store;               /* NULL: no cache */
    int store_set;                      /* LLMCache given (off included) */
    int cache_billing_free;             /* -1 unset (full), 0 full, 1 free */
    int coalesce;                       /* -1 unset (on), 0 off, 1 on */
    apr_interval_time_t coalesce_timeout;
} llmgw_server_conf_t;

/* The routes a request sees: its server's, with the run-time changes of
 * LLMManageFile for the main server's (mod_llmgw_manage.c, which keeps
 * them current in every child: one word read per request). */
const llmgw_router_t *llmgw_routes(const request_rec *r);

typedef struct {
    llmgw_api_t api;
    const char *prefix; /* the <Location> path LLMApi stands in */
    int require_key;    /* LLMRequireKey: -1 unset (off), 0, 1 */
    int key_from_user;  /* LLMKeyFrom: -1 unset (key), 0 key, 1 user */
} llmgw_dir_conf_t;

llmgw_server_conf_t *llmgw_sconf(const server_rec *s);
llmgw_dir_conf_t *llmgw_dconf(const request_rec *r);

/* Settings with their defaults (resolved here, not rewritten in the
 * configuration). */
apr_off_t llmgw_max_body(const llmgw_server_conf_t *conf);
int llmgw_coalesce_on(const llmgw_server_conf_t *conf);
apr_interval_time_t llmgw_coalesce_timeout(const llmgw_server_conf_t *conf);
int llmgw_billing_free(const llmgw_server_conf_t *conf);
/* The cache: LLMCache's, else (none given anywhere) the default shm store
 * once post_config made it; NULL: none. */
llmgw_store_t *llmgw_conf_store(const llmgw_server_conf_t *conf);
void llmgw_set_default_store(llmgw_store_t *st);

/* The servers with routes or a store of their own: s, then each virtual
 * host whose router or store is not s's (the others share s's). */
#define LLMGW_EACH_SERVER(vs, s) \
    for ((vs) = (s); (vs); (vs) = llmgw_next_server((s), (vs)))
server_rec *llmgw_next_server(server_rec *s, server_rec *vs);

/* cb(state, data, pool) every `every` on mod_watchdog's watchdog named
 * name, in one child at a time (a singleton of the children's): at
 * post_config. APR_SUCCESS; APR_ENOTIMPL without mod_watchdog; or the
 * watchdog's error. */
apr_status_t llmgw_watchdog_every(apr_pool_t *pconf, const char *name,
                                  apr_interval_time_t every, const void *data,
                                  apr_status_t (*cb)(int state, void *data,
                                                     apr_pool_t *pool));

/* ---------------------------------------------------------------------
 * One API request
 */

typedef enum {
    OUT_UNDECIDED = 0,
    OUT_SSE,   /* a stream, framed event by event */
    OUT_JSON,  /* one body, passed as it comes */
    OUT_WHOLE, /* one body, held and translated */
    OUT_PASS
} llmgw_out_mode_t;

/* What an Ollama client asks that no backend is needed for. */
typedef enum {
    OLLAMA_INFO_NONE = 0,
    OLLAMA_INFO_TAGS,
    OLLAMA_INFO_PS,
    OLLAMA_INFO_SHOW,
    OLLAMA_INFO_VERSION,
    OLLAMA_INFO_ROOT,       /* GET or HEAD /: "Ollama is running" */
    OLLAMA_INFO_LOAD,       /* a load request, for a backend not Ollama */
    OLLAMA_INFO_MODEL_FILES /* pull, push, create, copy, delete, blobs */
} llmgw_ollama_info_t;

typedef struct {
    llmgw_api_t api;       /* the client's API */
    llmgw_endpoint_t ep;   /* the OpenAI endpoint serving it */
    llmgw_ollama_ep_t oep; /* the Ollama endpoint asked, if any */
    llmgw_ollama_info_t info;
    const char *model_id; /* GET /models/{id}, POST /api/show */
    llmgw_request_t req;  /* always in OpenAI terms */
    const llmgw_route_t *route;
    const char *upstream_model; /* the name the backend is asked for */
    int backend_ollama;         /* the route's dialect is ollama */
    int native;                 /* an Ollama client, an Ollama backend: its
                                 * bytes both ways (a copy translated) */
    llmgw_ollama_extra_t ox;    /* an Ollama request beyond its OpenAI view */
    apr_bucket_brigade *native_out; /* where a native stream's lines go */
    llmgw_error_t err;              /* err.status != 0: we answer it */
    llmgw_front_t *front;           /* the client's shape of the answer */
    const char *body;               /* what goes upstream */
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
    llmgw_store_t *store; /* the cache, for an eligible request */
    const char *cache_key;
    llmgw_record_t *hit;  /* the answer, from the cache */
    llmgw_record_t *rec;  /* the answer being recorded */
    int complete;         /* the answer arrived whole and well */
    int stream_ended;     /* the client's stream has its end */
    int settled;          /* stored and coalescing ended */
    int client_gone;      /* a leader's client left: finish anyway */
    int client_closed;    /* the client left mid-answer (noted) */
    llmgw_coalesce_t *co; /* as leader, or as a stream follower */
    int following;
    llmgw_pbuf_t copy;      /* a plain answer being recorded */
    const char *bad_answer; /* why the backend's body is dropped and
                                  * the client gets a 502 instead */
    /* keys and limits (mod_llmgw_limits.c) */
    const llmgw_key_t *key;        /* the client's key (or user), or NULL */
    struct llmgw_admission *admit; /* the reservation, or NULL */
    llmgw_usage_t usage;           /* the last llmgw_note_usage */
    apr_int64_t generated;         /* stream bytes that reached the client
                                    * side: bound a cut stream's tokens */
    /* failover (mod_llmgw_failover.c): the attempts' state, NULL when the
     * request goes to mod_proxy once */
    struct llmgw_failover *fo;
    const char *openai; /* the request in OpenAI terms, for a fallback */
    apr_size_t openai_len;
} llmgw_req_t;

/* The context of an API request (made by the fixups hook), or NULL. */
llmgw_req_t *llmgw_req_get(const request_rec *r);
/* Makes it, for an API request; the core's log lines about its pool are
 * then the request's (llmgw_log_glue). */
llmgw_req_t *llmgw_req_make(request_rec *r, llmgw_api_t api);

/* The core's log lines go to httpd's error log (post_config). */
void llmgw_log_glue(void);

/* ---------------------------------------------------------------------
 * Notes and answers in the client's API
 */

void llmgw_note_usage(request_rec *r, const llmgw_usage_t *u);
/* llm-ttft-ms: now, since the request came. */
void llmgw_note_ttft(request_rec *r);
/* llm-error: the error's code, else its type. */
void llmgw_note_error(request_rec *r, const llmgw_error_t *err);

/* The status mod_proxy means: it reports a backend read timeout as 502. */
int llmgw_proxy_status(const request_rec *r, int status);
/* The error as r's answer in the client's API: status, Content-Type and
 * the note set, the body returned (from r->pool, *len its length). */
const char *llmgw_error_answer(request_rec *r, int ollama,
                               const llmgw_error_t *err, apr_size_t *len);
/* The same in a filter: what bb holds (but EOS) replaced by the body,
 * with EOS when end. */
void llmgw_error_brigade(request_rec *r, int ollama, const llmgw_error_t *err,
                         apr_bucket_brigade *bb, int end);
/* A JSON body sent by a handler. */
void llmgw_send_json(request_rec *r, int status, const char *json,
                     apr_size_t len);

#endif
