/* mockllm.c: CLI, HTTP daemon, routing, faults, paced streams, loaded
 * models and introspection of mockllm, mod_llm_gateway's emulated backend. */

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mockllm.h"

#define CONNECTION_LIMIT 2000
#define MAX_STAT_PATHS 256
#define OTHER_PATHS "(other)"
/* Spelled out: MHD renamed its constant for 413 between releases. */
#define HTTP_TOO_LARGE 413

typedef enum {
    R_NONE = 0,
    R_HEALTH,
    R_MODELS,
    R_CHAT,
    R_COMPLETIONS,
    R_EMBEDDINGS,
    R_STATS,
    R_RESET,
    R_LAST,
    R_SLOTS,
    R_LLAMA_COMPLETION,
    R_METRICS,
    R_OLLAMA, /* the Ollama endpoint is in .ollama */
    R_ROOT    /* what Ollama answers on / */
} route_t;

/* Route flags. */
#define RF_POST 0x01  /* POST only; else GET and HEAD */
#define RF_GEN 0x02   /* a generation: counted, recorded */
#define RF_BODY 0x04  /* the body is kept */
#define RF_FAULT 0x08 /* X-Mock-* headers and faults apply */
#define RF_LLAMA 0x10 /* only with --flavor llamacpp */
#define RF_VLLM 0x20  /* only with --flavor vllm */

#define RF_GENERATION (RF_POST | RF_GEN | RF_BODY | RF_FAULT)

static const struct {
    const char *path;
    route_t route;
    mock_ollama_ep_t ollama;
    int flags;
} routes[] = {
    { "/", R_ROOT, 0, 0 },
    { "/health", R_HEALTH, 0, 0 },
    { "/v1/models", R_MODELS, 0, 0 },
    { "/v1/chat/completions", R_CHAT, 0, RF_GENERATION },
    { "/v1/completions", R_COMPLETIONS, 0, RF_GENERATION },
    { "/v1/embeddings", R_EMBEDDINGS, 0, RF_GENERATION },
    { "/mock/stats", R_STATS, 0, 0 },
    { "/mock/reset", R_RESET, 0, RF_POST },
    { "/mock/last", R_LAST, 0, 0 },
    { "/slots", R_SLOTS, 0, RF_LLAMA },
    { "/completion", R_LLAMA_COMPLETION, 0, RF_GENERATION | RF_LLAMA },
    { "/metrics", R_METRICS, 0, RF_VLLM },
    { "/api/chat", R_OLLAMA, MOCK_OL_CHAT, RF_GENERATION },
    { "/api/generate", R_OLLAMA, MOCK_OL_GENERATE, RF_GENERATION },
    { "/api/embed", R_OLLAMA, MOCK_OL_EMBED, RF_GENERATION },
    { "/api/embeddings", R_OLLAMA, MOCK_OL_EMBEDDINGS, RF_GENERATION },
    { "/api/show", R_OLLAMA, MOCK_OL_SHOW, RF_POST | RF_BODY | RF_FAULT },
    { "/api/tags", R_OLLAMA, MOCK_OL_TAGS, RF_FAULT },
    { "/api/ps", R_OLLAMA, MOCK_OL_PS, RF_FAULT },
    { "/api/version", R_OLLAMA, MOCK_OL_VERSION, RF_FAULT },
};

/* Per-request state, from the first access-handler call to the
 * completion notification. */
typedef struct {
    route_t route;
    mock_ollama_ep_t ollama;
    int flags;
    int ollama_errors; /* under /api/: Ollama's error shape */
    int allowed;
    int buffering; /* keep the body */
    int too_large;
    int answered;
    char *body;
    size_t len;
    size_t cap;
} req_t;

mock_config_t mock_cfg;

static atomic_int stopping;

/* Counters and the last generation request live under one lock; they are
 * touched once or twice per request, far from any hot loop. */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t stat_requests;
static uint64_t stat_generations;
static struct {
    char *path;
    uint64_t n;
} stat_paths[MAX_STAT_PATHS + 1];
static size_t stat_npaths;
static char *last_path;
static char *last_headers; /* JSON object text */
static char *last_body;
static size_t last_body_len;

/* ---- small utilities -------------------------------------------------- */

static void buf_grow(mock_buf_t *b, size_t extra)
{
    size_t cap;
    char *p;

    if (b->failed) {
        return;
    }
    if (extra > SIZE_MAX / 2 - b->len) {
        b->failed = 1;
        return;
    }
    if (b->len + extra + 1 <= b->cap) {
        return;
    }
    cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = 1;
        return;
    }
    b->data = p;
    b->cap = cap;
}

void mock_buf_put(mock_buf_t *b, const void *data, size_t len)
{
    buf_grow(b, len);
    if (b->failed) {
        return;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void mock_buf_puts(mock_buf_t *b, const char *s)
{
    mock_buf_put(b, s, strlen(s));
}

void mock_buf_printf(mock_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    buf_grow(b, 128);
    if (b->failed) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        buf_grow(b, (size_t)n);
        if (b->failed) {
            return;
        }
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void mock_buf_free(mock_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* A JSON string literal, quotes included, for hand-built JSON (the SSE
 * chunks): json-c does the escaping so a hostile model name stays inert. */
char *mock_json_quote(const char *s, size_t len)
{
    struct json_object *o = json_object_new_string_len(s, (int)len);
    const char *t;
    char *copy = NULL;
    size_t tl = 0;

    if (o == NULL) {
        return NULL;
    }
    t = json_object_to_json_string_length(o, MOCK_JSON_OUT, &tl);
    if (t != NULL && (copy = malloc(tl + 1)) != NULL) {
        memcpy(copy, t, tl + 1);
    }
    json_object_put(o);
    return copy;
}

/* Appends a JSON string literal for hand-built events; bytes >= 0x80 go
 * through unchanged, as json-c does. */
void mock_buf_jstr(mock_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;

    mock_buf_put(b, "\"", 1);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        mock_buf_put(b, s + run, i - run);
        run = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            mock_buf_put(b, esc, 6);
            continue;
        }
        mock_buf_put(b, esc, 2);
    }
    mock_buf_put(b, s + run, len - run);
    mock_buf_put(b, "\"", 1);
}

/* Strict, so that what vLLM's JSON parser refuses we refuse too. */
/* 0 and *out set (NULL for a literal null) on success, -1 and why set on
 * failure. */
int mock_parse_body(const char *body, size_t len, struct json_object **out,
                    char *why, size_t whylen)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *obj;
    enum json_tokener_error err;
    size_t end;

    *out = NULL;
    if (tok == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    /* The body is NUL-terminated; passing the NUL tells json-c the input
     * is complete, so a bare number or a truncated body is an error. */
    obj = json_tokener_parse_ex(tok, body, (int)len + 1);
    err = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (err != json_tokener_success) {
        json_object_put(obj);
        snprintf(why, whylen, "%s", json_tokener_error_desc(err));
        return -1;
    }
    /* An embedded NUL stops json-c early; it must not hide trailing junk. */
    for (; end < len; end++) {
        char c = body[end];

        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            json_object_put(obj);
            snprintf(why, whylen, "unexpected data after the JSON value");
            return -1;
        }
    }
    *out = obj;
    return 0;
}

struct json_object *mock_member(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;

    if (!json_object_is_type(obj, json_type_object)
        || !json_object_object_get_ex(obj, key, &v)) {
        return NULL;
    }
    return v; /* NULL for an explicit null as well */
}

int mock_member_bool(struct json_object *obj, const char *key, int *out)
{
    struct json_object *v = mock_member(obj, key);

    if (v == NULL) {
        return 0;
    }
    if (!json_object_is_type(v, json_type_boolean)) {
        return -1;
    }
    *out = json_object_get_boolean(v);
    return 0;
}

int mock_token_limit(struct json_object *v, long dflt, long *n, int *limited)
{
    int64_t x;

    *n = dflt;
    *limited = 0;
    if (v == NULL) {
        return 0;
    }
    x = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || x > MOCK_MAX_TOKENS) {
        return -1;
    }
    if (x >= 0) {
        *n = (long)x;
        *limited = 1;
    }
    return 0;
}

/* RFC 3339 in UTC with microseconds, as Ollama's created_at. */
void mock_rfc3339(char *out, size_t size, const struct timespec *ts)
{
    struct tm tm;
    time_t t = ts->tv_sec;
    char base[32];

    if (gmtime_r(&t, &tm) == NULL
        || strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(out, size, "1970-01-01T00:00:00Z");
        return;
    }
    snprintf(out, size, "%s.%06ldZ", base, ts->tv_nsec / 1000);
}

void mock_rfc3339_now(char *out, size_t size)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    mock_rfc3339(out, size, &ts);
}

int mock_stopping(void)
{
    return atomic_load(&stopping);
}

void mock_deadline(struct timespec *out, const struct timespec *base,
                   double ms)
{
    int64_t sec, nsec;

    if (!(ms > 0.0)) {
        ms = 0.0;
    }
    if (ms > 1e12) {
        ms = 1e12;
    }
    sec = (int64_t)(ms / 1000.0);
    nsec = (int64_t)((ms - (double)sec * 1000.0) * 1e6) + base->tv_nsec;
    out->tv_sec = base->tv_sec + (time_t)sec;
    while (nsec >= 1000000000) {
        nsec -= 1000000000;
        out->tv_sec++;
    }
    out->tv_nsec = (long)nsec;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec
           || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* A client that hung up should free its thread now rather than after a
 * long simulated generation or a 600 s hang. */
int mock_peer_gone(int fd)
{
    char c;
    ssize_t r;

    if (fd < 0) {
        return 0;
    }
    r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0) {
        return 1;
    }
    return r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

/* Sleeps in steps of at most 100 ms so that neither shutdown nor a
 * vanished client waits on us.  0: deadline reached, -1: give up. */
int mock_sleep_until(const struct timespec *deadline, int fd)
{
    for (;;) {
        struct timespec now, step;

        if (mock_stopping() || mock_peer_gone(fd)) {
            return -1;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!ts_before(&now, deadline)) {
            return 0;
        }
        mock_deadline(&step, &now, 100.0);
        if (ts_before(deadline, &step)) {
            step = *deadline;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &step, NULL)
               == EINTR) {
        }
    }
}

/* Simulated generation time, in the connection's own thread, so a slow
 * backend looks slow without tying up anything shared. */
int mock_simulate_latency(double ms, int fd)
{
    struct timespec now, deadline;

    if (ms <= 0.0) {
        return 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    mock_deadline(&deadline, &now, ms);
    return mock_sleep_until(&deadline, fd);
}

int mock_whole_answer(const mock_knobs_t *k, mock_job_t *job, uint64_t hash,
                      long n, int json_mode, mock_buf_t *text)
{
    int gone = mock_simulate_latency(
        k->ttft_ms + (k->tps > 0.0 ? (double)n * 1000.0 / k->tps : 0.0),
        k->fd);

    mock_job_end(job);
    if (gone != 0) {
        return -1;
    }
    if (text != NULL) {
        mock_text(text, hash, n, json_mode);
        if (text->failed) {
            mock_buf_free(text);
            return -1;
        }
    }
    return 0;
}

int mock_model_known(const char *model, size_t len)
{
    size_t i;

    if (mock_cfg.models == NULL) {
        return 1;
    }
    for (i = 0; i < mock_cfg.nmodels; i++) {
        if (strlen(mock_cfg.models[i]) == len
            && memcmp(mock_cfg.models[i], model, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- responses ---------------------------------------------------------- */

/* How long the request being answered waited for its model to load, for
 * its answer's X-Mock-Load-Ms (build/bench's switch overhead); -1: not a
 * generation. Per thread: a request waits and is answered on its
 * connection's thread. */
static __thread double load_waited_ms = -1.0;

void mock_add_headers(struct MHD_Response *resp, const char *ctype)
{
    MHD_add_response_header(resp, "X-Mock-Backend", mock_cfg.name);
    if (load_waited_ms >= 0.0) {
        char v[32];

        snprintf(v, sizeof(v), "%.1f", load_waited_ms);
        MHD_add_response_header(resp, "X-Mock-Load-Ms", v);
        load_waited_ms = -1.0;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
}

enum MHD_Result mock_reply(struct MHD_Connection *conn, unsigned int status,
                           const char *ctype, const char *body, size_t len,
                           const char *allow)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(len, (void *)body,
                                           MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    mock_add_headers(resp, ctype);
    if (allow != NULL) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Sends obj as JSON, then releases it: with k, a 200 that honours k's
 * "cut" fault (mock_reply_body); without, status and allow as mock_reply
 * takes them. */
static enum MHD_Result reply_json_obj(struct MHD_Connection *conn,
                                      unsigned int status,
                                      struct json_object *obj,
                                      const char *allow, const mock_knobs_t *k)
{
    enum MHD_Result ret = MHD_NO;
    const char *s;
    size_t len = 0;

    if (obj == NULL) {
        return MHD_NO;
    }
    s = json_object_to_json_string_length(obj, MOCK_JSON_OUT, &len);
    if (s != NULL) {
        ret = k != NULL ? mock_reply_body(conn, "application/json", s, len, k)
                        : mock_reply(conn, status, "application/json", s, len,
                                     allow);
    }
    json_object_put(obj);
    return ret;
}

static enum MHD_Result reply_json_allow(struct MHD_Connection *conn,
                                        unsigned int status,
                                        struct json_object *obj,
                                        const char *allow)
{
    return reply_json_obj(conn, status, obj, allow, NULL);
}

enum MHD_Result mock_reply_json(struct MHD_Connection *conn,
                                unsigned int status, struct json_object *obj)
{
    return reply_json_allow(conn, status, obj, NULL);
}

enum MHD_Result mock_reply_error(struct MHD_Connection *conn,
                                 unsigned int status, const char *message,
                                 const char *type, const char *param,
                                 const char *code, const char *allow)
{
    struct json_object *o = json_object_new_object();
    struct json_object *e = json_object_new_object();

    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(e, "type", json_object_new_string(type));
    json_object_object_add(e, "param",
                           param ? json_object_new_string(param) : NULL);
    json_object_object_add(e, "code",
                           code ? json_object_new_string(code) : NULL);
    json_object_object_add(o, "error", e);
    return reply_json_allow(conn, status, o, allow);
}

/* Ollama's error shape: just {"error":"..."}. */
enum MHD_Result mock_reply_ollama_error(struct MHD_Connection *conn,
                                        unsigned int status,
                                        const char *message, const char *allow)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "error", json_object_new_string(message));
    return reply_json_allow(conn, status, o, allow);
}

/* A 200 that honours the "cut" fault: then only half of it goes out. */
enum MHD_Result mock_reply_body(struct MHD_Connection *conn, const char *ctype,
                                const char *body, size_t len,
                                const mock_knobs_t *k)
{
    if (k != NULL
        && (k->fault == MOCK_FAULT_CUT || k->fault == MOCK_FAULT_CUT_FIRST)) {
        return mock_cut_reply(conn, ctype, body, len);
    }
    if (k != NULL && k->fault == MOCK_FAULT_BADJSON) {
        /* A server that broke while writing its JSON but ended the HTTP
         * body cleanly: the first half, as a whole 200. */
        return mock_reply(conn, MHD_HTTP_OK, ctype, body, len / 2, NULL);
    }
    if (k != NULL && k->fault == MOCK_FAULT_GARBAGE) {
        static const char garbage[] = "mock garbage, not JSON";

        return mock_reply(conn, MHD_HTTP_OK, ctype, garbage,
                          sizeof(garbage) - 1, NULL);
    }
    return mock_reply(conn, MHD_HTTP_OK, ctype, body, len, NULL);
}

enum MHD_Result mock_reply_json_k(struct MHD_Connection *conn,
                                  struct json_object *obj,
                                  const mock_knobs_t *k)
{
    return reply_json_obj(conn, MHD_HTTP_OK, obj, NULL, k);
}

enum MHD_Result mock_reply_json_buf(struct MHD_Connection *conn, mock_buf_t *b,
                                    const mock_knobs_t *k)
{
    enum MHD_Result ret = MHD_NO;

    if (!b->failed) {
        ret = mock_reply_body(conn, "application/json", b->data, b->len, k);
    }
    mock_buf_free(b);
    return ret;
}

/* ---- statistics and /mock/last ------------------------------------------ */

static void stats_count(const char *url, int generation)
{
    size_t i;

    if (strncmp(url, "/mock/", 6) == 0) {
        return;
    }
    pthread_mutex_lock(&stats_lock);
    stat_requests++;
    if (generation) {
        stat_generations++;
    }
    for (i = 0; i < stat_npaths; i++) {
        if (strcmp(stat_paths[i].path, url) == 0) {
            break;
        }
    }
    if (i == stat_npaths) {
        /* Bounded, so a scanner probing random URLs cannot grow us. */
        const char *p = stat_npaths < MAX_STAT_PATHS ? url : OTHER_PATHS;

        for (i = 0; i < stat_npaths; i++) {
            if (strcmp(stat_paths[i].path, p) == 0) {
                break;
            }
        }
        if (i == stat_npaths) {
            stat_paths[i].path = strdup(p);
            stat_paths[i].n = 0;
            if (stat_paths[i].path != NULL) {
                stat_npaths++;
            }
        }
    }
    if (i < stat_npaths) {
        stat_paths[i].n++;
    }
    pthread_mutex_unlock(&stats_lock);
}

/* Caller holds stats_lock. */
static void stats_clear_locked(void)
{
    size_t i;

    stat_requests = 0;
    stat_generations = 0;
    for (i = 0; i < stat_npaths; i++) {
        free(stat_paths[i].path);
        stat_paths[i].path = NULL;
    }
    stat_npaths = 0;
    free(last_path);
    free(last_headers);
    free(last_body);
    last_path = last_headers = last_body = NULL;
    last_body_len = 0;
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value)
{
    struct json_object *h = cls, *old = NULL;

    (void)kind;
    if (key == NULL) {
        return MHD_YES;
    }
    if (value == NULL) {
        value = "";
    }
    if (json_object_object_get_ex(h, key, &old) && old != NULL) {
        /* Repeated headers fold into one, as HTTP allows. */
        mock_buf_t b = { 0 };

        mock_buf_printf(&b, "%s, %s", json_object_get_string(old), value);
        if (!b.failed) {
            json_object_object_add(
                h, key, json_object_new_string_len(b.data, (int)b.len));
        }
        mock_buf_free(&b);
    }
    else {
        json_object_object_add(h, key, json_object_new_string(value));
    }
    return MHD_YES;
}

/* Keeps raw copies; the body is escaped only if /mock/last is asked for,
 * so benchmarks do not pay for it on every request. */
static void record_last(struct MHD_Connection *conn, const char *url,
                        const char *body, size_t len)
{
    struct json_object *h = json_object_new_object();
    char *path = strdup(url), *hdrs = NULL, *copy = malloc(len + 1);
    const char *s;
    size_t sl = 0;

    if (h != NULL) {
        MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, h);
        s = json_object_to_json_string_length(h, MOCK_JSON_OUT, &sl);
        if (s != NULL && (hdrs = malloc(sl + 1)) != NULL) {
            memcpy(hdrs, s, sl + 1);
        }
        json_object_put(h);
    }
    if (path == NULL || hdrs == NULL || copy == NULL) {
        free(path);
        free(hdrs);
        free(copy);
        return;
    }
    if (len != 0) {
        memcpy(copy, body, len);
    }
    copy[len] = '\0';

    pthread_mutex_lock(&stats_lock);
    free(last_path);
    free(last_headers);
    free(last_body);
    last_path = path;
    last_headers = hdrs;
    last_body = copy;
    last_body_len = len;
    pthread_mutex_unlock(&stats_lock);
}

static enum MHD_Result reply_last(struct MHD_Connection *conn)
{
    mock_buf_t b = { 0 };
    enum MHD_Result ret;
    char *qp, *qb;

    pthread_mutex_lock(&stats_lock);
    if (last_path == NULL) {
        pthread_mutex_unlock(&stats_lock);
        return mock_reply(conn, MHD_HTTP_OK, "application/json", "{}", 2,
                          NULL);
    }
    qp = mock_json_quote(last_path, strlen(last_path));
    qb = mock_json_quote(last_body, last_body_len);
    if (qp != NULL && qb != NULL) {
        mock_buf_printf(&b, "{\"path\":%s,\"headers\":%s,\"body\":%s}", qp,
                        last_headers, qb);
    }
    pthread_mutex_unlock(&stats_lock);
    free(qp);
    free(qb);
    if (b.data == NULL || b.failed) {
        mock_buf_free(&b);
        return MHD_NO;
    }
    ret =
        mock_reply(conn, MHD_HTTP_OK, "application/json", b.data, b.len, NULL);
    mock_buf_free(&b);
    return ret;
}

static enum MHD_Result reply_stats(struct MHD_Connection *conn)
{
    struct json_object *o = json_object_new_object();
    struct json_object *bp = json_object_new_object();
    size_t i;

    json_object_object_add(o, "name", json_object_new_string(mock_cfg.name));
    pthread_mutex_lock(&stats_lock);
    json_object_object_add(o, "requests",
                           json_object_new_int64((int64_t)stat_requests));
    json_object_object_add(o, "generations",
                           json_object_new_int64((int64_t)stat_generations));
    for (i = 0; i < stat_npaths; i++) {
        json_object_object_add(
            bp, stat_paths[i].path,
            json_object_new_int64((int64_t)stat_paths[i].n));
    }
    pthread_mutex_unlock(&stats_lock);
    json_object_object_add(o, "by_path", bp);
    mock_models_stats(o);
    return mock_reply_json(conn, MHD_HTTP_OK, o);
}

/* --models, or the two names listed when any model is accepted. */
const char *const *mock_model_names(size_t *n)
{
    static const char *const defaults[] = { "mock-small", "mock-large" };

    if (mock_cfg.models == NULL) {
        *n = 2;
        return defaults;
    }
    *n = mock_cfg.nmodels;
    return (const char *const *)mock_cfg.models;
}

static enum MHD_Result reply_models(struct MHD_Connection *conn)
{
    size_t n, i;
    const char *const *names = mock_model_names(&n);
    struct json_object *o = json_object_new_object();
    struct json_object *data = json_object_new_array();

    for (i = 0; i < n; i++) {
        struct json_object *m = json_object_new_object();

        json_object_object_add(m, "id", json_object_new_string(names[i]));
        json_object_object_add(m, "object", json_object_new_string("model"));
        json_object_object_add(m, "created",
                               json_object_new_int64(1700000000));
        json_object_object_add(m, "owned_by",
                               json_object_new_string("mockllm"));
        json_object_array_add(data, m);
    }
    json_object_object_add(o, "object", json_object_new_string("list"));
    json_object_object_add(o, "data", data);
    return mock_reply_json(conn, MHD_HTTP_OK, o);
}

/* ---- per-request knobs and faults --------------------------------------- */

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_tps(const char *s, double *out)
{
    char *end;
    double v;

    if (s == NULL || ((*s < '0' || *s > '9') && *s != '.')) {
        return -1;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0.0
        || v > MOCK_MAX_TPS) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_fault(const char *s, mock_fault_t *out)
{
    static const struct {
        const char *name;
        mock_fault_t fault;
    } faults[] = {
        { "none", MOCK_FAULT_NONE },
        { "500", MOCK_FAULT_500 },
        { "429", MOCK_FAULT_429 },
        { "hang", MOCK_FAULT_HANG },
        { "cut", MOCK_FAULT_CUT },
        { "reset", MOCK_FAULT_RESET },
        { "nodone", MOCK_FAULT_NODONE },
        { "badjson", MOCK_FAULT_BADJSON },
        { "cut-first", MOCK_FAULT_CUT_FIRST },
        { "garbage", MOCK_FAULT_GARBAGE },
    };
    size_t i;

    for (i = 0; s != NULL && i < sizeof(faults) / sizeof(faults[0]); i++) {
        if (strcasecmp(s, faults[i].name) == 0) {
            *out = faults[i].fault;
            return 0;
        }
    }
    return -1;
}

/* Returns the name of the first malformed X-Mock-* header, or NULL. */
static const char *get_knobs(struct MHD_Connection *conn, mock_knobs_t *k)
{
    const union MHD_ConnectionInfo *ci;
    const char *v;

    k->fault = mock_cfg.fault;
    k->tps = mock_cfg.tps;
    k->ttft_ms = mock_cfg.ttft_ms;
    k->tokens = mock_cfg.tokens;
    k->pause_ms = 0;
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    k->fd = ci != NULL ? ci->connect_fd : -1;

    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Mock-Fault");
    if (v != NULL && parse_fault(v, &k->fault) != 0) {
        return "X-Mock-Fault";
    }
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Mock-TTFT-Ms");
    if (v != NULL && parse_long(v, 0, MOCK_MAX_TTFT_MS, &k->ttft_ms) != 0) {
        return "X-Mock-TTFT-Ms";
    }
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Mock-TPS");
    if (v != NULL && parse_tps(v, &k->tps) != 0) {
        return "X-Mock-TPS";
    }
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Mock-Tokens");
    if (v != NULL && parse_long(v, 0, MOCK_MAX_TOKENS, &k->tokens) != 0) {
        return "X-Mock-Tokens";
    }
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Mock-Pause-Ms");
    if (v != NULL && parse_long(v, 0, MOCK_MAX_TTFT_MS, &k->pause_ms) != 0) {
        return "X-Mock-Pause-Ms";
    }
    return NULL;
}

/* An error in the shape of the dialect the path belongs to. */
static enum MHD_Result reply_err(struct MHD_Connection *conn, const req_t *rq,
                                 unsigned int status, const char *message,
                                 const char *type, const char *code,
                                 const char *allow)
{
    if (rq->ollama_errors) {
        return mock_reply_ollama_error(conn, status, message, allow);
    }
    return mock_reply_error(conn, status, message, type, NULL, code, allow);
}

/* Whether a body with this Content-Type is read as JSON, as FastAPI
 * (vLLM, most Python servers) decides: no Content-Type, or a media type
 * application/json or application/...+json. */
static int json_content_type(const char *ct)
{
    size_t n;

    if (ct == NULL) {
        return 1;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    n = strcspn(ct, "; \t");
    if (n < 12 || strncasecmp(ct, "application/", 12) != 0) {
        return 0;
    }
    return (n == 16 && strncasecmp(ct + 12, "json", 4) == 0)
           || (n > 17 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* FastAPI-based servers (the openai and vllm flavors) do not read a body
 * sent as another type (a curl -d without -H is form data): the request
 * fails validation. llama.cpp's server and Ollama read the body as JSON
 * whatever its type, and so do those flavors and /api/ here. */
static int refuses_body_type(struct MHD_Connection *conn, const req_t *rq)
{
    if (rq->route == R_OLLAMA || rq->route == R_LLAMA_COMPLETION
        || mock_cfg.flavor == MOCK_FLAVOR_LLAMACPP || !(rq->flags & RF_GEN)) {
        return 0;
    }
    return !json_content_type(MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE));
}

/* Everything the X-Mock-* headers and faults apply to: the generation
 * endpoints of every dialect, and all of /api/. */
static enum MHD_Result handle_faultable(struct MHD_Connection *conn,
                                        const char *url, req_t *rq)
{
    static const char empty[] = "";
    const char *body = rq->body ? rq->body : empty;
    const char *bad;
    struct timespec now, deadline;
    mock_endpoint_t ep;
    mock_knobs_t k;
    char msg[96];

    if (rq->too_large) {
        return reply_err(conn, rq, HTTP_TOO_LARGE,
                         "Request body too large (limit 16 MiB).",
                         "invalid_request_error", NULL, NULL);
    }
    if (rq->flags & RF_GEN) {
        record_last(conn, url, body, rq->len);
    }
    if (refuses_body_type(conn, rq)) {
        return reply_err(conn, rq, MHD_HTTP_BAD_REQUEST,
                         "Input should be a valid dictionary or object to "
                         "extract fields from: the body's Content-Type is "
                         "not application/json.",
                         "invalid_request_error", NULL, NULL);
    }
    bad = get_knobs(conn, &k);
    if (bad != NULL) {
        snprintf(msg, sizeof(msg), "Invalid value for header %s.", bad);
        return reply_err(conn, rq, MHD_HTTP_BAD_REQUEST, msg,
                         "invalid_request_error", NULL, NULL);
    }

    switch (k.fault) {
    case MOCK_FAULT_RESET:
        /* MHD_NO makes MHD drop the connection without a response. */
        return MHD_NO;
    case MOCK_FAULT_HANG:
        clock_gettime(CLOCK_MONOTONIC, &now);
        mock_deadline(&deadline, &now, MOCK_HANG_SECONDS * 1000.0);
        (void)mock_sleep_until(&deadline, k.fd);
        return MHD_NO;
    case MOCK_FAULT_500:
        return reply_err(conn, rq, MHD_HTTP_INTERNAL_SERVER_ERROR,
                         "mock internal error", "server_error", NULL, NULL);
    case MOCK_FAULT_429:
        /* What a rate-limited backend says (vLLM behind a limiter). */
        return reply_err(conn, rq, MHD_HTTP_TOO_MANY_REQUESTS,
                         "mock rate limit reached", "rate_limit_error", NULL,
                         NULL);
    default: break;
    }

    switch (rq->route) {
    case R_OLLAMA: return mock_ollama(conn, rq->ollama, body, rq->len, &k);
    case R_LLAMA_COMPLETION:
        return mock_llama_completion(conn, body, rq->len, &k);
    default: break;
    }
    ep = rq->route == R_CHAT          ? MOCK_EP_CHAT
         : rq->route == R_COMPLETIONS ? MOCK_EP_COMPLETIONS
                                      : MOCK_EP_EMBEDDINGS;
    return mock_generate(conn, ep, body, rq->len, &k);
}

/* ---- the access handler ------------------------------------------------- */

static int body_append(req_t *rq, const char *data, size_t n)
{
    if (rq->too_large) {
        return 0;
    }
    if (n > MOCK_MAX_BODY - rq->len) {
        /* Keep draining so the 413 goes out on a sane connection. */
        rq->too_large = 1;
        free(rq->body);
        rq->body = NULL;
        rq->len = rq->cap = 0;
        return 0;
    }
    if (rq->len + n + 1 > rq->cap) {
        size_t cap = rq->cap ? rq->cap : 4096;
        char *p;

        while (cap < rq->len + n + 1) {
            cap *= 2;
        }
        if (cap > MOCK_MAX_BODY + 1) {
            cap = MOCK_MAX_BODY + 1;
        }
        p = realloc(rq->body, cap);
        if (p == NULL) {
            return -1;
        }
        rq->body = p;
        rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
    rq->body[rq->len] = '\0';
    return 0;
}

static enum MHD_Result dispatch(struct MHD_Connection *conn, const char *url,
                                const char *method, req_t *rq)
{
    mock_buf_t m = { 0 };
    enum MHD_Result ret;

    if (rq->route == R_NONE) {
        mock_buf_printf(&m, "no such endpoint: %s", url);
        ret = reply_err(conn, rq, MHD_HTTP_NOT_FOUND,
                        m.failed ? "no such endpoint" : m.data,
                        "invalid_request_error", "unknown_endpoint", NULL);
        mock_buf_free(&m);
        return ret;
    }
    if (!rq->allowed) {
        mock_buf_printf(&m, "method %s not allowed for %s", method, url);
        ret = reply_err(conn, rq, MHD_HTTP_METHOD_NOT_ALLOWED,
                        m.failed ? "method not allowed" : m.data,
                        "invalid_request_error", "method_not_allowed",
                        (rq->flags & RF_POST) ? "POST" : "GET, HEAD");
        mock_buf_free(&m);
        return ret;
    }
    if (rq->flags & RF_FAULT) {
        return handle_faultable(conn, url, rq);
    }

    switch (rq->route) {
    case R_HEALTH:
        if (mock_cfg.flavor == MOCK_FLAVOR_LLAMACPP) {
            return mock_llama_health(conn);
        }
        if (mock_cfg.flavor == MOCK_FLAVOR_VLLM) {
            /* vLLM answers an empty 200, loaded model or not. */
            return mock_reply(conn, MHD_HTTP_OK, "text/plain", "", 0, NULL);
        }
        return mock_reply(conn, MHD_HTTP_OK, "application/json",
                          "{\"status\":\"ok\"}", 15, NULL);
    case R_SLOTS: return mock_llama_slots(conn);
    case R_METRICS: return mock_vllm_metrics(conn);
    case R_MODELS: return reply_models(conn);
    case R_ROOT:
        /* As Ollama, whose CLI asks this first (HEAD, then GET). */
        return mock_reply(conn, MHD_HTTP_OK, "text/plain; charset=utf-8",
                          "Ollama is running", 17, NULL);
    case R_STATS: return reply_stats(conn);
    case R_RESET:
        pthread_mutex_lock(&stats_lock);
        stats_clear_locked();
        pthread_mutex_unlock(&stats_lock);
        mock_models_reset();
        return mock_reply(conn, MHD_HTTP_OK, "application/json",
                          "{\"ok\":true}", 11, NULL);
    case R_LAST: return reply_last(conn);
    default: return MHD_NO; /* unreachable: every route is handled */
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    req_t *rq = *con_cls;
    size_t i;

    (void)cls;
    (void)version;
    if (rq == NULL) {
        const char *cl;
        long len;

        rq = calloc(1, sizeof(*rq));
        if (rq == NULL) {
            return MHD_NO;
        }
        *con_cls = rq;
        for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
            if (strcmp(url, routes[i].path) == 0) {
                if ((routes[i].flags & RF_LLAMA)
                    && mock_cfg.flavor != MOCK_FLAVOR_LLAMACPP) {
                    break; /* not a llama.cpp server: no such path */
                }
                if ((routes[i].flags & RF_VLLM)
                    && mock_cfg.flavor != MOCK_FLAVOR_VLLM) {
                    break;
                }
                rq->route = routes[i].route;
                rq->ollama = routes[i].ollama;
                rq->flags = routes[i].flags;
                break;
            }
        }
        rq->ollama_errors = strncmp(url, "/api/", 5) == 0;
        rq->allowed = (rq->flags & RF_POST)
                          ? strcmp(method, MHD_HTTP_METHOD_POST) == 0
                          : (strcmp(method, MHD_HTTP_METHOD_GET) == 0
                             || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0);
        rq->buffering = rq->allowed && (rq->flags & RF_BODY);
        stats_count(url, rq->allowed && (rq->flags & RF_GEN));

        if (rq->buffering) {
            cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl != NULL && parse_long(cl, 0, 1L << 40, &len) == 0) {
                if ((size_t)len > MOCK_MAX_BODY) {
                    /* Answer before the upload: MHD then skips the body
                     * (and any 100-continue) and closes afterwards. */
                    rq->answered = 1;
                    return reply_err(conn, rq, HTTP_TOO_LARGE,
                                     "Request body too large "
                                     "(limit 16 MiB).",
                                     "invalid_request_error", NULL, NULL);
                }
                if (len > 0) {
                    rq->body = malloc((size_t)len + 1);
                    rq->cap = rq->body ? (size_t)len + 1 : 0;
                }
            }
        }
        return MHD_YES;
    }

    if (*upload_size != 0) {
        if (rq->buffering && body_append(rq, upload, *upload_size) != 0) {
            return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->answered) {
        return MHD_YES;
    }
    rq->answered = 1;
    return dispatch(conn, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe)
{
    req_t *rq = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (rq != NULL) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* ---- "cut": a 200 whose chunked body stops mid-way ---------------------- */

typedef struct {
    char *data;
    size_t len;
    size_t off;
} cut_t;

static ssize_t cut_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    cut_t *c = cls;
    size_t n;

    (void)pos;
    if (c->off >= c->len) {
        /* No terminating chunk: the client must see a broken transfer. */
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    n = c->len - c->off;
    if (n > max) {
        n = max;
    }
    memcpy(buf, c->data + c->off, n);
    c->off += n;
    return (ssize_t)n;
}

static void cut_free(void *cls)
{
    cut_t *c = cls;

    free(c->data);
    free(c);
}

/* Sends the first half of body (all of it if it is 1 byte), then aborts. */
enum MHD_Result mock_cut_reply(struct MHD_Connection *conn, const char *ctype,
                               const char *body, size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    cut_t *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        return MHD_NO;
    }
    c->len = len / 2 ? len / 2 : len;
    c->data = malloc(c->len ? c->len : 1);
    if (c->data == NULL) {
        free(c);
        return MHD_NO;
    }
    memcpy(c->data, body, c->len);
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
                                             cut_reader, c, cut_free);
    if (resp == NULL) {
        cut_free(c);
        return MHD_NO;
    }
    mock_add_headers(resp, ctype);
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- paced streams (OpenAI and llama.cpp SSE, Ollama NDJSON) ------------ */

enum { SP_HEAD, SP_PIECES, SP_TAIL, SP_END };

/* X-Mock-Pause-Ms: the stall after the first piece, from now (the piece
 * may have gone out late); the pieces after it keep their pace, later by
 * as much. 0, or -1 when the client left or the mock stops. */
static int stall_after_first(mock_stream_t *s)
{
    struct timespec now, due, t0 = s->t0;
    double ms = (double)s->pause_ms;

    s->pause_ms = 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    mock_deadline(&due, &now, ms);
    if (mock_sleep_until(&due, s->fd) != 0) {
        return -1;
    }
    mock_deadline(&s->t0, &t0, ms);
    return 0;
}

/* Builds the next event into s->ev, sleeping first when it is a piece
 * that is not due yet.  1: event ready, 0: end, -1: abort. */
static int next_event(mock_stream_t *s)
{
    struct timespec due;

    switch (s->phase) {
    case SP_HEAD:
        s->phase = SP_PIECES;
        if (s->ops->head != NULL) {
            s->ops->head(s);
            return 1;
        }
        /* fall through */

    case SP_PIECES:
        if (s->emitted == 1 && s->pause_ms > 0 && stall_after_first(s) != 0) {
            return -1;
        }
        if (s->cut_after >= 0 && s->emitted >= s->cut_after) {
            return -1;
        }
        if (s->garbage) {
            s->garbage = 0;
            mock_buf_puts(&s->ev, "data: mock garbage, not JSON\n\n");
            return 1;
        }
        if (s->emitted < s->npieces) {
            /* Deadlines come from t0, not from the previous event, so
             * slow writes do not make the whole stream drift. */
            if (s->ttft_ms > 0 || s->tps > 0.0) {
                mock_deadline(&due, &s->t0,
                              (double)s->ttft_ms
                                  + (s->tps > 0.0
                                         ? (double)s->emitted * 1000.0 / s->tps
                                         : 0.0));
                if (mock_sleep_until(&due, s->fd) != 0) {
                    return -1;
                }
            }
            s->ops->piece(s, s->emitted);
            s->emitted++;
            return 1;
        }
        if (s->npieces == 0 && s->ttft_ms > 0) {
            /* Even an empty answer takes the time to first token. */
            mock_deadline(&due, &s->t0, (double)s->ttft_ms);
            if (mock_sleep_until(&due, s->fd) != 0) {
                return -1;
            }
        }
        s->phase = SP_TAIL;
        /* fall through */

    case SP_TAIL:
        if (s->ops->tail(s, s->tail_i++)) {
            return 1;
        }
        s->phase = SP_END;
        /* The generation is over once the last event is out: free the
         * llama.cpp slot now rather than when MHD gets round to it. */
        mock_job_end(&s->job);
        return 0;

    default: return 0;
    }
}

/* One event per call: MHD turns each return into its own HTTP chunk and
 * sends it before asking again, which is what makes tokens arrive spread
 * over time at the client. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    mock_stream_t *s = cls;
    size_t n;

    (void)pos;
    if (s->off >= s->ev.len) {
        int r;

        s->ev.len = 0;
        s->off = 0;
        r = next_event(s);
        if (r == 0) {
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (r < 0 || s->ev.failed) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    n = s->ev.len - s->off;
    if (n > max) {
        n = max;
    }
    memcpy(buf, s->ev.data + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    mock_stream_t *s = cls;

    mock_job_end(&s->job);
    if (s->ops->free != NULL) {
        s->ops->free(s->ctx);
    }
    mock_buf_free(&s->ev);
    free(s);
}

/* Takes ownership of ctx (freed through ops->free, also on failure) and
 * of the job.  The "cut" fault stops the stream after half the pieces. */
enum MHD_Result mock_stream_abort(const mock_stream_ops_t *ops, void *ctx,
                                  mock_job_t *job)
{
    mock_job_end(job);
    if (ctx != NULL && ops->free != NULL) {
        ops->free(ctx);
    }
    return MHD_NO;
}

enum MHD_Result mock_stream_start(struct MHD_Connection *conn,
                                  const mock_stream_ops_t *ops, void *ctx,
                                  long npieces, const mock_knobs_t *k,
                                  const mock_job_t *job, const char *ctype)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    mock_stream_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        mock_job_t j = *job;

        return mock_stream_abort(ops, ctx, &j);
    }
    s->ops = ops;
    s->ctx = ctx;
    s->job = *job;
    s->phase = SP_HEAD;
    s->npieces = npieces;
    s->cut_after = -1;
    if (k->fault == MOCK_FAULT_CUT) {
        s->cut_after = npieces / 2 ? npieces / 2 : npieces;
    }
    else if (k->fault == MOCK_FAULT_CUT_FIRST) {
        s->cut_after = 0; /* the role chunk (chat) and nothing else */
    }
    s->garbage = k->fault == MOCK_FAULT_GARBAGE
                 && strcmp(ctype, "text/event-stream") == 0;
    s->tps = k->tps;
    s->ttft_ms = k->ttft_ms;
    s->pause_ms = k->pause_ms;
    s->fd = k->fd;
    clock_gettime(CLOCK_MONOTONIC, &s->t0);

    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                             stream_reader, s, stream_free);
    if (resp == NULL) {
        stream_free(s);
        return MHD_NO;
    }
    mock_add_headers(resp, ctype);
    if (strcmp(ctype, "text/event-stream") == 0) {
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
    }
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- loaded models and llama.cpp slots ---------------------------------- */

/* A model mockllm has "loaded" (or is loading). */
typedef struct {
    char *name;
    size_t len;
    int loading;           /* a request is sleeping through its load */
    struct timespec ready; /* CLOCK_MONOTONIC: when that load ends */
    time_t used;           /* wall clock of the last use */
} resident_t;

/* One lock for models and slots: both are touched once or twice per
 * request, and a slot wait must see the stop flag promptly anyway. */
static pthread_mutex_t models_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_freed;
static int cond_ready;

/* Most recently used first, which is the order /api/ps shows. */
static resident_t *resident;
static size_t nresident;
static size_t capresident;
static size_t nloading;
static uint64_t cold_loads;

static int *slot_task; /* -1: idle, else the task it runs */
static uint64_t next_task;

/* vLLM's gauges per model, for /metrics: the configured models from the
 * start (vLLM shows its model at 0), others once asked for, bounded. */
typedef struct {
    char *name;
    size_t len;
    long running; /* generations holding a place */
    long waiting; /* waiting for their model or a place */
} gauge_t;

static gauge_t *gauges;
static size_t ngauges;
static size_t capgauges;

/* The list is only touched with models_lock held. */
static long resident_find(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < nresident; i++) {
        if (resident[i].len == len
            && memcmp(resident[i].name, name, len) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static void resident_touch(size_t i)
{
    resident_t m = resident[i];

    memmove(resident + 1, resident, i * sizeof(*resident));
    resident[0] = m;
}

static void resident_remove(size_t i)
{
    free(resident[i].name);
    memmove(resident + i, resident + i + 1,
            (nresident - i - 1) * sizeof(*resident));
    nresident--;
}

static int resident_add(const char *name, size_t len, int loading)
{
    resident_t *grown;
    char *copy = malloc(len + 1);

    if (copy == NULL) {
        return -1;
    }
    if (nresident == capresident) {
        size_t cap = capresident ? capresident * 2 : 8;

        grown = realloc(resident, cap * sizeof(*resident));
        if (grown == NULL) {
            free(copy);
            return -1;
        }
        resident = grown;
        capresident = cap;
    }
    memcpy(copy, name, len);
    copy[len] = '\0';
    memmove(resident + 1, resident, nresident * sizeof(*resident));
    nresident++;
    memset(&resident[0], 0, sizeof(resident[0]));
    resident[0].name = copy;
    resident[0].len = len;
    resident[0].loading = loading;
    resident[0].used = time(NULL);
    return 0;
}

/* The gauges of a model (models_lock held), added if new and there is
 * room; -1 when there is none. */
static long gauge_of(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < ngauges; i++) {
        if (gauges[i].len == len && memcmp(gauges[i].name, name, len) == 0) {
            return (long)i;
        }
    }
    if (ngauges == capgauges
        || (gauges[ngauges].name = strndup(name, len)) == NULL) {
        return -1;
    }
    gauges[ngauges].len = len;
    gauges[ngauges].running = gauges[ngauges].waiting = 0;
    return (long)ngauges++;
}

/* Unloads least recently used models beyond the limit; a model still
 * loading is never the victim (its request is asleep on it). */
static void resident_evict(void)
{
    size_t limit = mock_cfg.max_loaded > 0 ? (size_t)mock_cfg.max_loaded
                                           : MOCK_LOADED_CAP;
    size_t i;

    while (nresident - nloading > limit) {
        for (i = nresident; i > 0 && resident[i - 1].loading; i--) {
        }
        if (i == 0) {
            return;
        }
        resident_remove(i - 1);
    }
}

int mock_models_init(void)
{
    pthread_condattr_t ca;
    size_t i;
    long s;

    /* Monotonic, so a wall clock step cannot stretch a slot wait. */
    if (pthread_condattr_init(&ca) != 0) {
        return -1;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&slot_freed, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        return -1;
    }
    pthread_condattr_destroy(&ca);
    cond_ready = 1;

    slot_task = malloc((size_t)mock_cfg.slots * sizeof(*slot_task));
    if (slot_task == NULL) {
        return -1;
    }
    if (mock_cfg.flavor == MOCK_FLAVOR_VLLM) {
        const char *const *names = mock_model_names(&capgauges);

        capgauges += MOCK_LOADED_CAP;
        gauges = calloc(capgauges, sizeof(*gauges));
        if (gauges == NULL) {
            return -1;
        }
        for (i = 0; i + MOCK_LOADED_CAP < capgauges; i++) {
            if (gauge_of(names[i], strlen(names[i])) < 0) {
                return -1;
            }
        }
    }
    for (s = 0; s < mock_cfg.slots; s++) {
        slot_task[s] = -1;
    }
    /* In the order given, so the last one is the most recently used. */
    for (i = 0; i < mock_cfg.npreload; i++) {
        const char *name = mock_cfg.preload[i];
        size_t len = strlen(name);
        long at = resident_find(name, len);

        if (at >= 0) {
            resident_touch((size_t)at);
        }
        else if (resident_add(name, len, 0) != 0) {
            return -1;
        }
        resident_evict();
    }
    return 0;
}

void mock_models_free(void)
{
    size_t i;

    for (i = 0; i < nresident; i++) {
        free(resident[i].name);
    }
    free(resident);
    resident = NULL;
    nresident = capresident = nloading = 0;
    free(slot_task);
    slot_task = NULL;
    for (i = 0; i < ngauges; i++) {
        free(gauges[i].name);
    }
    free(gauges);
    gauges = NULL;
    ngauges = capgauges = 0;
    if (cond_ready) {
        pthread_cond_destroy(&slot_freed);
        cond_ready = 0;
    }
}

/* Makes the model resident (sleeping --load-ms if it is not: a cold load;
 * a request arriving during someone else's load waits for that one) and,
 * for llama.cpp, takes a free slot, queueing for one as llama.cpp does.
 * 0: go ahead; -1: the client left or we are stopping, give up. */
int mock_job_begin(mock_job_t *job, const char *model, size_t len,
                   const mock_knobs_t *k)
{
    struct timespec now, ready, t0;
    long i, s, g = -1;
    int r;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    load_waited_ms = -1.0;
    job->slot = -1;
    job->cold = 0;
    job->metric = -1;
    pthread_mutex_lock(&models_lock);
    if (mock_cfg.flavor == MOCK_FLAVOR_VLLM
        && (g = gauge_of(model, len)) >= 0) {
        gauges[g].waiting++;
    }
    for (;;) {
        i = resident_find(model, len);
        if (i >= 0 && !resident[i].loading) {
            resident[i].used = time(NULL);
            resident_touch((size_t)i);
            break;
        }
        job->cold = 1;
        if (i >= 0) {
            ready = resident[i].ready;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (ready.tv_sec < now.tv_sec
                || (ready.tv_sec == now.tv_sec
                    && ready.tv_nsec <= now.tv_nsec)) {
                /* Due, but its loader has not taken the lock back yet:
                 * a short nap instead of spinning on the lock. */
                mock_deadline(&ready, &now, 1.0);
            }
            pthread_mutex_unlock(&models_lock);
            r = mock_sleep_until(&ready, k->fd);
            pthread_mutex_lock(&models_lock);
            if (r != 0) {
                goto give_up;
            }
            continue; /* loaded now, or its loader gave up */
        }
        if (resident_add(model, len, mock_cfg.load_ms > 0) != 0) {
            goto give_up;
        }
        if (mock_cfg.load_ms > 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            mock_deadline(&ready, &now, (double)mock_cfg.load_ms);
            resident[0].ready = ready;
            nloading++;
            pthread_mutex_unlock(&models_lock);
            r = mock_sleep_until(&ready, k->fd);
            pthread_mutex_lock(&models_lock);
            nloading--;
            /* Still there: only its loader removes a loading entry. */
            i = resident_find(model, len);
            if (r != 0) {
                if (i >= 0) {
                    resident_remove((size_t)i);
                }
                goto give_up;
            }
            if (i >= 0) {
                resident[i].loading = 0;
                resident[i].used = time(NULL);
                resident_touch((size_t)i);
            }
        }
        cold_loads++;
        resident_evict();
        break;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    load_waited_ms = job->cold ? (double)(now.tv_sec - t0.tv_sec) * 1e3
                                     + (double)(now.tv_nsec - t0.tv_nsec) / 1e6
                               : 0.0;

    if (mock_cfg.flavor == MOCK_FLAVOR_LLAMACPP
        || mock_cfg.flavor == MOCK_FLAVOR_VLLM) {
        for (;;) {
            for (s = 0; s < mock_cfg.slots && slot_task[s] >= 0; s++) {
            }
            if (s < mock_cfg.slots) {
                slot_task[s] = (int)(next_task++ & 0x7fffffff);
                job->slot = (int)s;
                break;
            }
            if (mock_stopping() || mock_peer_gone(k->fd)) {
                goto give_up;
            }
            clock_gettime(CLOCK_MONOTONIC, &now);
            mock_deadline(&ready, &now, 100.0);
            pthread_cond_timedwait(&slot_freed, &models_lock, &ready);
        }
    }
    if (g >= 0) {
        gauges[g].waiting--;
        gauges[g].running++;
        job->metric = g;
    }
    pthread_mutex_unlock(&models_lock);
    return 0;

give_up:
    if (g >= 0) {
        gauges[g].waiting--;
    }
    pthread_mutex_unlock(&models_lock);
    return -1;
}

/* Idempotent: streams call it at their end and again when freed. */
void mock_job_end(mock_job_t *job)
{
    if (job->slot < 0 && job->metric < 0) {
        return;
    }
    pthread_mutex_lock(&models_lock);
    if (job->slot >= 0) {
        if (slot_task != NULL && job->slot < mock_cfg.slots) {
            slot_task[job->slot] = -1;
        }
        pthread_cond_signal(&slot_freed);
    }
    if (job->metric >= 0 && (size_t)job->metric < ngauges) {
        gauges[job->metric].running--;
    }
    pthread_mutex_unlock(&models_lock);
    job->slot = -1;
    job->metric = -1;
}

/* Ollama's keep_alive 0; 1 if it was loaded. */
int mock_model_unload(const char *model, size_t len)
{
    long i;
    int found = 0;

    pthread_mutex_lock(&models_lock);
    i = resident_find(model, len);
    if (i >= 0 && !resident[i].loading) {
        resident_remove((size_t)i);
        found = 1;
    }
    pthread_mutex_unlock(&models_lock);
    return found;
}

int mock_loading(void)
{
    size_t n;

    pthread_mutex_lock(&models_lock);
    n = nloading;
    pthread_mutex_unlock(&models_lock);
    return n > 0;
}

void mock_models_stats(struct json_object *o)
{
    struct json_object *names = json_object_new_array();
    size_t i;

    pthread_mutex_lock(&models_lock);
    json_object_object_add(o, "loads",
                           json_object_new_int64((int64_t)cold_loads));
    for (i = 0; i < nresident; i++) {
        if (!resident[i].loading) {
            json_object_array_add(
                names, json_object_new_string_len(resident[i].name,
                                                  (int)resident[i].len));
        }
    }
    pthread_mutex_unlock(&models_lock);
    json_object_object_add(o, "loaded", names);
}

void mock_models_reset(void)
{
    pthread_mutex_lock(&models_lock);
    cold_loads = 0;
    pthread_mutex_unlock(&models_lock);
}

struct json_object *mock_ps_json(void)
{
    struct json_object *o = json_object_new_object();
    struct json_object *list = json_object_new_array();
    struct timespec ts;
    char when[48];
    size_t i;

    pthread_mutex_lock(&models_lock);
    for (i = 0; i < nresident; i++) {
        struct json_object *m;

        if (resident[i].loading) {
            continue;
        }
        m = mock_ollama_model(resident[i].name, resident[i].len);
        ts.tv_sec = resident[i].used + MOCK_KEEP_ALIVE_S;
        ts.tv_nsec = 0;
        mock_rfc3339(when, sizeof(when), &ts);
        json_object_object_add(m, "expires_at", json_object_new_string(when));
        json_object_object_add(m, "size_vram",
                               json_object_new_int64(MOCK_MODEL_SIZE));
        json_object_object_add(m, "context_length",
                               json_object_new_int(MOCK_MODEL_CTX));
        json_object_array_add(list, m);
    }
    pthread_mutex_unlock(&models_lock);
    json_object_object_add(o, "models", list);
    return o;
}

struct json_object *mock_slots_json(void)
{
    struct json_object *a = json_object_new_array();
    long s;

    pthread_mutex_lock(&models_lock);
    for (s = 0; s < mock_cfg.slots; s++) {
        struct json_object *o = json_object_new_object();

        json_object_object_add(o, "id", json_object_new_int((int)s));
        json_object_object_add(o, "id_task",
                               json_object_new_int(slot_task[s]));
        json_object_object_add(o, "n_ctx",
                               json_object_new_int(MOCK_MODEL_CTX));
        json_object_object_add(o, "speculative", json_object_new_boolean(0));
        json_object_object_add(o, "is_processing",
                               json_object_new_boolean(slot_task[s] >= 0));
        json_object_array_add(a, o);
    }
    pthread_mutex_unlock(&models_lock);
    return a;
}

/* A label value as Prometheus text wants it: \\, \" and \n escaped. */
static void prom_label(mock_buf_t *b, const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (s[i] == '\\' || s[i] == '"') {
            mock_buf_put(b, "\\", 1);
            mock_buf_put(b, s + i, 1);
        }
        else if (s[i] == '\n') {
            mock_buf_puts(b, "\\n");
        }
        else {
            mock_buf_put(b, s + i, 1);
        }
    }
}

/* One gauge for every model, as vLLM's prometheus_client writes it (V1's
 * labels); models_lock held. which: 0 running, 1 waiting, 2 KV cache use,
 * nominally the running share of the batch (--slots). */
static void prom_gauge(mock_buf_t *b, const char *name, const char *help,
                       int which)
{
    size_t i;

    mock_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    for (i = 0; i < ngauges; i++) {
        mock_buf_printf(b, "%s{model_name=\"", name);
        prom_label(b, gauges[i].name, gauges[i].len);
        if (which == 2) {
            mock_buf_printf(b, "\",engine=\"0\"} %.6f\n",
                            (double)gauges[i].running
                                / (double)mock_cfg.slots);
        }
        else {
            mock_buf_printf(b, "\",engine=\"0\"} %ld.0\n",
                            which ? gauges[i].waiting : gauges[i].running);
        }
    }
}

void mock_metrics_text(mock_buf_t *b)
{
    mock_buf_puts(
        b, "# HELP python_info Python platform information\n"
           "# TYPE python_info gauge\n"
           "python_info{implementation=\"CPython\",major=\"3\",minor=\"12\","
           "patchlevel=\"3\",version=\"3.12.3\"} 1.0\n");
    pthread_mutex_lock(&models_lock);
    prom_gauge(b, "vllm:num_requests_running",
               "Number of requests in model execution batches.", 0);
    prom_gauge(b, "vllm:num_requests_waiting",
               "Number of requests waiting to be processed.", 1);
    prom_gauge(b, "vllm:gpu_cache_usage_perc",
               "GPU KV-cache usage. 1 means 100 percent usage."
               "DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
               2);
    prom_gauge(b, "vllm:kv_cache_usage_perc",
               "KV-cache usage. 1 means 100 percent usage.", 2);
    pthread_mutex_unlock(&models_lock);
}

/* Nominal, from the knobs: the time the mock spends is ttft, then n/tps,
 * and a cold load costs --load-ms. */
void mock_timing(mock_timing_t *t, long prompt_n, long predicted_n,
                 const mock_knobs_t *k, const mock_job_t *job)
{
    t->prompt_n = prompt_n;
    t->predicted_n = predicted_n;
    t->prompt_ms = (double)k->ttft_ms;
    t->predicted_ms =
        k->tps > 0.0 ? (double)predicted_n * 1000.0 / k->tps : 0.0;
    t->load_ms = job->cold ? (double)mock_cfg.load_ms : 0.0;
}

/* ---- startup and shutdown ----------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: mockllm --port PORT [--host 127.0.0.1] [--name NAME]\n"
        "               [--models m1,m2,...] [--tps N] [--ttft-ms N]\n"
        "               [--tokens N] [--embed-dim N]\n"
        "               [--fault none|500|429|hang|cut|reset|nodone|badjson]\n"
        "               [--flavor openai|llamacpp|vllm] [--slots N]\n"
        "               [--load-ms N] [--max-loaded K] [--preload m1,m2]\n"
        "               [--threads N] [--quiet]\n"
        "Emulated OpenAI/Ollama/llama.cpp/vLLM server for mod_llm_gateway\n"
        "tests. See test/mockllm/README.md.\n");
}

/* A comma-separated list of names, blanks around them trimmed. */
static int parse_list(const char *arg, char ***list, size_t *count)
{
    const char *p = arg;

    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char **grown;

        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
            len--;
        }
        if (len > 0) {
            grown = realloc(*list, (*count + 1) * sizeof(char *));
            if (grown == NULL) {
                return -1;
            }
            *list = grown;
            (*list)[*count] = strndup(p, len);
            if ((*list)[*count] == NULL) {
                return -1;
            }
            (*count)++;
        }
        if (end == NULL) {
            break;
        }
        p = end + 1;
    }
    return *count > 0 ? 0 : -1;
}

static int valid_name(const char *s)
{
    /* It goes verbatim into a response header. */
    if (*s == '\0') {
        return 0;
    }
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* ---- options: one table row each ------------------------------------- */

typedef struct mock_option mock_option_t;
struct mock_option {
    const char *name;
    /* 0, or -1 for a bad value; numbers use min, max and field. */
    int (*set)(const mock_option_t *o, const char *val);
    long min, max;
    long *field;
};

static int set_long(const mock_option_t *o, const char *val)
{
    return parse_long(val, o->min, o->max, o->field);
}

static int port_given; /* --port 0 (any free port) counts */

static int set_port(const mock_option_t *o, const char *val)
{
    long v;

    if (parse_long(val, o->min, o->max, &v) != 0) {
        return -1;
    }
    mock_cfg.port = (unsigned int)v;
    port_given = 1;
    return 0;
}

static int set_host(const mock_option_t *o, const char *val)
{
    (void)o;
    mock_cfg.host = strcmp(val, "localhost") == 0 ? "127.0.0.1" : val;
    return 0;
}

static int set_name(const mock_option_t *o, const char *val)
{
    (void)o;
    if (!valid_name(val)) {
        return -1;
    }
    mock_cfg.name = val;
    return 0;
}

static int set_models(const mock_option_t *o, const char *val)
{
    (void)o;
    return mock_cfg.models != NULL
               ? -1
               : parse_list(val, &mock_cfg.models, &mock_cfg.nmodels);
}

static int set_preload(const mock_option_t *o, const char *val)
{
    (void)o;
    return mock_cfg.preload != NULL
               ? -1
               : parse_list(val, &mock_cfg.preload, &mock_cfg.npreload);
}

static int set_flavor(const mock_option_t *o, const char *val)
{
    (void)o;
    if (strcmp(val, "openai") == 0) {
        mock_cfg.flavor = MOCK_FLAVOR_OPENAI;
    }
    else if (strcmp(val, "llamacpp") == 0) {
        mock_cfg.flavor = MOCK_FLAVOR_LLAMACPP;
    }
    else if (strcmp(val, "vllm") == 0) {
        mock_cfg.flavor = MOCK_FLAVOR_VLLM;
    }
    else {
        return -1;
    }
    return 0;
}

static int set_slots(const mock_option_t *o, const char *val)
{
    mock_cfg.slots_given = 1;
    return parse_long(val, o->min, o->max, &mock_cfg.slots);
}

static int set_tps(const mock_option_t *o, const char *val)
{
    (void)o;
    return parse_tps(val, &mock_cfg.tps);
}

static int set_fault(const mock_option_t *o, const char *val)
{
    (void)o;
    return parse_fault(val, &mock_cfg.fault);
}

static const mock_option_t options[] = {
    { "--port", set_port, 0, 65535, NULL },
    { "--host", set_host, 0, 0, NULL },
    { "--name", set_name, 0, 0, NULL },
    { "--models", set_models, 0, 0, NULL },
    { "--preload", set_preload, 0, 0, NULL },
    { "--flavor", set_flavor, 0, 0, NULL },
    { "--tps", set_tps, 0, 0, NULL },
    { "--fault", set_fault, 0, 0, NULL },
    { "--ttft-ms", set_long, 0, MOCK_MAX_TTFT_MS, &mock_cfg.ttft_ms },
    { "--tokens", set_long, 0, MOCK_MAX_TOKENS, &mock_cfg.tokens },
    { "--embed-dim", set_long, 1, MOCK_MAX_EMBED_DIM, &mock_cfg.embed_dim },
    { "--load-ms", set_long, 0, MOCK_MAX_TTFT_MS, &mock_cfg.load_ms },
    { "--max-loaded", set_long, 0, MOCK_MAX_LOADED, &mock_cfg.max_loaded },
    { "--slots", set_slots, 1, MOCK_MAX_SLOTS, NULL },
    { "--threads", set_long, 0, MOCK_MAX_THREADS, &mock_cfg.threads },
};

static const mock_option_t *find_option(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        if (strcmp(name, options[i].name) == 0) {
            return &options[i];
        }
    }
    return NULL;
}

static int parse_args(int argc, char **argv)
{
    int i;

    mock_cfg.host = "127.0.0.1";
    mock_cfg.name = "mock";
    mock_cfg.tokens = 16;
    mock_cfg.embed_dim = 8;
    mock_cfg.slots = 1;
    for (i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = NULL;
        const char *eq = strchr(opt, '=');
        const mock_option_t *o;
        char name[32];
        size_t nl = eq ? (size_t)(eq - opt) : strlen(opt);

        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (nl >= sizeof(name) || strncmp(opt, "--", 2) != 0) {
            fprintf(stderr, "mockllm: unknown argument '%s'\n", opt);
            return -1;
        }
        memcpy(name, opt, nl);
        name[nl] = '\0';
        if (strcmp(name, "--quiet") == 0) {
            if (eq != NULL) {
                fprintf(stderr, "mockllm: --quiet takes no value\n");
                return -1;
            }
            mock_cfg.quiet = 1;
            continue;
        }
        if ((o = find_option(name)) == NULL) {
            fprintf(stderr, "mockllm: unknown option '%s'\n", name);
            return -1;
        }
        if (eq != NULL) {
            val = eq + 1;
        }
        else if (i + 1 < argc) {
            val = argv[++i];
        }
        else {
            fprintf(stderr, "mockllm: %s needs a value\n", name);
            return -1;
        }
        if (o->set(o, val) != 0) {
            fprintf(stderr, "mockllm: invalid value for %s: '%s'\n", name,
                    val);
            return -1;
        }
    }
    if (!port_given) {
        fprintf(stderr, "mockllm: --port is required\n");
        return -1;
    }
    if (mock_cfg.flavor == MOCK_FLAVOR_VLLM && !mock_cfg.slots_given) {
        mock_cfg.slots = 256; /* vLLM's default max_num_seqs */
    }
    for (i = 0; (size_t)i < mock_cfg.npreload; i++) {
        if (!mock_model_known(mock_cfg.preload[i],
                              strlen(mock_cfg.preload[i]))) {
            fprintf(stderr,
                    "mockllm: --preload model '%s' is not in "
                    "--models\n",
                    mock_cfg.preload[i]);
            return -1;
        }
    }
    return 0;
}

static void free_config(void)
{
    size_t i;

    for (i = 0; i < mock_cfg.nmodels; i++) {
        free(mock_cfg.models[i]);
    }
    free(mock_cfg.models);
    for (i = 0; i < mock_cfg.npreload; i++) {
        free(mock_cfg.preload[i]);
    }
    free(mock_cfg.preload);
    free(mock_cfg.fingerprint);
    memset(&mock_cfg, 0, sizeof(mock_cfg));
}

/* We bind ourselves rather than let MHD do it, to tell "port in use"
 * apart from other failures and to learn the port when 0 was asked. */
static int open_listener(int *family)
{
    struct addrinfo hints, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char port[16];
    int fd, one = 1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    snprintf(port, sizeof(port), "%u", mock_cfg.port);
    rc = getaddrinfo(mock_cfg.host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "mockllm: bad --host '%s': %s\n", mock_cfg.host,
                gai_strerror(rc));
        return -2;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "mockllm: socket: %s\n", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        int err = errno;

        if (err == EADDRINUSE) {
            fprintf(stderr, "mockllm: port %u on %s is already in use\n",
                    mock_cfg.port, mock_cfg.host);
        }
        else {
            fprintf(stderr, "mockllm: cannot listen on %s:%u: %s\n",
                    mock_cfg.host, mock_cfg.port, strerror(err));
        }
        close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    *family = ai->ai_family;
    freeaddrinfo(ai);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        mock_cfg.port = ntohs(ss.ss_family == AF_INET6
                                  ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                  : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

/* Thread-per-connection needs a descriptor per client; the default soft
 * limit of 1024 would cap us below the 2000 connections we promise. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct MHD_Daemon *d;
    unsigned int flags;
    sigset_t sigs;
    size_t fplen;
    int fd, family = AF_INET, sig;

    if (parse_args(argc, argv) != 0) {
        usage(stderr);
        free_config();
        return 2;
    }
    fplen = strlen(mock_cfg.name) + sizeof("mock-");
    mock_cfg.fingerprint = malloc(fplen);
    if (mock_cfg.fingerprint == NULL) {
        free_config();
        return 1;
    }
    snprintf(mock_cfg.fingerprint, fplen, "mock-%s", mock_cfg.name);
    if (mock_models_init() != 0) {
        free_config();
        return 1;
    }

    /* Block the stop signals before MHD creates threads so that they all
     * inherit the mask and only sigwait() below ever sees them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    fd = open_listener(&family);
    if (fd < 0) {
        mock_models_free();
        free_config();
        return fd == -2 ? 2 : 1;
    }

    /* One thread per connection, where a request may sleep (pacing, model
     * loads, hangs) without holding up others; MHD_USE_POLL because those
     * threads would otherwise use select(), which cannot watch descriptors
     * past FD_SETSIZE (1024). --threads N: N epoll threads instead, far
     * cheaper per request, for zero-think-time load. */
    flags = mock_cfg.threads > 0
                ? MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL
                : MHD_USE_THREAD_PER_CONNECTION
                      | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (!mock_cfg.quiet) {
        flags |= MHD_USE_ERROR_LOG;
    }
    if (family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    d = MHD_start_daemon(
        flags, (uint16_t)mock_cfg.port, NULL, NULL, on_request, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)CONNECTION_LIMIT, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_THREAD_STACK_SIZE,
        (size_t)(512 * 1024),
        /* A pool only for two or more threads. */
        mock_cfg.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
        (unsigned int)mock_cfg.threads, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "mockllm: cannot start the HTTP daemon on %s:%u\n",
                mock_cfg.host, mock_cfg.port);
        close(fd);
        mock_models_free();
        free_config();
        return 1;
    }
    fprintf(stderr,
            family == AF_INET6 ? "mockllm %s listening on [%s]:%u\n"
                               : "mockllm %s listening on %s:%u\n",
            mock_cfg.name, mock_cfg.host, mock_cfg.port);
    fflush(stderr);

    do {
        if (sigwait(&sigs, &sig) != 0) {
            sig = 0;
        }
    } while (sig != SIGINT && sig != SIGTERM);

    /* Sleepers poll this flag, so in-flight hangs and paced streams give
     * up within 100 ms and MHD_stop_daemon can join their threads. */
    atomic_store(&stopping, 1);
    MHD_stop_daemon(d);

    pthread_mutex_lock(&stats_lock);
    stats_clear_locked();
    pthread_mutex_unlock(&stats_lock);
    mock_models_free();
    free_config();
    return 0;
}
