/* llmgw_form: the console's POST bodies are small and made by its own
 * forms, so anything unusual in one is refused whole rather than read
 * leniently: a body refused changes nothing. */
#include <string.h>

#include <apr_strings.h>

#include "llmgw_form.h"
#include "llmgw_json.h"
#include "llmgw_sha256.h"

/* route ... probe: the run-time changes' (llmgw_manage_from_form). */
const char *const llmgw_action_fields[] = {
    "do",    "nonce", "b",       "w",        "kind",    "key",   "model",
    "route", "name",  "dialect", "lbfactor", "timeout", "probe", NULL
};

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* s[0..n) decoded into out (at least n + 1 bytes); its length, or -1 for
 * a bad escape or a NUL. */
static long decode(const char *s, apr_size_t n, char *out)
{
    apr_size_t i;
    long o = 0;

    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];

        if (c == '+') {
            c = ' ';
        }
        else if (c == '%') {
            int hi, lo;

            if (i + 2 >= n || (hi = hexval(s[i + 1])) < 0
                || (lo = hexval(s[i + 2])) < 0) {
                return -1;
            }
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0) {
            return -1;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return o;
}

static int utf8_ok(const unsigned char *s, apr_size_t len)
{
    const unsigned char *end = s + len;
    apr_size_t n;

    while (s < end) {
        if ((n = llmgw_utf8_len(s, end)) == 0) {
            return 0;
        }
        s += n;
    }
    return 1;
}

static int allowed_name(const char *name, const char *const *allowed)
{
    for (; *allowed; allowed++) {
        if (strcmp(name, *allowed) == 0) {
            return 1;
        }
    }
    return 0;
}

/* One name=value pair into f. */
static const char *field(apr_pool_t *p, const char *s, apr_size_t n,
                         const char *const *allowed, llmgw_form_t *f)
{
    const char *eq = memchr(s, '=', n);
    apr_size_t nlen = eq ? (apr_size_t)(eq - s) : n;
    apr_size_t vlen = eq ? n - nlen - 1 : 0;
    char *name, *value;

    if (nlen > 32 || vlen > 3 * LLMGW_FORM_VALUE_MAX) {
        return "a field is too long";
    }
    name = apr_palloc(p, nlen + 1);
    value = apr_palloc(p, vlen + 1);
    if (decode(s, nlen, name) < 0
        || decode(eq ? eq + 1 : "", vlen, value) < 0) {
        return "a field has a bad escape or a NUL";
    }
    if (!allowed_name(name, allowed)) {
        return "a field is not one of the console's";
    }
    if (llmgw_form_get(f, name)) {
        return "a field is given twice";
    }
    if (strlen(value) > LLMGW_FORM_VALUE_MAX
        || !utf8_ok((void *)value, strlen(value))) {
        return "a value is too long or not UTF-8";
    }
    if (f->n == LLMGW_FORM_FIELDS) {
        return "too many fields";
    }
    f->name[f->n] = name;
    f->value[f->n++] = value;
    return NULL;
}

const char *llmgw_form_parse(apr_pool_t *p, const char *body, apr_size_t len,
                             const char *const *allowed, llmgw_form_t *f)
{
    llmgw_form_t got;
    const char *end = body + len, *why;

    memset(&got, 0, sizeof(got));
    memset(f, 0, sizeof(*f));
    if (len > LLMGW_FORM_BODY_MAX) {
        return "the body is too long";
    }
    while (body < end) {
        const char *amp = memchr(body, '&', (apr_size_t)(end - body));
        apr_size_t n =
            amp ? (apr_size_t)(amp - body) : (apr_size_t)(end - body);

        if (n && (why = field(p, body, n, allowed, &got)) != NULL) {
            return why;
        }
        body += n + 1;
    }
    *f = got;
    return NULL;
}

const char *llmgw_form_get(const llmgw_form_t *f, const char *name)
{
    int i;

    for (i = 0; i < f->n; i++) {
        if (strcmp(f->name[i], name) == 0) {
            return f->value[i];
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * Actions
 */

static const char *const action_names[] = { "",       "drain", "disable",
                                            "enable", "reset", "flush" };

const char *llmgw_action_name(llmgw_action_kind_t k)
{
    return (unsigned)k <= LLMGW_ACT_FLUSH ? action_names[k] : "";
}

static const char *member_of(const llmgw_form_t *f, llmgw_action_t *a)
{
    a->balancer = llmgw_form_get(f, "b");
    a->member = llmgw_form_get(f, "w");
    if (!a->balancer || !a->member || !*a->member
        || strncmp(a->balancer, "balancer://", 11) != 0) {
        return "a member action needs b (balancer://NAME) and w (a member)";
    }
    return NULL;
}

const char *llmgw_form_action(apr_pool_t *p, const llmgw_form_t *f,
                              llmgw_action_t *a)
{
    const char *what = llmgw_form_get(f, "do"), *kind, *key;
    int i;

    memset(a, 0, sizeof(*a));
    for (i = LLMGW_ACT_DRAIN; what && i <= LLMGW_ACT_FLUSH; i++) {
        if (strcmp(what, action_names[i]) == 0) {
            a->kind = (llmgw_action_kind_t)i;
        }
    }
    switch (a->kind) {
    case LLMGW_ACT_DRAIN:
    case LLMGW_ACT_DISABLE:
    case LLMGW_ACT_ENABLE: return member_of(f, a);
    case LLMGW_ACT_RESET:
        /* kind and key ("key", "team-a"), or key alone the table's name
         * ("key:team-a", or "key#" and a digest for an odd name). */
        kind = llmgw_form_get(f, "kind");
        key = llmgw_form_get(f, "key");
        if (!key || !*key || (kind && (!*kind || strchr(kind, ':')))
            || (!kind && !strpbrk(key, ":#"))) {
            return "reset needs key (and kind)";
        }
        a->subject = kind ? apr_pstrcat(p, kind, ":", key, NULL) : key;
        return NULL;
    case LLMGW_ACT_FLUSH:
        a->model = llmgw_form_get(f, "model");
        if (a->model && !*a->model) {
            return "flush takes a model's name, or none for all";
        }
        return NULL;
    default: return "no such action";
    }
}

/* ---------------------------------------------------------------------
 * The nonce
 */

/* SHA-256 of the block k with each byte XOR x, then of msg (n bytes):
 * one of HMAC's two passes. */
static void padded_hash(const unsigned char k[64], unsigned char x,
                        const void *msg, apr_size_t n,
                        unsigned char out[LLMGW_SHA256_LEN])
{
    unsigned char pad[64];
    llmgw_sha256_t c;
    int i;

    for (i = 0; i < 64; i++) {
        pad[i] = k[i] ^ x;
    }
    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, pad, sizeof(pad));
    llmgw_sha256_update(&c, msg, n);
    llmgw_sha256_final(&c, out);
}

static void hmac(const unsigned char *key, apr_size_t klen, const char *msg,
                 unsigned char out[LLMGW_SHA256_LEN])
{
    unsigned char k[64], inner[LLMGW_SHA256_LEN];
    llmgw_sha256_t c;

    memset(k, 0, sizeof(k));
    if (klen > sizeof(k)) {
        llmgw_sha256_init(&c);
        llmgw_sha256_update(&c, key, klen);
        llmgw_sha256_final(&c, k);
    }
    else {
        memcpy(k, key, klen);
    }
    padded_hash(k, 0x36, msg, strlen(msg), inner);
    padded_hash(k, 0x5c, inner, sizeof(inner), out);
}

void llmgw_form_nonce(const unsigned char *secret, apr_size_t secret_len,
                      const char *session, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[LLMGW_SHA256_LEN];
    int i;

    hmac(secret, secret_len, session, mac);
    for (i = 0; i < LLMGW_SHA256_LEN; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[LLMGW_NONCE_LEN] = '\0';
}

int llmgw_form_nonce_ok(const unsigned char *secret, apr_size_t secret_len,
                        const char *session, const char *given)
{
    char want[LLMGW_NONCE_LEN + 1];
    unsigned diff = 0;
    int i;

    if (!given || !session || strlen(given) != LLMGW_NONCE_LEN) {
        return 0;
    }
    llmgw_form_nonce(secret, secret_len, session, want);
    for (i = 0; i < LLMGW_NONCE_LEN; i++) {
        diff |= (unsigned)(want[i] ^ given[i]);
    }
    return diff == 0;
}

int llmgw_form_session_ok(const char *s)
{
    int i;

    for (i = 0; s && i < 32; i++) {
        if (hexval(s[i]) < 0 || (s[i] >= 'A' && s[i] <= 'F')) {
            return 0;
        }
    }
    return s && s[32] == '\0';
}
