/* openai.c: the generation dialects of mockllm: OpenAI (chat, completions,
 * embeddings), llama.cpp's additions and Ollama's /api/ with NDJSON. */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mockllm.h"

#define OLLAMA_VERSION "0.5.7-mock"

typedef struct {
    int chat;
    const char *model; /* borrowed from the parsed request */
    size_t model_len;
    char id[48];
    time_t created;
    long n; /* completion tokens */
    int limited;
    long prompt_tokens;
    uint64_t hash;
    int json_mode;
    const char *tool; /* borrowed; non-NULL: answer a tool call */
    size_t tool_len;
} gen_t;

/* Everything a stream needs after the access handler has returned; owned
 * by the stream and freed through its ops. */
typedef struct {
    int chat;
    int include_usage;
    int no_done; /* the nodone fault: no [DONE] at the end */
    int limited;
    int json_mode;
    long n;
    long prompt_tokens;
    uint64_t rng;
    char *prefix;  /* 'data: {"id":..."system_fingerprint":..' */
    char *qtool;   /* the tool's name as a JSON string */
    char *timings; /* ',"timings":{...}' (llama.cpp) or NULL */
    mock_buf_t piece;
} sse_t;

static enum MHD_Result bad_request(struct MHD_Connection *conn,
                                   const char *msg, const char *param)
{
    return mock_reply_error(conn, 400, msg, "invalid_request_error", param,
                            NULL, NULL);
}

/* OpenAI's 400 for a required parameter that is not there. */
static enum MHD_Result missing_param(struct MHD_Connection *conn,
                                     const char *param)
{
    char msg[96];

    snprintf(msg, sizeof(msg), "Missing required parameter: '%s'.", param);
    return bad_request(conn, msg, param);
}

/* OpenAI's 400 for a parameter that is not what it must be (expected:
 * "a string", "an array", ...). */
static enum MHD_Result wrong_type(struct MHD_Connection *conn,
                                  const char *param, const char *expected)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "Invalid type for '%s': expected %s.", param,
             expected);
    return bad_request(conn, msg, param);
}

static struct json_object *usage_json(long prompt, long completion)
{
    struct json_object *u = json_object_new_object();

    json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt));
    json_object_object_add(u, "completion_tokens",
                           json_object_new_int64(completion));
    json_object_object_add(u, "total_tokens",
                           json_object_new_int64(prompt + completion));
    return u;
}

static const char *finish_reason(int limited, int tool)
{
    return tool ? "tool_calls" : limited ? "length" : "stop";
}

/* response_format json_object / json_schema: JSON mode; anything else is
 * accepted and ignored, as before. */
static int json_mode(struct json_object *req)
{
    struct json_object *t =
        mock_member(mock_member(req, "response_format"), "type");
    const char *s;

    if (!json_object_is_type(t, json_type_string)) {
        return 0;
    }
    s = json_object_get_string(t);
    return strcmp(s, "json_object") == 0 || strcmp(s, "json_schema") == 0;
}

/* ---- OpenAI: non-streamed completions ----------------------------------- */

static struct json_object *tool_calls_json(const char *name, size_t len)
{
    struct json_object *calls = json_object_new_array();
    struct json_object *c = json_object_new_object();
    struct json_object *f = json_object_new_object();

    json_object_object_add(c, "id", json_object_new_string(MOCK_TOOL_ID));
    json_object_object_add(c, "type", json_object_new_string("function"));
    json_object_object_add(f, "name",
                           json_object_new_string_len(name, (int)len));
    json_object_object_add(f, "arguments",
                           json_object_new_string(MOCK_TOOL_ARGS));
    json_object_object_add(c, "function", f);
    json_object_array_add(calls, c);
    return calls;
}

static enum MHD_Result complete(struct MHD_Connection *conn, const gen_t *g,
                                const mock_knobs_t *k, mock_job_t *job)
{
    struct json_object *o, *choice, *choices, *msg;
    mock_buf_t text = { 0 };
    mock_timing_t tm;
    enum MHD_Result ret;

    if (mock_whole_answer(k, job, g->hash, g->n, g->json_mode,
                          g->tool == NULL ? &text : NULL)
        != 0) {
        return MHD_NO;
    }

    o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(g->id));
    json_object_object_add(o, "object",
                           json_object_new_string(g->chat
                                                      ? "chat.completion"
                                                      : "text_completion"));
    json_object_object_add(o, "created", json_object_new_int64(g->created));
    json_object_object_add(
        o, "model", json_object_new_string_len(g->model, (int)g->model_len));
    json_object_object_add(o, "system_fingerprint",
                           json_object_new_string(mock_cfg.fingerprint));
    choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    if (g->chat) {
        msg = json_object_new_object();
        json_object_object_add(msg, "role",
                               json_object_new_string("assistant"));
        if (g->tool != NULL) {
            /* OpenAI sends null content next to tool calls. */
            json_object_object_add(msg, "content", NULL);
            json_object_object_add(msg, "tool_calls",
                                   tool_calls_json(g->tool, g->tool_len));
        }
        else {
            json_object_object_add(
                msg, "content",
                json_object_new_string_len(text.data ? text.data : "",
                                           (int)text.len));
        }
        if (mock_cfg.flavor != MOCK_FLAVOR_LLAMACPP) {
            /* OpenAI and vLLM always send it (null: no refusal);
             * llama.cpp's server does not. */
            json_object_object_add(msg, "refusal", NULL);
        }
        json_object_object_add(choice, "message", msg);
    }
    else {
        json_object_object_add(choice, "text",
                               json_object_new_string_len(
                                   text.data ? text.data : "", (int)text.len));
    }
    json_object_object_add(choice, "logprobs", NULL);
    json_object_object_add(
        choice, "finish_reason",
        json_object_new_string(finish_reason(g->limited, g->tool != NULL)));
    choices = json_object_new_array();
    json_object_array_add(choices, choice);
    json_object_object_add(o, "choices", choices);
    json_object_object_add(o, "usage", usage_json(g->prompt_tokens, g->n));
    if (mock_cfg.flavor == MOCK_FLAVOR_LLAMACPP) {
        mock_timing(&tm, g->prompt_tokens, g->n, k, job);
        json_object_object_add(o, "timings", mock_timings_json(&tm));
    }
    mock_buf_free(&text);

    ret = mock_reply_json_k(conn, o, k);
    return ret;
}

/* ---- OpenAI: streams ---------------------------------------------------- */

static void sse_head(mock_stream_t *st)
{
    sse_t *s = st->ctx;

    mock_buf_printf(&st->ev,
                    "%s,\"choices\":[{\"index\":0,\"delta\":"
                    "{\"role\":\"assistant\",\"content\":\"\"},"
                    "\"logprobs\":null,\"finish_reason\":null}]%s}\n\n",
                    s->prefix, s->include_usage ? ",\"usage\":null" : "");
}

/* A tool call goes out as real servers stream it: the call with its name
 * and empty arguments, then the arguments in two fragments. */
static void sse_tool_piece(mock_stream_t *st, long k)
{
    sse_t *s = st->ctx;
    const char *unull = s->include_usage ? ",\"usage\":null" : "";

    mock_buf_printf(&st->ev,
                    "%s,\"choices\":[{\"index\":0,\"delta\":"
                    "{\"tool_calls\":[{\"index\":0,",
                    s->prefix);
    if (k == 0) {
        mock_buf_printf(&st->ev,
                        "\"id\":\"%s\",\"type\":\"function\","
                        "\"function\":{\"name\":%s,\"arguments\":\"\"}",
                        MOCK_TOOL_ID, s->qtool);
    }
    else {
        mock_buf_puts(&st->ev, "\"function\":{\"arguments\":");
        mock_buf_jstr(&st->ev, k == 1 ? MOCK_TOOL_ARGS_A : MOCK_TOOL_ARGS_B,
                      strlen(k == 1 ? MOCK_TOOL_ARGS_A : MOCK_TOOL_ARGS_B));
        mock_buf_puts(&st->ev, "}");
    }
    mock_buf_printf(&st->ev,
                    "}]},\"logprobs\":null,\"finish_reason\":null}]"
                    "%s}\n\n",
                    unull);
}

static void sse_piece(mock_stream_t *st, long k)
{
    sse_t *s = st->ctx;
    const char *unull = s->include_usage ? ",\"usage\":null" : "";

    if (s->qtool != NULL) {
        sse_tool_piece(st, k);
        return;
    }
    s->piece.len = 0;
    mock_piece(&s->piece, &s->rng, k, s->n, s->json_mode);
    if (s->piece.failed) {
        st->ev.failed = 1;
        return;
    }
    mock_buf_printf(&st->ev, "%s,\"choices\":[{\"index\":0,", s->prefix);
    mock_buf_puts(&st->ev, s->chat ? "\"delta\":{\"content\":" : "\"text\":");
    mock_buf_jstr(&st->ev, s->piece.data, s->piece.len);
    mock_buf_printf(&st->ev,
                    "%s,\"logprobs\":null,\"finish_reason\":null}]"
                    "%s}\n\n",
                    s->chat ? "}" : "", unull);
}

/* Finish chunk, usage chunk (if asked for), [DONE].  llama.cpp puts its
 * timings in the last JSON chunk. */
static int sse_tail(mock_stream_t *st, int i)
{
    sse_t *s = st->ctx;
    const char *unull = s->include_usage ? ",\"usage\":null" : "";
    const char *fin = finish_reason(s->limited, s->qtool != NULL);
    const char *tim = s->timings ? s->timings : "";

    if (i >= 1 && !s->include_usage) {
        i++; /* no usage chunk */
    }
    switch (i) {
    case 0:
        if (s->chat) {
            mock_buf_printf(&st->ev,
                            "%s,\"choices\":[{\"index\":0,"
                            "\"delta\":{},\"logprobs\":null,"
                            "\"finish_reason\":\"%s\"}]%s%s}\n\n",
                            s->prefix, fin, unull,
                            s->include_usage ? "" : tim);
        }
        else {
            mock_buf_printf(&st->ev,
                            "%s,\"choices\":[{\"index\":0,"
                            "\"text\":\"\",\"logprobs\":null,"
                            "\"finish_reason\":\"%s\"}]%s%s}\n\n",
                            s->prefix, fin, unull,
                            s->include_usage ? "" : tim);
        }
        return 1;
    case 1:
        mock_buf_printf(&st->ev,
                        "%s,\"choices\":[],\"usage\":"
                        "{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
                        "\"total_tokens\":%ld}%s}\n\n",
                        s->prefix, s->prompt_tokens, s->n,
                        s->prompt_tokens + s->n, tim);
        return 1;
    case 2:
        if (s->no_done) {
            return 0; /* some servers never send it */
        }
        mock_buf_puts(&st->ev, "data: [DONE]\n\n");
        return 1;
    default: return 0;
    }
}

static void sse_free(void *ctx)
{
    sse_t *s = ctx;

    free(s->prefix);
    free(s->qtool);
    free(s->timings);
    mock_buf_free(&s->piece);
    free(s);
}

static const mock_stream_ops_t chat_ops = { sse_head, sse_piece, sse_tail,
                                            sse_free };
static const mock_stream_ops_t text_ops = { NULL, sse_piece, sse_tail,
                                            sse_free };

static enum MHD_Result start_stream(struct MHD_Connection *conn,
                                    const gen_t *g, int include_usage,
                                    const mock_knobs_t *k, mock_job_t *job)
{
    mock_buf_t pb = { 0 };
    char *qmodel, *qfp;
    sse_t *s = calloc(1, sizeof(*s));
    long npieces;

    if (s == NULL) {
        return mock_stream_abort(&chat_ops, NULL, job);
    }
    qmodel = mock_json_quote(g->model, g->model_len);
    qfp = mock_json_quote(mock_cfg.fingerprint, strlen(mock_cfg.fingerprint));
    if (qmodel != NULL && qfp != NULL) {
        mock_buf_printf(&pb,
                        "data: {\"id\":\"%s\",\"object\":\"%s\","
                        "\"created\":%lld,\"model\":%s,"
                        "\"system_fingerprint\":%s",
                        g->id,
                        g->chat ? "chat.completion.chunk" : "text_completion",
                        (long long)g->created, qmodel, qfp);
    }
    free(qmodel);
    free(qfp);
    s->prefix = pb.data;
    if (qmodel == NULL || qfp == NULL || pb.failed) {
        return mock_stream_abort(&chat_ops, s, job);
    }
    if (g->tool != NULL) {
        s->qtool = mock_json_quote(g->tool, g->tool_len);
        if (s->qtool == NULL) {
            return mock_stream_abort(&chat_ops, s, job);
        }
    }
    if (mock_cfg.flavor == MOCK_FLAVOR_LLAMACPP) {
        mock_buf_t tb = { 0 };
        mock_timing_t tm;

        mock_timing(&tm, g->prompt_tokens, g->n, k, job);
        mock_buf_puts(&tb, ",");
        mock_timings_text(&tb, &tm);
        s->timings = tb.data;
        if (tb.failed) {
            return mock_stream_abort(&chat_ops, s, job);
        }
    }
    s->chat = g->chat;
    s->include_usage = include_usage;
    s->no_done = k->fault == MOCK_FAULT_NODONE;
    s->limited = g->limited;
    s->json_mode = g->json_mode;
    s->n = g->n;
    s->prompt_tokens = g->prompt_tokens;
    s->rng = mock_rng_init(g->hash);
    npieces =
        g->tool != NULL ? MOCK_TOOL_TOKENS : mock_pieces(g->n, g->json_mode);
    return mock_stream_start(conn, g->chat ? &chat_ops : &text_ops, s, npieces,
                             k, job, "text/event-stream");
}

/* ---- OpenAI: embeddings ------------------------------------------------- */

static enum MHD_Result embeddings(struct MHD_Connection *conn,
                                  struct json_object *req, const gen_t *g,
                                  const mock_knobs_t *k)
{
    struct json_object *input = mock_member(req, "input");
    struct json_object *fmt = mock_member(req, "encoding_format");
    size_t dim = (size_t)mock_cfg.embed_dim;
    size_t ntexts = 0, i, d;
    long words = 0;
    int b64 = 0;
    mock_buf_t b = { 0 };
    mock_job_t job;
    double *vec;
    float *fv;
    char *qmodel;

    if (input == NULL) {
        return missing_param(conn, "input");
    }
    if (mock_count_texts(input, &words, &ntexts) != 0) {
        return wrong_type(conn, "input", "a string or an array of strings");
    }
    if (ntexts == 0 || ntexts > MOCK_MAX_INPUTS) {
        return bad_request(conn,
                           "Invalid 'input': expected between 1 and "
                           "2048 items.",
                           "input");
    }
    if (fmt != NULL) {
        const char *f = json_object_get_string(fmt);

        if (json_object_is_type(fmt, json_type_string)
            && strcmp(f, "base64") == 0) {
            b64 = 1;
        }
        else if (!json_object_is_type(fmt, json_type_string)
                 || strcmp(f, "float") != 0) {
            return bad_request(conn,
                               "Invalid 'encoding_format': expected "
                               "'float' or 'base64'.",
                               "encoding_format");
        }
    }
    if (mock_job_begin(&job, g->model, g->model_len, k) != 0) {
        return MHD_NO;
    }
    /* Embeddings have no tokens to pace; ttft stands for their latency. */
    if (mock_simulate_latency((double)k->ttft_ms, k->fd) != 0) {
        mock_job_end(&job);
        return MHD_NO;
    }
    mock_job_end(&job);

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
        mock_buf_printf(&b,
                        "%s{\"object\":\"embedding\",\"index\":%zu,"
                        "\"embedding\":",
                        i ? "," : "", i);
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
    mock_buf_printf(&b,
                    "],\"model\":%s,\"usage\":{\"prompt_tokens\":%ld,"
                    "\"total_tokens\":%ld}}",
                    qmodel, words, words);
    free(vec);
    free(fv);
    free(qmodel);
    return mock_reply_json_buf(conn, &b, k);
}

/* ---- OpenAI: entry point ------------------------------------------------ */

static enum MHD_Result generate(struct MHD_Connection *conn,
                                mock_endpoint_t ep, struct json_object *req,
                                const mock_knobs_t *k)
{
    static const char *const limit_keys[] = { "max_tokens",
                                              "max_completion_tokens",
                                              "n_predict" };
    struct json_object *v, *payload;
    size_t ntexts, i;
    int stream = 0, include_usage = 0;
    mock_job_t job;
    char msg[160];
    gen_t g;

    memset(&g, 0, sizeof(g));
    v = mock_member(req, "model");
    if (v == NULL) {
        return missing_param(conn, "model");
    }
    if (!json_object_is_type(v, json_type_string)) {
        return wrong_type(conn, "model", "a string");
    }
    g.model = json_object_get_string(v);
    g.model_len = (size_t)json_object_get_string_len(v);
    if (!mock_model_known(g.model, g.model_len)) {
        mock_buf_t m = { 0 };
        enum MHD_Result ret;

        mock_buf_printf(&m, "The model `%s` does not exist.", g.model);
        ret = mock_reply_error(conn, MHD_HTTP_NOT_FOUND,
                               m.failed ? "The model does not exist." : m.data,
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
        payload = mock_member(req, "messages");
        if (payload == NULL) {
            return missing_param(conn, "messages");
        }
        if (!json_object_is_type(payload, json_type_array)) {
            return wrong_type(conn, "messages", "an array");
        }
        g.prompt_tokens = mock_count_messages(payload);
    }
    else {
        payload = mock_member(req, "prompt");
        if (payload == NULL) {
            return missing_param(conn, "prompt");
        }
        if (mock_count_texts(payload, &g.prompt_tokens, &ntexts) != 0) {
            return wrong_type(conn, "prompt",
                              "a string or an array of strings");
        }
    }

    for (i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++) {
        int64_t x;

        v = mock_member(req, limit_keys[i]);
        if (v == NULL) {
            continue;
        }
        if (json_object_is_type(v, json_type_int)) {
            x = json_object_get_int64(v);
            if (x < 0 && i == 2) {
                continue; /* llama.cpp: n_predict -1 = "until stop" */
            }
            if (x >= 0 && x <= MOCK_MAX_TOKENS) {
                g.n = (long)x;
                g.limited = 1;
                break;
            }
        }
        snprintf(msg, sizeof(msg),
                 "Invalid '%s': expected an integer "
                 "between 0 and %ld.",
                 limit_keys[i], MOCK_MAX_TOKENS);
        return bad_request(conn, msg, limit_keys[i]);
    }
    if (!g.limited) {
        g.n = k->tokens;
    }

    if (mock_member_bool(req, "stream", &stream) != 0) {
        return wrong_type(conn, "stream", "a boolean");
    }
    v = mock_member(req, "stream_options");
    if (stream && json_object_is_type(v, json_type_object)) {
        struct json_object *u = mock_member(v, "include_usage");

        include_usage = json_object_is_type(u, json_type_boolean)
                        && json_object_get_boolean(u);
    }

    g.json_mode = json_mode(req);
    if (g.chat) {
        g.tool = mock_tool_trigger(req, payload, &g.tool_len);
        if (g.tool != NULL) {
            g.n = MOCK_TOOL_TOKENS;
        }
    }
    g.hash = mock_request_hash(g.model, g.model_len, payload,
                               mock_member(req, "seed"));
    g.created = time(NULL);
    snprintf(g.id, sizeof(g.id), "%s%016" PRIx64,
             g.chat ? "chatcmpl-" : "cmpl-", g.hash);

    if (mock_job_begin(&job, g.model, g.model_len, k) != 0) {
        return MHD_NO;
    }
    if (stream) {
        return start_stream(conn, &g, include_usage, k, &job);
    }
    return complete(conn, &g, k, &job);
}

enum MHD_Result mock_generate(struct MHD_Connection *conn, mock_endpoint_t ep,
                              const char *body, size_t len,
                              const mock_knobs_t *knobs)
{
    struct json_object *req;
    enum MHD_Result ret;
    char why[128], msg[192];

    if (mock_parse_body(body, len, &req, why, sizeof(why)) != 0) {
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

/* ---- llama.cpp (--flavor llamacpp) ------------------------------------ */

/* The /completion request once validated. */
typedef struct {
    const char *model; /* borrowed */
    size_t model_len;
    long n;
    int limited;
    long prompt_tokens;
    uint64_t hash;
} llama_gen_t;

/* A /completion stream, after the access handler has returned. */
typedef struct {
    long n;
    long prompt_tokens;
    int limited;
    int slot;
    uint64_t rng;
    char *qmodel;
    char *timings; /* '"timings":{...}' */
    mock_buf_t piece;
} llama_stream_t;

/* llama.cpp's error shape: {"error":{"code":N,"message":..,"type":..}}. */
static enum MHD_Result llama_error(struct MHD_Connection *conn,
                                   unsigned int status, const char *message,
                                   const char *type)
{
    struct json_object *o = json_object_new_object();
    struct json_object *e = json_object_new_object();

    json_object_object_add(e, "code", json_object_new_int((int)status));
    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(e, "type", json_object_new_string(type));
    json_object_object_add(o, "error", e);
    return mock_reply_json(conn, status, o);
}

enum MHD_Result mock_llama_health(struct MHD_Connection *conn)
{
    if (mock_loading()) {
        return llama_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "Loading model",
                           "unavailable_error");
    }
    return mock_reply(conn, MHD_HTTP_OK, "application/json",
                      "{\"status\":\"ok\"}", 15, NULL);
}

enum MHD_Result mock_llama_slots(struct MHD_Connection *conn)
{
    return mock_reply_json(conn, MHD_HTTP_OK, mock_slots_json());
}

/* ---- vLLM: /metrics ----------------------------------------------------- */

/* Prometheus text (format 0.0.4) as prometheus_client serves it. */
enum MHD_Result mock_vllm_metrics(struct MHD_Connection *conn)
{
    mock_buf_t b = { 0 };
    enum MHD_Result ret;

    mock_metrics_text(&b);
    if (b.failed) {
        mock_buf_free(&b);
        return MHD_NO;
    }
    ret = mock_reply(conn, MHD_HTTP_OK,
                     "text/plain; version=0.0.4; "
                     "charset=utf-8",
                     b.data, b.len, NULL);
    mock_buf_free(&b);
    return ret;
}

/* ---- llama.cpp: timings ------------------------------------------------- */

/* The derived numbers, 0 where llama.cpp would divide by zero. */
static void timing_values(const mock_timing_t *t, double v[6])
{
    v[0] = t->prompt_ms;
    v[1] = t->prompt_n > 0 ? t->prompt_ms / (double)t->prompt_n : 0.0;
    v[2] =
        t->prompt_ms > 0.0 ? (double)t->prompt_n * 1000.0 / t->prompt_ms : 0.0;
    v[3] = t->predicted_ms;
    v[4] = t->predicted_n > 0 ? t->predicted_ms / (double)t->predicted_n : 0.0;
    v[5] = t->predicted_ms > 0.0
               ? (double)t->predicted_n * 1000.0 / t->predicted_ms
               : 0.0;
}

void mock_timings_text(mock_buf_t *b, const mock_timing_t *t)
{
    double v[6];

    timing_values(t, v);
    mock_buf_printf(b,
                    "\"timings\":{\"prompt_n\":%ld,\"prompt_ms\":%.3f,"
                    "\"prompt_per_token_ms\":%.3f,"
                    "\"prompt_per_second\":%.3f,\"predicted_n\":%ld,"
                    "\"predicted_ms\":%.3f,\"predicted_per_token_ms\":%.3f,"
                    "\"predicted_per_second\":%.3f}",
                    t->prompt_n, v[0], v[1], v[2], t->predicted_n, v[3], v[4],
                    v[5]);
}

static struct json_object *fixed3(double d)
{
    char s[64];

    snprintf(s, sizeof(s), "%.3f", d);
    return json_object_new_double_s(d, s);
}

struct json_object *mock_timings_json(const mock_timing_t *t)
{
    struct json_object *o = json_object_new_object();
    double v[6];

    timing_values(t, v);
    json_object_object_add(o, "prompt_n", json_object_new_int64(t->prompt_n));
    json_object_object_add(o, "prompt_ms", fixed3(v[0]));
    json_object_object_add(o, "prompt_per_token_ms", fixed3(v[1]));
    json_object_object_add(o, "prompt_per_second", fixed3(v[2]));
    json_object_object_add(o, "predicted_n",
                           json_object_new_int64(t->predicted_n));
    json_object_object_add(o, "predicted_ms", fixed3(v[3]));
    json_object_object_add(o, "predicted_per_token_ms", fixed3(v[4]));
    json_object_object_add(o, "predicted_per_second", fixed3(v[5]));
    return o;
}

/* ---- llama.cpp: /completion --------------------------------------------- */

static const char *stop_type(int limited)
{
    return limited ? "limit" : "eos";
}

static void ls_piece(mock_stream_t *st, long k)
{
    llama_stream_t *s = st->ctx;

    s->piece.len = 0;
    mock_piece(&s->piece, &s->rng, k, s->n, 0);
    mock_buf_puts(&st->ev, "data: {\"index\":0,\"content\":");
    mock_buf_jstr(&st->ev, s->piece.data ? s->piece.data : "", s->piece.len);
    mock_buf_printf(&st->ev,
                    ",\"tokens\":[],\"stop\":false,\"id_slot\":%d,"
                    "\"tokens_predicted\":%ld,\"tokens_evaluated\":%ld}\n\n",
                    s->slot, k + 1, s->prompt_tokens);
    if (s->piece.failed) {
        st->ev.failed = 1;
    }
}

/* The final event; llama.cpp's native stream has no [DONE]. */
static int ls_tail(mock_stream_t *st, int i)
{
    llama_stream_t *s = st->ctx;

    if (i > 0) {
        return 0;
    }
    mock_buf_printf(&st->ev,
                    "data: {\"index\":0,\"content\":\"\","
                    "\"tokens\":[],\"id_slot\":%d,\"stop\":true,"
                    "\"model\":%s,\"tokens_predicted\":%ld,"
                    "\"tokens_evaluated\":%ld,\"has_new_line\":false,"
                    "\"truncated\":false,\"stop_type\":\"%s\","
                    "\"stopping_word\":\"\",\"tokens_cached\":%ld,%s}\n\n",
                    s->slot, s->qmodel, s->n, s->prompt_tokens,
                    stop_type(s->limited), s->prompt_tokens, s->timings);
    return 1;
}

static void ls_free(void *ctx)
{
    llama_stream_t *s = ctx;

    free(s->qmodel);
    free(s->timings);
    mock_buf_free(&s->piece);
    free(s);
}

static const mock_stream_ops_t llama_ops = { NULL, ls_piece, ls_tail,
                                             ls_free };

static enum MHD_Result llama_stream(struct MHD_Connection *conn,
                                    const llama_gen_t *g,
                                    const mock_knobs_t *k, mock_job_t *job)
{
    llama_stream_t *s = calloc(1, sizeof(*s));
    mock_buf_t tb = { 0 };
    mock_timing_t tm;

    if (s == NULL) {
        return mock_stream_abort(&llama_ops, NULL, job);
    }
    mock_timing(&tm, g->prompt_tokens, g->n, k, job);
    mock_timings_text(&tb, &tm);
    s->timings = tb.data;
    s->qmodel = mock_json_quote(g->model, g->model_len);
    if (tb.failed || s->qmodel == NULL) {
        return mock_stream_abort(&llama_ops, s, job);
    }
    s->n = g->n;
    s->prompt_tokens = g->prompt_tokens;
    s->limited = g->limited;
    s->slot = job->slot;
    s->rng = mock_rng_init(g->hash);
    return mock_stream_start(conn, &llama_ops, s, g->n, k, job,
                             "text/event-stream");
}

static enum MHD_Result llama_complete(struct MHD_Connection *conn,
                                      const llama_gen_t *g,
                                      const mock_knobs_t *k, mock_job_t *job)
{
    struct json_object *o;
    mock_buf_t text = { 0 };
    mock_timing_t tm;
    int slot = job->slot;

    if (mock_whole_answer(k, job, g->hash, g->n, 0, &text) != 0) {
        return MHD_NO;
    }
    mock_timing(&tm, g->prompt_tokens, g->n, k, job);
    o = json_object_new_object();
    json_object_object_add(o, "index", json_object_new_int(0));
    json_object_object_add(
        o, "content",
        json_object_new_string_len(text.data ? text.data : "", (int)text.len));
    json_object_object_add(o, "tokens", json_object_new_array());
    json_object_object_add(o, "id_slot", json_object_new_int(slot));
    json_object_object_add(o, "stop", json_object_new_boolean(1));
    json_object_object_add(
        o, "model", json_object_new_string_len(g->model, (int)g->model_len));
    json_object_object_add(o, "tokens_predicted", json_object_new_int64(g->n));
    json_object_object_add(o, "tokens_evaluated",
                           json_object_new_int64(g->prompt_tokens));
    json_object_object_add(o, "has_new_line", json_object_new_boolean(0));
    json_object_object_add(o, "truncated", json_object_new_boolean(0));
    json_object_object_add(o, "stop_type",
                           json_object_new_string(stop_type(g->limited)));
    json_object_object_add(o, "stopping_word", json_object_new_string(""));
    json_object_object_add(o, "tokens_cached",
                           json_object_new_int64(g->prompt_tokens));
    json_object_object_add(o, "timings", mock_timings_json(&tm));
    mock_buf_free(&text);
    return mock_reply_json_k(conn, o, k);
}

static enum MHD_Result completion(struct MHD_Connection *conn,
                                  struct json_object *req,
                                  const mock_knobs_t *k)
{
    struct json_object *v, *prompt;
    size_t ntexts = 0, n;
    const char *const *names;
    int stream = 0;
    mock_job_t job;
    llama_gen_t g;
    char msg[160];

    memset(&g, 0, sizeof(g));
    /* llama.cpp serves its one model whatever the request says; without
     * a name we answer as the first model we list. */
    v = mock_member(req, "model");
    if (v != NULL && !json_object_is_type(v, json_type_string)) {
        return llama_error(conn, MHD_HTTP_BAD_REQUEST,
                           "\"model\" must be a string",
                           "invalid_request_error");
    }
    if (v != NULL) {
        g.model = json_object_get_string(v);
        g.model_len = (size_t)json_object_get_string_len(v);
        if (!mock_model_known(g.model, g.model_len)) {
            mock_buf_t m = { 0 };
            enum MHD_Result ret;

            mock_buf_puts(&m, "model '");
            mock_buf_put(&m, g.model, strnlen(g.model, g.model_len));
            mock_buf_puts(&m, "' not found");
            ret = llama_error(conn, MHD_HTTP_NOT_FOUND,
                              m.failed ? "model not found" : m.data,
                              "not_found_error");
            mock_buf_free(&m);
            return ret;
        }
    }
    else {
        names = mock_model_names(&n);
        g.model = names[0];
        g.model_len = strlen(names[0]);
    }

    prompt = mock_member(req, "prompt");
    if (prompt == NULL) {
        return llama_error(conn, MHD_HTTP_BAD_REQUEST,
                           "\"prompt\" must be provided",
                           "invalid_request_error");
    }
    if (mock_count_texts(prompt, &g.prompt_tokens, &ntexts) != 0) {
        return llama_error(conn, MHD_HTTP_BAD_REQUEST,
                           "\"prompt\" must be a string or an array of "
                           "strings",
                           "invalid_request_error");
    }

    /* -1: until the model stops */
    if (mock_token_limit(mock_member(req, "n_predict"), k->tokens, &g.n,
                         &g.limited)
        != 0) {
        snprintf(msg, sizeof(msg),
                 "\"n_predict\" must be an integer "
                 "of at most %ld",
                 MOCK_MAX_TOKENS);
        return llama_error(conn, MHD_HTTP_BAD_REQUEST, msg,
                           "invalid_request_error");
    }
    if (mock_member_bool(req, "stream", &stream) != 0) {
        return llama_error(conn, MHD_HTTP_BAD_REQUEST,
                           "\"stream\" must be a boolean",
                           "invalid_request_error");
    }
    g.hash = mock_request_hash(g.model, g.model_len, prompt,
                               mock_member(req, "seed"));

    if (mock_job_begin(&job, g.model, g.model_len, k) != 0) {
        return MHD_NO;
    }
    if (stream) {
        return llama_stream(conn, &g, k, &job);
    }
    return llama_complete(conn, &g, k, &job);
}

enum MHD_Result mock_llama_completion(struct MHD_Connection *conn,
                                      const char *body, size_t len,
                                      const mock_knobs_t *knobs)
{
    struct json_object *req;
    enum MHD_Result ret;
    char why[128], msg[192];

    if (mock_parse_body(body, len, &req, why, sizeof(why)) != 0) {
        snprintf(msg, sizeof(msg), "Invalid JSON in request body: %s", why);
        return llama_error(conn, MHD_HTTP_BAD_REQUEST, msg,
                           "invalid_request_error");
    }
    if (!json_object_is_type(req, json_type_object)) {
        json_object_put(req);
        return llama_error(conn, MHD_HTTP_BAD_REQUEST,
                           "The request body must be a JSON object.",
                           "invalid_request_error");
    }
    ret = completion(conn, req, knobs);
    json_object_put(req);
    return ret;
}

/* ---- Ollama: requests and errors ---------------------------------------- */

/* A chat or generate request once validated. */
typedef struct {
    int chat;
    const char *model; /* borrowed from the parsed request */
    size_t model_len;
    long n; /* eval_count */
    int limited;
    long prompt_tokens;
    uint64_t hash;
    int json_mode;
    int unload;       /* keep_alive 0: unload after answering */
    const char *tool; /* borrowed; non-NULL: answer a tool call */
    size_t tool_len;
} ol_gen_t;

/* An NDJSON stream, after the access handler has returned. */
typedef struct {
    int chat;
    int limited;
    int json_mode;
    int unload;
    long n;
    uint64_t rng;
    char *model; /* raw copy, for keep_alive 0 */
    size_t model_len;
    char *qmodel; /* as a JSON string */
    char *qtool;
    char *stats; /* '"total_duration":...' */
    mock_buf_t piece;
} ol_stream_t;

static enum MHD_Result ol_error(struct MHD_Connection *conn,
                                unsigned int status, const char *msg)
{
    return mock_reply_ollama_error(conn, status, msg, NULL);
}

static enum MHD_Result ol_not_found(struct MHD_Connection *conn,
                                    const char *model, size_t len)
{
    mock_buf_t m = { 0 };
    enum MHD_Result ret;

    mock_buf_puts(&m, "model '");
    mock_buf_put(&m, model, strnlen(model, len));
    mock_buf_puts(&m, "' not found");
    ret = ol_error(conn, MHD_HTTP_NOT_FOUND,
                   m.failed ? "model not found" : m.data);
    mock_buf_free(&m);
    return ret;
}

/* The model field every endpoint needs: 0 and *model set, or the error
 * already answered in *ret. */
static int ol_get_model(struct MHD_Connection *conn, struct json_object *req,
                        const char *key, const char **model, size_t *len,
                        enum MHD_Result *ret)
{
    struct json_object *v = mock_member(req, key);

    if (v == NULL
        || (json_object_is_type(v, json_type_string)
            && json_object_get_string_len(v) == 0)) {
        *ret = ol_error(conn, MHD_HTTP_BAD_REQUEST, "model is required");
        return -1;
    }
    if (!json_object_is_type(v, json_type_string)) {
        *ret = ol_error(conn, MHD_HTTP_BAD_REQUEST,
                        "invalid model: expected a string");
        return -1;
    }
    *model = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    if (!mock_model_known(*model, *len)) {
        *ret = ol_not_found(conn, *model, *len);
        return -1;
    }
    return 0;
}

/* The seconds of one Go duration unit at s ("ns", "us", "µs", "μs",
 * "ms", "s", "m", "h"), its length in *n; 0 for none of those. */
static double go_unit(const char *s, size_t *n)
{
    static const struct {
        const char *name;
        double secs;
    } units[] = { { "ns", 1e-9 },        { "us", 1e-6 }, { "\xc2\xb5s", 1e-6 },
                  { "\xce\xbcs", 1e-6 }, { "ms", 1e-3 }, { "s", 1 },
                  { "m", 60 },           { "h", 3600 } };
    size_t i, len = 0;

    while (s[len] && !(s[len] >= '0' && s[len] <= '9') && s[len] != '.') {
        len++;
    }
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strlen(units[i].name) == len
            && memcmp(s, units[i].name, len) == 0) {
            *n = len;
            return units[i].secs;
        }
    }
    return 0;
}

/* Go's time.ParseDuration: [-+]?(number unit)+, or "0". Returns 0 and the
 * value in *secs, or -1. */
static int go_duration(const char *s, double *secs)
{
    int neg = 0;

    *secs = 0;
    if (*s == '-' || *s == '+') {
        neg = *s++ == '-';
    }
    if (strcmp(s, "0") == 0) {
        return 0;
    }
    if (!*s) {
        return -1;
    }
    while (*s) {
        const char *start = s;
        double unit, v;
        size_t n;
        char *end;

        while ((*s >= '0' && *s <= '9') || *s == '.') {
            s++;
        }
        if (s == start || (s == start + 1 && *start == '.')) {
            return -1;
        }
        v = strtod(start, &end);
        if (end != s || (unit = go_unit(s, &n)) == 0) {
            return -1; /* a missing or unknown unit */
        }
        *secs += v * unit;
        s += n;
    }
    if (neg) {
        *secs = -*secs;
    }
    return 0;
}

/* keep_alive as Ollama reads it (api.Duration): absent or null, a number
 * of seconds, or a Go duration string; anything else is its 400, with
 * the message in msg. *zero: it is 0, "unload once answered". */
static int ol_keep_alive(struct json_object *v, int *zero, char *msg,
                         size_t size)
{
    double secs;

    *zero = 0;
    if (v == NULL || json_object_is_type(v, json_type_null)) {
        return 0;
    }
    if (json_object_is_type(v, json_type_int)
        || json_object_is_type(v, json_type_double)) {
        *zero = json_object_get_double(v) == 0.0;
        return 0;
    }
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(msg, size, "Unsupported type: '%s'",
                 json_object_is_type(v, json_type_boolean) ? "bool"
                 : json_object_is_type(v, json_type_array)
                     ? "[]interface {}"
                     : "map[string]interface {}");
        return -1;
    }
    if (go_duration(json_object_get_string(v), &secs) != 0) {
        snprintf(msg, size, "time: invalid duration \"%.64s\"",
                 json_object_get_string(v));
        return -1;
    }
    *zero = secs == 0.0;
    return 0;
}

/* think as Ollama reads it: a boolean, or "high", "medium", "low". */
static int ol_think_valid(struct json_object *v)
{
    const char *s;

    if (v == NULL || json_object_is_type(v, json_type_null)
        || json_object_is_type(v, json_type_boolean)) {
        return 1;
    }
    if (!json_object_is_type(v, json_type_string)) {
        return 0;
    }
    s = json_object_get_string(v);
    return strcmp(s, "high") == 0 || strcmp(s, "medium") == 0
           || strcmp(s, "low") == 0;
}

static void ol_created_at(char *out, size_t size)
{
    mock_rfc3339_now(out, size);
}

/* Ollama's durations, in nanoseconds, from the nominal timings. */
static void ol_durations(mock_buf_t *b, const mock_timing_t *t)
{
    long long load = (long long)(t->load_ms * 1e6);
    long long pe = (long long)(t->prompt_ms * 1e6);
    long long ev = (long long)(t->predicted_ms * 1e6);

    mock_buf_printf(b,
                    "\"total_duration\":%lld,\"load_duration\":%lld,"
                    "\"prompt_eval_count\":%ld,\"prompt_eval_duration\":%lld,"
                    "\"eval_count\":%ld,\"eval_duration\":%lld",
                    load + pe + ev, load, t->prompt_n, pe, t->predicted_n, ev);
}

static void ol_durations_json(struct json_object *o, const mock_timing_t *t)
{
    int64_t load = (int64_t)(t->load_ms * 1e6);
    int64_t pe = (int64_t)(t->prompt_ms * 1e6);
    int64_t ev = (int64_t)(t->predicted_ms * 1e6);

    json_object_object_add(o, "total_duration",
                           json_object_new_int64(load + pe + ev));
    json_object_object_add(o, "load_duration", json_object_new_int64(load));
    json_object_object_add(o, "prompt_eval_count",
                           json_object_new_int64(t->prompt_n));
    json_object_object_add(o, "prompt_eval_duration",
                           json_object_new_int64(pe));
    json_object_object_add(o, "eval_count",
                           json_object_new_int64(t->predicted_n));
    json_object_object_add(o, "eval_duration", json_object_new_int64(ev));
}

static const char *ol_done_reason(int limited)
{
    return limited ? "length" : "stop";
}

/* ---- Ollama: model descriptions ----------------------------------------- */

static struct json_object *ol_details_json(void)
{
    struct json_object *d = json_object_new_object();
    struct json_object *fam = json_object_new_array();

    json_object_array_add(fam, json_object_new_string("mock"));
    json_object_object_add(d, "parent_model", json_object_new_string(""));
    json_object_object_add(d, "format", json_object_new_string("gguf"));
    json_object_object_add(d, "family", json_object_new_string("mock"));
    json_object_object_add(d, "families", fam);
    json_object_object_add(d, "parameter_size", json_object_new_string("1B"));
    json_object_object_add(d, "quantization_level",
                           json_object_new_string("Q4_0"));
    return d;
}

static void ol_add_digest(struct json_object *o, const char *name, size_t len)
{
    char digest[72];

    memcpy(digest, "sha256:", 7);
    mock_digest(digest + 7, name, len);
    json_object_object_add(o, "digest", json_object_new_string(digest));
}

static struct json_object *ol_model_json(const char *name, size_t len,
                                         int with_modified)
{
    struct json_object *m = json_object_new_object();

    json_object_object_add(m, "name",
                           json_object_new_string_len(name, (int)len));
    json_object_object_add(m, "model",
                           json_object_new_string_len(name, (int)len));
    if (with_modified) {
        struct timespec ts = { MOCK_MODIFIED_AT, 0 };
        char when[48];

        mock_rfc3339(when, sizeof(when), &ts);
        /* Whole seconds, as a pulled model's mtime usually prints. */
        strcpy(when + 19, "Z");
        json_object_object_add(m, "modified_at", json_object_new_string(when));
    }
    json_object_object_add(m, "size", json_object_new_int64(MOCK_MODEL_SIZE));
    ol_add_digest(m, name, len);
    json_object_object_add(m, "details", ol_details_json());
    return m;
}

/* The part of an /api/ps entry that /api/tags shares. */
struct json_object *mock_ollama_model(const char *name, size_t len)
{
    return ol_model_json(name, len, 0);
}

static enum MHD_Result ol_tags(struct MHD_Connection *conn,
                               const mock_knobs_t *k)
{
    struct json_object *o = json_object_new_object();
    struct json_object *list = json_object_new_array();
    size_t n, i;
    const char *const *names = mock_model_names(&n);

    for (i = 0; i < n; i++) {
        json_object_array_add(list,
                              ol_model_json(names[i], strlen(names[i]), 1));
    }
    json_object_object_add(o, "models", list);
    return mock_reply_json_k(conn, o, k);
}

static enum MHD_Result ol_show(struct MHD_Connection *conn,
                               struct json_object *req, const mock_knobs_t *k)
{
    struct json_object *o, *info, *caps;
    const char *model;
    size_t len;
    enum MHD_Result ret;
    mock_buf_t mf = { 0 };
    struct timespec ts = { MOCK_MODIFIED_AT, 0 };
    char when[48];

    /* Older clients send "name". */
    if (ol_get_model(conn, req, mock_member(req, "model") ? "model" : "name",
                     &model, &len, &ret)
        != 0) {
        return ret;
    }
    mock_buf_puts(&mf, "# Modelfile generated by \"ollama show\"\n"
                       "# To build a new Modelfile based on this one, replace "
                       "the FROM line with:\n# FROM ");
    mock_buf_put(&mf, model, len);
    mock_buf_puts(&mf, "\n\nFROM ");
    mock_buf_put(&mf, model, len);
    mock_buf_puts(&mf, "\nTEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n"
                       "PARAMETER num_ctx 4096\n");
    if (mf.failed) {
        mock_buf_free(&mf);
        return MHD_NO;
    }
    o = json_object_new_object();
    json_object_object_add(o, "modelfile",
                           json_object_new_string_len(mf.data, (int)mf.len));
    mock_buf_free(&mf);
    json_object_object_add(
        o, "parameters",
        json_object_new_string("num_ctx                        4096"));
    json_object_object_add(o, "template",
                           json_object_new_string("{{ .Prompt }}"));
    json_object_object_add(o, "details", ol_details_json());
    info = json_object_new_object();
    json_object_object_add(info, "general.architecture",
                           json_object_new_string("mock"));
    json_object_object_add(info, "general.parameter_count",
                           json_object_new_int64(1000000000));
    json_object_object_add(info, "mock.context_length",
                           json_object_new_int(MOCK_MODEL_CTX));
    json_object_object_add(info, "mock.embedding_length",
                           json_object_new_int64(mock_cfg.embed_dim));
    json_object_object_add(o, "model_info", info);
    caps = json_object_new_array();
    json_object_array_add(caps, json_object_new_string("completion"));
    json_object_array_add(caps, json_object_new_string("tools"));
    json_object_object_add(o, "capabilities", caps);
    mock_rfc3339(when, sizeof(when), &ts);
    strcpy(when + 19, "Z");
    json_object_object_add(o, "modified_at", json_object_new_string(when));
    return mock_reply_json_k(conn, o, k);
}

/* ---- Ollama: embeddings ------------------------------------------------- */

static void ol_put_vector(mock_buf_t *b, const char *text, size_t len,
                          double *vec, size_t dim)
{
    size_t d;

    mock_embedding(text, len, vec, dim);
    for (d = 0; d < dim; d++) {
        mock_buf_printf(b, "%s%.6f", d ? "," : "[", vec[d]);
    }
    mock_buf_puts(b, "]");
}

/* /api/embed {input} and the legacy /api/embeddings {prompt}: the same
 * vectors as /v1/embeddings for the same text.  No text at all is a
 * "load the model" request, answered with no vectors. */
static enum MHD_Result ol_embed(struct MHD_Connection *conn,
                                struct json_object *req, int legacy,
                                const mock_knobs_t *k)
{
    struct json_object *input = mock_member(req, legacy ? "prompt" : "input");
    size_t dim = (size_t)mock_cfg.embed_dim, ntexts = 0, i;
    const char *model;
    size_t mlen;
    long words = 0;
    mock_buf_t b = { 0 };
    mock_timing_t tm;
    mock_job_t job;
    enum MHD_Result ret;
    double *vec;
    char *qmodel, why[128];
    int unload;

    if (ol_get_model(conn, req, "model", &model, &mlen, &ret) != 0) {
        return ret;
    }
    if (legacy) {
        if (input != NULL && !json_object_is_type(input, json_type_string)) {
            return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                            "invalid prompt: expected a string");
        }
        if (input != NULL && json_object_get_string_len(input) > 0) {
            mock_count_texts(input, &words, &ntexts);
        }
    }
    else if (input != NULL) {
        if (mock_count_texts(input, &words, &ntexts) != 0) {
            return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                            "invalid input type: expected a string or an "
                            "array of strings");
        }
        if (ntexts > MOCK_MAX_INPUTS) {
            return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                            "too many inputs: at most 2048");
        }
    }
    if (ol_keep_alive(mock_member(req, "keep_alive"), &unload, why,
                      sizeof(why))
        != 0) {
        return ol_error(conn, MHD_HTTP_BAD_REQUEST, why);
    }
    if (mock_job_begin(&job, model, mlen, k) != 0) {
        return MHD_NO;
    }
    if (mock_simulate_latency((double)k->ttft_ms, k->fd) != 0) {
        mock_job_end(&job);
        return MHD_NO;
    }
    mock_job_end(&job);
    if (unload) {
        mock_model_unload(model, mlen);
    }

    vec = malloc(dim * sizeof(*vec));
    qmodel = mock_json_quote(model, mlen);
    if (vec == NULL || qmodel == NULL) {
        free(vec);
        free(qmodel);
        return MHD_NO;
    }
    if (legacy) {
        mock_buf_puts(&b, "{\"embedding\":");
        if (ntexts == 0) {
            mock_buf_puts(&b, "[]");
        }
        else {
            ol_put_vector(&b, json_object_get_string(input),
                          (size_t)json_object_get_string_len(input), vec, dim);
        }
        mock_buf_puts(&b, "}");
    }
    else {
        mock_buf_printf(&b, "{\"model\":%s,\"embeddings\":[", qmodel);
        for (i = 0; i < ntexts && !b.failed; i++) {
            struct json_object *t = json_object_is_type(input, json_type_array)
                                        ? json_object_array_get_idx(input, i)
                                        : input;

            if (i > 0) {
                mock_buf_puts(&b, ",");
            }
            ol_put_vector(&b, json_object_get_string(t),
                          (size_t)json_object_get_string_len(t), vec, dim);
        }
        mock_timing(&tm, words, 0, k, &job);
        mock_buf_printf(&b,
                        "],\"total_duration\":%lld,"
                        "\"load_duration\":%lld,\"prompt_eval_count\":%ld}",
                        (long long)((tm.load_ms + tm.prompt_ms) * 1e6),
                        (long long)(tm.load_ms * 1e6), words);
    }
    free(vec);
    free(qmodel);
    return mock_reply_json_buf(conn, &b, k);
}

/* ---- Ollama: NDJSON streams --------------------------------------------- */

static void ol_line_start(mock_stream_t *st)
{
    ol_stream_t *s = st->ctx;
    char when[48];

    ol_created_at(when, sizeof(when));
    mock_buf_printf(&st->ev, "{\"model\":%s,\"created_at\":\"%s\",", s->qmodel,
                    when);
}

static void ol_piece(mock_stream_t *st, long k)
{
    ol_stream_t *s = st->ctx;

    ol_line_start(st);
    if (s->qtool != NULL) {
        /* Ollama sends a tool call whole, in one line. */
        mock_buf_printf(&st->ev,
                        "\"message\":{\"role\":\"assistant\","
                        "\"content\":\"\",\"tool_calls\":[{\"function\":"
                        "{\"name\":%s,\"arguments\":%s}}]},"
                        "\"done\":false}\n",
                        s->qtool, MOCK_TOOL_ARGS);
        return;
    }
    s->piece.len = 0;
    mock_piece(&s->piece, &s->rng, k, s->n, s->json_mode);
    mock_buf_puts(&st->ev, s->chat ? "\"message\":{\"role\":\"assistant\","
                                     "\"content\":"
                                   : "\"response\":");
    mock_buf_jstr(&st->ev, s->piece.data ? s->piece.data : "", s->piece.len);
    mock_buf_puts(&st->ev,
                  s->chat ? "},\"done\":false}\n" : ",\"done\":false}\n");
    if (s->piece.failed) {
        st->ev.failed = 1;
    }
}

static int ol_tail(mock_stream_t *st, int i)
{
    ol_stream_t *s = st->ctx;
    const char *reason = ol_done_reason(s->limited && s->qtool == NULL);

    if (i > 0) {
        return 0;
    }
    ol_line_start(st);
    if (s->chat) {
        mock_buf_printf(&st->ev,
                        "\"message\":{\"role\":\"assistant\","
                        "\"content\":\"\"},\"done_reason\":\"%s\","
                        "\"done\":true,%s}\n",
                        reason, s->stats);
    }
    else {
        mock_buf_printf(&st->ev,
                        "\"response\":\"\",\"done\":true,"
                        "\"done_reason\":\"%s\",%s}\n",
                        reason, s->stats);
    }
    if (s->unload) {
        mock_model_unload(s->model, s->model_len);
    }
    return 1;
}

static void ol_free(void *ctx)
{
    ol_stream_t *s = ctx;

    free(s->model);
    free(s->qmodel);
    free(s->qtool);
    free(s->stats);
    mock_buf_free(&s->piece);
    free(s);
}

static const mock_stream_ops_t ol_ops = { NULL, ol_piece, ol_tail, ol_free };

static enum MHD_Result ol_start_stream(struct MHD_Connection *conn,
                                       const ol_gen_t *g,
                                       const mock_knobs_t *k, mock_job_t *job)
{
    ol_stream_t *s = calloc(1, sizeof(*s));
    mock_buf_t sb = { 0 };
    mock_timing_t tm;
    long npieces;

    if (s == NULL) {
        return mock_stream_abort(&ol_ops, NULL, job);
    }
    mock_timing(&tm, g->prompt_tokens, g->n, k, job);
    ol_durations(&sb, &tm);
    s->stats = sb.data;
    s->qmodel = mock_json_quote(g->model, g->model_len);
    s->model = malloc(g->model_len + 1);
    if (g->tool != NULL) {
        s->qtool = mock_json_quote(g->tool, g->tool_len);
    }
    if (sb.failed || s->qmodel == NULL || s->model == NULL
        || (g->tool != NULL && s->qtool == NULL)) {
        return mock_stream_abort(&ol_ops, s, job);
    }
    memcpy(s->model, g->model, g->model_len);
    s->model[g->model_len] = '\0';
    s->model_len = g->model_len;
    s->chat = g->chat;
    s->limited = g->limited;
    s->json_mode = g->json_mode;
    s->unload = g->unload;
    s->n = g->n;
    s->rng = mock_rng_init(g->hash);
    /* The tool call is one line however many tokens it counts. */
    npieces = g->tool != NULL ? 1 : mock_pieces(g->n, g->json_mode);
    return mock_stream_start(conn, &ol_ops, s, npieces, k, job,
                             "application/x-ndjson");
}

/* ---- Ollama: answers ---------------------------------------------------- */

static struct json_object *ol_answer_head(const ol_gen_t *g)
{
    struct json_object *o = json_object_new_object();
    char when[48];

    ol_created_at(when, sizeof(when));
    json_object_object_add(
        o, "model", json_object_new_string_len(g->model, (int)g->model_len));
    json_object_object_add(o, "created_at", json_object_new_string(when));
    return o;
}

static struct json_object *ol_assistant(const char *content, size_t len)
{
    struct json_object *m = json_object_new_object();

    json_object_object_add(m, "role", json_object_new_string("assistant"));
    json_object_object_add(m, "content",
                           json_object_new_string_len(content, (int)len));
    return m;
}

static enum MHD_Result ol_complete(struct MHD_Connection *conn,
                                   const ol_gen_t *g, const mock_knobs_t *k,
                                   mock_job_t *job)
{
    struct json_object *o, *msg;
    mock_buf_t text = { 0 };
    mock_timing_t tm;
    enum MHD_Result ret;
    const char *reason = ol_done_reason(g->limited && g->tool == NULL);

    if (mock_whole_answer(k, job, g->hash, g->n, g->json_mode,
                          g->tool == NULL ? &text : NULL)
        != 0) {
        return MHD_NO;
    }
    mock_timing(&tm, g->prompt_tokens, g->n, k, job);
    o = ol_answer_head(g);
    if (g->chat) {
        msg = ol_assistant(text.data ? text.data : "", text.len);
        if (g->tool != NULL) {
            struct json_object *calls = json_object_new_array();
            struct json_object *c = json_object_new_object();
            struct json_object *f = json_object_new_object();
            struct json_object *args = json_object_new_object();

            json_object_object_add(args, "city",
                                   json_object_new_string("Paris"));
            json_object_object_add(
                f, "name",
                json_object_new_string_len(g->tool, (int)g->tool_len));
            json_object_object_add(f, "arguments", args);
            json_object_object_add(c, "function", f);
            json_object_array_add(calls, c);
            json_object_object_add(msg, "tool_calls", calls);
        }
        json_object_object_add(o, "message", msg);
        json_object_object_add(o, "done_reason",
                               json_object_new_string(reason));
        json_object_object_add(o, "done", json_object_new_boolean(1));
    }
    else {
        json_object_object_add(o, "response",
                               json_object_new_string_len(
                                   text.data ? text.data : "", (int)text.len));
        json_object_object_add(o, "done", json_object_new_boolean(1));
        json_object_object_add(o, "done_reason",
                               json_object_new_string(reason));
    }
    ol_durations_json(o, &tm);
    mock_buf_free(&text);
    ret = mock_reply_json_k(conn, o, k);
    if (g->unload) {
        mock_model_unload(g->model, g->model_len);
    }
    return ret;
}

/* Empty messages or prompt: Ollama loads (or with keep_alive 0 unloads)
 * the model and answers at once with done_reason "load" / "unload". */
static enum MHD_Result ol_load_request(struct MHD_Connection *conn,
                                       const ol_gen_t *g,
                                       const mock_knobs_t *k)
{
    struct json_object *o;
    mock_job_t job;

    if (g->unload) {
        mock_model_unload(g->model, g->model_len);
    }
    else {
        if (mock_job_begin(&job, g->model, g->model_len, k) != 0) {
            return MHD_NO;
        }
        mock_job_end(&job);
    }
    o = ol_answer_head(g);
    if (g->chat) {
        json_object_object_add(o, "message", ol_assistant("", 0));
        json_object_object_add(
            o, "done_reason",
            json_object_new_string(g->unload ? "unload" : "load"));
        json_object_object_add(o, "done", json_object_new_boolean(1));
    }
    else {
        json_object_object_add(o, "response", json_object_new_string(""));
        json_object_object_add(o, "done", json_object_new_boolean(1));
        json_object_object_add(
            o, "done_reason",
            json_object_new_string(g->unload ? "unload" : "load"));
    }
    return mock_reply_json_k(conn, o, k);
}

/* format: "json" or a schema object turn JSON mode on; "" and null are
 * "no format".  -1 for anything else. */
static int ol_format_mode(struct json_object *f)
{
    if (f == NULL) {
        return 0;
    }
    if (json_object_is_type(f, json_type_object)) {
        return 1;
    }
    if (json_object_is_type(f, json_type_string)) {
        const char *s = json_object_get_string(f);

        if (*s == '\0') {
            return 0;
        }
        if (strcmp(s, "json") == 0) {
            return 1;
        }
    }
    return -1;
}

static enum MHD_Result ol_generate(struct MHD_Connection *conn,
                                   struct json_object *req, int chat,
                                   const mock_knobs_t *k)
{
    struct json_object *payload, *v, *options, *seed = NULL;
    enum MHD_Result ret;
    int stream = 1, empty;
    mock_job_t job;
    char msg[128];
    ol_gen_t g;

    memset(&g, 0, sizeof(g));
    g.chat = chat;
    if (ol_get_model(conn, req, "model", &g.model, &g.model_len, &ret) != 0) {
        return ret;
    }
    if (chat) {
        payload = mock_member(req, "messages");
        if (payload != NULL
            && !json_object_is_type(payload, json_type_array)) {
            return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                            "invalid messages: expected an array");
        }
        v = mock_member(req, "tools");
        if (v != NULL && !json_object_is_type(v, json_type_array)) {
            return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                            "invalid tools: expected an array");
        }
        empty = payload == NULL || json_object_array_length(payload) == 0;
    }
    else {
        payload = mock_member(req, "prompt");
        if (payload != NULL
            && !json_object_is_type(payload, json_type_string)) {
            return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                            "invalid prompt: expected a string");
        }
        empty = payload == NULL || json_object_get_string_len(payload) == 0;
    }

    g.json_mode = ol_format_mode(mock_member(req, "format"));
    if (g.json_mode < 0) {
        return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                        "invalid format: expected \"json\" or a JSON "
                        "schema");
    }
    options = mock_member(req, "options");
    if (options != NULL && !json_object_is_type(options, json_type_object)) {
        return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                        "invalid options: expected an object");
    }
    /* -1 and -2: until the model stops */
    if (mock_token_limit(mock_member(options, "num_predict"), k->tokens, &g.n,
                         &g.limited)
        != 0) {
        snprintf(msg, sizeof(msg),
                 "invalid options.num_predict: "
                 "expected an integer of at most %ld",
                 MOCK_MAX_TOKENS);
        return ol_error(conn, MHD_HTTP_BAD_REQUEST, msg);
    }
    seed = mock_member(options, "seed");
    if (mock_member_bool(req, "stream", &stream) != 0) {
        return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                        "invalid stream: expected a boolean");
    }
    if (ol_keep_alive(mock_member(req, "keep_alive"), &g.unload, msg,
                      sizeof(msg))
        != 0) {
        return ol_error(conn, MHD_HTTP_BAD_REQUEST, msg);
    }
    if (!ol_think_valid(mock_member(req, "think"))) {
        return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                        "invalid think value: expected a boolean or "
                        "\"high\", \"medium\", \"low\"");
    }
    if (empty) {
        return ol_load_request(conn, &g, k);
    }

    if (chat) {
        g.prompt_tokens = mock_count_messages(payload);
        g.tool = mock_tool_trigger(req, payload, &g.tool_len);
        if (g.tool != NULL) {
            g.n = MOCK_TOOL_TOKENS;
        }
    }
    else {
        g.prompt_tokens =
            mock_count_words(json_object_get_string(payload),
                             (size_t)json_object_get_string_len(payload));
    }
    g.hash = mock_request_hash(g.model, g.model_len, payload, seed);

    if (mock_job_begin(&job, g.model, g.model_len, k) != 0) {
        return MHD_NO;
    }
    if (stream) {
        return ol_start_stream(conn, &g, k, &job);
    }
    return ol_complete(conn, &g, k, &job);
}

/* ---- Ollama: entry point ------------------------------------------------ */

enum MHD_Result mock_ollama(struct MHD_Connection *conn, mock_ollama_ep_t ep,
                            const char *body, size_t len,
                            const mock_knobs_t *knobs)
{
    struct json_object *req;
    enum MHD_Result ret;
    char why[128], msg[192];

    switch (ep) {
    case MOCK_OL_TAGS: return ol_tags(conn, knobs);
    case MOCK_OL_PS: return mock_reply_json_k(conn, mock_ps_json(), knobs);
    case MOCK_OL_VERSION:
        return mock_reply_body(
            conn, "application/json", "{\"version\":\"" OLLAMA_VERSION "\"}",
            sizeof("{\"version\":\"" OLLAMA_VERSION "\"}") - 1, knobs);
    default: break;
    }

    if (mock_parse_body(body, len, &req, why, sizeof(why)) != 0) {
        snprintf(msg, sizeof(msg), "invalid JSON in request body: %s", why);
        return ol_error(conn, MHD_HTTP_BAD_REQUEST, msg);
    }
    if (!json_object_is_type(req, json_type_object)) {
        json_object_put(req);
        return ol_error(conn, MHD_HTTP_BAD_REQUEST,
                        "the request body must be a JSON object");
    }
    switch (ep) {
    case MOCK_OL_CHAT: ret = ol_generate(conn, req, 1, knobs); break;
    case MOCK_OL_GENERATE: ret = ol_generate(conn, req, 0, knobs); break;
    case MOCK_OL_EMBED: ret = ol_embed(conn, req, 0, knobs); break;
    case MOCK_OL_EMBEDDINGS: ret = ol_embed(conn, req, 1, knobs); break;
    default: ret = ol_show(conn, req, knobs); break;
    }
    json_object_put(req);
    return ret;
}
