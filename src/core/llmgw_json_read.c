/* llmgw_json_read: the one strict JSON reader, for everything that comes
 * from outside (requests, answers, records, discovery lists). It builds
 * its tree in the pool: no malloc and no free per value, which on a busy
 * child is most of what a json-c parse costs. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_json_int.h"

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_create(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

locale_t jr_number_locale(void)
{
    pthread_once(&c_locale_once, c_locale_create);
    return c_locale;
}

/* The message for a failed parse; at_end: the text ended first. */
static const char *err_text(llmgw_json_err_t err, int at_end)
{
    switch (err) {
    case LLMGW_JSON_ERR_DEPTH: return "JSON nested too deeply";
    case LLMGW_JSON_ERR_UTF8: return "JSON text is not valid UTF-8";
    case LLMGW_JSON_ERR_TRAILING:
        return "unexpected data after the JSON value";
    case LLMGW_JSON_ERR_CONTROL:
        return "a control character in a JSON string must be escaped";
    case LLMGW_JSON_ERR_NUL: return "JSON strings must not contain U+0000";
    case LLMGW_JSON_ERR_SURROGATE:
        return "a JSON string holds a lone UTF-16 surrogate";
    case LLMGW_JSON_ERR_RANGE: return "a JSON number is out of range";
    case LLMGW_JSON_ERR_DUPLICATE:
        return "a JSON object has the same key twice";
    default: return at_end ? "JSON text ends early" : "JSON syntax error";
    }
}

typedef struct {
    apr_pool_t *p;
    const char *s, *end;
    int strict;
    int max_depth;
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

apr_size_t llmgw_utf8_len(const unsigned char *s, const unsigned char *end)
{
    return s < end && s[0] < 0x80 ? 1 : jr_utf8_len(s, end);
}

apr_size_t jr_utf8_len(const unsigned char *s, const unsigned char *end)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    apr_size_t n, i;

    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    }
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80; /* no overlong forms */
        hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF; /* up to U+10FFFF */
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

/* A \u escape at s (its backslash), s + 6 <= end. The code point it and,
 * for a surrogate pair, the escape after it stand for: 6 or 12 bytes
 * long (*n). A lone surrogate is U+FFFD, or an error when strict. */
static int rd_escape_u(reader_t *rd, const char *s, const char *end,
                       unsigned int *cp, apr_size_t *n)
{
    unsigned int lo;

    *n = 6;
    if (*cp >= 0xD800 && *cp <= 0xDBFF && end - s >= 12 && s[6] == '\\'
        && s[7] == 'u' && hex4(s + 8, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
        *n = 12;
    }
    else if (*cp >= 0xD800 && *cp <= 0xDFFF) {
        if (rd->strict) {
            rd_fail(rd, LLMGW_JSON_ERR_SURROGATE);
            return 0;
        }
        *cp = 0xFFFD;
    }
    else if (*cp == 0) {
        rd_fail(rd, LLMGW_JSON_ERR_NUL);
        return 0;
    }
    return 1;
}

/* The string at rd->s (its opening quote), decoded into the pool. */
static const char *rd_string(reader_t *rd, apr_size_t *n)
{
    const char *s = rd->s + 1, *start = s, *end = rd->end;
    unsigned int cp;
    apr_size_t k;
    char *out, *o;
    int escaped = 0;

    /* The extent first, checking escapes and UTF-8: the decoding below
     * cannot fail. */
    while (s < end && *s != '"') {
        unsigned char c = (unsigned char)*s;

        if (c == '\\') {
            escaped = 1;
            if (end - s >= 6 && s[1] == 'u' && hex4(s + 2, &cp)) {
                if (!rd_escape_u(rd, s, end, &cp, &k)) {
                    rd->s = s;
                    return NULL;
                }
                s += k;
            }
            else if (end - s >= 2 && s[1] && strchr("\"\\/bfnrt", s[1])) {
                s += 2;
            }
            else {
                rd->s = s;
                return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
            }
        }
        else if (c < 0x20) {
            rd->s = s;
            return rd_fail(rd,
                           c ? LLMGW_JSON_ERR_CONTROL : LLMGW_JSON_ERR_NUL);
        }
        else if (c < 0x80) {
            s++;
        }
        else if ((k = jr_utf8_len((const unsigned char *)s,
                                  (const unsigned char *)end))
                 != 0) {
            s += k;
        }
        else {
            rd->s = s;
            return rd_fail(rd, LLMGW_JSON_ERR_UTF8);
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
    for (end = s, s = start; s < end;) {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        switch (s[1]) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            hex4(s + 2, &cp);
            rd_escape_u(rd, s, end, &cp, &k);
            o = put_utf8(o, cp);
            s += k;
            continue;
        default: /* " \ / */ *o++ = s[1]; break;
        }
        s += 2;
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
        s++; /* no leading zeros */
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
    errno = 0;
    if (integral) {
        /* Beyond 64 bits: the digits stay the value (canonical text,
         * writing); getters see the nearest 64-bit number. */
        v->type = LLMGW_JSON_INT;
        v->u.i = strtoll(num, NULL, 10);
        v->big = errno == ERANGE;
    }
    else {
        v->type = LLMGW_JSON_DOUBLE;
        v->u.d = strtod_l(num, NULL, jr_number_locale());
        if (errno == ERANGE && isinf(v->u.d)) {
            return rd_fail(rd, LLMGW_JSON_ERR_RANGE);
        }
    }
    rd->s = s;
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

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether some key of m[0..n) is there twice: by pairs for the small
 * objects requests are made of, sorted (n log n) for the rest. */
static int has_duplicate(apr_pool_t *p, const rmember_t *m, apr_size_t n)
{
    const char **keys;
    apr_size_t i, k;

    if (n <= 16) {
        for (i = 1; i < n; i++) {
            for (k = 0; k < i; k++) {
                if (m[i].klen == m[k].klen
                    && memcmp(m[i].key, m[k].key, m[i].klen) == 0) {
                    return 1;
                }
            }
        }
        return 0;
    }
    keys = apr_palloc(p, n * sizeof(*keys));
    for (i = 0; i < n; i++) {
        keys[i] = m[i].key;
    }
    qsort(keys, n, sizeof(*keys), cmp_keys);
    for (i = 1; i < n; i++) {
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static const rval_t *rd_object(reader_t *rd, rval_t *v, int depth)
{
    apr_array_header_t *m = apr_array_make(rd->p, 8, sizeof(rmember_t));
    rmember_t *e;
    int more = rd_open(rd, '}');

    while (more > 0) {
        if (!rd_at(rd, '"')) {
            return rd_fail(rd, LLMGW_JSON_ERR_SYNTAX);
        }
        e = apr_array_push(m);
        if (!(e->key = rd_string(rd, &e->klen))) {
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
    if (rd->strict && has_duplicate(rd->p, v->u.m, v->n)) {
        return rd_fail(rd, LLMGW_JSON_ERR_DUPLICATE);
    }
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
        if (depth >= rd->max_depth - 1) {
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
    default: r = rd_number(rd, v); break;
    }
    if (r) {
        v->len = (apr_size_t)(rd->s - v->text);
    }
    return r;
}

llmgw_json_t *jr_wrap(apr_pool_t *p, const rval_t *v)
{
    llmgw_json_t *j = apr_palloc(p, sizeof(*j));

    *j = (llmgw_json_t){ .p = p, .v = v };
    return j;
}

/* One value at buf; with used, what follows it is the caller's, else
 * only white space may follow. */
static llmgw_json_t *read_value(apr_pool_t *p, const char *buf, apr_size_t len,
                                int flags, int max_depth, apr_size_t *used,
                                llmgw_json_err_t *err, const char **msg)
{
    reader_t rd = { p,         buf,
                    buf + len, flags & LLMGW_JSON_STRICT,
                    max_depth, LLMGW_JSON_ERR_NONE };
    const rval_t *v = rd_value(&rd, 0);

    if (v && !used && rd_ws(&rd) < rd.end) {
        v = rd_fail(&rd, LLMGW_JSON_ERR_TRAILING);
    }
    if (!v) {
        *err = rd.err;
        *msg = err_text(rd.err, rd.s >= rd.end);
        return NULL;
    }
    if (used) {
        *used = (apr_size_t)(rd.s - buf);
    }
    *err = LLMGW_JSON_ERR_NONE;
    *msg = NULL;
    return jr_wrap(p, v);
}

llmgw_json_t *llmgw_json_read_ex(apr_pool_t *p, const char *buf,
                                 apr_size_t len, int flags, int max_depth,
                                 llmgw_json_err_t *err, const char **msg)
{
    return read_value(p, buf, len, flags, max_depth, NULL, err, msg);
}

llmgw_json_t *llmgw_json_read(apr_pool_t *p, const char *buf, apr_size_t len,
                              llmgw_json_err_t *err, const char **msg)
{
    return read_value(p, buf, len, LLMGW_JSON_STRICT, LLMGW_JSON_MAX_DEPTH,
                      NULL, err, msg);
}

llmgw_json_t *llmgw_json_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                               llmgw_json_err_t *err, const char **msg)
{
    return read_value(p, buf, len, 0, LLMGW_JSON_MAX_DEPTH, NULL, err, msg);
}

llmgw_json_t *llmgw_json_parse_prefix(apr_pool_t *p, const char *buf,
                                      apr_size_t len, apr_size_t *used)
{
    llmgw_json_err_t err;
    const char *msg;

    return read_value(p, buf, len, 0, LLMGW_JSON_MAX_DEPTH, used, &err, &msg);
}
