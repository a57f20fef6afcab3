/* llmgw_json: the handles on JSON: a read view (llmgw_json_read.c) or a
 * json-c tree of what the gateway builds or changes, released by a
 * cleanup on its pool; getters and setters for both; text built in a pool
 * (edits, canonical text, quoting). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>

#include <apr_strings.h>

#include "llmgw_buf.h"
#include "llmgw_json_int.h"

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

/* ---------------------------------------------------------------------
 * json-c trees: what is built or changed
 */

/* A double, with the text it came as: json-c writes that text back. */
static json_object *jc_double(const rval_t *v)
{
    char buf[64], *text = buf;
    json_object *o;

    if (v->len >= sizeof(buf) && !(text = malloc(v->len + 1))) {
        return NULL;
    }
    memcpy(text, v->text, v->len);
    text[v->len] = '\0';
    o = json_object_new_double_s(v->u.d, text);
    if (text != buf) {
        free(text);
    }
    return o;
}

/* json-c's tree of a read value, exactly: strings with their length,
 * integers beyond 64 bits and every non-integer with the text they came
 * as (so writing gives those bytes back), a key given twice once (the
 * last, as the getters read it). JSON null is json-c's NULL, so: 0, or -1
 * when memory ran out. */
static int jc_from(const rval_t *v, json_object **out)
{
    json_object *o = NULL, *e;
    apr_size_t i;

    switch (v->type) {
    case LLMGW_JSON_OBJECT:
        if (!(o = json_object_new_object())) {
            return -1;
        }
        for (i = 0; i < v->n; i++) {
            if (jc_from(v->u.m[i].val, &e) != 0
                || json_object_object_add(o, v->u.m[i].key, e) != 0) {
                json_object_put(o);
                return -1;
            }
        }
        break;
    case LLMGW_JSON_ARRAY:
        if (!(o = json_object_new_array_ext((int)v->n))) {
            return -1;
        }
        for (i = 0; i < v->n; i++) {
            if (jc_from(v->u.a[i], &e) != 0
                || json_object_array_add(o, e) != 0) {
                json_object_put(o);
                return -1;
            }
        }
        break;
    case LLMGW_JSON_STRING:
        o = v->n > INT_MAX ? NULL
                           : json_object_new_string_len(v->u.s, (int)v->n);
        break;
    case LLMGW_JSON_INT:
        o = json_object_new_int64(v->u.i);
        if (o && v->big) {
            char *digits = strndup(v->text, v->len);

            if (!digits) {
                json_object_put(o);
                return -1;
            }
            json_object_set_serializer(o, json_object_userdata_to_json_string,
                                       digits, json_object_free_userdata);
        }
        break;
    case LLMGW_JSON_DOUBLE: o = jc_double(v); break;
    case LLMGW_JSON_BOOL: o = json_object_new_boolean(v->u.b); break;
    default: *out = NULL; return 0;
    }
    *out = o;
    return o ? 0 : -1;
}

/* A new reference to j's tree: json-c's shared, a view's built. There is
 * no way to go on without it, and building it fails only when memory ran
 * out: then the child stops, as for a pool allocation. */
static json_object *jc_ref(const llmgw_json_t *j)
{
    json_object *o;

    if (!j->v) {
        return json_object_get(j->o);
    }
    if (jc_from(j->v, &o) != 0) {
        abort();
    }
    return o;
}

/* Before a change: a read view becomes json-c's tree of its values. */
static json_object *own(llmgw_json_t *j)
{
    if (j->v) {
        j->o = jc_ref(j);
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

llmgw_json_t *llmgw_json_create_object(apr_pool_t *p)
{
    json_object *o = json_object_new_object();

    if (!o) {
        abort();
    }
    return wrap(p, o, 1);
}

/* The json-c value at the path, or NULL (missing, or not an object on
 * the way); *exists tells a JSON null from a missing key. */
static json_object *walk(json_object *o, va_list ap, int *exists)
{
    const char *key;

    *exists = o != NULL;
    while (o && (key = va_arg(ap, const char *)) != NULL) {
        if (!json_object_is_type(o, json_type_object)
            || !json_object_object_get_ex(o, key, &o)) {
            *exists = 0;
            return NULL;
        }
    }
    return o;
}

/* Like walk, but creates objects for missing keys; returns the parent
 * object and the last key, so the caller can set the leaf. */
static json_object *walk_create(json_object *o, va_list ap, const char **leaf)
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

static llmgw_json_type_t jc_type(json_object *o)
{
    switch (json_object_get_type(o)) {
    case json_type_null: return LLMGW_JSON_NULL;
    case json_type_boolean: return LLMGW_JSON_BOOL;
    case json_type_int: return LLMGW_JSON_INT;
    case json_type_double: return LLMGW_JSON_DOUBLE;
    case json_type_string: return LLMGW_JSON_STRING;
    case json_type_array: return LLMGW_JSON_ARRAY;
    case json_type_object: return LLMGW_JSON_OBJECT;
    }
    return LLMGW_JSON_MISSING;
}

/* Where a path leads, in either kind of handle: the type there
 * (LLMGW_JSON_MISSING when it leads nowhere), and the read value (v) or
 * the json-c value (o; NULL for a JSON null) that holds it. */
typedef struct {
    llmgw_json_type_t type;
    const rval_t *v;
    json_object *o;
} found_t;

static void find(const llmgw_json_t *j, va_list ap, found_t *f)
{
    int exists = 0;

    f->type = LLMGW_JSON_MISSING;
    f->v = NULL;
    f->o = NULL;
    if (j && j->v) {
        f->v = rwalk(j->v, ap);
        f->type = f->v ? f->v->type : LLMGW_JSON_MISSING;
    }
    else if (j) {
        f->o = walk(j->o, ap, &exists);
        f->type = exists ? jc_type(f->o) : LLMGW_JSON_MISSING;
    }
}

/* find() for a getter: its path is the arguments after LAST. */
#define FIND_PATH(j, last, f) \
    do {                      \
        va_list ap_;          \
                              \
        va_start(ap_, last);  \
        find(j, ap_, f);      \
        va_end(ap_);          \
    } while (0)

llmgw_json_type_t llmgw_json_type(const llmgw_json_t *j, ...)
{
    found_t f;

    FIND_PATH(j, j, &f);
    return f.type;
}

llmgw_json_t *llmgw_json_getj(const llmgw_json_t *j, ...)
{
    found_t f;

    FIND_PATH(j, j, &f);
    if (f.v) {
        return jr_wrap(j->p, f.v);
    }
    return f.o ? wrap(j->p, f.o, 0) : NULL;
}

const char *llmgw_json_gets(const llmgw_json_t *j, ...)
{
    found_t f;

    FIND_PATH(j, j, &f);
    if (f.type != LLMGW_JSON_STRING) {
        return NULL;
    }
    return f.v ? f.v->u.s : json_object_get_string(f.o);
}

/* A double as the nearest 64-bit integer, without undefined behaviour for
 * NaN, infinities and what is out of range. */
static apr_int64_t clamp_to_int64(double d)
{
    if (d != d) {
        return 0;
    }
    if (d >= 9223372036854775807.0) {
        return APR_INT64_MAX;
    }
    if (d <= -9223372036854775808.0) {
        return APR_INT64_MIN;
    }
    return (apr_int64_t)d;
}

/* A number as both an integer and a double. */
typedef struct {
    apr_int64_t l;
    double d;
} number_t;

/* The number found: 1 if there is one. */
static int number(const found_t *f, number_t *n)
{
    if (f->type == LLMGW_JSON_INT) {
        n->l = f->v ? f->v->u.i : json_object_get_int64(f->o);
        n->d = f->v && f->v->big
                   ? strtod_l(f->v->text, NULL, jr_number_locale())
                   : (double)n->l;
        return 1;
    }
    if (f->type == LLMGW_JSON_DOUBLE) {
        n->d = f->v ? f->v->u.d : json_object_get_double(f->o);
        n->l = clamp_to_int64(n->d);
        return 1;
    }
    return 0;
}

apr_int64_t llmgw_json_getl(const llmgw_json_t *j, apr_int64_t dflt, ...)
{
    found_t f;
    number_t n;

    FIND_PATH(j, dflt, &f);
    return number(&f, &n) ? n.l : dflt;
}

double llmgw_json_getd(const llmgw_json_t *j, double dflt, ...)
{
    found_t f;
    number_t n;

    FIND_PATH(j, dflt, &f);
    return number(&f, &n) ? n.d : dflt;
}

int llmgw_json_getb(const llmgw_json_t *j, int dflt, ...)
{
    found_t f;

    FIND_PATH(j, dflt, &f);
    if (f.type != LLMGW_JSON_BOOL) {
        return dflt;
    }
    return f.v ? f.v->u.b : json_object_get_boolean(f.o);
}

apr_size_t llmgw_json_array_len(const llmgw_json_t *j)
{
    if (!j) {
        return 0;
    }
    if (j->v) {
        return j->v->type == LLMGW_JSON_ARRAY ? j->v->n : 0;
    }
    return json_object_is_type(j->o, json_type_array)
               ? json_object_array_length(j->o)
               : 0;
}

llmgw_json_t *llmgw_json_array_get(const llmgw_json_t *j, apr_size_t i)
{
    if (i >= llmgw_json_array_len(j)) {
        return NULL;
    }
    if (j->v) {
        return jr_wrap(j->p, j->v->u.a[i]);
    }
    return wrap(j->p, json_object_array_get_idx(j->o, i), 0);
}

double llmgw_json_array_getd(const llmgw_json_t *j, apr_size_t i, double dflt)
{
    json_object *o;

    if (i >= llmgw_json_array_len(j)) {
        return dflt;
    }
    if (j->v) {
        const rval_t *v = j->v->u.a[i];

        return v->type == LLMGW_JSON_INT      ? (double)v->u.i
               : v->type == LLMGW_JSON_DOUBLE ? v->u.d
                                              : dflt;
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

/* A json-c string of s, valid UTF-8 whatever s holds. */
static json_object *new_string(apr_pool_t *p, const char *s)
{
    apr_size_t n = strlen(s);

    s = llmgw_json_utf8_clean(p, s, n, &n);
    return json_object_new_string_len(s, n > INT_MAX ? INT_MAX : (int)n);
}

void llmgw_json_sets(llmgw_json_t *j, const char *value, ...)
{
    va_list ap;

    va_start(ap, value);
    set_leaf(j, new_string(j->p, value), ap);
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
    if (j->v && !rmember(j->v, key)) {
        return;
    }
    json_object_object_del(own(j), key);
}

void llmgw_json_array_adds(llmgw_json_t *j, const char *value)
{
    json_object_array_add(own(j), new_string(j->p, value));
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

apr_size_t llmgw_json_text_len(const llmgw_json_t *j)
{
    apr_size_t n = 0;

    if (!j) {
        return 0;
    }
    if (j->v) {
        return j->v->len;
    }
    llmgw_json_write(j, &n);
    return n;
}

/* ---------------------------------------------------------------------
 * Text built in a pool: edits of a request, canonical text, quoting.
 */

/* Text being built in a pool: the canonical text of a big body is one
 * copy. */
typedef struct {
    apr_pool_t *p;
    llmgw_pbuf_t b;
} text_buf;

static void put(text_buf *b, const char *s, apr_size_t n)
{
    llmgw_pbuf_add(b->p, &b->b, s, n);
}

static void putc1(text_buf *b, char c)
{
    put(b, &c, 1);
}

static void puts0(text_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* The text so far, NUL-terminated; *len (may be NULL) without the NUL. */
static const char *finish(text_buf *b, apr_size_t *len)
{
    putc1(b, '\0');
    if (len) {
        *len = b->b.len - 1;
    }
    return b->b.b;
}

/* Leaves member i of the object v out of the text being written, which
 * has come up to from; returns where the text goes on. After a member that
 * stays, the member goes with the comma before it (the text resumes after
 * its value); else with the comma after it, if any. */
static const char *cut_member(const rval_t *v, apr_size_t i, int kept_before,
                              const char *from, text_buf *out)
{
    const rval_t *val = v->u.m[i].val;
    const char *end = v->text + v->len - 1, *next = val->text + val->len;
    const char *to;

    if (kept_before) {
        to = v->u.m[i - 1].val->text + v->u.m[i - 1].val->len;
    }
    else {
        to = v->text + 1; /* just the brace */
        next = llmgw_json_skip_ws(next, end);
        next += next < end && *next == ',';
    }
    if (to > from) {
        put(out, from, (apr_size_t)(to - from));
    }
    return next;
}

static int key_listed(const char *key, const char *const *allowed)
{
    for (; *allowed; allowed++) {
        if (strcmp(key, *allowed) == 0) {
            return 1;
        }
    }
    return 0;
}

int llmgw_json_keys_within(const llmgw_json_t *j, const char *const *allowed)
{
    apr_size_t i;

    if (!j) {
        return 1;
    }
    if (j->v) {
        for (i = 0; j->v->type == LLMGW_JSON_OBJECT && i < j->v->n; i++) {
            if (!key_listed(j->v->u.m[i].key, allowed)) {
                return 0;
            }
        }
        return 1;
    }
    if (j->o && json_object_is_type(j->o, json_type_object)) {
        json_object_object_foreach(j->o, key, val)
        {
            (void)val;
            if (!key_listed(key, allowed)) {
                return 0;
            }
        }
    }
    return 1;
}

const char *llmgw_json_edit(const llmgw_json_t *j, const char *const *keys,
                            const char *const *vals, int n, apr_size_t *len)
{
    text_buf out = { j->p, { NULL, 0, 0 } };
    const rval_t *v = j->v;
    const char *from;
    char done[32] = { 0 };
    apr_size_t i;
    int k, added = 0, kept = 0;

    if (!v || v->type != LLMGW_JSON_OBJECT || n > (int)sizeof(done)) {
        return NULL;
    }
    from = v->text;
    for (i = 0; i < v->n; i++) {
        const rval_t *val = v->u.m[i].val;

        for (k = 0; k < n; k++) {
            if (strcmp(v->u.m[i].key, keys[k]) == 0) {
                break;
            }
        }
        if (k == n) {
            kept = 1;
            continue;
        }
        done[k] = 1;
        if (!vals[k]) {
            from = cut_member(v, i, kept, from, &out);
            continue;
        }
        kept = 1;
        put(&out, from, (apr_size_t)(val->text - from));
        puts0(&out, vals[k]);
        from = val->text + val->len;
    }
    /* The rest up to the closing brace, then what was not there. */
    put(&out, from, (apr_size_t)(v->text + v->len - 1 - from));
    for (k = 0; k < n; k++) {
        if (done[k] || !vals[k]) {
            continue;
        }
        if (kept || added++) {
            putc1(&out, ',');
        }
        puts0(&out, llmgw_json_quote(j->p, keys[k]));
        putc1(&out, ':');
        puts0(&out, vals[k]);
    }
    putc1(&out, '}');
    return finish(&out, len);
}

const char *llmgw_json_utf8_clean(apr_pool_t *p, const char *s, apr_size_t n,
                                  apr_size_t *outlen)
{
    const unsigned char *u = (const unsigned char *)s, *end = u + n;
    apr_size_t i = 0, k = 0;
    text_buf out = { p, { NULL, 0, 0 } };

    while (i < n && (u[i] < 0x80 || (k = jr_utf8_len(u + i, end)) != 0)) {
        i += u[i] < 0x80 ? 1 : k;
    }
    if (i == n) {
        if (outlen) {
            *outlen = n;
        }
        return s;
    }
    put(&out, s, i);
    while (i < n) {
        if (u[i] < 0x80) {
            putc1(&out, s[i++]);
        }
        else if ((k = jr_utf8_len(u + i, end)) != 0) {
            put(&out, s + i, k);
            i += k;
        }
        else {
            put(&out, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    return finish(&out, outlen);
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
 * escaped, everything else (UTF-8, valid) as it is. */
static void put_string(text_buf *b, const char *s, apr_size_t n)
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
    text_buf out = { p, { NULL, 0, 0 } };
    apr_size_t n;

    s = s ? s : "";
    s = llmgw_json_utf8_clean(p, s, strlen(s), &n);
    put_string(&out, s, n);
    return finish(&out, NULL);
}

/* The shortest text that reads back as d (%.17g always does, but writes
 * 0.1 as 0.10000000000000001), in the C locale. d is finite. */
static int shortest_double(char *buf, apr_size_t size, double d)
{
    locale_t loc = jr_number_locale(), old = loc ? uselocale(loc) : 0;
    int prec, n = 0;

    for (prec = 1; prec <= 17; prec++) {
        n = snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) {
            break;
        }
    }
    if (loc) {
        uselocale(old);
    }
    return n;
}

/* A number, one way only. An integer by its digits (a JSON integer has
 * no leading zeros or plus sign; "-0" is 0). */
static void put_number(text_buf *b, const rval_t *v)
{
    char num[40];

    if (v->type == LLMGW_JSON_INT) {
        if (v->len == 2 && v->text[0] == '-' && v->text[1] == '0') {
            putc1(b, '0');
        }
        else {
            put(b, v->text, v->len);
        }
        return;
    }
    /* 1, 1.0 and 1e0 mean the same: integral doubles that a double holds
     * exactly as an integer print as integers. */
    if (v->u.d == floor(v->u.d) && fabs(v->u.d) < 9007199254740992.0) {
        apr_snprintf(num, sizeof(num), "%" APR_INT64_T_FMT,
                     (apr_int64_t)v->u.d);
        puts0(b, num);
        return;
    }
    put(b, num, (apr_size_t)shortest_double(num, sizeof(num), v->u.d));
}

/* A read object's members in canonical order: by key. */
static int cmp_members(const void *a, const void *b)
{
    const rmember_t *x = *(const rmember_t *const *)a;
    const rmember_t *y = *(const rmember_t *const *)b;
    int c = strcmp(x->key, y->key);

    /* A key given twice (an answer, not strict): the last counts. */
    return c ? c : (x < y ? -1 : 1);
}

static void canon(apr_pool_t *p, text_buf *out, const rval_t *v,
                  const char *const *skip)
{
    apr_size_t i, n = 0;

    switch (v->type) {
    case LLMGW_JSON_OBJECT: {
        const rmember_t **m = apr_palloc(p, (v->n ? v->n : 1) * sizeof(*m));
        int first = 1;

        for (i = 0; i < v->n; i++) {
            if (!skipped(v->u.m[i].key, skip)) {
                m[n++] = &v->u.m[i];
            }
        }
        qsort(m, n, sizeof(*m), cmp_members);
        putc1(out, '{');
        for (i = 0; i < n; i++) {
            if (i + 1 < n && strcmp(m[i]->key, m[i + 1]->key) == 0) {
                continue;
            }
            if (!first) {
                putc1(out, ',');
            }
            first = 0;
            put_string(out, m[i]->key, m[i]->klen);
            putc1(out, ':');
            canon(p, out, m[i]->val, NULL);
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
            canon(p, out, v->u.a[i], NULL);
        }
        putc1(out, ']');
        return;
    case LLMGW_JSON_STRING: put_string(out, v->u.s, v->n); return;
    case LLMGW_JSON_INT:
    case LLMGW_JSON_DOUBLE: put_number(out, v); return;
    case LLMGW_JSON_BOOL: puts0(out, v->u.b ? "true" : "false"); return;
    default: puts0(out, "null"); return;
    }
}

const char *llmgw_json_write_canonical(apr_pool_t *p, const llmgw_json_t *j,
                                       const char *const *skip,
                                       apr_size_t *len)
{
    text_buf out = { p, { NULL, 0, 0 } };
    const rval_t *v = j->v;

    if (!v) {
        /* A built tree: read back what it writes, so that there is one
         * canonical form, of the bytes a backend would get. */
        apr_size_t n;
        const char *text = llmgw_json_write(j, &n);
        llmgw_json_err_t err;
        const char *msg;
        llmgw_json_t *r = llmgw_json_parse(p, text, n, &err, &msg);

        if (!r) {
            return NULL;
        }
        v = r->v;
    }
    canon(p, &out, v, skip);
    return finish(&out, len);
}
