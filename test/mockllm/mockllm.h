/* mockllm.h: declarations shared by the files of mockllm, the emulated
 * OpenAI/Ollama/llama.cpp inference server used to test mod_llm_gateway. */

#ifndef MOCKLLM_H
#define MOCKLLM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <json-c/json.h>
#include <microhttpd.h>

/* Limits keep a misbehaving client (or a typo in a test) from turning the
 * mock into a memory or CPU hog; they are documented in README.md. */
#define MOCK_MAX_BODY ((size_t)16 * 1024 * 1024)
#define MOCK_MAX_TOKENS 131072L
#define MOCK_MAX_TTFT_MS 3600000L
#define MOCK_MAX_TPS 1000000.0
#define MOCK_MAX_EMBED_DIM 4096L
#define MOCK_MAX_INPUTS 2048
#define MOCK_HANG_SECONDS 600
#define MOCK_MAX_LOADED 1024L
#define MOCK_MAX_SLOTS 256L
#define MOCK_MAX_THREADS 256L
/* Without --max-loaded the set of loaded models is still bounded, so a
 * client inventing model names cannot grow it forever. */
#define MOCK_LOADED_CAP 256

/* The canned tool call: three "tokens" (the call, then the arguments in
 * two pieces when streamed the OpenAI way). */
#define MOCK_TOOL_TOKENS 3L
#define MOCK_TOOL_ARGS "{\"city\":\"Paris\"}"
#define MOCK_TOOL_ARGS_A "{\"city\":"
#define MOCK_TOOL_ARGS_B "\"Paris\"}"
#define MOCK_TOOL_ID "call_0"

/* What /api/tags, /api/ps, /api/show and /slots claim about every model. */
#define MOCK_MODEL_SIZE 776000000LL
#define MOCK_MODEL_CTX 4096
#define MOCK_MODIFIED_AT 1700000000
#define MOCK_KEEP_ALIVE_S 300

/* Serialization flags for everything we send: compact like vLLM's pydantic
 * output, and "a/b" model names must not come out as "a\/b". */
#define MOCK_JSON_OUT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

typedef enum {
    MOCK_FAULT_NONE = 0,
    MOCK_FAULT_500,
    MOCK_FAULT_429,
    MOCK_FAULT_HANG,
    MOCK_FAULT_CUT,
    MOCK_FAULT_RESET,
    MOCK_FAULT_NODONE,    /* OpenAI streams end cleanly, without [DONE] */
    MOCK_FAULT_BADJSON,   /* a plain 200 whose JSON is cut, sent whole */
    MOCK_FAULT_CUT_FIRST, /* a stream cut before its first content */
    MOCK_FAULT_GARBAGE    /* an answer that is not JSON */
} mock_fault_t;

typedef enum {
    MOCK_EP_CHAT = 0,
    MOCK_EP_COMPLETIONS,
    MOCK_EP_EMBEDDINGS
} mock_endpoint_t;

typedef enum {
    MOCK_FLAVOR_OPENAI = 0,
    MOCK_FLAVOR_LLAMACPP,
    MOCK_FLAVOR_VLLM
} mock_flavor_t;

typedef enum {
    MOCK_OL_CHAT = 0,
    MOCK_OL_GENERATE,
    MOCK_OL_EMBED,
    MOCK_OL_EMBEDDINGS,
    MOCK_OL_SHOW,
    MOCK_OL_TAGS,
    MOCK_OL_PS,
    MOCK_OL_VERSION
} mock_ollama_ep_t;

typedef struct {
    const char *host;
    unsigned int port;
    const char *name;
    char *fingerprint; /* "mock-NAME" */
    char **models;     /* NULL when --models was not given */
    size_t nmodels;
    double tps;
    long ttft_ms;
    long tokens;
    long embed_dim;
    mock_fault_t fault;
    int quiet;
    mock_flavor_t flavor;
    long load_ms;
    long max_loaded; /* 0: no limit but MOCK_LOADED_CAP */
    char **preload;
    size_t npreload;
    long slots; /* llama.cpp slots; vLLM's batch */
    int slots_given;
    long threads; /* 0: one per connection; else a pool */
} mock_config_t;

/* The knobs of one generation request once X-Mock-* headers are applied. */
typedef struct {
    mock_fault_t fault;
    double tps;
    long ttft_ms;
    long tokens;
    long pause_ms; /* a stream's stall after its first piece; 0: none */
    int fd;        /* client socket, to notice it going away */
} mock_knobs_t;

/* What a generation holds while it runs: the llama.cpp slot (vLLM's
 * place in its batch), whether it had to wait for its model to load (for
 * load_duration), and the model it counts as running for /metrics. */
typedef struct {
    int slot; /* -1: none */
    int cold;
    long metric; /* vLLM flavor: its model's gauges; -1 */
} mock_job_t;

/* Nominal timings of one generation, from the knobs rather than the
 * clock, so that answers stay deterministic. */
typedef struct {
    long prompt_n;
    long predicted_n;
    double prompt_ms;
    double predicted_ms;
    double load_ms;
} mock_timing_t;

/* A growable byte buffer; "failed" latches the first allocation failure so
 * builders can append blindly and check once at the end. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int failed;
} mock_buf_t;

extern mock_config_t mock_cfg;

/* mockllm.c */
int mock_stopping(void);
int mock_sleep_until(const struct timespec *deadline, int fd);
void mock_deadline(struct timespec *out, const struct timespec *base,
                   double ms);
int mock_model_known(const char *model, size_t len);
const char *const *mock_model_names(size_t *n);
void mock_add_headers(struct MHD_Response *resp, const char *ctype);
enum MHD_Result mock_reply(struct MHD_Connection *conn, unsigned int status,
                           const char *ctype, const char *body, size_t len,
                           const char *allow);
enum MHD_Result mock_reply_json(struct MHD_Connection *conn,
                                unsigned int status, struct json_object *obj);
enum MHD_Result mock_reply_error(struct MHD_Connection *conn,
                                 unsigned int status, const char *message,
                                 const char *type, const char *param,
                                 const char *code, const char *allow);

void mock_buf_put(mock_buf_t *b, const void *data, size_t len);
void mock_buf_puts(mock_buf_t *b, const char *s);
void mock_buf_printf(mock_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mock_buf_free(mock_buf_t *b);
char *mock_json_quote(const char *s, size_t len);
void mock_buf_jstr(mock_buf_t *b, const char *s, size_t len);
int mock_parse_body(const char *body, size_t len, struct json_object **out,
                    char *why, size_t whylen);
struct json_object *mock_member(struct json_object *obj, const char *key);
/* *out = the boolean member key of obj, if there is one (else *out is
 * left as it is); -1 when the member is there and not a boolean. */
int mock_member_bool(struct json_object *obj, const char *key, int *out);
/* A token limit as llama.cpp's n_predict and Ollama's num_predict take it
 * (v, NULL when absent): *limited and *n = v when it is 0 or more; when
 * absent or negative ("until the model stops"), *limited 0 and *n =
 * dflt. -1 when v is not an integer of at most MOCK_MAX_TOKENS. */
int mock_token_limit(struct json_object *v, long dflt, long *n, int *limited);
int mock_peer_gone(int fd);
int mock_simulate_latency(double ms, int fd);
/* A whole (non-stream) answer's generation: its time passes (k's first
 * token delay, then n tokens at k's pace), the job ends, and text, unless
 * NULL, gets the n tokens. -1 when the client went away or memory ran
 * out (text is then freed). */
int mock_whole_answer(const mock_knobs_t *k, mock_job_t *job, uint64_t hash,
                      long n, int json_mode, mock_buf_t *text);
void mock_rfc3339(char *out, size_t size, const struct timespec *ts);
void mock_rfc3339_now(char *out, size_t size);
enum MHD_Result mock_reply_ollama_error(struct MHD_Connection *conn,
                                        unsigned int status,
                                        const char *message,
                                        const char *allow);
enum MHD_Result mock_reply_body(struct MHD_Connection *conn, const char *ctype,
                                const char *body, size_t len,
                                const mock_knobs_t *k);
enum MHD_Result mock_reply_json_k(struct MHD_Connection *conn,
                                  struct json_object *obj,
                                  const mock_knobs_t *k);
/* b (JSON text) as mock_reply_body sends a 200, then freed; MHD_NO when
 * b ran out of memory. */
enum MHD_Result mock_reply_json_buf(struct MHD_Connection *conn, mock_buf_t *b,
                                    const mock_knobs_t *k);

/* gen.c */
#define MOCK_FNV_INIT 0xcbf29ce484222325ULL
uint64_t mock_fnv1a(uint64_t h, const void *data, size_t len);
uint64_t mock_rng_init(uint64_t hash);
uint64_t mock_rng_next(uint64_t *state);
const char *mock_next_word(uint64_t *state, size_t *len);
long mock_count_words(const char *s, size_t len);
void mock_embedding(const char *text, size_t len, double *out, size_t dim);
void mock_base64(mock_buf_t *b, const unsigned char *data, size_t len);
uint64_t mock_request_hash(const char *model, size_t model_len,
                           struct json_object *payload,
                           struct json_object *seed);
int mock_count_texts(struct json_object *v, long *words, size_t *ntexts);
long mock_count_messages(struct json_object *messages);
long mock_pieces(long n, int json_mode);
void mock_piece(mock_buf_t *b, uint64_t *rng, long k, long n, int json_mode);
void mock_text(mock_buf_t *b, uint64_t hash, long n, int json_mode);
const char *mock_tool_trigger(struct json_object *req,
                              struct json_object *messages, size_t *len);
void mock_digest(char out[65], const char *name, size_t len);

/* mockllm.c: paced event streams (SSE or NDJSON) shared by the dialects. */
typedef struct mock_stream mock_stream_t;

typedef struct {
    /* Appends the event sent before the pieces (OpenAI's role chunk);
     * NULL for none. */
    void (*head)(mock_stream_t *s);
    /* Appends the event carrying piece k (0-based). */
    void (*piece)(mock_stream_t *s, long k);
    /* Appends tail event i (0, 1, ...) after the last piece; 0 when there
     * are no more. */
    int (*tail)(mock_stream_t *s, int i);
    /* Frees ctx. */
    void (*free)(void *ctx);
} mock_stream_ops_t;

struct mock_stream {
    const mock_stream_ops_t *ops;
    void *ctx;     /* the dialect's own state */
    mock_buf_t ev; /* event being sent */
    size_t off;
    int phase;
    int tail_i;
    long npieces;
    long emitted;
    long cut_after; /* -1: no cut */
    int garbage;    /* an SSE event that is not JSON before the pieces */
    struct timespec t0;
    double tps;
    long ttft_ms;
    long pause_ms; /* still to stall after the first piece */
    int fd;
    mock_job_t job; /* released at the end, or when freed */
};

/* A stream that could not be set up: the job ends, ctx (NULL: none yet)
 * is freed with ops->free. Returns MHD_NO. */
enum MHD_Result mock_stream_abort(const mock_stream_ops_t *ops, void *ctx,
                                  mock_job_t *job);
enum MHD_Result mock_stream_start(struct MHD_Connection *conn,
                                  const mock_stream_ops_t *ops, void *ctx,
                                  long npieces, const mock_knobs_t *k,
                                  const mock_job_t *job, const char *ctype);
enum MHD_Result mock_cut_reply(struct MHD_Connection *conn, const char *ctype,
                               const char *body, size_t len);

/* mockllm.c: which models are "loaded", cold-load delays, llama.cpp slots. */
int mock_models_init(void);
void mock_models_free(void);
int mock_job_begin(mock_job_t *job, const char *model, size_t len,
                   const mock_knobs_t *k);
void mock_job_end(mock_job_t *job);
int mock_model_unload(const char *model, size_t len);
int mock_loading(void);
void mock_models_stats(struct json_object *o);
void mock_models_reset(void);
struct json_object *mock_ps_json(void);
struct json_object *mock_slots_json(void);
void mock_metrics_text(mock_buf_t *b);
void mock_timing(mock_timing_t *t, long prompt_n, long predicted_n,
                 const mock_knobs_t *k, const mock_job_t *job);

/* openai.c: OpenAI */
enum MHD_Result mock_generate(struct MHD_Connection *conn, mock_endpoint_t ep,
                              const char *body, size_t len,
                              const mock_knobs_t *knobs);

/* openai.c: Ollama */
struct json_object *mock_ollama_model(const char *name, size_t len);
enum MHD_Result mock_ollama(struct MHD_Connection *conn, mock_ollama_ep_t ep,
                            const char *body, size_t len,
                            const mock_knobs_t *knobs);

/* openai.c: vLLM */
enum MHD_Result mock_vllm_metrics(struct MHD_Connection *conn);

/* openai.c: llama.cpp */
enum MHD_Result mock_llama_health(struct MHD_Connection *conn);
enum MHD_Result mock_llama_slots(struct MHD_Connection *conn);
enum MHD_Result mock_llama_completion(struct MHD_Connection *conn,
                                      const char *body, size_t len,
                                      const mock_knobs_t *knobs);
void mock_timings_text(mock_buf_t *b, const mock_timing_t *t);
struct json_object *mock_timings_json(const mock_timing_t *t);

#endif /* MOCKLLM_H */
