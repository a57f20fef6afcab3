/* llmgw_buf: both kinds double their capacity as they grow, so n bytes
 * cost O(n) copies whatever the pieces. */
#include <stdlib.h>
#include <string.h>

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
