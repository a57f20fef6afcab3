/* llmgw_json: the one place that talks to json-c. Handles share the root's
 * tree; the root is released by a cleanup on the pool it was made in. */
#include <limits.h>
#include <locale.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>

#include <apr_strings.h>
#include <json.h>

#include "llmgw_json.h"

struct llmgw_json {
    apr_pool_t *p;
    json_object *o;
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
                *msg = "unexpected data after the JSON value";
                return NULL;
            }
        }
        *msg = NULL;
        return wrap(p, o, 1);
    }
    switch (*err) {
    case LLMGW_JSON_ERR_DEPTH:
        *msg = "JSON nested too deeply";
        break;
    case LLMGW_JSON_ERR_UTF8:
        *msg = "JSON text is not valid UTF-8";
        break;
    default:
        *msg = (used >= len) ? "JSON text ends early"
                             : "JSON syntax error";
        break;
    }
    return NULL;
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
    o = walk(j->o, ap);
    va_end(ap);
    return o ? wrap(j->p, o, 0) : NULL;
}

const char *llmgw_json_gets(const llmgw_json_t *j, ...)
{
    va_list ap;
    json_object *o;

    va_start(ap, j);
    o = walk(j->o, ap);
    va_end(ap);
    return json_object_is_type(o, json_type_string)
               ? json_object_get_string(o) : NULL;
}

/* The number at the path, or NULL. */
static json_object *number(const llmgw_json_t *j, va_list ap)
{
    json_object *o = walk(j->o, ap);

    return json_object_is_type(o, json_type_int)
           || json_object_is_type(o, json_type_double) ? o : NULL;
}

apr_int64_t llmgw_json_getl(const llmgw_json_t *j, apr_int64_t dflt, ...)
{
    va_list ap;
    json_object *o;

    va_start(ap, dflt);
    o = number(j, ap);
    va_end(ap);
    return o ? json_object_get_int64(o) : dflt;
}

double llmgw_json_getd(const llmgw_json_t *j, double dflt, ...)
{
    va_list ap;
    json_object *o;

    va_start(ap, dflt);
    o = number(j, ap);
    va_end(ap);
    return o ? json_object_get_double(o) : dflt;
}

int llmgw_json_getb(const llmgw_json_t *j, int dflt, ...)
{
    va_list ap;
    json_object *o;

    va_start(ap, dflt);
    o = walk(j->o, ap);
    va_end(ap);
    return json_object_is_type(o, json_type_boolean)
               ? json_object_get_boolean(o) : dflt;
}

apr_size_t llmgw_json_array_len(const llmgw_json_t *j)
{
    return json_object_is_type(j->o, json_type_array)
               ? json_object_array_length(j->o) : 0;
}

llmgw_json_t *llmgw_json_array_get(const llmgw_json_t *j, apr_size_t i)
{
    json_object *o;

    if (i >= llmgw_json_array_len(j)) {
        return NULL;
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
    json_object *parent = walk_create(j->o, ap, &leaf);

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
    set_leaf(j, v ? json_object_get(v->o) : NULL, ap);
    va_end(ap);
}

void llmgw_json_del(llmgw_json_t *j, const char *key)
{
    json_object_object_del(j->o, key);
}

void llmgw_json_array_adds(llmgw_json_t *j, const char *value)
{
    json_object_array_add(j->o, json_object_new_string(value));
}

void llmgw_json_array_addj(llmgw_json_t *j, const llmgw_json_t *v)
{
    json_object_array_add(j->o, json_object_get(v->o));
}

llmgw_json_t *llmgw_json_add_array(llmgw_json_t *j, const char *key)
{
    json_object *a = json_object_new_array();

    json_object_object_add(j->o, key, a);
    return wrap(j->p, a, 0);
}

llmgw_json_t *llmgw_json_add_object(llmgw_json_t *j, const char *key)
{
    json_object *o = json_object_new_object();

    json_object_object_add(j->o, key, o);
    return wrap(j->p, o, 0);
}

llmgw_json_t *llmgw_json_array_add_object(llmgw_json_t *j)
{
    json_object *o = json_object_new_object();

    json_object_array_add(j->o, o);
    return wrap(j->p, o, 0);
}

const char *llmgw_json_write(const llmgw_json_t *j, apr_size_t *len)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(
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

static void canon(apr_pool_t *p, canon_buf *out, json_object *o,
                  const char *const *skip)
{
    char num[40];
    int n;

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
    case json_type_double: {
        double d = json_object_get_double(o);

        /* 1, 1.0 and 1e0 mean the same: integral values print as integers. */
        if (d == (double)(apr_int64_t)d && d > -9e15 && d < 9e15) {
            n = apr_snprintf(num, sizeof(num), "%" APR_INT64_T_FMT,
                             (apr_int64_t)d);
        }
        else {
            n = apr_snprintf(num, sizeof(num), "%.17g", d);
        }
        put(out, num, (apr_size_t)n);
        return;
    }
    case json_type_int:
        n = apr_snprintf(num, sizeof(num), "%" APR_INT64_T_FMT,
                         (apr_int64_t)json_object_get_int64(o));
        put(out, num, (apr_size_t)n);
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

const char *llmgw_json_write_canonical(apr_pool_t *p, const llmgw_json_t *j,
                                       const char *const *skip,
                                       apr_size_t *len)
{
    canon_buf out = { p, NULL, 0, 0 };

    canon(p, &out, j->o, skip);
    putc1(&out, '\0');
    if (len) {
        *len = out.len - 1;
    }
    return out.d;
}
