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
#include "llmgw_render.h"

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
    xmlNewProp(n, X(name), utf8(c->p, value));
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

static void live_cell(ctx_t *c, xmlNodePtr tr, const char *fmt,
                      const char *pathfmt, int i, const char *leaf)
{
    live(c, tr, "td", apr_psprintf(c->p, pathfmt, i, leaf), fmt);
}

static xmlNodePtr table(ctx_t *c, xmlNodePtr parent, const char *const *heads)
{
    xmlNodePtr t = cls(c, el(parent, "table"), "grid");
    xmlNodePtr tr = el(el(t, "thead"), "tr");

    for (; *heads; heads++) {
        text_el(c, tr, "th", *heads);
    }
    return el(t, "tbody");
}

static void stat(ctx_t *c, xmlNodePtr dl, const char *label, const char *path,
                 const char *fmt)
{
    xmlNodePtr d = cls(c, el(dl, "div"), "stat");

    text_el(c, d, "dt", label);
    live(c, d, "dd", path, fmt);
}

/* A form posting action (with its hidden fields, name=value pairs) and
 * the session's nonce; nothing without a nonce. */
static void action(ctx_t *c, xmlNodePtr parent, const char *label,
                   const char *act, const char *const *fields)
{
    xmlNodePtr f, in;

    if (!c->o->nonce) {
        return;
    }
    f = cls(c, el(parent, "form"), "action");
    attr(c, f, "method", "post");
    attr(c, f, "action", apr_pstrcat(c->p, c->o->base, "action", NULL));
    for (; fields && *fields; fields += 2) {
        in = el(f, "input");
        attr(c, in, "type", "hidden");
        attr(c, in, "name", fields[0]);
        attr(c, in, "value", fields[1]);
    }
    in = el(f, "input");
    attr(c, in, "type", "hidden");
    attr(c, in, "name", "nonce");
    attr(c, in, "value", c->o->nonce);
    in = el(f, "input");
    attr(c, in, "type", "hidden");
    attr(c, in, "name", "do");
    attr(c, in, "value", act);
    text_el(c, f, "button", label);
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
 * The pages
 */

static void overview(ctx_t *c, xmlNodePtr main)
{
    static const char *const heads[] = { "Route",
                                         "Model",
                                         "Requests",
                                         "Errors",
                                         "Prompt tokens",
                                         "Completion tokens",
                                         "p50",
                                         "p95",
                                         "TTFT p50",
                                         "Cache hits",
                                         NULL };
    xmlNodePtr sec = el(main, "section"), dl, tb;
    int i, n = len_of(c->m, "models");

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
    tb = table(c, sec, heads);
    for (i = 0; i < n; i++) {
        xmlNodePtr tr = el(tb, "tr");

        live_cell(c, tr, "", "models.%d.%s", i, "route");
        live_cell(c, tr, "", "models.%d.%s", i, "model");
        live_cell(c, tr, "n", "models.%d.%s", i, "requests");
        live_cell(c, tr, "n", "models.%d.%s", i, "errors");
        live_cell(c, tr, "n", "models.%d.%s", i, "prompt_tokens");
        live_cell(c, tr, "n", "models.%d.%s", i, "completion_tokens");
        live_cell(c, tr, "ms", "models.%d.%s", i, "duration_p50");
        live_cell(c, tr, "ms", "models.%d.%s", i, "duration_p95");
        live_cell(c, tr, "ms", "models.%d.%s", i, "ttft_p50");
        live_cell(c, tr, "n", "models.%d.%s", i, "cache.hit");
    }
}

/* The member's one-word state: the health table's when it knows one,
 * else what mod_proxy's flags say. */
static const char *member_state(ctx_t *c, const char *mp)
{
    json_object *m = at(c->m, mp);
    const char *h = str(m, "health.state");

    if (json_object_get_boolean(at(m, "disabled"))
        || json_object_get_boolean(at(m, "stopped"))) {
        return "disabled";
    }
    if (json_object_get_boolean(at(m, "drained"))) {
        return "drained";
    }
    if (*h && strcmp(h, "unknown") != 0) {
        return h;
    }
    /* Only mod_proxy's word: it may take requests, not that it is ready. */
    return json_object_get_boolean(at(m, "usable")) ? "up" : "down";
}

static const char *loaded_models(ctx_t *c, json_object *m)
{
    json_object *models = at(m, "health.models");
    const char *out = "";
    int i, n = models ? (int)json_object_array_length(models) : 0;

    for (i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(models, i);

        if (json_object_get_boolean(at(o, "loaded"))) {
            out =
                apr_pstrcat(c->p, out, *out ? ", " : "", str(o, "name"), NULL);
        }
    }
    return *out ? out : DASH;
}

static void member_actions(ctx_t *c, xmlNodePtr td, const char *bal,
                           json_object *m)
{
    const char *f[] = { "b", bal, "w", str(m, "name"), NULL };

    if (!json_object_get_boolean(at(m, "drained"))) {
        action(c, td, "Drain", "drain", f);
    }
    if (!json_object_get_boolean(at(m, "disabled"))) {
        action(c, td, "Disable", "disable", f);
    }
    if (json_object_get_boolean(at(m, "drained"))
        || json_object_get_boolean(at(m, "disabled"))) {
        action(c, td, "Enable", "enable", f);
    }
}

static void balancer(ctx_t *c, xmlNodePtr main, int b)
{
    static const char *const heads[] = {
        "Member",     "State",    "Circuit", "mod_proxy", "Models loaded",
        "In flight",  "Requests", "Errors",  "p50",       "TTFT p50",
        "Last probe", "",         NULL
    };
    const char *bp = apr_psprintf(c->p, "balancers.%d", b);
    xmlNodePtr sec = el(main, "section"), tb;
    int i, n = len_of(c->m, apr_pstrcat(c->p, bp, ".members", NULL));

    text_el(c, sec, "h2", str(c->m, apr_pstrcat(c->p, bp, ".name", NULL)));
    text_el(c, sec, "p",
            apr_pstrcat(c->p, "lbmethod ",
                        str(c->m, apr_pstrcat(c->p, bp, ".lbmethod", NULL)),
                        NULL));
    tb = table(c, sec, heads);
    for (i = 0; i < n; i++) {
        const char *mp = apr_psprintf(c->p, "%s.members.%d", bp, i);
        json_object *m = at(c->m, mp);
        const char *state = member_state(c, mp);
        xmlNodePtr tr = el(tb, "tr"), td;

        live(c, tr, "td", apr_pstrcat(c->p, mp, ".name", NULL), "");
        td = text_el(c, tr, "td", state);
        cls(c, td, apr_pstrcat(c->p, "state ", state, NULL));
        text_el(c, tr, "td",
                llmgw_render_value(c->p, at(m, "health.circuit"), ""));
        live(c, tr, "td", apr_pstrcat(c->p, mp, ".status", NULL), "");
        text_el(c, tr, "td", loaded_models(c, m));
        live(c, tr, "td", apr_pstrcat(c->p, mp, ".busy", NULL), "n");
        live(c, tr, "td", apr_pstrcat(c->p, mp, ".traffic.requests", NULL),
             "n");
        live(c, tr, "td", apr_pstrcat(c->p, mp, ".traffic.errors", NULL), "n");
        live(c, tr, "td", apr_pstrcat(c->p, mp, ".traffic.duration_p50", NULL),
             "ms");
        live(c, tr, "td", apr_pstrcat(c->p, mp, ".traffic.ttft_p50", NULL),
             "ms");
        text_el(c, tr, "td",
                llmgw_render_value(c->p, at(m, "health.last_probe"), "time"));
        member_actions(c, el(tr, "td"),
                       str(c->m, apr_pstrcat(c->p, bp, ".name", NULL)), m);
    }
}

static void backends(ctx_t *c, xmlNodePtr main)
{
    int i, n = len_of(c->m, "balancers");

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

static void routes(ctx_t *c, xmlNodePtr main)
{
    static const char *const heads[] = { "Route",
                                         "Patterns and aliases",
                                         "Backend",
                                         "Dialect",
                                         "Upstream model",
                                         "Cache",
                                         "Fallbacks",
                                         "Requests",
                                         "Errors",
                                         "Tokens",
                                         NULL };
    xmlNodePtr tb = table(c, el(main, "section"), heads);
    int i, n = len_of(c->m, "routes");

    for (i = 0; i < n; i++) {
        const char *rp = apr_psprintf(c->p, "routes.%d", i);
        json_object *r = at(c->m, rp);
        xmlNodePtr tr = el(tb, "tr");

        text_el(c, tr, "td", str(r, "name"));
        text_el(c, tr, "td", joined(c, at(r, "patterns")));
        text_el(c, tr, "td", str(r, "backend"));
        text_el(c, tr, "td", str(r, "dialect"));
        text_el(c, tr, "td",
                llmgw_render_value(c->p, at(r, "upstream_model"), ""));
        text_el(c, tr, "td", str(r, "cache_policy"));
        text_el(c, tr, "td", joined(c, at(r, "fallbacks")));
        live(c, tr, "td", apr_pstrcat(c->p, rp, ".traffic.requests", NULL),
             "n");
        live(c, tr, "td", apr_pstrcat(c->p, rp, ".traffic.errors", NULL), "n");
        text_el(c, tr, "td",
                grouped(c->p, (apr_int64_t)(num(r, "traffic.prompt_tokens")
                                            + num(r, "traffic.completion_"
                                                     "tokens"))));
    }
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

static const char *rate_text(ctx_t *c, json_object *k, const char *name)
{
    json_object *r = at(k, name);

    if (!r || json_object_is_type(r, json_type_null)) {
        return DASH;
    }
    return apr_psprintf(c->p, "%s left of %s",
                        grouped(c->p, (apr_int64_t)num(r, "remaining")),
                        grouped(c->p, (apr_int64_t)num(r, "limit")));
}

static void keys(ctx_t *c, xmlNodePtr main)
{
    static const char *const heads[] = {
        "Kind",       "Name",      "Budgets",  "Requests/min",
        "Tokens/min", "In flight", "Requests", "Tokens",
        "429s",       "",          NULL
    };
    json_object *keys = at(c->m, "keys");
    xmlNodePtr tb;
    int i, j, n;

    if (!keys || json_object_is_type(keys, json_type_null)) {
        text_el(c, main, "p", "No keys configured.");
        return;
    }
    tb = table(c, el(main, "section"), heads);
    n = (int)json_object_array_length(keys);
    for (i = 0; i < n; i++) {
        json_object *k = json_object_array_get_idx(keys, i);
        const char *kp = apr_psprintf(c->p, "keys.%d", i);
        xmlNodePtr tr = el(tb, "tr"), td;
        const char *f[] = { "key", str(k, "subject"), NULL };

        text_el(c, tr, "td", str(k, "kind"));
        text_el(c, tr, "td", str(k, "name"));
        td = el(tr, "td");
        for (j = 0; j < len_of(k, "budgets"); j++) {
            budget_cell(c, el(td, "div"),
                        json_object_array_get_idx(at(k, "budgets"), j));
        }
        text_el(c, tr, "td", rate_text(c, k, "rpm"));
        text_el(c, tr, "td", rate_text(c, k, "tpm"));
        live(c, tr, "td", apr_pstrcat(c->p, kp, ".inflight", NULL), "n");
        live(c, tr, "td", apr_pstrcat(c->p, kp, ".requests", NULL), "n");
        text_el(c, tr, "td",
                grouped(c->p, (apr_int64_t)(num(k, "prompt_tokens")
                                            + num(k, "completion_tokens"))));
        live(c, tr, "td", apr_pstrcat(c->p, kp, ".ratelimited", NULL), "n");
        action(c, el(tr, "td"), "Reset usage", "reset", f);
    }
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
    action(c, sec, "Flush the whole cache", "flush", all);
    for (i = 0; i < n; i++) {
        const char *model =
            str(c->m, apr_psprintf(c->p, "models.%d.model", i));
        const char *f[] = { "model", model, NULL };

        if (*model) {
            action(c, sec, apr_pstrcat(c->p, "Flush ", model, NULL), "flush",
                   f);
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
