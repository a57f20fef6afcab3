/* llmgw_ollama_backend: OpenAI clients served by an Ollama backend (a route
 * with dialect=ollama): requests, answers and NDJSON streams translated as
 * llmgw_ollama.c's mapping (A) says. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_base64.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "llmgw_ollama_int.h"

/* ---------------------------------------------------------------------
 * A.1 The Ollama request for an OpenAI one
 */

static int bad(llmgw_error_t *err, const char *param, const char *code,
               const char *message)
{
    return llmgw_error_set(err, 400, "invalid_request_error", param, code,
                           message);
}

/* The required parameter param is missing. */
static int missing(apr_pool_t *p, const char *param, llmgw_error_t *err)
{
    return bad(err, param, "missing_required_parameter",
               apr_psprintf(p, "Missing required parameter: '%s'.", param));
}

static llmgw_json_t *options_of(llmgw_json_t *out)
{
    return llmgw_json_type(out, "options", NULL) == LLMGW_JSON_OBJECT
               ? llmgw_json_getj(out, "options", NULL)
               : llmgw_json_add_object(out, "options");
}

/* Copies the number in[key] to out.options[opt]; null is no value. */
static int copy_option(apr_pool_t *p, const llmgw_json_t *in, const char *key,
                       llmgw_json_t *out, const char *opt, llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(in, key, NULL);

    if (ol_absent(t)) {
        return 0;
    }
    if (!ol_is_num(t)) {
        return bad(err, key, "invalid_type",
                   apr_psprintf(p,
                                "Invalid type for '%s': expected a "
                                "number.",
                                key));
    }
    llmgw_json_setj(options_of(out), llmgw_json_getj(in, key, NULL), opt,
                    NULL);
    return 0;
}

static int map_sampling(apr_pool_t *p, const llmgw_json_t *in,
                        llmgw_json_t *out, llmgw_error_t *err)
{
    static const char *const extensions[][2] = {
        { "min_p", "min_p" },
        { "repeat_penalty", "repeat_penalty" },
        { "repetition_penalty", "repeat_penalty" }, /* vLLM's name */
        { "repeat_last_n", "repeat_last_n" },
        { "typical_p", "typical_p" },
        { "mirostat", "mirostat" },
        { "mirostat_tau", "mirostat_tau" },
        { "mirostat_eta", "mirostat_eta" },
    };
    const char *const *k;
    const char *max = "max_completion_tokens";
    llmgw_json_t *stop;
    llmgw_json_type_t t;
    apr_size_t i, n;
    int rv;

    if (ol_is_num(llmgw_json_type(in, "n", NULL))
        && llmgw_json_getl(in, 1, "n", NULL) > 1) {
        return bad(err, "n", "unsupported_value",
                   "n>1 is not supported by the ollama dialect.");
    }
    for (k = ol_same_options; *k; k++) {
        if ((rv = copy_option(p, in, *k, out, *k, err)) != 0) {
            return rv;
        }
    }
    /* Not OpenAI's, but what llama.cpp's and vLLM's OpenAI endpoints take
     * (clients written for them send it): Ollama has the same options. */
    for (i = 0; i < sizeof(extensions) / sizeof(extensions[0]); i++) {
        rv = copy_option(p, in, extensions[i][0], out, extensions[i][1], err);
        if (rv != 0) {
            return rv;
        }
    }
    if (ol_absent(llmgw_json_type(in, max, NULL))) {
        max = "max_tokens";
    }
    if ((rv = copy_option(p, in, max, out, "num_predict", err)) != 0) {
        return rv;
    }
    t = llmgw_json_type(in, "stop", NULL);
    stop = llmgw_json_getj(in, "stop", NULL);
    if (t == LLMGW_JSON_STRING) {
        llmgw_json_array_adds(llmgw_json_add_array(options_of(out), "stop"),
                              llmgw_json_gets(in, "stop", NULL));
    }
    else if (t == LLMGW_JSON_ARRAY) {
        for (i = 0, n = ol_len_of(stop); i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(stop, i), NULL)
                != LLMGW_JSON_STRING) {
                return bad(err, "stop", "invalid_type",
                           "Invalid type for 'stop': expected a string or "
                           "an array of strings.");
            }
        }
        llmgw_json_setj(options_of(out), stop, "stop", NULL);
    }
    else if (!ol_absent(t)) {
        return bad(err, "stop", "invalid_type",
                   "Invalid type for 'stop': "
                   "expected a string or an array of strings.");
    }
    return 0;
}

static int map_format(const llmgw_json_t *in, llmgw_json_t *out,
                      llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(in, "response_format", NULL);
    const char *type;

    if (ol_absent(t)) {
        return 0;
    }
    type = llmgw_json_gets(in, "response_format", "type", NULL);
    if (t != LLMGW_JSON_OBJECT || !type) {
        return bad(err, "response_format", "invalid_type",
                   "Invalid type for 'response_format': expected an "
                   "object with a 'type'.");
    }
    if (strcmp(type, "text") == 0) {
        return 0;
    }
    if (strcmp(type, "json_object") == 0) {
        llmgw_json_sets(out, "json", "format", NULL);
        return 0;
    }
    if (strcmp(type, "json_schema") == 0) {
        if (llmgw_json_type(in, "response_format", "json_schema", "schema",
                            NULL)
            == LLMGW_JSON_OBJECT) {
            llmgw_json_setj(out,
                            llmgw_json_getj(in, "response_format",
                                            "json_schema", "schema", NULL),
                            "format", NULL);
        }
        else {
            /* A schema-less json_schema still asks for JSON. */
            llmgw_json_sets(out, "json", "format", NULL);
        }
        return 0;
    }
    return bad(err, "response_format.type", "invalid_value",
               "'response_format.type' must be 'text', 'json_object' or "
               "'json_schema'.");
}

static void map_effort(const llmgw_json_t *in, llmgw_json_t *out)
{
    const char *e = llmgw_json_gets(in, "reasoning_effort", NULL);

    if (!e) {
        return;
    }
    if (strcmp(e, "none") == 0) {
        llmgw_json_setb(out, 0, "think", NULL);
    }
    else if (strcmp(e, "minimal") == 0 || strcmp(e, "low") == 0) {
        llmgw_json_sets(out, "low", "think", NULL);
    }
    else if (strcmp(e, "medium") == 0 || strcmp(e, "high") == 0) {
        llmgw_json_sets(out, e, "think", NULL);
    }
}

/* The base64 data of a data: URL, or NULL when url is none. */
static const char *data_url_base64(const char *url)
{
    const char *comma;

    if (strncasecmp(url, "data:", 5) != 0) {
        return NULL;
    }
    comma = strchr(url, ',');
    if (!comma || comma - url < 12
        || strncasecmp(comma - 7, ";base64", 7) != 0) {
        return NULL;
    }
    return comma + 1;
}

static int map_content(apr_pool_t *p, const llmgw_json_t *m, apr_size_t i,
                       llmgw_json_t *om, llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(m, "content", NULL);
    llmgw_json_t *parts, *images = NULL;
    apr_array_header_t *texts;
    apr_size_t k, n;

    if (t == LLMGW_JSON_STRING) {
        llmgw_json_setj(om, llmgw_json_getj(m, "content", NULL), "content",
                        NULL);
        return 0;
    }
    /* Set now so that content comes before images. */
    llmgw_json_sets(om, "", "content", NULL);
    if (ol_absent(t)) {
        return 0;
    }
    if (t != LLMGW_JSON_ARRAY) {
        const char *param =
            apr_psprintf(p, "messages[%" APR_SIZE_T_FMT "].content", i);

        return bad(err, param, "invalid_type",
                   apr_psprintf(p,
                                "Invalid type for '%s': expected a "
                                "string or an array of content parts.",
                                param));
    }
    parts = llmgw_json_getj(m, "content", NULL);
    n = ol_len_of(parts);
    texts = apr_array_make(p, (int)n + 1, sizeof(const char *));
    for (k = 0; k < n; k++) {
        llmgw_json_t *part = llmgw_json_array_get(parts, k);
        const char *type = llmgw_json_gets(part, "type", NULL);
        const char *at = apr_psprintf(
            p, "messages[%" APR_SIZE_T_FMT "].content[%" APR_SIZE_T_FMT "]", i,
            k);
        const char *v, *data;

        if (!type) {
            return missing(p, apr_pstrcat(p, at, ".type", NULL), err);
        }
        if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            /* A refusal in the history is what the assistant said. */
            if (!(v = llmgw_json_gets(part, type, NULL))) {
                return bad(err, apr_pstrcat(p, at, ".", type, NULL),
                           "invalid_type",
                           apr_psprintf(p,
                                        "Invalid type for '%s.%s': "
                                        "expected a string.",
                                        at, type));
            }
            APR_ARRAY_PUSH(texts, const char *) = v;
            continue;
        }
        if (strcmp(type, "image_url") != 0) {
            return bad(err, apr_pstrcat(p, at, ".type", NULL), "invalid_value",
                       apr_psprintf(p,
                                    "Content parts of type '%s' are not "
                                    "supported by the ollama dialect.",
                                    type));
        }
        v = llmgw_json_gets(part, "image_url", "url", NULL);
        if (!v) {
            v = llmgw_json_gets(part, "image_url", NULL);
        }
        if (!v) {
            return missing(p, apr_pstrcat(p, at, ".image_url.url", NULL), err);
        }
        if (!(data = data_url_base64(v))) {
            return bad(err, apr_pstrcat(p, at, ".image_url.url", NULL),
                       "unsupported_value",
                       "Image URLs are not supported by the ollama "
                       "dialect: Ollama cannot fetch them. Send the image "
                       "inline as a data:image/...;base64,... URL.");
        }
        if (!images) {
            images = llmgw_json_add_array(om, "images");
        }
        llmgw_json_array_adds(images, data);
    }
    llmgw_json_sets(om, apr_array_pstrcat(p, texts, '\n'), "content", NULL);
    return 0;
}

static int map_tool_calls(apr_pool_t *p, const llmgw_json_t *m, apr_size_t i,
                          llmgw_json_t *om, llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(m, "tool_calls", NULL);
    llmgw_json_t *calls = llmgw_json_getj(m, "tool_calls", NULL), *out;
    apr_size_t k, n;

    if (ol_absent(t)) {
        return 0;
    }
    if (t != LLMGW_JSON_ARRAY) {
        return bad(
            err,
            apr_psprintf(p, "messages[%" APR_SIZE_T_FMT "].tool_calls", i),
            "invalid_type",
            "Invalid type for 'tool_calls': expected an array.");
    }
    if (!(n = ol_len_of(calls))) {
        return 0;
    }
    out = llmgw_json_add_array(om, "tool_calls");
    for (k = 0; k < n; k++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, k), *ot, *args;
        const char *name = llmgw_json_gets(tc, "function", "name", NULL);
        const char *id = llmgw_json_gets(tc, "id", NULL);
        const char *at =
            apr_psprintf(p,
                         "messages[%" APR_SIZE_T_FMT
                         "].tool_calls[%" APR_SIZE_T_FMT "].function",
                         i, k);

        if (!name) {
            return missing(p, apr_pstrcat(p, at, ".name", NULL), err);
        }
        ot = llmgw_json_array_add_object(out);
        if (id) {
            llmgw_json_sets(ot, id, "id", NULL);
        }
        llmgw_json_sets(ot, name, "function", "name", NULL);
        t = llmgw_json_type(tc, "function", "arguments", NULL);
        if (t == LLMGW_JSON_OBJECT) {
            args = llmgw_json_getj(tc, "function", "arguments", NULL);
        }
        else if (t == LLMGW_JSON_STRING) {
            const char *s = llmgw_json_gets(tc, "function", "arguments", NULL);

            args = ol_args_object(p, s, strlen(s));
        }
        else if (ol_absent(t)) {
            args = llmgw_json_create_object(p);
        }
        else {
            args = NULL;
        }
        if (!args) {
            return bad(err, apr_pstrcat(p, at, ".arguments", NULL),
                       "invalid_value",
                       apr_psprintf(p,
                                    "'%s.arguments' is not a valid JSON "
                                    "object: Ollama needs the arguments of "
                                    "a tool call as an object.",
                                    at));
        }
        llmgw_json_setj(ot, args, "function", "arguments", NULL);
    }
    return 0;
}

/* The name of the tool whose call 'id' message i answers: the nearest
 * earlier one, as clients may reuse ids across turns. */
static const char *tool_name_for(const llmgw_json_t *msgs, apr_size_t i,
                                 const char *id)
{
    while (i-- > 0) {
        llmgw_json_t *calls =
            llmgw_json_getj(llmgw_json_array_get(msgs, i), "tool_calls", NULL);
        apr_size_t k, n = ol_len_of(calls);

        for (k = 0; k < n; k++) {
            llmgw_json_t *tc = llmgw_json_array_get(calls, k);
            const char *tid = llmgw_json_gets(tc, "id", NULL);

            if (tid && strcmp(tid, id) == 0) {
                return llmgw_json_gets(tc, "function", "name", NULL);
            }
        }
    }
    return NULL;
}

static int map_messages(apr_pool_t *p, const llmgw_json_t *in,
                        llmgw_json_t *out, llmgw_error_t *err)
{
    llmgw_json_t *msgs = llmgw_json_getj(in, "messages", NULL);
    llmgw_json_t *omsgs = llmgw_json_add_array(out, "messages");
    apr_size_t i, n = ol_len_of(msgs);
    int rv;

    for (i = 0; i < n; i++) {
        llmgw_json_t *m = llmgw_json_array_get(msgs, i), *om;
        const char *role = llmgw_json_gets(m, "role", NULL), *v;

        if (!role) {
            const char *param =
                apr_psprintf(p, "messages[%" APR_SIZE_T_FMT "].role", i);

            return missing(p, param, err);
        }
        if (strcmp(role, "developer") == 0) {
            role = "system"; /* Ollama's templates know no other */
        }
        else if (strcmp(role, "function") == 0) {
            role = "tool";
        }
        else if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0
                 && strcmp(role, "assistant") != 0
                 && strcmp(role, "tool") != 0) {
            return bad(
                err, apr_psprintf(p, "messages[%" APR_SIZE_T_FMT "].role", i),
                "invalid_value",
                apr_psprintf(p, "Invalid value for role: '%s'.", role));
        }
        om = llmgw_json_array_add_object(omsgs);
        llmgw_json_sets(om, role, "role", NULL);
        if ((rv = map_content(p, m, i, om, err)) != 0) {
            return rv;
        }
        if (strcmp(role, "assistant") == 0) {
            if ((rv = map_tool_calls(p, m, i, om, err)) != 0) {
                return rv;
            }
            v = llmgw_json_gets(m, "reasoning_content", NULL);
            if (!v) {
                v = llmgw_json_gets(m, "reasoning", NULL);
            }
            if (v && *v) {
                llmgw_json_sets(om, v, "thinking", NULL);
            }
        }
        else if (strcmp(role, "tool") == 0) {
            const char *id = llmgw_json_gets(m, "tool_call_id", NULL);
            const char *name = llmgw_json_gets(m, "name", NULL);

            if (!name && id) {
                name = tool_name_for(msgs, i, id);
            }
            if (name) {
                llmgw_json_sets(om, name, "tool_name", NULL);
            }
            if (id) {
                llmgw_json_sets(om, id, "tool_call_id", NULL);
            }
        }
    }
    return 0;
}

static int map_prompt(const llmgw_json_t *in, llmgw_json_t *out,
                      llmgw_error_t *err)
{
    llmgw_json_t *prompt = llmgw_json_getj(in, "prompt", NULL);

    if (llmgw_json_type(in, "prompt", NULL) == LLMGW_JSON_ARRAY) {
        /* A batch of prompts is an array of strings; tokens are not. */
        if (ol_len_of(prompt) > 1
            && llmgw_json_type(ol_item(prompt, 0), NULL)
                   == LLMGW_JSON_STRING) {
            return bad(err, "prompt", "unsupported_value",
                       "The ollama dialect takes one prompt per request.");
        }
        prompt = ol_item(prompt, 0);
    }
    if (!prompt || llmgw_json_type(prompt, NULL) != LLMGW_JSON_STRING) {
        return bad(err, "prompt", "invalid_type",
                   "Invalid type for 'prompt': the ollama dialect takes a "
                   "string, not tokens.");
    }
    llmgw_json_setj(out, prompt, "prompt", NULL);
    if (llmgw_json_type(in, "suffix", NULL) == LLMGW_JSON_STRING) {
        llmgw_json_setj(out, llmgw_json_getj(in, "suffix", NULL), "suffix",
                        NULL);
    }
    return 0;
}

static int map_input(const llmgw_json_t *in, llmgw_json_t *out,
                     llmgw_error_t *err)
{
    llmgw_json_t *input = llmgw_json_getj(in, "input", NULL);
    apr_size_t i, n = ol_len_of(input);

    if (llmgw_json_type(in, "input", NULL) == LLMGW_JSON_ARRAY) {
        for (i = 0; i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(input, i), NULL)
                != LLMGW_JSON_STRING) {
                return bad(err, "input", "invalid_type",
                           "Invalid type for 'input': the ollama dialect "
                           "takes a string or an array of strings, not "
                           "tokens.");
            }
        }
    }
    else if (llmgw_json_type(in, "input", NULL) != LLMGW_JSON_STRING) {
        return bad(err, "input", "invalid_type",
                   "Invalid type for 'input': expected a string or an "
                   "array of strings.");
    }
    llmgw_json_setj(out, input, "input", NULL);
    if (ol_is_num(llmgw_json_type(in, "dimensions", NULL))) {
        llmgw_json_setj(out, llmgw_json_getj(in, "dimensions", NULL),
                        "dimensions", NULL);
    }
    return 0;
}

int llmgw_ollama_request(apr_pool_t *p, const llmgw_request_t *req,
                         const char *upstream_model, const char **path,
                         const char **body, apr_size_t *len,
                         llmgw_error_t *err)
{
    const llmgw_json_t *in = req->body;
    llmgw_json_t *out = llmgw_json_create_object(p);
    const char *choice;
    int rv;

    llmgw_json_sets(out, upstream_model ? upstream_model : req->model, "model",
                    NULL);
    switch (req->ep) {
    case LLMGW_EP_CHAT:
        *path = "/api/chat";
        if ((rv = map_messages(p, in, out, err)) != 0) {
            return rv;
        }
        choice = llmgw_json_gets(in, "tool_choice", NULL);
        if (ol_len_of(llmgw_json_getj(in, "tools", NULL))
            && !(choice && strcmp(choice, "none") == 0)) {
            llmgw_json_setj(out, llmgw_json_getj(in, "tools", NULL), "tools",
                            NULL);
        }
        break;
    case LLMGW_EP_COMPLETIONS:
        *path = "/api/generate";
        if ((rv = map_prompt(in, out, err)) != 0) {
            return rv;
        }
        break;
    case LLMGW_EP_EMBEDDINGS:
        *path = "/api/embed";
        if ((rv = map_input(in, out, err)) != 0) {
            return rv;
        }
        break;
    default:
        return llmgw_error_set(err, 404, "invalid_request_error", NULL,
                               "unknown_url",
                               "This endpoint is not served "
                               "by the ollama dialect.");
    }
    if (req->ep != LLMGW_EP_EMBEDDINGS) {
        if ((rv = map_format(in, out, err)) != 0
            || (rv = map_sampling(p, in, out, err)) != 0) {
            return rv;
        }
        if (req->max_tokens > 0) {
            /* The limits' bound, where the client gave none. */
            llmgw_json_setl(options_of(out), req->max_tokens, "num_predict",
                            NULL);
        }
        map_effort(in, out);
        llmgw_json_setb(out, req->stream, "stream", NULL);
    }
    if (!ol_absent(llmgw_json_type(in, "keep_alive", NULL))) {
        llmgw_json_setj(out, llmgw_json_getj(in, "keep_alive", NULL),
                        "keep_alive", NULL);
    }
    *body = llmgw_json_write(out, len);
    return 0;
}

/* ---------------------------------------------------------------------
 * A.2 The OpenAI answer for a plain Ollama one
 */

static int backend_error(apr_pool_t *p, int status, const char *message,
                         llmgw_error_t *err)
{
    if (status < 400) {
        status = 502; /* an error is never a success */
    }
    if (status == 404 && message) {
        /* Ollama's JSON 404 is 'model "x" not found, try pulling it
         * first'; a plain one is a path this Ollama does not know. */
        return llmgw_error_set(err, status, "invalid_request_error", "model",
                               "model_not_found", message);
    }
    if (!message) {
        message = (status == 502)
                      ? "The backend sent an answer the gateway could not "
                        "read."
                      : apr_psprintf(p,
                                     "The backend answered with HTTP "
                                     "status %d.",
                                     status);
    }
    return llmgw_error_set(
        err, status, status >= 500 ? "server_error" : "invalid_request_error",
        NULL, status >= 500 ? "upstream_error" : NULL, message);
}

static void read_counts(const llmgw_json_t *j, llmgw_usage_t *usage)
{
    llmgw_usage_read(j, "prompt_eval_count", "eval_count", NULL, usage);
}

static void put_usage(llmgw_json_t *o, const llmgw_usage_t *u, int chat)
{
    llmgw_json_setl(o, u->prompt, "usage", "prompt_tokens", NULL);
    if (chat) {
        llmgw_json_setl(o, u->completion, "usage", "completion_tokens", NULL);
    }
    llmgw_json_setl(o, u->total, "usage", "total_tokens", NULL);
}

/* One embedding as OpenAI's base64: little-endian float32s. */
static const char *floats_base64(apr_pool_t *p, const llmgw_json_t *v)
{
    apr_size_t i, n = ol_len_of(v);
    unsigned char *raw = apr_palloc(p, n * 4 + 1);
    char *out;

    for (i = 0; i < n; i++) {
        float f = (float)llmgw_json_array_getd(v, i, 0);
        apr_uint32_t u;

        memcpy(&u, &f, sizeof(u));
        raw[4 * i] = (unsigned char)(u & 0xff);
        raw[4 * i + 1] = (unsigned char)((u >> 8) & 0xff);
        raw[4 * i + 2] = (unsigned char)((u >> 16) & 0xff);
        raw[4 * i + 3] = (unsigned char)(u >> 24);
    }
    out = apr_palloc(p, apr_base64_encode_len((int)(n * 4)));
    apr_base64_encode_binary(out, raw, (int)(n * 4));
    return out;
}

static void chat_answer(apr_pool_t *p, const llmgw_json_t *j, llmgw_json_t *o)
{
    llmgw_json_t *ch =
        llmgw_json_array_add_object(llmgw_json_add_array(o, "choices"));
    llmgw_json_t *msg,
        *calls = llmgw_json_getj(j, "message", "tool_calls", NULL), *oc;
    const char *content = llmgw_json_gets(j, "message", "content", NULL);
    const char *thinking = llmgw_json_gets(j, "message", "thinking", NULL);
    apr_size_t i, n = ol_len_of(calls);

    llmgw_json_setl(ch, 0, "index", NULL);
    msg = llmgw_json_add_object(ch, "message");
    llmgw_json_sets(msg, "assistant", "role", NULL);
    if (n && !(content && *content)) {
        llmgw_json_setnull(msg, "content", NULL);
    }
    else {
        llmgw_json_sets(msg, content ? content : "", "content", NULL);
    }
    /* Required by OpenAI's schema (nullable); Ollama has no refusals. */
    llmgw_json_setnull(msg, "refusal", NULL);
    if (thinking && *thinking) {
        llmgw_json_sets(msg, thinking, "reasoning_content", NULL);
    }
    if (n) {
        oc = llmgw_json_add_array(msg, "tool_calls");
        for (i = 0; i < n; i++) {
            llmgw_json_t *tc = llmgw_json_array_get(calls, i);
            llmgw_json_t *t = llmgw_json_array_add_object(oc);
            const char *id = llmgw_json_gets(tc, "id", NULL);
            const char *name = llmgw_json_gets(tc, "function", "name", NULL);

            /* Ollama before tool call ids sends none: make one up. */
            ol_openai_call(
                t,
                id && *id ? id : apr_psprintf(p, "call_%" APR_SIZE_T_FMT, i),
                name ? name : "", tc);
        }
    }
    llmgw_json_setnull(ch, "logprobs", NULL);
    llmgw_json_sets(
        ch, ol_finish_reason(llmgw_json_gets(j, "done_reason", NULL), n > 0),
        "finish_reason", NULL);
}

int llmgw_ollama_response(apr_pool_t *p, const llmgw_request_t *req,
                          int status, const char *buf, apr_size_t len,
                          const char *id, const char *model,
                          apr_int64_t created, const char **out,
                          apr_size_t *out_len, llmgw_usage_t *usage,
                          llmgw_error_t *err)
{
    llmgw_json_err_t jerr;
    const char *msg;
    llmgw_json_t *j = llmgw_json_parse(p, buf, len, &jerr, &msg), *o;

    memset(usage, 0, sizeof(*usage));
    if (!j || llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT) {
        return backend_error(p, status, NULL, err);
    }
    if (status >= 400 || !ol_absent(llmgw_json_type(j, "error", NULL))) {
        return backend_error(p, status, llmgw_json_gets(j, "error", NULL),
                             err);
    }
    if (!model) {
        model = req->model;
    }
    /* Another endpoint's answer, or none of Ollama's, is the backend's
     * fault, and counts nothing. */
    if (req->ep == LLMGW_EP_CHAT
            ? llmgw_json_type(j, "message", NULL) != LLMGW_JSON_OBJECT
        : req->ep == LLMGW_EP_COMPLETIONS
            ? llmgw_json_type(j, "response", NULL) != LLMGW_JSON_STRING
            : llmgw_json_type(j, "embeddings", NULL) != LLMGW_JSON_ARRAY) {
        return backend_error(p, status, NULL, err);
    }
    read_counts(j, usage);
    o = llmgw_json_create_object(p);
    switch (req->ep) {
    case LLMGW_EP_CHAT:
    case LLMGW_EP_COMPLETIONS: {
        int chat = req->ep == LLMGW_EP_CHAT;

        llmgw_json_sets(o,
                        apr_pstrcat(p, chat ? "chatcmpl-" : "cmpl-", id, NULL),
                        "id", NULL);
        llmgw_json_sets(o, chat ? "chat.completion" : "text_completion",
                        "object", NULL);
        llmgw_json_setl(o, created, "created", NULL);
        llmgw_json_sets(o, model, "model", NULL);
        if (chat) {
            chat_answer(p, j, o);
        }
        else {
            llmgw_json_t *ch = llmgw_json_array_add_object(
                llmgw_json_add_array(o, "choices"));
            const char *text = llmgw_json_gets(j, "response", NULL);

            llmgw_json_sets(ch, text ? text : "", "text", NULL);
            llmgw_json_setl(ch, 0, "index", NULL);
            llmgw_json_setnull(ch, "logprobs", NULL);
            llmgw_json_sets(
                ch,
                ol_finish_reason(llmgw_json_gets(j, "done_reason", NULL), 0),
                "finish_reason", NULL);
        }
        put_usage(o, usage, 1);
        break;
    }
    case LLMGW_EP_EMBEDDINGS: {
        llmgw_json_t *embs = llmgw_json_getj(j, "embeddings", NULL), *data;
        const char *fmt = llmgw_json_gets(req->body, "encoding_format", NULL);
        int b64 = fmt && strcmp(fmt, "base64") == 0;
        apr_size_t i, n = ol_len_of(embs);

        usage->completion = 0;
        usage->total = usage->prompt;
        llmgw_json_sets(o, "list", "object", NULL);
        data = llmgw_json_add_array(o, "data");
        for (i = 0; i < n; i++) {
            llmgw_json_t *e = llmgw_json_array_add_object(data);
            llmgw_json_t *v = llmgw_json_array_get(embs, i);

            llmgw_json_sets(e, "embedding", "object", NULL);
            llmgw_json_setl(e, (apr_int64_t)i, "index", NULL);
            if (b64) {
                llmgw_json_sets(e, floats_base64(p, v), "embedding", NULL);
            }
            else {
                llmgw_json_setj(e, v, "embedding", NULL);
            }
        }
        llmgw_json_sets(o, model, "model", NULL);
        put_usage(o, usage, 0);
        break;
    }
    default:
        return backend_error(p, 502,
                             "The ollama dialect does not serve "
                             "this endpoint.",
                             err);
    }
    *out = llmgw_json_write(o, out_len);
    return 0;
}

/* ---------------------------------------------------------------------
 * A.3 Ollama's NDJSON stream as OpenAI SSE
 */

static apr_status_t sse_cleanup(void *data)
{
    llmgw_ollama_sse_t *s = data;

    llmgw_buf_free(&s->in);
    llmgw_buf_free(&s->out);
    return APR_SUCCESS;
}

llmgw_ollama_sse_t *llmgw_ollama_sse_create(apr_pool_t *p, llmgw_endpoint_t ep,
                                            const char *id, const char *model,
                                            apr_int64_t created,
                                            int include_usage)
{
    llmgw_ollama_sse_t *s = apr_pcalloc(p, sizeof(*s));
    int chat = ep != LLMGW_EP_COMPLETIONS;

    s->p = p;
    apr_pool_create(&s->lp, p);
    s->ep = chat ? LLMGW_EP_CHAT : LLMGW_EP_COMPLETIONS;
    s->id = apr_pstrcat(p, chat ? "chatcmpl-" : "cmpl-", id ? id : "", NULL);
    s->object = chat ? "chat.completion.chunk" : "text_completion";
    s->model = apr_pstrdup(p, model ? model : "");
    s->created = created;
    s->include_usage = include_usage;
    apr_pool_cleanup_register(p, s, sse_cleanup, apr_pool_cleanup_null);
    return s;
}

static void sse_fail(llmgw_ollama_sse_t *s, const char *message)
{
    llmgw_error_t err;
    const char *tail;
    apr_size_t n;

    if (!s->error_line) {
        s->broke = message;
    }

    llmgw_error_set(&err, 502, "server_error", NULL, "upstream_error",
                    message);
    tail = llmgw_sse_error_events(s->lp, &err, &n);
    llmgw_buf_add(&s->out, tail, n);
    s->failed = 1;
}

static void sse_emit(llmgw_ollama_sse_t *s, const llmgw_json_t *c)
{
    apr_size_t n;
    const char *text = llmgw_json_write(c, &n);

    if (!llmgw_buf_add(&s->out, "data: ", 6)
        || !llmgw_buf_add(&s->out, text, n)
        || !llmgw_buf_add(&s->out, "\n\n", 2)) {
        /* Out of memory: stop here; the client sees a stream cut
         * short, as from a backend that died. */
        s->failed = 1;
    }
}

/* A chunk with its one choice, for the caller to fill (*choice). */
static llmgw_json_t *sse_chunk(llmgw_ollama_sse_t *s, llmgw_json_t **choice)
{
    llmgw_json_t *c = llmgw_json_create_object(s->lp), *ch;

    llmgw_json_sets(c, s->id, "id", NULL);
    llmgw_json_sets(c, s->object, "object", NULL);
    llmgw_json_setl(c, s->created, "created", NULL);
    llmgw_json_sets(c, s->model, "model", NULL);
    ch = llmgw_json_array_add_object(llmgw_json_add_array(c, "choices"));
    llmgw_json_setl(ch, 0, "index", NULL);
    if (s->ep == LLMGW_EP_CHAT) {
        llmgw_json_add_object(ch, "delta");
    }
    else {
        llmgw_json_sets(ch, "", "text", NULL);
    }
    llmgw_json_setnull(ch, "logprobs", NULL);
    llmgw_json_setnull(ch, "finish_reason", NULL);
    if (s->include_usage) {
        llmgw_json_setnull(c, "usage", NULL);
    }
    *choice = ch;
    return c;
}

static void sse_tool_calls(llmgw_ollama_sse_t *s, const llmgw_json_t *calls)
{
    llmgw_json_t *ch, *c = sse_chunk(s, &ch), *arr;
    apr_size_t i, n = ol_len_of(calls);

    arr =
        llmgw_json_add_array(llmgw_json_getj(ch, "delta", NULL), "tool_calls");
    for (i = 0; i < n; i++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, i);
        llmgw_json_t *o = llmgw_json_array_add_object(arr);
        const char *id = llmgw_json_gets(tc, "id", NULL);
        const char *name = llmgw_json_gets(tc, "function", "name", NULL);

        llmgw_json_setl(o, s->tool_calls, "index", NULL);
        ol_openai_call(
            o, id && *id ? id : apr_psprintf(s->lp, "call_%d", s->tool_calls),
            name ? name : "", tc);
        s->tool_calls++;
    }
    sse_emit(s, c);
}

static void sse_translate(llmgw_ollama_sse_t *s, const llmgw_json_t *j)
{
    int chat = s->ep == LLMGW_EP_CHAT, output = 0;
    const char *text = chat ? llmgw_json_gets(j, "message", "content", NULL)
                            : llmgw_json_gets(j, "response", NULL);
    const char *thinking =
        chat ? llmgw_json_gets(j, "message", "thinking", NULL) : NULL;
    llmgw_json_t *calls =
        chat ? llmgw_json_getj(j, "message", "tool_calls", NULL) : NULL;
    llmgw_json_t *c, *ch;

    if (chat && !s->started) {
        c = sse_chunk(s, &ch);
        llmgw_json_sets(ch, "assistant", "delta", "role", NULL);
        llmgw_json_sets(ch, "", "delta", "content", NULL);
        sse_emit(s, c);
        s->started = 1;
    }
    if (thinking && *thinking) {
        c = sse_chunk(s, &ch);
        llmgw_json_sets(ch, thinking, "delta", "reasoning_content", NULL);
        sse_emit(s, c);
        output = 1;
    }
    if (text && *text) {
        c = sse_chunk(s, &ch);
        if (chat) {
            llmgw_json_sets(ch, text, "delta", "content", NULL);
        }
        else {
            llmgw_json_sets(ch, text, "text", NULL);
        }
        sse_emit(s, c);
        output = 1;
    }
    if (ol_len_of(calls)) {
        sse_tool_calls(s, calls);
        output = 1;
    }
    s->content_events += output;
    if (!llmgw_json_getb(j, 0, "done", NULL)) {
        return;
    }
    c = sse_chunk(s, &ch);
    llmgw_json_sets(ch,
                    ol_finish_reason(llmgw_json_gets(j, "done_reason", NULL),
                                     s->tool_calls > 0),
                    "finish_reason", NULL);
    sse_emit(s, c);
    read_counts(j, &s->usage);
    if (s->include_usage) {
        c = llmgw_json_create_object(s->lp);
        llmgw_json_sets(c, s->id, "id", NULL);
        llmgw_json_sets(c, s->object, "object", NULL);
        llmgw_json_setl(c, s->created, "created", NULL);
        llmgw_json_sets(c, s->model, "model", NULL);
        llmgw_json_add_array(c, "choices");
        put_usage(c, &s->usage, 1);
        sse_emit(s, c);
    }
    if (!llmgw_buf_add(&s->out, "data: [DONE]\n\n", 14)) {
        s->failed = 1;
    }
    s->done = 1;
}

static void sse_line(void *baton, const char *line, apr_size_t len)
{
    llmgw_ollama_sse_t *s = baton;
    llmgw_json_err_t jerr;
    const char *msg;
    llmgw_json_t *j;
    const char *raw = line;
    apr_size_t raw_len = len;

    line = llmgw_json_trim(line, &len);
    if (s->done || s->failed || !len) {
        return;
    }
    j = llmgw_json_parse(s->lp, line, len, &jerr, &msg);
    if (!j || llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT) {
        sse_fail(s, "The backend sent a stream line that is not a JSON "
                    "object.");
        apr_pool_clear(s->lp);
        return;
    }
    if (s->on_line) {
        s->on_line(s->line_baton, raw, raw_len);
    }
    if (!ol_absent(llmgw_json_type(j, "error", NULL))) {
        msg = llmgw_json_gets(j, "error", NULL);
        s->error_line = 1;
        sse_fail(s, msg ? msg : "The backend reported an error.");
    }
    else {
        sse_translate(s, j);
    }
    apr_pool_clear(s->lp);
}

apr_size_t llmgw_ollama_sse_feed(llmgw_ollama_sse_t *s, const char *in,
                                 apr_size_t len, const char **out)
{
    if (!ol_feed(&s->in, &s->out, s->done || s->failed, in, len, sse_line,
                 s)) {
        sse_fail(s, "The backend sent a stream line the gateway cannot "
                    "hold.");
        apr_pool_clear(s->lp);
    }
    if (s->failed) {
        llmgw_buf_free(&s->in); /* nothing more is read */
    }
    return ol_output(&s->out, out);
}

apr_size_t llmgw_ollama_sse_end(llmgw_ollama_sse_t *s, const char **out)
{
    ol_end(&s->in, &s->out, sse_line, s);
    return ol_output(&s->out, out);
}

const char *llmgw_ollama_sse_error_tail(const llmgw_ollama_sse_t *s,
                                        apr_pool_t *p,
                                        const llmgw_error_t *err,
                                        apr_size_t *len)
{
    if (s->done || s->failed) {
        *len = 0;
        return "";
    }
    return llmgw_sse_error_events(p, err, len);
}
