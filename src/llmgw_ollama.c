/* llmgw_ollama: Ollama's native API both ways, httpd-free: bodies and
 * answers translated, and the NDJSON <-> SSE stream translators. */

/* The mapping. Ollama's names are those of its api/types.go (ChatRequest,
 * GenerateRequest, EmbedRequest, Message, ToolCall, Metrics).
 *
 * A. OpenAI client -> Ollama backend (route dialect=ollama)
 *
 *   /v1/chat/completions -> POST /api/chat
 *     model                    model (the route's upstream name)
 *     messages[].role          role; "developer" -> "system", the legacy
 *                              "function" -> "tool"
 *     messages[].content       content: a string, or the text parts
 *                              joined by "\n"; image_url parts holding
 *                              data:<type>;base64,<data> -> images[]
 *                              (<data> only); any other URL -> 400:
 *                              Ollama cannot fetch images
 *     messages[].tool_calls[]  tool_calls[] {id, function {name,
 *                              arguments}}: OpenAI's arguments string is
 *                              parsed to the object Ollama wants (not a
 *                              JSON object -> 400; "" -> {})
 *     messages[].tool_call_id  tool_call_id (newer Ollama reads it), and
 *                              tool_name: the message's name, else the
 *                              name of the nearest earlier assistant tool
 *                              call with that id (older Ollama's only key)
 *     messages[].reasoning_content | reasoning      thinking
 *     tools                    tools (the same shape); left out when
 *                              tool_choice is "none"
 *     response_format          format: json_object -> "json",
 *                              json_schema -> its schema object
 *     temperature, top_p, top_k, seed, presence_penalty,
 *     frequency_penalty        options.<the same name>
 *     stop (string | array)    options.stop (an array)
 *     max_completion_tokens | max_tokens            options.num_predict
 *     reasoning_effort         think: "none" -> false, "minimal" | "low"
 *                              -> "low", "medium", "high"
 *     keep_alive               keep_alive (not OpenAI's, passed on)
 *     stream                   stream, always sent: Ollama's default is
 *                              true
 *     n > 1                    400: Ollama gives one choice
 *     dropped on purpose: logprobs, top_logprobs, logit_bias, user,
 *     tool_choice other than "none" (Ollama cannot force a call),
 *     parallel_tool_calls, stream_options (Ollama always counts),
 *     service_tier, store, metadata, prediction, audio, modalities,
 *     messages[].name (except on tool/function messages)
 *   /v1/completions -> POST /api/generate
 *     prompt (a string, or an array of one string; more prompts or
 *     token arrays -> 400), suffix, and the options, format, think,
 *     keep_alive and stream of chat; echo, best_of, logprobs dropped
 *   /v1/embeddings -> POST /api/embed
 *     input (a string or an array of strings; token arrays -> 400),
 *     dimensions (older Ollama ignores it), keep_alive;
 *     encoding_format "base64" is honoured on the answer; user dropped
 *
 *   Answers: message.content -> content (null when there are only tool
 *   calls), message.thinking -> reasoning_content, message.tool_calls ->
 *   tool_calls {id (Ollama's, else "call_<n>"), type "function",
 *   function {name, arguments as a JSON string}}; done_reason "length"
 *   -> finish_reason "length", else "tool_calls" when there were tool
 *   calls, else "stop"; prompt_eval_count, eval_count -> usage.
 *   /api/generate's response -> choices[0].text (thinking dropped:
 *   completions have no field for it). /api/embed's embeddings[i] ->
 *   data[i].embedding, prompt_eval_count -> usage. {"error":"..."} ->
 *   the OpenAI error shape with the backend's status.
 *   Streams (NDJSON, an object a line): a role chunk first (chat), a
 *   chunk for each line's thinking, text and tool calls (empty lines of
 *   text send nothing), then on done:true a chunk with finish_reason,
 *   the usage chunk (choices []) when asked for, and [DONE]. An
 *   {"error":"..."} line ends it with the error tail.
 *
 * B. Ollama client -> OpenAI backend (LLMApi ollama)
 *
 *   /api/chat -> /v1/chat/completions, /api/generate -> /v1/completions,
 *   /api/embed and the legacy /api/embeddings ({model, prompt}, answered
 *   with {"embedding":[...]}) -> /v1/embeddings. The reverse of A, and:
 *     stream missing           true, as in Ollama; streams ask for
 *                              stream_options.include_usage
 *     options.num_predict      max_tokens (< 1: no limit, left out)
 *     options.stop, temperature, top_p, top_k, seed, presence_penalty,
 *     frequency_penalty        the same names at the top level
 *     format "json" | {schema} response_format json_object | json_schema
 *                              {name "schema", schema}
 *     images[] (base64)        image_url parts with data: URLs, the type
 *                              read from the data's first bytes (png,
 *                              jpeg, gif, webp; png when unknown)
 *     tool_calls[]             {id (theirs, else "call_<n>"), type
 *                              "function", function {name, arguments as
 *                              a JSON string}}
 *     tool messages            tool_call_id: theirs, else the id of the
 *                              first unanswered call of the last assistant
 *                              message with the same tool_name
 *     think "low"|"medium"|"high"   reasoning_effort ("max" -> "high")
 *     dropped on purpose: think as a boolean, keep_alive, messages[]
 *     .thinking, the other options (num_ctx, repeat_penalty, mirostat...,
 *     which OpenAI servers do not share), raw, template, context,
 *     truncate, shift, logprobs; /api/generate's "system" or "images"
 *     -> 400 (/v1/completions has neither); no prompt or messages ->
 *     400 (Ollama would only load the model)
 *   Answers: created_at RFC 3339 UTC, done true, done_reason "length" or
 *   "stop" (also for tool calls, as Ollama), prompt_eval_count,
 *   eval_count, the durations 0; reasoning_content | reasoning ->
 *   thinking; tool call arguments parsed back to objects.
 *   Streams: a line per text or thinking delta, every line with the
 *   same created_at (the caller's time); tool calls are put
 *   together from their pieces and sent whole once finish_reason comes;
 *   the final done:true line is sent on [DONE] (or at the end, when a
 *   finish_reason came but [DONE] did not). An error event ends it with
 *   {"error":"..."}.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_base64.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "llmgw_ollama.h"

/* A line longer than this is no stream we can serve: it would only grow
 * the buffer without end. */
#define MAX_LINE LLMGW_STREAM_MAX_EVENT

/* ---------------------------------------------------------------------
 * Shared helpers
 */

typedef void line_fn(void *baton, const char *line, apr_size_t len);

static void deliver(line_fn *fn, void *baton, const char *line,
                    apr_size_t len)
{
    if (len && line[len - 1] == '\r') {
        len--;
    }
    fn(baton, line, len);
}

/* Hands each complete line of in to fn (without its "\n" or "\r\n");
 * the rest waits in pending for the next call. Lines need no copy
 * unless they straddle two calls. Returns 0 when the waiting line grows
 * past MAX_LINE or memory. */
static int split_lines(llmgw_buf_t *pending, const char *in,
                       apr_size_t len, line_fn *fn, void *baton)
{
    const char *nl;

    while (len && (nl = memchr(in, '\n', len)) != NULL) {
        apr_size_t n = (apr_size_t)(nl - in);

        if (pending->len) {
            if (!llmgw_buf_add(pending, in, n)) {
                return 0;
            }
            deliver(fn, baton, pending->b, pending->len);
            pending->len = 0;
        }
        else {
            deliver(fn, baton, in, n);
        }
        in = nl + 1;
        len -= n + 1;
    }
    if (len && (pending->len + len > MAX_LINE
                || !llmgw_buf_add(pending, in, len))) {
        return 0;
    }
    return 1;
}

static int is_num(llmgw_json_type_t t)
{
    return t == LLMGW_JSON_INT || t == LLMGW_JSON_DOUBLE;
}

static int absent(llmgw_json_type_t t)
{
    return t == LLMGW_JSON_MISSING || t == LLMGW_JSON_NULL;
}

static apr_size_t len_of(const llmgw_json_t *a)
{
    return a ? llmgw_json_array_len(a) : 0;
}

/* Element i of a, which may be missing (NULL), as may the element. */
static llmgw_json_t *item(const llmgw_json_t *a, apr_size_t i)
{
    return a ? llmgw_json_array_get(a, i) : NULL;
}

/* Ollama's created_at, without the nanoseconds it has no way to know. */
static const char *rfc3339(apr_pool_t *p, apr_int64_t secs)
{
    apr_time_exp_t t;

    apr_time_exp_gmt(&t, apr_time_from_sec(secs));
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02dZ",
                        t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                        t.tm_hour, t.tm_min, t.tm_sec);
}

/* Tool call arguments as the object Ollama wants: blank text is {};
 * NULL when the text is not a JSON object. */
static llmgw_json_t *args_object(apr_pool_t *p, const char *s,
                                 apr_size_t len)
{
    llmgw_json_err_t jerr;
    const char *msg;
    llmgw_json_t *o;

    s = llmgw_json_trim(s, &len);
    if (!len) {
        return llmgw_json_create_object(p);
    }
    o = llmgw_json_parse(p, s, len, &jerr, &msg);
    return (o && llmgw_json_type(o, NULL) == LLMGW_JSON_OBJECT) ? o : NULL;
}

/* Tool call arguments as the JSON string OpenAI wants. */
static const char *args_text(const llmgw_json_t *tc)
{
    switch (llmgw_json_type(tc, "function", "arguments", NULL)) {
    case LLMGW_JSON_OBJECT:
    case LLMGW_JSON_ARRAY:
        return llmgw_json_write(llmgw_json_getj(tc, "function", "arguments",
                                                NULL), NULL);
    case LLMGW_JSON_STRING:
        return llmgw_json_gets(tc, "function", "arguments", NULL);
    default:
        return "{}";
    }
}

/* OpenAI's finish_reason for Ollama's done_reason. Ollama says "stop"
 * after tool calls too; its other reasons (load, unload) mean nothing
 * to OpenAI clients. */
static const char *finish_reason(const char *reason, int tool_calls)
{
    if (reason && strcmp(reason, "length") == 0) {
        return "length";
    }
    return tool_calls ? "tool_calls" : "stop";
}

/* Ollama's done_reason for OpenAI's finish_reason. */
static const char *done_reason(const char *reason)
{
    return (reason && strcmp(reason, "length") == 0) ? "length" : "stop";
}

/* ---------------------------------------------------------------------
 * A.1 The Ollama request for an OpenAI one
 */

static int bad(llmgw_error_t *err, const char *param, const char *code,
               const char *message)
{
    return llmgw_error_set(err, 400, "invalid_request_error", param, code,
                           message);
}

static llmgw_json_t *options_of(llmgw_json_t *out)
{
    return llmgw_json_type(out, "options", NULL) == LLMGW_JSON_OBJECT
               ? llmgw_json_getj(out, "options", NULL)
               : llmgw_json_add_object(out, "options");
}

/* Copies the number in[key] to out.options[opt]; null is no value. */
static int copy_option(apr_pool_t *p, const llmgw_json_t *in,
                       const char *key, llmgw_json_t *out, const char *opt,
                       llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(in, key, NULL);

    if (absent(t)) {
        return 0;
    }
    if (!is_num(t)) {
        return bad(err, key, "invalid_type",
                   apr_psprintf(p, "Invalid type for '%s': expected a "
                                "number.", key));
    }
    llmgw_json_setj(options_of(out), llmgw_json_getj(in, key, NULL), opt,
                    NULL);
    return 0;
}

static int map_sampling(apr_pool_t *p, const llmgw_json_t *in,
                        llmgw_json_t *out, llmgw_error_t *err)
{
    static const char *const same[] = {
        "temperature", "top_p", "top_k", "seed", "presence_penalty",
        "frequency_penalty", NULL
    };
    const char *const *k;
    const char *max = "max_completion_tokens";
    llmgw_json_t *stop;
    llmgw_json_type_t t;
    apr_size_t i, n;
    int rv;

    if (is_num(llmgw_json_type(in, "n", NULL))
        && llmgw_json_getl(in, 1, "n", NULL) > 1) {
        return bad(err, "n", "unsupported_value",
                   "n>1 is not supported by the ollama dialect.");
    }
    for (k = same; *k; k++) {
        if ((rv = copy_option(p, in, *k, out, *k, err)) != 0) {
            return rv;
        }
    }
    if (absent(llmgw_json_type(in, max, NULL))) {
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
        for (i = 0, n = len_of(stop); i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(stop, i), NULL)
                != LLMGW_JSON_STRING) {
                return bad(err, "stop", "invalid_type",
                           "Invalid type for 'stop': expected a string or "
                           "an array of strings.");
            }
        }
        llmgw_json_setj(options_of(out), stop, "stop", NULL);
    }
    else if (!absent(t)) {
        return bad(err, "stop", "invalid_type", "Invalid type for 'stop': "
                   "expected a string or an array of strings.");
    }
    return 0;
}

static int map_format(const llmgw_json_t *in, llmgw_json_t *out,
                      llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(in, "response_format", NULL);
    const char *type;

    if (absent(t)) {
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
                            NULL) == LLMGW_JSON_OBJECT) {
            llmgw_json_setj(out, llmgw_json_getj(in, "response_format",
                                                 "json_schema", "schema",
                                                 NULL), "format", NULL);
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
    if (absent(t)) {
        return 0;
    }
    if (t != LLMGW_JSON_ARRAY) {
        const char *param = apr_psprintf(p, "messages[%" APR_SIZE_T_FMT
                                         "].content", i);

        return bad(err, param, "invalid_type",
                   apr_psprintf(p, "Invalid type for '%s': expected a "
                                "string or an array of content parts.",
                                param));
    }
    parts = llmgw_json_getj(m, "content", NULL);
    n = len_of(parts);
    texts = apr_array_make(p, (int)n + 1, sizeof(const char *));
    for (k = 0; k < n; k++) {
        llmgw_json_t *part = llmgw_json_array_get(parts, k);
        const char *type = llmgw_json_gets(part, "type", NULL);
        const char *at = apr_psprintf(p, "messages[%" APR_SIZE_T_FMT
                                      "].content[%" APR_SIZE_T_FMT "]",
                                      i, k);
        const char *v, *data;

        if (!type) {
            return bad(err, apr_pstrcat(p, at, ".type", NULL),
                       "missing_required_parameter",
                       apr_psprintf(p, "Missing required parameter: "
                                    "'%s.type'.", at));
        }
        if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            /* A refusal in the history is what the assistant said. */
            if (!(v = llmgw_json_gets(part, type, NULL))) {
                return bad(err, apr_pstrcat(p, at, ".", type, NULL),
                           "invalid_type",
                           apr_psprintf(p, "Invalid type for '%s.%s': "
                                        "expected a string.", at, type));
            }
            APR_ARRAY_PUSH(texts, const char *) = v;
            continue;
        }
        if (strcmp(type, "image_url") != 0) {
            return bad(err, apr_pstrcat(p, at, ".type", NULL),
                       "invalid_value",
                       apr_psprintf(p, "Content parts of type '%s' are not "
                                    "supported by the ollama dialect.",
                                    type));
        }
        v = llmgw_json_gets(part, "image_url", "url", NULL);
        if (!v) {
            v = llmgw_json_gets(part, "image_url", NULL);
        }
        if (!v) {
            return bad(err, apr_pstrcat(p, at, ".image_url.url", NULL),
                       "missing_required_parameter",
                       apr_psprintf(p, "Missing required parameter: "
                                    "'%s.image_url.url'.", at));
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

static int map_tool_calls(apr_pool_t *p, const llmgw_json_t *m,
                          apr_size_t i, llmgw_json_t *om,
                          llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(m, "tool_calls", NULL);
    llmgw_json_t *calls = llmgw_json_getj(m, "tool_calls", NULL), *out;
    apr_size_t k, n;

    if (absent(t)) {
        return 0;
    }
    if (t != LLMGW_JSON_ARRAY) {
        return bad(err, apr_psprintf(p, "messages[%" APR_SIZE_T_FMT
                                     "].tool_calls", i), "invalid_type",
                   "Invalid type for 'tool_calls': expected an array.");
    }
    if (!(n = len_of(calls))) {
        return 0;
    }
    out = llmgw_json_add_array(om, "tool_calls");
    for (k = 0; k < n; k++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, k), *ot, *args;
        const char *name = llmgw_json_gets(tc, "function", "name", NULL);
        const char *id = llmgw_json_gets(tc, "id", NULL);
        const char *at = apr_psprintf(p, "messages[%" APR_SIZE_T_FMT
                                      "].tool_calls[%" APR_SIZE_T_FMT
                                      "].function", i, k);

        if (!name) {
            return bad(err, apr_pstrcat(p, at, ".name", NULL),
                       "missing_required_parameter",
                       apr_psprintf(p, "Missing required parameter: "
                                    "'%s.name'.", at));
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
            const char *s = llmgw_json_gets(tc, "function", "arguments",
                                            NULL);

            args = args_object(p, s, strlen(s));
        }
        else if (absent(t)) {
            args = llmgw_json_create_object(p);
        }
        else {
            args = NULL;
        }
        if (!args) {
            return bad(err, apr_pstrcat(p, at, ".arguments", NULL),
                       "invalid_value",
                       apr_psprintf(p, "'%s.arguments' is not a valid JSON "
                                    "object: Ollama needs the arguments of "
                                    "a tool call as an object.", at));
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
        llmgw_json_t *calls = llmgw_json_getj(llmgw_json_array_get(msgs, i),
                                              "tool_calls", NULL);
        apr_size_t k, n = len_of(calls);

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
    apr_size_t i, n = len_of(msgs);
    int rv;

    for (i = 0; i < n; i++) {
        llmgw_json_t *m = llmgw_json_array_get(msgs, i), *om;
        const char *role = llmgw_json_gets(m, "role", NULL), *v;

        if (!role) {
            const char *param = apr_psprintf(p, "messages[%" APR_SIZE_T_FMT
                                             "].role", i);

            return bad(err, param, "missing_required_parameter",
                       apr_psprintf(p, "Missing required parameter: '%s'.",
                                    param));
        }
        if (strcmp(role, "developer") == 0) {
            role = "system";        /* Ollama's templates know no other */
        }
        else if (strcmp(role, "function") == 0) {
            role = "tool";
        }
        else if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0
                 && strcmp(role, "assistant") != 0
                 && strcmp(role, "tool") != 0) {
            return bad(err, apr_psprintf(p, "messages[%" APR_SIZE_T_FMT
                                         "].role", i), "invalid_value",
                       apr_psprintf(p, "Invalid value for role: '%s'.",
                                    role));
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
        if (len_of(prompt) > 1 && llmgw_json_type(item(prompt, 0), NULL)
                                  == LLMGW_JSON_STRING) {
            return bad(err, "prompt", "unsupported_value",
                       "The ollama dialect takes one prompt per request.");
        }
        prompt = item(prompt, 0);
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
    apr_size_t i, n = len_of(input);

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
    if (is_num(llmgw_json_type(in, "dimensions", NULL))) {
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

    llmgw_json_sets(out, upstream_model ? upstream_model : req->model,
                    "model", NULL);
    switch (req->ep) {
    case LLMGW_EP_CHAT:
        *path = "/api/chat";
        if ((rv = map_messages(p, in, out, err)) != 0) {
            return rv;
        }
        choice = llmgw_json_gets(in, "tool_choice", NULL);
        if (len_of(llmgw_json_getj(in, "tools", NULL))
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
                               "unknown_url", "This endpoint is not served "
                               "by the ollama dialect.");
    }
    if (req->ep != LLMGW_EP_EMBEDDINGS) {
        if ((rv = map_format(in, out, err)) != 0
            || (rv = map_sampling(p, in, out, err)) != 0) {
            return rv;
        }
        map_effort(in, out);
        llmgw_json_setb(out, req->stream, "stream", NULL);
    }
    if (!absent(llmgw_json_type(in, "keep_alive", NULL))) {
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
        status = 502;           /* an error is never a success */
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
                      : apr_psprintf(p, "The backend answered with HTTP "
                                     "status %d.", status);
    }
    return llmgw_error_set(err, status,
                           status >= 500 ? "server_error"
                                         : "invalid_request_error",
                           NULL, status >= 500 ? "upstream_error" : NULL,
                           message);
}

static void read_counts(const llmgw_json_t *j, llmgw_usage_t *usage)
{
    llmgw_usage_read(j, "prompt_eval_count", "eval_count", NULL, usage);
}

/* OpenAI's usage object of j, if it has one. */
static void openai_usage(const llmgw_json_t *j, llmgw_usage_t *usage)
{
    if (llmgw_json_type(j, "usage", NULL) == LLMGW_JSON_OBJECT) {
        llmgw_usage_read(llmgw_json_getj(j, "usage", NULL), "prompt_tokens",
                         "completion_tokens", "total_tokens", usage);
    }
}

static void put_usage(llmgw_json_t *o, const llmgw_usage_t *u, int chat)
{
    llmgw_json_setl(o, u->prompt, "usage", "prompt_tokens", NULL);
    if (chat) {
        llmgw_json_setl(o, u->completion, "usage", "completion_tokens",
                        NULL);
    }
    llmgw_json_setl(o, u->total, "usage", "total_tokens", NULL);
}

/* One embedding as OpenAI's base64: little-endian float32s. */
static const char *floats_base64(apr_pool_t *p, const llmgw_json_t *v)
{
    apr_size_t i, n = len_of(v);
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

static void chat_answer(apr_pool_t *p, const llmgw_json_t *j,
                        llmgw_json_t *o)
{
    llmgw_json_t *ch = llmgw_json_array_add_object(
        llmgw_json_add_array(o, "choices"));
    llmgw_json_t *msg, *calls = llmgw_json_getj(j, "message", "tool_calls",
                                                NULL), *oc;
    const char *content = llmgw_json_gets(j, "message", "content", NULL);
    const char *thinking = llmgw_json_gets(j, "message", "thinking", NULL);
    apr_size_t i, n = len_of(calls);

    llmgw_json_setl(ch, 0, "index", NULL);
    msg = llmgw_json_add_object(ch, "message");
    llmgw_json_sets(msg, "assistant", "role", NULL);
    if (n && !(content && *content)) {
        llmgw_json_setnull(msg, "content", NULL);
    }
    else {
        llmgw_json_sets(msg, content ? content : "", "content", NULL);
    }
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
            llmgw_json_sets(t, id && *id ? id
                            : apr_psprintf(p, "call_%" APR_SIZE_T_FMT, i),
                            "id", NULL);
            llmgw_json_sets(t, "function", "type", NULL);
            llmgw_json_sets(t, name ? name : "", "function", "name", NULL);
            llmgw_json_sets(t, args_text(tc), "function", "arguments", NULL);
        }
    }
    llmgw_json_setnull(ch, "logprobs", NULL);
    llmgw_json_sets(ch, finish_reason(llmgw_json_gets(j, "done_reason",
                                                      NULL), n > 0),
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
    if (status >= 400 || !absent(llmgw_json_type(j, "error", NULL))) {
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

        llmgw_json_sets(o, apr_pstrcat(p, chat ? "chatcmpl-" : "cmpl-", id,
                                       NULL), "id", NULL);
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
            llmgw_json_sets(ch, finish_reason(llmgw_json_gets(
                                j, "done_reason", NULL), 0),
                            "finish_reason", NULL);
        }
        put_usage(o, usage, 1);
        break;
    }
    case LLMGW_EP_EMBEDDINGS: {
        llmgw_json_t *embs = llmgw_json_getj(j, "embeddings", NULL), *data;
        const char *fmt = llmgw_json_gets(req->body, "encoding_format",
                                          NULL);
        int b64 = fmt && strcmp(fmt, "base64") == 0;
        apr_size_t i, n = len_of(embs);

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
        return backend_error(p, 502, "The ollama dialect does not serve "
                             "this endpoint.", err);
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

llmgw_ollama_sse_t *llmgw_ollama_sse_create(apr_pool_t *p,
                                            llmgw_endpoint_t ep,
                                            const char *id,
                                            const char *model,
                                            apr_int64_t created,
                                            int include_usage)
{
    llmgw_ollama_sse_t *s = apr_pcalloc(p, sizeof(*s));
    int chat = ep != LLMGW_EP_COMPLETIONS;

    s->p = p;
    apr_pool_create(&s->lp, p);
    s->ep = chat ? LLMGW_EP_CHAT : LLMGW_EP_COMPLETIONS;
    s->id = apr_pstrcat(p, chat ? "chatcmpl-" : "cmpl-", id ? id : "",
                        NULL);
    s->object = chat ? "chat.completion.chunk" : "text_completion";
    s->model = apr_pstrdup(p, model ? model : "");
    s->created = created;
    s->include_usage = include_usage;
    apr_pool_cleanup_register(p, s, sse_cleanup, apr_pool_cleanup_null);
    return s;
}

static const char *sse_tail(const llmgw_ollama_sse_t *s, apr_pool_t *p,
                            const llmgw_error_t *err, apr_size_t *len)
{
    return llmgw_sse_error_events(p, s->id, s->object, s->created, s->model,
                                  s->ep == LLMGW_EP_CHAT, err, len);
}

static void sse_fail(llmgw_ollama_sse_t *s, const char *message)
{
    llmgw_error_t err;
    const char *tail;
    apr_size_t n;

    llmgw_error_set(&err, 502, "server_error", NULL, "upstream_error",
                    message);
    tail = sse_tail(s, s->lp, &err, &n);
    llmgw_buf_add(&s->out, tail, n);
    s->failed = 1;
}

static void sse_emit(llmgw_ollama_sse_t *s, const llmgw_json_t *c)
{
    apr_size_t n;
    const char *text = llmgw_json_write(c, &n);

    if (!llmgw_buf_add(&s->out, "data: ", 6) || !llmgw_buf_add(&s->out, text, n)
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
    apr_size_t i, n = len_of(calls);

    arr = llmgw_json_add_array(llmgw_json_getj(ch, "delta", NULL),
                               "tool_calls");
    for (i = 0; i < n; i++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, i);
        llmgw_json_t *o = llmgw_json_array_add_object(arr);
        const char *id = llmgw_json_gets(tc, "id", NULL);
        const char *name = llmgw_json_gets(tc, "function", "name", NULL);

        llmgw_json_setl(o, s->tool_calls, "index", NULL);
        llmgw_json_sets(o, id && *id ? id
                        : apr_psprintf(s->lp, "call_%d", s->tool_calls),
                        "id", NULL);
        llmgw_json_sets(o, "function", "type", NULL);
        llmgw_json_sets(o, name ? name : "", "function", "name", NULL);
        llmgw_json_sets(o, args_text(tc), "function", "arguments", NULL);
        s->tool_calls++;
    }
    sse_emit(s, c);
}

static void sse_translate(llmgw_ollama_sse_t *s, const llmgw_json_t *j)
{
    int chat = s->ep == LLMGW_EP_CHAT, output = 0;
    const char *text = chat ? llmgw_json_gets(j, "message", "content", NULL)
                            : llmgw_json_gets(j, "response", NULL);
    const char *thinking = chat ? llmgw_json_gets(j, "message", "thinking",
                                                  NULL) : NULL;
    llmgw_json_t *calls = chat ? llmgw_json_getj(j, "message", "tool_calls",
                                                 NULL) : NULL;
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
    if (len_of(calls)) {
        sse_tool_calls(s, calls);
        output = 1;
    }
    s->content_events += output;
    if (!llmgw_json_getb(j, 0, "done", NULL)) {
        return;
    }
    c = sse_chunk(s, &ch);
    llmgw_json_sets(ch, finish_reason(llmgw_json_gets(j, "done_reason",
                                                      NULL),
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

    line = llmgw_json_trim(line, &len);
    if (s->done || s->failed || !len) {
        return;
    }
    j = llmgw_json_parse(s->lp, line, len, &jerr, &msg);
    if (!j || llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT) {
        sse_fail(s, "The backend sent a stream line that is not a JSON "
                 "object.");
    }
    else if (!absent(llmgw_json_type(j, "error", NULL))) {
        msg = llmgw_json_gets(j, "error", NULL);
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
    s->out.len = 0;
    if (!s->done && !s->failed && len
        && !split_lines(&s->in, in, len, sse_line, s)) {
        sse_fail(s, "The backend sent a stream line the gateway cannot "
                 "hold.");
        apr_pool_clear(s->lp);
    }
    if (s->failed) {
        llmgw_buf_free(&s->in);     /* nothing more is read */
    }
    *out = s->out.b ? s->out.b : "";
    return s->out.len;
}

apr_size_t llmgw_ollama_sse_end(llmgw_ollama_sse_t *s, const char **out)
{
    s->out.len = 0;
    if (s->in.len) {
        deliver(sse_line, s, s->in.b, s->in.len);
        s->in.len = 0;
    }
    *out = s->out.b ? s->out.b : "";
    return s->out.len;
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
    return sse_tail(s, p, err, len);
}

/* ---------------------------------------------------------------------
 * B.4 The OpenAI request for an Ollama one
 */

llmgw_ollama_ep_t llmgw_ollama_endpoint_parse(const char *path)
{
    if (strncmp(path, "/api/", 5) == 0) {
        path += 4;
    }
    if (strcmp(path, "/chat") == 0) {
        return LLMGW_OLLAMA_EP_CHAT;
    }
    if (strcmp(path, "/generate") == 0) {
        return LLMGW_OLLAMA_EP_GENERATE;
    }
    if (strcmp(path, "/embed") == 0) {
        return LLMGW_OLLAMA_EP_EMBED;
    }
    if (strcmp(path, "/embeddings") == 0) {
        return LLMGW_OLLAMA_EP_EMBEDDINGS;
    }
    return LLMGW_OLLAMA_EP_NONE;
}

llmgw_endpoint_t llmgw_ollama_openai_endpoint(llmgw_ollama_ep_t oep)
{
    switch (oep) {
    case LLMGW_OLLAMA_EP_CHAT:
        return LLMGW_EP_CHAT;
    case LLMGW_OLLAMA_EP_GENERATE:
        return LLMGW_EP_COMPLETIONS;
    case LLMGW_OLLAMA_EP_EMBED:
    case LLMGW_OLLAMA_EP_EMBEDDINGS:
        return LLMGW_EP_EMBEDDINGS;
    default:
        return LLMGW_EP_NONE;
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
    return llmgw_error_set(err, status,
                           status >= 500 ? "server_error"
                                         : "invalid_request_error",
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
    static const char *const same[] = {
        "temperature", "top_p", "top_k", "seed", "presence_penalty",
        "frequency_penalty", NULL
    };
    const char *const *k;
    llmgw_json_type_t t = llmgw_json_type(in, "options", NULL);
    llmgw_json_t *opts = llmgw_json_getj(in, "options", NULL), *stop;
    apr_size_t i, n;

    if (absent(t)) {
        return 0;
    }
    if (t != LLMGW_JSON_OBJECT) {
        return ofail(err, 400, "options must be an object");
    }
    for (k = same; *k; k++) {
        t = llmgw_json_type(opts, *k, NULL);
        if (is_num(t)) {
            llmgw_json_setj(out, llmgw_json_getj(opts, *k, NULL), *k, NULL);
        }
        else if (!absent(t)) {
            return ofail(err, 400, apr_psprintf(p, "option \"%s\" must be "
                                                "a number", *k));
        }
    }
    t = llmgw_json_type(opts, "num_predict", NULL);
    if (is_num(t)) {
        apr_int64_t max = llmgw_json_getl(opts, 0, "num_predict", NULL);

        /* -1 (no limit) and -2 (fill the context) have no OpenAI form. */
        if (max > 0) {
            llmgw_json_setl(out, max, "max_tokens", NULL);
        }
    }
    else if (!absent(t)) {
        return ofail(err, 400, "option \"num_predict\" must be a number");
    }
    t = llmgw_json_type(opts, "stop", NULL);
    stop = llmgw_json_getj(opts, "stop", NULL);
    if (t == LLMGW_JSON_ARRAY) {
        for (i = 0, n = len_of(stop); i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(stop, i), NULL)
                != LLMGW_JSON_STRING) {
                return ofail(err, 400, "option \"stop\" must be an array "
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
    else if (!absent(t)) {
        return ofail(err, 400, "option \"stop\" must be an array of "
                     "strings");
    }
    return 0;
}

static int front_format(const llmgw_json_t *in, llmgw_json_t *out,
                        llmgw_error_t *err)
{
    llmgw_json_type_t t = llmgw_json_type(in, "format", NULL);
    const char *f = llmgw_json_gets(in, "format", NULL);

    if (absent(t) || (f && !*f)) {
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
    return ofail(err, 400, "invalid format: expected \"json\" or a JSON "
                 "schema");
}

static void front_think(const llmgw_json_t *in, llmgw_json_t *out)
{
    const char *t = llmgw_json_gets(in, "think", NULL);

    if (!t) {
        return;                 /* a boolean: OpenAI has no switch */
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
    apr_size_t i, n = len_of(calls);

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
        llmgw_json_sets(o, id, "id", NULL);
        llmgw_json_sets(o, "function", "type", NULL);
        llmgw_json_sets(o, name, "function", "name", NULL);
        llmgw_json_sets(o, args_text(tc), "function", "arguments", NULL);
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
        if (!c->answered && (id ? strcmp(c->id, id) == 0
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
    apr_size_t i, n = len_of(msgs);
    int ncalls = 0, rv;

    if (llmgw_json_type(in, "messages", NULL) != LLMGW_JSON_ARRAY || !n) {
        return ofail(err, 400, "messages is required: loading a model "
                     "without a chat is not supported by this gateway");
    }
    omsgs = llmgw_json_add_array(out, "messages");
    for (i = 0; i < n; i++) {
        llmgw_json_t *m = llmgw_json_array_get(msgs, i), *om, *imgs;
        const char *role = llmgw_json_gets(m, "role", NULL);
        llmgw_json_type_t t = llmgw_json_type(m, "content", NULL);
        apr_size_t k, nimg;
        char *r;

        if (!role || !*role) {
            return ofail(err, 400, apr_psprintf(p, "messages[%"
                                                APR_SIZE_T_FMT "].role is "
                                                "required", i));
        }
        if (t != LLMGW_JSON_STRING && !absent(t)) {
            return ofail(err, 400, apr_psprintf(p, "messages[%"
                                                APR_SIZE_T_FMT "].content "
                                                "must be a string", i));
        }
        /* Ollama reads roles in any case. */
        r = apr_pstrdup(p, role);
        for (k = 0; r[k]; k++) {
            r[k] = (char)apr_tolower(r[k]);
        }
        om = llmgw_json_array_add_object(omsgs);
        llmgw_json_sets(om, r, "role", NULL);
        imgs = llmgw_json_getj(m, "images", NULL);
        nimg = len_of(imgs);
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
                const char *b64 = llmgw_json_gets(llmgw_json_array_get(
                                                      imgs, k), NULL);

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
                          llmgw_error_t *err)
{
    const char *prompt = llmgw_json_gets(in, "prompt", NULL);
    const char *system = llmgw_json_gets(in, "system", NULL);

    if (!prompt || !*prompt) {
        return ofail(err, 400, "prompt is required: loading a model "
                     "without a prompt is not supported by this gateway");
    }
    if (system && *system) {
        return ofail(err, 400, "system is not supported by /api/generate "
                     "through this gateway: use /api/chat");
    }
    if (len_of(llmgw_json_getj(in, "images", NULL))) {
        return ofail(err, 400, "images are not supported by /api/generate "
                     "through this gateway: use /api/chat");
    }
    llmgw_json_setj(out, llmgw_json_getj(in, "prompt", NULL), "prompt",
                    NULL);
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
    apr_size_t i, n = len_of(v);

    if (t == LLMGW_JSON_ARRAY && oep == LLMGW_OLLAMA_EP_EMBED && n) {
        for (i = 0; i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(v, i), NULL)
                != LLMGW_JSON_STRING) {
                return ofail(err, 400, "input must be a string or an "
                             "array of strings");
            }
        }
    }
    else if (t != LLMGW_JSON_STRING) {
        return ofail(err, 400, oep == LLMGW_OLLAMA_EP_EMBED
                                   ? "input must be a string or an array "
                                     "of strings"
                                   : "prompt is required");
    }
    llmgw_json_setj(out, v, "input", NULL);
    if (is_num(llmgw_json_type(in, "dimensions", NULL))) {
        llmgw_json_setj(out, llmgw_json_getj(in, "dimensions", NULL),
                        "dimensions", NULL);
    }
    llmgw_json_sets(out, "float", "encoding_format", NULL);
    return 0;
}

int llmgw_ollama_front_request(apr_pool_t *p, llmgw_ollama_ep_t oep,
                               const char *buf, apr_size_t len,
                               llmgw_request_t *req, const char **body,
                               apr_size_t *blen, llmgw_error_t *err)
{
    llmgw_json_err_t jerr;
    const char *msg, *model;
    llmgw_json_t *in, *out;
    llmgw_json_type_t t;
    int rv;

    memset(req, 0, sizeof(*req));
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
    model = llmgw_json_gets(in, "model", NULL);
    if (!model || !*model) {
        return ofail(err, 400, "model is required");
    }
    t = llmgw_json_type(in, "stream", NULL);
    if (!absent(t) && t != LLMGW_JSON_BOOL) {
        return ofail(err, 400, "stream must be a boolean");
    }
    out = llmgw_json_create_object(p);
    req->model = apr_pstrdup(p, model);
    req->body = out;
    llmgw_json_sets(out, req->model, "model", NULL);
    switch (oep) {
    case LLMGW_OLLAMA_EP_CHAT:
        rv = front_messages(p, in, out, err);
        if (!rv && len_of(llmgw_json_getj(in, "tools", NULL))) {
            llmgw_json_setj(out, llmgw_json_getj(in, "tools", NULL), "tools",
                            NULL);
        }
        break;
    case LLMGW_OLLAMA_EP_GENERATE:
        rv = front_generate(in, out, err);
        break;
    default:
        rv = front_embed(oep, in, out, err);
        break;
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
    /* From here on the request is what any OpenAI client's would be: a
     * read view of the bytes that go upstream (so that the cache key and
     * the edits for the backend see exactly those). */
    *body = llmgw_json_write(out, blen);
    req->body = llmgw_json_read(p, *body, *blen, &jerr, &msg);
    if (!req->body) {
        return ofail(err, 500, apr_psprintf(p, "the gateway could not read "
                                            "its own translation: %s", msg));
    }
    return 0;
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

/* The members that end every Ollama generation answer. */
static void ollama_done(llmgw_json_t *o, const char *reason,
                        const llmgw_usage_t *u)
{
    llmgw_json_setb(o, 1, "done", NULL);
    llmgw_json_sets(o, reason, "done_reason", NULL);
    llmgw_json_setl(o, 0, "total_duration", NULL);
    llmgw_json_setl(o, 0, "load_duration", NULL);
    llmgw_json_setl(o, u->prompt, "prompt_eval_count", NULL);
    llmgw_json_setl(o, 0, "prompt_eval_duration", NULL);
    llmgw_json_setl(o, u->completion, "eval_count", NULL);
    llmgw_json_setl(o, 0, "eval_duration", NULL);
}

/* OpenAI tool_calls as Ollama's; 0 when arguments are not an object. */
static int ollama_tool_calls(apr_pool_t *p, const llmgw_json_t *calls,
                             llmgw_json_t *msg)
{
    llmgw_json_t *oc;
    apr_size_t i, n = len_of(calls);

    if (!n) {
        return 1;
    }
    oc = llmgw_json_add_array(msg, "tool_calls");
    for (i = 0; i < n; i++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, i);
        llmgw_json_t *o = llmgw_json_array_add_object(oc), *args;
        const char *id = llmgw_json_gets(tc, "id", NULL);
        const char *name = llmgw_json_gets(tc, "function", "name", NULL);
        const char *text = args_text(tc);

        args = llmgw_json_type(tc, "function", "arguments", NULL)
                   == LLMGW_JSON_OBJECT
                   ? llmgw_json_getj(tc, "function", "arguments", NULL)
                   : args_object(p, text, strlen(text));
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
                                int status, const char *buf,
                                apr_size_t len, const char *model,
                                apr_int64_t created, const char **out,
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
        return status >= 400
                   ? ofail(err, status, apr_psprintf(p, "the backend "
                                                     "answered with status "
                                                     "%d", status))
                   : ofail(err, 502, unreadable);
    }
    if ((msg = openai_error(j)) != NULL || status >= 400) {
        if (!msg) {
            msg = llmgw_json_gets(j, "detail", NULL);
        }
        return ofail(err, status >= 400 ? status : 502,
                     msg ? msg : apr_psprintf(p, "the backend answered "
                                              "with status %d", status));
    }
    openai_usage(j, usage);
    o = llmgw_json_create_object(p);
    ch = item(llmgw_json_getj(j, "choices", NULL), 0);
    switch (oep) {
    case LLMGW_OLLAMA_EP_CHAT:
    case LLMGW_OLLAMA_EP_GENERATE: {
        const char *text, *thinking;

        if (!ch) {
            return ofail(err, 502, unreadable);
        }
        llmgw_json_sets(o, model, "model", NULL);
        llmgw_json_sets(o, rfc3339(p, created), "created_at", NULL);
        if (oep == LLMGW_OLLAMA_EP_CHAT) {
            llmgw_json_t *m = llmgw_json_add_object(o, "message");

            text = llmgw_json_gets(ch, "message", "content", NULL);
            thinking = llmgw_json_gets(ch, "message", "reasoning_content",
                                       NULL);
            if (!thinking) {
                thinking = llmgw_json_gets(ch, "message", "reasoning", NULL);
            }
            llmgw_json_sets(m, "assistant", "role", NULL);
            llmgw_json_sets(m, text ? text : "", "content", NULL);
            if (thinking && *thinking) {
                llmgw_json_sets(m, thinking, "thinking", NULL);
            }
            if (!ollama_tool_calls(p, llmgw_json_getj(ch, "message",
                                                      "tool_calls", NULL),
                                   m)) {
                return ofail(err, 502, "the backend sent tool call "
                             "arguments that are not a JSON object");
            }
        }
        else {
            text = llmgw_json_gets(ch, "text", NULL);
            llmgw_json_sets(o, text ? text : "", "response", NULL);
        }
        ollama_done(o, done_reason(llmgw_json_gets(ch, "finish_reason",
                                                   NULL)), usage);
        break;
    }
    default: {
        llmgw_json_t *data = llmgw_json_getj(j, "data", NULL), *embs = NULL;
        apr_size_t i, n = len_of(data);

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
        llmgw_json_setl(o, 0, "total_duration", NULL);
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
                                                  apr_int64_t created)
{
    llmgw_ollama_ndjson_t *s = apr_pcalloc(p, sizeof(*s));

    s->p = p;
    apr_pool_create(&s->lp, p);
    apr_pool_create(&s->tp, p);
    s->oep = oep == LLMGW_OLLAMA_EP_GENERATE ? oep : LLMGW_OLLAMA_EP_CHAT;
    s->model = apr_pstrdup(p, model ? model : "");
    s->created_at = rfc3339(p, created);
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
    llmgw_json_sets(o, s->created_at, "created_at", NULL);
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
        llmgw_json_sets(m, text, s->oep == LLMGW_OLLAMA_EP_CHAT
                                     ? "content" : "response", NULL);
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
        llmgw_json_t *args = args_object(s->lp, c->args.b ? c->args.b : "",
                                         c->args.len);

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
        llmgw_json_sets(tc, c->name ? c->name : "", "function", "name",
                        NULL);
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
    ollama_done(o, s->done_reason ? s->done_reason : "stop", &s->usage);
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
    llmgw_json_t *ch = item(llmgw_json_getj(j, "choices", NULL), 0);
    llmgw_json_t *calls;
    const char *text, *thinking = NULL, *fr;
    apr_size_t i, n;
    int output = 0;

    openai_usage(j, &s->usage);
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
    for (i = 0, n = len_of(calls); i < n; i++) {
        llmgw_json_t *tc = llmgw_json_array_get(calls, i);
        part_call_t *c = nd_call(s, llmgw_json_getl(tc, (apr_int64_t)i,
                                                    "index", NULL));
        const char *v;

        if (!c->id && (v = llmgw_json_gets(tc, "id", NULL)) != NULL) {
            c->id = apr_pstrdup(s->tp, v);
        }
        if (!c->name
            && (v = llmgw_json_gets(tc, "function", "name", NULL)) != NULL) {
            c->name = apr_pstrdup(s->tp, v);
        }
        v = llmgw_json_gets(tc, "function", "arguments", NULL);
        if (v && (c->args.len + strlen(v) > MAX_LINE
                  || !llmgw_buf_add(&c->args, v, strlen(v)))) {
            nd_fail(s, "the backend sent tool call arguments the gateway "
                    "cannot hold");
            return;
        }
        output = 1;
    }
    s->content_events += output;
    fr = llmgw_json_gets(ch, "finish_reason", NULL);
    if (fr) {
        s->done_reason = done_reason(fr);
        nd_flush_calls(s);
    }
}

static void nd_event(llmgw_ollama_ndjson_t *s, const char *d,
                     apr_size_t len)
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
        return;                 /* comments, event:, id:, retry: */
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

apr_size_t llmgw_ollama_ndjson_feed(llmgw_ollama_ndjson_t *s,
                                    const char *in, apr_size_t len,
                                    const char **out)
{
    s->out.len = 0;
    if (!s->done && !s->failed && len
        && !split_lines(&s->in, in, len, nd_sse_line, s)) {
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
    *out = s->out.b ? s->out.b : "";
    return s->out.len;
}

apr_size_t llmgw_ollama_ndjson_end(llmgw_ollama_ndjson_t *s,
                                   const char **out)
{
    s->out.len = 0;
    if (s->in.len) {
        deliver(nd_sse_line, s, s->in.b, s->in.len);
        s->in.len = 0;
    }
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
    *out = s->out.b ? s->out.b : "";
    return s->out.len;
}

const char *llmgw_ollama_ndjson_error_tail(const llmgw_ollama_ndjson_t *s,
                                           apr_pool_t *p,
                                           const char *message,
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
