/* llmgw_json: one strict JSON reader for everything that comes from outside
 * (a read-only view in a pool), and json-c behind the same pool-bound
 * handle for what the gateway builds or changes. */
#ifndef LLMGW_JSON_H
#define LLMGW_JSON_H

#include <apr_pools.h>
#include <apr_tables.h>

typedef struct llmgw_json llmgw_json_t;

typedef enum {
    LLMGW_JSON_MISSING = 0,
    LLMGW_JSON_NULL,
    LLMGW_JSON_BOOL,
    LLMGW_JSON_INT,
    LLMGW_JSON_DOUBLE,
    LLMGW_JSON_STRING,
    LLMGW_JSON_ARRAY,
    LLMGW_JSON_OBJECT
} llmgw_json_type_t;

/* Why a parse failed, so callers can answer with the right error. */
typedef enum {
    LLMGW_JSON_ERR_NONE = 0,
    LLMGW_JSON_ERR_SYNTAX,
    LLMGW_JSON_ERR_DEPTH,
    LLMGW_JSON_ERR_UTF8,
    LLMGW_JSON_ERR_TRAILING,
    LLMGW_JSON_ERR_CONTROL,   /* a raw control character in a string */
    LLMGW_JSON_ERR_NUL,       /* U+0000 in a string */
    LLMGW_JSON_ERR_SURROGATE, /* a lone UTF-16 surrogate (strict) */
    LLMGW_JSON_ERR_RANGE,     /* a number beyond a double's range */
    LLMGW_JSON_ERR_DUPLICATE  /* one key twice in an object (strict) */
} llmgw_json_err_t;

/* JSON's four whitespace characters (strchr would also match NUL). */
#define LLMGW_JSON_IS_WS(c) \
    ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')

/* s past white space, at most to end. */
static APR_INLINE const char *llmgw_json_skip_ws(const char *s,
                                                 const char *end)
{
    while (s < end && LLMGW_JSON_IS_WS(*s)) {
        s++;
    }
    return s;
}

/* s[0..*len) without white space at either end: the new start, *len
 * shortened. */
static APR_INLINE const char *llmgw_json_trim(const char *s, apr_size_t *len)
{
    const char *end = s + *len;

    s = llmgw_json_skip_ws(s, end);
    while (end > s && LLMGW_JSON_IS_WS(end[-1])) {
        end--;
    }
    *len = (apr_size_t)(end - s);
    return s;
}

/* Deep enough for real tool schemas, shallow enough to stop abuse. */
#define LLMGW_JSON_MAX_DEPTH 64

/* The reader's rules, always: RFC 8259 exactly (no comments, single
 * quotes, NaN, trailing commas, leading zeros), UTF-8 checked (no
 * overlong forms, surrogates or code points past U+10FFFF), no raw
 * control characters in strings, no U+0000 (escaped) in strings, so that
 * every string is also a C string; numbers within a double's range;
 * nesting limited. Strictly (LLMGW_JSON_STRICT, for requests) also no
 * lone UTF-16 surrogate escapes and no key twice in one object: what the
 * gateway reads is then exactly what any backend's parser reads. Without
 * it (answers) a lone surrogate reads as U+FFFD and of a key given twice
 * the last counts. */
#define LLMGW_JSON_STRICT 1

/* Parses exactly one JSON value filling buf[0..len) into a read-only view
 * in p (nothing to free, no allocation outside the pool), nested at most
 * max_depth deep. Returns NULL and sets *err and *msg (a static text) on
 * failure. Getters and writing (the text as it came) read the view; the
 * first change to a handle turns that handle into json-c's tree of the
 * same values (handles taken from it before do not see the change). */
llmgw_json_t *llmgw_json_read_ex(apr_pool_t *p, const char *buf,
                                 apr_size_t len, int flags, int max_depth,
                                 llmgw_json_err_t *err, const char **msg);

/* A request body: strictly, LLMGW_JSON_MAX_DEPTH deep. */
llmgw_json_t *llmgw_json_read(apr_pool_t *p, const char *buf, apr_size_t len,
                              llmgw_json_err_t *err, const char **msg);

/* What a backend or a store sent: the reader's rules, not strictly. */
llmgw_json_t *llmgw_json_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                               llmgw_json_err_t *err, const char **msg);

/* Parses the first JSON value at buf (used to pick one object out of a
 * larger text) as llmgw_json_parse does; *used gets the number of bytes
 * it took. */
llmgw_json_t *llmgw_json_parse_prefix(apr_pool_t *p, const char *buf,
                                      apr_size_t len, apr_size_t *used);

llmgw_json_t *llmgw_json_create_object(apr_pool_t *p);

/* Getters take a NULL-terminated path of object keys. A missing key, a
 * value of another type or a NULL handle gives LLMGW_JSON_MISSING / NULL /
 * dflt. Integers beyond 64 bits read as the nearest 64-bit value. */
llmgw_json_type_t llmgw_json_type(const llmgw_json_t *j, ...);
llmgw_json_t *llmgw_json_getj(const llmgw_json_t *j, ...);
const char *llmgw_json_gets(const llmgw_json_t *j, ...);
apr_int64_t llmgw_json_getl(const llmgw_json_t *j, apr_int64_t dflt, ...);
double llmgw_json_getd(const llmgw_json_t *j, double dflt, ...);
int llmgw_json_getb(const llmgw_json_t *j, int dflt, ...);
apr_size_t llmgw_json_array_len(const llmgw_json_t *j);
llmgw_json_t *llmgw_json_array_get(const llmgw_json_t *j, apr_size_t i);
/* Element i as a double without a handle per element (long vectors). */
double llmgw_json_array_getd(const llmgw_json_t *j, apr_size_t i, double dflt);

/* Setters create intermediate objects along the path as needed. Strings
 * that are not valid UTF-8 are set with U+FFFD in place of each bad
 * sequence: what the gateway writes is always valid JSON. */
void llmgw_json_sets(llmgw_json_t *j, const char *value, ...);
void llmgw_json_setb(llmgw_json_t *j, int value, ...);
void llmgw_json_setl(llmgw_json_t *j, apr_int64_t value, ...);
void llmgw_json_setnull(llmgw_json_t *j, ...);
/* Puts v (shared, or for a read view an exact copy: numbers keep the
 * text they came as; NULL gives null) under the path. */
void llmgw_json_setj(llmgw_json_t *j, const llmgw_json_t *v, ...);
/* Removes a top-level member; a read view without it stays a view. */
void llmgw_json_del(llmgw_json_t *j, const char *key);

/* Appends to the array at j. */
void llmgw_json_array_adds(llmgw_json_t *j, const char *value);
void llmgw_json_array_addj(llmgw_json_t *j, const llmgw_json_t *v);
/* New empty array/object as member 'key' of j, returned for filling. */
llmgw_json_t *llmgw_json_add_array(llmgw_json_t *j, const char *key);
llmgw_json_t *llmgw_json_add_object(llmgw_json_t *j, const char *key);
llmgw_json_t *llmgw_json_array_add_object(llmgw_json_t *j);

/* Whether every member of the object j is named in allowed
 * (NULL-terminated); 1 for what is not an object, or NULL. */
int llmgw_json_keys_within(const llmgw_json_t *j, const char *const *allowed);

/* Compact text of j, valid as long as j's tree (for a read view: its
 * text as it came); *len may be NULL. */
const char *llmgw_json_write(const llmgw_json_t *j, apr_size_t *len);
/* The length of that text without making it (a read view's is known);
 * 0 for a NULL handle. */
apr_size_t llmgw_json_text_len(const llmgw_json_t *j);

/* The text of j, a read view of an object, with the values of the
 * top-level members keys[0..n) (n <= 32) replaced by the JSON texts
 * vals[0..n) (members not there are added at the end); a NULL value
 * leaves its member out (with its comma). Every other byte as it came.
 * NULL when j is not a read view of an object. From j's pool. */
const char *llmgw_json_edit(const llmgw_json_t *j, const char *const *keys,
                            const char *const *vals, int n, apr_size_t *len);

/* Canonical text of j: object keys sorted bytewise, no whitespace, each
 * number written one way only: integers by their digits (any size), other
 * numbers in the shortest form that reads back as the same double, and
 * integral doubles below 2^53 as integers (1, 1.0 and 1e0 alike). Distinct
 * values never share a text. Top-level members named in skip
 * (NULL-terminated, may be NULL) are left out. From p. */
const char *llmgw_json_write_canonical(apr_pool_t *p, const llmgw_json_t *j,
                                       const char *const *skip,
                                       apr_size_t *len);

/* s as a quoted JSON string literal (valid UTF-8, as for the setters),
 * allocated from p. */
const char *llmgw_json_quote(apr_pool_t *p, const char *s);

/* The length of the well-formed UTF-8 sequence at s, before end (shortest
 * form, no surrogates, at most U+10FFFF; an ASCII byte is 1), or 0: the
 * one UTF-8 check of the core. */
apr_size_t llmgw_utf8_len(const unsigned char *s, const unsigned char *end);

/* s[0..n) as valid UTF-8: s itself when it is, else a copy from p with
 * U+FFFD for each bad sequence; *outlen may be NULL. */
const char *llmgw_json_utf8_clean(apr_pool_t *p, const char *s, apr_size_t n,
                                  apr_size_t *outlen);

#endif
