/* llmgw_manage_file: the run-time changes' state as text: its file (JSON
 * lines, read strictly, written atomically) and the httpd.conf lines. */
#include <string.h>

#include <apr_file_io.h>
#include <apr_strings.h>

#include "llmgw_buf.h"
#include "llmgw_json.h"
#include "llmgw_manage.h"

#define HEADER "{\"llmgw_manage\":1}"

#define ENTRY(m, i) (&APR_ARRAY_IDX((m)->entries, (i), llmgw_manage_entry_t))

/* ---------------------------------------------------------------------
 * Writing: each entry as the changes that make it again.
 */

static void put_str(llmgw_json_t *o, const char *k, const char *v)
{
    if (v) {
        llmgw_json_sets(o, v, k, NULL);
    }
}

static llmgw_json_t *change_obj(apr_pool_t *p, llmgw_change_kind_t k)
{
    llmgw_json_t *o = llmgw_json_create_object(p);

    llmgw_json_sets(o, llmgw_change_kind_name(k), "op", NULL);
    return o;
}

static void add_line(apr_array_header_t *lines, const llmgw_json_t *o)
{
    APR_ARRAY_PUSH(lines, const char *) = llmgw_json_write(o, NULL);
}

static void member_lines(apr_pool_t *p, const llmgw_manage_entry_t *e,
                         apr_array_header_t *lines)
{
    llmgw_json_t *o;

    if (!e->configured) {
        if (e->removed) {
            return; /* gone with its worker once httpd stops */
        }
        o = change_obj(p, LLMGW_CHANGE_MEMBER_ADD);
        put_str(o, "balancer", e->balancer);
        put_str(o, "url", e->url);
        llmgw_json_setl(o, e->lbfactor, "lbfactor", NULL);
        if (e->timeout) {
            llmgw_json_setl(o, e->timeout, "timeout", NULL);
        }
        put_str(o, "probe", llmgw_manage_probe_name(e->probe));
        add_line(lines, o);
        return;
    }
    if (e->lbfactor) {
        o = change_obj(p, LLMGW_CHANGE_MEMBER_WEIGHT);
        put_str(o, "balancer", e->balancer);
        put_str(o, "url", e->url);
        llmgw_json_setl(o, e->lbfactor, "lbfactor", NULL);
        add_line(lines, o);
    }
    if (e->removed) {
        o = change_obj(p, LLMGW_CHANGE_MEMBER_REMOVE);
        put_str(o, "balancer", e->balancer);
        put_str(o, "url", e->url);
        add_line(lines, o);
    }
}

static void entry_lines(apr_pool_t *p, const llmgw_manage_entry_t *e,
                        apr_array_header_t *lines)
{
    llmgw_json_t *o;

    switch (e->kind) {
    case LLMGW_ENTRY_MEMBER: member_lines(p, e, lines); return;
    case LLMGW_ENTRY_NAME:
        o = change_obj(p, e->removed ? LLMGW_CHANGE_NAME_REMOVE
                                     : LLMGW_CHANGE_NAME_ADD);
        put_str(o, "route", e->route);
        put_str(o, "name", e->name);
        break;
    default:
        o = change_obj(p, LLMGW_CHANGE_ROUTE_ADD);
        put_str(o, "route", e->route);
        put_str(o, "balancer", e->balancer);
        put_str(o, "dialect", e->dialect);
        break;
    }
    add_line(lines, o);
}

const char *llmgw_manage_write(apr_pool_t *p, const llmgw_manage_t *m,
                               apr_size_t *len)
{
    apr_array_header_t *lines =
        apr_array_make(p, m->entries->nelts + 2, sizeof(const char *));
    const char *text;
    int i;

    APR_ARRAY_PUSH(lines, const char *) = HEADER;
    for (i = 0; i < m->entries->nelts; i++) {
        entry_lines(p, ENTRY(m, i), lines);
    }
    APR_ARRAY_PUSH(lines, const char *) = "";
    text = apr_array_pstrcat(p, lines, '\n');
    if (len) {
        *len = strlen(text);
    }
    return text;
}

/* ---------------------------------------------------------------------
 * Reading: every line whole and of the right shape, or nothing.
 */

static const char *const fields[] = { "op",       "balancer", "url",
                                      "lbfactor", "timeout",  "probe",
                                      "route",    "name",     "dialect",
                                      NULL };

static const char *get_str(const llmgw_json_t *o, const char *k, int *bad)
{
    llmgw_json_type_t t = llmgw_json_type(o, k, NULL);

    if (t != LLMGW_JSON_MISSING && t != LLMGW_JSON_STRING) {
        *bad = 1;
    }
    return llmgw_json_gets(o, k, NULL);
}

static int get_int(const llmgw_json_t *o, const char *k, int *bad)
{
    llmgw_json_type_t t = llmgw_json_type(o, k, NULL);
    apr_int64_t v;

    if (t == LLMGW_JSON_MISSING) {
        return 0;
    }
    v = llmgw_json_getl(o, -1, k, NULL);
    if (t != LLMGW_JSON_INT || v < 0 || v > LLMGW_MANAGE_TIMEOUT_MAX) {
        *bad = 1;
        return 0;
    }
    return (int)v;
}

/* One line into c: NULL, or why it does not read. */
static const char *read_change(apr_pool_t *p, const char *s, apr_size_t n,
                               llmgw_change_t *c)
{
    llmgw_json_err_t jerr;
    const char *msg, *probe;
    llmgw_json_t *o = llmgw_json_read(p, s, n, &jerr, &msg);
    int bad = 0, k;

    if (!o) {
        return apr_psprintf(p, "not JSON (%s)", msg);
    }
    if (llmgw_json_type(o, NULL) != LLMGW_JSON_OBJECT
        || !llmgw_json_keys_within(o, fields)) {
        return "not an object of the known fields";
    }
    memset(c, 0, sizeof(*c));
    c->kind = llmgw_change_kind_parse(get_str(o, "op", &bad));
    c->balancer = get_str(o, "balancer", &bad);
    c->url = get_str(o, "url", &bad);
    c->lbfactor = get_int(o, "lbfactor", &bad);
    c->timeout = get_int(o, "timeout", &bad);
    c->route = get_str(o, "route", &bad);
    c->name = get_str(o, "name", &bad);
    c->dialect = get_str(o, "dialect", &bad);
    probe = get_str(o, "probe", &bad);
    k = probe ? llmgw_manage_probe_parse(probe) : 0;
    if (bad || k < 0 || c->kind == LLMGW_CHANGE_NONE) {
        return "an unknown op or probe, or a field of the wrong type";
    }
    c->probe = (llmgw_manage_probe_t)k;
    return NULL;
}

/* The next line of text (without its "\n"), or NULL at the end; a last
 * line without "\n" counts as one. */
static const char *next_line(const char **at, const char *end, apr_size_t *n)
{
    const char *s = *at, *nl;

    if (s >= end) {
        return NULL;
    }
    nl = memchr(s, '\n', (apr_size_t)(end - s));
    *n = (apr_size_t)((nl ? nl : end) - s);
    *at = nl ? nl + 1 : end;
    return s;
}

/* Every change of text, read, into changes: NULL or why not. */
static const char *read_changes(apr_pool_t *p, const char *text,
                                apr_size_t len, apr_array_header_t *changes)
{
    const char *at = text, *end = text + len, *s, *why;
    apr_size_t n;
    int line = 0;

    if (len > LLMGW_MANAGE_FILE_MAX) {
        return "the file is larger than its bound";
    }
    while ((s = next_line(&at, end, &n)) != NULL) {
        line++;
        if (n > LLMGW_MANAGE_LINE_MAX) {
            return apr_psprintf(p, "line %d is longer than %d bytes", line,
                                LLMGW_MANAGE_LINE_MAX);
        }
        if (line == 1) {
            if (n != sizeof(HEADER) - 1 || memcmp(s, HEADER, n)) {
                return "line 1 is not " HEADER;
            }
            continue;
        }
        if (changes->nelts >= 2 * LLMGW_MANAGE_ENTRIES_MAX) {
            return "more changes than the state can hold";
        }
        why = read_change(p, s, n, &APR_ARRAY_PUSH(changes, llmgw_change_t));
        if (why) {
            return apr_psprintf(p, "line %d: %s", line, why);
        }
    }
    return line ? NULL : "the file is empty (no " HEADER " line)";
}

llmgw_manage_t *llmgw_manage_read(apr_pool_t *p,
                                  const llmgw_manage_base_t *base,
                                  const char *text, apr_size_t len,
                                  apr_array_header_t *dropped,
                                  const char **err)
{
    apr_array_header_t *changes = apr_array_make(p, 8, sizeof(llmgw_change_t));
    llmgw_manage_t *m;
    const char *why;
    int i;

    if ((*err = read_changes(p, text, len, changes)) != NULL) {
        return NULL;
    }
    m = llmgw_manage_create(p);
    for (i = 0; i < changes->nelts; i++) {
        const llmgw_change_t *c = &APR_ARRAY_IDX(changes, i, llmgw_change_t);

        why = llmgw_manage_apply(p, base, m, c);
        if (why && dropped) {
            APR_ARRAY_PUSH(dropped, const char *) =
                apr_psprintf(p, "line %d (%s) left out: %s", i + 2,
                             llmgw_change_kind_name(c->kind), why);
        }
    }
    return m;
}

/* ---------------------------------------------------------------------
 * The file.
 */

const char *llmgw_manage_save(apr_pool_t *p, const char *path,
                              const llmgw_manage_t *m)
{
    apr_size_t len;
    const char *text = llmgw_manage_write(p, m, &len);
    apr_status_t rv = llmgw_file_replace(p, path, text, len, 1, NULL);
    char buf[120];

    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "cannot write %s: %s", path,
                            apr_strerror(rv, buf, sizeof(buf)));
    }
    return NULL;
}

llmgw_manage_t *llmgw_manage_load(apr_pool_t *p, const char *path,
                                  const llmgw_manage_base_t *base,
                                  apr_array_header_t *dropped,
                                  const char **err)
{
    apr_status_t rv;
    apr_size_t len;
    char *text, buf[120];

    *err = NULL;
    rv = llmgw_file_read(p, path, LLMGW_MANAGE_FILE_MAX, &text, &len);
    if (APR_STATUS_IS_ENOENT(rv)) {
        return llmgw_manage_create(p);
    }
    if (rv == APR_ENOSPC) {
        *err = apr_psprintf(p, "%s is larger than its bound (%d bytes)", path,
                            LLMGW_MANAGE_FILE_MAX);
        return NULL;
    }
    if (rv != APR_SUCCESS) {
        *err = apr_psprintf(p, "cannot read %s: %s", path,
                            apr_strerror(rv, buf, sizeof(buf)));
        return NULL;
    }
    return llmgw_manage_read(p, base, text, len, dropped, err);
}

/* ---------------------------------------------------------------------
 * The lines to paste into httpd.conf.
 */

static const char *member_conf(apr_pool_t *p, const llmgw_manage_entry_t *e)
{
    const char *where = apr_psprintf(p, "# in <Proxy \"%s\">", e->balancer);

    if (e->configured && e->removed) {
        return apr_psprintf(p, "%s, delete:\n#   BalancerMember \"%s\"\n",
                            where, e->url);
    }
    if (e->removed) {
        return "";
    }
    return apr_psprintf(
        p, "%s%s:\nBalancerMember \"%s\" lbfactor=%d%s\n%s", where,
        e->configured ? ", the member's line with" : "", e->url,
        e->lbfactor ? e->lbfactor : 1,
        e->timeout ? apr_psprintf(p, " timeout=%d", e->timeout) : "",
        e->probe ? apr_psprintf(p,
                                "# probe=%s: LLMHealthCheck on probe=%s in "
                                "the routes of %s\n",
                                llmgw_manage_probe_name(e->probe),
                                llmgw_manage_probe_name(e->probe), e->balancer)
                 : "");
}

static const char *route_conf(apr_pool_t *p, const llmgw_manage_t *m,
                              const llmgw_manage_entry_t *e)
{
    const char *names = apr_psprintf(p, "\"%s\"", e->route);
    int i;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *n = ENTRY(m, i);

        if (n->kind == LLMGW_ENTRY_NAME && !strcmp(n->route, e->route)) {
            names = apr_psprintf(p, "%s \"%s\"", names, n->name);
        }
    }
    return apr_psprintf(p,
                        "<LLMRoute %s>\n    LLMBackend %s dialect=%s\n"
                        "</LLMRoute>\n",
                        names, e->balancer, e->dialect);
}

static int is_new_route(const llmgw_manage_t *m, const char *route)
{
    int i;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);

        if (e->kind == LLMGW_ENTRY_ROUTE && !strcmp(e->route, route)) {
            return 1;
        }
    }
    return 0;
}

const char *llmgw_manage_conf_lines(apr_pool_t *p, const llmgw_manage_t *m)
{
    apr_array_header_t *out =
        apr_array_make(p, m->entries->nelts, sizeof(const char *));
    int i;

    for (i = 0; i < m->entries->nelts; i++) {
        const llmgw_manage_entry_t *e = ENTRY(m, i);
        const char *s;

        if (e->kind == LLMGW_ENTRY_MEMBER) {
            s = member_conf(p, e);
        }
        else if (e->kind == LLMGW_ENTRY_ROUTE) {
            s = route_conf(p, m, e);
        }
        else if (is_new_route(m, e->route)) {
            continue; /* in its <LLMRoute> line */
        }
        else {
            s = apr_psprintf(p,
                             "# in <LLMRoute \"%s\" ...>: %s the argument "
                             "\"%s\"\n",
                             e->route, e->removed ? "delete" : "add", e->name);
        }
        APR_ARRAY_PUSH(out, const char *) = s;
    }
    return apr_array_pstrcat(p, out, 0);
}
