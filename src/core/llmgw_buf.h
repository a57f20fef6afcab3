/* llmgw_buf: growable byte buffers, the two kinds the gateway needs: in a
 * pool (an answer held whole, text being built) and malloc'ed (a stream's
 * pending bytes, reused, so that a long stream does not grow a pool); and
 * the files the gateway keeps, read and written whole. */
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

/* The file at path whole, NUL-terminated, into *buf (in p) and *len:
 * APR_ENOSPC (nothing read) when it is larger than max bytes, else
 * apr_file_*'s status. */
apr_status_t llmgw_file_read(apr_pool_t *p, const char *path, apr_size_t max,
                             char **buf, apr_size_t *len);

/* Puts len bytes at data in the file at path in one step: written to
 * path.tmp (with sync, to the disk) and renamed over path, so that a crash
 * leaves the old file or the new one, never part of one. With prev, the
 * old file is first renamed to prev (when there is one). APR_SUCCESS, or
 * the failed step's status (path.tmp removed). */
apr_status_t llmgw_file_replace(apr_pool_t *p, const char *path,
                                const char *data, apr_size_t len, int sync,
                                const char *prev);

#endif
