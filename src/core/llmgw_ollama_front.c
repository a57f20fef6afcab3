/* llmgw_ollama_front: Ollama clients (LLMApi ollama) served by an
 * OpenAI-style backend: requests, answers and SSE streams translated as
 * llmgw_ollama.c's mapping (B) says. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_base64.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "llmgw_ollama_int.h"

/* ---------------------------------------------------------------------
 * B.4 The OpenAI request for an Ollama one
 */

static const llmgw_path_ep_t ollama_paths[] = {
    { "/chat", LLMGW_OLLAMA_EP_CHAT },
    { "/generate", LLMGW_OLLAMA_EP_GENERATE },
    { "/embed", LLMGW_OLLAMA_EP_EMBED },
    { "/embeddings", LLMGW_OLLAMA_EP_EMBEDDINGS },
    { NULL, LLMGW_OLLAMA_EP_NONE },
};

llmgw_ollama_ep_t llmgw_ollama_endpoint_parse(const char *path)
{
    return llmgw_path_ep(llmgw_path_below(path, "/api"), ollama_paths);
}

llmgw_endpoint_t llmgw_ollama_openai_endpoint(llmgw_ollama_ep_t oep)
{
    switch (oep) {
    case LLMGW_OLLAMA_EP_CHAT: return LLMGW_EP_CHAT;
    case LLMGW_OLLAMA_EP_GENERATE: return LLMGW_EP_COMPLETIONS;
    case LLMGW_OLLAMA_EP_EMBED:
    case LLMGW_OLLAMA_EP_EMBEDDINGS: return LLMGW_EP_EMBEDDINGS;
    default: return LLMGW_EP_NONE;
    }
}

const char *llmgw_ollama_error_json(apr_pool_t *p, const char *message)
{
    return apr_pstrcat(p, "{\"error\":", llmgw_json_quote(p, message), "}",
                       NULL);
}

/* Ollama's errors are one message; the other fields serve the logs. */
static int ofail(llmgw_error_t *err, int status, const char *message)
{
    return llmgw_error_set(
        err, status, status >= 500 ? "server_error" : "invalid_request_error",
        NULL, NULL, message);
}

/* An image of Ollama's (bare base64) as a data: URL. The type is read
 * from the first bytes, which base64 spells the same for every file. */
static const char *image_url(apr_pool_t *p, const char *b64)
{
    const char *type = "png";

    if (strncasecmp(b64, "data:", 5) == 0) {
        return b64;
    }
    if (strncmp(b64, "/9j/", 4) == 0) {
        type = "jpeg";
    }
    else if (strncmp(b64, "R0lGOD", 6) == 0) {
        type = "gif";
    }
    else if (strncmp(b64, "UklGR", 5) == 0) {
        type = "webp";
    }
    return apr_pstrcat(p, "data:image/", type, ";base64,", b64, NULL);
}

static int front_options(apr_pool_t *p, const llmgw_json_t *in,
                         llmgw_json_t *out, llmgw_error_t *err)
{
    const char *const *k;
    llmgw_json_type_t t = llmgw_json_type(in, "options", NULL);
    llmgw_json_t *opts = llmgw_json_getj(in, "options", NULL), *stop;
    apr_size_t i, n;

    if (ol_absent(t)) {
        return 0;
    }
    if (t != LLMGW_JSON_OBJECT) {
        return ofail(err, 400, "options must be an object");
    }
    for (k = ol_same_options; *k; k++) {
        t = llmgw_json_type(opts, *k, NULL);
        if (ol_is_num(t)) {
            llmgw_json_setj(out, llmgw_json_getj(opts, *k, NULL), *k, NULL);
        }
        else if (!ol_absent(t)) {
            return ofail(err, 400,
                         apr_psprintf(p,
                                      "option \"%s\" must be "
                                      "a number",
                                      *k));
        }
    }
    t = llmgw_json_type(opts, "num_predict", NULL);
    if (ol_is_num(t)) {
        apr_int64_t max = llmgw_json_getl(opts, 0, "num_predict", NULL);

        /* -1 (no limit) and -2 (fill the context) have no OpenAI form. */
        if (max > 0) {
            llmgw_json_setl(out, max, "max_tokens", NULL);
        }
    }
    else if (!ol_absent(t)) {
        return ofail(err, 400, "option \"num_predict\" must be a number");
    }
    t = llmgw_json_type(opts, "stop", NULL);
    stop = llmgw_json_getj(opts, "stop", NULL);
    if (t == LLMGW_JSON_ARRAY) {
        for (i = 0, n = ol_len_of(stop); i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(stop, i), NULL)
                != LLMGW_JSON_STRING) {
                return ofail(err, 400,
                             "option \"stop\" must be an array "
                             "of strings");
            }
        }
        if (n) {
            llmgw_json_setj(out, stop, "stop", NULL);
        }
    }
    else if (t == LLMGW_JSON_STRING) {
        llmgw_json_setj(out, stop, "stop", NULL);
    }
    else if (!ol_absent(t)) {
        return ofail(err, 400,
                     "option \"stop\" must be an array of "
                     "strings");
    }
    return 0;
}

static int front_format(const llmgw_json_t *in, llmgw_json_t *out,
                        llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(in, "format", NULL);
    const char *f = llmgw_json_gets(in, "format", NULL);

    if (ol_absent(t) || (f && !*f)) {
        return 0;
    }
    if (f && strcmp(f, "json") == 0) {
        llmgw_json_sets(out, "json_object", "response_format", "type", NULL);
        return 0;
    }
    if (t == LLMGW_JSON_OBJECT) {
        llmgw_json_sets(out, "json_schema", "response_format", "type", NULL);
        llmgw_json_sets(out, "schema", "response_format", "json_schema",
                        "name", NULL);
        llmgw_json_setj(out, llmgw_json_getj(in, "format", NULL),
                        "response_format", "json_schema", "schema", NULL);
        return 0;
    }
    return ofail(err, 400,
                 "invalid format: expected \"json\" or a JSON "
                 "schema");
}

static void front_think(const llmgw_json_t *in, llmgw_json_t *out)
{
    const char *t = llmgw_json_gets(in, "think", NULL);

    if (!t) {
        return; /* a boolean: OpenAI has no switch */
    }
    if (strcmp(t, "low") == 0 || strcmp(t, "medium") == 0
        || strcmp(t, "high") == 0) {
        llmgw_json_sets(out, t, "reasoning_effort", NULL);
    }
    else if (strcmp(t, "max") == 0) {
        llmgw_json_sets(out, "high", "reasoning_effort", NULL);
    }
}

/* An assistant tool call not answered yet, for tool messages that only
 * name their tool. */
typedef struct {
    const char *id;
    const char *name;
    int answered;
} open_call_t;

static int front_tool_calls(apr_pool_t *p, const llmgw_json_t *m,
                            llmgw_json_t *om, apr_array_header_t *open,
                            int *ncalls, llmgw_error_t *err)
{
    llmgw_json_t *calls = llmgw_json_getj(m, "tool_calls", NULL), *oc;
    apr_size_t i, n = ol_len_of(calls);

    if (!n) {
        return 0;
    }
    apr_array_clear(open);
    oc = llmgw_json_add_array(om, "tool_calls");
    for (i = 0; i < n; i++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, i);
        llmgw_json_t *o = llmgw_json_array_add_object(oc);
        const char *id = llmgw_json_gets(tc, "id", NULL);
        const char *name = llmgw_json_gets(tc, "function", "name", NULL);
        open_call_t *call;

        if (!name) {
            return ofail(err, 400, "tool call function name is required");
        }
        if (!id || !*id) {
            id = apr_psprintf(p, "call_%d", *ncalls);
        }
        (*ncalls)++;
        ol_openai_call(o, id, name, tc);
        call = apr_array_push(open);
        call->id = id;
        call->name = name;
        call->answered = 0;
    }
    return 0;
}

/* The id a tool message answers: its own, else that of the first open
 * call of its tool, else (no name either) of the first open call. */
static const char *front_call_id(apr_pool_t *p, const llmgw_json_t *m,
                                 apr_array_header_t *open, int *ncalls)
{
    const char *id = llmgw_json_gets(m, "tool_call_id", NULL);
    const char *name = llmgw_json_gets(m, "tool_name", NULL);
    open_call_t *c, *hit = NULL;
    int i;

    for (i = 0; i < open->nelts && !hit; i++) {
        c = &APR_ARRAY_IDX(open, i, open_call_t);
        if (!c->answered
            && (id ? strcmp(c->id, id) == 0
                   : (name && strcmp(c->name, name) == 0))) {
            hit = c;
        }
    }
    for (i = 0; i < open->nelts && !hit && !id; i++) {
        c = &APR_ARRAY_IDX(open, i, open_call_t);
        if (!c->answered) {
            hit = c;
        }
    }
    if (hit) {
        hit->answered = 1;
        return hit->id;
    }
    return id ? id : apr_psprintf(p, "call_%d", (*ncalls)++);
}

static int front_messages(apr_pool_t *p, const llmgw_json_t *in,
                          llmgw_json_t *out, llmgw_error_t *err)
{
    llmgw_json_t *msgs = llmgw_json_getj(in, "messages", NULL), *omsgs;
    apr_array_header_t *open = apr_array_make(p, 4, sizeof(open_call_t));
    apr_size_t i, n = ol_len_of(msgs);
    int ncalls = 0, rv;

    if (llmgw_json_type(in, "messages", NULL) != LLMGW_JSON_ARRAY || !n) {
        return ofail(err, 400, "messages must be an array");
    }
    omsgs = llmgw_json_add_array(out, "messages");
    for (i = 0; i < n; i++) {
        llmgw_json_t *m = llmgw_json_array_get(msgs, i), *om, *imgs;
        const char *role = llmgw_json_gets(m, "role", NULL);
        llmgw_json_type_t t = llmgw_json_type(m, "content", NULL);
        apr_size_t k, nimg;
        char *r;

        if (!role || !*role) {
            return ofail(err, 400,
                         apr_psprintf(p,
                                      "messages[%" APR_SIZE_T_FMT "].role is "
                                      "required",
                                      i));
        }
        if (t != LLMGW_JSON_STRING && !ol_absent(t)) {
            return ofail(err, 400,
                         apr_psprintf(p,
                                      "messages[%" APR_SIZE_T_FMT "].content "
                                      "must be a string",
                                      i));
        }
        /* Ollama reads roles in any case. */
        r = apr_pstrdup(p, role);
        for (k = 0; r[k]; k++) {
            r[k] = (char)apr_tolower(r[k]);
        }
        om = llmgw_json_array_add_object(omsgs);
        llmgw_json_sets(om, r, "role", NULL);
        imgs = llmgw_json_getj(m, "images", NULL);
        nimg = ol_len_of(imgs);
        if (!nimg) {
            if (t == LLMGW_JSON_STRING) {
                llmgw_json_setj(om, llmgw_json_getj(m, "content", NULL),
                                "content", NULL);
            }
            else {
                llmgw_json_sets(om, "", "content", NULL);
            }
        }
        else {
            llmgw_json_t *parts = llmgw_json_add_array(om, "content"), *pt;
            const char *text = llmgw_json_gets(m, "content", NULL);

            if (text && *text) {
                pt = llmgw_json_array_add_object(parts);
                llmgw_json_sets(pt, "text", "type", NULL);
                llmgw_json_sets(pt, text, "text", NULL);
            }
            for (k = 0; k < nimg; k++) {
                const char *b64 =
                    llmgw_json_gets(llmgw_json_array_get(imgs, k), NULL);

                if (!b64) {
                    return ofail(err, 400, "images must be base64 strings");
                }
                pt = llmgw_json_array_add_object(parts);
                llmgw_json_sets(pt, "image_url", "type", NULL);
                llmgw_json_sets(pt, image_url(p, b64), "image_url", "url",
                                NULL);
            }
        }
        if (strcmp(r, "assistant") == 0) {
            if ((rv = front_tool_calls(p, m, om, open, &ncalls, err)) != 0) {
                return rv;
            }
        }
        else if (strcmp(r, "tool") == 0) {
            llmgw_json_sets(om, front_call_id(p, m, open, &ncalls),
                            "tool_call_id", NULL);
        }
    }
    return 0;
}

static int front_generate(const llmgw_json_t *in, llmgw_json_t *out,
                          llmgw_ollama_extra_t *x, llmgw_error_t *err)
{
    const char *prompt = llmgw_json_gets(in, "prompt", NULL);
    const char *system = llmgw_json_gets(in, "system", NULL);

    if (!prompt) {
        return ofail(err, 400, "prompt must be a string");
    }
    /* What /v1/completions has no place for: an Ollama backend still
     * serves it as it came. */
    if (system && *system) {
        ofail(&x->refusal, 400,
              "system is not supported by /api/generate "
              "through this gateway for this model: use /api/chat");
    }
    else if (ol_len_of(llmgw_json_getj(in, "images", NULL))) {
        ofail(&x->refusal, 400,
              "images are not supported by /api/generate "
              "through this gateway for this model: use /api/chat");
    }
    llmgw_json_setj(out, llmgw_json_getj(in, "prompt", NULL), "prompt", NULL);
    if (llmgw_json_type(in, "suffix", NULL) == LLMGW_JSON_STRING
        && *llmgw_json_gets(in, "suffix", NULL)) {
        llmgw_json_setj(out, llmgw_json_getj(in, "suffix", NULL), "suffix",
                        NULL);
    }
    return 0;
}

static int front_embed(llmgw_ollama_ep_t oep, const llmgw_json_t *in,
                       llmgw_json_t *out, llmgw_error_t *err)
{
    const char *key = oep == LLMGW_OLLAMA_EP_EMBED ? "input" : "prompt";
    llmgw_json_type_t t = llmgw_json_type(in, key, NULL);
    llmgw_json_t *v = llmgw_json_getj(in, key, NULL);
    apr_size_t i, n = ol_len_of(v);

    if (t == LLMGW_JSON_ARRAY && oep == LLMGW_OLLAMA_EP_EMBED && n) {
        for (i = 0; i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(v, i), NULL)
                != LLMGW_JSON_STRING) {
                return ofail(err, 400,
                             "input must be a string or an "
                             "array of strings");
            }
        }
    }
    else if (t != LLMGW_JSON_STRING) {
        return ofail(err, 400,
                     oep == LLMGW_OLLAMA_EP_EMBED
                         ? "input must be a string or an array "
                           "of strings"
                         : "prompt is required");
    }
    llmgw_json_setj(out, v, "input", NULL);
    if (ol_is_num(llmgw_json_type(in, "dimensions", NULL))) {
        llmgw_json_setj(out, llmgw_json_getj(in, "dimensions", NULL),
                        "dimensions", NULL);
    }
    llmgw_json_sets(out, "float", "encoding_format", NULL);
    return 0;
}

/* The seconds of the Go duration unit at s ("ns", "us", "µs", "ms", "s",
 * "m", "h"), its length in *n; 0 for none. */
static double duration_unit(const char *s, apr_size_t *n)
{
    static const struct {
        const char *name;
        double secs;
    } units[] = { { "ns", 1e-9 },        { "us", 1e-6 }, { "\xc2\xb5s", 1e-6 },
                  { "\xce\xbcs", 1e-6 }, { "ms", 1e-3 }, { "s", 1 },
                  { "m", 60 },           { "h", 3600 } };
    apr_size_t i, len = 0;

    while (s[len] && !apr_isdigit(s[len]) && s[len] != '.') {
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

/* A duration as Go's time.ParseDuration reads it, which is how Ollama
 * reads keep_alive: [-+]?(number unit)+, or "0". 0 with its seconds in
 * *secs, or -1. */
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
        apr_size_t n;
        char *end;

        while (apr_isdigit(*s) || *s == '.') {
            s++;
        }
        if (s == start || (s == start + 1 && *start == '.')) {
            return -1;
        }
        v = strtod(start, &end);
        if (end != s || (unit = duration_unit(s, &n)) == 0) {
            return -1;
        }
        *secs += v * unit;
        s += n;
    }
    *secs = neg ? -*secs : *secs;
    return 0;
}

/* Ollama's keep_alive (api.Duration): absent or null, seconds as a
 * number, or a duration string; anything else is a 400 with Ollama's
 * words. *zero: it is 0, "unload now". */
static int keep_alive(apr_pool_t *p, const llmgw_json_t *in, int *zero,
                      llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(in, "keep_alive", NULL);
    const char *v = llmgw_json_gets(in, "keep_alive", NULL);
    double secs;

    *zero = 0;
    if (ol_absent(t)) {
        return 0;
    }
    if (ol_is_num(t)) {
        *zero = llmgw_json_getd(in, 1, "keep_alive", NULL) == 0;
        return 0;
    }
    if (!v) {
        return ofail(err, 400,
                     apr_psprintf(p, "Unsupported type: '%s'",
                                  t == LLMGW_JSON_BOOL ? "bool"
                                  : t == LLMGW_JSON_ARRAY
                                      ? "[]interface {}"
                                      : "map[string]interface {}"));
    }
    if (go_duration(v, &secs) != 0) {
        return ofail(err, 400,
                     apr_psprintf(p, "time: invalid duration %s",
                                  llmgw_json_quote(p, v)));
    }
    *zero = secs == 0;
    return 0;
}

/* Ollama's load request: nothing to generate from. */
static int is_load(llmgw_ollama_ep_t oep, const llmgw_json_t *in)
{
    const char *key = oep == LLMGW_OLLAMA_EP_CHAT    ? "messages"
                      : oep == LLMGW_OLLAMA_EP_EMBED ? "input"
                                                     : "prompt";
    llmgw_json_type_t t = llmgw_json_type(in, key, NULL);
    const char *str = llmgw_json_gets(in, key, NULL);

    return ol_absent(t) || (str && !*str)
           || (t == LLMGW_JSON_ARRAY
               && !ol_len_of(llmgw_json_getj(in, key, NULL)));
}

/* Whether the request holds what its OpenAI view leaves out and that may
 * change the answer: options other than the mapped ones, members the
 * mapping drops (raw, template, context, system, images of generate,
 * think as a boolean, a message's thinking, truncate...). Those go to an
 * Ollama backend as they came, so they must count in the cache key. */
static int beyond_openai(llmgw_ollama_ep_t oep, const llmgw_json_t *in)
{
    static const char *const chat[] = { "model",  "messages",   "tools",
                                        "format", "options",    "stream",
                                        "think",  "keep_alive", NULL };
    static const char *const gen[] = { "model",  "prompt",     "suffix",
                                       "format", "options",    "stream",
                                       "think",  "keep_alive", NULL };
    static const char *const embed[] = { "model",      "input",      "prompt",
                                         "dimensions", "keep_alive", NULL };
    static const char *const opts[] = { "temperature",
                                        "top_p",
                                        "top_k",
                                        "seed",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "num_predict",
                                        "stop",
                                        NULL };
    static const char *const msg[] = {
        "role",         "content",   "images", "tool_calls",
        "tool_call_id", "tool_name", NULL
    };
    const char *think = llmgw_json_gets(in, "think", NULL);
    llmgw_json_t *msgs = llmgw_json_getj(in, "messages", NULL);
    apr_size_t i, n = ol_len_of(msgs);

    if (!llmgw_json_keys_within(in, oep == LLMGW_OLLAMA_EP_CHAT       ? chat
                                    : oep == LLMGW_OLLAMA_EP_GENERATE ? gen
                                                                      : embed)
        || !llmgw_json_keys_within(llmgw_json_getj(in, "options", NULL), opts)
        || (!ol_absent(llmgw_json_type(in, "think", NULL))
            && (!think || strcmp(think, "max") == 0))) {
        return 1;
    }
    for (i = 0; i < n; i++) {
        if (!llmgw_json_keys_within(llmgw_json_array_get(msgs, i), msg)) {
            return 1;
        }
    }
    return 0;
}

/* The OpenAI view of the request's members, into out. */
static int front_translate(apr_pool_t *p, llmgw_ollama_ep_t oep,
                           const llmgw_json_t *in, llmgw_json_t *out,
                           llmgw_request_t *req, llmgw_ollama_extra_t *x,
                           llmgw_error_t *err)
{
    int rv;

    if (x->load) {
        /* Nothing to translate: only the model and the stream flag. */
        req->stream = llmgw_json_getb(in, 1, "stream", NULL);
        return 0;
    }
    switch (oep) {
    case LLMGW_OLLAMA_EP_CHAT:
        rv = front_messages(p, in, out, err);
        if (!rv && ol_len_of(llmgw_json_getj(in, "tools", NULL))) {
            llmgw_json_setj(out, llmgw_json_getj(in, "tools", NULL), "tools",
                            NULL);
        }
        break;
    case LLMGW_OLLAMA_EP_GENERATE: rv = front_generate(in, out, x, err); break;
    default: rv = front_embed(oep, in, out, err); break;
    }
    if (rv) {
        return rv;
    }
    if (req->ep != LLMGW_EP_EMBEDDINGS) {
        if ((rv = front_format(in, out, err)) != 0
            || (rv = front_options(p, in, out, err)) != 0) {
            return rv;
        }
        front_think(in, out);
        /* Ollama streams unless told not to. */
        req->stream = llmgw_json_getb(in, 1, "stream", NULL);
        llmgw_json_setb(out, req->stream, "stream", NULL);
        if (req->stream) {
            llmgw_json_setb(out, 1, "stream_options", "include_usage", NULL);
            req->wants_usage = 1;
        }
    }
    return 0;
}

int llmgw_ollama_front_parse(apr_pool_t *p, llmgw_ollama_ep_t oep,
                             const char *buf, apr_size_t len,
                             llmgw_request_t *req, const char **body,
                             apr_size_t *blen, llmgw_ollama_extra_t *x,
                             llmgw_error_t *err)
{
    llmgw_json_err_t jerr;
    const char *msg, *model;
    llmgw_json_t *in, *out;
    llmgw_json_type_t t;
    int rv;

    memset(req, 0, sizeof(*req));
    memset(x, 0, sizeof(*x));
    req->pool = p;
    req->ep = llmgw_ollama_openai_endpoint(oep);
    if (req->ep == LLMGW_EP_NONE) {
        return ofail(err, 404, "not found");
    }
    in = llmgw_json_read(p, buf, len, &jerr, &msg);
    if (!in) {
        return ofail(err, 400, apr_psprintf(p, "invalid JSON: %s", msg));
    }
    if (llmgw_json_type(in, NULL) != LLMGW_JSON_OBJECT) {
        return ofail(err, 400, "the request body must be a JSON object");
    }
    x->view = in;
    model = llmgw_json_gets(in, "model", NULL);
    if (!model || !*model) {
        return ofail(err, 400, "model is required");
    }
    t = llmgw_json_type(in, "stream", NULL);
    if (!ol_absent(t) && t != LLMGW_JSON_BOOL) {
        return ofail(err, 400, "stream must be a boolean");
    }
    if ((rv = keep_alive(p, in, &x->unload, err)) != 0) {
        return rv;
    }
    x->load = is_load(oep, in);
    x->unload = x->load && x->unload;
    x->beyond = beyond_openai(oep, in);
    out = llmgw_json_create_object(p);
    req->model = apr_pstrdup(p, model);
    req->body = out;
    llmgw_json_sets(out, req->model, "model", NULL);
    if ((rv = front_translate(p, oep, in, out, req, x, err)) != 0) {
        return rv;
    }
    /* From here on the request is what any OpenAI client's would be: a
     * read view of the bytes that go upstream (so that the cache key and
     * the edits for the backend see exactly those). */
    *body = llmgw_json_write(out, blen);
    req->body = llmgw_json_read(p, *body, *blen, &jerr, &msg);
    if (!req->body) {
        return ofail(err, 500,
                     apr_psprintf(p,
                                  "the gateway could not read "
                                  "its own translation: %s",
                                  msg));
    }
    return 0;
}

int llmgw_ollama_front_request(apr_pool_t *p, llmgw_ollama_ep_t oep,
                               const char *buf, apr_size_t len,
                               llmgw_request_t *req, const char **body,
                               apr_size_t *blen, llmgw_error_t *err)
{
    llmgw_ollama_extra_t x;
    int rv =
        llmgw_ollama_front_parse(p, oep, buf, len, req, body, blen, &x, err);

    if (rv) {
        return rv;
    }
    if (x.load) {
        return ofail(err, 400,
                     "a load request (no messages, prompt or input) is "
                     "answered by the gateway, not translated");
    }
    if (x.refusal.status) {
        *err = x.refusal;
        return err->status;
    }
    return 0;
}

const char *llmgw_ollama_native_body(apr_pool_t *p, const llmgw_json_t *view,
                                     const char *upstream_model,
                                     apr_size_t *len)
{
    static const char *const key[] = { "model" };
    const char *val[1];

    val[0] = llmgw_json_quote(p, upstream_model);
    return llmgw_json_edit(view, key, val, 1, len);
}

int llmgw_ollama_llamacpp_options(apr_pool_t *p, const llmgw_ollama_extra_t *x,
                                  llmgw_request_t *req, const char **body,
                                  apr_size_t *blen, llmgw_error_t *err)
{
    /* Ollama's option, llama.cpp's parameter of the same meaning. */
    static const char *const names[][2] = {
        { "repeat_penalty", "repeat_penalty" },
        { "repeat_last_n", "repeat_last_n" },
        { "min_p", "min_p" },
        { "typical_p", "typical_p" },
        { "tfs_z", "tfs_z" },
        { "mirostat", "mirostat" },
        { "mirostat_tau", "mirostat_tau" },
        { "mirostat_eta", "mirostat_eta" },
        { "num_keep", "n_keep" },
        { "penalize_newline", "penalize_nl" },
    };
    const llmgw_json_t *opts = llmgw_json_getj(x->view, "options", NULL);
    const char *keys[sizeof(names) / sizeof(names[0])];
    const char *vals[sizeof(names) / sizeof(names[0])];
    llmgw_json_err_t jerr;
    const char *msg, *text;
    apr_size_t i, len;
    int n = 0;

    for (i = 0; opts && i < sizeof(names) / sizeof(names[0]); i++) {
        llmgw_json_type_t t = llmgw_json_type(opts, names[i][0], NULL);
        int flag = strcmp(names[i][0], "penalize_newline") == 0;

        if (ol_absent(t)) {
            continue;
        }
        if (flag ? t != LLMGW_JSON_BOOL : !ol_is_num(t)) {
            return ofail(err, 400,
                         apr_psprintf(p, "option \"%s\" must be a %s",
                                      names[i][0],
                                      flag ? "boolean" : "number"));
        }
        keys[n] = names[i][1];
        vals[n++] =
            llmgw_json_write(llmgw_json_getj(opts, names[i][0], NULL), NULL);
    }
    if (!n) {
        return 0;
    }
    text = llmgw_json_edit(req->body, keys, vals, n, &len);
    if (!text || !(req->body = llmgw_json_read(p, text, len, &jerr, &msg))) {
        return ofail(err, 500,
                     "the gateway could not add llama.cpp's options to "
                     "the request");
    }
    *body = text;
    *blen = len;
    return 0;
}

const char *llmgw_ollama_native_path(llmgw_ollama_ep_t oep)
{
    switch (oep) {
    case LLMGW_OLLAMA_EP_CHAT: return "/api/chat";
    case LLMGW_OLLAMA_EP_GENERATE: return "/api/generate";
    case LLMGW_OLLAMA_EP_EMBED: return "/api/embed";
    case LLMGW_OLLAMA_EP_EMBEDDINGS: return "/api/embeddings";
    default: return NULL;
    }
}

const char *llmgw_ollama_load_answer(apr_pool_t *p, llmgw_ollama_ep_t oep,
                                     const char *model, int unload,
                                     apr_time_t now, apr_size_t *len)
{
    llmgw_json_t *o = llmgw_json_create_object(p);

    if (oep == LLMGW_OLLAMA_EP_EMBEDDINGS) {
        llmgw_json_add_array(o, "embedding");
        return llmgw_json_write(o, len);
    }
    llmgw_json_sets(o, model, "model", NULL);
    if (oep == LLMGW_OLLAMA_EP_EMBED) {
        llmgw_json_add_array(o, "embeddings");
        llmgw_json_setl(o, 0, "total_duration", NULL);
        llmgw_json_setl(o, 0, "load_duration", NULL);
        llmgw_json_setl(o, 0, "prompt_eval_count", NULL);
        return llmgw_json_write(o, len);
    }
    llmgw_json_sets(o, llmgw_ollama_time_us(p, now), "created_at", NULL);
    if (oep == LLMGW_OLLAMA_EP_CHAT) {
        llmgw_json_sets(o, "assistant", "message", "role", NULL);
        llmgw_json_sets(o, "", "message", "content", NULL);
    }
    else {
        llmgw_json_sets(o, "", "response", NULL);
    }
    llmgw_json_sets(o, unload ? "unload" : "load", "done_reason", NULL);
    llmgw_json_setb(o, 1, "done", NULL);
    return llmgw_json_write(o, len);
}

/* ---------------------------------------------------------------------
 * B.5 The Ollama answer for a plain OpenAI one
 */

/* The message of an OpenAI-style error body, in the shapes servers use:
 * {"error":{"message"}}, {"error":"..."}, vLLM's {"object":"error",
 * "message"}. */
static const char *openai_error(const llmgw_json_t *j)
{
    const char *m = llmgw_json_gets(j, "error", "message", NULL);
    const char *obj = llmgw_json_gets(j, "object", NULL);

    if (m) {
        return m;
    }
    if ((m = llmgw_json_gets(j, "error", NULL)) != NULL) {
        return m;
    }
    if (llmgw_json_type(j, "error", NULL) == LLMGW_JSON_OBJECT) {
        return "the backend reported an error";
    }
    if (obj && strcmp(obj, "error") == 0) {
        m = llmgw_json_gets(j, "message", NULL);
        return m ? m : "the backend reported an error";
    }
    return NULL;
}

/* Nanoseconds from a to b (microseconds), never below 0. */
static apr_int64_t ns_between(apr_time_t a, apr_time_t b)
{
    return b > a ? (apr_int64_t)(b - a) * 1000 : 0;
}

/* The members that end every Ollama generation answer. The durations are
 * what the gateway saw: the whole request, until the first token (the
 * prompt's evaluation, loading included: a backend that is not Ollama
 * does not tell them apart), and from there to the end; without a first
 * token's time (a plain answer) the whole time counts as generation. */
static void ollama_done(llmgw_json_t *o, const char *reason,
                        const llmgw_usage_t *u, apr_time_t start,
                        apr_time_t first, apr_time_t end)
{
    llmgw_json_setb(o, 1, "done", NULL);
    llmgw_json_sets(o, reason, "done_reason", NULL);
    llmgw_json_setl(o, ns_between(start, end), "total_duration", NULL);
    llmgw_json_setl(o, 0, "load_duration", NULL);
    llmgw_json_setl(o, u->prompt, "prompt_eval_count", NULL);
    llmgw_json_setl(o, first ? ns_between(start, first) : 0,
                    "prompt_eval_duration", NULL);
    llmgw_json_setl(o, u->completion, "eval_count", NULL);
    llmgw_json_setl(o, ns_between(first ? first : start, end), "eval_duration",
                    NULL);
}

/* OpenAI tool_calls as Ollama's; 0 when arguments are not an object. */
static int ollama_tool_calls(apr_pool_t *p, const llmgw_json_t *calls,
                             llmgw_json_t *msg)
{
    llmgw_json_t *oc;
    apr_size_t i, n = ol_len_of(calls);

    if (!n) {
        return 1;
    }
    oc = llmgw_json_add_array(msg, "tool_calls");
    for (i = 0; i < n; i++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, i);
        llmgw_json_t *o = llmgw_json_array_add_object(oc), *args;
        const char *id = llmgw_json_gets(tc, "id", NULL);
        const char *name = llmgw_json_gets(tc, "function", "name", NULL);
        const char *text = ol_args_text(tc);

        args = llmgw_json_type(tc, "function", "arguments", NULL)
                       == LLMGW_JSON_OBJECT
                   ? llmgw_json_getj(tc, "function", "arguments", NULL)
                   : ol_args_object(p, text, strlen(text));
        if (!args) {
            return 0;
        }
        if (id) {
            llmgw_json_sets(o, id, "id", NULL);
        }
        llmgw_json_setl(o, (apr_int64_t)i, "function", "index", NULL);
        llmgw_json_sets(o, name ? name : "", "function", "name", NULL);
        llmgw_json_setj(o, args, "function", "arguments", NULL);
    }
    return 1;
}

int llmgw_ollama_front_response(apr_pool_t *p, llmgw_ollama_ep_t oep,
                                int status, const char *buf, apr_size_t len,
                                const char *model, apr_time_t start,
                                apr_time_t end, const char **out,
                                apr_size_t *out_len, llmgw_usage_t *usage,
                                llmgw_error_t *err)
{
    llmgw_json_err_t jerr;
    const char *msg;
    llmgw_json_t *j = llmgw_json_parse(p, buf, len, &jerr, &msg), *o, *ch;
    static const char unreadable[] = "the backend sent an answer the "
                                     "gateway could not read";

    memset(usage, 0, sizeof(*usage));
    if (!j || llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT) {
        return status >= 400 ? ofail(err, status,
                                     apr_psprintf(p,
                                                  "the backend "
                                                  "answered with status "
                                                  "%d",
                                                  status))
                             : ofail(err, 502, unreadable);
    }
    if ((msg = openai_error(j)) != NULL || status >= 400) {
        if (!msg) {
            msg = llmgw_json_gets(j, "detail", NULL);
        }
        return ofail(err, status >= 400 ? status : 502,
                     msg ? msg
                         : apr_psprintf(p,
                                        "the backend answered "
                                        "with status %d",
                                        status));
    }
    ol_openai_usage(j, usage);
    o = llmgw_json_create_object(p);
    ch = ol_item(llmgw_json_getj(j, "choices", NULL), 0);
    switch (oep) {
    case LLMGW_OLLAMA_EP_CHAT:
    case LLMGW_OLLAMA_EP_GENERATE: {
        const char *text, *thinking;

        if (!ch) {
            return ofail(err, 502, unreadable);
        }
        llmgw_json_sets(o, model, "model", NULL);
        llmgw_json_sets(o, llmgw_ollama_time_us(p, end), "created_at", NULL);
        if (oep == LLMGW_OLLAMA_EP_CHAT) {
            llmgw_json_t *m = llmgw_json_add_object(o, "message");

            text = llmgw_json_gets(ch, "message", "content", NULL);
            thinking =
                llmgw_json_gets(ch, "message", "reasoning_content", NULL);
            if (!thinking) {
                thinking = llmgw_json_gets(ch, "message", "reasoning", NULL);
            }
            llmgw_json_sets(m, "assistant", "role", NULL);
            llmgw_json_sets(m, text ? text : "", "content", NULL);
            if (thinking && *thinking) {
                llmgw_json_sets(m, thinking, "thinking", NULL);
            }
            if (!ollama_tool_calls(
                    p, llmgw_json_getj(ch, "message", "tool_calls", NULL),
                    m)) {
                return ofail(err, 502,
                             "the backend sent tool call "
                             "arguments that are not a JSON object");
            }
        }
        else {
            text = llmgw_json_gets(ch, "text", NULL);
            llmgw_json_sets(o, text ? text : "", "response", NULL);
        }
        ollama_done(o,
                    ol_done_reason(llmgw_json_gets(ch, "finish_reason", NULL)),
                    usage, start, 0, end);
        break;
    }
    default: {
        llmgw_json_t *data = llmgw_json_getj(j, "data", NULL), *embs = NULL;
        apr_size_t i, n = ol_len_of(data);

        if (llmgw_json_type(j, "data", NULL) != LLMGW_JSON_ARRAY) {
            return ofail(err, 502, unreadable);
        }
        for (i = 0; i < n; i++) {
            llmgw_json_t *e = llmgw_json_getj(llmgw_json_array_get(data, i),
                                              "embedding", NULL);

            if (!e || llmgw_json_type(e, NULL) != LLMGW_JSON_ARRAY) {
                return ofail(err, 502, unreadable);
            }
            if (oep == LLMGW_OLLAMA_EP_EMBEDDINGS) {
                llmgw_json_setj(o, e, "embedding", NULL);
                break;
            }
            if (!embs) {
                llmgw_json_sets(o, model, "model", NULL);
                embs = llmgw_json_add_array(o, "embeddings");
            }
            llmgw_json_array_addj(embs, e);
        }
        if (oep == LLMGW_OLLAMA_EP_EMBEDDINGS) {
            if (!n) {
                llmgw_json_add_array(o, "embedding");
            }
            break;
        }
        if (!embs) {
            llmgw_json_sets(o, model, "model", NULL);
            llmgw_json_add_array(o, "embeddings");
        }
        llmgw_json_setl(o, ns_between(start, end), "total_duration", NULL);
        llmgw_json_setl(o, 0, "load_duration", NULL);
        llmgw_json_setl(o, usage->prompt, "prompt_eval_count", NULL);
        break;
    }
    }
    *out = llmgw_json_write(o, out_len);
    return 0;
}

/* ---------------------------------------------------------------------
 * B.6 An OpenAI SSE stream as Ollama NDJSON
 */

/* A tool call being put together from its streamed pieces. */
typedef struct {
    apr_int64_t index;
    const char *id;
    const char *name;
    llmgw_buf_t args;
} part_call_t;

static apr_status_t calls_cleanup(void *data)
{
    llmgw_ollama_ndjson_t *s = data;
    int i;

    for (i = 0; s->calls && i < s->calls->nelts; i++) {
        llmgw_buf_free(&APR_ARRAY_IDX(s->calls, i, part_call_t).args);
    }
    s->calls = NULL;
    return APR_SUCCESS;
}

static apr_status_t nd_cleanup(void *data)
{
    llmgw_ollama_ndjson_t *s = data;

    llmgw_buf_free(&s->in);
    llmgw_buf_free(&s->ev);
    llmgw_buf_free(&s->out);
    return APR_SUCCESS;
}

llmgw_ollama_ndjson_t *llmgw_ollama_ndjson_create(apr_pool_t *p,
                                                  llmgw_ollama_ep_t oep,
                                                  const char *model,
                                                  apr_time_t start)
{
    llmgw_ollama_ndjson_t *s = apr_pcalloc(p, sizeof(*s));

    s->p = p;
    apr_pool_create(&s->lp, p);
    apr_pool_create(&s->tp, p);
    s->oep = oep == LLMGW_OLLAMA_EP_GENERATE ? oep : LLMGW_OLLAMA_EP_CHAT;
    s->model = apr_pstrdup(p, model ? model : "");
    s->start = start;
    s->now = apr_time_now;
    apr_pool_cleanup_register(p, s, nd_cleanup, apr_pool_cleanup_null);
    return s;
}

static void nd_emit(llmgw_ollama_ndjson_t *s, const llmgw_json_t *o)
{
    apr_size_t n;
    const char *text = llmgw_json_write(o, &n);

    if (!llmgw_buf_add(&s->out, text, n) || !llmgw_buf_add(&s->out, "\n", 1)) {
        /* Out of memory: stop here; the client sees a stream cut
         * short, as from a backend that died. */
        s->failed = 1;
    }
}

static void nd_fail(llmgw_ollama_ndjson_t *s, const char *message)
{
    const char *line = llmgw_ollama_error_json(s->lp, message);

    llmgw_buf_add(&s->out, line, strlen(line));
    llmgw_buf_add(&s->out, "\n", 1);
    s->failed = 1;
}

/* A line with its model and time, and message (chat) for the caller. */
static llmgw_json_t *nd_line(llmgw_ollama_ndjson_t *s, llmgw_json_t **msg)
{
    llmgw_json_t *o = llmgw_json_create_object(s->lp);

    llmgw_json_sets(o, s->model, "model", NULL);
    /* Each line its own time, as Ollama's. */
    llmgw_json_sets(o, llmgw_ollama_time_us(s->lp, s->now()), "created_at",
                    NULL);
    if (s->oep == LLMGW_OLLAMA_EP_CHAT) {
        *msg = llmgw_json_add_object(o, "message");
        llmgw_json_sets(*msg, "assistant", "role", NULL);
        llmgw_json_sets(*msg, "", "content", NULL);
    }
    else {
        *msg = o;
        llmgw_json_sets(o, "", "response", NULL);
    }
    return o;
}

static void nd_text(llmgw_ollama_ndjson_t *s, const char *text,
                    const char *thinking)
{
    llmgw_json_t *m, *o = nd_line(s, &m);

    if (text) {
        llmgw_json_sets(
            m, text, s->oep == LLMGW_OLLAMA_EP_CHAT ? "content" : "response",
            NULL);
    }
    if (thinking) {
        llmgw_json_sets(m, thinking, "thinking", NULL);
    }
    llmgw_json_setb(o, 0, "done", NULL);
    nd_emit(s, o);
}

/* Sends the tool calls put together so far, whole, in one line. */
static void nd_flush_calls(llmgw_ollama_ndjson_t *s)
{
    llmgw_json_t *m, *o, *arr;
    int i;

    if (!s->calls || !s->calls->nelts) {
        return;
    }
    o = nd_line(s, &m);
    arr = llmgw_json_add_array(m, "tool_calls");
    for (i = 0; i < s->calls->nelts; i++) {
        part_call_t *c = &APR_ARRAY_IDX(s->calls, i, part_call_t);
        llmgw_json_t *tc = llmgw_json_array_add_object(arr);
        llmgw_json_t *args =
            ol_args_object(s->lp, c->args.b ? c->args.b : "", c->args.len);

        if (!args) {
            nd_fail(s, "the backend sent tool call arguments that are not "
                       "a JSON object");
            apr_pool_clear(s->tp);
            return;
        }
        if (c->id) {
            llmgw_json_sets(tc, c->id, "id", NULL);
        }
        llmgw_json_setl(tc, i, "function", "index", NULL);
        llmgw_json_sets(tc, c->name ? c->name : "", "function", "name", NULL);
        llmgw_json_setj(tc, args, "function", "arguments", NULL);
    }
    llmgw_json_setb(o, 0, "done", NULL);
    nd_emit(s, o);
    apr_pool_clear(s->tp);
}

static void nd_finish(llmgw_ollama_ndjson_t *s)
{
    llmgw_json_t *m, *o;

    nd_flush_calls(s);
    if (s->failed) {
        return;
    }
    o = nd_line(s, &m);
    ollama_done(o, s->done_reason ? s->done_reason : "stop", &s->usage,
                s->start, s->first, s->now());
    nd_emit(s, o);
    s->done = 1;
}

static part_call_t *nd_call(llmgw_ollama_ndjson_t *s, apr_int64_t index)
{
    part_call_t *c;
    int i;

    if (!s->calls) {
        s->calls = apr_array_make(s->tp, 4, sizeof(part_call_t));
        apr_pool_cleanup_register(s->tp, s, calls_cleanup,
                                  apr_pool_cleanup_null);
    }
    for (i = 0; i < s->calls->nelts; i++) {
        c = &APR_ARRAY_IDX(s->calls, i, part_call_t);
        if (c->index == index) {
            return c;
        }
    }
    c = apr_array_push(s->calls);
    memset(c, 0, sizeof(*c));
    c->index = index;
    return c;
}

static void nd_chunk(llmgw_ollama_ndjson_t *s, const llmgw_json_t *j)
{
    llmgw_json_t *ch = ol_item(llmgw_json_getj(j, "choices", NULL), 0);
    llmgw_json_t *calls;
    const char *text, *thinking = NULL, *fr;
    apr_size_t i, n;
    int output = 0;

    ol_openai_usage(j, &s->usage);
    if (!ch) {
        return;
    }
    if (s->oep == LLMGW_OLLAMA_EP_CHAT) {
        text = llmgw_json_gets(ch, "delta", "content", NULL);
        thinking = llmgw_json_gets(ch, "delta", "reasoning_content", NULL);
        if (!thinking) {
            thinking = llmgw_json_gets(ch, "delta", "reasoning", NULL);
        }
    }
    else {
        text = llmgw_json_gets(ch, "text", NULL);
    }
    if (thinking && *thinking) {
        nd_text(s, NULL, thinking);
        output = 1;
    }
    if (text && *text) {
        nd_text(s, text, NULL);
        output = 1;
    }
    calls = llmgw_json_getj(ch, "delta", "tool_calls", NULL);
    for (i = 0, n = ol_len_of(calls); i < n; i++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, i);
        part_call_t *c =
            nd_call(s, llmgw_json_getl(tc, (apr_int64_t)i, "index", NULL));
        const char *v;

        if (!c->id && (v = llmgw_json_gets(tc, "id", NULL)) != NULL) {
            c->id = apr_pstrdup(s->tp, v);
        }
        if (!c->name
            && (v = llmgw_json_gets(tc, "function", "name", NULL)) != NULL) {
            c->name = apr_pstrdup(s->tp, v);
        }
        v = llmgw_json_gets(tc, "function", "arguments", NULL);
        if (v
            && (c->args.len + strlen(v) > MAX_LINE
                || !llmgw_buf_add(&c->args, v, strlen(v)))) {
            nd_fail(s, "the backend sent tool call arguments the gateway "
                       "cannot hold");
            return;
        }
        output = 1;
    }
    s->content_events += output;
    if (output && !s->first) {
        s->first = s->now();
    }
    fr = llmgw_json_gets(ch, "finish_reason", NULL);
    if (fr) {
        s->done_reason = ol_done_reason(fr);
        nd_flush_calls(s);
    }
}

static void nd_event(llmgw_ollama_ndjson_t *s, const char *d, apr_size_t len)
{
    llmgw_json_err_t jerr;
    const char *msg;
    llmgw_json_t *j;

    d = llmgw_json_trim(d, &len);
    if (!len) {
        return;
    }
    if (len == 6 && memcmp(d, "[DONE]", 6) == 0) {
        nd_finish(s);
    }
    else if (!(j = llmgw_json_parse(s->lp, d, len, &jerr, &msg))
             || llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT) {
        nd_fail(s, "the backend sent an event that is not JSON");
    }
    else if ((msg = openai_error(j)) != NULL) {
        nd_fail(s, msg);
    }
    else {
        nd_chunk(s, j);
    }
    apr_pool_clear(s->lp);
}

static void nd_sse_line(void *baton, const char *line, apr_size_t len)
{
    llmgw_ollama_ndjson_t *s = baton;

    if (s->done || s->failed) {
        return;
    }
    if (!len) {
        /* The blank line ends the event. */
        if (s->ev.len) {
            nd_event(s, s->ev.b, s->ev.len);
            s->ev.len = 0;
        }
        return;
    }
    if (len < 5 || memcmp(line, "data:", 5) != 0) {
        return; /* comments, event:, id:, retry: */
    }
    line += 5;
    len -= 5;
    if (len && *line == ' ') {
        line++;
        len--;
    }
    if ((s->ev.len && !llmgw_buf_add(&s->ev, "\n", 1))
        || s->ev.len + len > MAX_LINE || !llmgw_buf_add(&s->ev, line, len)) {
        nd_fail(s, "the backend sent an event the gateway cannot hold");
        apr_pool_clear(s->lp);
    }
}

apr_size_t llmgw_ollama_ndjson_feed(llmgw_ollama_ndjson_t *s, const char *in,
                                    apr_size_t len, const char **out)
{
    if (!ol_feed(&s->in, &s->out, s->done || s->failed, in, len, nd_sse_line,
                 s)) {
        nd_fail(s, "the backend sent a stream line the gateway cannot "
                   "hold");
        apr_pool_clear(s->lp);
    }
    if (s->failed) {
        /* Nothing more is read: what was held for it goes now. */
        llmgw_buf_free(&s->in);
        llmgw_buf_free(&s->ev);
        apr_pool_clear(s->tp);
    }
    return ol_output(&s->out, out);
}

apr_size_t llmgw_ollama_ndjson_end(llmgw_ollama_ndjson_t *s, const char **out)
{
    ol_end(&s->in, &s->out, nd_sse_line, s);
    if (!s->done && !s->failed && s->ev.len) {
        nd_event(s, s->ev.b, s->ev.len);
    }
    s->ev.len = 0;
    if (!s->done && !s->failed && s->done_reason) {
        /* A finish_reason came and nothing broke: only [DONE] is
         * missing, which some servers never send. */
        nd_finish(s);
        apr_pool_clear(s->lp);
    }
    return ol_output(&s->out, out);
}

const char *llmgw_ollama_ndjson_error_tail(const llmgw_ollama_ndjson_t *s,
                                           apr_pool_t *p, const char *message,
                                           apr_size_t *len)
{
    const char *line;

    if (s->done || s->failed) {
        *len = 0;
        return "";
    }
    line = apr_pstrcat(p, llmgw_ollama_error_json(p, message), "\n", NULL);
    *len = strlen(line);
    return line;
}
