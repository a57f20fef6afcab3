/* llmgw_json: the one place that talks to json-c or builds a JSON tree.
 * Handles share the root's tree; a json-c root is released by a cleanup
 * on the pool it was made in, a read view lives in its pool. */
#include <limits.h>
#include <locale.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>

#include <apr_strings.h>
#include <json.h>

#include "llmgw_json.h"

/* A handle is json-c's (o) or a read-only view from llmgw_json_read (v),
 * never both. */
typedef struct rval rval_t;

struct llmgw_json {
    apr_pool_t *p;
    json_object *o;
    const rval_t *v;
};

static apr_status_t json_cleanup(void *data)
{
    json_object_put((json_object *)data);
    return APR_SUCCESS;
}

static llmgw_json_t *wrap(apr_pool_t *p, json_object *o, int own)
{
    llmgw_json_t *j = apr_palloc(p, sizeof(*j));

    j->p = p;
    j->o = o;
    j->v = NULL;
    if (own) {
        apr_pool_cleanup_register(p, o, json_cleanup, apr_pool_cleanup_null);
    }
    return j;
}

/* json-c parses under a copy of the thread's locale with LC_NUMERIC "C":
 * from the C locale object that copy is free, from the global locale it
 * takes glibc's locale lock, which every thread of a busy child would
 * queue on. So the parse runs in the C locale object. */
static locale_t c_locale;

/* One tokener per thread, reset between texts: making one costs a
 * depth-sized allocation, which in a busy child also makes malloc
 * consolidate its free lists on every request. */
static pthread_key_t tok_key;
static pthread_once_t tok_once = PTHREAD_ONCE_INIT;
static int tok_key_ok;

static void tok_free(void *tok)
{
    json_tokener_free(tok);
}

static void tok_key_create(void)
{
    tok_key_ok = pthread_key_create(&tok_key, tok_free) == 0;
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static json_tokener *tokener(void)
{
    json_tokener *tok;

    pthread_once(&tok_once, tok_key_create);
    if (!tok_key_ok) {
        return NULL;
    }
    tok = pthread_getspecific(tok_key);
    if (!tok) {
        tok = json_tokener_new_ex(LLMGW_JSON_MAX_DEPTH);
        if (tok && pthread_setspecific(tok_key, tok) != 0) {
            json_tokener_free(tok);
            tok = NULL;
        }
    }
    else {
        json_tokener_reset(tok);
    }
    return tok;
}

static json_object *parse(const char *buf, apr_size_t len, int validate,
                          apr_size_t *used, llmgw_json_err_t *err)
{
    json_tokener *tok = tokener();
    json_object *o;
    enum json_tokener_error jerr;

    if (!tok) {
        *err = LLMGW_JSON_ERR_SYNTAX;
        return NULL;
    }
    json_tokener_set_flags(tok, validate ? JSON_TOKENER_VALIDATE_UTF8 : 0);
    if (c_locale) {
        locale_t old = uselocale(c_locale);

        o = json_tokener_parse_ex(tok, buf, (int)len);
        uselocale(old);
    }
    else {
        o = json_tokener_parse_ex(tok, buf, (int)len);
    }
    jerr = json_tokener_get_error(tok);
    *used = json_tokener_get_parse_end(tok);
    switch (jerr) {
    case json_tokener_success:
        *err = LLMGW_JSON_ERR_NONE;
        return o;
    case json_tokener_error_depth:
        *err = LLMGW_JSON_ERR_DEPTH;
        break;
    case json_tokener_error_parse_utf8_string:
        *err = LLMGW_JSON_ERR_UTF8;
        break;
    default:
        *err = LLMGW_JSON_ERR_SYNTAX;
        break;
    }
    json_object_put(o);
    return NULL;
}

/* The message for a failed parse; at_end: the text ended first. */
static const char *err_text(llmgw_json_err_t err, int at_end)
{
    switch (err) {
    case LLMGW_JSON_ERR_DEPTH:
        return "JSON nested too deeply";
    case LLMGW_JSON_ERR_UTF8:
        return "JSON text is not valid UTF-8";
    case LLMGW_JSON_ERR_TRAILING:
        return "unexpected data after the JSON value";
    default:
        return at_end ? "JSON text ends early" : "JSON syntax error";
    }
}

llmgw_json_t *llmgw_json_parse(apr_pool_t *p, const char *buf,
                               apr_size_t len, llmgw_json_err_t *err,
                               const char **msg)
{
    apr_size_t used = 0, i;
    json_object *o;

    if (len > INT_MAX) {
        *err = LLMGW_JSON_ERR_SYNTAX;
        *msg = "JSON text too large";
        return NULL;
    }
    o = parse(buf, len, 1, &used, err);
    if (o) {
        /* Only whitespace may follow the one value. */
        for (i = used; i < len; i++) {
            if (!LLMGW_JSON_IS_WS(buf[i])) {
                json_object_put(o);
                *err = LLMGW_JSON_ERR_TRAILING;
                *msg = err_text(*err, 0);
                return NULL;
            }
        }
        *msg = NULL;
        return wrap(p, o, 1);
    }
    *msg = err_text(*err, used >= len);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Reading without json-c. llmgw_json_read builds its tree in the pool:
 * no malloc and no free per value, which on a busy child is most of what
 * a json-c parse costs. Strict JSON (RFC 8259; raw control characters in
 * strings are let through, as json-c does), UTF-8 checked, nesting
 * limited, duplicate keys resolved as json-c does (the last one counts).
 */

typedef struct {
    const char *key;            /* decoded, NUL-terminated */
    const rval_t *val;
} rmember_t;

struct rval {
    llmgw_json_type_t type;
    const char *text;           /* the value's JSON text */
    apr_size_t len;
    apr_size_t n;               /* members, elements, or string bytes */
    union {
        const rmember_t *m;
        const rval_t *const *a;
        const char *s;          /* decoded, NUL-terminated */
        apr_int64_t i;
        double d;
        int b;
    } u;
};

typedef struct {
    apr_pool_t *p;
    const char *s, *end;
    llmgw_json_err_t err;
} reader_t;

/* NULL, with the first error kept. */
static void *rd_fail(reader_t *rd, llmgw_json_err_t err)
{
    if (!rd->err) {
        rd->err = err;
    }
    return NULL;
}

/* The length of the well-formed UTF-8 sequence at s (its lead byte is
 * not ASCII), or 0. */
static apr_size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    apr_size_t n, i;

    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    }
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;       /* no overlong forms */
        hi = c == 0xED ? 0x9F : 0xBF;       /* no surrogates */
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;       /* up to U+10FFFF */
    }
    else {
        return 0;
    }
    if ((apr_size_t)(end - s) < n || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (i = 2; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return n;
}

static int hex4(const char *s, unsigned int *cp)
{
    unsigned int v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        char c = s[i];

        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned int)(c - '0');
        }
        else if (c >= 'a' && c <= 'f') {
            v |= (unsigned int)(c - 'a' + 10);
        }
        else if (c >= 'A' && c <= 'F') {
            v |= (unsigned int)(c - 'A' + 10);
        }
        else {
            return 0;
        }
    }
    *cp = v;
    return 1;
}

static char *put_utf8(char *o, unsigned int cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    }
    else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* The string at rd->s (its opening quote), decoded into the pool. */
static const char *rd_string(reader_t *rd, apr_size_t *n)
{
    const char *s = rd->s + 1, *start = s, *end = rd->end;
    unsigned int cp, lo;
    char *out, *o;
    int escaped = 0;

    /* The extent first, checking escapes and UTF-8. */
    while (s < end && *s != '"') {
        if (*s == '\\') {
            escaped = 1;
            if (end - s >= 6 && s[1] == 'u' && hex4(s + 2, &cp)) {
                s += 6;
            }
            else if (end - s >= 2 && s[1] && strchr("\"\\/bfnrt", s[1])) {
                s += 2;
            }
            else {
                rd->s = s;
                return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
            }
        }
        else if ((unsigned char)*s < 0x80) {
            s++;
        }
        else {
            apr_size_t k = utf8_len((const unsigned char *)s,
                                    (const unsigned char *)end);

            if (!k) {
                rd->s = s;
                return rd_fail(rd, LLMGW_JSON_ERR_UTF8);
            }
            s += k;
        }
    }
    if (s >= end) {
        rd->s = end;
        return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
    }
    rd->s = s + 1;
    if (!escaped) {
        *n = (apr_size_t)(s - start);
        return apr_pstrmemdup(rd->p, start, *n);
    }
    /* Decoded, it is never longer than it was written. */
    o = out = apr_palloc(rd->p, (apr_size_t)(s - start) + 1);
    for (end = s, s = start; s < end; s++) {
        if (*s != '\\') {
            *o++ = *s;
            continue;
        }
        switch (*++s) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            hex4(s + 1, &cp);
            s += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && end - s >= 7 && s[1] == '\\'
                && s[2] == 'u' && hex4(s + 3, &lo) && lo >= 0xDC00
                && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
            }
            else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;    /* a lone surrogate */
            }
            o = put_utf8(o, cp);
            break;
        default:                /* " \ / */
            *o++ = *s;
            break;
        }
    }
    *o = '\0';
    *n = (apr_size_t)(o - out);
    return out;
}

static int is_digit(const reader_t *rd, const char *s)
{
    return s < rd->end && *s >= '0' && *s <= '9';
}

static const rval_t *rd_number(reader_t *rd, rval_t *v)
{
    const char *s = rd->s;
    char buf[64], *num = buf;
    apr_size_t n;
    int integral = 1;

    if (s < rd->end && *s == '-') {
        s++;
    }
    if (!is_digit(rd, s)) {
        rd->s = s;
        return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
    }
    if (*s == '0') {
        s++;                    /* no leading zeros */
    }
    else {
        while (is_digit(rd, s)) {
            s++;
        }
    }
    if (s < rd->end && *s == '.') {
        integral = 0;
        if (!is_digit(rd, ++s)) {
            rd->s = s;
            return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
        }
        while (is_digit(rd, s)) {
            s++;
        }
    }
    if (s < rd->end && (*s == 'e' || *s == 'E')) {
        integral = 0;
        s++;
        if (s < rd->end && (*s == '+' || *s == '-')) {
            s++;
        }
        if (!is_digit(rd, s)) {
            rd->s = s;
            return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
        }
        while (is_digit(rd, s)) {
            s++;
        }
    }
    n = (apr_size_t)(s - rd->s);
    if (n >= sizeof(buf)) {
        num = apr_palloc(rd->p, n + 1);
    }
    memcpy(num, rd->s, n);
    num[n] = '\0';
    rd->s = s;
    if (integral) {
        /* Beyond 64 bits clamped, as json-c does. */
        v->u.i = strtoll(num, NULL, 10);
        v->type = LLMGW_JSON_INT;
        return v;
    }
    v->type = LLMGW_JSON_DOUBLE;
    v->u.d = c_locale ? strtod_l(num, NULL, c_locale) : strtod(num, NULL);
    return v;
}

static const rval_t *rd_value(reader_t *rd, int depth);

static const char *rd_ws(reader_t *rd)
{
    return rd->s = llmgw_json_skip_ws(rd->s, rd->end);
}

static int rd_at(reader_t *rd, char c)
{
    return rd_ws(rd) < rd->end && *rd->s == c;
}

/* Past a container's opening character: 1 if an element follows, 0 if
 * it closes at once (then past the close). */
static int rd_open(reader_t *rd, char close)
{
    rd->s++;
    if (rd_at(rd, close)) {
        rd->s++;
        return 0;
    }
    return 1;
}

/* After an element: 1 if another follows (past the ','), 0 at the close
 * (past it), -1 (a syntax error) at anything else. */
static int rd_more(reader_t *rd, char close)
{
    if (rd_at(rd, ',') || rd_at(rd, close)) {
        return *rd->s++ == ',';
    }
    rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
    return -1;
}

static const rval_t *rd_object(reader_t *rd, rval_t *v, int depth)
{
    apr_array_header_t *m = apr_array_make(rd->p, 8, sizeof(rmember_t));
    rmember_t *e;
    apr_size_t klen;
    int more = rd_open(rd, '}');

    while (more > 0) {
        if (!rd_at(rd, '"')) {
            return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
        }
        e = apr_array_push(m);
        if (!(e->key = rd_string(rd, &klen))) {
            return NULL;
        }
        if (!rd_at(rd, ':')) {
            return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
        }
        rd->s++;
        if (!(e->val = rd_value(rd, depth + 1))) {
            return NULL;
        }
        more = rd_more(rd, '}');
    }
    if (more < 0) {
        return NULL;
    }
    v->type = LLMGW_JSON_OBJECT;
    v->u.m = (const rmember_t *)m->elts;
    v->n = (apr_size_t)m->nelts;
    return v;
}

static const rval_t *rd_array(reader_t *rd, rval_t *v, int depth)
{
    apr_array_header_t *a = apr_array_make(rd->p, 8, sizeof(rval_t *));
    const rval_t *e;
    int more = rd_open(rd, ']');

    while (more > 0) {
        if (!(e = rd_value(rd, depth + 1))) {
            return NULL;
        }
        *(const rval_t **)apr_array_push(a) = e;
        more = rd_more(rd, ']');
    }
    if (more < 0) {
        return NULL;
    }
    v->type = LLMGW_JSON_ARRAY;
    v->u.a = (const rval_t *const *)a->elts;
    v->n = (apr_size_t)a->nelts;
    return v;
}

static int rd_word(reader_t *rd, const char *w, apr_size_t n)
{
    if ((apr_size_t)(rd->end - rd->s) < n || memcmp(rd->s, w, n) != 0) {
        return 0;
    }
    rd->s += n;
    return 1;
}

static const rval_t *rd_value(reader_t *rd, int depth)
{
    rval_t *v = apr_pcalloc(rd->p, sizeof(*v));
    const rval_t *r = v;

    if (rd_ws(rd) >= rd->end) {
        return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
    }
    v->text = rd->s;
    switch (*rd->s) {
    case '{':
    case '[':
        if (depth >= LLMGW_JSON_MAX_DEPTH - 1) {
            return rd_fail(rd, LLMGW_JSON_ERR_DEPTH);
        }
        r = *rd->s == '{' ? rd_object(rd, v, depth) : rd_array(rd, v, depth);
        break;
    case '"':
        v->type = LLMGW_JSON_STRING;
        r = (v->u.s = rd_string(rd, &v->n)) ? v : NULL;
        break;
    case 't':
    case 'f':
        v->type = LLMGW_JSON_BOOL;
        v->u.b = *rd->s == 't';
        if (!rd_word(rd, v->u.b ? "true" : "false", v->u.b ? 4 : 5)) {
            return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
        }
        break;
    case 'n':
        v->type = LLMGW_JSON_NULL;
        if (!rd_word(rd, "null", 4)) {
            return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
        }
        break;
    default:
        r = rd_number(rd, v);
        break;
    }
    if (r) {
        v->len = (apr_size_t)(rd->s - v->text);
    }
    return r;
}

static llmgw_json_t *wrap_read(apr_pool_t *p, const rval_t *v)
{
    llmgw_json_t *j = apr_palloc(p, sizeof(*j));

    j->p = p;
    j->o = NULL;
    j->v = v;
    return j;
}

llmgw_json_t *llmgw_json_read(apr_pool_t *p, const char *buf, apr_size_t len,
                              llmgw_json_err_t *err, const char **msg)
{
    reader_t rd = { p, buf, buf + len, LLMGW_JSON_ERR_NONE };
    const rval_t *v;

    pthread_once(&tok_once, tok_key_create);    /* c_locale, for strtod */
    v = rd_value(&rd, 0);
    if (v && rd_ws(&rd) < rd.end) {
        v = rd_fail(&rd, LLMGW_JSON_ERR_TRAILING);
    }
    if (!v) {
        *err = rd.err;
        *msg = err_text(rd.err, rd.s >= rd.end);
        return NULL;
    }
    *err = LLMGW_JSON_ERR_NONE;
    *msg = NULL;
    return wrap_read(p, v);
}

/* json-c's copy of a read value (its text parsed), or of j's tree
 * (shared), as a new reference. */
static json_object *jc_ref(const llmgw_json_t *j)
{
    apr_size_t used;
    llmgw_json_err_t err;

    if (!j->v) {
        return json_object_get(j->o);
    }
    /* With its NUL: json-c ends a number only where the text ends. */
    return parse(apr_pstrmemdup(j->p, j->v->text, j->v->len),
                 j->v->len + 1, 0, &used, &err);
}

/* Before a change: a read view becomes json-c's tree of its text. */
static json_object *own(llmgw_json_t *j)
{
    if (j->v) {
        j->o = jc_ref(j);
        if (!j->o) {
            j->o = json_object_new_object();     /* out of memory */
        }
        j->v = NULL;
        apr_pool_cleanup_register(j->p, j->o, json_cleanup,
                                  apr_pool_cleanup_null);
    }
    return j->o;
}

/* The member key of object v (the last one so named), or NULL. */
static const rval_t *rmember(const rval_t *v, const char *key)
{
    apr_size_t i;

    if (!v || v->type != LLMGW_JSON_OBJECT) {
        return NULL;
    }
    for (i = v->n; i-- > 0;) {
        if (strcmp(v->u.m[i].key, key) == 0) {
            return v->u.m[i].val;
        }
    }
    return NULL;
}

static const rval_t *rwalk(const rval_t *v, va_list ap)
{
    const char *key;

    while (v && (key = va_arg(ap, const char *)) != NULL) {
        v = rmember(v, key);
    }
    return v;
}

llmgw_json_t *llmgw_json_parse_prefix(apr_pool_t *p, const char *buf,
                                      apr_size_t len, apr_size_t *used)
{
    llmgw_json_err_t err;
    json_object *o;

    if (len > INT_MAX) {
        return NULL;
    }
    o = parse(buf, len, 0, used, &err);
    return o ? wrap(p, o, 1) : NULL;
}

llmgw_json_t *llmgw_json_create_object(apr_pool_t *p)
{
    return wrap(p, json_object_new_object(), 1);
}

static json_object *walk(json_object *o, va_list ap)
{
    const char *key;

    while (o && (key = va_arg(ap, const char *)) != NULL) {
        if (!json_object_is_type(o, json_type_object)
            || !json_object_object_get_ex(o, key, &o)) {
            return NULL;
        }
    }
    return o;
}

/* Like walk, but creates objects for missing keys; returns the parent
 * object and the last key, so the caller can set the leaf. */
static json_object *walk_create(json_object *o, va_list ap,
                                const char **leaf)
{
    const char *key = va_arg(ap, const char *), *next;
    json_object *child;

    while (key && (next = va_arg(ap, const char *)) != NULL) {
        if (!json_object_object_get_ex(o, key, &child)
            || !json_object_is_type(child, json_type_object)) {
            child = json_object_new_object();
            json_object_object_add(o, key, child);
        }
        o = child;
        key = next;
    }
    *leaf = key;
    return o;
}

llmgw_json_type_t llmgw_json_type(const llmgw_json_t *j, ...)
{
    va_list ap;
    json_object *o;
    int exists;

    va_start(ap, j);
    if (j->v) {
        const rval_t *v = rwalk(j->v, ap);

        va_end(ap);
        return v ? v->type : LLMGW_JSON_MISSING;
    }
    /* walk() cannot tell a JSON null from a missing key, so look again. */
    o = j->o;
    exists = 1;
    {
        const char *key;
        while ((key = va_arg(ap, const char *)) != NULL) {
            if (!o || !json_object_is_type(o, json_type_object)
                || !json_object_object_get_ex(o, key, &o)) {
                exists = 0;
                break;
            }
        }
    }
    va_end(ap);
    if (!exists) {
        return LLMGW_JSON_MISSING;
    }
    switch (json_object_get_type(o)) {
    case json_type_null:
        return LLMGW_JSON_NULL;
    case json_type_boolean:
        return LLMGW_JSON_BOOL;
    case json_type_int:
        return LLMGW_JSON_INT;
    case json_type_double:
        return LLMGW_JSON_DOUBLE;
    case json_type_string:
        return LLMGW_JSON_STRING;
    case json_type_array:
        return LLMGW_JSON_ARRAY;
    case json_type_object:
        return LLMGW_JSON_OBJECT;
    }
    return LLMGW_JSON_MISSING;
}

llmgw_json_t *llmgw_json_getj(const llmgw_json_t *j, ...)
{
    va_list ap;
    json_object *o;

    va_start(ap, j);
    if (j->v) {
        const rval_t *v = rwalk(j->v, ap);

        va_end(ap);
        return v ? wrap_read(j->p, v) : NULL;
    }
    o = walk(j->o, ap);
    va_end(ap);
    return o ? wrap(j->p, o, 0) : NULL;
}

const char *llmgw_json_gets(const llmgw_json_t *j, ...)
{
    va_list ap;
    json_object *o;

    va_start(ap, j);
    if (j->v) {
        const rval_t *v = rwalk(j->v, ap);

        va_end(ap);
        return v && v->type == LLMGW_JSON_STRING ? v->u.s : NULL;
    }
    o = walk(j->o, ap);
    va_end(ap);
    return json_object_is_type(o, json_type_string)
               ? json_object_get_string(o) : NULL;
}

/* The number at the path as json-c gives it: 1 if there is one. */
static int number(const llmgw_json_t *j, va_list ap, apr_int64_t *l,
                  double *d)
{
    if (j->v) {
        const rval_t *v = rwalk(j->v, ap);

        if (v && v->type == LLMGW_JSON_INT) {
            *l = v->u.i;
            *d = (double)v->u.i;
            return 1;
        }
        if (v && v->type == LLMGW_JSON_DOUBLE) {
            *d = v->u.d;
            *l = v->u.d >= (double)APR_INT64_MAX ? APR_INT64_MAX
                 : v->u.d <= (double)APR_INT64_MIN ? APR_INT64_MIN
                 : (apr_int64_t)v->u.d;
            return 1;
        }
        return 0;
    }
    else {
        json_object *o = walk(j->o, ap);

        if (json_object_is_type(o, json_type_int)
            || json_object_is_type(o, json_type_double)) {
            *l = json_object_get_int64(o);
            *d = json_object_get_double(o);
            return 1;
        }
        return 0;
    }
}

apr_int64_t llmgw_json_getl(const llmgw_json_t *j, apr_int64_t dflt, ...)
{
    va_list ap;
    apr_int64_t l;
    double d;
    int found;

    va_start(ap, dflt);
    found = number(j, ap, &l, &d);
    va_end(ap);
    return found ? l : dflt;
}

double llmgw_json_getd(const llmgw_json_t *j, double dflt, ...)
{
    va_list ap;
    apr_int64_t l;
    double d;
    int found;

    va_start(ap, dflt);
    found = number(j, ap, &l, &d);
    va_end(ap);
    return found ? d : dflt;
}

int llmgw_json_getb(const llmgw_json_t *j, int dflt, ...)
{
    va_list ap;
    json_object *o;

    va_start(ap, dflt);
    if (j->v) {
        const rval_t *v = rwalk(j->v, ap);

        va_end(ap);
        return v && v->type == LLMGW_JSON_BOOL ? v->u.b : dflt;
    }
    o = walk(j->o, ap);
    va_end(ap);
    return json_object_is_type(o, json_type_boolean)
               ? json_object_get_boolean(o) : dflt;
}

apr_size_t llmgw_json_array_len(const llmgw_json_t *j)
{
    if (j->v) {
        return j->v->type == LLMGW_JSON_ARRAY ? j->v->n : 0;
    }
    return json_object_is_type(j->o, json_type_array)
               ? json_object_array_length(j->o) : 0;
}

llmgw_json_t *llmgw_json_array_get(const llmgw_json_t *j, apr_size_t i)
{
    json_object *o;

    if (i >= llmgw_json_array_len(j)) {
        return NULL;
    }
    if (j->v) {
        return wrap_read(j->p, j->v->u.a[i]);
    }
    o = json_object_array_get_idx(j->o, i);
    return wrap(j->p, o, 0);
}

double llmgw_json_array_getd(const llmgw_json_t *j, apr_size_t i,
                             double dflt)
{
    json_object *o;

    if (i >= llmgw_json_array_len(j)) {
        return dflt;
    }
    if (j->v) {
        const rval_t *v = j->v->u.a[i];

        return v->type == LLMGW_JSON_INT ? (double)v->u.i
               : v->type == LLMGW_JSON_DOUBLE ? v->u.d : dflt;
    }
    o = json_object_array_get_idx(j->o, i);
    if (json_object_is_type(o, json_type_int)
        || json_object_is_type(o, json_type_double)) {
        return json_object_get_double(o);
    }
    return dflt;
}

static void set_leaf(llmgw_json_t *j, json_object *v, va_list ap)
{
    const char *leaf;
    json_object *parent = walk_create(own(j), ap, &leaf);

    if (leaf) {
        json_object_object_add(parent, leaf, v);
    }
    else {
        json_object_put(v);
    }
}

void llmgw_json_sets(llmgw_json_t *j, const char *value, ...)
{
    va_list ap;

    va_start(ap, value);
    set_leaf(j, json_object_new_string(value), ap);
    va_end(ap);
}

void llmgw_json_setb(llmgw_json_t *j, int value, ...)
{
    va_list ap;

    va_start(ap, value);
    set_leaf(j, json_object_new_boolean(value), ap);
    va_end(ap);
}

void llmgw_json_setl(llmgw_json_t *j, apr_int64_t value, ...)
{
    va_list ap;

    va_start(ap, value);
    set_leaf(j, json_object_new_int64(value), ap);
    va_end(ap);
}

void llmgw_json_setnull(llmgw_json_t *j, ...)
{
    va_list ap;

    va_start(ap, j);
    set_leaf(j, json_object_new_null(), ap);
    va_end(ap);
}

void llmgw_json_setj(llmgw_json_t *j, const llmgw_json_t *v, ...)
{
    va_list ap;

    va_start(ap, v);
    set_leaf(j, v ? jc_ref(v) : NULL, ap);
    va_end(ap);
}

void llmgw_json_del(llmgw_json_t *j, const char *key)
{
    json_object_object_del(own(j), key);
}

void llmgw_json_array_adds(llmgw_json_t *j, const char *value)
{
    json_object_array_add(own(j), json_object_new_string(value));
}

void llmgw_json_array_addj(llmgw_json_t *j, const llmgw_json_t *v)
{
    json_object_array_add(own(j), jc_ref(v));
}

llmgw_json_t *llmgw_json_add_array(llmgw_json_t *j, const char *key)
{
    json_object *a = json_object_new_array();

    json_object_object_add(own(j), key, a);
    return wrap(j->p, a, 0);
}

llmgw_json_t *llmgw_json_add_object(llmgw_json_t *j, const char *key)
{
    json_object *o = json_object_new_object();

    json_object_object_add(own(j), key, o);
    return wrap(j->p, o, 0);
}

llmgw_json_t *llmgw_json_array_add_object(llmgw_json_t *j)
{
    json_object *o = json_object_new_object();

    json_object_array_add(own(j), o);
    return wrap(j->p, o, 0);
}

const char *llmgw_json_write(const llmgw_json_t *j, apr_size_t *len)
{
    size_t n = 0;
    const char *s;

    if (j->v) {
        if (len) {
            *len = j->v->len;
        }
        return apr_pstrmemdup(j->p, j->v->text, j->v->len);
    }
    s = json_object_to_json_string_length(
        j->o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);

    if (len) {
        *len = n;
    }
    return s;
}

/* ---------------------------------------------------------------------
 * Canonical text, for cache keys: the same meaning gives the same bytes.
 */

/* A growable pool buffer: the canonical text of a big body is one copy. */
typedef struct {
    apr_pool_t *p;
    char *d;
    apr_size_t len;
    apr_size_t cap;
} canon_buf;

static void put(canon_buf *b, const char *s, apr_size_t n)
{
    if (b->len + n > b->cap) {
        apr_size_t cap = b->cap ? b->cap * 2 : 1024;
        char *d;

        while (cap < b->len + n) {
            cap *= 2;
        }
        d = apr_palloc(b->p, cap);
        if (b->len) {
            memcpy(d, b->d, b->len);
        }
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->len, s, n);
    b->len += n;
}

static void putc1(canon_buf *b, char c)
{
    put(b, &c, 1);
}

typedef struct {
    const char *key;
    json_object *val;
} member_t;

static int cmp_members(const void *a, const void *b)
{
    return strcmp(((const member_t *)a)->key, ((const member_t *)b)->key);
}

static int skipped(const char *key, const char *const *skip)
{
    for (; skip && *skip; skip++) {
        if (strcmp(key, *skip) == 0) {
            return 1;
        }
    }
    return 0;
}

/* s as a JSON string: quotes, backslashes and control characters
 * escaped, everything else (UTF-8 included) as it is. */
static void put_string(canon_buf *b, const char *s, apr_size_t n)
{
    static const char hex[] = "0123456789abcdef";
    apr_size_t i, from = 0;
    char esc[6];

    putc1(b, '"');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        apr_size_t elen = 2;

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        put(b, s + from, i - from);
        from = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
            break;
        }
        put(b, esc, elen);
    }
    put(b, s + from, n - from);
    putc1(b, '"');
}

const char *llmgw_json_quote(apr_pool_t *p, const char *s)
{
    canon_buf out = { p, NULL, 0, 0 };

    s = s ? s : "";
    put_string(&out, s, strlen(s));
    putc1(&out, '\0');
    return out.d;
}

static void put_int(canon_buf *b, apr_int64_t i)
{
    char num[32];
    int n = apr_snprintf(num, sizeof(num), "%" APR_INT64_T_FMT, i);

    put(b, num, (apr_size_t)n);
}

/* 1, 1.0 and 1e0 mean the same: integral values print as integers. */
static void put_double(canon_buf *b, double d)
{
    char num[40];
    int n;

    if (d == (double)(apr_int64_t)d && d > -9e15 && d < 9e15) {
        put_int(b, (apr_int64_t)d);
        return;
    }
    n = apr_snprintf(num, sizeof(num), "%.17g", d);
    put(b, num, (apr_size_t)n);
}

static void canon(apr_pool_t *p, canon_buf *out, json_object *o,
                  const char *const *skip)
{
    switch (json_object_get_type(o)) {
    case json_type_object: {
        apr_array_header_t *m = apr_array_make(p, 8, sizeof(member_t));
        int i;

        json_object_object_foreach(o, key, val) {
            if (!skipped(key, skip)) {
                member_t *e = apr_array_push(m);

                e->key = key;
                e->val = val;
            }
        }
        qsort(m->elts, m->nelts, sizeof(member_t), cmp_members);
        putc1(out, '{');
        for (i = 0; i < m->nelts; i++) {
            const member_t *e = &APR_ARRAY_IDX(m, i, member_t);

            if (i) {
                putc1(out, ',');
            }
            put_string(out, e->key, strlen(e->key));
            putc1(out, ':');
            /* Only the top level has members to leave out. */
            canon(p, out, e->val, NULL);
        }
        putc1(out, '}');
        return;
    }
    case json_type_array: {
        size_t i, len = json_object_array_length(o);

        putc1(out, '[');
        for (i = 0; i < len; i++) {
            if (i) {
                putc1(out, ',');
            }
            canon(p, out, json_object_array_get_idx(o, i), NULL);
        }
        putc1(out, ']');
        return;
    }
    case json_type_string:
        put_string(out, json_object_get_string(o),
                   (apr_size_t)json_object_get_string_len(o));
        return;
    case json_type_double:
        put_double(out, json_object_get_double(o));
        return;
    case json_type_int:
        put_int(out, json_object_get_int64(o));
        return;
    case json_type_boolean:
        if (json_object_get_boolean(o)) {
            put(out, "true", 4);
        }
        else {
            put(out, "false", 5);
        }
        return;
    default:
        put(out, "null", 4);
        return;
    }
}

/* A read object's members in canonical order: by key, and of members
 * with one key only the last (the one json-c would keep). */
typedef struct {
    const rmember_t *m;
    apr_size_t at;
} rsorted_t;

static int cmp_rsorted(const void *a, const void *b)
{
    const rsorted_t *x = a, *y = b;
    int c = strcmp(x->m->key, y->m->key);

    return c ? c : (x->at < y->at ? -1 : 1);
}

static void rcanon(apr_pool_t *p, canon_buf *out, const rval_t *v,
                   const char *const *skip)
{
    apr_size_t i, n = 0;

    switch (v->type) {
    case LLMGW_JSON_OBJECT: {
        rsorted_t *m = apr_palloc(p, (v->n ? v->n : 1) * sizeof(*m));
        int first = 1;

        for (i = 0; i < v->n; i++) {
            if (!skipped(v->u.m[i].key, skip)) {
                m[n].m = &v->u.m[i];
                m[n++].at = i;
            }
        }
        qsort(m, n, sizeof(*m), cmp_rsorted);
        putc1(out, '{');
        for (i = 0; i < n; i++) {
            if (i + 1 < n && strcmp(m[i].m->key, m[i + 1].m->key) == 0) {
                continue;
            }
            if (!first) {
                putc1(out, ',');
            }
            first = 0;
            put_string(out, m[i].m->key, strlen(m[i].m->key));
            putc1(out, ':');
            rcanon(p, out, m[i].m->val, NULL);
        }
        putc1(out, '}');
        return;
    }
    case LLMGW_JSON_ARRAY:
        putc1(out, '[');
        for (i = 0; i < v->n; i++) {
            if (i) {
                putc1(out, ',');
            }
            rcanon(p, out, v->u.a[i], NULL);
        }
        putc1(out, ']');
        return;
    case LLMGW_JSON_STRING:
        put_string(out, v->u.s, v->n);
        return;
    case LLMGW_JSON_DOUBLE:
        put_double(out, v->u.d);
        return;
    case LLMGW_JSON_INT:
        put_int(out, v->u.i);
        return;
    case LLMGW_JSON_BOOL:
        put(out, v->u.b ? "true" : "false", v->u.b ? 4 : 5);
        return;
    default:
        put(out, "null", 4);
        return;
    }
}

const char *llmgw_json_write_canonical(apr_pool_t *p, const llmgw_json_t *j,
                                       const char *const *skip,
                                       apr_size_t *len)
{
    canon_buf out = { p, NULL, 0, 0 };

    if (j->v) {
        rcanon(p, &out, j->v, skip);
    }
    else {
        canon(p, &out, j->o, skip);
    }
    putc1(&out, '\0');
    if (len) {
        *len = out.len - 1;
    }
    return out.d;
}
