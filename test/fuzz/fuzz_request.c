/* fuzz_request: a client's request body through what the gateway does
 * with it: reading and validation (OpenAI or Ollama API), the cache key,
 * and the body the backend gets (OpenAI or Ollama dialect).
 * Input: a selector byte, then the body. Selector bits: 0-2 the
 * endpoint (0 chat, 1 completions, 2 embeddings, 3-6 Ollama's chat,
 * generate, embed, embeddings, 7 an unknown Ollama path); 3 the backend
 * speaks Ollama; 4 the route renames the model; 5 cache policy "all". */
#include <apr_hash.h>

#include "fuzz.h"

#include "llmgw_cache.h"
#include "llmgw_dialect.h"
#include "llmgw_estimate.h"
#include "llmgw_limits.h"
#include "llmgw_ollama.h"

static const char *const upstream_skip[] = { "model", "stream_options", NULL };

/* What the gateway writes for a client or a backend reads strictly: any
 * parser reads it as the gateway meant it. */
static llmgw_json_t *must_parse(apr_pool_t *p, const char *text,
                                apr_size_t len, const char *what)
{
    llmgw_json_err_t err;
    const char *msg;
    llmgw_json_t *j = llmgw_json_read(p, text, len, &err, &msg);

    FUZZ_CHECK(j, "%s is not JSON (%s): %.*s", what, msg, (int)len, text);
    return j;
}

static void check_error(apr_pool_t *p, const llmgw_error_t *err, int ollama)
{
    const char *body;

    FUZZ_CHECK(err->status >= 400 && err->status < 600, "status %d",
               err->status);
    FUZZ_CHECK(err->message, "an error without a message");
    body = ollama ? llmgw_ollama_error_json(p, err->message)
                  : llmgw_error_json(p, err);
    must_parse(p, body, strlen(body), "the error body");
}

/* One parse of the body as the client's API reads it; 0 when accepted,
 * with *openai the OpenAI text the request became. */
static int parse(apr_pool_t *p, unsigned ep, const char *buf, size_t len,
                 llmgw_request_t *req, const char **openai, apr_size_t *olen,
                 llmgw_error_t *err)
{
    memset(err, 0, sizeof(*err));
    if (ep < 3) {
        *openai = buf;
        *olen = len;
        return llmgw_request_parse(p, (llmgw_endpoint_t)(LLMGW_EP_CHAT + ep),
                                   buf, len, req, err);
    }
    return llmgw_ollama_front_request(
        p,
        ep == 7 ? LLMGW_OLLAMA_EP_NONE
                : (llmgw_ollama_ep_t)(LLMGW_OLLAMA_EP_CHAT + ep - 3),
        buf, len, req, openai, olen, err);
}

/* The canonical text of an accepted body is read back as itself. */
static void check_canonical(apr_pool_t *p, const llmgw_request_t *req)
{
    llmgw_json_err_t err;
    const char *msg, *c1, *c2;
    apr_size_t n1, n2;
    llmgw_json_t *back;

    c1 = llmgw_json_write_canonical(p, req->body, NULL, &n1);
    back = llmgw_json_read(p, c1, n1, &err, &msg);
    FUZZ_CHECK(back, "canonical text refused (%s): %.*s", msg, (int)n1, c1);
    c2 = llmgw_json_write_canonical(p, back, NULL, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(c1, c2, n1) == 0,
               "canonical text not idempotent: %.*s -> %.*s", (int)n1, c1,
               (int)n2, c2);
    must_parse(p, c1, n1, "the canonical text");
}

static void check_key(const char *key)
{
    size_t i;

    FUZZ_CHECK(key && strlen(key) == 64, "cache key %s", key ? key : "NULL");
    for (i = 0; i < 64; i++) {
        FUZZ_CHECK((key[i] >= '0' && key[i] <= '9')
                       || (key[i] >= 'a' && key[i] <= 'f'),
                   "cache key %s", key);
    }
}

/* The backend is asked for exactly the model the gateway routed and
 * keyed: a model string the gateway reads shorter than the backend does
 * ("mock-small\u0000evil") would serve one model's answers as another's. */
static void check_model(apr_pool_t *p, const llmgw_json_t *body,
                        const char *model)
{
    apr_size_t n;
    const char *sent = llmgw_json_write_canonical(
        p, llmgw_json_getj(body, "model", NULL), NULL, &n);
    const char *want = llmgw_json_quote(p, model);

    FUZZ_CHECK(n == strlen(want) && !memcmp(sent, want, n),
               "the backend gets model %.*s, the gateway routes %s", (int)n,
               sent, want);
}

/* -- the members of a body as the backend reads them ------------------
 * A strict parser on the backend's side tells "messages\u0000" from
 * "messages"; the key must cover what it reads. So the top-level keys of
 * the client's text are counted here, decoded with their true length,
 * and compared with those of the canonical text the key hashes. */

static const char *skip_string(const char *s, const char *end)
{
    for (s++; s < end && *s != '"'; s++) {
        if (*s == '\\') {
            s++;
        }
    }
    return s + 1;
}

static const char *skip_value(const char *s, const char *end)
{
    int depth = 0;

    do {
        if (*s == '"') {
            s = skip_string(s, end);
            continue;
        }
        depth += (*s == '{' || *s == '[') - (*s == '}' || *s == ']');
        s++;
    } while (s < end && (depth > 0 || (*s != ',' && *s != '}')));
    return s;
}

static unsigned hexval(const char *s)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        char c = s[i];

        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* The key at s (its quote), decoded into p; *len its bytes. NULL for a
 * key with a surrogate escape, whose reading is the parser's choice. */
static const char *decode_key(apr_pool_t *p, const char *s, const char *end,
                              apr_size_t *len)
{
    char *out = apr_palloc(p, (apr_size_t)(end - s) * 3 + 1), *o = out;

    for (s++; s < end && *s != '"'; s++) {
        unsigned cp;

        if (*s != '\\') {
            *o++ = *s;
            continue;
        }
        s++;
        if (*s != 'u') {
            *o++ = *s == 'b'   ? '\b'
                   : *s == 'f' ? '\f'
                   : *s == 'n' ? '\n'
                   : *s == 'r' ? '\r'
                   : *s == 't' ? '\t'
                               : *s;
            continue;
        }
        cp = hexval(s + 1);
        s += 4;
        if (cp >= 0xd800 && cp < 0xe000) {
            return NULL;
        }
        if (cp < 0x80) {
            *o++ = (char)cp;
        }
        else if (cp < 0x800) {
            *o++ = (char)(0xc0 | cp >> 6);
            *o++ = (char)(0x80 | (cp & 0x3f));
        }
        else {
            *o++ = (char)(0xe0 | cp >> 12);
            *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
            *o++ = (char)(0x80 | (cp & 0x3f));
        }
    }
    *len = (apr_size_t)(o - out);
    return out;
}

/* Distinct top-level keys of the object text (valid JSON); -1 when a key
 * has a surrogate escape. */
static int count_keys(apr_pool_t *p, const char *s, apr_size_t n)
{
    const char *end = s + n;
    apr_hash_t *keys = apr_hash_make(p);

    s = llmgw_json_skip_ws(s, end) + 1;
    for (;;) {
        const char *k;
        apr_size_t klen;

        s = llmgw_json_skip_ws(s, end);
        if (s >= end || *s != '"') {
            break;
        }
        if (!(k = decode_key(p, s, end, &klen))) {
            return -1;
        }
        apr_hash_set(keys, k, (apr_ssize_t)klen, "");
        s = llmgw_json_skip_ws(skip_string(s, end), end) + 1;
        s = skip_value(llmgw_json_skip_ws(s, end), end);
        if (s < end && *s == ',') {
            s++;
        }
    }
    return (int)apr_hash_count(keys);
}

static void check_keys(apr_pool_t *p, const char *buf, apr_size_t len,
                       const llmgw_request_t *req)
{
    apr_size_t n;
    const char *canon = llmgw_json_write_canonical(p, req->body, NULL, &n);
    int sent = count_keys(p, buf, len), hashed = count_keys(p, canon, n);

    FUZZ_CHECK(sent < 0 || hashed < 0 || sent == hashed,
               "the backend reads %d members, the key covers %d: %.*s", sent,
               hashed, (int)n, canon);
}

/* The body the backend is sent (what: its name in a finding) read back:
 * an object, of the upstream model. */
static llmgw_json_t *upstream_object(apr_pool_t *p, const char *body,
                                     apr_size_t len, const char *what,
                                     const char *upstream)
{
    llmgw_json_t *j = must_parse(p, body, len, what);
    const char *model;

    FUZZ_CHECK(llmgw_json_type(j, NULL) == LLMGW_JSON_OBJECT,
               "%s is no object", what);
    model = llmgw_json_gets(j, "model", NULL);
    FUZZ_CHECK(model && !strcmp(model, upstream), "upstream model %s",
               model ? model : "NULL");
    check_model(p, j, upstream);
    return j;
}

/* The Ollama dialect's body for the request. */
static void check_ollama_upstream(apr_pool_t *p, const llmgw_request_t *req,
                                  const char *upstream)
{
    const char *path, *body;
    apr_size_t len;
    llmgw_error_t err;

    memset(&err, 0, sizeof(err));
    if (llmgw_ollama_request(p, req, upstream, &path, &body, &len, &err)) {
        check_error(p, &err, 0);
        return;
    }
    FUZZ_CHECK(path
                   && (!strcmp(path, "/api/chat")
                       || !strcmp(path, "/api/generate")
                       || !strcmp(path, "/api/embed")),
               "path %s", path ? path : "NULL");
    upstream_object(p, body, len, "the Ollama body", upstream);
}

/* The OpenAI dialect's body: the client's members as they were, the
 * model renamed, include_usage asked for on a stream. */
static void check_openai_upstream(apr_pool_t *p, llmgw_request_t *req,
                                  const char *upstream, const char *openai,
                                  apr_size_t olen)
{
    const char *before, *after, *body;
    apr_size_t nb, na, len;
    int strip;
    llmgw_json_t *j;

    before = llmgw_json_write_canonical(p, req->body, upstream_skip, &nb);
    body =
        llmgw_request_upstream_body(req, upstream, openai, olen, &len, &strip);
    j = upstream_object(p, body, len, "the upstream body", upstream);
    FUZZ_CHECK(strip == (req->stream && !req->wants_usage), "strip_usage");
    if (req->stream) {
        FUZZ_CHECK(
            llmgw_json_getb(j, 0, "stream_options", "include_usage", NULL),
            "a stream without include_usage");
    }
    after = llmgw_json_write_canonical(p, j, upstream_skip, &na);
    FUZZ_CHECK(na == nb && memcmp(before, after, nb) == 0,
               "the upstream body lost or changed members: %.*s -> %.*s",
               (int)nb, before, (int)na, after);
}

/* The reservation's bounds (llmgw_estimate) of any accepted request: a
 * 400 naming the member, or numbers the limits' arithmetic can take. */
static void check_estimate(const llmgw_request_t *req, int capped)
{
    llmgw_estimate_conf_t c;
    llmgw_estimate_t e;
    llmgw_error_t err;

    llmgw_estimate_defaults(&c);
    if (capped) {
        c.default_max = 256;
        c.max_cap = 1024;
    }
    memset(&err, 0, sizeof(err));
    if (llmgw_estimate(req, &c, capped ? 5000 : APR_INT64_MAX, &e, &err)) {
        FUZZ_CHECK(err.status == 400 && err.param && err.message,
                   "estimate refused with %d", err.status);
        return;
    }
    FUZZ_CHECK(e.prompt >= 0 && e.prompt <= LLMGW_LIMITS_TOKENS_MAX,
               "prompt bound %lld", (long long)e.prompt);
    FUZZ_CHECK(e.choices >= (req->ep != LLMGW_EP_EMBEDDINGS), "%lld choices",
               (long long)e.choices);
    FUZZ_CHECK(e.max_tokens >= 0 && e.max_out >= 0
                   && (!c.max_cap || e.max_tokens <= c.max_cap),
               "max_tokens %lld, out %lld", (long long)e.max_tokens,
               (long long)e.max_out);
}

/* An Ollama backend's body for an Ollama client (native): the client's
 * members exactly, the model renamed, whatever the request (load
 * requests and what an OpenAI backend refuses too). */
static void check_native(apr_pool_t *p, unsigned ep, const char *buf,
                         apr_size_t len, const char *upstream)
{
    static const char *const skip[] = { "model", NULL };
    llmgw_ollama_ep_t oep = (llmgw_ollama_ep_t)(LLMGW_OLLAMA_EP_CHAT + ep - 3);
    llmgw_ollama_extra_t x;
    llmgw_request_t req;
    llmgw_error_t err;
    const char *openai, *body, *before, *after;
    apr_size_t olen, n, nb, na;
    llmgw_json_t *j;

    memset(&err, 0, sizeof(err));
    if (llmgw_ollama_front_parse(p, oep, buf, len, &req, &openai, &olen, &x,
                                 &err)) {
        check_error(p, &err, 1);
        return;
    }
    FUZZ_CHECK(!x.unload || x.load, "an unload that is no load request");
    FUZZ_CHECK(!x.refusal.status || x.refusal.status == 400, "refusal %d",
               x.refusal.status);
    body = llmgw_ollama_native_body(p, x.view, upstream, &n);
    j = must_parse(p, body, n, "the native body");
    check_model(p, j, upstream);
    before = llmgw_json_write_canonical(p, x.view, skip, &nb);
    after = llmgw_json_write_canonical(p, j, skip, &na);
    FUZZ_CHECK(na == nb && memcmp(before, after, nb) == 0,
               "the native body changed members: %.*s -> %.*s", (int)nb,
               before, (int)na, after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool(), *p2;
    fuzz_in in = { data, size };
    unsigned sel = fuzz_byte(&in), ep = sel & 7;
    int ollama_backend = (sel & 8) != 0, rename = (sel & 16) != 0;
    llmgw_cache_policy_t policy =
        (sel & 32) ? LLMGW_CACHE_ALL : LLMGW_CACHE_DETERMINISTIC;
    const char *buf = (const char *)in.d, *openai, *o2, *key, *upstream;
    apr_size_t olen, o2len;
    llmgw_request_t req, req2;
    llmgw_error_t err, err2;

    if (ep >= 3 && ep < 7) {
        check_native(p, ep, buf, in.n, rename ? "fuzz-upstream" : "m");
    }
    if (parse(p, ep, buf, in.n, &req, &openai, &olen, &err)) {
        check_error(p, &err, ep >= 3);
        apr_pool_destroy(p);
        return 0;
    }
    FUZZ_CHECK(req.model && *req.model, "accepted without a model");
    FUZZ_CHECK(llmgw_json_type(req.body, NULL) == LLMGW_JSON_OBJECT,
               "accepted a body that is no object");
    if (ep >= 3) {
        must_parse(p, openai, olen, "the OpenAI text of an Ollama request");
    }
    check_canonical(p, &req);
    if (ep < 3) {
        /* The key hashes the strict reading; the lenient one (answers,
         * records) reads the same bytes alike. */
        llmgw_json_err_t jerr;
        const char *msg, *c1, *c2;
        apr_size_t n1, n2;
        llmgw_json_t *j = llmgw_json_parse(p, buf, in.n, &jerr, &msg);

        FUZZ_CHECK(j, "taken strictly, refused leniently: %s", msg);
        c1 = llmgw_json_write_canonical(p, req.body, NULL, &n1);
        c2 = llmgw_json_write_canonical(p, j, NULL, &n2);
        FUZZ_CHECK(n1 == n2 && !memcmp(c1, c2, n1),
                   "the parsers disagree: read %.*s, parse %.*s", (int)n1, c1,
                   (int)n2, c2);
        check_keys(p, buf, in.n, &req);
    }

    upstream = rename ? "fuzz-upstream" : req.model;
    llmgw_cache_eligible(&req, policy);
    key = llmgw_cache_key(p, &req, upstream, "balancer://be",
                          ollama_backend ? "ollama" : "openai");
    check_key(key);
    /* The same bytes give the same key, whatever came before. */
    apr_pool_create(&p2, p);
    FUZZ_CHECK(parse(p2, ep, buf, in.n, &req2, &o2, &o2len, &err2) == 0,
               "accepted once, refused the second time");
    FUZZ_CHECK(
        !strcmp(key, llmgw_cache_key(p2, &req2, upstream, "balancer://be",
                                     ollama_backend ? "ollama" : "openai")),
        "two keys for one request");
    apr_pool_destroy(p2);

    check_estimate(&req, rename);
    if (ollama_backend) {
        check_ollama_upstream(p, &req, upstream);
    }
    else {
        check_openai_upstream(p, &req, upstream, openai, olen);
    }
    apr_pool_destroy(p);
    return 0;
}
