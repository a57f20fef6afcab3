/* llmgw_render: HTML pages and XML from the status model. Text reaches
 * libxml2 only through text nodes and attributes (never as markup), and
 * text that is not UTF-8 is replaced before it does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>
#include <apr_time.h>
#include <libxml/HTMLtree.h>
#include <libxml/tree.h>

#include "llmgw_json.h"
#include "llmgw_manage.h"
#include "llmgw_render.h"
#include "llmgw_route.h"

#define STR_(n) #n
#define STR(n) STR_(n) /* a number's macro as a string */
#define N_OF(a) ((int)(sizeof(a) / sizeof(*(a))))
#define DASH "\xe2\x80\x93" /* an en dash: no value */
#define X(s) ((const xmlChar *)(s))

static const struct {
    const char *path, *title;
} pages[LLMGW_PAGE_N] = {
    { "", "Overview" },
    { "backends", "Backends" },
    { "routes", "Routes and models" },
    { "keys", "Keys and budgets" },
    { "cache", "Cache" },
};

int llmgw_render_page(const char *segment)
{
    int i;

    if (strcmp(segment, "index.html") == 0) {
        return LLMGW_PAGE_OVERVIEW;
    }
    for (i = 0; i < LLMGW_PAGE_N; i++) {
        if (strcmp(segment, pages[i].path) == 0) {
            return i;
        }
    }
    return -1;
}

const char *llmgw_render_page_path(llmgw_page_t page)
{
    return (unsigned)page < LLMGW_PAGE_N ? pages[page].path : "";
}

/* ---------------------------------------------------------------------
 * The model
 */

/* The member at a dotted path ("total.requests", "models.0.route"); NULL
 * when there is none. */
static json_object *at(json_object *o, const char *path)
{
    char part[64];

    while (o && *path) {
        const char *dot = strchr(path, '.');
        apr_size_t n = dot ? (apr_size_t)(dot - path) : strlen(path);

        if (n >= sizeof(part)) {
            return NULL;
        }
        memcpy(part, path, n);
        part[n] = '\0';
        if (json_object_is_type(o, json_type_array)) {
            o = json_object_array_get_idx(o, (size_t)atoi(part));
        }
        else if (!json_object_object_get_ex(o, part, &o)) {
            return NULL;
        }
        path += n + (dot ? 1 : 0);
    }
    return o;
}

static double num(json_object *o, const char *path)
{
    json_object *v = at(o, path);

    return v && !json_object_is_type(v, json_type_null)
               ? json_object_get_double(v)
               : -1;
}

static const char *str(json_object *o, const char *path)
{
    json_object *v = at(o, path);

    return v && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : "";
}

static int len_of(json_object *o, const char *path)
{
    json_object *v = at(o, path);

    return v && json_object_is_type(v, json_type_array)
               ? (int)json_object_array_length(v)
               : 0;
}

/* 1234567 as "1,234,567". */
static const char *grouped(apr_pool_t *p, apr_int64_t v)
{
    char digits[32], out[48];
    int n, i, j = 0;

    n = snprintf(digits, sizeof(digits), "%" APR_INT64_T_FMT, v);
    for (i = 0; i < n; i++) {
        if (i && digits[i - 1] != '-' && (n - i) % 3 == 0) {
            out[j++] = ',';
        }
        out[j++] = digits[i];
    }
    out[j] = '\0';
    return apr_pstrdup(p, out);
}

/* Unix seconds as "2026-01-01 00:00:00 UTC". */
static const char *stamp(apr_pool_t *p, apr_time_t sec)
{
    apr_time_exp_t tm;

    apr_time_exp_gmt(&tm, apr_time_from_sec(sec));
    return apr_psprintf(p, "%04d-%02d-%02d %02d:%02d:%02d UTC",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                        tm.tm_hour, tm.tm_min, tm.tm_sec);
}

const char *llmgw_render_value(apr_pool_t *p, json_object *v, const char *fmt)
{
    double d;

    if (!v || json_object_is_type(v, json_type_null)) {
        return DASH;
    }
    if (json_object_is_type(v, json_type_boolean)) {
        return json_object_get_boolean(v) ? "yes" : "no";
    }
    if (json_object_is_type(v, json_type_string)) {
        return *json_object_get_string(v) ? json_object_get_string(v) : DASH;
    }
    if (!json_object_is_type(v, json_type_int)
        && !json_object_is_type(v, json_type_double)) {
        return DASH;
    }
    d = json_object_get_double(v);
    if (strcmp(fmt, "time") == 0) {
        return stamp(p, (apr_time_t)d);
    }
    if (strcmp(fmt, "ms") == 0) {
        return apr_psprintf(p, "%.1f ms", d * 1000);
    }
    if (strcmp(fmt, "pct") == 0) {
        return apr_psprintf(p, "%.1f %%", d * 100);
    }
    if (strcmp(fmt, "rate") == 0) {
        return apr_psprintf(p, "%.2f", d);
    }
    if (json_object_is_type(v, json_type_int)) {
        return strcmp(fmt, "n") == 0 ? grouped(p, json_object_get_int64(v))
                                     : apr_psprintf(p, "%" APR_INT64_T_FMT,
                                                    json_object_get_int64(v));
    }
    return apr_psprintf(p, "%g", d);
}

/* ---------------------------------------------------------------------
 * Building the tree
 */

/* s as UTF-8 libxml2 accepts: each byte of a bad sequence becomes '?'. */
static const xmlChar *utf8(apr_pool_t *p, const char *s)
{
    unsigned char *c;
    apr_size_t i = 0, len;

    if (xmlCheckUTF8(X(s))) {
        return X(s);
    }
    len = strlen(s);
    c = (unsigned char *)apr_pstrndup(p, s, len);
    while (c[i]) {
        apr_size_t n = llmgw_utf8_len(c + i, c + len);

        if (!n) {
            c[i] = '?';
            n = 1;
        }
        i += n;
    }
    return c;
}

typedef struct {
    apr_pool_t *p;
    json_object *m;
    const llmgw_render_opts_t *o;
} ctx_t;

static xmlNodePtr el(xmlNodePtr parent, const char *name)
{
    return xmlNewChild(parent, NULL, X(name), NULL);
}

static xmlNodePtr text_el(ctx_t *c, xmlNodePtr parent, const char *name,
                          const char *text)
{
    return xmlNewTextChild(parent, NULL, X(name), utf8(c->p, text));
}

static void attr(ctx_t *c, xmlNodePtr n, const char *name, const char *value)
{
    xmlSetProp(n, X(name), utf8(c->p, value)); /* one of each name */
}

static xmlNodePtr cls(ctx_t *c, xmlNodePtr n, const char *value)
{
    attr(c, n, "class", value);
    return n;
}

/* A value of the model that the script keeps fresh: its path and format
 * in data-k and data-f. */
static xmlNodePtr live(ctx_t *c, xmlNodePtr parent, const char *name,
                       const char *path, const char *fmt)
{
    xmlNodePtr n = text_el(c, parent, name,
                           llmgw_render_value(c->p, at(c->m, path), fmt));

    attr(c, n, "data-k", path);
    if (*fmt) {
        attr(c, n, "data-f", fmt);
    }
    return n;
}

static void stat(ctx_t *c, xmlNodePtr dl, const char *label, const char *path,
                 const char *fmt)
{
    xmlNodePtr d = cls(c, el(dl, "div"), "stat");

    text_el(c, d, "dt", label);
    live(c, d, "dd", path, fmt);
}

/* ---------------------------------------------------------------------
 * Tables: a row per item of one of the model's arrays, a cell per column
 */

/* A row: its path in the model ("models.3"), the item, and what holds
 * the array (a balancer for its members; else NULL). */
typedef struct {
    const char *path;
    json_object *o, *owner;
} row_t;

/* A column: its heading, then a member of the row kept fresh by the
 * script (live) or shown as it is (leaf), as fmt says (NULL: as it is),
 * or a cell fill makes. */
typedef struct {
    const char *head, *live, *leaf, *fmt;
    void (*fill)(ctx_t *c, xmlNodePtr td, const row_t *row);
} column_t;

static void cell(ctx_t *c, xmlNodePtr tr, const column_t *col,
                 const row_t *row)
{
    const char *fmt = col->fmt ? col->fmt : "";

    if (col->fill) {
        col->fill(c, el(tr, "td"), row);
    }
    else if (col->live) {
        live(c, tr, "td", apr_pstrcat(c->p, row->path, ".", col->live, NULL),
             fmt);
    }
    else {
        text_el(c, tr, "td",
                llmgw_render_value(c->p, at(row->o, col->leaf), fmt));
    }
}

/* The table of the model's array at list (of owner), in parent. */
static void grid(ctx_t *c, xmlNodePtr parent, const column_t *cols, int ncols,
                 const char *list, json_object *owner)
{
    xmlNodePtr t = cls(c, el(parent, "table"), "grid"), tb, tr;
    int i, k, n = len_of(c->m, list);

    tr = el(el(t, "thead"), "tr");
    for (k = 0; k < ncols; k++) {
        text_el(c, tr, "th", cols[k].head);
    }
    tb = el(t, "tbody");
    for (i = 0; i < n; i++) {
        row_t row;

        row.path = apr_psprintf(c->p, "%s.%d", list, i);
        row.o = at(c->m, row.path);
        row.owner = owner;
        tr = el(tb, "tr");
        for (k = 0; k < ncols; k++) {
            cell(c, tr, &cols[k], &row);
        }
    }
}

/* ---------------------------------------------------------------------
 * Forms: each posts to the action URL with the session's nonce
 */

/* A form for action act with its hidden fields (name=value pairs) and
 * the nonce, to which the caller adds inputs and a button; NULL without
 * a nonce (no forms then). */
static xmlNodePtr form(ctx_t *c, xmlNodePtr parent, const char *act,
                       const char *const *fields)
{
    xmlNodePtr f, in;
    const char *nonce[] = { "nonce", c->o->nonce, "do", act, NULL };
    const char *const *lists[2];
    int k;

    if (!c->o->nonce) {
        return NULL;
    }
    f = cls(c, el(parent, "form"), "action");
    attr(c, f, "method", "post");
    attr(c, f, "action", apr_pstrcat(c->p, c->o->base, "action", NULL));
    lists[0] = fields;
    lists[1] = nonce;
    for (k = 0; k < 2; k++) {
        for (fields = lists[k]; fields && *fields; fields += 2) {
            in = el(f, "input");
            attr(c, in, "type", "hidden");
            attr(c, in, "name", fields[0]);
            attr(c, in, "value", fields[1]);
        }
    }
    return f;
}

static xmlNodePtr button(ctx_t *c, xmlNodePtr f, const char *label,
                         const char *aria)
{
    xmlNodePtr b = text_el(c, f, "button", label);

    attr(c, b, "type", "submit");
    if (aria) {
        attr(c, b, "aria-label", aria);
    }
    return b;
}

/* A form of one button (label; aria, when not NULL, its accessible name
 * naming what it acts on) posting act with the hidden fields. */
static void action(ctx_t *c, xmlNodePtr parent, const char *label,
                   const char *aria, const char *act,
                   const char *const *fields)
{
    xmlNodePtr f = form(c, parent, act, fields);

    if (f) {
        button(c, f, label, aria);
    }
}

/* A labelled input of form f (the label holds it): the input, for the
 * caller's constraints. */
static xmlNodePtr input(ctx_t *c, xmlNodePtr f, const char *label,
                        const char *name, const char *type)
{
    xmlNodePtr l = el(f, "label"), in;

    text_el(c, l, "span", label);
    in = el(l, "input");
    attr(c, in, "name", name);
    attr(c, in, "type", type);
    return in;
}

/* A labelled select of form f, of values[0..n) (values[0] selected). */
static xmlNodePtr choice(ctx_t *c, xmlNodePtr f, const char *label,
                         const char *name, const char *const *values, int n)
{
    xmlNodePtr l = el(f, "label"), s;
    int i;

    text_el(c, l, "span", label);
    s = el(l, "select");
    attr(c, s, "name", name);
    for (i = 0; i < n; i++) {
        xmlNodePtr o = text_el(c, s, "option", values[i]);

        attr(c, o, "value", values[i]);
    }
    return s;
}

/* ---------------------------------------------------------------------
 * Charts: inline SVG, one polyline of the model's per-second counts
 */

#define CHART_W 240
#define CHART_H 48

static const char *points(ctx_t *c, json_object *series)
{
    int n = series ? (int)json_object_array_length(series) : 0, i;
    double max = 1;
    char *pts = "";

    for (i = 0; i < n; i++) {
        double v =
            json_object_get_double(json_object_array_get_idx(series, i));
        max = v > max ? v : max;
    }
    for (i = 0; i < n; i++) {
        double v =
            json_object_get_double(json_object_array_get_idx(series, i));

        pts = apr_psprintf(c->p, "%s%s%.1f,%.1f", pts, i ? " " : "",
                           n > 1 ? (double)i * CHART_W / (n - 1) : 0.0,
                           CHART_H - v * (CHART_H - 2) / max - 1);
    }
    return pts;
}

static void chart(ctx_t *c, xmlNodePtr parent, const char *title,
                  const char *series)
{
    xmlNodePtr fig = cls(c, el(parent, "figure"), "chart"), svg, line;

    svg = el(fig, "svg");
    attr(c, svg, "xmlns", "http://www.w3.org/2000/svg");
    attr(c, svg, "viewBox", apr_psprintf(c->p, "0 0 %d %d", CHART_W, CHART_H));
    attr(c, svg, "preserveAspectRatio", "none");
    attr(c, svg, "role", "img");
    attr(c, svg, "aria-label", title);
    line = el(svg, "polyline");
    attr(c, line, "points",
         points(c, at(c->m, apr_pstrcat(c->p, "chart.", series, NULL))));
    attr(c, line, "data-chart", series);
    text_el(c, fig, "figcaption",
            apr_pstrcat(c->p, title, ", last 2 minutes", NULL));
}

/* ---------------------------------------------------------------------
 * What differs from httpd.conf: the model's manage.changes, the one
 * source the marks come from
 */

/* The change of kind whose k1 is v1 (and k2 is v2, k2 not NULL); NULL. */
static json_object *change(ctx_t *c, const char *kind, const char *k1,
                           const char *v1, const char *k2, const char *v2)
{
    json_object *all = at(c->m, "manage.changes");
    int i, n = len_of(c->m, "manage.changes");

    for (i = 0; i < n; i++) {
        json_object *ch = json_object_array_get_idx(all, i);

        if (strcmp(str(ch, "kind"), kind) == 0 && strcmp(str(ch, k1), v1) == 0
            && (!k2 || strcmp(str(ch, k2), v2) == 0)) {
            return ch;
        }
    }
    return NULL;
}

static int flag(json_object *o, const char *name)
{
    return json_object_get_boolean(at(o, name));
}

static void mark(ctx_t *c, xmlNodePtr parent, const char *text)
{
    cls(c, text_el(c, parent, "span", text), "mark");
}

/* Shown where anything differs: how many changes, the file that keeps
 * them and the link to the lines that make them permanent. */
static void changes_note(ctx_t *c, xmlNodePtr main)
{
    int n = len_of(c->m, "manage.changes");
    xmlNodePtr p, a;

    if (!n) {
        return;
    }
    p = cls(c, el(main, "p"), "changes");
    text_el(c, p, "span",
            apr_psprintf(c->p,
                         "%d change%s made at run time differ%s from "
                         "httpd.conf (kept in %s). ",
                         n, n == 1 ? "" : "s", n == 1 ? "s" : "",
                         str(c->m, "manage.file")));
    a = text_el(c, p, "a", "Lines to paste into httpd.conf");
    attr(c, a, "href", apr_pstrcat(c->p, c->o->base, "changes.conf", NULL));
}

/* ---------------------------------------------------------------------
 * The pages
 */

static void overview(ctx_t *c, xmlNodePtr main)
{
    static const column_t cols[] = {
        { .head = "Route", .live = "route" },
        { .head = "Model", .live = "model" },
        { .head = "Requests", .live = "requests", .fmt = "n" },
        { .head = "Errors", .live = "errors", .fmt = "n" },
        { .head = "Prompt tokens", .live = "prompt_tokens", .fmt = "n" },
        { .head = "Completion tokens",
          .live = "completion_tokens",
          .fmt = "n" },
        { .head = "p50", .live = "duration_p50", .fmt = "ms" },
        { .head = "p95", .live = "duration_p95", .fmt = "ms" },
        { .head = "TTFT p50", .live = "ttft_p50", .fmt = "ms" },
        { .head = "Cache hits", .live = "cache.hit", .fmt = "n" },
    };
    xmlNodePtr sec = el(main, "section"), dl;

    text_el(c, sec, "h2", "Last minute");
    dl = cls(c, el(sec, "dl"), "stats");
    stat(c, dl, "Requests/s", "last_minute.requests_per_s", "rate");
    stat(c, dl, "Tokens/s", "last_minute.tokens_per_s", "rate");
    stat(c, dl, "Errors", "last_minute.errors", "n");
    stat(c, dl, "Cache hit rate", "last_minute.hit_rate", "pct");
    stat(c, dl, "Latency p50", "last_minute.duration_p50", "ms");
    stat(c, dl, "Latency p95", "last_minute.duration_p95", "ms");
    stat(c, dl, "TTFT p50", "last_minute.ttft_p50", "ms");
    stat(c, dl, "TTFT p95", "last_minute.ttft_p95", "ms");
    sec = cls(c, el(main, "section"), "charts");
    chart(c, sec, "Requests per second", "requests");
    chart(c, sec, "Tokens per second", "tokens");
    chart(c, sec, "Errors per second", "errors");
    chart(c, sec, "Cache hits per second", "hits");
    sec = el(main, "section");
    text_el(c, sec, "h2", "Since start");
    dl = cls(c, el(sec, "dl"), "stats");
    stat(c, dl, "Requests", "total.requests", "n");
    stat(c, dl, "Errors", "total.errors", "n");
    stat(c, dl, "Prompt tokens", "total.prompt_tokens", "n");
    stat(c, dl, "Completion tokens", "total.completion_tokens", "n");
    stat(c, dl, "Tokens saved by the cache", "total.saved_tokens", "n");
    stat(c, dl, "Cache hit rate", "total.hit_rate", "pct");
    sec = el(main, "section");
    text_el(c, sec, "h2", "Models");
    grid(c, sec, cols, N_OF(cols), "models", NULL);
}

/* The member's one-word state: the health table's when it knows one,
 * else what mod_proxy's flags say; a member added at run time that has
 * not passed its probe yet (mod_proxy's HcFl until then) is "probing". */
static const char *member_state(ctx_t *c, const row_t *row)
{
    json_object *m = row->o, *ch;
    const char *h = str(m, "health.state"), *probe;

    if (flag(m, "disabled") || flag(m, "stopped")) {
        return "disabled";
    }
    if (flag(m, "drained")) {
        return "drained";
    }
    if (*h && strcmp(h, "unknown") != 0) {
        return h;
    }
    if (flag(m, "usable")) {
        /* Only mod_proxy's word: it may take requests, not that it is
         * ready. */
        return "up";
    }
    ch = change(c, "member", "balancer", str(row->owner, "name"), "url",
                str(m, "name"));
    probe = str(ch, "probe");
    return flag(m, "hcfail") && ch && !flag(ch, "configured") && *probe
                   && strcmp(probe, "none") != 0
               ? "probing"
               : "down";
}

static void state_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    const char *state = member_state(c, row);

    xmlNodeAddContent(td, X(state));
    cls(c, td, apr_pstrcat(c->p, "state ", state, NULL));
}

static void loaded_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    json_object *models = at(row->o, "health.models");
    const char *out = "";
    int i, n = models ? (int)json_object_array_length(models) : 0;

    for (i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(models, i);

        if (flag(o, "loaded")) {
            out =
                apr_pstrcat(c->p, out, *out ? ", " : "", str(o, "name"), NULL);
        }
    }
    xmlNodeAddContent(td, utf8(c->p, *out ? out : DASH));
}

/* Whether the member was removed at run time: mod_proxy's Free flag (a
 * member the gateway removed holds its slot until a restart) or the
 * change that says so. */
static int member_removed(ctx_t *c, const row_t *row)
{
    return flag(row->o, "removed")
           || flag(change(c, "member", "balancer", str(row->owner, "name"),
                          "url", str(row->o, "name")),
                   "removed");
}

/* The member's name, marked when it differs from httpd.conf. */
static void member_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    json_object *ch = change(c, "member", "balancer", str(row->owner, "name"),
                             "url", str(row->o, "name"));
    int removed = member_removed(c, row);

    live(c, el(td, removed ? "del" : "span"), "span",
         apr_pstrcat(c->p, row->path, ".name", NULL), "");
    if (removed) {
        mark(c, td, "removed at run time");
    }
    else if (ch && !flag(ch, "configured")) {
        mark(c, td, "run-time");
    }
    else if (ch) {
        mark(c, td, "weight changed at run time");
    }
}

/* The member's loadfactor as httpd.conf writes it (the model's lbfactor
 * is mod_proxy's, 100 times that), with a form to change it. */
static void weight_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    const char *name = str(row->o, "name");
    const char *f[] = { "b", str(row->owner, "name"), "w", name, NULL };
    double lbf = num(row->o, "lbfactor");
    int lb = lbf >= 0;
    const char *w = lb ? apr_psprintf(c->p, "%g", lbf / 100) : DASH;
    xmlNodePtr fm, in;

    /* A removed member's weight is refused: it is put back first. */
    fm = member_removed(c, row) ? NULL : form(c, td, "member_weight", f);
    if (!fm) {
        xmlNodeAddContent(td, utf8(c->p, w));
        return;
    }
    in = input(c, fm, "lbfactor", "lbfactor", "number");
    attr(c, in, "min", "1");
    attr(c, in, "max", STR(LLMGW_MANAGE_LBFACTOR_MAX));
    attr(c, in, "required", "required");
    if (lb) {
        attr(c, in, "value", w);
    }
    button(c, fm, "Set", apr_pstrcat(c->p, "Set the weight of ", name, NULL));
}

static void member_actions(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    const char *name = str(row->o, "name"), *bal = str(row->owner, "name");
    const char *f[] = { "b", bal, "w", name, NULL };

    if (member_removed(c, row)) {
        action(c, td, "Put back", apr_pstrcat(c->p, "Put back ", name, NULL),
               "member_add", f);
        return;
    }
    if (!flag(row->o, "drained")) {
        action(c, td, "Drain", NULL, "drain", f);
    }
    if (!flag(row->o, "disabled")) {
        action(c, td, "Disable", NULL, "disable", f);
    }
    if (flag(row->o, "drained") || flag(row->o, "disabled")) {
        action(c, td, "Enable", NULL, "enable", f);
    }
    action(c, td, "Remove", apr_pstrcat(c->p, "Remove ", name, NULL),
           "member_remove", f);
}

static const char *const probes[] = { "none", "ollama", "llamacpp", "vllm",
                                      "openai" };

/* The form that adds a member to balancer bal. */
static void member_add(ctx_t *c, xmlNodePtr sec, const char *bal)
{
    const char *f[] = { "b", bal, NULL };
    xmlNodePtr fm = form(c, sec, "member_add", f), in;

    if (!fm) {
        return;
    }
    cls(c, fm, "action add");
    in = input(c, fm, "Member URL", "w", "url");
    attr(c, in, "required", "required");
    attr(c, in, "placeholder", "http://10.0.0.21:11434");
    in = input(c, fm, "Timeout (s)", "timeout", "number");
    attr(c, in, "min", "1");
    attr(c, in, "max", STR(LLMGW_MANAGE_TIMEOUT_MAX));
    in = input(c, fm, "lbfactor", "lbfactor", "number");
    attr(c, in, "min", "1");
    attr(c, in, "max", STR(LLMGW_MANAGE_LBFACTOR_MAX));
    attr(c, in, "value", "1");
    choice(c, fm, "Probe", "probe", probes, N_OF(probes));
    button(c, fm, "Add member",
           apr_pstrcat(c->p, "Add a member to ", bal, NULL));
}

static void balancer(ctx_t *c, xmlNodePtr main, int b)
{
    static const column_t cols[] = {
        { .head = "Member", .fill = member_cell },
        { .head = "State", .fill = state_cell },
        { .head = "Circuit", .leaf = "health.circuit" },
        { .head = "mod_proxy", .live = "status" },
        { .head = "Models loaded", .fill = loaded_cell },
        { .head = "In flight", .live = "busy", .fmt = "n" },
        { .head = "Requests", .live = "traffic.requests", .fmt = "n" },
        { .head = "Errors", .live = "traffic.errors", .fmt = "n" },
        { .head = "p50", .live = "traffic.duration_p50", .fmt = "ms" },
        { .head = "TTFT p50", .live = "traffic.ttft_p50", .fmt = "ms" },
        { .head = "Weight", .fill = weight_cell },
        { .head = "Last probe", .leaf = "health.last_probe", .fmt = "time" },
        { .head = "", .fill = member_actions },
    };
    const char *bp = apr_psprintf(c->p, "balancers.%d", b);
    json_object *bo = at(c->m, bp);
    xmlNodePtr sec = el(main, "section");

    text_el(c, sec, "h2", str(bo, "name"));
    text_el(c, sec, "p",
            apr_pstrcat(c->p, "lbmethod ", str(bo, "lbmethod"), NULL));
    grid(c, sec, cols, N_OF(cols), apr_pstrcat(c->p, bp, ".members", NULL),
         bo);
    member_add(c, sec, str(bo, "name"));
}

static void backends(ctx_t *c, xmlNodePtr main)
{
    int i, n = len_of(c->m, "balancers");

    changes_note(c, main);
    for (i = 0; i < n; i++) {
        balancer(c, main, i);
    }
    if (!n) {
        text_el(c, main, "p", "No balancers are configured.");
    }
}

static const char *joined(ctx_t *c, json_object *arr)
{
    const char *out = "";
    int i, n = arr ? (int)json_object_array_length(arr) : 0;

    for (i = 0; i < n; i++) {
        out = apr_pstrcat(
            c->p, out, i ? ", " : "",
            json_object_get_string(json_object_array_get_idx(arr, i)), NULL);
    }
    return *out ? out : DASH;
}

/* The route's name; a route added at run time marked, with its Remove. */
static void route_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    const char *name = str(row->o, "name");
    const char *f[] = { "route", name, NULL };

    text_el(c, td, "span", name);
    if (change(c, "route", "route", name, NULL, NULL)) {
        mark(c, td, "run-time");
        action(c, td, "Remove route",
               apr_pstrcat(c->p, "Remove the route ", name, NULL),
               "route_remove", f);
    }
}

/* A model name's input, with the gateway's own bound for the browser to
 * check too. */
static void name_input(ctx_t *c, xmlNodePtr fm, const char *label,
                       const char *name)
{
    xmlNodePtr in = input(c, fm, label, name, "text");

    attr(c, in, "required", "required");
    attr(c, in, "maxlength", STR(LLMGW_MANAGE_NAME_MAX));
}

/* One name of route (a pattern, or one taken out at run time), as an
 * item of list, with what it may do: remove, or put back. */
static void name_item(ctx_t *c, xmlNodePtr list, const char *route,
                      const char *name, int removed)
{
    json_object *ch = change(c, "name", "route", route, "name", name);
    const char *f[] = { "route", route, "name", name, NULL };
    xmlNodePtr li = el(list, "li");

    text_el(c, li, removed ? "del" : "span", name);
    if (removed) {
        mark(c, li, "removed at run time");
        action(c, li, "Put back",
               apr_pstrcat(c->p, "Put back ", name, " into ", route, NULL),
               "name_add", f);
        return;
    }
    if (ch && !flag(ch, "configured")) {
        mark(c, li, "run-time");
    }
    /* Globs stay in httpd.conf; a run-time route's own name goes with
     * the route. */
    if (!llmgw_pattern_is_glob(name)
        && !(strcmp(name, route) == 0
             && change(c, "route", "route", route, NULL, NULL))) {
        action(c, li, "Remove",
               apr_pstrcat(c->p, "Remove ", name, " from ", route, NULL),
               "name_remove", f);
    }
}

/* The route's patterns and aliases, those taken out at run time, and the
 * form that adds one. */
static void names_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    const char *route = str(row->o, "name");
    json_object *pats = at(row->o, "patterns"), *all;
    const char *f[] = { "route", route, NULL };
    xmlNodePtr ul = cls(c, el(td, "ul"), "names"), fm;
    int i, n = len_of(row->o, "patterns");

    for (i = 0; i < n; i++) {
        name_item(c, ul, route,
                  json_object_get_string(json_object_array_get_idx(pats, i)),
                  0);
    }
    all = at(c->m, "manage.changes");
    n = len_of(c->m, "manage.changes");
    for (i = 0; i < n; i++) {
        json_object *ch = json_object_array_get_idx(all, i);

        if (strcmp(str(ch, "kind"), "name") == 0
            && strcmp(str(ch, "route"), route) == 0 && flag(ch, "removed")) {
            name_item(c, ul, route, str(ch, "name"), 1);
        }
    }
    if ((fm = form(c, td, "name_add", f))) {
        name_input(c, fm, "Model name or alias", "name");
        button(c, fm, "Add name",
               apr_pstrcat(c->p, "Add a name to ", route, NULL));
    }
}

static void fallbacks_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    xmlNodeAddContent(td, utf8(c->p, joined(c, at(row->o, "fallbacks"))));
}

/* Prompt and completion tokens of counts o, together. */
static void tokens(ctx_t *c, xmlNodePtr td, json_object *o)
{
    xmlNodeAddContent(
        td, X(grouped(c->p, (apr_int64_t)(num(o, "prompt_tokens")
                                          + num(o, "completion_tokens")))));
}

static void route_tokens_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    tokens(c, td, at(row->o, "traffic"));
}

static void key_tokens_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    tokens(c, td, row->o);
}

/* The form that adds a route on one of httpd.conf's balancers. */
static void route_add(ctx_t *c, xmlNodePtr main)
{
    static const char *const dialects[] = { "openai", "ollama" };
    const char **bals;
    xmlNodePtr sec, fm;
    int i, n = len_of(c->m, "balancers");

    if (!c->o->nonce || !n) {
        return;
    }
    bals = apr_palloc(c->p, sizeof(*bals) * (apr_size_t)n);
    for (i = 0; i < n; i++) {
        bals[i] = str(c->m, apr_psprintf(c->p, "balancers.%d.name", i));
    }
    sec = el(main, "section");
    text_el(c, sec, "h2", "Add a route");
    fm = cls(c, form(c, sec, "route_add", NULL), "action add");
    name_input(c, fm, "Route (its model name)", "route");
    choice(c, fm, "Balancer", "b", bals, n);
    choice(c, fm, "Dialect", "dialect", dialects, N_OF(dialects));
    button(c, fm, "Add route", NULL);
}

static void routes(ctx_t *c, xmlNodePtr main)
{
    static const column_t cols[] = {
        { .head = "Route", .fill = route_cell },
        { .head = "Patterns and aliases", .fill = names_cell },
        { .head = "Backend", .leaf = "backend" },
        { .head = "Dialect", .leaf = "dialect" },
        { .head = "Upstream model", .leaf = "upstream_model" },
        { .head = "Cache", .leaf = "cache_policy" },
        { .head = "Fallbacks", .fill = fallbacks_cell },
        { .head = "Requests", .live = "traffic.requests", .fmt = "n" },
        { .head = "Errors", .live = "traffic.errors", .fmt = "n" },
        { .head = "Tokens", .fill = route_tokens_cell },
    };

    changes_note(c, main);
    grid(c, el(main, "section"), cols, N_OF(cols), "routes", NULL);
    route_add(c, main);
}

static void budget_cell(ctx_t *c, xmlNodePtr td, json_object *b)
{
    xmlNodePtr meter = el(td, "meter");
    double limit = num(b, "limit"), used = num(b, "used");

    attr(c, meter, "min", "0");
    attr(c, meter, "max", apr_psprintf(c->p, "%.0f", limit));
    attr(c, meter, "value", apr_psprintf(c->p, "%.0f", used));
    attr(c, meter, "high", apr_psprintf(c->p, "%.0f", limit * 0.9));
    text_el(c, td, "span",
            apr_psprintf(
                c->p, " %s used, %s reserved of %s %s a %s; resets %s",
                grouped(c->p, (apr_int64_t)used),
                grouped(c->p, (apr_int64_t)num(b, "reserved")),
                grouped(c->p, (apr_int64_t)limit), str(b, "unit"),
                str(b, "period"), stamp(c->p, (apr_time_t)num(b, "resets"))));
}

static void budgets_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    int j;

    for (j = 0; j < len_of(row->o, "budgets"); j++) {
        budget_cell(c, el(td, "div"),
                    json_object_array_get_idx(at(row->o, "budgets"), j));
    }
}

static void rate_cell(ctx_t *c, xmlNodePtr td, json_object *r)
{
    if (!r || json_object_is_type(r, json_type_null)) {
        xmlNodeAddContent(td, X(DASH));
        return;
    }
    xmlNodeAddContent(
        td, X(apr_psprintf(c->p, "%s left of %s",
                           grouped(c->p, (apr_int64_t)num(r, "remaining")),
                           grouped(c->p, (apr_int64_t)num(r, "limit")))));
}

static void rpm_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    rate_cell(c, td, at(row->o, "rpm"));
}

static void tpm_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    rate_cell(c, td, at(row->o, "tpm"));
}

static void reset_cell(ctx_t *c, xmlNodePtr td, const row_t *row)
{
    const char *f[] = { "key", str(row->o, "subject"), NULL };

    action(c, td, "Reset usage", NULL, "reset", f);
}

static void keys(ctx_t *c, xmlNodePtr main)
{
    static const column_t cols[] = {
        { .head = "Kind", .leaf = "kind" },
        { .head = "Name", .leaf = "name" },
        { .head = "Budgets", .fill = budgets_cell },
        { .head = "Requests/min", .fill = rpm_cell },
        { .head = "Tokens/min", .fill = tpm_cell },
        { .head = "In flight", .live = "inflight", .fmt = "n" },
        { .head = "Requests", .live = "requests", .fmt = "n" },
        { .head = "Tokens", .fill = key_tokens_cell },
        { .head = "429s", .live = "ratelimited", .fmt = "n" },
        { .head = "", .fill = reset_cell },
    };
    json_object *keys = at(c->m, "keys");

    if (!keys || json_object_is_type(keys, json_type_null)) {
        text_el(c, main, "p", "No keys configured.");
        return;
    }
    grid(c, el(main, "section"), cols, N_OF(cols), "keys", NULL);
}

static void cache(ctx_t *c, xmlNodePtr main)
{
    xmlNodePtr sec = el(main, "section"), dl;
    const char *all[] = { NULL };
    int i, n = len_of(c->m, "models");

    dl = cls(c, el(sec, "dl"), "stats");
    stat(c, dl, "Store", "cache.store", "");
    stat(c, dl, "Servers", "cache.servers", "");
    stat(c, dl, "TTL (s)", "cache.ttl", "n");
    stat(c, dl, "Largest item (bytes)", "cache.max_item", "n");
    stat(c, dl, "Hits", "cache.traffic.cache.hit", "n");
    stat(c, dl, "Misses", "cache.traffic.cache.miss", "n");
    stat(c, dl, "Coalesced", "cache.traffic.cache.coalesced", "n");
    stat(c, dl, "Bypassed", "cache.traffic.cache.bypass", "n");
    stat(c, dl, "Hit rate", "cache.traffic.hit_rate", "pct");
    stat(c, dl, "Tokens saved", "cache.traffic.saved_tokens", "n");
    stat(c, dl, "Flushes", "cache.flushes", "n");
    sec = el(main, "section");
    text_el(c, sec, "h2", "Flush");
    action(c, sec, "Flush the whole cache", NULL, "flush", all);
    for (i = 0; i < n; i++) {
        const char *model =
            str(c->m, apr_psprintf(c->p, "models.%d.model", i));
        const char *f[] = { "model", model, NULL };

        if (*model) {
            action(c, sec, apr_pstrcat(c->p, "Flush ", model, NULL), NULL,
                   "flush", f);
        }
    }
}

static void head(ctx_t *c, xmlNodePtr html, llmgw_page_t page)
{
    xmlNodePtr h = el(html, "head"), n;

    n = el(h, "meta");
    attr(c, n, "charset", "utf-8");
    n = el(h, "meta");
    attr(c, n, "name", "viewport");
    attr(c, n, "content", "width=device-width, initial-scale=1");
    text_el(c, h, "title",
            apr_pstrcat(c->p, pages[page].title, " \xc2\xb7 mod_llm_gateway",
                        NULL));
    n = el(h, "link");
    attr(c, n, "rel", "stylesheet");
    attr(c, n, "href",
         apr_pstrcat(c->p, c->o->base, "assets/console.css", NULL));
    n = el(h, "link");
    attr(c, n, "rel", "icon");
    attr(c, n, "href",
         apr_pstrcat(c->p, c->o->base, "assets/favicon.svg", NULL));
    n = el(h, "script");
    attr(c, n, "src",
         apr_pstrcat(c->p, c->o->base, "assets/console.js", NULL));
    attr(c, n, "defer", "defer");
}

static void header(ctx_t *c, xmlNodePtr body, llmgw_page_t page)
{
    xmlNodePtr h = el(body, "header"), nav, a;
    int i;

    text_el(c, h, "h1", "mod_llm_gateway");
    cls(c,
        text_el(c, h, "span",
                apr_pstrcat(c->p, str(c->m, "server"), " \xc2\xb7 ",
                            str(c->m, "version"), NULL)),
        "server");
    nav = el(h, "nav");
    for (i = 0; i < LLMGW_PAGE_N; i++) {
        a = text_el(c, nav, "a", pages[i].title);
        attr(c, a, "href", apr_pstrcat(c->p, c->o->base, pages[i].path, NULL));
        if (i == (int)page) {
            attr(c, a, "aria-current", "page");
        }
    }
}

static void footer(ctx_t *c, xmlNodePtr body)
{
    static const char *const links[] = { "status.json", "status.xml",
                                         "metrics", NULL };
    xmlNodePtr f = el(body, "footer"), a;
    int i;

    for (i = 0; links[i]; i++) {
        a = text_el(c, f, "a", links[i]);
        attr(c, a, "href", apr_pstrcat(c->p, c->o->base, links[i], NULL));
    }
    live(c, f, "span", "time", "time");
}

static void (*const bodies[LLMGW_PAGE_N])(ctx_t *, xmlNodePtr) = {
    overview, backends, routes, keys, cache
};

static char *dumped(apr_pool_t *p, xmlChar *mem, int size, apr_size_t *len)
{
    char *out = NULL;

    if (mem && size >= 0) {
        out = apr_pstrmemdup(p, (const char *)mem, (apr_size_t)size);
        *len = (apr_size_t)size;
    }
    xmlFree(mem);
    return out;
}

char *llmgw_render_html(apr_pool_t *p, json_object *model, llmgw_page_t page,
                        const llmgw_render_opts_t *opts, apr_size_t *len)
{
    ctx_t c = { p, model, opts };
    htmlDocPtr doc;
    xmlNodePtr html, body, main;
    xmlChar *mem = NULL;
    int size = -1;

    if ((unsigned)page >= LLMGW_PAGE_N) {
        page = LLMGW_PAGE_OVERVIEW;
    }
    doc = htmlNewDocNoDtD(NULL, NULL);
    if (!doc) {
        return NULL;
    }
    xmlCreateIntSubset(doc, X("html"), NULL, NULL);
    html = xmlNewNode(NULL, X("html"));
    xmlDocSetRootElement(doc, html);
    attr(&c, html, "lang", "en");
    head(&c, html, page);
    body = el(html, "body");
    attr(&c, body, "data-status",
         apr_pstrcat(p, opts->base, "status.json", NULL));
    attr(&c, body, "data-page", pages[page].path);
    header(&c, body, page);
    main = el(body, "main");
    text_el(&c, main, "h2", pages[page].title);
    if (opts->message) {
        attr(&c, cls(&c, text_el(&c, main, "p", opts->message), "message"),
             "role", "status");
    }
    bodies[page](&c, main);
    footer(&c, body);
    htmlDocDumpMemoryFormat(doc, &mem, &size, 0);
    xmlFreeDoc(doc);
    return dumped(p, mem, size, len);
}

/* ---------------------------------------------------------------------
 * XML
 */

static int xml_name(const char *s)
{
    if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) {
        return 0;
    }
    for (; *s; s++) {
        if (!(*s == '_' || *s == '-' || (*s >= 'a' && *s <= 'z')
              || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'))) {
            return 0;
        }
    }
    return 1;
}

static void xml_value(ctx_t *c, xmlNodePtr n, json_object *v)
{
    if (json_object_is_type(v, json_type_object)) {
        json_object_object_foreach(v, key, val)
        {
            xmlNodePtr e = el(n, xml_name(key) ? key : "entry");

            if (!xml_name(key)) {
                attr(c, e, "key", key);
            }
            xml_value(c, e, val);
        }
    }
    else if (json_object_is_type(v, json_type_array)) {
        size_t i, len = json_object_array_length(v);

        for (i = 0; i < len; i++) {
            xml_value(c, el(n, "item"), json_object_array_get_idx(v, i));
        }
    }
    else if (v) {
        xmlNodeAddContent(n, utf8(c->p, json_object_get_string(v)));
    }
}

char *llmgw_render_xml(apr_pool_t *p, json_object *model, apr_size_t *len)
{
    llmgw_render_opts_t none = { "", NULL, NULL };
    ctx_t c = { p, model, &none };
    xmlDocPtr doc = xmlNewDoc(X("1.0"));
    xmlNodePtr root;
    xmlChar *mem = NULL;
    int size = -1;

    if (!doc) {
        return NULL;
    }
    root = xmlNewNode(NULL, X("status"));
    xmlDocSetRootElement(doc, root);
    xmlSetNs(root, xmlNewNs(root, X("urn:mod_llm_gateway:status:1"), NULL));
    xml_value(&c, root, model);
    xmlDocDumpMemoryEnc(doc, &mem, &size, "UTF-8");
    xmlFreeDoc(doc);
    return dumped(p, mem, size, len);
}
