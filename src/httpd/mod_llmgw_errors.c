/* mod_llmgw_errors: errors httpd or mod_proxy produce (502, 503, 504...)
 * in the client's API, also for requests httpd refuses before the
 * gateway's hooks run: the filter that replaces httpd's HTML page. */
#include <stddef.h> /* before APR: offsetof for its ring macros */
#include <string.h>

#include <httpd.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>

#include "mod_llmgw.h"
#include "mod_llmgw_errors.h"

APLOG_USE_MODULE(llm_gateway);

static ap_filter_rec_t *error_filter_handle;

typedef struct {
    int ollama;  /* the Ollama API's shape, else OpenAI's */
    int started; /* the page was replaced */
} error_filter_ctx;

/* The API of a request the gateway's fixups never saw: the location walk's
 * LLMApi if it ran, else the walk done now for the request's URI (httpd
 * refuses a bad Content-Length before it, and drops its result when the
 * path has an encoded '/' or NUL), on the server the request came to. */
static llmgw_api_t api_of_refused(request_rec *r)
{
    ap_conf_vector_t *saved = r->per_dir_config;
    char *saved_uri = r->uri;
    llmgw_dir_conf_t *dconf;
    llmgw_api_t api;
    char *uri;

    if (r->per_dir_config != r->server->lookup_defaults) {
        dconf = ap_get_module_config(r->per_dir_config, &llm_gateway_module);
        return dconf->api;
    }
    /* A request line too broken to give a path: nothing to decide by. */
    if (!r->uri || r->uri[0] != '/') {
        return LLMGW_API_OFF;
    }
    uri = apr_pstrdup(r->pool, r->uri);
    if (!ap_normalize_path(uri, AP_NORMALIZE_NOT_ABOVE_ROOT
                                    | AP_NORMALIZE_MERGE_SLASHES
                                    | AP_NORMALIZE_DECODE_UNRESERVED)) {
        return LLMGW_API_OFF;
    }
    /* On r itself, then put back: the rest of httpd's error handling
     * goes on with the configuration it had. */
    r->uri = uri;
    api = ap_location_walk(r) == OK
              ? ((llmgw_dir_conf_t *)ap_get_module_config(r->per_dir_config,
                                                          &llm_gateway_module))
                    ->api
              : LLMGW_API_OFF;
    r->per_dir_config = saved;
    r->uri = saved_uri;
    return api;
}

/* httpd's note on why it refused, as plain text: its wording up to the
 * first markup (what follows may echo the client's bytes). */
static const char *httpd_note(request_rec *r)
{
    const char *note = apr_table_get(r->notes, "error-notes");
    apr_size_t i, n;

    if (!note) {
        return NULL;
    }
    for (n = 0; note[n] && note[n] != '<' && note[n] != '\n'; n++) {
        if (!apr_isprint(note[n])) {
            return NULL;
        }
    }
    for (i = 0; i < n && note[i] == ' '; i++) {
    }
    while (n > i && note[n - 1] == ' ') {
        n--;
    }
    return n > i && n - i <= 200 ? apr_pstrmemdup(r->pool, note + i, n - i)
                                 : NULL;
}

/* The error for a request httpd refused before the gateway saw it, with
 * the reason where it is known. */
static void refused_error(request_rec *r, llmgw_error_t *err)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    const char *te = apr_table_get(r->headers_in, "Transfer-Encoding");
    const char *raw = r->unparsed_uri ? r->unparsed_uri : "";
    const char *note;
    apr_off_t n;

    if (r->status == HTTP_BAD_REQUEST && cl
        && !ap_parse_strict_length(&n, cl)) {
        llmgw_error_set(err, r->status, "invalid_request_error", NULL,
                        "bad_request",
                        "The Content-Length header is not "
                        "one valid length.");
    }
    else if (r->status == HTTP_BAD_REQUEST && te
             && !ap_is_chunked(r->pool, te)) {
        llmgw_error_set(err, r->status, "invalid_request_error", NULL,
                        "bad_request",
                        "The Transfer-Encoding is not "
                        "chunked.");
    }
    else if (r->status == HTTP_EXPECTATION_FAILED) {
        err->message = "Only 'Expect: 100-continue' is understood.";
    }
    else if (r->status == HTTP_NOT_FOUND
             && (ap_strcasestr(raw, "%2f") || strstr(raw, "%00"))) {
        llmgw_error_set(err, r->status, "invalid_request_error", NULL,
                        "invalid_path",
                        "The request path has an encoded "
                        "'/' (%2F) or NUL (%00), which this server does not "
                        "take.");
    }
    else if (r->status < 500 && (note = httpd_note(r)) != NULL) {
        err->message = note;
    }
}

static apr_status_t error_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    error_filter_ctx *ec = f->ctx;
    llmgw_error_t err;
    apr_bucket *e;

    if (!ec->started) {
        /* First call: the status is final; replace the HTML page. */
        ec->started = 1;
        llmgw_error_for_status(llmgw_proxy_status(r, r->status), &err);
        if (!llmgw_req_get(r)) {
            refused_error(r, &err);
        }
        llmgw_error_brigade(r, ec->ollama, &err, bb, 0);
        return ap_pass_brigade(f->next, bb);
    }
    /* Later calls: drop the rest of the page, keep EOS and metadata. */
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);) {
        apr_bucket *next = APR_BUCKET_NEXT(e);

        if (!APR_BUCKET_IS_METADATA(e)) {
            apr_bucket_delete(e);
        }
        e = next;
    }
    return ap_pass_brigade(f->next, bb);
}

static void insert_error_filter(request_rec *r)
{
    llmgw_req_t *ctx = llmgw_req_get(r);
    llmgw_api_t api;
    error_filter_ctx *ec;

    if (!ap_is_HTTP_ERROR(r->status) || r->main) {
        return;
    }
    api = ctx ? ctx->api : api_of_refused(r);
    if (api <= LLMGW_API_OFF) {
        return;
    }
    ec = apr_pcalloc(r->pool, sizeof(*ec));
    ec->ollama = api == LLMGW_API_OLLAMA;
    ap_add_output_filter_handle(error_filter_handle, ec, r, r->connection);
}

void llmgw_errors_register(void)
{
    error_filter_handle = ap_register_output_filter(
        "LLMGW_ERROR", error_filter, NULL, AP_FTYPE_RESOURCE);
    ap_hook_insert_error_filter(insert_error_filter, NULL, NULL,
                                APR_HOOK_MIDDLE);
}
