/* llmgw_json: json-c behind a pool-bound handle, so request code never
 * calls json_object_put and nothing leaks on an error path; and a
 * read-only view parsed into the pool (llmgw_json_read) behind the same
 * handle, for request bodies. */
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
    LLMGW_JSON_ERR_TRAILING
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

/* Parses exactly one JSON value (UTF-8 validated) filling buf[0..len).
 * The tree lives until p is cleared. Returns NULL and sets *err (and
 * *msg, a static text) on failure. */
llmgw_json_t *llmgw_json_parse(apr_pool_t *p, const char *buf,
                               apr_size_t len, llmgw_json_err_t *err,
                               const char **msg);

/* The same checks as llmgw_json_parse (strict JSON), but the tree is a
 * read-only view built in p, without json-c: no allocation outside the
 * pool, nothing to free. Getters, writing (the text as it came) and the
 * canonical text work on it; the first change to a handle turns that
 * handle into json-c's tree of its text (handles taken from it before do
 * not see the change). For request bodies, read often, changed rarely. */
llmgw_json_t *llmgw_json_read(apr_pool_t *p, const char *buf,
                              apr_size_t len, llmgw_json_err_t *err,
                              const char **msg);

/* Parses the first JSON value at buf (used to pick one object out of a
 * larger text); *used gets the number of bytes consumed. */
llmgw_json_t *llmgw_json_parse_prefix(apr_pool_t *p, const char *buf,
                                      apr_size_t len, apr_size_t *used);

llmgw_json_t *llmgw_json_create_object(apr_pool_t *p);

/* Getters take a NULL-terminated path of object keys. A missing key or a
 * value of another type gives LLMGW_JSON_MISSING / NULL / dflt. */
llmgw_json_type_t llmgw_json_type(const llmgw_json_t *j, ...);
llmgw_json_t *llmgw_json_getj(const llmgw_json_t *j, ...);
const char *llmgw_json_gets(const llmgw_json_t *j, ...);
apr_int64_t llmgw_json_getl(const llmgw_json_t *j, apr_int64_t dflt, ...);
double llmgw_json_getd(const llmgw_json_t *j, double dflt, ...);
int llmgw_json_getb(const llmgw_json_t *j, int dflt, ...);
apr_size_t llmgw_json_array_len(const llmgw_json_t *j);
llmgw_json_t *llmgw_json_array_get(const llmgw_json_t *j, apr_size_t i);
/* Element i as a double without a handle per element (long vectors). */
double llmgw_json_array_getd(const llmgw_json_t *j, apr_size_t i,
                             double dflt);

/* Setters create intermediate objects along the path as needed. */
void llmgw_json_sets(llmgw_json_t *j, const char *value, ...);
void llmgw_json_setb(llmgw_json_t *j, int value, ...);
void llmgw_json_setl(llmgw_json_t *j, apr_int64_t value, ...);
void llmgw_json_setnull(llmgw_json_t *j, ...);
/* Puts v (shared, not copied; NULL gives null) under the path. */
void llmgw_json_setj(llmgw_json_t *j, const llmgw_json_t *v, ...);
void llmgw_json_del(llmgw_json_t *j, const char *key);

/* Appends to the array at j. */
void llmgw_json_array_adds(llmgw_json_t *j, const char *value);
void llmgw_json_array_addj(llmgw_json_t *j, const llmgw_json_t *v);
/* New empty array/object as member 'key' of j, returned for filling. */
llmgw_json_t *llmgw_json_add_array(llmgw_json_t *j, const char *key);
llmgw_json_t *llmgw_json_add_object(llmgw_json_t *j, const char *key);
llmgw_json_t *llmgw_json_array_add_object(llmgw_json_t *j);

/* Compact text of j, valid as long as j's tree (for a read view: its
 * text as it came); *len may be NULL. */
const char *llmgw_json_write(const llmgw_json_t *j, apr_size_t *len);

/* Canonical text of j: object keys sorted bytewise, no whitespace, equal
 * numbers written alike (1 and 1.0 both as 1). Top-level members named in
 * skip (NULL-terminated, may be NULL) are left out. From p. */
const char *llmgw_json_write_canonical(apr_pool_t *p, const llmgw_json_t *j,
                                       const char *const *skip,
                                       apr_size_t *len);

/* s as a quoted JSON string literal, allocated from p. */
const char *llmgw_json_quote(apr_pool_t *p, const char *s);

#endif
