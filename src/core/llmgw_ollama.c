/* llmgw_ollama: Ollama's native API both ways, httpd-free: what both
 * halves share, and the mapping they implement. The halves:
 * llmgw_ollama_backend.c (A: OpenAI clients, Ollama backends) and
 * llmgw_ollama_front.c (B: Ollama clients, OpenAI-style backends). */

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
 *     min_p, repeat_penalty | repetition_penalty (vLLM), repeat_last_n,
 *     typical_p, mirostat, mirostat_tau, mirostat_eta (llama.cpp's and
 *     vLLM's extensions)       options.<Ollama's name>
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
 *     options.repeat_penalty, repeat_last_n, min_p, typical_p, tfs_z,
 *     mirostat, mirostat_tau, mirostat_eta, num_keep (n_keep),
 *     penalize_newline (penalize_nl)
 *                              the top level, to dialect=llamacpp only
 *                              (llmgw_ollama_llamacpp_options)
 *     dropped on purpose: think as a boolean, keep_alive, messages[]
 *     .thinking, the other options (num_ctx, num_gpu...; and to OpenAI
 *     servers repeat_penalty, mirostat..., which they do not share), raw,
 *     template, context,
 *     truncate, shift, logprobs; /api/generate's "system" or "images"
 *     -> 400 (/v1/completions has neither)
 *   Load requests (no messages, no prompt, no input): answered by the
 *   gateway as Ollama answers them (done_reason "load", or "unload" with
 *   keep_alive 0), the backend not asked.
 *   Answers: created_at RFC 3339 UTC to the microsecond (Go's
 *   RFC3339Nano), done true, done_reason "length" or "stop" (also for
 *   tool calls, as Ollama), prompt_eval_count, eval_count, the durations
 *   as the gateway saw them (to the first token, from it to the end, the
 *   whole; load_duration 0); reasoning_content | reasoning -> thinking;
 *   tool call arguments parsed back to objects.
 *   Streams: a line per text or thinking delta, each with its own
 *   created_at; tool calls are put together from their pieces and sent
 *   whole once finish_reason comes; the final done:true line is sent on
 *   [DONE] (or at the end, when a finish_reason came but [DONE] did not).
 *   An error event ends it with {"error":"..."}.
 *
 * C. Ollama client -> Ollama backend: no mapping. The client's body goes
 *   up as it came but for its model (llmgw_ollama_native_body), and the
 *   answer's bytes come back; a copy is read through A's translators for
 *   the usage, the cache record and coalesced followers.
 *
 * docs/ollama.md has all of this as tables, with the reasons.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_base64.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "llmgw_ollama_int.h"

/* ---------------------------------------------------------------------
 * Shared helpers
 */

const char *const ol_same_options[] = {
    "temperature",       "top_p", "top_k", "seed", "presence_penalty",
    "frequency_penalty", NULL
};

void ol_deliver(ol_line_fn *fn, void *baton, const char *line, apr_size_t len)
{
    if (len && line[len - 1] == '\r') {
        len--;
    }
    fn(baton, line, len);
}

int ol_split_lines(llmgw_buf_t *pending, const char *in, apr_size_t len,
                   ol_line_fn *fn, void *baton)
{
    const char *nl;

    while (len && (nl = memchr(in, '\n', len)) != NULL) {
        apr_size_t n = (apr_size_t)(nl - in);

        if (pending->len) {
            if (!llmgw_buf_add(pending, in, n)) {
                return 0;
            }
            ol_deliver(fn, baton, pending->b, pending->len);
            pending->len = 0;
        }
        else {
            ol_deliver(fn, baton, in, n);
        }
        in = nl + 1;
        len -= n + 1;
    }
    if (len
        && (pending->len + len > MAX_LINE
            || !llmgw_buf_add(pending, in, len))) {
        return 0;
    }
    return 1;
}

int ol_feed(llmgw_buf_t *pending, llmgw_buf_t *out, int over, const char *in,
            apr_size_t len, ol_line_fn *fn, void *baton)
{
    out->len = 0;
    return over || !len || ol_split_lines(pending, in, len, fn, baton);
}

void ol_end(llmgw_buf_t *pending, llmgw_buf_t *out, ol_line_fn *fn,
            void *baton)
{
    out->len = 0;
    if (pending->len) {
        ol_deliver(fn, baton, pending->b, pending->len);
        pending->len = 0;
    }
}

apr_size_t ol_output(const llmgw_buf_t *out, const char **o)
{
    *o = out->b ? out->b : "";
    return out->len;
}

int ol_is_num(llmgw_json_type_t t)
{
    return t == LLMGW_JSON_INT || t == LLMGW_JSON_DOUBLE;
}

int ol_absent(llmgw_json_type_t t)
{
    return t == LLMGW_JSON_MISSING || t == LLMGW_JSON_NULL;
}

apr_size_t ol_len_of(const llmgw_json_t *a)
{
    return a ? llmgw_json_array_len(a) : 0;
}

llmgw_json_t *ol_item(const llmgw_json_t *a, apr_size_t i)
{
    return a ? llmgw_json_array_get(a, i) : NULL;
}

const char *llmgw_ollama_time(apr_pool_t *p, apr_int64_t secs)
{
    apr_time_exp_t t;

    apr_time_exp_gmt(&t, apr_time_from_sec(secs));
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02dZ", t.tm_year + 1900,
                        t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min,
                        t.tm_sec);
}

const char *llmgw_ollama_time_us(apr_pool_t *p, apr_time_t when)
{
    apr_time_exp_t t;
    char frac[16];
    int n;

    apr_time_exp_gmt(&t, when);
    /* Go's RFC3339Nano, as Ollama writes it: the fraction without its
     * trailing zeros, none at all on a whole second. */
    n = t.tm_usec ? apr_snprintf(frac, sizeof(frac), ".%06d", t.tm_usec) : 0;
    while (n > 1 && frac[n - 1] == '0') {
        n--;
    }
    frac[n] = '\0';
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02d%sZ",
                        t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour,
                        t.tm_min, t.tm_sec, frac);
}

llmgw_json_t *ol_args_object(apr_pool_t *p, const char *s, apr_size_t len)
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

const char *ol_args_text(const llmgw_json_t *tc)
{
    switch (llmgw_json_type(tc, "function", "arguments", NULL)) {
    case LLMGW_JSON_OBJECT:
    case LLMGW_JSON_ARRAY:
        return llmgw_json_write(
            llmgw_json_getj(tc, "function", "arguments", NULL), NULL);
    case LLMGW_JSON_STRING:
        return llmgw_json_gets(tc, "function", "arguments", NULL);
    default: return "{}";
    }
}

void ol_openai_call(llmgw_json_t *o, const char *id, const char *name,
                    const llmgw_json_t *tc)
{
    llmgw_json_sets(o, id, "id", NULL);
    llmgw_json_sets(o, "function", "type", NULL);
    llmgw_json_sets(o, name, "function", "name", NULL);
    llmgw_json_sets(o, ol_args_text(tc), "function", "arguments", NULL);
}

const char *ol_finish_reason(const char *reason, int tool_calls)
{
    if (reason && strcmp(reason, "length") == 0) {
        return "length";
    }
    return tool_calls ? "tool_calls" : "stop";
}

const char *ol_done_reason(const char *reason)
{
    return (reason && strcmp(reason, "length") == 0) ? "length" : "stop";
}

void ol_openai_usage(const llmgw_json_t *j, llmgw_usage_t *usage)
{
    if (llmgw_json_type(j, "usage", NULL) == LLMGW_JSON_OBJECT) {
        llmgw_usage_read(llmgw_json_getj(j, "usage", NULL), "prompt_tokens",
                         "completion_tokens", "total_tokens", usage);
    }
}
