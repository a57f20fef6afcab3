/* llmgw_hash: FNV-1a, the one non-cryptographic hash of the gateway (how
 * keys spread over memcached servers, store shards and table slots); the
 * cache key itself is SHA-256 (llmgw_sha256). */
#ifndef LLMGW_HASH_H
#define LLMGW_HASH_H

#include <apr.h>

static APR_INLINE apr_uint32_t llmgw_fnv1a32(const char *s, apr_size_t n)
{
    apr_uint32_t h = 2166136261u;
    apr_size_t i;

    for (i = 0; i < n; i++) {
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    }
    return h;
}

static APR_INLINE apr_uint64_t llmgw_fnv1a64(const char *s, apr_size_t n)
{
    apr_uint64_t h = 14695981039346656037ull;
    apr_size_t i;

    for (i = 0; i < n; i++) {
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    }
    return h;
}

#endif
