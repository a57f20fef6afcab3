/* llmgw_manage: run-time changes to members and routes, checked whole
 * before any is made, the routes they make, and their state file. */
#include <string.h>

#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>

#include "llmgw_json.h"
#include "llmgw_manage.h"

static const char *const kind_names[] = { "none",          "member_add",
                                          "member_weight", "member_remove",
                                          "name_add",      "name_remove",
                                          "route_add",     "route_remove" };
#define KIND_N (sizeof(kind_names) / sizeof(kind_names[0]))

static const char *const probe_names[] = { "none", "ollama", "llamacpp",
                                           "vllm", "openai" };
#define PROBE_N (sizeof(probe_names) / sizeof(probe_names[0]))

const char *llmgw_change_kind_name(llmgw_change_kind_t k)
{
    return (unsigned)k < KIND_N ? kind_names[k] : "none";
}

llmgw_change_kind_t llmgw_change_kind_parse(const char *s)
{
    unsigned i;

    for (i = 1; s && i < KIND_N; i++) {
        if (!strcmp(s, kind_names[i])) {
            return (llmgw_change_kind_t)i;
        }
    }
    return LLMGW_CHANGE_NONE;
}

const char *llmgw_manage_probe_name(llmgw_manage_probe_t k)
{
    return (unsigned)k < PROBE_N ? probe_names[k] : "none";
}

int llmgw_manage_probe_parse(const char *s)
{
    unsigned i;

    for (i = 0; s && i < PROBE_N; i++) {
        if (!strcmp(s, probe_names[i])) {
            return (int)i;
        }
    }
    return -1;
}

llmgw_manage_t *llmgw_manage_create(apr_pool_t *p)
{
    llmgw_manage_t *m = apr_pcalloc(p, sizeof(*m));

    m->pool = p;
    m->entries = apr_array_make(p, 8, sizeof(llmgw_manage_entry_t));
    return m;
}

/* ---------------------------------------------------------------------
 * A change from the console's form.
 */

/* A form's whole number of at most 6 digits into *v (empty: 0); 0 if it
 * is not one: a value that does not read is refused, never taken as 0. */
static int form_int(const llmgw_form_t *f, const char *name, int *v)
{
    const char *s = llmgw_form_get(f, name);
    int n = 0, i;

    *v = 0;
    for (i = 0; s && s[i]; i++) {
        if (!apr_isdigit(s[i]) || i >= 6) {
            return 0;
        }
        n = n * 10 + (s[i] - '0');
    }
    *v = n;
    return 1;
}

const char *llmgw_manage_from_form(apr_pool_t *p, const llmgw_form_t *f,
                                   llmgw_change_t *c)
{
    const char *probe = llmgw_form_get(f, "probe");
    int k;

    memset(c, 0, sizeof(*c));
    c->kind = llmgw_change_kind_parse(llmgw_form_get(f, "do"));
    if (c->kind == LLMGW_CHANGE_NONE) {
        return NULL;
    }
    c->balancer = llmgw_form_get(f, "b");
    c->url = llmgw_form_get(f, "w");
    c->route = llmgw_form_get(f, "route");
    c->name = llmgw_form_get(f, "name");
    c->dialect = llmgw_form_get(f, "dialect");
    if (c->dialect && !*c->dialect) {
        c->dialect = NULL;
    }
    if (!form_int(f, "lbfactor", &c->lbfactor)) {
        return "lbfactor is not a whole number";
    }
    if (!form_int(f, "timeout", &c->timeout)) {
        return "timeout is not a whole number of seconds";
    }
    k = probe && *probe ? llmgw_manage_probe_parse(probe) : 0;
    if (k < 0) {
        return apr_psprintf(p, "the probe kind is not one of none, ollama, "
                               "llamacpp, vllm, openai");
    }
    c->probe = (llmgw_manage_probe_t)k;
    return NULL;
}

/* ---------------------------------------------------------------------
 * What a change may name: URLs and model names.
 */

/* RFC 3986's characters of a path, without '?' and '#': what a worker's
 * URL may hold after its authority ('%' is checked apart). */
static int path_char(unsigned char c)
{
    return apr_isalnum(c) || (c && strchr("-._~!$&'()*+,;=:@/", c));
}

static const char *host_end(const char *h, const char **why)
{
    const char *s = h;

    if (*s == '[') { /* an IPv6 literal */
        for (s++; apr_isxdigit(*s) || *s == ':' || *s == '.'; s++) {
        }
        if (*s != ']' || s == h + 1) {
            *why = "its IPv6 address is not [hex:digits]";
            return NULL;
        }
        return s + 1;
    }
    for (; apr_isalnum(*s) || *s == '-' || *s == '.'; s++) {
    }
    if (s == h || s - h > 253) {
        *why = "it has no host name, or one with characters a host name "
               "does not have";
        return NULL;
    }
    return s;
}

static const char *port_end(const char *s, const char **why)
{
    const char *d = s;
    long port = 0;

    while (apr_isdigit(*d) && d - s < 6) {
        port = port * 10 + (*d++ - '0');
    }
    if (d == s || port < 1 || port > 65535) {
        *why = "its port is not a number from 1 to 65535";
        return NULL;
    }
    return d;
}

static int path_ok(const char *s)
{
    for (; *s; s++) {
        if (*s == '%') {
            if (!apr_isxdigit(s[1]) || !apr_isxdigit(s[2])) {
                return 0;
            }
            s += 2;
        }
        else if (!path_char((unsigned char)*s)) {
            return 0;
        }
    }
    return 1;
}

const char *llmgw_manage_url_norm(apr_pool_t *p, const char *url,
                                  const char **why)
{
    const char *rest, *h, *e;
    char *out;
    apr_size_t n, i;

    *why = NULL;
    if (!url || !*url) {
        *why = "no URL given";
        return NULL;
    }
    if (strlen(url) > LLMGW_MANAGE_URL_MAX) {
        *why = "it is longer than 256 bytes";
        return NULL;
    }
    if (!strncasecmp(url, "http://", 7)) {
        h = url + 7;
    }
    else if (!strncasecmp(url, "https://", 8)) {
        h = url + 8;
    }
    else {
        *why = "it is not an http:// or https:// URL";
        return NULL;
    }
    if (!(e = host_end(h, why))) {
        return NULL;
    }
    if (*e == ':' && !(e = port_end(e + 1, why))) {
        return NULL;
    }
    rest = e;
    if (*rest && (*rest != '/' || !path_ok(rest))) {
        *why = "after its host and port comes something other than a "
               "plain path (a query, a fragment, user info, a space or a "
               "control character)";
        return NULL;
    }
    n = strlen(url);
    while (n > (apr_size_t)(rest - url) && url[n - 1] == '/') {
        n--;
    }
    out = apr_pstrmemdup(p, url, n);
    for (i = 0; i < (apr_size_t)(rest - url); i++) {
        out[i] = (char)apr_tolower(out[i]);
    }
    return out;
}

/* Why name may not be routed at run time, or NULL. Quotes and
 * backslashes are refused too: the name goes into the lines to paste into
 * httpd.conf, where they would need escapes. */
static const char *name_invalid(apr_pool_t *p, const char *what,
                                const char *name)
{
    apr_size_t n, i;

    if (!name || !*name) {
        return apr_psprintf(p, "no %s given", what);
    }
    n = strlen(name);
    if (n > LLMGW_MANAGE_NAME_MAX) {
        return apr_psprintf(p, "the %s is longer than %d bytes", what,
                            LLMGW_MANAGE_NAME_MAX);
    }
    if (llmgw_json_utf8_clean(p, name, n, NULL) != name) {
        return apr_psprintf(p, "the %s is not UTF-8", what);
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c < 0x20 || c == 0x7f
            || (c == 0xc2 && (unsigned char)name[i + 1] < 0xa0)) {
            return apr_psprintf(p, "the %s holds a control character", what);
        }
        if (c == '"' || c == '\\') {
            return apr_psprintf(p, "the %s holds a quote or a backslash",
                                what);
        }
    }
    if (name[0] == ' ' || name[n - 1] == ' ') {
        return apr_psprintf(p, "the %s starts or ends with a space", what);
    }
    if (llmgw_pattern_is_glob(name)) {
        return apr_psprintf(p,
                            "the %s '%s' is a glob: globs are routed in "
                            "httpd.conf only (their order matters)",
                            what, name);
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * Look-ups in the base and the state.
 */

static const llmgw_manage_balancer_t *base_balancer(
    const llmgw_manage_base_t *base, const char *name)
{
    int i;

    for (i = 0; name && base->balancers && i < base->balancers->nelts; i++) {
        const llmgw_manage_balancer_t *b =
            &APR_ARRAY_IDX(base->balancers, i, llmgw_manage_balancer_t);

        if (!strcasecmp(b->name, name)) {
            return b;
        }
    }
    return NULL;
}

/* Whether the balancer's configuration has the member url (normalised). */
static int base_has_member(apr_pool_t *p, const llmgw_manage_balancer_t *b,
                           const char *url)
{
    const char *why, *n;
    int i;

    for (i = 0; b->members && i < b->members->nelts; i++) {
        const char *m = APR_ARRAY_IDX(b->members, i, const char *);

        n = llmgw_manage_url_norm(p, m, &why);
        if (!strcmp(n ? n : m, url)) {
            return 1;
        }
    }
    return 0;
}

static const llmgw_route_t *base_route(const llmgw_manage_base_t *base,
                                       const char *name)
{
    int i;

    for (i = 0; base->router && i < base->router->routes->nelts; i++) {
        const llmgw_route_t *r =
            APR_ARRAY_IDX(base->router->routes, i, const llmgw_route_t *);

        if (!strcmp(r->name, name)) {
            return r;
        }
    }
    return NULL;
}

#define ENTRY(m, i) (&APR_ARRAY_IDX((m)->entries, (i), llmgw_manage_entry_t))

static int find_member(const llmgw_manage_t *m, const char *balancer,
                       const char *url)
{
    int i;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);

        if (e->kind == LLMGW_ENTRY_MEMBER && !strcasecmp(e->balancer, balancer)
            && !strcmp(e->url, url)) {
            return i;
        }
    }
    return -1;
}

static int find_name(const llmgw_manage_t *m, const char *route,
                     const char *name)
{
    int i;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);

        if (e->kind == LLMGW_ENTRY_NAME && !strcmp(e->route, route)
            && !strcmp(e->name, name)) {
            return i;
        }
    }
    return -1;
}

static int find_route(const llmgw_manage_t *m, const char *route)
{
    int i;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);

        if (e->kind == LLMGW_ENTRY_ROUTE && !strcmp(e->route, route)) {
            return i;
        }
    }
    return -1;
}

/* Members added at run time to the balancer: each holds a growth slot
 * for the process's life, removed or not (mod_proxy cannot free one). */
static int slots_used(const llmgw_manage_t *m, const char *balancer)
{
    int i, n = 0;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);

        n += e->kind == LLMGW_ENTRY_MEMBER && !e->configured
             && !strcasecmp(e->balancer, balancer);
    }
    return n;
}

static void del_entry(llmgw_manage_t *m, int i)
{
    int n = m->entries->nelts;

    memmove(ENTRY(m, i), ENTRY(m, i + 1),
            (apr_size_t)(n - i - 1) * sizeof(llmgw_manage_entry_t));
    m->entries->nelts--;
}

/* ---------------------------------------------------------------------
 * Checks, one kind of change after the other.
 */

static const char *full(apr_pool_t *p)
{
    return apr_psprintf(p,
                        "there are %d run-time changes already, the most "
                        "kept: put some into httpd.conf first",
                        LLMGW_MANAGE_ENTRIES_MAX);
}

/* The member's balancer and normalised URL, or why not. */
static const char *member_target(apr_pool_t *p,
                                 const llmgw_manage_base_t *base,
                                 const llmgw_change_t *c,
                                 const llmgw_manage_balancer_t **b,
                                 const char **url)
{
    const char *why;

    if (!c->balancer || !(*b = base_balancer(base, c->balancer))) {
        return apr_psprintf(p, "there is no balancer '%s' in httpd.conf",
                            c->balancer ? c->balancer : "");
    }
    if (!(*url = llmgw_manage_url_norm(p, c->url, &why))) {
        return apr_psprintf(p, "the member URL '%s' is refused: %s",
                            c->url ? c->url : "", why);
    }
    return NULL;
}

static const char *check_lbfactor(apr_pool_t *p, int v, int needed)
{
    if ((needed || v) && (v < 1 || v > LLMGW_MANAGE_LBFACTOR_MAX)) {
        return apr_psprintf(p, "lbfactor must be a whole number from 1 to "
                               "100 (mod_proxy's range)");
    }
    return NULL;
}

static const char *check_member_add(apr_pool_t *p,
                                    const llmgw_manage_base_t *base,
                                    const llmgw_manage_t *m,
                                    const llmgw_change_t *c)
{
    const llmgw_manage_balancer_t *b;
    const char *url, *err;
    int i;

    if ((err = member_target(p, base, c, &b, &url))
        || (err = check_lbfactor(p, c->lbfactor, 0))) {
        return err;
    }
    if (c->timeout < 0 || c->timeout > LLMGW_MANAGE_TIMEOUT_MAX) {
        return "timeout must be a number of seconds from 1 to 86400 (or "
               "empty: the balancer's)";
    }
    if ((unsigned)c->probe >= PROBE_N) {
        return "the probe kind is not one of none, ollama, llamacpp, vllm, "
               "openai";
    }
    i = find_member(m, b->name, url);
    if (i >= 0 && ENTRY(m, i)->removed) {
        return NULL; /* taken back: its worker is there still */
    }
    if (i >= 0 || base_has_member(p, b, url)) {
        return apr_psprintf(p, "%s is a member of %s already", url, b->name);
    }
    if (slots_used(m, b->name) >= b->growth) {
        return apr_psprintf(p,
                            "%s has no free BalancerGrowth slot (%d, used "
                            "by members added since the start): raise its "
                            "growth (ProxySet growth=N in its <Proxy>) and "
                            "restart",
                            b->name, b->growth);
    }
    if (m->entries->nelts >= LLMGW_MANAGE_ENTRIES_MAX) {
        return full(p);
    }
    return NULL;
}

/* A member's weight or its removal: it must be there, not removed. */
static const char *check_member_change(apr_pool_t *p,
                                       const llmgw_manage_base_t *base,
                                       const llmgw_manage_t *m,
                                       const llmgw_change_t *c)
{
    const llmgw_manage_balancer_t *b;
    const char *url, *err;
    int i;

    if ((err = member_target(p, base, c, &b, &url))) {
        return err;
    }
    if (c->kind == LLMGW_CHANGE_MEMBER_WEIGHT
        && (err = check_lbfactor(p, c->lbfactor, 1))) {
        return err;
    }
    i = find_member(m, b->name, url);
    if (i < 0 && !base_has_member(p, b, url)) {
        return apr_psprintf(p, "%s is not a member of %s", url, b->name);
    }
    if (i >= 0 && ENTRY(m, i)->removed) {
        return apr_psprintf(p, "%s was removed from %s: add it again first",
                            url, b->name);
    }
    if (i < 0 && m->entries->nelts >= LLMGW_MANAGE_ENTRIES_MAX) {
        return full(p);
    }
    return NULL;
}

/* A route by its name, configured or added; *added says which. */
static const char *route_target(apr_pool_t *p, const llmgw_manage_base_t *base,
                                const llmgw_manage_t *m, const char *route,
                                int *added)
{
    *added = 0;
    if (route && base_route(base, route)) {
        return NULL;
    }
    if (route && find_route(m, route) >= 0) {
        *added = 1;
        return NULL;
    }
    return apr_psprintf(p, "there is no route '%s'", route ? route : "");
}

/* Whether name may be routed by route (NULL: a new route): not routed
 * already, and not served now by a glob route other than route, whose
 * requests for it would move (the new name would shadow that route),
 * unless the name is route's own in httpd.conf, put back. */
static const char *name_free(apr_pool_t *p, const llmgw_manage_base_t *base,
                             const llmgw_manage_t *m, const char *route,
                             const char *name, int restoring)
{
    llmgw_router_t *rt = llmgw_manage_router(p, base, m);
    const llmgw_route_t *r;

    r = apr_hash_get(rt->exact, name, APR_HASH_KEY_STRING);
    if (r) {
        return apr_psprintf(p,
                            "the model name '%s' is routed by route '%s' "
                            "already",
                            name, r->name);
    }
    r = llmgw_router_find(rt, name);
    if (r && !restoring && (!route || strcmp(r->name, route))) {
        return apr_psprintf(p,
                            "the model name '%s' is served now by the glob "
                            "route '%s': routing it elsewhere would shadow "
                            "that route",
                            name, r->name);
    }
    return NULL;
}

static const char *check_name_add(apr_pool_t *p,
                                  const llmgw_manage_base_t *base,
                                  const llmgw_manage_t *m,
                                  const llmgw_change_t *c)
{
    const char *err;
    int added, i;

    if ((err = route_target(p, base, m, c->route, &added))
        || (err = name_invalid(p, "model name", c->name))) {
        return err;
    }
    i = find_name(m, c->route, c->name);
    if ((err = name_free(p, base, m, c->route, c->name,
                         i >= 0 && ENTRY(m, i)->removed))) {
        return err;
    }
    if (i < 0 && m->entries->nelts >= LLMGW_MANAGE_ENTRIES_MAX) {
        return full(p);
    }
    return NULL;
}

static const char *check_name_remove(apr_pool_t *p,
                                     const llmgw_manage_base_t *base,
                                     const llmgw_manage_t *m,
                                     const llmgw_change_t *c)
{
    llmgw_router_t *rt;
    const llmgw_route_t *r;
    const char *err;
    int added;

    if ((err = route_target(p, base, m, c->route, &added))) {
        return err;
    }
    if (added && c->name && !strcmp(c->name, c->route)) {
        return apr_psprintf(p, "'%s' names the route: remove the route",
                            c->name);
    }
    rt = llmgw_manage_router(p, base, m);
    r = c->name ? apr_hash_get(rt->exact, c->name, APR_HASH_KEY_STRING) : NULL;
    if (!r || strcmp(r->name, c->route)) {
        return apr_psprintf(p, "route '%s' has no model name '%s'", c->route,
                            c->name ? c->name : "");
    }
    if (!added && find_name(m, c->route, c->name) < 0
        && m->entries->nelts >= LLMGW_MANAGE_ENTRIES_MAX) {
        return full(p);
    }
    return NULL;
}

static const char *check_route_add(apr_pool_t *p,
                                   const llmgw_manage_base_t *base,
                                   const llmgw_manage_t *m,
                                   const llmgw_change_t *c)
{
    const char *err;

    if ((err = name_invalid(p, "route name", c->route))) {
        return err;
    }
    if (!c->balancer || !base_balancer(base, c->balancer)) {
        return apr_psprintf(p, "there is no balancer '%s' in httpd.conf",
                            c->balancer ? c->balancer : "");
    }
    if (c->dialect && strcmp(c->dialect, "openai")
        && strcmp(c->dialect, "ollama")) {
        return "the dialect is not openai or ollama";
    }
    if (base_route(base, c->route) || find_route(m, c->route) >= 0) {
        return apr_psprintf(p, "there is a route '%s' already", c->route);
    }
    if ((err = name_free(p, base, m, NULL, c->route, 0))) {
        return err;
    }
    if (m->entries->nelts >= LLMGW_MANAGE_ENTRIES_MAX) {
        return full(p);
    }
    return NULL;
}

static const char *check_route_remove(apr_pool_t *p,
                                      const llmgw_manage_base_t *base,
                                      const llmgw_manage_t *m,
                                      const llmgw_change_t *c)
{
    const llmgw_route_t *r = c->route ? base_route(base, c->route) : NULL;

    if (r) {
        return apr_psprintf(p,
                            "route '%s' is in httpd.conf (%s:%d): take its "
                            "names out one by one, or edit httpd.conf",
                            r->name, r->file ? r->file : "?", r->line);
    }
    if (!c->route || find_route(m, c->route) < 0) {
        return apr_psprintf(p, "there is no route '%s' added at run time",
                            c->route ? c->route : "");
    }
    return NULL;
}

const char *llmgw_manage_check(apr_pool_t *p, const llmgw_manage_base_t *base,
                               const llmgw_manage_t *m,
                               const llmgw_change_t *c)
{
    switch (c->kind) {
    case LLMGW_CHANGE_MEMBER_ADD: return check_member_add(p, base, m, c);
    case LLMGW_CHANGE_MEMBER_WEIGHT:
    case LLMGW_CHANGE_MEMBER_REMOVE: return check_member_change(p, base, m, c);
    case LLMGW_CHANGE_NAME_ADD: return check_name_add(p, base, m, c);
    case LLMGW_CHANGE_NAME_REMOVE: return check_name_remove(p, base, m, c);
    case LLMGW_CHANGE_ROUTE_ADD: return check_route_add(p, base, m, c);
    case LLMGW_CHANGE_ROUTE_REMOVE: return check_route_remove(p, base, m, c);
    default: return "no such change";
    }
}

/* ---------------------------------------------------------------------
 * Applying a checked change.
 */

static llmgw_manage_entry_t *new_entry(llmgw_manage_t *m,
                                       llmgw_entry_kind_t kind)
{
    llmgw_manage_entry_t *e =
        &APR_ARRAY_PUSH(m->entries, llmgw_manage_entry_t);

    memset(e, 0, sizeof(*e));
    e->kind = kind;
    return e;
}

static const char *keep(llmgw_manage_t *m, const char *s)
{
    return s ? apr_pstrdup(m->pool, s) : NULL;
}

/* A configured member or name whose entry says nothing any more. */
static void drop_if_plain(llmgw_manage_t *m, int i)
{
    const llmgw_manage_entry_t *e = ENTRY(m, i);

    if (e->configured && !e->removed && !e->lbfactor) {
        del_entry(m, i);
    }
}

static void apply_member(apr_pool_t *p, const llmgw_manage_base_t *base,
                         llmgw_manage_t *m, const llmgw_change_t *c)
{
    const llmgw_manage_balancer_t *b = base_balancer(base, c->balancer);
    const char *why, *url = llmgw_manage_url_norm(p, c->url, &why);
    int i = find_member(m, b->name, url);
    llmgw_manage_entry_t *e;

    if (i < 0) {
        e = new_entry(m, LLMGW_ENTRY_MEMBER);
        e->balancer = keep(m, b->name);
        e->url = keep(m, url);
        e->configured = c->kind != LLMGW_CHANGE_MEMBER_ADD;
        i = m->entries->nelts - 1;
    }
    e = ENTRY(m, i);
    if (c->kind == LLMGW_CHANGE_MEMBER_ADD) {
        e->removed = 0;
        e->lbfactor = c->lbfactor ? c->lbfactor : (e->configured ? 0 : 1);
        if (!e->configured) {
            e->timeout = c->timeout;
            e->probe = c->probe;
        }
    }
    else if (c->kind == LLMGW_CHANGE_MEMBER_WEIGHT) {
        e->lbfactor = c->lbfactor;
    }
    else {
        e->removed = 1;
    }
    drop_if_plain(m, i);
}

static void apply_name(llmgw_manage_t *m, const llmgw_change_t *c)
{
    int i = find_name(m, c->route, c->name);
    llmgw_manage_entry_t *e;

    if (c->kind == LLMGW_CHANGE_NAME_ADD) {
        if (i >= 0) { /* a configured name taken out, back now */
            del_entry(m, i);
            return;
        }
        e = new_entry(m, LLMGW_ENTRY_NAME);
    }
    else {
        if (i >= 0) { /* a name added at run time */
            del_entry(m, i);
            return;
        }
        e = new_entry(m, LLMGW_ENTRY_NAME);
        e->configured = 1;
        e->removed = 1;
    }
    e->route = keep(m, c->route);
    e->name = keep(m, c->name);
}

static void apply_route(llmgw_manage_t *m, const llmgw_manage_base_t *base,
                        const llmgw_change_t *c)
{
    llmgw_manage_entry_t *e;
    int i;

    if (c->kind == LLMGW_CHANGE_ROUTE_REMOVE) {
        for (i = m->entries->nelts - 1; i >= 0; i--) {
            e = ENTRY(m, i);
            if ((e->kind == LLMGW_ENTRY_ROUTE || e->kind == LLMGW_ENTRY_NAME)
                && !strcmp(e->route, c->route)) {
                del_entry(m, i);
            }
        }
        return;
    }
    e = new_entry(m, LLMGW_ENTRY_ROUTE);
    e->route = keep(m, c->route);
    e->balancer = keep(m, base_balancer(base, c->balancer)->name);
    e->dialect = keep(m, c->dialect ? c->dialect : "openai");
}

const char *llmgw_manage_apply(apr_pool_t *p, const llmgw_manage_base_t *base,
                               llmgw_manage_t *m, const llmgw_change_t *c)
{
    const char *err = llmgw_manage_check(p, base, m, c);

    if (err) {
        return err;
    }
    switch (c->kind) {
    case LLMGW_CHANGE_MEMBER_ADD:
    case LLMGW_CHANGE_MEMBER_WEIGHT:
    case LLMGW_CHANGE_MEMBER_REMOVE: apply_member(p, base, m, c); break;
    case LLMGW_CHANGE_NAME_ADD:
    case LLMGW_CHANGE_NAME_REMOVE: apply_name(m, c); break;
    default: apply_route(m, base, c); break;
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * The routes with the changes.
 */

/* Whether the state takes name out of the configured route. */
static int name_removed(const llmgw_manage_t *m, const char *route,
                        const char *name)
{
    int i = find_name(m, route, name);

    return i >= 0 && ENTRY(m, i)->removed;
}

/* The names the state adds to route, pushed onto pats. */
static void names_added(const llmgw_manage_t *m, const char *route,
                        apr_array_header_t *pats)
{
    int i;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);

        if (e->kind == LLMGW_ENTRY_NAME && !e->removed
            && !strcmp(e->route, route)) {
            APR_ARRAY_PUSH(pats, const char *) = e->name;
        }
    }
}

/* Adds r with only those of its patterns not routed yet: the checks keep
 * two routes from claiming one name, and should they have missed one, the
 * first claim holds rather than a route half in the table. */
static void add_route(apr_pool_t *p, llmgw_router_t *rt, llmgw_route_t *r)
{
    apr_array_header_t *pats = r->patterns;
    int i;

    r->patterns = apr_array_make(p, pats->nelts, sizeof(const char *));
    for (i = 0; i < pats->nelts; i++) {
        const char *pat = APR_ARRAY_IDX(pats, i, const char *);

        if (llmgw_pattern_is_glob(pat)
            || !apr_hash_get(rt->exact, pat, APR_HASH_KEY_STRING)) {
            APR_ARRAY_PUSH(r->patterns, const char *) = pat;
        }
    }
    llmgw_router_add(p, rt, r);
}

static llmgw_route_t *new_route(apr_pool_t *p, const llmgw_manage_base_t *base,
                                const llmgw_manage_entry_t *e)
{
    llmgw_route_t *r = apr_pcalloc(p, sizeof(*r));

    if (base->tmpl) {
        *r = *base->tmpl;
    }
    r->name = e->route;
    r->balancer = e->balancer;
    r->dialect = e->dialect;
    r->upstream_model = e->route;
    r->discover = 0;
    r->discovered = NULL;
    r->fallbacks = NULL;
    r->file = r->backend_file = "(console)";
    r->line = r->backend_line = 0;
    r->patterns = apr_array_make(p, 2, sizeof(const char *));
    APR_ARRAY_PUSH(r->patterns, const char *) = e->route;
    return r;
}

llmgw_router_t *llmgw_manage_router(apr_pool_t *p,
                                    const llmgw_manage_base_t *base,
                                    const llmgw_manage_t *m)
{
    llmgw_router_t *rt = llmgw_router_create(p);
    int i, k;

    if (base->router) {
        rt->created = base->router->created;
        for (i = 0; i < base->router->routes->nelts; i++) {
            const llmgw_route_t *cr =
                APR_ARRAY_IDX(base->router->routes, i, const llmgw_route_t *);
            llmgw_route_t *r = apr_pmemdup(p, cr, sizeof(*r));

            r->patterns = apr_array_make(p, cr->patterns->nelts + 1,
                                         sizeof(const char *));
            for (k = 0; k < cr->patterns->nelts; k++) {
                const char *pat = APR_ARRAY_IDX(cr->patterns, k, const char *);

                if (!name_removed(m, cr->name, pat)) {
                    APR_ARRAY_PUSH(r->patterns, const char *) = pat;
                }
            }
            names_added(m, cr->name, r->patterns);
            add_route(p, rt, r);
        }
    }
    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);

        if (e->kind == LLMGW_ENTRY_ROUTE) {
            llmgw_route_t *r = new_route(p, base, e);

            names_added(m, e->route, r->patterns);
            add_route(p, rt, r);
        }
    }
    return rt;
}
