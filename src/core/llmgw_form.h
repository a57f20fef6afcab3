/* llmgw_form: the console's actions as they come in a POST body
 * (application/x-www-form-urlencoded): a bounded, strict parser of the
 * fields, the action they ask for, and the per-session nonce that must
 * come with it (an HMAC of the session under the server's secret). */
#ifndef LLMGW_FORM_H
#define LLMGW_FORM_H

#include <apr_pools.h>

#define LLMGW_FORM_BODY_MAX 4096 /* bytes of a body */
#define LLMGW_FORM_FIELDS 8      /* fields of a body */
#define LLMGW_FORM_VALUE_MAX 512 /* bytes of a decoded value */

typedef struct {
    int n;
    const char *name[LLMGW_FORM_FIELDS];
    const char *value[LLMGW_FORM_FIELDS];
} llmgw_form_t;

/* Parses body (len bytes, not NUL-terminated) into f, values
 * percent-decoded ('+' is a space) into p. Only names in allowed (a
 * NULL-ended list) are accepted, each at most once. NULL, or why the body
 * is refused (a static text): too long, too many fields, a name not
 * allowed or given twice, a bad escape, a NUL, a value too long or not
 * UTF-8. Nothing is taken from a refused body. */
const char *llmgw_form_parse(apr_pool_t *p, const char *body, apr_size_t len,
                             const char *const *allowed, llmgw_form_t *f);
/* The value of name, or NULL. */
const char *llmgw_form_get(const llmgw_form_t *f, const char *name);

typedef enum {
    LLMGW_ACT_NONE = 0,
    LLMGW_ACT_DRAIN,   /* a member: no new requests, those in flight end */
    LLMGW_ACT_DISABLE, /* a member: out */
    LLMGW_ACT_ENABLE,  /* a member: back, neither drained nor disabled */
    LLMGW_ACT_RESET,   /* a key's usage back to nothing */
    LLMGW_ACT_FLUSH    /* the cache, of one model or entirely */
} llmgw_action_kind_t;

typedef struct {
    llmgw_action_kind_t kind;
    const char *balancer; /* drain, disable, enable: "balancer://NAME" */
    const char *member;   /* the worker's name */
    const char *subject;  /* reset: the table's name ("key:A"), from kind
                           * and key, or key alone when it is that name */
    const char *model;    /* flush: NULL for all */
} llmgw_action_t;

/* The fields every action may have, for llmgw_form_parse. */
extern const char *const llmgw_action_fields[];

/* The action f asks for (its "do" and what that needs): NULL, or why it
 * is refused (a static text). From p. */
const char *llmgw_form_action(apr_pool_t *p, const llmgw_form_t *f,
                              llmgw_action_t *a);
/* "drain", "disable", ... */
const char *llmgw_action_name(llmgw_action_kind_t k);

#define LLMGW_NONCE_LEN 64 /* hex digits */

/* The nonce of a session: HMAC-SHA256 of session under secret, in hex,
 * into out (LLMGW_NONCE_LEN + 1 bytes). */
void llmgw_form_nonce(const unsigned char *secret, apr_size_t secret_len,
                      const char *session, char *out);
/* 1 if given is session's nonce (compared in constant time), else 0. */
int llmgw_form_nonce_ok(const unsigned char *secret, apr_size_t secret_len,
                        const char *session, const char *given);
/* 1 if s is a session id as the console makes them (32 hex digits). */
int llmgw_form_session_ok(const char *s);

#endif
