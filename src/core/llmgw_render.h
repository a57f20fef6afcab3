/* llmgw_render: the console's status model (a json-c tree) as an HTML page
 * and as XML, both built with libxml2's tree API: every value from the
 * model goes in as a text node or an attribute, so it is escaped by
 * construction (a model named <script> shows as text). */
#ifndef LLMGW_RENDER_H
#define LLMGW_RENDER_H

#include <apr_pools.h>
#include <json.h>

/* The console's pages. */
typedef enum {
    LLMGW_PAGE_OVERVIEW = 0,
    LLMGW_PAGE_BACKENDS,
    LLMGW_PAGE_ROUTES,
    LLMGW_PAGE_KEYS,
    LLMGW_PAGE_CACHE,
    LLMGW_PAGE_N
} llmgw_page_t;

/* The page a URL's last segment names ("" and "index.html" are the
 * overview); -1 for none. */
int llmgw_render_page(const char *segment);
/* That segment ("" for the overview). */
const char *llmgw_render_page_path(llmgw_page_t page);

typedef struct {
    const char *base;    /* the console's URL path, with its last '/' */
    const char *nonce;   /* the session's action nonce; NULL: no forms */
    const char *message; /* the outcome of an action, shown on top; NULL */
} llmgw_render_opts_t;

/* The page of the model as HTML, from p (*len its length); NULL if
 * libxml2 failed. */
char *llmgw_render_html(apr_pool_t *p, json_object *model, llmgw_page_t page,
                        const llmgw_render_opts_t *opts, apr_size_t *len);

/* The whole model as XML (element names are the model's; array members
 * are <item>, an object member whose name is no XML name is <entry
 * key="...">), from p; NULL if libxml2 failed. */
char *llmgw_render_xml(apr_pool_t *p, json_object *model, apr_size_t *len);

/* How the console shows a value: fmt "n" (a count: 1234567 as
 * 1,234,567), "ms" (seconds as milliseconds), "pct" (a ratio), "rate" (a
 * per-second rate), "time" (Unix seconds as "2026-01-01 00:00:00 UTC"),
 * "" (as it is); null and "" as an en dash. From p. The
 * console's script formats alike. */
const char *llmgw_render_value(apr_pool_t *p, json_object *v, const char *fmt);

#endif
