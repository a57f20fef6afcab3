/* llmgw_estimate: a request's token bound from its parsed body, read
 * through the JSON view's lengths (no text is copied or decoded). */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_estimate.h"
#include "llmgw_limits.h"

void llmgw_estimate_defaults(llmgw_estimate_conf_t *c)
{
    c->per_request = 64;
    c->per_message = 16;
    c->per_image = 2048;
    c->tools_overhead = 512;
    c->default_max = 0;
    c->max_cap = 0;
}

static apr_int64_t add(apr_int64_t a, apr_int64_t b)
{
    return a > LLMGW_LIMITS_TOKENS_MAX - b ? LLMGW_LIMITS_TOKENS_MAX : a + b;
}

static apr_int64_t mul(apr_int64_t a, apr_int64_t b)
{
    return b && a > LLMGW_LIMITS_TOKENS_MAX / b ? LLMGW_LIMITS_TOKENS_MAX
                                                : a * b;
}

static int is_image(const char *type)
{
    return type
           && (!strcmp(type, "image_url") || !strcmp(type, "image")
               || !strcmp(type, "input_image"));
}

/* A message's JSON text, each image part counted as per_image instead of
 * its bytes (a data: URL is far longer than what the image costs). */
static apr_int64_t message_bound(const llmgw_json_t *m,
                                 const llmgw_estimate_conf_t *c)
{
    llmgw_json_t *content, *part;
    apr_int64_t n = (apr_int64_t)llmgw_json_text_len(m);
    apr_size_t i, parts;

    if (llmgw_json_type(m, "content", NULL) != LLMGW_JSON_ARRAY) {
        return n;
    }
    content = llmgw_json_getj(m, "content", NULL);
    n -= (apr_int64_t)llmgw_json_text_len(content);
    parts = llmgw_json_array_len(content);
    for (i = 0; i < parts; i++) {
        part = llmgw_json_array_get(content, i);
        n = add(n, is_image(llmgw_json_gets(part, "type", NULL))
                       ? c->per_image
                       : (apr_int64_t)llmgw_json_text_len(part));
    }
    return n;
}

/* Tool (and legacy function) definitions: their text, and the words a
 * template puts around them. */
static apr_int64_t tools_bound(const llmgw_json_t *body,
                               const llmgw_estimate_conf_t *c)
{
    static const char *const keys[] = { "tools", "functions" };
    apr_int64_t n = 0;
    int i;

    for (i = 0; i < 2; i++) {
        llmgw_json_t *t = llmgw_json_getj(body, keys[i], NULL);

        if (llmgw_json_array_len(t)) {
            n = add(n, add((apr_int64_t)llmgw_json_text_len(t),
                           c->tools_overhead));
        }
    }
    return n;
}

static apr_int64_t chat_bound(const llmgw_json_t *body,
                              const llmgw_estimate_conf_t *c)
{
    llmgw_json_t *msgs = llmgw_json_getj(body, "messages", NULL);
    apr_size_t i, n = llmgw_json_array_len(msgs);
    apr_int64_t p = add(c->per_request, tools_bound(body, c));

    for (i = 0; i < n; i++) {
        p = add(p, add(c->per_message,
                       message_bound(llmgw_json_array_get(msgs, i), c)));
    }
    return p;
}

/* How many prompts a completions prompt or an embeddings input holds: a
 * string or one token array is one, an array of either is its length. */
static apr_int64_t prompts_in(const llmgw_json_t *v)
{
    llmgw_json_type_t first;

    if (llmgw_json_type(v, NULL) != LLMGW_JSON_ARRAY) {
        return 1;
    }
    first = llmgw_json_type(llmgw_json_array_get(v, 0), NULL);
    return first == LLMGW_JSON_STRING || first == LLMGW_JSON_ARRAY
               ? (apr_int64_t)llmgw_json_array_len(v)
               : 1;
}

/* Token arrays count too: "[1,2,3]" is longer than its three tokens. */
static apr_int64_t text_bound(const llmgw_json_t *body, const char *key,
                              const llmgw_estimate_conf_t *c,
                              apr_int64_t *prompts)
{
    llmgw_json_t *v = llmgw_json_getj(body, key, NULL);

    *prompts = prompts_in(v);
    return add(add(c->per_request, mul(c->per_message, *prompts)),
               add((apr_int64_t)llmgw_json_text_len(v),
                   (apr_int64_t)llmgw_json_text_len(
                       llmgw_json_getj(body, "suffix", NULL))));
}

static int bad(llmgw_error_t *err, const char *param, const char *code,
               const char *msg)
{
    return llmgw_error_set(err, 400, "invalid_request_error", param, code,
                           msg);
}

/* The integer at key when there is one (1), none (0), or -1 for another
 * type or a value outside [1, max]. */
static int count_member(const llmgw_json_t *j, const char *key,
                        apr_int64_t max, apr_int64_t *v)
{
    llmgw_json_type_t t = llmgw_json_type(j, key, NULL);

    if (t == LLMGW_JSON_MISSING || t == LLMGW_JSON_NULL) {
        return 0;
    }
    if (t != LLMGW_JSON_INT) {
        return -1;
    }
    *v = llmgw_json_getl(j, 0, key, NULL);
    if (*v < 1 || *v > max) {
        return -1;
    }
    return 1;
}

static int choices_of(const llmgw_request_t *req, apr_int64_t prompts,
                      apr_int64_t *choices, llmgw_error_t *err)
{
    static const char *const keys[] = { "n", "best_of" };
    apr_int64_t v, most = 1;
    int i, rv;

    for (i = 0; i < (req->ep == LLMGW_EP_COMPLETIONS ? 2 : 1); i++) {
        rv = count_member(req->body, keys[i], LLMGW_ESTIMATE_MAX_CHOICES, &v);
        if (rv < 0) {
            return bad(err, keys[i], "invalid_value",
                       apr_psprintf(req->pool,
                                    "'%s' must be an integer "
                                    "from 1 to %d.",
                                    keys[i], LLMGW_ESTIMATE_MAX_CHOICES));
        }
        if (rv > 0 && v > most) {
            most = v;
        }
    }
    *choices = mul(most, prompts);
    return 0;
}

/* The client's bound on one choice: max_completion_tokens, max_tokens.
 * An Ollama client's options.num_predict is max_tokens by now
 * (llmgw_ollama_front_request); an "options" member in an OpenAI body
 * bounds nothing: no backend reads it there. 1 found, 0 none, -1 invalid
 * (err filled). */
static int client_max(const llmgw_request_t *req, apr_int64_t *max,
                      const char **field, llmgw_error_t *err)
{
    static const char *const keys[] = { "max_completion_tokens",
                                        "max_tokens" };
    int i, rv;

    for (i = req->ep == LLMGW_EP_CHAT ? 0 : 1; i < 2; i++) {
        rv = count_member(req->body, keys[i], APR_INT64_MAX, max);
        if (rv < 0) {
            bad(err, keys[i], "invalid_value",
                apr_psprintf(req->pool,
                             "'%s' must be an integer of at "
                             "least 1.",
                             keys[i]));
            return -1;
        }
        if (rv > 0) {
            *field = keys[i];
            return 1;
        }
    }
    return 0;
}

static void choose_max(const llmgw_estimate_conf_t *c, apr_int64_t headroom,
                       llmgw_estimate_t *e)
{
    apr_int64_t share;

    e->max_tokens =
        c->default_max > 0 ? c->default_max : LLMGW_ESTIMATE_FALLBACK_MAX;
    if (c->max_cap > 0 && e->max_tokens > c->max_cap) {
        e->max_tokens = c->max_cap;
    }
    /* What the limits leave, shared by the choices; at least 1 (the
     * admission then says whether even that fits). */
    if (headroom < APR_INT64_MAX) {
        share = (headroom - e->prompt) / (e->choices ? e->choices : 1);
        e->max_tokens = share < 1               ? 1
                        : share < e->max_tokens ? share
                                                : e->max_tokens;
    }
    e->set = 1;
}

int llmgw_estimate(const llmgw_request_t *req, const llmgw_estimate_conf_t *c,
                   apr_int64_t headroom, llmgw_estimate_t *e,
                   llmgw_error_t *err)
{
    apr_int64_t prompts = 1;
    int rv;

    memset(e, 0, sizeof(*e));
    e->field = "max_tokens";
    if (req->ep == LLMGW_EP_EMBEDDINGS) {
        e->prompt = text_bound(req->body, "input", c, &prompts);
        return 0;
    }
    e->prompt = req->ep == LLMGW_EP_CHAT
                    ? chat_bound(req->body, c)
                    : text_bound(req->body, "prompt", c, &prompts);
    if ((rv = choices_of(req, prompts, &e->choices, err)) != 0) {
        return rv;
    }
    rv = client_max(req, &e->max_tokens, &e->field, err);
    if (rv < 0) {
        return err->status;
    }
    if (rv == 0) {
        choose_max(c, headroom, e);
    }
    else if (c->max_cap > 0 && e->max_tokens > c->max_cap) {
        e->max_tokens = c->max_cap;
        e->set = 1;
    }
    e->max_out = mul(e->max_tokens, e->choices);
    return 0;
}

apr_int64_t llmgw_estimate_completion(apr_int64_t content_bytes,
                                      apr_int64_t max_out)
{
    if (content_bytes < 0) {
        return 0;
    }
    return max_out > 0 && content_bytes > max_out ? max_out : content_bytes;
}
