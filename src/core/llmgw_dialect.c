/* llmgw_dialect: OpenAI request parsing and validation, the upstream body,
 * usage extraction and the OpenAI error shape. No httpd headers here. */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_dialect.h"

const char *llmgw_path_below(const char *path, const char *prefix)
{
    apr_size_t n = strlen(prefix);

    return strncmp(path, prefix, n) == 0 && path[n] == '/' ? path + n : path;
}

int llmgw_path_ep(const char *path, const llmgw_path_ep_t *t)
{
    for (; t->path && strcmp(path, t->path) != 0; t++) {
    }
    return t->ep;
}

static const llmgw_path_ep_t openai_paths[] = {
    { "/chat/completions", LLMGW_EP_CHAT },
    { "/completions", LLMGW_EP_COMPLETIONS },
    { "/embeddings", LLMGW_EP_EMBEDDINGS },
    { "/models", LLMGW_EP_MODELS },
    { "/models/", LLMGW_EP_MODELS },
    { NULL, LLMGW_EP_NONE },
};

llmgw_endpoint_t llmgw_endpoint_parse(apr_pool_t *p, const char *path,
                                      const char **model_id)
{
    llmgw_endpoint_t ep;

    *model_id = NULL;
    path = llmgw_path_below(path, "/v1");
    ep = llmgw_path_ep(path, openai_paths);
    if (ep == LLMGW_EP_NONE && strncmp(path, "/models/", 8) == 0) {
        /* Model ids may hold slashes ("org/model"): the rest is the id. */
        *model_id = apr_pstrdup(p, path + 8);
        return LLMGW_EP_MODEL;
    }
    return ep;
}

const char *llmgw_endpoint_method(llmgw_endpoint_t ep)
{
    return (ep == LLMGW_EP_MODELS || ep == LLMGW_EP_MODEL) ? "GET" : "POST";
}

const char *llmgw_endpoint_upstream_path(llmgw_endpoint_t ep)
{
    switch (ep) {
    case LLMGW_EP_CHAT: return "/v1/chat/completions";
    case LLMGW_EP_COMPLETIONS: return "/v1/completions";
    case LLMGW_EP_EMBEDDINGS: return "/v1/embeddings";
    case LLMGW_EP_MODELS:
    case LLMGW_EP_MODEL: return "/v1/models";
    default: return NULL;
    }
}

int llmgw_error_set(llmgw_error_t *err, int status, const char *type,
                    const char *param, const char *code, const char *message)
{
    *err = (llmgw_error_t){ .status = status,
                            .type = type,
                            .param = param,
                            .code = code,
                            .message = message };
    return status;
}

static int invalid(llmgw_error_t *err, const char *param, const char *code,
                   const char *message)
{
    return llmgw_error_set(err, 400, "invalid_request_error", param, code,
                           message);
}

/* The field a generation endpoint cannot work without. */
static const char *required_field(llmgw_endpoint_t ep, llmgw_json_type_t *t1,
                                  llmgw_json_type_t *t2)
{
    switch (ep) {
    case LLMGW_EP_CHAT: *t1 = *t2 = LLMGW_JSON_ARRAY; return "messages";
    case LLMGW_EP_COMPLETIONS:
        *t1 = LLMGW_JSON_STRING;
        *t2 = LLMGW_JSON_ARRAY;
        return "prompt";
    case LLMGW_EP_EMBEDDINGS:
        *t1 = LLMGW_JSON_STRING;
        *t2 = LLMGW_JSON_ARRAY;
        return "input";
    default: return NULL;
    }
}

/* The members whose type we know; wrong ones would only fail later, less
 * clearly, at the backend. null is accepted as "not given". */
static int check_types(apr_pool_t *p, const llmgw_json_t *body,
                       llmgw_error_t *err)
{
    enum { NUM, INT, BOOL, STR, STR_OR_ARR, ARR, OBJ };
    static const struct {
        const char *name;
        int kind;
    } known[] = { { "stream", BOOL },
                  { "temperature", NUM },
                  { "top_p", NUM },
                  { "presence_penalty", NUM },
                  { "frequency_penalty", NUM },
                  { "max_tokens", INT },
                  { "max_completion_tokens", INT },
                  { "n", INT },
                  { "seed", INT },
                  { "stop", STR_OR_ARR },
                  { "tools", ARR },
                  { "response_format", OBJ },
                  { "stream_options", OBJ },
                  { "user", STR },
                  { NULL, 0 } };
    static const char *const names[] = {
        "a number", "an integer",           "a boolean",
        "a string", "a string or an array", "an array",
        "an object"
    };
    int i;

    for (i = 0; known[i].name; i++) {
        llmgw_json_type_t t = llmgw_json_type(body, known[i].name, NULL);
        int ok;

        switch (known[i].kind) {
        case NUM: ok = t == LLMGW_JSON_INT || t == LLMGW_JSON_DOUBLE; break;
        case INT: ok = t == LLMGW_JSON_INT; break;
        case BOOL: ok = t == LLMGW_JSON_BOOL; break;
        case STR: ok = t == LLMGW_JSON_STRING; break;
        case STR_OR_ARR:
            ok = t == LLMGW_JSON_STRING || t == LLMGW_JSON_ARRAY;
            break;
        case ARR: ok = t == LLMGW_JSON_ARRAY; break;
        default: ok = t == LLMGW_JSON_OBJECT; break;
        }
        if (!ok && t != LLMGW_JSON_MISSING && t != LLMGW_JSON_NULL) {
            return invalid(err, known[i].name, "invalid_type",
                           apr_psprintf(p,
                                        "Invalid type for '%s': "
                                        "expected %s.",
                                        known[i].name, names[known[i].kind]));
        }
    }
    return 0;
}

int llmgw_request_parse(apr_pool_t *p, llmgw_endpoint_t ep, const char *buf,
                        apr_size_t len, llmgw_request_t *req,
                        llmgw_error_t *err)
{
    llmgw_json_err_t jerr;
    llmgw_json_type_t t, want1, want2;
    const char *msg, *field;

    memset(req, 0, sizeof(*req));
    req->ep = ep;
    req->pool = p;
    req->body = llmgw_json_read(p, buf, len, &jerr, &msg);
    if (!req->body) {
        return invalid(err, NULL, "invalid_json",
                       apr_psprintf(p,
                                    "The request body is not valid "
                                    "JSON: %s.",
                                    msg));
    }
    if (llmgw_json_type(req->body, NULL) != LLMGW_JSON_OBJECT) {
        return invalid(err, NULL, "invalid_json",
                       "The request body must be a JSON object.");
    }
    t = llmgw_json_type(req->body, "model", NULL);
    if (t == LLMGW_JSON_MISSING || t == LLMGW_JSON_NULL) {
        return invalid(err, "model", "missing_required_parameter",
                       "You must provide a model parameter.");
    }
    /* In p: renaming the model upstream makes json-c's own tree. */
    req->model = llmgw_json_gets(req->body, "model", NULL);
    if (!req->model) {
        return invalid(err, "model", "invalid_type",
                       "Invalid type for 'model': expected a string.");
    }
    if (!*req->model) {
        return invalid(err, "model", "invalid_value",
                       "'model' must not be empty.");
    }
    field = required_field(ep, &want1, &want2);
    if (field) {
        t = llmgw_json_type(req->body, field, NULL);
        if (t == LLMGW_JSON_MISSING) {
            return invalid(err, field, "missing_required_parameter",
                           apr_psprintf(p,
                                        "Missing required parameter: "
                                        "'%s'.",
                                        field));
        }
        if (t != want1 && t != want2) {
            return invalid(err, field, "invalid_type",
                           apr_psprintf(p,
                                        "Invalid type for '%s': "
                                        "expected %s.",
                                        field,
                                        want1 == want2
                                            ? "an array"
                                            : "a string or an array"));
        }
    }
    if (check_types(p, req->body, err)) {
        return err->status;
    }
    req->stream = (ep != LLMGW_EP_EMBEDDINGS)
                  && llmgw_json_getb(req->body, 0, "stream", NULL);
    req->wants_usage =
        llmgw_json_getb(req->body, 0, "stream_options", "include_usage", NULL);
    return 0;
}

const char *llmgw_request_upstream_body(llmgw_request_t *req,
                                        const char *upstream_model,
                                        const char *orig, apr_size_t orig_len,
                                        apr_size_t *len, int *strip_usage)
{
    const char *keys[3], *vals[3];
    llmgw_json_t *so;
    int n = 0;

    *strip_usage = req->stream && !req->wants_usage;
    if (upstream_model && strcmp(upstream_model, req->model) != 0) {
        keys[n] = "model";
        vals[n++] = llmgw_json_quote(req->pool, upstream_model);
    }
    if (*strip_usage) {
        /* The client's other stream options stay as they are. */
        so = llmgw_json_getj(req->body, "stream_options", NULL);
        keys[n] = "stream_options";
        vals[n] =
            llmgw_json_type(so, NULL) == LLMGW_JSON_OBJECT
                ? llmgw_json_edit(so, (const char *[]){ "include_usage" },
                                  (const char *[]){ "true" }, 1, NULL)
                : "{\"include_usage\":true}";
        n++;
    }
    if (req->max_tokens > 0) {
        keys[n] = req->max_tokens_field ? req->max_tokens_field : "max_tokens";
        vals[n++] =
            apr_psprintf(req->pool, "%" APR_INT64_T_FMT, req->max_tokens);
    }
    if (!n) {
        *len = orig_len;
        return orig;
    }
    /* The client's bytes with only these members changed: nothing else
     * goes through a parse and back. */
    return llmgw_json_edit(req->body, keys, vals, n, len);
}

/* Last occurrence of needle in hay[0..len), or NULL. */
static const char *find_last(const char *hay, apr_size_t len,
                             const char *needle, apr_size_t nlen)
{
    const char *s;

    if (len < nlen) {
        return NULL;
    }
    for (s = hay + len - nlen; s >= hay; s--) {
        if (*s == *needle && memcmp(s, needle, nlen) == 0) {
            return s;
        }
    }
    return NULL;
}

/* Past a JSON string whose opening quote is just before s; NULL if it
 * does not end in [s, end). */
static const char *skip_string(const char *s, const char *end)
{
    for (; s < end; s++) {
        if (*s == '\\') {
            s++;
        }
        else if (*s == '"') {
            return s + 1;
        }
    }
    return NULL;
}

/* Past one JSON value at s (a scalar ends where ',', '}', ']' or white
 * space starts); NULL if it does not end in [s, end). */
static const char *skip_value(const char *s, const char *end)
{
    int depth = 0;

    while (s < end) {
        switch (*s) {
        case '"':
            if (!(s = skip_string(s + 1, end)) || !depth) {
                return s;
            }
            continue;
        case '{':
        case '[': depth++; break;
        case '}':
        case ']':
            if (!depth || --depth == 0) {
                return depth ? s : s + 1;
            }
            break;
        case ',':
            if (!depth) {
                return s;
            }
            break;
        default:
            if (!depth && LLMGW_JSON_IS_WS(*s)) {
                return s;
            }
            break;
        }
        s++;
    }
    return NULL;
}

apr_int64_t llmgw_tokens_of(double v)
{
    apr_int64_t t;

    if (!(v > 0)) {
        return 0; /* also NaN */
    }
    if (v >= (double)LLMGW_TOKENS_MAX) {
        return LLMGW_TOKENS_MAX;
    }
    t = (apr_int64_t)v;
    return (double)t < v ? t + 1 : t;
}

/* A count is the number at key in j, if there is one there. */
static apr_int64_t count_at(const llmgw_json_t *j, const char *key)
{
    llmgw_json_type_t t =
        key ? llmgw_json_type(j, key, NULL) : LLMGW_JSON_MISSING;

    if (t != LLMGW_JSON_INT && t != LLMGW_JSON_DOUBLE) {
        return -1;
    }
    return llmgw_tokens_of(llmgw_json_getd(j, 0, key, NULL));
}

/* The usage from counts read (-1: none): missing ones count 0, and the
 * total is at least the sum of the parts. */
static void usage_set(llmgw_usage_t *u, apr_int64_t prompt,
                      apr_int64_t completion, apr_int64_t total)
{
    u->prompt = prompt >= 0 ? prompt : 0;
    u->completion = completion >= 0 ? completion : 0;
    u->total = llmgw_tokens_add(u->prompt, u->completion);
    if (total > u->total) {
        u->total = total;
    }
    u->found = 1;
}

void llmgw_usage_read(const llmgw_json_t *j, const char *prompt,
                      const char *completion, const char *total,
                      llmgw_usage_t *u)
{
    if (!j) {
        return;
    }
    usage_set(u, count_at(j, prompt), count_at(j, completion),
              count_at(j, total));
}

/* v with the digit d appended, saturated at LLMGW_TOKENS_MAX. */
static apr_int64_t push_digit(apr_int64_t v, int d)
{
    return v > (LLMGW_TOKENS_MAX - d) / 10 ? LLMGW_TOKENS_MAX : v * 10 + d;
}

/* s past the decimal digits at s. */
static const char *skip_digits(const char *s, const char *end)
{
    while (s < end && *s >= '0' && *s <= '9') {
        s++;
    }
    return s;
}

/* The count of the JSON number at s, as llmgw_tokens_of but exactly, from
 * its digits (a count is read on every answer: no strtod, no locale):
 * its digits d (a[0..na) then b[0..nb)) times 10^e, rounded up. */
static apr_int64_t decimal_count(const char *a, apr_size_t na, const char *b,
                                 apr_size_t nb, long e)
{
    long point = (long)na + e, i, n = (long)(na + nb);
    apr_int64_t v = 0;

    for (i = 0; i < n || i < point; i++) {
        int d = i < (long)na ? a[i] - '0' : i < n ? b[i - na] - '0' : 0;

        if (i >= point) {
            if (d) {
                return llmgw_tokens_add(v, 1); /* a fraction */
            }
            if (i >= n) {
                break;
            }
            continue;
        }
        v = push_digit(v, d);
        if (v == LLMGW_TOKENS_MAX || (i >= n && !v)) {
            break; /* saturated, or zeros to the end */
        }
    }
    return v;
}

/* s past the JSON number at s, its count in *v; NULL if there is none. */
static const char *scan_count(const char *s, const char *end, apr_int64_t *v)
{
    const char *a, *b = NULL, *t;
    apr_size_t na, nb = 0;
    long e = 0;
    int neg = s < end && *s == '-', eneg = 0;

    a = s + neg;
    if ((s = skip_digits(a, end)) == a) {
        return NULL;
    }
    na = (apr_size_t)(s - a);
    if (s < end && *s == '.') {
        b = s + 1;
        if ((s = skip_digits(b, end)) == b) {
            return NULL;
        }
        nb = (apr_size_t)(s - b);
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < end && (*s == '+' || *s == '-')) {
            eneg = *s++ == '-';
        }
        if ((t = skip_digits(s, end)) == s) {
            return NULL;
        }
        /* Past 10^6 the count is 0, 1 or the clamp however far. */
        for (; s < t; s++) {
            e = e < 1000000 ? e * 10 + (*s - '0') : e;
        }
    }
    *v = neg ? 0 : decimal_count(a, na, b, nb, eneg ? -e : e);
    return s;
}

/* The token counts of the usage object at s (its '{'): read in place, as
 * this runs on every answer; 0 if the object is not whole. */
static int scan_usage(const char *s, const char *end, llmgw_usage_t *u)
{
    static const char *const names[] = { "prompt_tokens", "completion_tokens",
                                         "total_tokens" };
    apr_int64_t v[3] = { -1, -1, -1 };

    for (s++;;) {
        const char *k, *past;
        apr_size_t klen;
        int i, which = -1;

        s = llmgw_json_skip_ws(s, end);
        if (s < end && *s == '}') {
            break;
        }
        if (s >= end || *s != '"') {
            return 0;
        }
        k = s + 1;
        if (!(s = skip_string(k, end))) {
            return 0;
        }
        klen = (apr_size_t)(s - 1 - k);
        s = llmgw_json_skip_ws(s, end);
        if (s >= end || *s++ != ':') {
            return 0;
        }
        s = llmgw_json_skip_ws(s, end);
        for (i = 0; i < 3; i++) {
            if (strlen(names[i]) == klen && memcmp(names[i], k, klen) == 0) {
                which = i;
            }
        }
        if (which >= 0 && (past = scan_count(s, end, &v[which])) != NULL) {
            s = past;
        }
        else if (!(s = skip_value(s, end))) {
            return 0;
        }
        s = llmgw_json_skip_ws(s, end);
        if (s < end && *s == ',') {
            s++;
        }
        else if (s >= end || *s != '}') {
            return 0;
        }
    }
    usage_set(u, v[0], v[1], v[2]);
    return 1;
}

int llmgw_usage_find(const char *text, apr_size_t len, llmgw_usage_t *usage)
{
    static const char key[] = "\"usage\"";
    const char *s, *end = text + len;
    apr_size_t n = len;

    /* The usage object comes last in OpenAI bodies, and may be preceded by
     * "usage":null in earlier stream chunks; take the last real one. */
    while ((s = find_last(text, n, key, sizeof(key) - 1)) != NULL) {
        const char *v = llmgw_json_skip_ws(s + sizeof(key) - 1, end);

        n = (apr_size_t)(s - text);
        if (v >= end || *v++ != ':') {
            continue;
        }
        v = llmgw_json_skip_ws(v, end);
        if (v < end && *v == '{' && scan_usage(v, end, usage)) {
            return 1;
        }
    }
    return 0;
}

const char *llmgw_error_json(apr_pool_t *p, const llmgw_error_t *err)
{
    return apr_pstrcat(
        p, "{\"error\":{\"message\":", llmgw_json_quote(p, err->message),
        ",\"type\":", llmgw_json_quote(p, err->type),
        ",\"param\":", err->param ? llmgw_json_quote(p, err->param) : "null",
        ",\"code\":", err->code ? llmgw_json_quote(p, err->code) : "null",
        "}}", NULL);
}

/* The errors that httpd's and mod_proxy's statuses stand for. */
static const struct {
    int status;
    const char *type, *code, *message;
} status_errors[] = {
    { 502, "server_error", "upstream_error",
      "The backend failed to answer the request." },
    { 503, "server_error", "no_backend_available",
      "No backend is available to serve this model right now." },
    { 504, "server_error", "upstream_timeout",
      "The backend did not answer in time." },
    { 429, "server_error", "backend_busy",
      "Every backend for this model is busy; try again shortly." },
    { 400, "invalid_request_error", "bad_request",
      "The request could not be read." },
    { 408, "invalid_request_error", "request_timeout",
      "The request body was not received in time." },
    { 413, "invalid_request_error", "request_too_large",
      "The request body is too large." },
};

void llmgw_error_for_status(int status, llmgw_error_t *err)
{
    apr_size_t i;

    for (i = 0; i < sizeof(status_errors) / sizeof(status_errors[0]); i++) {
        if (status_errors[i].status == status) {
            llmgw_error_set(err, status, status_errors[i].type, NULL,
                            status_errors[i].code, status_errors[i].message);
            return;
        }
    }
    llmgw_error_set(err, status,
                    status >= 500 ? "server_error" : "invalid_request_error",
                    NULL, status >= 500 ? "internal_error" : NULL,
                    status >= 500 ? "The gateway failed to process "
                                    "the request."
                                  : "The request was rejected.");
}
