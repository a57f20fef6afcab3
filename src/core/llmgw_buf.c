/* llmgw_buf: both kinds double their capacity as they grow, so n bytes
 * cost O(n) copies whatever the pieces. */
#include <stdlib.h>
#include <string.h>

#include <apr_file_info.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#include "llmgw_buf.h"

void llmgw_pbuf_reserve(apr_pool_t *p, llmgw_pbuf_t *b, apr_size_t n)
{
    apr_size_t cap = b->cap ? b->cap : 4096;
    char *nb;

    if (n < b->cap) {
        return;
    }
    while (cap <= n) {
        cap *= 2;
    }
    nb = apr_palloc(p, cap);
    if (b->len) {
        memcpy(nb, b->b, b->len);
    }
    b->b = nb;
    b->cap = cap;
}

void llmgw_pbuf_add(apr_pool_t *p, llmgw_pbuf_t *b, const char *s,
                    apr_size_t n)
{
    llmgw_pbuf_reserve(p, b, b->len + n);
    memcpy(b->b + b->len, s, n);
    b->len += n;
}

int llmgw_buf_add(llmgw_buf_t *b, const char *s, apr_size_t n)
{
    if (!n) {
        return 1;
    }
    if (b->len + n > b->cap) {
        apr_size_t cap = b->cap ? b->cap : 4096;
        char *nb;

        while (cap < b->len + n) {
            cap *= 2;
        }
        nb = realloc(b->b, cap);
        if (!nb) {
            return 0;
        }
        b->b = nb;
        b->cap = cap;
    }
    memcpy(b->b + b->len, s, n);
    b->len += n;
    return 1;
}

void llmgw_buf_free(llmgw_buf_t *b)
{
    free(b->b);
    b->b = NULL;
    b->len = b->cap = 0;
}

apr_status_t llmgw_file_read(apr_pool_t *p, const char *path, apr_size_t max,
                             char **buf, apr_size_t *len)
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_status_t rv;

    if ((rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p))
        != APR_SUCCESS) {
        return rv;
    }
    rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    if (rv == APR_SUCCESS && (fi.size < 0 || (apr_uint64_t)fi.size > max)) {
        rv = APR_ENOSPC;
    }
    if (rv == APR_SUCCESS) {
        *len = (apr_size_t)fi.size;
        *buf = apr_palloc(p, *len + 1);
        rv = apr_file_read_full(f, *buf, *len, len);
        (*buf)[*len] = '\0';
    }
    apr_file_close(f);
    return rv;
}

apr_status_t llmgw_file_replace(apr_pool_t *p, const char *path,
                                const char *data, apr_size_t len, int sync,
                                const char *prev)
{
    const char *tmp = apr_pstrcat(p, path, ".tmp", NULL);
    apr_file_t *f;
    apr_status_t rv;

    rv = apr_file_open(&f, tmp,
                       APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE
                           | APR_FOPEN_BINARY,
                       APR_FPROT_UREAD | APR_FPROT_UWRITE, p);
    if (rv == APR_SUCCESS) {
        rv = apr_file_write_full(f, data, len, NULL);
        if (rv == APR_SUCCESS && sync) {
            rv = apr_file_sync(f);
        }
        if (apr_file_close(f) != APR_SUCCESS && rv == APR_SUCCESS) {
            rv = APR_EGENERAL;
        }
    }
    if (rv == APR_SUCCESS && prev) {
        apr_file_rename(path, prev, p); /* none yet: fine */
    }
    if (rv == APR_SUCCESS) {
        rv = apr_file_rename(tmp, path, p);
    }
    if (rv != APR_SUCCESS) {
        apr_file_remove(tmp, p);
    }
    return rv;
}
