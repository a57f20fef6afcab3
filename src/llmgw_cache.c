/* llmgw_cache: cache keys, eligibility, and records. A streamed answer is
 * kept as its chunks (replayed as they came) plus the response assembled
 * from them, so streamed and plain requests hit each other's entries. */
#include <stdio.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_cache.h"
#include "llmgw_sha256.h"

#define RECORD_VERSION 2
#define MAX_CHOICES 8
#define MAX_TOOLS 16

typedef struct {
    const char *id;
    const char *name;
    apr_array_header_t *args;      /* const char *: argument pieces */
} tool_acc;

typedef struct {
    int seen;
    apr_array_header_t *content;   /* const char *: content pieces */
    apr_array_header_t *reasoning;
    tool_acc tools[MAX_TOOLS];
    int ntools;
    const char *finish_reason;
} choice_acc;

struct llmgw_record {
    apr_pool_t *p;
    llmgw_endpoint_t ep;
    apr_size_t max;
    apr_size_t size;               /* bytes taken in so far */
    int failed;                    /* too big or not understood */
    llmgw_json_t *doc;             /* {"v":..,"response":..,"chunks":[..]} */
    llmgw_json_t *response;
    llmgw_json_t *chunks;          /* chunk objects without "usage" */
    llmgw_json_t *first;           /* the first chunk: id, created, model */
    const char *resp_text;         /* a stored record: the response as is */
    apr_size_t resp_len;
    const char *chunks_text;       /* ... and its chunks, parsed on need */
    apr_size_t chunks_len;
    llmgw_usage_t usage;
    choice_acc choice[MAX_CHOICES];
};

int llmgw_cache_eligible(const llmgw_request_t *req,
                         llmgw_cache_policy_t policy)
{
    llmgw_json_type_t t;

    if (policy == LLMGW_CACHE_OFF) {
        return 0;
    }
    if (policy == LLMGW_CACHE_ALL || req->ep == LLMGW_EP_EMBEDDINGS) {
        return 1;
    }
    /* Generation is worth replaying only when the client pinned sampling
     * down: temperature 0, or a fixed seed. */
    if (llmgw_json_type(req->body, "seed", NULL) == LLMGW_JSON_INT) {
        return 1;
    }
    t = llmgw_json_type(req->body, "temperature", NULL);
    return (t == LLMGW_JSON_INT || t == LLMGW_JSON_DOUBLE)
           && llmgw_json_getd(req->body, 1, "temperature", NULL) == 0;
}

const char *llmgw_cache_key(apr_pool_t *p, const llmgw_request_t *req,
                            const char *upstream_model, const char *backend,
                            const char *dialect)
{
    static const char *const skip[] = { "model", "stream", "stream_options",
                                        "user", "metadata", "store", NULL };
    apr_size_t len;
    const char *canon = llmgw_json_write_canonical(p, req->body, skip, &len);
    const char *text = apr_psprintf(p, "llmgw-cache-v%d\n%s\n%s\n%s\n%s\n%s",
                                    RECORD_VERSION,
                                    llmgw_endpoint_upstream_path(req->ep),
                                    dialect, backend, upstream_model, canon);

    return llmgw_sha256_hex(p, text, strlen(text));
}

llmgw_record_t *llmgw_record_create(apr_pool_t *p, llmgw_endpoint_t ep,
                                    apr_size_t max)
{
    llmgw_record_t *rec = apr_pcalloc(p, sizeof(*rec));

    rec->p = p;
    rec->ep = ep;
    rec->max = max;
    return rec;
}

/* The tree a streamed answer is rebuilt in; made on first need, as a
 * plain answer is kept as the bytes it came in. */
static llmgw_json_t *doc(llmgw_record_t *rec)
{
    if (!rec->doc) {
        rec->doc = llmgw_json_create_object(rec->p);
    }
    return rec->doc;
}

static void usage_of(const llmgw_json_t *response, llmgw_usage_t *u)
{
    if (llmgw_json_type(response, "usage", NULL) != LLMGW_JSON_OBJECT) {
        return;
    }
    u->prompt = llmgw_json_getl(response, 0, "usage", "prompt_tokens", NULL);
    u->completion = llmgw_json_getl(response, 0, "usage",
                                    "completion_tokens", NULL);
    u->total = llmgw_json_getl(response, u->prompt + u->completion, "usage",
                               "total_tokens", NULL);
    u->found = 1;
}

static int take(llmgw_record_t *rec, apr_size_t len)
{
    rec->size += len;
    if (rec->size > rec->max) {
        rec->failed = 1;
    }
    return !rec->failed;
}

static void push_piece(apr_pool_t *p, apr_array_header_t **arr,
                       const char *s)
{
    if (!s || !*s) {
        return;
    }
    if (!*arr) {
        *arr = apr_array_make(p, 16, sizeof(const char *));
    }
    APR_ARRAY_PUSH(*arr, const char *) = s;
}

static void add_tool_deltas(llmgw_record_t *rec, choice_acc *c,
                            llmgw_json_t *calls)
{
    apr_size_t i, n = llmgw_json_array_len(calls);

    for (i = 0; i < n; i++) {
        llmgw_json_t *d = llmgw_json_array_get(calls, i);
        apr_int64_t idx = llmgw_json_getl(d, (apr_int64_t)i, "index", NULL);
        tool_acc *t;
        const char *v;

        if (idx < 0 || idx >= MAX_TOOLS) {
            rec->failed = 1;
            return;
        }
        t = &c->tools[idx];
        if (idx >= c->ntools) {
            c->ntools = (int)idx + 1;
        }
        if ((v = llmgw_json_gets(d, "id", NULL)) != NULL) {
            t->id = v;
        }
        if ((v = llmgw_json_gets(d, "function", "name", NULL)) != NULL) {
            t->name = v;
        }
        push_piece(rec->p, &t->args,
                   llmgw_json_gets(d, "function", "arguments", NULL));
    }
}

void llmgw_record_add_chunk(llmgw_record_t *rec, const char *data,
                            apr_size_t len)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *chunk, *choices;
    apr_size_t i, n;

    if (rec->failed || !take(rec, len)) {
        return;
    }
    chunk = llmgw_json_parse(rec->p, data, len, &err, &msg);
    if (!chunk || llmgw_json_type(chunk, NULL) != LLMGW_JSON_OBJECT) {
        rec->failed = 1;
        return;
    }
    usage_of(chunk, &rec->usage);
    choices = llmgw_json_getj(chunk, "choices", NULL);
    n = choices ? llmgw_json_array_len(choices) : 0;
    if (n == 0) {
        return;     /* the usage-only chunk: replayed only on request */
    }
    if (!rec->first) {
        rec->first = chunk;
        rec->chunks = llmgw_json_add_array(doc(rec), "chunks");
    }
    for (i = 0; i < n; i++) {
        llmgw_json_t *ch = llmgw_json_array_get(choices, i);
        apr_int64_t idx = llmgw_json_getl(ch, (apr_int64_t)i, "index", NULL);
        const char *fr = llmgw_json_gets(ch, "finish_reason", NULL);
        choice_acc *c;

        if (idx < 0 || idx >= MAX_CHOICES) {
            rec->failed = 1;
            return;
        }
        c = &rec->choice[idx];
        c->seen = 1;
        if (rec->ep == LLMGW_EP_COMPLETIONS) {
            push_piece(rec->p, &c->content,
                       llmgw_json_gets(ch, "text", NULL));
        }
        else {
            push_piece(rec->p, &c->content,
                       llmgw_json_gets(ch, "delta", "content", NULL));
            push_piece(rec->p, &c->reasoning,
                       llmgw_json_gets(ch, "delta", "reasoning_content",
                                       NULL));
            if (llmgw_json_type(ch, "delta", "tool_calls", NULL)
                == LLMGW_JSON_ARRAY) {
                add_tool_deltas(rec, c, llmgw_json_getj(ch, "delta",
                                                        "tool_calls", NULL));
            }
        }
        if (fr) {
            c->finish_reason = fr;
        }
    }
    llmgw_json_del(chunk, "usage");
    llmgw_json_array_addj(rec->chunks, chunk);
}

static const char *joined(apr_pool_t *p, apr_array_header_t *pieces)
{
    return pieces ? apr_array_pstrcat(p, pieces, 0) : "";
}

/* id, object, created and model of a response or chunk, from another. */
static void copy_header(llmgw_json_t *dst, const llmgw_json_t *src,
                        const char *object)
{
    const char *v;

    llmgw_json_sets(dst, (v = llmgw_json_gets(src, "id", NULL)) ? v : "",
                    "id", NULL);
    llmgw_json_sets(dst, object, "object", NULL);
    llmgw_json_setl(dst, llmgw_json_getl(src, 0, "created", NULL), "created",
                    NULL);
    llmgw_json_sets(dst, (v = llmgw_json_gets(src, "model", NULL)) ? v : "",
                    "model", NULL);
}

/* The non-streamed response the chunks add up to. */
static void assemble(llmgw_record_t *rec)
{
    int chat = rec->ep != LLMGW_EP_COMPLETIONS;
    llmgw_json_t *r, *choices;
    const char *v;
    int i, k;

    r = rec->response = llmgw_json_add_object(doc(rec), "response");
    copy_header(r, rec->first,
                chat ? "chat.completion" : "text_completion");
    if ((v = llmgw_json_gets(rec->first, "system_fingerprint", NULL))) {
        llmgw_json_sets(r, v, "system_fingerprint", NULL);
    }
    choices = llmgw_json_add_array(r, "choices");
    for (i = 0; i < MAX_CHOICES; i++) {
        choice_acc *c = &rec->choice[i];
        llmgw_json_t *ch, *msg;

        if (!c->seen) {
            continue;
        }
        if (!c->finish_reason) {
            rec->failed = 1;    /* a stream cut short is not an answer */
            return;
        }
        ch = llmgw_json_array_add_object(choices);
        llmgw_json_setl(ch, i, "index", NULL);
        if (!chat) {
            llmgw_json_sets(ch, joined(rec->p, c->content), "text", NULL);
        }
        else {
            msg = llmgw_json_add_object(ch, "message");
            llmgw_json_sets(msg, "assistant", "role", NULL);
            llmgw_json_sets(msg, joined(rec->p, c->content), "content",
                            NULL);
            if (c->reasoning) {
                llmgw_json_sets(msg, joined(rec->p, c->reasoning),
                                "reasoning_content", NULL);
            }
            if (c->ntools) {
                llmgw_json_t *calls = llmgw_json_add_array(msg,
                                                           "tool_calls");

                for (k = 0; k < c->ntools; k++) {
                    llmgw_json_t *t = llmgw_json_array_add_object(calls);

                    llmgw_json_sets(t, c->tools[k].id ? c->tools[k].id : "",
                                    "id", NULL);
                    llmgw_json_sets(t, "function", "type", NULL);
                    llmgw_json_sets(t, c->tools[k].name
                                           ? c->tools[k].name : "",
                                    "function", "name", NULL);
                    llmgw_json_sets(t, joined(rec->p, c->tools[k].args),
                                    "function", "arguments", NULL);
                }
            }
        }
        llmgw_json_setnull(ch, "logprobs", NULL);
        llmgw_json_sets(ch, c->finish_reason, "finish_reason", NULL);
    }
    if (rec->usage.found) {
        llmgw_json_setl(r, rec->usage.prompt, "usage", "prompt_tokens", NULL);
        llmgw_json_setl(r, rec->usage.completion, "usage",
                        "completion_tokens", NULL);
        llmgw_json_setl(r, rec->usage.total, "usage", "total_tokens", NULL);
    }
}

/* The body is kept as it came, without a parse: the backend's JSON, whole
 * (the output filter drops a recording when mod_proxy reports the backend
 * broke off). A body that is not an object with choices (data, for
 * embeddings) is not an answer to replay. */
void llmgw_record_set_response(llmgw_record_t *rec, const char *body,
                               apr_size_t len)
{
    const char *member = rec->ep == LLMGW_EP_EMBEDDINGS ? "\"data\""
                                                         : "\"choices\"";

    if (rec->failed || !take(rec, len)) {
        return;
    }
    body = llmgw_json_trim(body, &len);
    if (len < 2 || body[0] != '{' || body[len - 1] != '}'
        || !memmem(body, len, member, strlen(member))) {
        rec->failed = 1;
        return;
    }
    rec->resp_text = body;
    rec->resp_len = len;
}

static const char *endpoint_name(llmgw_endpoint_t ep)
{
    return ep == LLMGW_EP_COMPLETIONS ? "completions"
           : ep == LLMGW_EP_EMBEDDINGS ? "embeddings" : "chat";
}

/* Stored as "LLMGW<v> <endpoint> <n>\n" + the response (n bytes) + "\n" +
 * the chunks (a JSON array, or null): a plain hit sends the response as
 * it is, with no parse and no serialisation. */
const char *llmgw_record_serialize(llmgw_record_t *rec, apr_size_t *len)
{
    const char *resp, *chunks = "null", *head;
    apr_size_t rlen, clen = 4, hlen;
    char *text;

    if (!rec->failed && !rec->resp_text && !rec->response && rec->first) {
        assemble(rec);
    }
    /* assemble() may have found the stream incomplete. */
    if (rec->failed || (!rec->resp_text && !rec->response)) {
        return NULL;
    }
    resp = llmgw_record_render_json(rec, &rlen);
    if (rec->chunks) {
        chunks = llmgw_json_write(rec->chunks, &clen);
    }
    head = apr_psprintf(rec->p, "LLMGW%d %s %" APR_SIZE_T_FMT "\n",
                        RECORD_VERSION, endpoint_name(rec->ep), rlen);
    hlen = strlen(head);
    *len = hlen + rlen + 1 + clen;
    if (*len > rec->max) {
        return NULL;
    }
    text = apr_palloc(rec->p, *len + 1);
    memcpy(text, head, hlen);
    memcpy(text + hlen, resp, rlen);
    text[hlen + rlen] = '\n';
    memcpy(text + hlen + rlen + 1, chunks, clen);
    text[*len] = '\0';
    return text;
}

static int load(llmgw_record_t *rec)
{
    llmgw_json_err_t err;
    const char *msg;

    if (!rec->response) {
        rec->response = llmgw_json_parse(rec->p, rec->resp_text,
                                         rec->resp_len, &err, &msg);
        if (!rec->response) {
            return 0;
        }
        usage_of(rec->response, &rec->usage);
    }
    if (!rec->chunks && rec->chunks_len != 4) {
        rec->chunks = llmgw_json_parse(rec->p, rec->chunks_text,
                                       rec->chunks_len, &err, &msg);
        if (llmgw_json_type(rec->chunks, NULL) != LLMGW_JSON_ARRAY) {
            return 0;
        }
    }
    return 1;
}

llmgw_record_t *llmgw_record_parse(apr_pool_t *p, const char *text,
                                   apr_size_t len, int full)
{
    char head[64], ep[16];
    const char *nl = memchr(text, '\n',
                            len < sizeof(head) ? len : sizeof(head));
    apr_size_t n, used;
    int v;
    llmgw_record_t *rec;

    /* The header, NUL-terminated: a store need not terminate values. */
    if (!nl) {
        return NULL;
    }
    used = (apr_size_t)(nl - text) + 1;
    memcpy(head, text, used - 1);
    head[used - 1] = '\0';
    if (sscanf(head, "LLMGW%d %15s %" APR_SIZE_T_FMT, &v, ep, &n) != 3
        || v != RECORD_VERSION || n >= len || used + n + 1 > len
        || text[used + n] != '\n') {
        return NULL;
    }
    rec = apr_pcalloc(p, sizeof(*rec));
    rec->p = p;
    rec->ep = strcmp(ep, "completions") == 0 ? LLMGW_EP_COMPLETIONS
              : strcmp(ep, "embeddings") == 0 ? LLMGW_EP_EMBEDDINGS
              : LLMGW_EP_CHAT;
    rec->resp_text = text + used;
    rec->resp_len = n;
    rec->chunks_text = text + used + n + 1;
    rec->chunks_len = len - used - n - 1;
    rec->max = len;
    if (full && !load(rec)) {
        return NULL;
    }
    if (!full) {
        llmgw_usage_find(rec->resp_text, rec->resp_len, &rec->usage);
    }
    return rec;
}

const char *llmgw_record_render_json(llmgw_record_t *rec, apr_size_t *len)
{
    if (rec->resp_text) {
        *len = rec->resp_len;
        return rec->resp_text;
    }
    return llmgw_json_write(rec->response, len);
}

void llmgw_record_usage(llmgw_record_t *rec, llmgw_usage_t *usage)
{
    *usage = rec->usage;
}

/* A chunk with the response's id, created and model, for synthesis. */
static llmgw_json_t *new_chunk(llmgw_record_t *rec, apr_pool_t *p)
{
    llmgw_json_t *c = llmgw_json_create_object(p);

    copy_header(c, rec->response, rec->ep != LLMGW_EP_COMPLETIONS
                                      ? "chat.completion.chunk"
                                      : "text_completion");
    return c;
}

/* A chunk with one choice of index i, returned in *choice. */
static llmgw_json_t *new_choice_chunk(llmgw_record_t *rec, apr_pool_t *p,
                                      apr_size_t i, llmgw_json_t **choice)
{
    llmgw_json_t *c = new_chunk(rec, p);

    *choice = llmgw_json_array_add_object(llmgw_json_add_array(c,
                                                               "choices"));
    llmgw_json_setl(*choice, (apr_int64_t)i, "index", NULL);
    return c;
}

static void emit(apr_array_header_t *out, apr_pool_t *p,
                 const llmgw_json_t *chunk)
{
    APR_ARRAY_PUSH(out, const char *) =
        apr_pstrcat(p, "data: ", llmgw_json_write(chunk, NULL), "\n\n",
                    NULL);
}

/* Chunks for an answer that was stored from a non-streamed response: the
 * role, everything generated in one delta, then the finish reason. */
static void synthesize(llmgw_record_t *rec, apr_pool_t *p,
                       apr_array_header_t *out)
{
    llmgw_json_t *choices = llmgw_json_getj(rec->response, "choices", NULL);
    apr_size_t i, n = choices ? llmgw_json_array_len(choices) : 0;
    int chat = rec->ep != LLMGW_EP_COMPLETIONS;

    for (i = 0; i < n; i++) {
        llmgw_json_t *src = llmgw_json_array_get(choices, i);
        llmgw_json_t *c, *ch, *delta;
        const char *v;

        if (chat) {
            c = new_choice_chunk(rec, p, i, &ch);
            delta = llmgw_json_add_object(ch, "delta");
            llmgw_json_sets(delta, "assistant", "role", NULL);
            llmgw_json_sets(delta, "", "content", NULL);
            llmgw_json_setnull(ch, "finish_reason", NULL);
            emit(out, p, c);
        }
        c = new_choice_chunk(rec, p, i, &ch);
        if (chat) {
            llmgw_json_t *msg = llmgw_json_getj(src, "message", NULL);

            delta = llmgw_json_add_object(ch, "delta");
            if (msg && (v = llmgw_json_gets(msg, "content", NULL))) {
                llmgw_json_sets(delta, v, "content", NULL);
            }
            if (msg && (v = llmgw_json_gets(msg, "reasoning_content",
                                            NULL))) {
                llmgw_json_sets(delta, v, "reasoning_content", NULL);
            }
            if (msg && llmgw_json_type(msg, "tool_calls", NULL)
                           == LLMGW_JSON_ARRAY) {
                llmgw_json_t *calls = llmgw_json_getj(msg, "tool_calls",
                                                      NULL);
                llmgw_json_t *dc = llmgw_json_add_array(delta, "tool_calls");
                apr_size_t k, nk = llmgw_json_array_len(calls);

                for (k = 0; k < nk; k++) {
                    llmgw_json_t *t = llmgw_json_array_add_object(dc);
                    llmgw_json_t *call = llmgw_json_array_get(calls, k);

                    llmgw_json_setl(t, (apr_int64_t)k, "index", NULL);
                    llmgw_json_setj(t, llmgw_json_getj(call, "id", NULL),
                                    "id", NULL);
                    llmgw_json_sets(t, "function", "type", NULL);
                    llmgw_json_setj(t, llmgw_json_getj(call, "function",
                                                       NULL),
                                    "function", NULL);
                }
            }
        }
        else {
            v = llmgw_json_gets(src, "text", NULL);
            llmgw_json_sets(ch, v ? v : "", "text", NULL);
        }
        llmgw_json_setnull(ch, "finish_reason", NULL);
        emit(out, p, c);

        c = new_choice_chunk(rec, p, i, &ch);
        if (chat) {
            llmgw_json_add_object(ch, "delta");
        }
        else {
            llmgw_json_sets(ch, "", "text", NULL);
        }
        v = llmgw_json_gets(src, "finish_reason", NULL);
        llmgw_json_sets(ch, v ? v : "stop", "finish_reason", NULL);
        emit(out, p, c);
    }
}

const char *llmgw_record_render_sse(llmgw_record_t *rec, apr_pool_t *p,
                                    int include_usage, apr_size_t *len)
{
    apr_array_header_t *out = apr_array_make(p, 32, sizeof(const char *));
    const char *text;
    apr_size_t i, n;

    if (!load(rec)) {
        return NULL;
    }
    if (rec->chunks) {
        n = llmgw_json_array_len(rec->chunks);
        for (i = 0; i < n; i++) {
            emit(out, p, llmgw_json_array_get(rec->chunks, i));
        }
    }
    else {
        synthesize(rec, p, out);
    }
    if (include_usage && rec->usage.found) {
        llmgw_json_t *c = new_chunk(rec, p);

        llmgw_json_add_array(c, "choices");
        llmgw_json_setl(c, rec->usage.prompt, "usage", "prompt_tokens", NULL);
        llmgw_json_setl(c, rec->usage.completion, "usage",
                        "completion_tokens", NULL);
        llmgw_json_setl(c, rec->usage.total, "usage", "total_tokens", NULL);
        emit(out, p, c);
    }
    APR_ARRAY_PUSH(out, const char *) = "data: [DONE]\n\n";
    text = apr_array_pstrcat(p, out, 0);
    *len = strlen(text);
    return text;
}

apr_size_t llmgw_record_nchunks(const llmgw_record_t *rec)
{
    return rec->chunks ? llmgw_json_array_len(rec->chunks) : 0;
}
