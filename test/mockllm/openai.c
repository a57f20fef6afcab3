/* openai.c: the generation endpoints of mockllm (chat, completions,
 * embeddings): validation, responses, paced SSE streams and "cut". */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mockllm.h"

typedef struct {
    int chat;
    const char *model;          /* borrowed from the parsed request */
    size_t model_len;
    char id[48];
    time_t created;
    long n;
    int limited;
    long prompt_tokens;
    uint64_t hash;
} gen_t;

enum {
    PH_ROLE,
    PH_TOKENS,
    PH_FINISH,
    PH_USAGE,
    PH_DONE,
    PH_END
};

/* Everything a stream needs after the access handler has returned; owned
 * by the MHD response and freed by its free callback. */
typedef struct {
    int chat;
    int include_usage;
    int limited;
    int phase;
    long n;
    long emitted;
    long cut_after;             /* -1: no cut */
    long prompt_tokens;
    uint64_t rng;
    char *prefix;               /* 'data: {"id":..."system_fingerprint":..' */
    mock_buf_t ev;              /* event being sent */
    size_t off;
    struct timespec t0;
    double tps;
    long ttft_ms;
    int fd;
} stream_t;

typedef struct {
    char *data;
    size_t len;
    size_t off;
} cut_t;

static enum MHD_Result
bad_request(struct MHD_Connection *conn, const char *msg, const char *param)
{
    return mock_reply_error(conn, 400, msg, "invalid_request_error", param,
                            NULL, NULL);
}

/* Strict, so that what vLLM's JSON parser refuses we refuse too. */
/* 0 and *out set (NULL for a literal null) on success, -1 and why set on
 * failure. */
static int
parse_body(const char *body, size_t len, struct json_object **out,
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

static struct json_object *
member(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;

    if (!json_object_object_get_ex(obj, key, &v)) {
        return NULL;
    }
    return v;                   /* NULL for an explicit null as well */
}

/* "string or array of strings"; adds the words and the number of texts. */
static int
count_texts(struct json_object *v, long *words, size_t *ntexts)
{
    size_t i, n;

    if (json_object_is_type(v, json_type_string)) {
        *words += mock_count_words(json_object_get_string(v),
                                   (size_t)json_object_get_string_len(v));
        *ntexts = 1;
        return 0;
    }
    if (!json_object_is_type(v, json_type_array)) {
        return -1;
    }
    n = json_object_array_length(v);
    for (i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);

        if (!json_object_is_type(e, json_type_string)) {
            return -1;
        }
        *words += mock_count_words(json_object_get_string(e),
                                   (size_t)json_object_get_string_len(e));
    }
    *ntexts = n;
    return 0;
}

/* Lenient about message shape: the mock counts what it understands rather
 * than second-guessing the gateway's forwarding. */
static long
count_messages(struct json_object *messages)
{
    size_t i, j, n = json_object_array_length(messages);
    long words = 0;

    for (i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(messages, i);
        struct json_object *c;

        words += 3;
        if (!json_object_is_type(m, json_type_object)) {
            continue;
        }
        c = member(m, "content");
        if (json_object_is_type(c, json_type_string)) {
            words += mock_count_words(json_object_get_string(c),
                                      (size_t)json_object_get_string_len(c));
        }
        else if (json_object_is_type(c, json_type_array)) {
            size_t np = json_object_array_length(c);

            for (j = 0; j < np; j++) {
                struct json_object *p = json_object_array_get_idx(c, j);
                struct json_object *t = member(p, "type");
                struct json_object *x = member(p, "text");

                if (json_object_is_type(p, json_type_object)
                    && json_object_is_type(t, json_type_string)
                    && strcmp(json_object_get_string(t), "text") == 0
                    && json_object_is_type(x, json_type_string)) {
                    words += mock_count_words(
                        json_object_get_string(x),
                        (size_t)json_object_get_string_len(x));
                }
            }
        }
    }
    return words;
}

static uint64_t
request_hash(const gen_t *g, struct json_object *payload,
             struct json_object *seed)
{
    uint64_t h = mock_fnv1a(MOCK_FNV_INIT, g->model, g->model_len);
    const char *s;
    size_t len = 0;

    h = mock_fnv1a(h, "\n", 1);
    s = json_object_to_json_string_length(payload, JSON_C_TO_STRING_PLAIN,
                                          &len);
    if (s != NULL) {
        h = mock_fnv1a(h, s, len);
    }
    h = mock_fnv1a(h, "\n", 1);
    if (seed != NULL) {
        s = json_object_to_json_string_length(seed, JSON_C_TO_STRING_PLAIN,
                                              &len);
        if (s != NULL) {
            h = mock_fnv1a(h, s, len);
        }
    }
    return h;
}

static struct json_object *
usage_json(long prompt, long completion)
{
    struct json_object *u = json_object_new_object();

    json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt));
    json_object_object_add(u, "completion_tokens",
                           json_object_new_int64(completion));
    json_object_object_add(u, "total_tokens",
                           json_object_new_int64(prompt + completion));
    return u;
}

static const char *
finish_reason(int limited)
{
    return limited ? "length" : "stop";
}

/* ---- "cut": a 200 whose chunked body stops mid-way ---------------- */

static ssize_t
cut_reader(void *cls, uint64_t pos, char *buf, size_t max)
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

static void
cut_free(void *cls)
{
    cut_t *c = cls;

    free(c->data);
    free(c);
}

static enum MHD_Result
cut_reply(struct MHD_Connection *conn, const char *body, size_t len)
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
    mock_add_headers(resp, "application/json");
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- non-streamed completions -------------------------------------- */

/* Simulated generation time, in the connection's own thread, so a slow
 * backend looks slow without tying up anything shared. */
static int
simulate_latency(double ms, int fd)
{
    struct timespec now, deadline;

    if (ms <= 0.0) {
        return 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    mock_deadline(&deadline, &now, ms);
    return mock_sleep_until(&deadline, fd);
}

static enum MHD_Result
complete(struct MHD_Connection *conn, const gen_t *g, const mock_knobs_t *k)
{
    struct json_object *o, *choice, *choices, *msg;
    mock_buf_t text = { 0 };
    uint64_t rng = mock_rng_init(g->hash);
    enum MHD_Result ret;
    const char *s;
    size_t len = 0;
    long i;

    if (simulate_latency(k->ttft_ms + (k->tps > 0.0
                                       ? (double)g->n * 1000.0 / k->tps
                                       : 0.0), k->fd) != 0) {
        return MHD_NO;
    }
    for (i = 0; i < g->n; i++) {
        size_t wl;
        const char *w = mock_next_word(&rng, &wl);

        mock_buf_put(&text, w, wl);
        mock_buf_put(&text, " ", 1);
    }
    if (text.failed) {
        mock_buf_free(&text);
        return MHD_NO;
    }

    o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(g->id));
    json_object_object_add(o, "object", json_object_new_string(
                               g->chat ? "chat.completion"
                                       : "text_completion"));
    json_object_object_add(o, "created", json_object_new_int64(g->created));
    json_object_object_add(o, "model",
                           json_object_new_string_len(g->model,
                                                      (int)g->model_len));
    json_object_object_add(o, "system_fingerprint",
                           json_object_new_string(mock_cfg.fingerprint));
    choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    if (g->chat) {
        msg = json_object_new_object();
        json_object_object_add(msg, "role",
                               json_object_new_string("assistant"));
        json_object_object_add(msg, "content",
                               json_object_new_string_len(
                                   text.data ? text.data : "",
                                   (int)text.len));
        json_object_object_add(choice, "message", msg);
    }
    else {
        json_object_object_add(choice, "text",
                               json_object_new_string_len(
                                   text.data ? text.data : "",
                                   (int)text.len));
    }
    json_object_object_add(choice, "logprobs", NULL);
    json_object_object_add(choice, "finish_reason",
                           json_object_new_string(finish_reason(g->limited)));
    choices = json_object_new_array();
    json_object_array_add(choices, choice);
    json_object_object_add(o, "choices", choices);
    json_object_object_add(o, "usage", usage_json(g->prompt_tokens, g->n));
    mock_buf_free(&text);

    if (k->fault == MOCK_FAULT_CUT) {
        s = json_object_to_json_string_length(o, MOCK_JSON_OUT, &len);
        ret = s ? cut_reply(conn, s, len) : MHD_NO;
        json_object_put(o);
        return ret;
    }
    return mock_reply_json(conn, MHD_HTTP_OK, o);
}

/* ---- streams -------------------------------------------------------- */

/* Builds the next SSE event into s->ev, sleeping first when the event is
 * a token that is not due yet.  1: event ready, 0: end, -1: abort. */
static int
next_event(stream_t *s)
{
    const char *unull = s->include_usage ? ",\"usage\":null" : "";
    struct timespec due;
    const char *w;
    size_t wl;

    switch (s->phase) {
    case PH_ROLE:
        mock_buf_printf(&s->ev, "%s,\"choices\":[{\"index\":0,\"delta\":"
                        "{\"role\":\"assistant\",\"content\":\"\"},"
                        "\"logprobs\":null,\"finish_reason\":null}]%s}\n\n",
                        s->prefix, unull);
        s->phase = PH_TOKENS;
        return 1;

    case PH_TOKENS:
        if (s->cut_after >= 0 && s->emitted >= s->cut_after) {
            return -1;
        }
        if (s->emitted < s->n) {
            /* Deadlines come from t0, not from the previous event, so
             * slow writes do not make the whole stream drift. */
            if (s->ttft_ms > 0 || s->tps > 0.0) {
                mock_deadline(&due, &s->t0, (double)s->ttft_ms
                              + (s->tps > 0.0 ? (double)s->emitted * 1000.0
                                                / s->tps
                                              : 0.0));
                if (mock_sleep_until(&due, s->fd) != 0) {
                    return -1;
                }
            }
            w = mock_next_word(&s->rng, &wl);
            if (s->chat) {
                mock_buf_printf(&s->ev, "%s,\"choices\":[{\"index\":0,"
                                "\"delta\":{\"content\":\"%s \"},"
                                "\"logprobs\":null,\"finish_reason\":null}]"
                                "%s}\n\n", s->prefix, w, unull);
            }
            else {
                mock_buf_printf(&s->ev, "%s,\"choices\":[{\"index\":0,"
                                "\"text\":\"%s \",\"logprobs\":null,"
                                "\"finish_reason\":null}]%s}\n\n",
                                s->prefix, w, unull);
            }
            s->emitted++;
            return 1;
        }
        if (s->n == 0 && s->ttft_ms > 0) {
            /* Even an empty answer takes the time to first token. */
            mock_deadline(&due, &s->t0, (double)s->ttft_ms);
            if (mock_sleep_until(&due, s->fd) != 0) {
                return -1;
            }
        }
        s->phase = PH_FINISH;
        /* fall through */

    case PH_FINISH:
        if (s->chat) {
            mock_buf_printf(&s->ev, "%s,\"choices\":[{\"index\":0,"
                            "\"delta\":{},\"logprobs\":null,"
                            "\"finish_reason\":\"%s\"}]%s}\n\n",
                            s->prefix, finish_reason(s->limited), unull);
        }
        else {
            mock_buf_printf(&s->ev, "%s,\"choices\":[{\"index\":0,"
                            "\"text\":\"\",\"logprobs\":null,"
                            "\"finish_reason\":\"%s\"}]%s}\n\n",
                            s->prefix, finish_reason(s->limited), unull);
        }
        s->phase = s->include_usage ? PH_USAGE : PH_DONE;
        return 1;

    case PH_USAGE:
        mock_buf_printf(&s->ev, "%s,\"choices\":[],\"usage\":"
                        "{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
                        "\"total_tokens\":%ld}}\n\n", s->prefix,
                        s->prompt_tokens, s->n, s->prompt_tokens + s->n);
        s->phase = PH_DONE;
        return 1;

    case PH_DONE:
        mock_buf_puts(&s->ev, "data: [DONE]\n\n");
        s->phase = PH_END;
        return 1;

    default:
        return 0;
    }
}

/* One event per call: MHD turns each return into its own HTTP chunk and
 * sends it before asking again, which is what makes tokens arrive spread
 * over time at the client. */
static ssize_t
stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_t *s = cls;
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

static void
stream_free(void *cls)
{
    stream_t *s = cls;

    mock_buf_free(&s->ev);
    free(s->prefix);
    free(s);
}

static enum MHD_Result
start_stream(struct MHD_Connection *conn, const gen_t *g, int include_usage,
             const mock_knobs_t *k)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    mock_buf_t pb = { 0 };
    char *qmodel, *qfp;
    stream_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        return MHD_NO;
    }
    qmodel = mock_json_quote(g->model, g->model_len);
    qfp = mock_json_quote(mock_cfg.fingerprint, strlen(mock_cfg.fingerprint));
    if (qmodel != NULL && qfp != NULL) {
        mock_buf_printf(&pb, "data: {\"id\":\"%s\",\"object\":\"%s\","
                        "\"created\":%lld,\"model\":%s,"
                        "\"system_fingerprint\":%s", g->id,
                        g->chat ? "chat.completion.chunk"
                                : "text_completion",
                        (long long)g->created, qmodel, qfp);
    }
    free(qmodel);
    free(qfp);
    if (qmodel == NULL || qfp == NULL || pb.failed) {
        mock_buf_free(&pb);
        free(s);
        return MHD_NO;
    }
    s->prefix = pb.data;
    s->chat = g->chat;
    s->include_usage = include_usage;
    s->limited = g->limited;
    s->phase = g->chat ? PH_ROLE : PH_TOKENS;
    s->n = g->n;
    s->prompt_tokens = g->prompt_tokens;
    s->rng = mock_rng_init(g->hash);
    s->cut_after = -1;
    if (k->fault == MOCK_FAULT_CUT) {
        s->cut_after = g->n / 2 ? g->n / 2 : g->n;
    }
    s->tps = k->tps;
    s->ttft_ms = k->ttft_ms;
    s->fd = k->fd;
    clock_gettime(CLOCK_MONOTONIC, &s->t0);

    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                             stream_reader, s, stream_free);
    if (resp == NULL) {
        stream_free(s);
        return MHD_NO;
    }
    mock_add_headers(resp, "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- embeddings ----------------------------------------------------- */

static enum MHD_Result
embeddings(struct MHD_Connection *conn, struct json_object *req,
           const gen_t *g, const mock_knobs_t *k)
{
    struct json_object *input = member(req, "input");
    struct json_object *fmt = member(req, "encoding_format");
    size_t dim = (size_t)mock_cfg.embed_dim;
    size_t ntexts = 0, i, d;
    long words = 0;
    int b64 = 0;
    mock_buf_t b = { 0 };
    enum MHD_Result ret;
    double *vec;
    float *fv;
    char *qmodel;

    if (input == NULL) {
        return bad_request(conn, "Missing required parameter: 'input'.",
                           "input");
    }
    if (count_texts(input, &words, &ntexts) != 0) {
        return bad_request(conn, "Invalid type for 'input': expected a "
                           "string or an array of strings.", "input");
    }
    if (ntexts == 0 || ntexts > MOCK_MAX_INPUTS) {
        return bad_request(conn, "Invalid 'input': expected between 1 and "
                           "2048 items.", "input");
    }
    if (fmt != NULL) {
        const char *f = json_object_get_string(fmt);

        if (json_object_is_type(fmt, json_type_string)
            && strcmp(f, "base64") == 0) {
            b64 = 1;
        }
        else if (!json_object_is_type(fmt, json_type_string)
                 || strcmp(f, "float") != 0) {
            return bad_request(conn, "Invalid 'encoding_format': expected "
                               "'float' or 'base64'.", "encoding_format");
        }
    }
    /* Embeddings have no tokens to pace; ttft stands for their latency. */
    if (simulate_latency((double)k->ttft_ms, k->fd) != 0) {
        return MHD_NO;
    }

    vec = malloc(dim * sizeof(*vec));
    fv = malloc(dim * sizeof(*fv));
    qmodel = mock_json_quote(g->model, g->model_len);
    if (vec == NULL || fv == NULL || qmodel == NULL) {
        free(vec);
        free(fv);
        free(qmodel);
        return MHD_NO;
    }
    mock_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (i = 0; i < ntexts && !b.failed; i++) {
        struct json_object *t = json_object_is_type(input, json_type_array)
                                ? json_object_array_get_idx(input, i)
                                : input;

        mock_embedding(json_object_get_string(t),
                       (size_t)json_object_get_string_len(t), vec, dim);
        mock_buf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%zu,"
                        "\"embedding\":", i ? "," : "", i);
        if (b64) {
            /* OpenAI's base64 is little-endian float32; so is x86/arm. */
            for (d = 0; d < dim; d++) {
                fv[d] = (float)vec[d];
            }
            mock_buf_put(&b, "\"", 1);
            mock_base64(&b, (const unsigned char *)fv, dim * sizeof(*fv));
            mock_buf_put(&b, "\"}", 2);
        }
        else {
            for (d = 0; d < dim; d++) {
                mock_buf_printf(&b, "%s%.6f", d ? "," : "[", vec[d]);
            }
            mock_buf_puts(&b, "]}");
        }
    }
    mock_buf_printf(&b, "],\"model\":%s,\"usage\":{\"prompt_tokens\":%ld,"
                    "\"total_tokens\":%ld}}", qmodel, words, words);
    free(vec);
    free(fv);
    free(qmodel);
    if (b.failed) {
        mock_buf_free(&b);
        return MHD_NO;
    }
    if (k->fault == MOCK_FAULT_CUT) {
        ret = cut_reply(conn, b.data, b.len);
    }
    else {
        ret = mock_reply(conn, MHD_HTTP_OK, "application/json", b.data,
                         b.len, NULL);
    }
    mock_buf_free(&b);
    return ret;
}

/* ---- entry point ---------------------------------------------------- */

static enum MHD_Result
generate(struct MHD_Connection *conn, mock_endpoint_t ep,
         struct json_object *req, const mock_knobs_t *k)
{
    static const char *const limit_keys[] = {
        "max_tokens", "max_completion_tokens", "n_predict"
    };
    struct json_object *v, *payload;
    size_t ntexts, i;
    int stream = 0, include_usage = 0;
    char msg[160];
    gen_t g;

    memset(&g, 0, sizeof(g));
    v = member(req, "model");
    if (v == NULL) {
        return bad_request(conn, "Missing required parameter: 'model'.",
                           "model");
    }
    if (!json_object_is_type(v, json_type_string)) {
        return bad_request(conn, "Invalid type for 'model': expected a "
                           "string.", "model");
    }
    g.model = json_object_get_string(v);
    g.model_len = (size_t)json_object_get_string_len(v);
    if (!mock_model_known(g.model, g.model_len)) {
        mock_buf_t m = { 0 };
        enum MHD_Result ret;

        mock_buf_printf(&m, "The model `%s` does not exist.", g.model);
        ret = mock_reply_error(conn, MHD_HTTP_NOT_FOUND,
                               m.failed ? "The model does not exist."
                                        : m.data,
                               "NotFoundError", "model", "model_not_found",
                               NULL);
        mock_buf_free(&m);
        return ret;
    }
    if (ep == MOCK_EP_EMBEDDINGS) {
        return embeddings(conn, req, &g, k);
    }

    g.chat = (ep == MOCK_EP_CHAT);
    if (g.chat) {
        payload = member(req, "messages");
        if (payload == NULL) {
            return bad_request(conn, "Missing required parameter: "
                               "'messages'.", "messages");
        }
        if (!json_object_is_type(payload, json_type_array)) {
            return bad_request(conn, "Invalid type for 'messages': expected "
                               "an array.", "messages");
        }
        g.prompt_tokens = count_messages(payload);
    }
    else {
        payload = member(req, "prompt");
        if (payload == NULL) {
            return bad_request(conn, "Missing required parameter: 'prompt'.",
                               "prompt");
        }
        if (count_texts(payload, &g.prompt_tokens, &ntexts) != 0) {
            return bad_request(conn, "Invalid type for 'prompt': expected a "
                               "string or an array of strings.", "prompt");
        }
    }

    for (i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++) {
        int64_t x;

        v = member(req, limit_keys[i]);
        if (v == NULL) {
            continue;
        }
        if (json_object_is_type(v, json_type_int)) {
            x = json_object_get_int64(v);
            if (x < 0 && i == 2) {
                continue;       /* llama.cpp: n_predict -1 = "until stop" */
            }
            if (x >= 0 && x <= MOCK_MAX_TOKENS) {
                g.n = (long)x;
                g.limited = 1;
                break;
            }
        }
        snprintf(msg, sizeof(msg), "Invalid '%s': expected an integer "
                 "between 0 and %ld.", limit_keys[i], MOCK_MAX_TOKENS);
        return bad_request(conn, msg, limit_keys[i]);
    }
    if (!g.limited) {
        g.n = k->tokens;
    }

    v = member(req, "stream");
    if (v != NULL) {
        if (!json_object_is_type(v, json_type_boolean)) {
            return bad_request(conn, "Invalid type for 'stream': expected a "
                               "boolean.", "stream");
        }
        stream = json_object_get_boolean(v);
    }
    v = member(req, "stream_options");
    if (stream && json_object_is_type(v, json_type_object)) {
        struct json_object *u = member(v, "include_usage");

        include_usage = json_object_is_type(u, json_type_boolean)
                        && json_object_get_boolean(u);
    }

    g.hash = request_hash(&g, payload, member(req, "seed"));
    g.created = time(NULL);
    snprintf(g.id, sizeof(g.id), "%s%016" PRIx64,
             g.chat ? "chatcmpl-" : "cmpl-", g.hash);

    if (stream) {
        return start_stream(conn, &g, include_usage, k);
    }
    return complete(conn, &g, k);
}

enum MHD_Result
mock_generate(struct MHD_Connection *conn, mock_endpoint_t ep,
              const char *body, size_t len, const mock_knobs_t *knobs)
{
    struct json_object *req;
    enum MHD_Result ret;
    char why[128], msg[192];

    if (parse_body(body, len, &req, why, sizeof(why)) != 0) {
        snprintf(msg, sizeof(msg), "Invalid JSON in request body: %s", why);
        return bad_request(conn, msg, NULL);
    }
    if (!json_object_is_type(req, json_type_object)) {
        json_object_put(req);
        return bad_request(conn, "The request body must be a JSON object.",
                           NULL);
    }
    ret = generate(conn, ep, req, knobs);
    json_object_put(req);
    return ret;
}
