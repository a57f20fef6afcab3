/* llmgw_probe: reads what an inference server says about itself (Ollama
 * /api/ps and /api/tags, llama.cpp /health and /slots, vLLM /metrics,
 * OpenAI /v1/models) into one result per probe. Every answer is untrusted:
 * sizes are bounded and a part that does not read is never guessed at. */
#ifndef LLMGW_PROBE_H
#define LLMGW_PROBE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

/* Health of a member, or of a model on a member. "loading" and "busy"
 * mean "not now, but not broken": they never trip the circuit breaker. */
typedef enum {
    LLMGW_HS_UNKNOWN = 0, /* nothing known yet */
    LLMGW_HS_READY,
    LLMGW_HS_LOADING, /* a model is being loaded */
    LLMGW_HS_BUSY,    /* no free slot, or a queue over a bound */
    LLMGW_HS_DOWN,    /* connect errors, 5xx, timeouts */
    LLMGW_HS_ABSENT   /* the model is not on that member */
} llmgw_hstate_t;

/* "ready", "loading", ... ("unknown" for anything else). */
const char *llmgw_hstate_name(llmgw_hstate_t s);

typedef enum {
    LLMGW_PROBE_OLLAMA_PS = 0,   /* GET /api/ps: loaded models */
    LLMGW_PROBE_OLLAMA_TAGS,     /* GET /api/tags: available models */
    LLMGW_PROBE_LLAMACPP_HEALTH, /* GET /health: ok, loading, down */
    LLMGW_PROBE_LLAMACPP_SLOTS,  /* GET /slots: busy and idle slots */
    LLMGW_PROBE_VLLM_METRICS,    /* GET /metrics: running, waiting, KV */
    LLMGW_PROBE_OPENAI_MODELS,   /* GET /v1/models: model ids */
    LLMGW_PROBE_KINDS
} llmgw_probe_kind_t;

/* The path to GET for a kind ("/api/ps", ...); NULL for no such kind. */
const char *llmgw_probe_path(llmgw_probe_kind_t kind);
/* Its name for configuration and logs ("ollama-ps", ...). */
const char *llmgw_probe_name(llmgw_probe_kind_t kind);

/* The probes that fit a backend: "ollama" (ps, tags), "llamacpp" (health,
 * slots), "vllm" (metrics, models), "openai" (models). Fills kinds (room
 * for LLMGW_PROBE_SET_MAX) and returns how many, 0 for an unknown name. */
#define LLMGW_PROBE_SET_MAX 2
int llmgw_probe_set(const char *name, llmgw_probe_kind_t *kinds);

/* Bounds on what a probe's answer may hold; beyond them it is refused. */
#define LLMGW_PROBE_MAX_BODY (4 * 1024 * 1024)    /* a JSON answer */
#define LLMGW_PROBE_MAX_METRICS (8 * 1024 * 1024) /* Prometheus text */
#define LLMGW_PROBE_MAX_MODELS 1024
#define LLMGW_PROBE_MAX_SLOTS 4096
/* A longer model name is left out (counted in models_skipped): it can
 * be no route's model. */
#define LLMGW_PROBE_MAX_NAME 512

/* What a result establishes. Stored, these facts replace the ones the
 * member had and leave the others as they were. */
#define LLMGW_PK_STATE 0x01     /* the member's state */
#define LLMGW_PK_LOADED 0x02    /* which models are loaded (complete) */
#define LLMGW_PK_AVAILABLE 0x04 /* which models it has at all */
#define LLMGW_PK_SLOTS 0x08     /* slots_total, slots_busy */
#define LLMGW_PK_QUEUE 0x10     /* running, waiting */
#define LLMGW_PK_KV 0x20        /* kv_usage */

/* What a result says of one model. */
#define LLMGW_PM_LOADED 0x01
#define LLMGW_PM_AVAILABLE 0x02
#define LLMGW_PM_LOADING 0x04

typedef struct {
    const char *name;      /* valid UTF-8, no NUL, from the pool */
    unsigned flags;        /* LLMGW_PM_* */
    apr_int64_t size;      /* bytes; -1 unknown */
    apr_int64_t size_vram; /* bytes; -1 unknown */
    apr_time_t expires_at; /* Ollama: when it unloads; 0 unknown */
    apr_int64_t running;   /* vLLM: requests running; -1 unknown */
    apr_int64_t waiting;   /* vLLM: requests queued; -1 unknown */
    double kv_usage;       /* vLLM: 0..1; -1 unknown */
} llmgw_probe_model_t;

typedef struct {
    llmgw_probe_kind_t kind;
    int http_status;            /* 0: no answer at all */
    int ok;                     /* 1: the answer was read as meant */
    llmgw_hstate_t state;       /* READY, LOADING, BUSY or DOWN */
    unsigned knows;             /* LLMGW_PK_*; 0 when not ok */
    apr_int64_t slots_total;    /* -1 unknown */
    apr_int64_t slots_busy;     /* -1 unknown */
    apr_int64_t running;        /* summed over models; -1 unknown */
    apr_int64_t waiting;        /* summed over models; -1 unknown */
    double kv_usage;            /* the highest of all engines; -1 */
    apr_array_header_t *models; /* llmgw_probe_model_t, answer order */
    apr_size_t models_skipped;  /* names over LLMGW_PROBE_MAX_NAME */
    const char *why;            /* static text: why not ok, why not READY */
} llmgw_probe_t;

/* Reads the answer of a probe of that kind: its HTTP status and body.
 * Never NULL. A status or body the kind does not expect gives ok 0 and
 * state DOWN with why set; llama.cpp's 503 "Loading model" gives
 * LOADING, a 429 BUSY. Allocates from p only. */
llmgw_probe_t *llmgw_probe_parse(apr_pool_t *p, llmgw_probe_kind_t kind,
                                 int http_status, const char *body,
                                 apr_size_t len);

/* A probe that got no answer (refused, reset, timed out): DOWN, why. */
llmgw_probe_t *llmgw_probe_unreachable(apr_pool_t *p, llmgw_probe_kind_t kind,
                                       const char *why);

/* RFC 3339 text (as Ollama's expires_at) to a time; 0 on success, -1 when
 * it is not such a text. Any year from 1 to 9999. */
int llmgw_probe_rfc3339(const char *s, apr_size_t len, apr_time_t *out);

#endif
