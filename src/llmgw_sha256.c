/* llmgw_sha256: a plain, portable SHA-256 written from FIPS 180-4, once
 * per cacheable request (its canonical text, a few hundred bytes). */
#include <string.h>

#include "llmgw_sha256.h"

static const apr_uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(llmgw_sha256_t *st, const unsigned char *blk)
{
    apr_uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
    int i;

    for (i = 0; i < 16; i++) {
        w[i] = (apr_uint32_t)blk[4 * i] << 24
               | (apr_uint32_t)blk[4 * i + 1] << 16
               | (apr_uint32_t)blk[4 * i + 2] << 8
               | (apr_uint32_t)blk[4 * i + 3];
    }
    for (i = 16; i < 64; i++) {
        apr_uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18)
                          ^ (w[i - 15] >> 3);
        apr_uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19)
                          ^ (w[i - 2] >> 10);

        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    /* The eight working variables in locals, not an array shifted each
     * round: the compiler keeps them in registers. */
    a = st->h[0], b = st->h[1], c = st->h[2], d = st->h[3];
    e = st->h[4], f = st->h[5], g = st->h[6], h = st->h[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25))
             + ((e & f) ^ (~e & g)) + K[i] + w[i];
        t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22))
             + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    st->h[0] += a;
    st->h[1] += b;
    st->h[2] += c;
    st->h[3] += d;
    st->h[4] += e;
    st->h[5] += f;
    st->h[6] += g;
    st->h[7] += h;
}

void llmgw_sha256_init(llmgw_sha256_t *c)
{
    static const apr_uint32_t h0[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
    };

    memcpy(c->h, h0, sizeof(h0));
    c->total = 0;
    c->used = 0;
}

void llmgw_sha256_update(llmgw_sha256_t *c, const void *data, apr_size_t len)
{
    const unsigned char *d = data;

    c->total += len;
    while (len) {
        apr_size_t n = 64 - c->used < len ? 64 - c->used : len;

        memcpy(c->block + c->used, d, n);
        c->used += n;
        d += n;
        len -= n;
        if (c->used == 64) {
            compress(c, c->block);
            c->used = 0;
        }
    }
}

void llmgw_sha256_final(llmgw_sha256_t *c,
                        unsigned char out[LLMGW_SHA256_LEN])
{
    apr_uint64_t bits = c->total * 8;
    int i;

    c->block[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->block + c->used, 0, 64 - c->used);
        compress(c, c->block);
        c->used = 0;
    }
    memset(c->block + c->used, 0, 56 - c->used);
    for (i = 0; i < 8; i++) {
        c->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    compress(c, c->block);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
}

const char *llmgw_sha256_hex(apr_pool_t *p, const void *data, apr_size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[LLMGW_SHA256_LEN];
    llmgw_sha256_t c;
    char *out = apr_palloc(p, 2 * LLMGW_SHA256_LEN + 1);
    int i;

    llmgw_sha256_init(&c);
    llmgw_sha256_update(&c, data, len);
    llmgw_sha256_final(&c, md);
    for (i = 0; i < LLMGW_SHA256_LEN; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * LLMGW_SHA256_LEN] = '\0';
    return out;
}
