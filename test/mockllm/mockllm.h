/* mockllm.h: declarations shared by the files of mockllm, the emulated
 * OpenAI-dialect inference server used to test mod_llm_gateway. */

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
#define MOCK_MAX_BODY       ((size_t)16 * 1024 * 1024)
#define MOCK_MAX_TOKENS     131072L
#define MOCK_MAX_TTFT_MS    3600000L
#define MOCK_MAX_TPS        1000000.0
#define MOCK_MAX_EMBED_DIM  4096L
#define MOCK_MAX_INPUTS     2048
#define MOCK_HANG_SECONDS   600

/* Serialization flags for everything we send: compact like vLLM's pydantic
 * output, and "a/b" model names must not come out as "a\/b". */
#define MOCK_JSON_OUT (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

typedef enum {
    MOCK_FAULT_NONE = 0,
    MOCK_FAULT_500,
    MOCK_FAULT_HANG,
    MOCK_FAULT_CUT,
    MOCK_FAULT_RESET
} mock_fault_t;

typedef enum {
    MOCK_EP_CHAT = 0,
    MOCK_EP_COMPLETIONS,
    MOCK_EP_EMBEDDINGS
} mock_endpoint_t;

typedef struct {
    const char *host;
    unsigned int port;
    const char *name;
    char *fingerprint;          /* "mock-NAME" */
    char **models;              /* NULL when --models was not given */
    size_t nmodels;
    double tps;
    long ttft_ms;
    long tokens;
    long embed_dim;
    mock_fault_t fault;
    int quiet;
} mock_config_t;

/* The knobs of one generation request once X-Mock-* headers are applied. */
typedef struct {
    mock_fault_t fault;
    double tps;
    long ttft_ms;
    long tokens;
    int fd;                     /* client socket, to notice it going away */
} mock_knobs_t;

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

/* gen.c */
#define MOCK_FNV_INIT 0xcbf29ce484222325ULL
uint64_t mock_fnv1a(uint64_t h, const void *data, size_t len);
uint64_t mock_rng_init(uint64_t hash);
uint64_t mock_rng_next(uint64_t *state);
const char *mock_next_word(uint64_t *state, size_t *len);
long mock_count_words(const char *s, size_t len);
void mock_embedding(const char *text, size_t len, double *out, size_t dim);
void mock_base64(mock_buf_t *b, const unsigned char *data, size_t len);

/* openai.c */
enum MHD_Result mock_generate(struct MHD_Connection *conn,
                              mock_endpoint_t ep, const char *body,
                              size_t len, const mock_knobs_t *knobs);

#endif /* MOCKLLM_H */
