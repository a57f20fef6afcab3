/* llmgw_sha256: SHA-256 (FIPS 180-4) for cache keys; APR has only MD5 and
 * SHA-1, and a key a tenant can collide is a key another tenant can poison. */
#ifndef LLMGW_SHA256_H
#define LLMGW_SHA256_H

#include <apr_pools.h>

#define LLMGW_SHA256_LEN 32

typedef struct {
    apr_uint32_t h[8];
    apr_uint64_t total;
    unsigned char block[64];
    apr_size_t used;
} llmgw_sha256_t;

void llmgw_sha256_init(llmgw_sha256_t *c);
void llmgw_sha256_update(llmgw_sha256_t *c, const void *data, apr_size_t len);
void llmgw_sha256_final(llmgw_sha256_t *c,
                        unsigned char out[LLMGW_SHA256_LEN]);
/* Whether the CPU's SHA extensions (x86-64 SHA-NI) do the work: on by
 * default where present; 0 turns them off (the tests check both ways).
 * Returns whether they are in use now. */
int llmgw_sha256_use_cpu(int on);
/* The digest of data as 64 lower-case hex digits, from p. */
const char *llmgw_sha256_hex(apr_pool_t *p, const void *data, apr_size_t len);

#endif
