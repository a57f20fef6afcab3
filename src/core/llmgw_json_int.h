/* llmgw_json_int: what the reader (llmgw_json_read.c) and the handles'
 * side (llmgw_json.c) share: the handle and the read view's values. */
#ifndef LLMGW_JSON_INT_H
#define LLMGW_JSON_INT_H

#include <locale.h>

#include <json.h>

#include "llmgw_json.h"

/* A handle is json-c's (o) or a read-only view from the reader (v),
 * never both. */
typedef struct rval rval_t;

struct llmgw_json {
    apr_pool_t *p;
    json_object *o;
    const rval_t *v;
};

typedef struct {
    const char *key; /* decoded, NUL-terminated, no NUL inside */
    apr_size_t klen;
    const rval_t *val;
} rmember_t;

struct rval {
    llmgw_json_type_t type;
    const char *text; /* the value's JSON text */
    apr_size_t len;
    apr_size_t n; /* members, elements, or string bytes */
    int big;      /* an integer beyond 64 bits: u.i clamped */
    union {
        const rmember_t *m;
        const rval_t *const *a;
        const char *s; /* decoded, NUL-terminated */
        apr_int64_t i;
        double d;
        int b;
    } u;
};

/* A handle on the read value v, in p. */
llmgw_json_t *jr_wrap(apr_pool_t *p, const rval_t *v);

/* The C locale object: numbers are read and written in it, whatever
 * locale the process runs in (a decimal comma would change what "0.5"
 * means). */
locale_t jr_number_locale(void);

/* The length of the well-formed UTF-8 sequence at s (its lead byte is
 * not ASCII), or 0. */
apr_size_t jr_utf8_len(const unsigned char *s, const unsigned char *end);

#endif
