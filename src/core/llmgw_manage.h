/* llmgw_manage: the backends and routes changed at run time (from the
 * console): one change checked against what is there, the resulting state,
 * the routes it makes, and that state as a text file kept across restarts.
 */
#ifndef LLMGW_MANAGE_H
#define LLMGW_MANAGE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

#include "llmgw_form.h"
#include "llmgw_route.h"

/* Bounds on what a change may carry and on what the state may hold: the
 * state lives in a fixed shared-memory copy and in a file read back at
 * start, so neither may grow without end. */
#define LLMGW_MANAGE_URL_MAX 256       /* bytes of a member's URL */
#define LLMGW_MANAGE_NAME_MAX 128      /* bytes of a model name or alias */
#define LLMGW_MANAGE_ENTRIES_MAX 256   /* members, names and routes in all */
#define LLMGW_MANAGE_LBFACTOR_MAX 100  /* mod_proxy's own range, from 1 */
#define LLMGW_MANAGE_TIMEOUT_MAX 86400 /* seconds of a member's timeout */
#define LLMGW_MANAGE_LINE_MAX 1024     /* bytes of a line of the file */
#define LLMGW_MANAGE_FILE_MAX \
    (LLMGW_MANAGE_LINE_MAX * (LLMGW_MANAGE_ENTRIES_MAX * 2 + 1))

typedef enum {
    LLMGW_CHANGE_NONE = 0,
    LLMGW_CHANGE_MEMBER_ADD,    /* balancer, url, lbfactor, timeout, probe */
    LLMGW_CHANGE_MEMBER_WEIGHT, /* balancer, url, lbfactor */
    LLMGW_CHANGE_MEMBER_REMOVE, /* balancer, url */
    LLMGW_CHANGE_NAME_ADD,      /* route, name */
    LLMGW_CHANGE_NAME_REMOVE,   /* route, name */
    LLMGW_CHANGE_ROUTE_ADD,     /* route, balancer, dialect */
    LLMGW_CHANGE_ROUTE_REMOVE   /* route (one added at run time) */
} llmgw_change_kind_t;

/* A member's probe kinds, as LLMHealthCheck's probe=. */
typedef enum {
    LLMGW_MANAGE_PROBE_NONE = 0, /* not probed: usable at once */
    LLMGW_MANAGE_PROBE_OLLAMA,
    LLMGW_MANAGE_PROBE_LLAMACPP,
    LLMGW_MANAGE_PROBE_VLLM,
    LLMGW_MANAGE_PROBE_OPENAI
} llmgw_manage_probe_t;

typedef struct {
    llmgw_change_kind_t kind;
    const char *balancer; /* "balancer://NAME" */
    const char *url;      /* a member: "http://host:port[/path]" */
    int lbfactor;         /* 1..100; 0: not given (add: 1) */
    int timeout;          /* seconds; 0: the balancer's */
    llmgw_manage_probe_t probe;
    const char *route;   /* a route's name (its first pattern) */
    const char *name;    /* a model name or alias */
    const char *dialect; /* route add: "openai" (default) or "ollama" */
} llmgw_change_t;

/* What httpd.conf made, which every change is checked against: the
 * routes and, per balancer, its members and how many members may still be
 * added (BalancerGrowth). */
typedef struct {
    const char *name;            /* "balancer://NAME" */
    apr_array_header_t *members; /* const char *: the workers' URLs */
    int growth;                  /* slots for members added at run time */
} llmgw_manage_balancer_t;

typedef struct {
    const llmgw_router_t *router;  /* the configured routes */
    apr_array_header_t *balancers; /* llmgw_manage_balancer_t */
    const llmgw_route_t *tmpl;     /* a new route's settings (cache policy
                                   * and the rest); NULL: all zero */
} llmgw_manage_base_t;

/* One entry of the state: a member (added, or a configured one whose
 * weight changed or that was removed), a name added to or removed from a
 * route, or a route added. */
typedef enum {
    LLMGW_ENTRY_MEMBER = 1,
    LLMGW_ENTRY_NAME,
    LLMGW_ENTRY_ROUTE
} llmgw_entry_kind_t;

typedef struct {
    llmgw_entry_kind_t kind;
    const char *balancer;
    const char *url;
    int configured; /* a member or name of httpd.conf */
    int removed;    /* a member drained and disabled; a name taken out */
    int lbfactor;   /* 0: as configured */
    int timeout;
    llmgw_manage_probe_t probe;
    const char *route;
    const char *name;
    const char *dialect;
} llmgw_manage_entry_t;

/* The state: every difference from httpd.conf, in the order made. */
typedef struct {
    apr_pool_t *pool;
    apr_array_header_t *entries; /* llmgw_manage_entry_t */
} llmgw_manage_t;

llmgw_manage_t *llmgw_manage_create(apr_pool_t *p);

/* Checks c against base and the state m: NULL, or why it is refused (a
 * message from p for the console): a URL that is not http(s) or not a
 * plain host[:port][/path], an unknown balancer, a member already there, no
 * BalancerGrowth slot left, an lbfactor or timeout out of range, a model
 * name with control characters, not UTF-8, a glob or over the bound, a
 * name already routed, one that a glob route serves now (it would shadow
 * that route), a route that is not there, too many entries. */
const char *llmgw_manage_check(apr_pool_t *p, const llmgw_manage_base_t *base,
                               const llmgw_manage_t *m,
                               const llmgw_change_t *c);

/* Checks c, then applies it to m (strings copied to m's pool): NULL, or
 * why it is refused, and then m is as it was. */
const char *llmgw_manage_apply(apr_pool_t *p, const llmgw_manage_base_t *base,
                               llmgw_manage_t *m, const llmgw_change_t *c);

/* The routes base's router and m make together, from p: each configured
 * route (a copy, with m's names added and removed), then m's routes. */
llmgw_router_t *llmgw_manage_router(apr_pool_t *p,
                                    const llmgw_manage_base_t *base,
                                    const llmgw_manage_t *m);

/* The state as the text of its file (see docs/console.md): a first line
 * {"llmgw_manage":1}, then one change per line, in JSON, whose replay
 * makes m again. From p. */
const char *llmgw_manage_write(apr_pool_t *p, const llmgw_manage_t *m,
                               apr_size_t *len);

/* Reads a state file's text into a new state in p: each line read by the
 * strict JSON reader, only the known members, each of the right type, and
 * replayed with llmgw_manage_apply. A text that does not read (a line too
 * long, bad JSON, a field unknown or of the wrong type, a bad header, too
 * large) gives NULL and *err; nothing of it is taken. A change that reads
 * but that httpd.conf no longer allows (its balancer gone, its name now
 * configured) is left out, and why goes to *dropped (const char *), if
 * not NULL. */
llmgw_manage_t *llmgw_manage_read(apr_pool_t *p,
                                  const llmgw_manage_base_t *base,
                                  const char *text, apr_size_t len,
                                  apr_array_header_t *dropped,
                                  const char **err);

/* Writes m to path atomically (path.tmp, fsync, rename), so that a crash
 * leaves the old file or the new one, never part of one. */
const char *llmgw_manage_save(apr_pool_t *p, const char *path,
                              const llmgw_manage_t *m);

/* Reads path (missing: an empty state) as llmgw_manage_read does. */
llmgw_manage_t *llmgw_manage_load(apr_pool_t *p, const char *path,
                                  const llmgw_manage_base_t *base,
                                  apr_array_header_t *dropped,
                                  const char **err);

/* The lines to put in httpd.conf to make m's changes permanent, with a
 * comment line before each group saying where they go. From p. */
const char *llmgw_manage_conf_lines(apr_pool_t *p, const llmgw_manage_t *m);

/* Text of a change's kind ("member_add", ...) and back (NONE when
 * unknown); of a probe kind ("none", "ollama", ...) and back (-1). */
const char *llmgw_change_kind_name(llmgw_change_kind_t k);
llmgw_change_kind_t llmgw_change_kind_parse(const char *s);
const char *llmgw_manage_probe_name(llmgw_manage_probe_t k);
int llmgw_manage_probe_parse(const char *s);

/* The console's form fields of a change: do (its kind's name), b (the
 * balancer), w (a member's URL), lbfactor, timeout, probe, route, name,
 * dialect. */
/* The change a console form asks for, into c: NULL, or why it is refused
 * (a number that is not one, an unknown probe kind). c->kind is NONE when
 * the form's do is not a change's. Strings are the form's. */
const char *llmgw_manage_from_form(apr_pool_t *p, const llmgw_form_t *f,
                                   llmgw_change_t *c);

/* A member's URL written one way (scheme and host in lower case, no "/"
 * at the end), or NULL and *why when it is not an http(s) URL of a plain
 * host[:port][/path]. From p. */
const char *llmgw_manage_url_norm(apr_pool_t *p, const char *url,
                                  const char **why);

#endif
