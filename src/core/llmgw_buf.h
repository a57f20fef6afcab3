/* llmgw_buf: growable byte buffers, the two kinds the gateway needs: in a
 * pool (an answer held whole, text being built) and malloc'ed (a stream's
 * pending bytes, reused, so that a long stream does not grow a pool). */
#ifndef LLMGW_BUF_H
#define LLMGW_BUF_H

#include <apr_pools.h>

/* In a pool, doubling as it grows; start it zeroed. */
typedef struct {
    char *b;
    apr_size_t len;
    apr_size_t cap;
} llmgw_pbuf_t;

/* Room for at least n bytes in all (and one more, for a NUL). */
void llmgw_pbuf_reserve(apr_pool_t *p, llmgw_pbuf_t *b, apr_size_t n);
void llmgw_pbuf_add(apr_pool_t *p, llmgw_pbuf_t *b, const char *s,
                    apr_size_t n);

/* malloc'ed; its owner frees it (a pool cleanup, typically). */
typedef struct {
    char *b;
    apr_size_t len;
    apr_size_t cap;
} llmgw_buf_t;

/* Appends; 0 when memory ran out. */
int llmgw_buf_add(llmgw_buf_t *b, const char *s, apr_size_t n);
void llmgw_buf_free(llmgw_buf_t *b);

#endif
