/* llmgw_cache: cache keys, eligibility, and records. A streamed answer is
 * kept as its chunks (replayed as they came) plus the response assembled
 * from them, so streamed and plain requests hit each other's entries. */
#include <stdio.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_buf.h"
#include "llmgw_cache.h"
#include "llmgw_hash.h"
#include "llmgw_sha256.h"

#define RECORD_VERSION 3
#define STR_(x) #x
#define STR(x) STR_(x)
/* A record's first bytes: "LLMGW" and the version, then a space. */
#define RECORD_MAGIC "LLMGW" STR(RECORD_VERSION) " "
/* The longest header: magic, endpoint, length, check, spaces, newline. */
#define MAX_HEAD 64
#define MAX_CHOICES 8
#define MAX_TOOLS 16

typedef struct {
    const char *id;
    const char *name;
    apr_array_header_t *args; /* const char *: argument pieces */
} tool_acc;

typedef struct {
    int seen;
    apr_array_header_t *content; /* const char *: content pieces */
    apr_array_header_t *reasoning;
    apr_array_header_t *refusal;
    tool_acc tools[MAX_TOOLS];
    int ntools;
    const char *finish_reason;
} choice_acc;

struct llmgw_record {
    apr_pool_t *p;
    llmgw_endpoint_t ep;
    apr_size_t max;
    apr_size_t size; /* bytes taken in so far */
    int failed;      /* too big or not understood */
    llmgw_json_t *response;
    llmgw_json_t *chunks;     /* a stored record's chunk objects */
    llmgw_pbuf_t chunks_made; /* a stream being recorded: "[c0,c1,..." */
    apr_size_t nchunks;       /* ... how many so far */
    llmgw_json_t *first;      /* the first chunk: id, created, model */
    const char *resp_text;    /* a stored record: the response as is */
    apr_size_t resp_len;
    const char *chunks_text; /* ... and its chunks, parsed on need */
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

struct llmgw_cache_gens {
    apr_uint64_t all;
    apr_uint64_t flushes;
    apr_uint64_t model[LLMGW_CACHE_GENS];
};

static llmgw_cache_gens_t *gens;

apr_size_t llmgw_cache_gens_size(void)
{
    return sizeof(llmgw_cache_gens_t);
}

llmgw_cache_gens_t *llmgw_cache_gens_init(void *mem, apr_size_t size)
{
    if (!mem || size < sizeof(llmgw_cache_gens_t) || (apr_uintptr_t)mem % 8) {
        return NULL;
    }
    memset(mem, 0, sizeof(llmgw_cache_gens_t));
    return mem;
}

void llmgw_cache_use_gens(llmgw_cache_gens_t *g)
{
    gens = g;
}

static apr_uint64_t *gen_of(llmgw_cache_gens_t *g, const char *model)
{
    return &g->model[llmgw_fnv1a32(model, strlen(model)) % LLMGW_CACHE_GENS];
}

apr_uint64_t llmgw_cache_flush(llmgw_cache_gens_t *g, const char *model)
{
    __atomic_fetch_add(model ? gen_of(g, model) : &g->all, 1,
                       __ATOMIC_RELEASE);
    return __atomic_add_fetch(&g->flushes, 1, __ATOMIC_RELAXED);
}

apr_uint64_t llmgw_cache_flushes(const llmgw_cache_gens_t *g)
{
    return __atomic_load_n(&g->flushes, __ATOMIC_RELAXED);
}

/* The key's part for the generations: "" until something was flushed, so
 * keys stay as they were. */
static const char *generations(apr_pool_t *p, const char *model,
                               const char *upstream)
{
    apr_uint64_t all, a, b;

    if (!gens) {
        return "";
    }
    all = __atomic_load_n(&gens->all, __ATOMIC_ACQUIRE);
    a = model ? __atomic_load_n(gen_of(gens, model), __ATOMIC_ACQUIRE) : 0;
    b = upstream ? __atomic_load_n(gen_of(gens, upstream), __ATOMIC_ACQUIRE)
                 : 0;
    if (!(all | a | b)) {
        return "";
    }
    return apr_psprintf(p,
                        "\ngen %" APR_UINT64_T_FMT " %" APR_UINT64_T_FMT
                        " %" APR_UINT64_T_FMT,
                        all, a, b);
}

const char *llmgw_cache_key(apr_pool_t *p, const llmgw_request_t *req,
                            const char *upstream_model, const char *backend,
                            const char *dialect)
{
    static const char *const skip[] = { "model", "stream",   "stream_options",
                                        "user",  "metadata", "store",
                                        NULL };
    apr_size_t len;
    const char *canon = llmgw_json_write_canonical(p, req->body, skip, &len);
    const char *text = apr_psprintf(
        p, "llmgw-cache-v%d\n%s\n%s\n%s\n%s\n%s%s", RECORD_VERSION,
        llmgw_endpoint_upstream_path(req->ep), dialect, backend,
        upstream_model, canon, generations(p, req->model, upstream_model));

    /* A bound the gateway set (a key's budget left, a route's default) is
     * part of what the backend was asked: an answer cut by it must not
     * serve a request asked without it. */
    if (req->max_tokens > 0) {
        text = apr_psprintf(p, "%s\nmax_tokens=%" APR_INT64_T_FMT, text,
                            req->max_tokens);
    }

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

/* The JSON at text as a read view of the given type, or NULL. */
static llmgw_json_t *read_as(apr_pool_t *p, const char *text, apr_size_t len,
                             llmgw_json_type_t type)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *j = llmgw_json_read(p, text, len, &err, &msg);

    return j && llmgw_json_type(j, NULL) == type ? j : NULL;
}

/* Whether the member key of j is absent or null. */
static int absent(const llmgw_json_t *j, const char *key)
{
    llmgw_json_type_t t = llmgw_json_type(j, key, NULL);

    return t == LLMGW_JSON_MISSING || t == LLMGW_JSON_NULL;
}

/* Whether a choice says the generation failed: the error finish, which
 * backends and the gateway's own error tail end a broken stream with. */
static int failed_choice(const llmgw_json_t *choice)
{
    const char *fr = llmgw_json_gets(choice, "finish_reason", NULL);

    return fr && strcmp(fr, "error") == 0;
}

static void usage_of(const llmgw_json_t *response, llmgw_usage_t *u)
{
    if (llmgw_json_type(response, "usage", NULL) == LLMGW_JSON_OBJECT) {
        llmgw_usage_read(llmgw_json_getj(response, "usage", NULL),
                         "prompt_tokens", "completion_tokens", "total_tokens",
                         u);
    }
}

static int take(llmgw_record_t *rec, apr_size_t len)
{
    rec->size += len;
    if (rec->size > rec->max) {
        rec->failed = 1;
    }
    return !rec->failed;
}

static void push_piece(apr_pool_t *p, apr_array_header_t **arr, const char *s)
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

/* The chunk's text as the record keeps it: as it came, without "usage"
 * (replayed on request only, from the record's usage); compact where it
 * came over several lines, as an SSE event's data must be one line. */
static void keep_chunk(llmgw_record_t *rec, const llmgw_json_t *chunk,
                       const char *data, apr_size_t len)
{
    static const char *const usage[] = { "usage", NULL };
    static const char *const none[] = { NULL };

    if (memchr(data, '\n', len) || memchr(data, '\r', len)) {
        data = llmgw_json_write_canonical(rec->p, chunk, usage, &len);
    }
    else if (llmgw_json_type(chunk, "usage", NULL) != LLMGW_JSON_MISSING) {
        data = llmgw_json_edit(chunk, usage, none, 1, &len);
    }
    llmgw_pbuf_add(rec->p, &rec->chunks_made, rec->nchunks++ ? "," : "[", 1);
    llmgw_pbuf_add(rec->p, &rec->chunks_made, data, len);
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
    data = llmgw_json_trim(data, &len);
    chunk = llmgw_json_parse(rec->p, data, len, &err, &msg);
    if (!chunk || llmgw_json_type(chunk, NULL) != LLMGW_JSON_OBJECT
        || !absent(chunk, "error")) {
        rec->failed = 1; /* not a chunk, or an error event */
        return;
    }
    usage_of(chunk, &rec->usage);
    choices = llmgw_json_getj(chunk, "choices", NULL);
    n = choices ? llmgw_json_array_len(choices) : 0;
    if (n == 0) {
        return; /* the usage-only chunk: replayed only on request */
    }
    if (!rec->first) {
        rec->first = chunk; /* its getters read what the reader decoded */
    }
    for (i = 0; i < n; i++) {
        llmgw_json_t *ch = llmgw_json_array_get(choices, i);
        apr_int64_t idx = llmgw_json_getl(ch, (apr_int64_t)i, "index", NULL);
        const char *fr = llmgw_json_gets(ch, "finish_reason", NULL);
        choice_acc *c;

        if (idx < 0 || idx >= MAX_CHOICES || failed_choice(ch)) {
            rec->failed = 1;
            return;
        }
        c = &rec->choice[idx];
        c->seen = 1;
        if (rec->ep == LLMGW_EP_COMPLETIONS) {
            push_piece(rec->p, &c->content, llmgw_json_gets(ch, "text", NULL));
        }
        else {
            push_piece(rec->p, &c->content,
                       llmgw_json_gets(ch, "delta", "content", NULL));
            push_piece(
                rec->p, &c->reasoning,
                llmgw_json_gets(ch, "delta", "reasoning_content", NULL));
            push_piece(rec->p, &c->refusal,
                       llmgw_json_gets(ch, "delta", "refusal", NULL));
            if (llmgw_json_type(ch, "delta", "tool_calls", NULL)
                == LLMGW_JSON_ARRAY) {
                add_tool_deltas(
                    rec, c, llmgw_json_getj(ch, "delta", "tool_calls", NULL));
            }
        }
        if (fr) {
            c->finish_reason = fr;
        }
    }
    keep_chunk(rec, chunk, data, len);
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

    llmgw_json_sets(dst, (v = llmgw_json_gets(src, "id", NULL)) ? v : "", "id",
                    NULL);
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

    r = rec->response = llmgw_json_create_object(rec->p);
    copy_header(r, rec->first, chat ? "chat.completion" : "text_completion");
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
            rec->failed = 1; /* a stream cut short is not an answer */
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
            llmgw_json_sets(msg, joined(rec->p, c->content), "content", NULL);
            /* Required by OpenAI's schema, null unless the model refused. */
            if (c->refusal) {
                llmgw_json_sets(msg, joined(rec->p, c->refusal), "refusal",
                                NULL);
            }
            else {
                llmgw_json_setnull(msg, "refusal", NULL);
            }
            if (c->reasoning) {
                llmgw_json_sets(msg, joined(rec->p, c->reasoning),
                                "reasoning_content", NULL);
            }
            if (c->ntools) {
                llmgw_json_t *calls = llmgw_json_add_array(msg, "tool_calls");

                for (k = 0; k < c->ntools; k++) {
                    llmgw_json_t *t = llmgw_json_array_add_object(calls);

                    llmgw_json_sets(t, c->tools[k].id ? c->tools[k].id : "",
                                    "id", NULL);
                    llmgw_json_sets(t, "function", "type", NULL);
                    llmgw_json_sets(t,
                                    c->tools[k].name ? c->tools[k].name : "",
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
        llmgw_json_setl(r, rec->usage.completion, "usage", "completion_tokens",
                        NULL);
        llmgw_json_setl(r, rec->usage.total, "usage", "total_tokens", NULL);
    }
}

/* Whether the body j is an answer of the record's endpoint: no error, and
 * data (embeddings) or choices, each an object, none failed. */
static int is_answer(const llmgw_record_t *rec, const llmgw_json_t *j)
{
    llmgw_json_t *choices;
    apr_size_t i, n;

    if (!absent(j, "error")) {
        return 0;
    }
    if (rec->ep == LLMGW_EP_EMBEDDINGS) {
        return llmgw_json_type(j, "data", NULL) == LLMGW_JSON_ARRAY;
    }
    if (llmgw_json_type(j, "choices", NULL) != LLMGW_JSON_ARRAY) {
        return 0;
    }
    choices = llmgw_json_getj(j, "choices", NULL);
    n = llmgw_json_array_len(choices);
    for (i = 0; i < n; i++) {
        llmgw_json_t *c = llmgw_json_array_get(choices, i);

        if (llmgw_json_type(c, NULL) != LLMGW_JSON_OBJECT
            || failed_choice(c)) {
            return 0;
        }
    }
    return n > 0;
}

/* The body is kept as the bytes that came, read once here with the reader
 * a streamed hit reads it with (so it reads back), and only if it is the
 * endpoint's answer. The output filter drops a recording when mod_proxy
 * reports that the backend broke off. */
void llmgw_record_set_response(llmgw_record_t *rec, const char *body,
                               apr_size_t len)
{
    llmgw_record_set_read_response(rec, body, len, NULL);
}

void llmgw_record_set_read_response(llmgw_record_t *rec, const char *body,
                                    apr_size_t len, const llmgw_json_t *j)
{
    if (rec->failed || !take(rec, len)) {
        return;
    }
    body = llmgw_json_trim(body, &len);
    if (!j) {
        j = read_as(rec->p, body, len, LLMGW_JSON_OBJECT);
    }
    else if (llmgw_json_type(j, NULL) != LLMGW_JSON_OBJECT) {
        j = NULL;
    }
    if (!j || !is_answer(rec, j)) {
        rec->failed = 1;
        return;
    }
    rec->resp_text = body;
    rec->resp_len = len;
}

static const char *endpoint_name(llmgw_endpoint_t ep)
{
    return ep == LLMGW_EP_COMPLETIONS  ? "completions"
           : ep == LLMGW_EP_EMBEDDINGS ? "embeddings"
                                       : "chat";
}

/* A 64-bit check of a record against what a store may do to it (cut it,
 * flip bits, hand back another length); not against forgery: whoever can
 * write the store can write any answer. Each 8-byte word (little-endian
 * on every host, as nodes share memcached) goes through a bijective mix
 * into the state, and the state through another, so a change confined to
 * one word always shows; any other change shows but once in 2^64. */
static apr_uint64_t check64(apr_uint64_t h, const char *s, apr_size_t n)
{
    const apr_uint64_t k1 = APR_UINT64_C(0x9e3779b97f4a7c15);
    const apr_uint64_t k2 = APR_UINT64_C(0xd6e8feb86659fd93);
    const unsigned char *u = (const unsigned char *)s;

    h ^= (apr_uint64_t)n * k1;
    while (n) {
        apr_size_t i, take = n < 8 ? n : 8;
        apr_uint64_t w = 0;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (take == 8) {
            memcpy(&w, u, 8); /* one load where bytes are in order */
        }
        else
#endif
            for (i = 0; i < take; i++) {
                w |= (apr_uint64_t)u[i] << (8 * i);
            }
        w *= k1;
        w ^= w >> 32;
        h = (h ^ w) * k2;
        h ^= h >> 29;
        u += take;
        n -= take;
    }
    h *= k1;
    return h ^ (h >> 32);
}

/* The check of a record: its header up to the check, then the rest. */
static apr_uint64_t record_check(const char *head, apr_size_t hlen,
                                 const char *body, apr_size_t blen)
{
    return check64(check64(0, head, hlen), body, blen);
}

/* Stored as "LLMGW<v> <endpoint> <n> <check>\n" + the response (n bytes) +
 * "\n" + the chunks (a JSON array, or null): a plain hit sends the
 * response as it is, with no parse and no serialisation; the check
 * (16 hex digits, record_check) catches a value the store damaged. */
static const char *record_text(llmgw_record_t *rec, const char *resp,
                               apr_size_t rlen, const char *chunks,
                               apr_size_t clen, apr_size_t *len)
{
    const char *head =
        apr_psprintf(rec->p, RECORD_MAGIC "%s %" APR_SIZE_T_FMT " ",
                     endpoint_name(rec->ep), rlen);
    apr_size_t hlen = strlen(head);
    char *text, *body;

    *len = hlen + 17 + rlen + 1 + clen;
    text = apr_palloc(rec->p, *len + 1);
    body = text + hlen + 17;
    memcpy(text, head, hlen);
    memcpy(body, resp, rlen);
    body[rlen] = '\n';
    memcpy(body + rlen + 1, chunks, clen);
    text[*len] = '\0';
    apr_snprintf(text + hlen, 17, "%016" APR_UINT64_T_HEX_FMT,
                 record_check(head, hlen, body, rlen + 1 + clen));
    text[hlen + 16] = '\n';
    return text;
}

const char *llmgw_record_serialize(llmgw_record_t *rec, apr_size_t *len)
{
    const char *resp, *chunks = "null", *text;
    apr_size_t rlen, clen = 4;

    if (!rec->failed && !rec->resp_text && !rec->response && rec->first) {
        assemble(rec);
    }
    /* assemble() may have found the stream incomplete. */
    if (rec->failed || (!rec->resp_text && !rec->response)) {
        return NULL;
    }
    resp = llmgw_record_render_json(rec, &rlen);
    if (rec->nchunks) {
        /* Closed past its end: a record may be written more than once. */
        llmgw_pbuf_reserve(rec->p, &rec->chunks_made,
                           rec->chunks_made.len + 1);
        rec->chunks_made.b[rec->chunks_made.len] = ']';
        chunks = rec->chunks_made.b;
        clen = rec->chunks_made.len + 1;
    }
    text = record_text(rec, resp, rlen, chunks, clen, len);
    if (*len > rec->max) {
        return NULL;
    }
    /* Never store what cannot be read back: text we wrote from trees (a
     * chunk nested near the reader's limit is one level deeper in the
     * chunk array) is read as a streamed hit will read it. A plain body
     * was read when it came (llmgw_record_set_response). */
    if (!rec->resp_text && !llmgw_record_parse(rec->p, text, *len, 1)) {
        return NULL;
    }
    return text;
}

/* The stored JSON, read now (a stream replay needs the trees): an object,
 * and an array of chunk objects unless the chunks are null. Read views:
 * replayed chunks are written out as they were stored. */
static int load(llmgw_record_t *rec)
{
    apr_size_t i, n;

    if (!rec->response) {
        rec->response =
            read_as(rec->p, rec->resp_text, rec->resp_len, LLMGW_JSON_OBJECT);
        if (!rec->response) {
            return 0;
        }
        usage_of(rec->response, &rec->usage);
    }
    if (!rec->chunks
        && !(rec->chunks_len == 4
             && memcmp(rec->chunks_text, "null", 4) == 0)) {
        rec->chunks = read_as(rec->p, rec->chunks_text, rec->chunks_len,
                              LLMGW_JSON_ARRAY);
        if (!rec->chunks) {
            return 0;
        }
        n = llmgw_json_array_len(rec->chunks);
        for (i = 0; i < n; i++) {
            if (llmgw_json_type(llmgw_json_array_get(rec->chunks, i), NULL)
                != LLMGW_JSON_OBJECT) {
                rec->chunks = NULL;
                return 0;
            }
        }
    }
    return 1;
}

/* s past the decimal digits at s, their value in *v; NULL if there are
 * none, or more than max. */
static const char *digits(const char *s, const char *end, apr_uint64_t max,
                          apr_uint64_t *v)
{
    const char *start = s;

    for (*v = 0; s < end && *s >= '0' && *s <= '9'; s++) {
        apr_uint64_t d = (apr_uint64_t)(*s - '0');

        if (*v > (max - d) / 10) {
            return NULL;
        }
        *v = *v * 10 + d;
    }
    return s > start ? s : NULL;
}

/* s past the word w at s, or NULL. */
static const char *word(const char *s, const char *end, const char *w)
{
    apr_size_t n = strlen(w);

    return (apr_size_t)(end - s) >= n && memcmp(s, w, n) == 0 ? s + n : NULL;
}

/* The header "LLMGW<v> <endpoint> <n> <check>\n", read strictly: the
 * endpoint in *ep, n in *n, the check in *sum; the header's length, or 0
 * if text does not start with one. */
static apr_size_t read_head(const char *text, apr_size_t len,
                            llmgw_endpoint_t *ep, apr_uint64_t *n,
                            apr_uint64_t *sum, apr_size_t *summed)
{
    const char *s = text, *end = text + (len < MAX_HEAD ? len : MAX_HEAD);
    const char *t;
    int i;

    if (!(s = word(s, end, RECORD_MAGIC))) {
        return 0;
    }
    if ((t = word(s, end, "chat "))) {
        *ep = LLMGW_EP_CHAT;
    }
    else if ((t = word(s, end, "completions "))) {
        *ep = LLMGW_EP_COMPLETIONS;
    }
    else if ((t = word(s, end, "embeddings "))) {
        *ep = LLMGW_EP_EMBEDDINGS;
    }
    if (!t || !(s = digits(t, end, len, n)) || !(s = word(s, end, " "))) {
        return 0;
    }
    *summed = (apr_size_t)(s - text);
    for (*sum = 0, i = 0; i < 16; i++, s++) {
        int d = s >= end                 ? -1
                : *s >= '0' && *s <= '9' ? *s - '0'
                : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
                                         : -1;

        if (d < 0) {
            return 0;
        }
        *sum = *sum << 4 | (apr_uint64_t)d;
    }
    return (s = word(s, end, "\n")) ? (apr_size_t)(s - text) : 0;
}

llmgw_record_t *llmgw_record_parse(apr_pool_t *p, const char *text,
                                   apr_size_t len, int full)
{
    llmgw_endpoint_t ep = LLMGW_EP_NONE;
    apr_uint64_t n, sum;
    apr_size_t used, summed;
    llmgw_record_t *rec;

    /* The store need not NUL-terminate values: every read is bounded by
     * len, and the whole text must be what was stored. */
    if (!text || !(used = read_head(text, len, &ep, &n, &sum, &summed))
        || n > len - used || len - used - n < 1 || text[used + n] != '\n'
        || record_check(text, summed, text + used, len - used) != sum) {
        return NULL;
    }
    rec = apr_pcalloc(p, sizeof(*rec));
    rec->p = p;
    rec->ep = ep;
    rec->resp_text = text + used;
    rec->resp_len = (apr_size_t)n;
    rec->chunks_text = text + used + n + 1;
    rec->chunks_len = len - used - (apr_size_t)n - 1;
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

    copy_header(c, rec->response,
                rec->ep != LLMGW_EP_COMPLETIONS ? "chat.completion.chunk"
                                                : "text_completion");
    return c;
}

/* A chunk with one choice of index i, returned in *choice. */
static llmgw_json_t *new_choice_chunk(llmgw_record_t *rec, apr_pool_t *p,
                                      apr_size_t i, llmgw_json_t **choice)
{
    llmgw_json_t *c = new_chunk(rec, p);

    *choice = llmgw_json_array_add_object(llmgw_json_add_array(c, "choices"));
    llmgw_json_setl(*choice, (apr_int64_t)i, "index", NULL);
    return c;
}

static void emit(apr_array_header_t *out, apr_pool_t *p,
                 const llmgw_json_t *chunk)
{
    APR_ARRAY_PUSH(out, const char *) =
        apr_pstrcat(p, "data: ", llmgw_json_write(chunk, NULL), "\n\n", NULL);
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
            if (msg && (v = llmgw_json_gets(msg, "reasoning_content", NULL))) {
                llmgw_json_sets(delta, v, "reasoning_content", NULL);
            }
            if (msg
                && llmgw_json_type(msg, "tool_calls", NULL)
                       == LLMGW_JSON_ARRAY) {
                llmgw_json_t *calls = llmgw_json_getj(msg, "tool_calls", NULL);
                llmgw_json_t *dc = llmgw_json_add_array(delta, "tool_calls");
                apr_size_t k, nk = llmgw_json_array_len(calls);

                for (k = 0; k < nk; k++) {
                    llmgw_json_t *t = llmgw_json_array_add_object(dc);
                    llmgw_json_t *call = llmgw_json_array_get(calls, k);

                    llmgw_json_setl(t, (apr_int64_t)k, "index", NULL);
                    llmgw_json_setj(t, llmgw_json_getj(call, "id", NULL), "id",
                                    NULL);
                    llmgw_json_sets(t, "function", "type", NULL);
                    llmgw_json_setj(t, llmgw_json_getj(call, "function", NULL),
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
        llmgw_json_setl(c, rec->usage.completion, "usage", "completion_tokens",
                        NULL);
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
    return rec->chunks ? llmgw_json_array_len(rec->chunks) : rec->nchunks;
}
